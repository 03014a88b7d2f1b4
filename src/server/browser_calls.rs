//! grpc-web and CORS for the calls browsers make, and a way around both for native gRPC.
//!
//! A browser's call carries an `Origin` (its CORS preflight too) and a grpc-web content type;
//! a native gRPC client sends neither. Native calls go straight to the services: CORS would
//! add its `Vary` headers to each answer (built and HPACK-encoded per call, a tenth of a
//! unary publish's work) and grpc-web would look the call over, for nothing.

use std::task::{Context, Poll};

use futures::future::Either;
use http::{Request, Response, header};
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::cors::{Cors, CorsLayer};

/// Wraps the services: browser calls through `cors` and grpc-web, native calls around them.
#[derive(Debug, Clone)]
pub(crate) struct BrowserCallsLayer {
    cors: CorsLayer,
}

impl BrowserCallsLayer {
    pub(crate) fn new(cors: CorsLayer) -> Self {
        Self { cors }
    }
}

impl<S: Clone> Layer<S> for BrowserCallsLayer {
    type Service = BrowserCalls<S>;

    fn layer(&self, inner: S) -> BrowserCalls<S> {
        BrowserCalls {
            browser: self
                .cors
                .layer(tonic_web::GrpcWebLayer::new().layer(inner.clone())),
            native: inner,
        }
    }
}

/// The services, reached through grpc-web and CORS or directly (see the module).
#[derive(Debug, Clone)]
pub(crate) struct BrowserCalls<S> {
    browser: Cors<tonic_web::GrpcWebService<S>>,
    native: S,
}

/// Whether a request is a native gRPC call: no `Origin`, a gRPC content type that is not
/// grpc-web's.
fn is_native_grpc<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |value| value.as_bytes());
    !headers.contains_key(header::ORIGIN)
        && content_type.starts_with(b"application/grpc")
        && !content_type.starts_with(b"application/grpc-web")
}

impl<S, B> Service<Request<B>> for BrowserCalls<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    tonic_web::GrpcWebService<S>: Service<Request<B>, Response = Response<Body>, Error = S::Error>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        Either<<Cors<tonic_web::GrpcWebService<S>> as Service<Request<B>>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Both are the same services underneath: ready together.
        match self.native.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.browser.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_native_grpc(&request) {
            Either::Right(self.native.call(request))
        } else {
            Either::Left(self.browser.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_native_grpc_calls_go_around_grpc_web_and_cors() {
        let request = |headers: &[(&'static str, &str)]| {
            let mut request = Request::new(());
            for (name, value) in headers {
                request
                    .headers_mut()
                    .insert(*name, http::HeaderValue::from_str(value).unwrap());
            }
            request
        };
        let native = [("content-type", "application/grpc")];
        assert!(is_native_grpc(&request(&native)));
        assert!(is_native_grpc(&request(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        for browser in [
            &[("content-type", "application/grpc-web+proto")][..],
            &[("content-type", "application/grpc-web-text")],
            &[
                ("content-type", "application/grpc"),
                ("origin", "https://app.example"),
            ],
            // A CORS preflight.
            &[("origin", "https://app.example")],
            &[],
        ] {
            assert!(!is_native_grpc(&request(browser)), "{browser:?}");
        }
    }
}
