//! The codec of the generated services: prost, except that a request that does not decode is
//! `INVALID_ARGUMENT` (the caller's fault, with prost's message naming the field), where tonic
//! answers `INTERNAL`, which tells a client to retry a request that can never succeed; and the
//! publish calls read and answer with types of their own (`publish_request.rs`,
//! `publish_response.rs`) that write the same bytes with less work.

use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// prost, with decode failures as `INVALID_ARGUMENT` (`codec_path` in `build.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: EncodeResponse + Send + 'static,
    U: DecodeRequest + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ResponseEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

/// A response message as the server writes it: prost's message of the contract, or a type of
/// the server's own that writes the same bytes.
pub(crate) trait EncodeResponse {
    /// Appends the encoded message to `buf`.
    fn encode_response(&self, buf: &mut impl BufMut);
}

impl<M: Message> EncodeResponse for M {
    fn encode_response(&self, buf: &mut impl BufMut) {
        // What `Message::encode` does, less its check of the room left: an encode buffer
        // grows as it is written.
        self.encode_raw(buf);
    }
}

/// The encoding of `T` ([`EncodeResponse`]).
#[derive(Debug)]
pub(crate) struct ResponseEncoder<T>(PhantomData<T>);

impl<T: EncodeResponse> Encoder for ResponseEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_response(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The decoding of `U` ([`DecodeRequest`]).
#[derive(Debug)]
pub(crate) struct RequestDecoder<U>(PhantomData<U>);

impl<U: DecodeRequest> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode_request(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A request message as the server reads it: prost's message of the contract, or a type of the
/// server's own that reads the same bytes (`server/publish_request.rs`, named for the
/// generated services in `build.rs`).
pub trait DecodeRequest: Sized {
    /// Reads one request message; a failure is `INVALID_ARGUMENT`.
    fn decode_request(message: impl Buf) -> Result<Self, Status>;
}

impl<M: Message + Default> DecodeRequest for M {
    fn decode_request(message: impl Buf) -> Result<Self, Status> {
        decode_request(message)
    }
}

/// Decodes one request message with prost: every call of both services, `Subscribe` included,
/// decodes its request here (the publish calls when they cannot be read in one pass).
pub(crate) fn decode_request<U: Message + Default>(message: impl Buf) -> Result<U, Status> {
    U::decode(message).map_err(invalid_request)
}

/// The status of a request message that does not decode; `reason` is prost's (it names the
/// message and field, e.g. `PublishRequest.tags: invalid string value`).
fn invalid_request(reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("the request does not decode: {reason}"))
}
