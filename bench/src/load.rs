//! The load client: connections, a raw `Subscribe` stream, `Publish`, and the shared counters.
//!
//! Subscribers do not decode events: each message is counted from its first byte (an `event` is
//! field 2 of `SubscribeResponse`), so the load process spends its share of the two cores on
//! receiving, the same for every server. A subscriber that accepts gzip counts a compressed
//! message (flag 1 in its header) as an event without decompressing it: the product compresses
//! events only (its control messages always go out plain), and the first compressed message of
//! every stream is decompressed and checked to be an event, so a server that compressed
//! something else would end the stream with an error, not be counted. Latency runs read the
//! publish timestamp carried in the payload.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    io::Read as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use durable_iterator::pb;
use futures::{StreamExt, stream};

use crate::frame::{HEADER, message_len, put_message};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tonic::{
    Status,
    body::Body,
    codegen::{Body as _, Service, http},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::servers::API_KEY;

/// Payload size of every event, in bytes, for every system.
pub const PAYLOAD_BYTES: usize = 100;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since this process's epoch: publish and delivery are timed by the same clock.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A `PAYLOAD_BYTES` string carrying the publish time.
pub fn payload(ts_ns: u64) -> String {
    let mut text = format!("ts={ts_ns:020};");
    text.extend(std::iter::repeat_n('x', PAYLOAD_BYTES - text.len()));
    text
}

/// The publish time carried by a message, wherever the payload sits in it.
pub fn parse_ts(message: &[u8]) -> Option<u64> {
    let at = message.windows(3).position(|w| w == b"ts=")? + 3;
    let digits = message.get(at..at + 20)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A `bytes`-character payload carrying the publish time, then text about as redundant as JSON
/// (`word=number` pairs: 32 words, numbers below 100,000 from a fixed pseudo-random sequence),
/// so that gzip has realistic work: `payload`'s run of `x` would compress to almost nothing.
/// ASCII without quotes or backslashes: a JSON string of exactly `bytes` characters.
pub fn text_payload(ts_ns: u64, bytes: usize) -> String {
    const WORDS: [&str; 32] = [
        "user", "order", "status", "shipped", "amount", "currency", "item", "quantity", "price",
        "created", "updated", "id", "name", "email", "address", "city", "country", "note",
        "priority", "high", "low", "true", "false", "null", "tags", "channel", "event", "value",
        "count", "total", "ref", "session",
    ];
    let mut text = format!("ts={ts_ns:020};");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while text.len() < bytes {
        // xorshift64: the same text in every run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let word = WORDS[(state % WORDS.len() as u64) as usize];
        let _ = write!(text, "{word}={} ", (state >> 32) % 100_000);
    }
    text.truncate(bytes);
    text
}

/// Whether a raw, uncompressed `SubscribeResponse` is an event (field 2, length-delimited).
pub fn is_event(message: &[u8]) -> bool {
    message.first() == Some(&0x12)
}

/// One gRPC message of a `Subscribe` stream, as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Flag 1 in its header: compressed with the stream's `grpc-encoding` (gzip).
    pub compressed: bool,
    /// What follows the 5-byte header, compressed or not.
    pub bytes: &'a [u8],
}

impl Message<'_> {
    /// Whether it is an event: a plain message whose first field is `event`, or any compressed
    /// one (the product compresses events only; see the module's notes).
    pub fn is_event(&self) -> bool {
        self.compressed || is_event(self.bytes)
    }
}

/// Where a gRPC server listens and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's loopback address.
    pub addr: SocketAddr,
    /// TLS, trusting this certificate (PEM) for the name `localhost`; `None`: plaintext.
    pub tls: Option<Certificate>,
}

/// A loopback HTTP/2 connection with windows large enough that flow control is not the limit;
/// over TLS (ALPN h2) when the target has a certificate.
pub async fn connect(target: &Target) -> Result<Channel, String> {
    connect_with_stream_window(target, 1 << 20).await
}

