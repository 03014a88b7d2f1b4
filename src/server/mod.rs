//! The gRPC server: both services, grpc-web with CORS, reflection (v1 and v1alpha) and health,
//! all on one port.

mod admin;
mod browser_calls;
mod canonical;
mod client_api;
mod codec;
pub mod defaults;
mod health;
mod keys;
mod landing;
mod other_nodes;
mod page_token;
pub(crate) mod publish_request;
pub(crate) mod publish_response;
mod request_checks;
mod subscribe_service;
mod subscriber_stream;
mod tls;
mod upkeep;

use std::{future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{codec::CompressionEncoding, transport::server::TcpIncoming};
use tonic_health::ServingStatus;
use tower_http::cors::{AllowOrigin, CorsLayer};

use admin::AdminApi;
use client_api::ClientApi;
pub use codec::DecodeRequest;
pub use keys::KeyReloader;
pub use publish_request::{PublishBatchRequest, PublishRequest};
pub use request_checks::{CheckedBatch, CheckedEvent, RequestChecks};
pub(crate) use subscribe_service::read_request as read_subscribe_request;
pub(crate) use subscriber_stream::StreamTiming;
pub use tls::{TlsConfig, TlsError, dev_certificate, write_private_file};

use crate::{
    channel::{Channels, HubLimits, ReplayLimits},
    clock::SharedClock,
    error::Error,
    interceptor::Interceptors,
    keyring::Keyring,
    limits::Limits,
    metrics::{self, VerificationFailure},
    object::{ObjectRegistry, Objects},
    store::EventStore,
    token::{self, TokenClaims},
};

/// The generated service traits and servers, `Subscribe` aside (see `build.rs`).
#[allow(clippy::all, missing_docs, unreachable_pub)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/durable_iterator.v1.rs"));
}

/// How the server behaves; the command line fills it in.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Signs tokens and session tickets with the first key, verifies with any (replaced at
    /// run time through [`Server::key_reloader`]).
    pub keyring: Keyring,
    /// The admin API key; `None` disables the admin service (replaced at run time, by one or
    /// more keys, through [`Server::key_reloader`]).
    pub api_key: Option<String>,
    /// A heartbeat is sent after this long without another message.
    pub heartbeat: Duration,
    /// `TokenExpiring` is sent this long before a token expires (at most a quarter of the
    /// token's lifetime before: a short-lived token is not told at once).
    pub expiry_notice: Duration,
    /// Lifetime of tokens minted by `IssueToken` without a TTL.
    pub default_token_ttl_secs: u64,
    /// Sizes and counts every request is checked against.
    pub limits: Limits,
    /// Events a subscriber may have queued before its stream ends as a slow consumer.
    pub subscriber_queue: usize,
    /// HTTP/2 streams per connection (many sessions can share one connection).
    pub max_concurrent_streams: u32,
    /// The channel objects; channels that match no registration get the relay.
    pub objects: ObjectRegistry,
    /// Code run around every Subscribe, Invoke and RefreshToken, in order.
    pub interceptors: Interceptors,
    /// How resumes read their gap: in pages, a bounded number at once.
    pub replay: ReplayLimits,
    /// Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) instead of plaintext.
    pub tls: Option<TlsConfig>,
    /// Origins a browser may call from (CORS); empty: any origin.
    pub cors_allowed_origins: Vec<http::HeaderValue>,
    /// The store's file, whose size is reported as `durable_iterator_store_file_bytes`.
    pub store_file: Option<std::path::PathBuf>,
}

impl ServerConfig {
    /// Defaults for everything but the keys.
    pub fn new(keyring: Keyring, api_key: Option<String>) -> Self {
        Self {
            keyring,
            api_key,
            heartbeat: defaults::HEARTBEAT,
            expiry_notice: defaults::EXPIRY_NOTICE,
            default_token_ttl_secs: token::DEFAULT_TTL_SECS,
            limits: Limits::default(),
            subscriber_queue: defaults::SUBSCRIBER_QUEUE,
            max_concurrent_streams: defaults::MAX_CONCURRENT_STREAMS,
            objects: ObjectRegistry::new(),
            interceptors: Interceptors::default(),
            replay: ReplayLimits::default(),
            tls: None,
            cors_allowed_origins: Vec::new(),
            store_file: None,
        }
    }
}

