//! `Subscribe` served on the HTTP/2 stream directly; every other call of the client service goes
//! to tonic's generated handler.
//!
//! tonic writes a server stream one message per item: each is copied into the call's encode
//! buffer behind a header tonic computes. A subscriber's stream is instead made of chunks that
//! already hold whole gRPC messages (`subscribe.rs`), most of them slices of a batch's shared
//! wire buffer, so they are handed to HTTP/2 as they are. The request side, the status trailers
//! and trailers-only errors are what tonic would produce; grpc-web, CORS and the other layers of
//! the server wrap this service like any other.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Frame;
use tonic::{
    Status, body::Body, codec::CompressionEncoding, codegen::Service, server::NamedService,
};

use super::{
    client_api::ClientApi,
    generated::durable_iterator_server::{DurableIteratorServer, SERVICE_NAME},
    subscriber_stream::ChunkStream,
};
use crate::{
    pb,
    wire::{self, Encoding, GRPC_HEADER},
};

/// The path of `Subscribe`.
const SUBSCRIBE_PATH: &str = "/durable_iterator.v1.DurableIterator/Subscribe";

/// Largest `SubscribeRequest` accepted, as tonic's default decoding limit.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The client service: `Subscribe` here, the rest through the generated server.
#[derive(Clone)]
pub(crate) struct ClientService {
    api: Arc<ClientApi>,
    generated: DurableIteratorServer<ClientApi>,
}

impl ClientService {
    pub(crate) fn new(api: ClientApi) -> Self {
        let api = Arc::new(api);
        Self {
            // gzip and zstd both ways, as `Subscribe` (answers compressed only for a client that
            // accepts it).
            generated: DurableIteratorServer::from_arc(api.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd),
            api,
        }
    }
}

impl NamedService for ClientService {
    const NAME: &'static str = SERVICE_NAME;
}

impl Service<http::Request<Body>> for ClientService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return Box::pin(self.generated.call(request));
        }
        let api = self.api.clone();
        Box::pin(async move {
            Ok(match subscribe(&api, request).await {
                Ok((chunks, encoding)) => {
                    let mut response = http::Response::new(Body::new(ChunkBody {
                        chunks,
                        ended: false,
                    }));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                    if let Some(encoding) = encoding {
                        headers.insert("grpc-encoding", HeaderValue::from_static(encoding.name()));
                    }
                    response
                }
                // Trailers-only, as tonic answers a refused call.
                Err(status) => {
                    super::client_api::refused("Subscribe", &status);
                    status.into_http()
                }
            })
        })
    }
}

/// Reads and decodes the request (compressed or not), then opens the stream, compressed when
/// the client accepts it.
async fn subscribe(
    api: &ClientApi,
    request: http::Request<Body>,
) -> Result<(ChunkStream, Option<Encoding>), Status> {
    let headers = request.headers();
    let request_encoding = match headers.get("grpc-encoding") {
        Some(value) => Encoding::of_request(value.as_bytes())?,
        None => None,
    };
    let response_encoding = headers
        .get("grpc-accept-encoding")
        .and_then(|value| Encoding::accepted(value.as_bytes()));
    let body = Limited::new(request.into_body(), MAX_REQUEST_BYTES + GRPC_HEADER)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                Status::out_of_range(format!(
                    "the request is larger than the limit of {MAX_REQUEST_BYTES} bytes"
                ))
            } else {
                // A reset, an HTTP/2 error, or a grpc-web body that does not decode: the
                // status inside, as tonic reports it for its other calls.
                Status::from_error(e)
            }
        })?
        .to_bytes();
    let stream = api.open(read_request(body, request_encoding)?).await?;
    Ok((
        stream.compressed_with(response_encoding).into_chunks(),
        response_encoding,
    ))
}

/// The `SubscribeRequest` of a request body: one gRPC message, compressed with `encoding` or
/// not.
pub(crate) fn read_request(
    body: Bytes,
    encoding: Option<Encoding>,
) -> Result<pb::SubscribeRequest, Status> {
    let message = wire::single_message(body, encoding, MAX_REQUEST_BYTES)?;
    super::codec::decode_request(message)
}

/// The response body: each chunk is one DATA frame's worth, the end is the status trailers.
struct ChunkBody {
    chunks: ChunkStream,
    ended: bool,
}

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match self.chunks.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.ended = true;
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // Only a message that cannot be a header value gets here.
            Status::internal("the stream ended with an unprintable status")
                .add_header(&mut trailers)
                .ok();
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
