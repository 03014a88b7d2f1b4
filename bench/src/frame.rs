//! gRPC message framing as the load client and the baseline need it: the 5-byte header, and a
//! [`Frame`], a `SubscribeResponse` encoded once whose bytes every baseline stream writes.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Bytes of a gRPC message header: a compression flag and a big-endian length.
pub const HEADER: usize = 5;

/// The length of the message whose header starts `header` (at least [`HEADER`] bytes).
pub fn message_len(header: &[u8]) -> usize {
    header
        .get(1..HEADER)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map_or(0, |len| u32::from_be_bytes(len) as usize)
}

/// Appends `message` to `buf` as an uncompressed gRPC message.
pub fn put_message(buf: &mut BytesMut, message: &[u8]) {
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
}

/// One encoded `SubscribeResponse`. Cloning shares the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Encodes `message` once.
    pub fn message(message: &durable_iterator::pb::SubscribeResponse) -> Self {
        Self(message.encode_to_vec().into())
    }
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
        // The baseline only writes frames; should one ever be decoded, nothing is kept.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Initial size of a call's encode buffer: the product's streams hold about this much too.
const ENCODE_BUFFER_BYTES: usize = 512;
/// Bytes encoded before a call's buffer is handed to HTTP/2 (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The codec of the baseline's generated servers: prost, with a small per-call encode buffer.
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