type ClientServer = subscribe_service::ClientService;
type AdminServer = generated::durable_iterator_admin_server::DurableIteratorAdminServer<AdminApi>;

/// What the services share.
pub(crate) struct Shared {
    config: ServerConfig,
    /// The keys in force: `config`'s until a reload.
    keys: Arc<ArcSwap<keys::Keys>>,
    timing: StreamTiming,
    channels: Arc<Channels>,
    objects: Objects,
    clock: SharedClock,
    /// Cancelled when the server shuts down: open streams end with UNAVAILABLE.
    shutdown: CancellationToken,
    /// Cancelled when the drain begins (health NOT_SERVING for good), before `shutdown`.
    draining: CancellationToken,
}

impl Shared {
    /// The keys in force now.
    fn keys(&self) -> arc_swap::Guard<Arc<keys::Keys>> {
        self.keys.load()
    }

    /// Checks a token's size, signature, expiry and claims.
    fn verify_token(&self, token: &str) -> Result<TokenClaims, Error> {
        let verified = self.check_token(token);
        if let Err(error) = &verified {
            metrics::verification_failed(match error {
                Error::Token(token::TokenError::BadSignature) => VerificationFailure::BadSignature,
                Error::Token(token::TokenError::Expired) => VerificationFailure::Expired,
                Error::Token(token::TokenError::Malformed(_)) => VerificationFailure::Malformed,
                _ => VerificationFailure::OverLimit,
            });
        }
        verified
    }

    fn check_token(&self, token: &str) -> Result<TokenClaims, Error> {
        let limits = &self.config.limits;
        limits.check_token(token)?;
        let claims = token::verify(&self.keys().keyring, token, self.clock.now_secs())?;
        limits.check_channel(&claims.chn)?;
        limits.check_tags(claims.tags())?;
        Ok(claims)
    }

    /// The session id of `ticket` if this server issued it for `channel`.
    fn verify_ticket(&self, channel: &str, ticket: &str) -> Result<String, Error> {
        crate::session::verify_ticket(&self.keys().keyring, channel, ticket).map_err(|invalid| {
            metrics::verification_failed(VerificationFailure::BadTicket);
            Error::from(invalid)
        })
    }
}

/// A configured server, ready to serve on a listener.
pub struct Server {
    shared: Arc<Shared>,
}

/// Response headers a grpc-web client in a browser must be able to read.
const GRPC_WEB_EXPOSED_HEADERS: [&str; 3] =
    ["grpc-status", "grpc-message", "grpc-status-details-bin"];
/// Request headers browser gRPC libraries send (grpc-web, Connect, tracing).
const GRPC_WEB_ALLOWED_HEADERS: [&str; 11] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
    "grpc-accept-encoding",
    "grpc-encoding",
    "connect-protocol-version",
    "connect-timeout-ms",
    "traceparent",
    "tracestate",
];

impl Server {
    /// A server of `config` on `store`, with time from `clock`.
    pub fn new(config: ServerConfig, store: Arc<dyn EventStore>, clock: SharedClock) -> Self {
        let hub_limits = HubLimits {
            subscriber_queue: config.subscriber_queue,
            max_batch: defaults::MAX_BATCH,
            replay: config.replay,
        };
        let timing = StreamTiming {
            heartbeat_ms: config.heartbeat.as_millis() as u64,
            expiry_notice_ms: config.expiry_notice.as_millis() as u64,
        };
        let channels = Arc::new(Channels::new(store, clock.clone(), hub_limits));
        let objects = Objects::new(config.objects.clone(), channels.clone(), config.limits);
        let keys = Arc::new(ArcSwap::from_pointee(keys::Keys::new(
            config.keyring.clone(),
            config.api_key.iter().cloned().collect(),
        )));
        Self {
            shared: Arc::new(Shared {
                config,
                keys,
                timing,
                channels,
                objects,
                clock,
                shutdown: CancellationToken::new(),
                draining: CancellationToken::new(),
            }),
        }
    }