/// [`connect`] with another HTTP/2 window per stream: a small one makes a reader that stops
/// reading fill the server's queue for it soon, instead of this process's buffers.
pub async fn connect_with_stream_window(
    target: &Target,
    stream_window: u32,
) -> Result<Channel, String> {
    let addr = target.addr;
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| e.to_string())?
        .initial_connection_window_size(16 << 20)
        .initial_stream_window_size(stream_window)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    if let Some(certificate) = &target.tls {
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(certificate.clone())
                    .domain_name("localhost"),
            )
            .map_err(|e| format!("tls config: {e}"))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| format!("connect {scheme}://{addr}: {e}"))
}

/// `count` connections, opened a few hundred at a time.
pub async fn connect_many(target: &Target, count: usize) -> Result<Vec<Channel>, String> {
    stream::iter(0..count)
        .map(|_| connect(target))
        .buffered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A `Subscribe` response read as raw HTTP/2 DATA frames: the 5-byte gRPC message headers are
/// parsed in place, and each message is handed over as a slice of the frame that carried it. No
/// per-message allocation or copy (a message split across two frames is the one exception), so
/// the load client's share of the CPU stays small and the same for every server.
pub struct MessageStream {
    body: Body,
    /// The start of a message whose end has not arrived yet (its header included).
    partial: Vec<u8>,
    /// Messages taken out of a frame by `message` but not asked for yet (decompressed).
    ready: VecDeque<Bytes>,
    /// DATA frame bytes received since `Subscribed` (gRPC message headers included; HTTP/2
    /// frame headers and TLS records are not seen here).
    received_bytes: u64,
    /// Whether the first compressed message has been decompressed and checked.
    checked_compressed: bool,
    /// Why the stream cannot be counted any more (a compressed message that is not an event).
    failure: Option<String>,
}

impl MessageStream {
    fn new(body: Body) -> Self {
        Self {
            body,
            partial: Vec::new(),
            ready: VecDeque::new(),
            received_bytes: 0,
            checked_compressed: false,
            failure: None,
        }
    }

    /// DATA frame bytes received since the stream's `Subscribed`: the gRPC messages with their
    /// 5-byte headers (not HTTP/2 frame headers, not TLS overhead).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Waits for the next DATA frame and calls `each` with every message it completes; returns
    /// how many it completed, or an error once the stream has ended (cleanly or not).
    pub async fn next_messages(
        &mut self,
        mut each: impl FnMut(Message<'_>),
    ) -> Result<usize, String> {
        if !self.ready.is_empty() {
            let count = self.ready.len();
            self.ready.drain(..).for_each(|m| {
                each(Message {
                    compressed: false,
                    bytes: &m,
                })
            });
            return Ok(count);
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx))
            .await
            .ok_or("the stream ended")?
            .map_err(|e| format!("stream: {e}"))?;
        match frame.into_data() {
            Ok(data) => {
                self.received_bytes += data.len() as u64;
                let completed = self.feed(&data, &mut each);
                match self.failure.take() {
                    Some(failure) => Err(failure),
                    None => Ok(completed),
                }
            }
            Err(frame) => {
                let status = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                Err(format!("the stream ended with grpc-status {status}"))
            }
        }
    }

    /// The next message, copied out (for the few places that look at one message at a time:
    /// the `Subscribed` that opens a stream, replays counted one by one).
    pub async fn message(&mut self) -> Result<Bytes, String> {
        while self.ready.is_empty() {
            let mut ready = std::mem::take(&mut self.ready);
            let mut failure = None;
            self.next_messages(|m| {
                if m.compressed {
                    match gunzip(m.bytes) {
                        Ok(plain) => ready.push_back(plain.into()),
                        Err(e) => failure = Some(e),
                    }
                } else {
                    ready.push_back(Bytes::copy_from_slice(m.bytes));
                }
            })
            .await?;
            self.ready = ready;
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        self.ready
            .pop_front()
            .ok_or_else(|| "no message".to_owned())
    }

    fn feed(&mut self, mut chunk: &[u8], each: &mut impl FnMut(Message<'_>)) -> usize {
        let mut completed = 0;
        // Messages queued or begun in an earlier frame come first.
        while !self.partial.is_empty() {
            let have = self.partial.len();
            let need = if have < HEADER {
                HEADER
            } else {
                HEADER + message_len(&self.partial)
            };
            if have < need {
                let take = (need - have).min(chunk.len());
                self.partial.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.partial.len() < need {
                    return completed;
                }
                if need == HEADER {
                    continue; // the header is complete; now the body
                }
            }
            let len = HEADER + message_len(&self.partial);
            self.deliver_partial(len, each);
            completed += 1;
            self.partial.drain(..len);
        }
        while chunk.len() >= HEADER {
            let len = HEADER + message_len(chunk);
            if chunk.len() < len {
                break;
            }
            deliver(
                &chunk[..len],
                &mut self.checked_compressed,
                &mut self.failure,
                each,
            );
            completed += 1;
            chunk = &chunk[len..];
        }
        self.partial.extend_from_slice(chunk);
        completed
    }

    fn deliver_partial(&mut self, len: usize, each: &mut impl FnMut(Message<'_>)) {
        deliver(
            &self.partial[..len],
            &mut self.checked_compressed,
            &mut self.failure,
            each,
        );
    }
}

/// Hands one whole message (`framed`: header and body) to `each`; the first compressed message
/// of a stream is decompressed first and must be an event (else `failure` says why).
fn deliver(
    framed: &[u8],
    checked_compressed: &mut bool,
    failure: &mut Option<String>,
    each: &mut impl FnMut(Message<'_>),
) {
    let message = Message {
        compressed: framed[0] != 0,
        bytes: &framed[HEADER..],
    };
    if message.compressed && !*checked_compressed {
        *checked_compressed = true;
        match gunzip(message.bytes) {
            Ok(plain) if is_event(&plain) => {}
            Ok(_) => {
                *failure = Some("a compressed message that is not an event: not counted".into())
            }
            Err(e) => *failure = Some(e),
        }
    }
    each(message);
}

/// A gzip-compressed gRPC message, decompressed.
fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, String> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_end(&mut plain)
        .map_err(|e| format!("a compressed message does not decompress: {e}"))?;
    Ok(plain)
}

/// An open `Subscribe` stream whose first message (`Subscribed`) has arrived.
pub struct Subscribed {
    pub stream: MessageStream,
    pub first: pb::SubscribeResponse,
}

/// Opens a `Subscribe` stream and waits for its first message. With `accept_gzip` the request
/// says `grpc-accept-encoding: gzip`, and the server may answer with compressed messages.
pub async fn subscribe(
    mut channel: Channel,
    request: pb::SubscribeRequest,
    accept_gzip: bool,
) -> Result<Subscribed, String> {
    let encoded = prost::Message::encode_to_vec(&request);
    let mut framed = BytesMut::with_capacity(HEADER + encoded.len());
    put_message(&mut framed, &encoded);
    let mut builder = http::Request::post("/durable_iterator.v1.DurableIterator/Subscribe")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if accept_gzip {
        builder = builder.header("grpc-accept-encoding", "gzip");
    }
    let http_request = builder
        .body(Body::new(Full::new(framed.freeze())))
        .map_err(|e| format!("request: {e}"))?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let response = channel
        .call(http_request)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    if let Some(status) = response.headers().get("grpc-status") {
        let message = response.headers().get("grpc-message");
        return Err(format!(
            "subscribe refused: grpc-status {status:?} {message:?}"
        ));
    }
    let mut stream = MessageStream::new(response.into_body());
    let first = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .map_err(|_| "no first message within 60 s".to_owned())??;
    stream.received_bytes = 0;
    let first = prost::Message::decode(first).map_err(|e| format!("first message: {e}"))?;
    Ok(Subscribed { stream, first })
}

/// An HTTP/2 connection for `Publish` calls, driven by hyper's client directly: no tower
/// buffer (a queue and a task hop per call in tonic's `Channel`) and no codec, so that the
/// load client spends as little on a call as it can, as its subscribers do on a message.
#[derive(Clone)]
pub struct PublishConnection {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    /// `http://ADDR` or `https://localhost:PORT`: the scheme and authority of every call.
    origin: String,
}

/// A publishing connection to `target`, over TLS (ALPN h2, trusting the target's certificate
/// for `localhost`) when it has a certificate.
pub async fn connect_publisher(target: &Target) -> Result<PublishConnection, String> {
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .initial_connection_window_size(16 << 20)
        .initial_stream_window_size(1 << 20);
    let handshake = |e: hyper::Error| format!("HTTP/2 handshake with {}: {e}", target.addr);
    let (send, origin) = match &target.tls {
        None => {
            let (send, connection) = builder
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake)?;
            tokio::spawn(connection);
            (send, format!("http://{}", target.addr))
        }
        Some(certificate) => {
            let tls = tls_connector(certificate)?
                .connect(
                    ServerName::try_from("localhost").map_err(|e| e.to_string())?,
                    tcp,
                )
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", target.addr))?;
            let (send, connection) = builder
                .handshake(TokioIo::new(tls))
                .await
                .map_err(handshake)?;
            tokio::spawn(connection);
            (send, format!("https://localhost:{}", target.addr.port()))
        }
    };
    Ok(PublishConnection { send, origin })
}

/// `count` publishing connections to `target`.
pub async fn connect_publishers(
    target: &Target,
    count: usize,
) -> Result<Vec<PublishConnection>, String> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(connect_publisher(target).await?);
    }
    Ok(connections)
}

/// TLS 1.3 or 1.2 with ALPN h2, trusting only `certificate` (PEM).
fn tls_connector(certificate: &Certificate) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(certificate.get_ref()) {
        roots
            .add(der.map_err(|e| format!("certificate: {e}"))?)
            .map_err(|e| format!("certificate: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `Publish` through the admin API, authenticated with the benchmark's key: the request is
/// encoded with prost and framed by hand, the answer's status read from its trailers (or from
/// its headers when it is trailers-only), as a gRPC client does.
#[derive(Clone)]
pub struct Publisher {
    connection: PublishConnection,
    channel: String,
    tags: Option<Vec<String>>,
}

impl Publisher {
    /// `tags`: the event is for sessions holding one of them (the product's filter runs per
    /// subscriber); `None`: for everyone.
    pub fn new(connection: PublishConnection, channel: &str, tags: Option<Vec<String>>) -> Self {
        Self {
            connection,
            channel: channel.to_owned(),
            tags,
        }
    }

    fn event(&self, text: String) -> pb::PublishRequest {
        pb::PublishRequest {
            channel: self.channel.clone(),
            payload: Some(pb::publish_request::Payload::Json(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(text)),
            })),
            tags: self.tags.clone().map(|values| pb::StringList { values }),
            targets: None,
            exclude: Vec::new(),
            idempotency_key: None,
        }
    }

    /// Sends one unary call of the admin service and returns its answer's message.
    async fn call(&mut self, method: &str, message: &impl prost::Message) -> Result<Bytes, Status> {
        static AUTHORIZATION: OnceLock<http::HeaderValue> = OnceLock::new();
        let authorization = AUTHORIZATION.get_or_init(|| {
            http::HeaderValue::try_from(format!("Bearer {API_KEY}")).expect("ascii")
        });
        let mut framed = BytesMut::with_capacity(HEADER + message.encoded_len());
        put_message(&mut framed, &message.encode_to_vec());
        let request = http::Request::post(format!(
            "{}/durable_iterator.v1.DurableIteratorAdmin/{method}",
            self.connection.origin
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", authorization.clone())
        .body(Full::new(framed.freeze()))
        .map_err(|e| Status::internal(format!("request: {e}")))?;
        let unavailable = |e: hyper::Error| Status::unavailable(format!("transport error: {e}"));
        let response = self
            .connection
            .send
            .send_request(request)
            .await
            .map_err(unavailable)?;
        if let Some(status) = Status::from_header_map(response.headers()) {
            return Err(status);
        }
        let body = response.into_body().collect().await.map_err(unavailable)?;
        let trailers = body.trailers().cloned().unwrap_or_default();
        match Status::from_header_map(&trailers) {
            Some(status) if status.code() != tonic::Code::Ok => Err(status),
            Some(_) => {
                let bytes = body.to_bytes();
                let end = HEADER + message_len(&bytes);
                if bytes.len() < end {
                    return Err(Status::internal("the answer is not a whole gRPC message"));
                }
                Ok(bytes.slice(HEADER..end))
            }
            None => Err(Status::internal("the answer has no grpc-status")),
        }
    }

    /// Publishes one JSON string event; returns its id once acknowledged.
    pub async fn publish(&mut self, text: String) -> Result<String, Status> {
        let event = self.event(text);
        let answer = self.call("Publish", &event).await?;
        let answer: pb::PublishResponse = prost::Message::decode(answer)
            .map_err(|e| Status::internal(format!("PublishResponse: {e}")))?;
        Ok(answer.id)
    }

    /// Publishes `count` copies of a JSON string event in one `PublishBatch` call (one
    /// `Publish` when `count` is 1); returns once all are acknowledged.
    pub async fn publish_many(&mut self, text: String, count: usize) -> Result<(), Status> {
        if count == 1 {
            return self.publish(text).await.map(drop);
        }
        let events = vec![self.event(text); count];
        self.call("PublishBatch", &pb::PublishBatchRequest { events })
            .await
            .map(drop)
    }
}

/// One counter per subscriber, each on its own cache line: subscribers never contend.
pub struct Counters(Vec<Padded>);

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

impl Counters {
    pub fn new(count: usize) -> Self {
        Self((0..count).map(|_| Padded::default()).collect())
    }

    pub fn add(&self, index: usize, n: u64) {
        self.0[index].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }

    pub fn min(&self) -> u64 {
        self.0
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for m in messages {
            put_message(&mut out, m);
        }
        out.to_vec()
    }

    fn stream() -> MessageStream {
        MessageStream::new(Body::empty())
    }

    fn gzip(message: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(message).unwrap();
        encoder.finish().unwrap()
    }

    fn compressed(buf: &mut BytesMut, message: &[u8]) {
        let body = gzip(message);
        buf.extend_from_slice(&[1]);
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
    }

    #[test]
    fn compressed_events_count_by_their_flag_after_the_first_is_checked() {
        let event = [&[0x12u8, 0x7f][..], &[b'e'; 127]].concat();
        let mut wire = BytesMut::new();
        put_message(&mut wire, b"\x0aplain control message");
        compressed(&mut wire, &event);
        put_message(&mut wire, &event);
        compressed(&mut wire, &event);
        let mut stream = stream();
        let mut events = 0;
        let mut compressed_seen = 0;
        stream.feed(&wire, &mut |m: Message<'_>| {
            events += usize::from(m.is_event());
            compressed_seen += usize::from(m.compressed);
        });
        assert_eq!((events, compressed_seen), (3, 2));
        assert!(stream.failure.is_none());
        assert!(stream.checked_compressed);
    }

    #[test]
    fn a_compressed_message_that_is_not_an_event_fails_the_stream() {
        let mut wire = BytesMut::new();
        compressed(&mut wire, b"\x0aa control message, compressed");
        let mut stream = stream();
        stream.feed(&wire, &mut |_: Message<'_>| {});
        assert!(stream.failure.is_some());
    }

    #[test]
    fn text_payloads_have_the_size_asked_and_carry_the_time() {
        for bytes in [100, 4096] {
            let text = text_payload(42, bytes);
            assert_eq!(text.len(), bytes);
            assert!(text.is_ascii() && !text.contains(['"', '\\']));
            assert_eq!(parse_ts(text.as_bytes()), Some(42));
        }
        // Compressible like JSON, not like a run of one letter.
        let ratio = gzip(text_payload(0, 4096).as_bytes()).len() as f64 / 4096.0;
        assert!((0.2..0.7).contains(&ratio), "gzip ratio {ratio}");
    }

    #[test]
    fn messages_split_anywhere_across_frames_come_out_whole_and_in_order() {
        let messages: [&[u8]; 4] = [b"\x12first", b"", b"\x0asecond message", &[7; 300]];
        let wire = framed(&messages);
        for first_cut in 0..=wire.len() {
            for second_cut in first_cut..=wire.len() {
                let mut stream = stream();
                let mut seen = Vec::new();
                let mut completed = 0;
                for chunk in [
                    &wire[..first_cut],
                    &wire[first_cut..second_cut],
                    &wire[second_cut..],
                ] {
                    completed +=
                        stream.feed(chunk, &mut |m: Message<'_>| seen.push(m.bytes.to_vec()));
                }
                assert_eq!(
                    seen,
                    messages.map(<[u8]>::to_vec),
                    "cuts {first_cut}, {second_cut}"
                );
                assert_eq!(completed, messages.len());
                assert!(stream.partial.is_empty());
            }
        }
    }
}
