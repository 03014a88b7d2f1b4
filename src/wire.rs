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

/// Messages shorter than this are sent uncompressed on a compressed stream (gRPC marks each
/// message): gzip's own framing makes a 100-byte event larger, and costs more than it saves.
pub(crate) const COMPRESS_AT_LEAST: usize = 1024;

/// A message compression of the calls (`grpc-encoding`), as the server accepts and sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// The encoding of a `grpc-encoding` value; `None` for `identity`, an error for the rest.
    pub(crate) fn of_request(value: &[u8]) -> Result<Option<Self>, Status> {
        match value {
            b"identity" => Ok(None),
            b"gzip" => Ok(Some(Encoding::Gzip)),
            b"zstd" => Ok(Some(Encoding::Zstd)),
            other => Err(Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// The encoding to answer with: the first of the client's `grpc-accept-encoding` (a comma
    /// list, in its order of preference) that the server speaks.
    pub(crate) fn accepted(value: &[u8]) -> Option<Self> {
        value
            .split(|byte| *byte == b',')
            .find_map(|name| match name.trim_ascii() {
                b"gzip" => Some(Encoding::Gzip),
                b"zstd" => Some(Encoding::Zstd),
                _ => None,
            })
    }

    /// The `grpc-encoding` header value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }

    /// `message`, compressed.
    pub(crate) fn compress(self, message: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match self {
            Encoding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                // Writing into a Vec cannot fail.
                let _ = encoder.write_all(message);
                encoder.finish().unwrap_or_default()
            }
            // Level 1: the stream's bytes go out at once; ratio matters less than time.
            Encoding::Zstd => zstd::bulk::compress(message, 1).unwrap_or_default(),
        }
    }

    /// `message`, decompressed; at most `limit` bytes of it (a small message must not expand
    /// into a large allocation).
    pub(crate) fn decompress(self, message: &[u8], limit: usize) -> Result<Bytes, Status> {
        use std::io::Read;
        let undecodable =
            |e: std::io::Error| Status::internal(format!("the message does not decompress: {e}"));
        let mut out = Vec::new();
        let read = match self {
            Encoding::Gzip => flate2::read::GzDecoder::new(message)
                .take(limit as u64 + 1)
                .read_to_end(&mut out),
            Encoding::Zstd => zstd::stream::read::Decoder::new(message)
                .map_err(undecodable)?
                .take(limit as u64 + 1)
                .read_to_end(&mut out),
        };
        read.map_err(undecodable)?;
        if out.len() > limit {
            return Err(Status::out_of_range(format!(
                "the decompressed request is larger than the limit of {limit} bytes"
            )));
        }
        Ok(out.into())
    }
}

/// Appends `message` to `buf` as a gRPC message of a stream compressed with `encoding`:
/// compressed (flag 1) from [`COMPRESS_AT_LEAST`] bytes, as it is (flag 0) below.
pub(crate) fn put_message_with(buf: &mut BytesMut, message: &[u8], encoding: Option<Encoding>) {
    match encoding {
        Some(encoding) if message.len() >= COMPRESS_AT_LEAST => {
            let compressed = encoding.compress(message);
            buf.put_u8(1);
            buf.put_u32(compressed.len() as u32);
            buf.put_slice(&compressed);
        }
        _ => put_message(buf, message),
    }
}

/// A control message (`Subscribed`, `Heartbeat`, `TokenExpiring`) as one gRPC message.
pub(crate) fn control_message(message: &pb::SubscribeResponse) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(message_len(len));
    put_header(&mut buf, len);
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// The one message of a unary request body, without its header, decompressed with the
/// call's `encoding` (at most `limit` bytes).
pub(crate) fn single_message(
    mut body: Bytes,
    encoding: Option<Encoding>,
    limit: usize,
) -> Result<Bytes, Status> {
    if body.is_empty() {
        return Err(Status::internal("Missing request message."));
    }
    let header =
        read_header(&body).ok_or_else(|| Status::internal("malformed gRPC message header"))?;
    body.advance(GRPC_HEADER);
    if body.len() != header.len {
        return Err(Status::internal(format!(
            "expected one message of {} bytes, the request holds {}",
            header.len,
            body.len()
        )));
    }
    match (header.compressed, encoding) {
        (false, _) => Ok(body),
        (true, Some(encoding)) => encoding.decompress(&body, limit),
        (true, None) => Err(Status::internal(
            "a compressed message in a call without grpc-encoding",
        )),
    }
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
    pub(crate) fn write_event(buf: &mut BytesMut, id: &[u8], payload: &[u8], published_at_ms: i64) {
        let event_len = Self::event_body_len(id.len(), payload.len(), published_at_ms);
        encoding::encode_key(RESPONSE_EVENT, WireType::LengthDelimited, buf);
        encoding::encode_varint(event_len as u64, buf);
        encoding::encode_key(EVENT_ID, WireType::LengthDelimited, buf);
        encoding::encode_varint(id.len() as u64, buf);
        buf.put_slice(id);
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
        Frame::write_event(&mut buf, id.as_bytes(), &encoded, 1234);
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
        let single = |body: Bytes| single_message(body, None, 1_024);
        assert_eq!(single(framed(0, 3, b"abc")).unwrap(), &b"abc"[..]);
        assert_eq!(single(framed(0, 0, b"")).unwrap(), &b""[..]);
        let refused = |body: Bytes| single(body).unwrap_err().code();
        assert_eq!(refused(Bytes::new()), tonic::Code::Internal);
        assert_eq!(refused(Bytes::from_static(b"\0\0")), tonic::Code::Internal);
        assert_eq!(refused(framed(0, 4, b"abc")), tonic::Code::Internal);
        assert_eq!(refused(framed(0, 2, b"abc")), tonic::Code::Internal);
        assert_eq!(refused(framed(1, 3, b"abc")), tonic::Code::Internal);

        let gzip = Encoding::Gzip;
        let compressed = gzip.compress(b"hello");
        let body = framed(1, compressed.len() as u32, &compressed);
        assert_eq!(
            single_message(body.clone(), Some(gzip), 1_024).unwrap(),
            &b"hello"[..]
        );
        let bomb = gzip.compress(&[0; 4_096]);
        let body = framed(1, bomb.len() as u32, &bomb);
        let error = single_message(body, Some(gzip), 1_024).unwrap_err();
        assert_eq!(error.code(), tonic::Code::OutOfRange);
        let garbage = framed(1, 3, b"abc");
        let error = single_message(garbage, Some(gzip), 1_024).unwrap_err();
        assert_eq!(error.code(), tonic::Code::Internal);

        let zstd = Encoding::Zstd;
        let compressed = zstd.compress(b"hello");
        let body = framed(1, compressed.len() as u32, &compressed);
        assert_eq!(
            single_message(body, Some(zstd), 1_024).unwrap(),
            &b"hello"[..]
        );
        let bomb = zstd.compress(&[0; 4_096]);
        let body = framed(1, bomb.len() as u32, &bomb);
        let error = single_message(body, Some(zstd), 1_024).unwrap_err();
        assert_eq!(error.code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn encodings_are_named_by_their_headers() {
        assert_eq!(Encoding::of_request(b"identity").unwrap(), None);
        assert_eq!(Encoding::of_request(b"gzip").unwrap(), Some(Encoding::Gzip));
        let refused = Encoding::of_request(b"br").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert_eq!(
            Encoding::accepted(b"identity, deflate, gzip"),
            Some(Encoding::Gzip)
        );
        assert_eq!(Encoding::accepted(b"identity,deflate"), None);
        assert_eq!(Encoding::of_request(b"zstd").unwrap(), Some(Encoding::Zstd));
        assert_eq!(Encoding::accepted(b"zstd,gzip"), Some(Encoding::Zstd));
        assert_eq!(Encoding::accepted(b"gzip, zstd"), Some(Encoding::Gzip));
    }

    #[test]
    fn a_compressed_stream_compresses_large_messages_only() {
        let small = [b'a'; COMPRESS_AT_LEAST - 1];
        let large = [b'b'; COMPRESS_AT_LEAST];
        let mut buf = BytesMut::new();
        put_message_with(&mut buf, &small, Some(Encoding::Gzip));
        put_message_with(&mut buf, &large, Some(Encoding::Gzip));
        let chunk = buf.freeze();
        let first = read_header(&chunk).unwrap();
        assert!(!first.compressed);
        let second = read_header(&chunk[GRPC_HEADER + first.len..]).unwrap();
        assert!(second.compressed);
        let body = &chunk[2 * GRPC_HEADER + first.len..];
        assert_eq!(body.len(), second.len);
        assert_eq!(Encoding::Gzip.decompress(body, 4_096).unwrap(), &large[..]);
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
