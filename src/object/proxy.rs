//! The method proxy: channels with no registered object forward `Invoke` to an HTTP endpoint
//! of the application, so the standalone binary can run methods written in any language.
//!
//! Every call is one `POST` to the configured URL with a JSON body
//!
//! ```json
//! {"channel": "chat:1", "session_id": "…" or null, "att": <token att> or null,
//!  "path": ["routerClient", "echo"], "input": <any JSON>}
//! ```
//!
//! A `2xx` answer's JSON body is the method's output. Any other answer is an error whose gRPC
//! code follows the HTTP status (400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403
//! `PERMISSION_DENIED`, 404 `NOT_FOUND`, 409 `ABORTED`, 412 `FAILED_PRECONDITION`, 429
//! `RESOURCE_EXHAUSTED`, 501 `UNIMPLEMENTED`, 502–504 `UNAVAILABLE`, others `INTERNAL`), and
//! whose message is the body's `message` field when it has one, else the body's text.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tonic::Code;

use super::{Call, MethodError, SessionInfo, bound::BoundObject};
use crate::channel::ResumeOutcome;

/// Longest error text taken from an upstream body.
const MAX_MESSAGE_CHARS: usize = 512;
/// Largest upstream answer read.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Where and how to forward method calls.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The endpoint every call is POSTed to (`http://`, or `https://` trusting the system's
    /// root certificates).
    pub url: Uri,
    /// How long one call may take upstream; past it the caller gets `DEADLINE_EXCEEDED`.
    pub timeout: Duration,
}

/// Forwards calls to [`ProxyConfig::url`]; shared by every channel it serves.
#[derive(Clone)]
pub(crate) struct MethodProxy {
    config: Arc<ProxyConfig>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// HTTP and HTTPS, with the system's root certificates (none found: HTTPS calls fail, and say
/// why, while HTTP ones work).
fn https_connector() -> HttpsConnector<HttpConnector> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(builder) => builder,
        Err(error) => {
            tracing::warn!(%error, "no system root certificates: https method proxies will fail");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty_roots_config())
        }
    };
    builder.https_or_http().enable_http1().build()
}

fn empty_roots_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
}

impl MethodProxy {
    pub(crate) fn new(config: ProxyConfig) -> Self {
        Self {
            config: Arc::new(config),
            client: Client::builder(TokioExecutor::new()).build(https_connector()),
        }
    }

    async fn forward(self, body: serde_json::Value) -> Result<serde_json::Value, MethodError> {
        let request = Request::post(self.config.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| MethodError::internal(format!("method proxy request: {e}")))?;
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| {
                    MethodError::unavailable(format!("method proxy unreachable: {e}"))
                })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| MethodError::unavailable(format!("method proxy answer: {e}")))?
                .to_bytes();
            Ok::<_, MethodError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| {
                MethodError::new(
                    Code::DeadlineExceeded,
                    format!("method proxy took longer than {:?}", self.config.timeout),
                )
            })??;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                MethodError::internal(format!("method proxy answered {status} without JSON: {e}"))
            });
        }
        Err(MethodError::new(code_of(status), message_of(status, &body)))
    }
}

/// The gRPC code for an upstream HTTP status.
fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        502..=504 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The body's `message` field, or its text, or the status.
fn message_of(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("message")?.as_str().map(str::to_owned));
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    if text.is_empty() {
        format!("method proxy answered HTTP {status}")
    } else {
        text.chars().take(MAX_MESSAGE_CHARS).collect()
    }
}

#[async_trait::async_trait]
impl BoundObject for MethodProxy {
    fn invoke(
        &self,
        path: &[String],
        call: Call,
        input: serde_json::Value,
    ) -> Option<BoxFuture<'static, Result<serde_json::Value, MethodError>>> {
        let body = serde_json::json!({
            "channel": call.channel.name(),
            "session_id": call.caller.session_id,
            "att": call.caller.att(),
            "path": path,
            "input": input,
        });
        Some(Box::pin(self.clone().forward(body)))
    }

    async fn on_subscribed(&self, _session: &SessionInfo, _resume: &ResumeOutcome) {}

    async fn on_session_ended(&self, _session_id: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        for (status, code) in [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::Aborted),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (503, Code::Unavailable),
            (418, Code::Internal),
        ] {
            assert_eq!(
                code_of(StatusCode::from_u16(status).unwrap()),
                code,
                "{status}"
            );
        }
    }

    #[test]
    fn messages_come_from_the_body() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(
            message_of(status, br#"{"message":"no such room"}"#),
            "no such room"
        );
        assert_eq!(message_of(status, b" plain text \n"), "plain text");
        assert_eq!(
            message_of(status, b""),
            "method proxy answered HTTP 400 Bad Request"
        );
        assert_eq!(
            message_of(status, "é".repeat(1000).as_bytes())
                .chars()
                .count(),
            512
        );
    }
}
