//! The load client: connections, a raw `Subscribe` stream, `Publish`, and the shared counters.
//!
//! Subscribers do not decode events: each message is counted from its first byte (an `event` is
//! field 2 of `SubscribeResponse`), so the load process spends its share of the two cores on
//! receiving, the same for every server. Latency runs read the publish timestamp carried in the
//! payload.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    pin::Pin,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use durable_iterator::pb::{self, durable_iterator_admin_client::DurableIteratorAdminClient};
use futures::{StreamExt, stream};

use crate::frame::{HEADER, message_len, put_message};
use http_body_util::Full;
use tonic::{
    Request, Status,
    body::Body,
    codegen::{Body as _, Service, http},
    transport::{Channel, Endpoint},
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

/// Whether a raw `SubscribeResponse` is an event (field 2, length-delimited).
pub fn is_event(message: &[u8]) -> bool {
    message.first() == Some(&0x12)
}

/// A loopback HTTP/2 connection with windows large enough that flow control is not the limit.
pub async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .initial_connection_window_size(16 << 20)
        .initial_stream_window_size(1 << 20)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// `count` connections, opened a few hundred at a time.
pub async fn connect_many(addr: SocketAddr, count: usize) -> Result<Vec<Channel>, String> {
    stream::iter(0..count)
        .map(|_| connect(addr))
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
    /// Messages taken out of a frame by `message` but not asked for yet.
    ready: VecDeque<Bytes>,
}

impl MessageStream {
    /// Waits for the next DATA frame and calls `each` with every message it completes; returns
    /// how many it completed, or an error once the stream has ended (cleanly or not).
    pub async fn next_messages(&mut self, mut each: impl FnMut(&[u8])) -> Result<usize, String> {
        if !self.ready.is_empty() {
            let count = self.ready.len();
            self.ready.drain(..).for_each(|m| each(&m));
            return Ok(count);
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx))
            .await
            .ok_or("the stream ended")?
            .map_err(|e| format!("stream: {e}"))?;
        match frame.into_data() {
            Ok(data) => Ok(self.feed(&data, &mut each)),
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
            self.next_messages(|m| ready.push_back(Bytes::copy_from_slice(m)))
                .await?;
            self.ready = ready;
        }
        self.ready
            .pop_front()
            .ok_or_else(|| "no message".to_owned())
    }

    fn feed(&mut self, mut chunk: &[u8], each: &mut impl FnMut(&[u8])) -> usize {
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
            each(&self.partial[HEADER..len]);
            completed += 1;
            self.partial.drain(..len);
        }
        while chunk.len() >= HEADER {
            let len = HEADER + message_len(chunk);
            if chunk.len() < len {
                break;
            }
            each(&chunk[HEADER..len]);
            completed += 1;
            chunk = &chunk[len..];
        }
        self.partial.extend_from_slice(chunk);
        completed
    }
}

/// An open `Subscribe` stream whose first message (`Subscribed`) has arrived.
pub struct Subscribed {
    pub stream: MessageStream,
    pub first: pb::SubscribeResponse,
}

/// Opens a `Subscribe` stream and waits for its first message.
pub async fn subscribe(
    mut channel: Channel,
    request: pb::SubscribeRequest,
) -> Result<Subscribed, String> {
    let encoded = prost::Message::encode_to_vec(&request);
    let mut framed = BytesMut::with_capacity(HEADER + encoded.len());
    put_message(&mut framed, &encoded);
    let http_request = http::Request::post("/durable_iterator.v1.DurableIterator/Subscribe")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
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
    let mut stream = MessageStream {
        body: response.into_body(),
        partial: Vec::new(),
        ready: VecDeque::new(),
    };
    let first = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .map_err(|_| "no first message within 60 s".to_owned())??;
    let first = prost::Message::decode(first).map_err(|e| format!("first message: {e}"))?;
    Ok(Subscribed { stream, first })
}

/// `Publish` through the admin API, authenticated with the benchmark's key.
#[derive(Clone)]
pub struct Publisher {
    client: DurableIteratorAdminClient<Channel>,
    channel: String,
    tags: Option<Vec<String>>,
}

impl Publisher {
    /// `tags`: the event is for sessions holding one of them (the product's filter runs per
    /// subscriber); `None`: for everyone.
    pub fn new(connection: Channel, channel: &str, tags: Option<Vec<String>>) -> Self {
        Self {
            client: DurableIteratorAdminClient::new(connection),
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
        }
    }

    fn authorized<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {API_KEY}").parse().expect("ascii"),
        );
        request
    }

    /// Publishes one JSON string event; returns its id once acknowledged.
    pub async fn publish(&mut self, text: String) -> Result<String, Status> {
        let request = Self::authorized(self.event(text));
        Ok(self.client.publish(request).await?.into_inner().id)
    }

    /// Publishes `count` copies of a JSON string event in one `PublishBatch` call (one
    /// `Publish` when `count` is 1); returns once all are acknowledged.
    pub async fn publish_many(&mut self, text: String, count: usize) -> Result<(), Status> {
        if count == 1 {
            return self.publish(text).await.map(drop);
        }
        let events = vec![self.event(text); count];
        let request = Self::authorized(pb::PublishBatchRequest { events });
        self.client.publish_batch(request).await?;
        Ok(())
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
        MessageStream {
            body: Body::empty(),
            partial: Vec::new(),
            ready: VecDeque::new(),
        }
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
                    completed += stream.feed(chunk, &mut |m: &[u8]| seen.push(m.to_vec()));
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
