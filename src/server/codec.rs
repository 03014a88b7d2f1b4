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
    U: Message + Default + Send + 'static,
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

/// prost's decoding of `U`, through [`decode_request`].
#[derive(Debug)]
pub(crate) struct RequestDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_request(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes one request message: every call of both services, `Subscribe` included, decodes
/// its request here.
pub(crate) fn decode_request<U: Message + Default>(message: impl Buf) -> Result<U, Status> {
    U::decode(message).map_err(invalid_request)
}

/// The status of a request message that does not decode; `reason` is prost's (it names the
/// message and field, e.g. `PublishRequest.tags: invalid string value`).
fn invalid_request(reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("the request does not decode: {reason}"))
}
