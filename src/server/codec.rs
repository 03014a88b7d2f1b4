//! The codec of the generated services: prost, except that a request that does not decode is
//! `INVALID_ARGUMENT` (the caller's fault, with prost's message naming the field), where tonic
//! answers `INTERNAL`, which tells a client to retry a request that can never succeed.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

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
    T: Message + Send + 'static,
    U: DecodeRequest + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
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
