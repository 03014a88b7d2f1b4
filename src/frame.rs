//! The wire unit of a subscription stream: one `SubscribeResponse`, encoded once.
//!
//! An event is encoded when it is stored, and the same bytes go to every subscriber, live or
//! replaying, so fan-out never serializes per subscriber. `Subscribe` streams send them inside
//! their batch's wire buffer (`event::StoredBatch`, `server/wire.rs`); the generated server, which
//! serves the other calls and is what tonic alone would run for `Subscribe`, writes a [`Frame`]
//! as it is (see `build.rs`).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::pb;

/// Field numbers of `SubscribeResponse.event` and of `Event`'s fields.
const RESPONSE_EVENT: u32 = 2;
const EVENT_ID: u32 = 1;
const EVENT_PUBLISHED_AT_MS: u32 = 4;

/// One encoded `SubscribeResponse`. Cloning shares the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Encodes a control message (`Subscribed`, `Heartbeat`, `TokenExpiring`).
    pub fn message(message: &pb::SubscribeResponse) -> Self {
        Self(message.encode_to_vec().into())
    }

    /// Encodes an event from its parts, with the payload already encoded as `Event`'s
    /// `oneof payload` field (see [`encode_payload`]).
    pub fn event(id: &str, payload: &[u8], published_at_ms: i64) -> Self {
        let mut buf =
            BytesMut::with_capacity(Self::event_len(id.len(), payload.len(), published_at_ms));
        Self::write_event(&mut buf, id, payload, published_at_ms);
        Self(buf.freeze())
    }

    /// The encoded size of an event frame.
    pub fn event_len(id_len: usize, payload_len: usize, published_at_ms: i64) -> usize {
        let event_len = Self::event_body_len(id_len, payload_len, published_at_ms);
        encoding::key_len(RESPONSE_EVENT)
            + encoding::encoded_len_varint(event_len as u64)
            + event_len
    }

    fn event_body_len(id_len: usize, payload_len: usize, published_at_ms: i64) -> usize {
        encoding::key_len(EVENT_ID)
            + encoding::encoded_len_varint(id_len as u64)
            + id_len
            + payload_len
            + encoding::int64::encoded_len(EVENT_PUBLISHED_AT_MS, &published_at_ms)
    }

    /// Appends an event's encoded `SubscribeResponse` to `buf` ([`Frame::event_len`] bytes).
    pub fn write_event(buf: &mut BytesMut, id: &str, payload: &[u8], published_at_ms: i64) {
        let event_len = Self::event_body_len(id.len(), payload.len(), published_at_ms);
        encoding::encode_key(RESPONSE_EVENT, WireType::LengthDelimited, buf);
        encoding::encode_varint(event_len as u64, buf);
        encoding::encode_key(EVENT_ID, WireType::LengthDelimited, buf);
        encoding::encode_varint(id.len() as u64, buf);
        buf.put_slice(id.as_bytes());
        buf.put_slice(payload);
        encoding::int64::encode(EVENT_PUBLISHED_AT_MS, &published_at_ms, buf);
    }

    /// Wraps bytes that already hold one encoded `SubscribeResponse` (e.g. read from a store).
    pub fn from_encoded(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The encoded `SubscribeResponse`.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// Bytes of a gRPC message header: a compression flag and a big-endian length.
pub const GRPC_HEADER: usize = 5;

/// The size of a gRPC message around `len` bytes of protobuf.
pub fn grpc_message_len(len: usize) -> usize {
    GRPC_HEADER + len
}

/// The length of the message a gRPC message header announces; `None` if `header` is shorter
/// than a header.
pub fn grpc_message_body_len(header: &[u8]) -> Option<usize> {
    let len: [u8; 4] = header.get(1..GRPC_HEADER)?.try_into().ok()?;
    Some(u32::from_be_bytes(len) as usize)
}

/// Appends the header of an uncompressed gRPC message of `len` bytes to `buf`.
pub fn put_grpc_header(buf: &mut BytesMut, len: usize) {
    buf.put_u8(0);
    buf.put_u32(len as u32);
}

/// Appends `message` to `buf` as an uncompressed gRPC message.
pub fn put_grpc_message(buf: &mut BytesMut, message: &[u8]) {
    put_grpc_header(buf, message.len());
    buf.put_slice(message);
}

/// Encodes a payload as `Event`'s `oneof payload` field, ready for [`Frame::event`].
pub fn encode_payload(payload: &pb::event::Payload) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.encoded_len());
    payload.encode(&mut buf);
    buf.freeze()
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes)", self.0.len())
    }
}

impl Message for Frame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // The server only writes frames; should one ever be decoded, nothing is kept.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Initial size of a call's encode buffer. tonic's default, 8 KiB, is held by every open stream
/// for as long as it is open; most of an idle subscriber's memory. The buffer grows as needed
/// (up to [`YIELD_THRESHOLD`] per write) for a busy stream.
pub const ENCODE_BUFFER_BYTES: usize = 512;
/// Bytes encoded before a call's buffer is handed to HTTP/2 (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// The codec of the generated servers (`codec_path` in `build.rs`): prost, with a small
/// per-call encode buffer. A [`Frame`] is written as the bytes it holds.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for FrameCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for FrameCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Value, value::Kind};

    #[test]
    fn event_frame_decodes_as_the_generated_message() {
        let value = Value {
            kind: Some(Kind::StringValue("héllo".into())),
        };
        let payload = pb::event::Payload::Json(value);
        let frame = Frame::event("0000000a-0000000000000001", &encode_payload(&payload), 1234);
        let decoded = pb::SubscribeResponse::decode(frame.bytes().clone()).unwrap();
        let expected = pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Event(pb::Event {
                id: "0000000a-0000000000000001".into(),
                payload: Some(payload),
                published_at_ms: 1234,
            })),
        };
        assert_eq!(decoded, expected);
        assert_eq!(frame.encoded_len(), expected.encoded_len());
        assert_eq!(frame.encode_to_vec(), expected.encode_to_vec());
    }
}
