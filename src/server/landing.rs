//! A plain answer to a browser's `GET` of the port: what this is and where to read on. Opening
//! `https://localhost:PORT` to accept a development certificate otherwise starts an empty
//! download of an `application/grpc` answer. Every gRPC and grpc-web call is a `POST` (CORS
//! preflights are `OPTIONS`), so nothing else is touched.

use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use http::{Method, Request, Response, header};
use http_body_util::Full;
use tonic::body::Body;
use tower::{Layer, Service};

const PAGE: &str = "durable-iterator: durable event streams over gRPC.\n\n\
This port speaks gRPC and grpc-web (POST); reflection and health answer on it too:\n\
    grpcurl <address> list\n";

/// Wraps the server's services with the landing answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LandingLayer;

impl<S> Layer<S> for LandingLayer {
    type Service = Landing<S>;

    fn layer(&self, inner: S) -> Landing<S> {
        Landing { inner }
    }
}

/// The server's services, with `GET` answered in plain text.
#[derive(Debug, Clone)]
pub(crate) struct Landing<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Landing<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() != Method::GET {
            return self.inner.call(request).boxed();
        }
        let mut response = Response::new(Body::new(Full::new(Bytes::from_static(PAGE.as_bytes()))));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        async move { Ok(response) }.boxed()
    }
}
