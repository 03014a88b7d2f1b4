//! gRPC message framing, in one place: the 5-byte message header (a compression flag and a
//! big-endian length), and the encoded `SubscribeResponse` of a subscription stream.
//!
//! An event is encoded when it is stored, and the same bytes go to every subscriber, live or
//! replaying, so fan-out never serializes per subscriber: a stored batch lays its events out as
//! whole gRPC messages back to back ([`crate::event::StoredBatch`]), and a `Subscribe` stream
//! writes a run of them to HTTP/2 as one slice (`server/subscribe_service.rs`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::{
    Message,
    encoding::{self, WireType},
};
use tonic::Status;

use crate::pb;

/// Bytes of a gRPC message header: a compression flag and a big-endian length.
pub(crate) const GRPC_HEADER: usize = 5;

/// Field numbers of `SubscribeResponse.event` and of `Event`'s fields.
const RESPONSE_EVENT: u32 = 2;
const EVENT_ID: u32 = 1;
const EVENT_PUBLISHED_AT_MS: u32 = 4;

/// A gRPC message header, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The message is compressed with the call's `grpc-encoding`.
    pub(crate) compressed: bool,
    /// The length of the message that follows.
    pub(crate) len: usize,
}

/// Reads the header at the start of `bytes`; `None` if `bytes` is shorter than a header.
pub(crate) fn read_header(bytes: &[u8]) -> Option<Header> {
    let header: &[u8; GRPC_HEADER] = bytes.get(..GRPC_HEADER)?.try_into().ok()?;
    let [flag, len @ ..] = *header;
    Some(Header {
        compressed: flag != 0,
        len: u32::from_be_bytes(len) as usize,
    })
}

/// Appends the header of an uncompressed message of `len` bytes to `buf`.
pub(crate) fn put_header(buf: &mut BytesMut, len: usize) {
    buf.put_u8(0);
    buf.put_u32(len as u32);
}

/// The size of a gRPC message around `len` bytes of protobuf.
pub(crate) fn message_len(len: usize) -> usize {
    GRPC_HEADER + len
}

/// Appends `message` (encoded protobuf) to `buf` as an uncompressed gRPC message.
pub(crate) fn put_message(buf: &mut BytesMut, message: &[u8]) {
    put_header(buf, message.len());
    buf.put_slice(message);
}

/// A control message (`Subscribed`, `Heartbeat`, `TokenExpiring`) as one gRPC message.
pub(crate) fn control_message(message: &pb::SubscribeResponse) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(message_len(len));
    put_header(&mut buf, len);
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// The one uncompressed message of a unary request body, without its header.
pub(crate) fn single_message(mut body: Bytes) -> Result<Bytes, Status> {
    if body.is_empty() {
        return Err(Status::internal("Missing request message."));
    }
    let header =
        read_header(&body).ok_or_else(|| Status::internal("malformed gRPC message header"))?;
    if header.compressed {
        return Err(Status::unimplemented(
            "Message compressed, compression not supported",
        ));
    }
    body.advance(GRPC_HEADER);
    if body.len() != header.len {
        return Err(Status::internal(format!(
            "expected one message of {} bytes, the request holds {}",
            header.len,
            body.len()
        )));
    }
    Ok(body)
}

/// The messages of `chunk` (whole ones, as this crate writes them), each without its header.
#[cfg(test)]
pub(crate) fn messages(chunk: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = read_header(chunk.get(at..)?)?;
        let start = at + GRPC_HEADER;
        let end = start
            .checked_add(header.len)
            .filter(|end| *end <= chunk.len())?;
        at = end;
        Some(chunk.slice(start..end))
    })
}

/// One encoded `SubscribeResponse`. Cloning shares the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Frame(Bytes);

impl Frame {
    /// Encodes a control message.
    pub(crate) fn message(message: &pb::SubscribeResponse) -> Self {
        Self(message.encode_to_vec().into())
    }

    /// The encoded size of an event's `SubscribeResponse`, its payload already encoded as
    /// `Event`'s `oneof payload` field (see [`encode_payload`]).
    pub(crate) fn event_len(id_len: usize, payload_len: usize, published_at_ms: i64) -> usize {
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
    pub(crate) fn write_event(buf: &mut BytesMut, id: &str, payload: &[u8], published_at_ms: i64) {
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
    pub(crate) fn from_encoded(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The encoded `SubscribeResponse`.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes)", self.0.len())
    }
}

/// Encodes a payload as `Event`'s `oneof payload` field, ready for [`Frame::write_event`].
pub(crate) fn encode_payload(payload: &pb::event::Payload) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.encoded_len());
    payload.encode(&mut buf);
    buf.freeze()
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
        let encoded = encode_payload(&payload);
        let id = "0000000a-0000000000000001";
        let mut buf = BytesMut::new();
        Frame::write_event(&mut buf, id, &encoded, 1234);
        let expected = pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Event(pb::Event {
                id: id.into(),
                payload: Some(payload),
                published_at_ms: 1234,
            })),
        };
        assert_eq!(buf.len(), Frame::event_len(id.len(), encoded.len(), 1234));
        assert_eq!(&buf[..], &expected.encode_to_vec()[..]);
        assert_eq!(
            pb::SubscribeResponse::decode(buf.freeze()).unwrap(),
            expected
        );
    }

    #[test]
    fn a_request_body_is_exactly_one_uncompressed_message() {
        let framed = |flag: u8, len: u32, body: &[u8]| {
            let mut out = vec![flag];
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(body);
            Bytes::from(out)
        };
        assert_eq!(single_message(framed(0, 3, b"abc")).unwrap(), &b"abc"[..]);
        assert_eq!(single_message(framed(0, 0, b"")).unwrap(), &b""[..]);
        let refused = |body: Bytes| single_message(body).unwrap_err().code();
        assert_eq!(refused(Bytes::new()), tonic::Code::Internal);
        assert_eq!(refused(Bytes::from_static(b"\0\0")), tonic::Code::Internal);
        assert_eq!(refused(framed(0, 4, b"abc")), tonic::Code::Internal);
        assert_eq!(refused(framed(0, 2, b"abc")), tonic::Code::Internal);
        assert_eq!(refused(framed(1, 3, b"abc")), tonic::Code::Unimplemented);
    }

    #[test]
    fn the_header_reader_reads_what_the_writer_wrote() {
        let mut buf = BytesMut::new();
        put_message(&mut buf, b"hello");
        put_message(&mut buf, b"");
        let chunk = buf.freeze();
        assert_eq!(
            read_header(&chunk),
            Some(Header {
                compressed: false,
                len: 5
            })
        );
        assert_eq!(read_header(&chunk[..4]), None);
        let all: Vec<Bytes> = messages(&chunk).collect();
        assert_eq!(all, [Bytes::from_static(b"hello"), Bytes::new()]);
    }
}
