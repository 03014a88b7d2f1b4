//! The load client: connections, a raw `Subscribe` stream, `Publish`, and the shared counters.
//!
//! Subscribers do not decode events: each message is counted from its first byte (an `event` is
//! field 2 of `SubscribeResponse`), so the load process spends its share of the two cores on
//! receiving, the same for every server. Latency runs read the publish timestamp carried in the
//! payload.

use std::{
    net::SocketAddr,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use durable_iterator::pb::{self, durable_iterator_admin_client::DurableIteratorAdminClient};
use futures::{StreamExt, stream};
use tonic::{
    Request, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, Streaming},
    codegen::http::uri::PathAndQuery,
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

/// Encodes the request with prost; hands each response message over as its raw bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

#[derive(Clone, Copy, Default)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = buf.remaining();
        Ok(Some(buf.copy_to_bytes(len)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Codec for RawCodec {
    type Encode = pb::SubscribeRequest;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<pb::SubscribeRequest>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// An open `Subscribe` stream whose first message (`Subscribed`) has arrived.
pub struct Subscribed {
    pub stream: Streaming<Bytes>,
    pub first: pb::SubscribeResponse,
}

/// Opens a `Subscribe` stream and waits for its first message.
pub async fn subscribe(
    channel: Channel,
    request: pb::SubscribeRequest,
) -> Result<Subscribed, String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let path = PathAndQuery::from_static("/durable_iterator.v1.DurableIterator/Subscribe");
    let mut stream = grpc
        .server_streaming(Request::new(request), path, RawCodec)
        .await
        .map_err(|e| format!("subscribe: {e}"))?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .map_err(|_| "no first message within 60 s".to_owned())?
        .map_err(|e| format!("subscribe stream: {e}"))?
        .ok_or("the stream ended before its first message")?;
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