    /// A handle that replaces the signing and API keys while the server runs.
    pub fn key_reloader(&self) -> KeyReloader {
        KeyReloader::new(self.shared.keys.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; then open streams are told to reconnect
    /// (UNAVAILABLE) and the server waits for calls in flight to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_draining(listener, shutdown, std::future::ready(()))
            .await
    }

    /// Serves on `listener`; once `draining` resolves, health reports NOT_SERVING (load
    /// balancers move clients away) while everything else goes on; once `stop` resolves too,
    /// new streams are refused and open ones told to reconnect (UNAVAILABLE), and the server
    /// waits for calls in flight to finish.
    pub async fn serve_draining(
        self,
        listener: TcpListener,
        draining: impl Future<Output = ()> + Send,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let shared = self.shared;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the embedded descriptor set is valid");
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the embedded descriptor set is valid");
        let health = tonic_health::server::HealthReporter::new();
        let health_service = health::server(health.clone(), shared.shutdown.clone());
        health.set_serving::<ClientServer>().await;
        health.set_serving::<AdminServer>().await;

        let origins = &shared.config.cors_allowed_origins;
        let allow_origin = if origins.is_empty() {
            AllowOrigin::mirror_request()
        } else {
            AllowOrigin::list(origins.iter().cloned())
        };
        let cors = CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers(GRPC_WEB_ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(GRPC_WEB_EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(24 * 60 * 60));

        let maintenance = tokio::spawn(upkeep::maintain(shared.clone(), health.clone()));
        let reaper = tokio::spawn(end_sessions(shared.clone()));
        let mover = tokio::spawn(other_nodes::supersede_moved_sessions(shared.clone()));
        let forwarded = tokio::spawn(other_nodes::serve_forwarded_calls(shared.clone()));
        let stopping = shared.clone();
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(shared.config.max_concurrent_streams)
            .layer(landing::LandingLayer)
            .layer(browser_calls::BrowserCallsLayer::new(cors))
            .add_service(subscribe_service::ClientService::new(ClientApi::new(
                shared.clone(),
            )))
            .add_service(
                generated::durable_iterator_admin_server::DurableIteratorAdminServer::new(
                    AdminApi::new(shared.clone()),
                )
                // gzip and zstd both ways (answers are compressed only for a client that accepts it).
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd),
            )
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(health_service);
        let stop = async move {
            draining.await;
            stopping.draining.cancel();
            // Load balancers stop routing here, before open streams are told to reconnect
            // elsewhere.
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health.set_not_serving::<ClientServer>().await;
            health.set_not_serving::<AdminServer>().await;
            stop.await;
            // Cancelled first: a stream that registers after its channel's queues
            // were closed sees it and ends (SubscriberStream::new).
            stopping.shutdown.cancel();
            stopping.channels.close_subscribers();
        };
        let result = match shared.config.tls.clone() {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.incoming(listener), stop)
                    .await
            }
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        shared.shutdown.cancel();
        maintenance.abort();
        reaper.abort();
        mover.abort();
        forwarded.abort();
        // Wait for the tasks to be gone: they hold the store, which closes when the last holder
        // lets go (a restarted server can then open the same data directory at once).
        let _ = maintenance.await;
        let _ = reaper.await;
        let _ = mover.await;
        let _ = forwarded.await;
        result
    }
}

/// Tells channel objects about sessions whose resume window lapsed without a reconnect; with
/// other nodes, only of those no other node took over meanwhile (the session ends once, on one
/// node).
async fn end_sessions(shared: Arc<Shared>) {
    let live = shared.channels.sessions().clone();
    loop {
        let ended = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            ended = live.next_ended() => ended,
        };
        if let Some(cluster) = live.cluster() {
            let ended_here = loop {
                match cluster.ended_here(&ended.session_id).await {
                    Ok(ended_here) => break ended_here,
                    // Redis is away: the session ends late rather than twice.
                    Err(error) => {
                        tracing::debug!(%error, "asking whether a session ended here failed");
                        tokio::select! {
                            _ = shared.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            if !ended_here {
                continue;
            }
        }
        shared
            .objects
            .session_ended(&ended.channel, &ended.session_id)
            .await;
    }
}
