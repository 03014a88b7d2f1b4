//! The Rust client: a subscription that reconnects and resumes by itself, refreshes its token,
//! and tells the application when history was lost; typed calls of channel-object methods; and
//! the admin API (publish, tokens, history, channels, presence, disconnects). Everything shares
//! one HTTP/2 connection (one tonic `Channel`).
//!
//! ```no_run
//! use durable_iterator_client::{Client, SubscribeOptions, SubscriptionItem};
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), durable_iterator_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:50051")?;
//! // In a real application the provider asks the app server for a token.
//! let provider = || async { Ok::<_, std::io::Error>("<token>".to_owned()) };
//! let mut events = client.subscribe(provider, SubscribeOptions::default());
//! while let Some(item) = events.next().await {
//!     match item? {
//!         SubscriptionItem::Event(event) => println!("{}", event.to_json()),
//!         SubscriptionItem::Resumed(report) => eprintln!("history lost: {report:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Time (backoff, refresh, liveness) comes from the client's [`Clock`], so tests drive it with
//! a [`ManualClock`] instead of sleeping.
//!
//! The crate depends on the contract ([`durable_iterator_contract`]) and tonic's client
//! transport only: no store, no server.

mod admin;
mod backoff;
mod item;
mod policy;
mod subscription;
mod token_provider;

use std::{sync::Arc, time::Duration};

use tonic::{
    Code, Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

pub use admin::{
    ChannelInfo, ChannelPage, HistoryEvent, HistoryOptions, HistoryPage, PresencePage,
    PresenceStats, PresentSession,
};
pub use backoff::Backoff;
pub use item::{Event, Payload, ResumeFailure, ResumeReport, SubscriptionItem};
pub use policy::{Disposition, invoke_is_retryable, on_status};
pub use subscription::{
    ConnectionState, Progress, SubscribeOptions, Subscription, SubscriptionHandle,
};
pub use token_provider::{
    FixedToken, ProviderError, SigningProvider, TokenFuture, TokenProvider, refreshable_in_place,
    unverified_claims,
};

use durable_iterator_contract::json;
#[doc(inline)]
pub use durable_iterator_contract::{
    Keyring, Method,
    clock::{Clock, ManualClock, SharedClock, SystemClock},
    pb,
    token::{self, TokenClaims},
};
use pb::{
    durable_iterator_admin_client::DurableIteratorAdminClient,
    durable_iterator_client::DurableIteratorClient,
};

/// What a client call or a subscription can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not a valid URI.
    #[error("invalid server address {0:?}: {1}")]
    InvalidEndpoint(String, String),
    /// The server refused the call, or the stream ended with a status that retrying cannot
    /// fix (e.g. ABORTED: the session was resumed on another stream).
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// The token provider failed this many times in a row.
    #[error("the token provider failed {attempts} times in a row: {source}")]
    TokenProvider {
        /// Failures in a row.
        attempts: u32,
        /// The last failure.
        #[source]
        source: ProviderError,
    },
    /// The reconnect attempts allowed by [`Backoff::max_attempts`] all failed.
    #[error("gave up after {attempts} reconnect attempts; last: {:?}: {}", .last.code(), .last.message())]
    RetriesExhausted {
        /// Reconnect attempts made.
        attempts: u32,
        /// The status of the last one.
        last: Status,
    },
    /// A method input could not be encoded as JSON.
    #[error("cannot encode the input of {method}: {source}")]
    Encode {
        /// The method's path.
        method: String,
        /// Why it did not encode.
        #[source]
        source: serde_json::Error,
    },
    /// A method output did not have the declared type.
    #[error("the output of {method} is not of the declared type: {source}")]
    Decode {
        /// The method's path.
        method: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The gRPC status code behind the error, if the server (or the transport) gave one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            ClientError::RetriesExhausted { last, .. } => Some(last.code()),
            _ => None,
        }
    }
}

/// How to authenticate an `Invoke`: a token, and the session ticket of a subscription if the
/// method should see that session as its caller.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The channel token (required unless the ticket names a live session).
    pub token: String,
    /// A session ticket from `Subscribed`: the method sees that session as its caller.
    pub session_ticket: Option<String>,
}

/// Retries of `Invoke` calls. Off by default: a method may not be safe to run twice, so only
/// calls refused as UNAVAILABLE (not run, or the server going away) are retried, and only when
/// asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct InvokeOptions {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The wait between retries.
    pub backoff: Backoff,
}

/// One event to publish through the admin API.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// The channel to publish to.
    pub channel: String,
    /// The event, as JSON.
    pub payload: serde_json::Value,
    /// Deliver only to sessions whose tags intersect these. `None`: everyone; empty: nobody.
    pub tags: Option<Vec<String>>,
    /// Deliver only to these session ids. `None`: no restriction; empty: nobody.
    pub targets: Option<Vec<String>>,
    /// Never deliver to these session ids.
    pub exclude: Vec<String>,
    /// Publishing again with the same key (up to 128 bytes) while the first event is retained
    /// stores nothing and answers the first event's id: safe to retry after a lost answer.
    pub idempotency_key: Option<String>,
}

/// How to connect over TLS (`https://` addresses), besides the system's root certificates.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Trust this CA too (PEM), e.g. a private one or the server's `--dev-tls` certificate.
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// Present this certificate and key (PEM) to a server that requires client certificates.
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

/// A connection to a durable-iterator server. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    clock: SharedClock,
}

impl Client {
    /// A client of the server at `endpoint` (`http://127.0.0.1:50051`, or `https://...`,
    /// trusting the system's root certificates). Connects on first use and reconnects by
    /// itself, so a server that is down now is no error here.
    pub fn new(endpoint: &str) -> Result<Self, ClientError> {
        Self::with_options(endpoint, ConnectOptions::default())
    }

    /// [`Client::new`] with TLS options: a private CA, a client certificate (mTLS).
    pub fn with_options(endpoint: &str, options: ConnectOptions) -> Result<Self, ClientError> {
        let invalid = |e: &dyn std::fmt::Display| {
            ClientError::InvalidEndpoint(endpoint.to_owned(), e.to_string())
        };
        let mut builder = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| invalid(&e))?
            // A connect that neither succeeds nor fails (a black-holed address) must not hold
            // a reconnect forever.
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = options.ca_certificate_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = options.client_identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            builder = builder.tls_config(tls).map_err(|e| invalid(&e))?;
        } else if options.ca_certificate_pem.is_some() || options.client_identity_pem.is_some() {
            return Err(invalid(&"TLS options need an https:// address"));
        }
        Ok(Self::from_channel(builder.connect_lazy()))
    }

    /// A client on an existing tonic `Channel` (TLS, custom timeouts, a shared connection).
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            channel,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same client with another clock for backoff, refresh and liveness deadlines.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The underlying connection.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub(crate) fn grpc(&self) -> DurableIteratorClient<Channel> {
        DurableIteratorClient::new(self.channel.clone())
    }

    /// Subscribes with tokens from `provider`: a stream of events and resume reports that
    /// reconnects and resumes by itself. See [`Subscription`].
    pub fn subscribe(
        &self,
        provider: impl TokenProvider,
        options: SubscribeOptions,
    ) -> Subscription {
        Subscription::start(self.clone(), Arc::new(provider), options)
    }

    /// Calls the channel object's method at `path` with a JSON input.
    pub async fn invoke(
        &self,
        credentials: &Credentials,
        path: &[&str],
        input: serde_json::Value,
        options: InvokeOptions,
    ) -> Result<serde_json::Value, ClientError> {
        let request = pb::InvokeRequest {
            token: credentials.token.clone(),
            session_ticket: credentials.session_ticket.clone(),
            path: path.iter().map(|p| p.to_string()).collect(),
            input: Some(json::to_proto(&input)),
        };
        let mut retry = 0;
        loop {
            match self.grpc().invoke(request.clone()).await {
                Ok(response) => {
                    let output = response.into_inner().output;
                    return Ok(output
                        .as_ref()
                        .map(json::from_proto)
                        .unwrap_or(serde_json::Value::Null));
                }
                Err(status) if retry < options.retries && invoke_is_retryable(status.code()) => {
                    retry += 1;
                    let wait = options.backoff.random_delay(retry);
                    let deadline = self.clock.now_ms() + wait.as_millis() as u64;
                    self.clock.sleep_until(deadline).await;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Calls a typed method: the input and output types are the ones `method` declares, so a
    /// call with the wrong types does not compile.
    pub async fn call<I, O>(
        &self,
        credentials: &Credentials,
        method: &Method<I, O>,
        input: &I,
        options: InvokeOptions,
    ) -> Result<O, ClientError>
    where
        I: serde::Serialize,
        O: serde::de::DeserializeOwned,
    {
        typed_call(method, input, |input| {
            self.invoke(credentials, method.path(), input, options)
        })
        .await
    }

    /// Publishes an event through the admin API (`authorization: Bearer <api_key>`); returns
    /// its id once the server has stored it.
    pub async fn publish(&self, api_key: &str, publish: Publish) -> Result<String, ClientError> {
        let request = authorized(api_key, publish.into_request())?;
        let response = DurableIteratorAdminClient::new(self.channel.clone())
            .publish(request)
            .await?;
        Ok(response.into_inner().id)
    }

    /// Publishes several events in one call; returns their ids, in order, once the server has
    /// stored them all. The events of one channel land in order and contiguously; one invalid
    /// event refuses the whole call and nothing is published.
    pub async fn publish_batch(
        &self,
        api_key: &str,
        events: Vec<Publish>,
    ) -> Result<Vec<String>, ClientError> {
        let events = events.into_iter().map(Publish::into_request).collect();
        let request = authorized(api_key, pb::PublishBatchRequest { events })?;
        let response = DurableIteratorAdminClient::new(self.channel.clone())
            .publish_batch(request)
            .await?;
        Ok(response.into_inner().ids)
    }
}

/// A token to mint through the admin API (`IssueToken`), signed with the server's key.
#[derive(Debug, Clone, Default)]
pub struct IssueToken {
    /// The channel the token grants.
    pub channel: String,
    /// The session's tags.
    pub tags: Vec<String>,
    /// The attachment, readable by the client (never put secrets here).
    pub att: Option<serde_json::Value>,
    /// Methods of the channel object the token may call (`path[0]`).
    pub rpc: Vec<String>,
    /// Lifetime in seconds; 0: the server's default (86,400).
    pub ttl_seconds: u64,
}

/// A token minted by `IssueToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token.
    pub token: String,
    /// When it expires, in Unix seconds.
    pub expires_at: i64,
}

impl Publish {
    fn into_request(self) -> pb::PublishRequest {
        let list = |values: Option<Vec<String>>| values.map(|values| pb::StringList { values });
        pb::PublishRequest {
            channel: self.channel,
            payload: Some(pb::publish_request::Payload::Json(json::to_proto(
                &self.payload,
            ))),
            tags: list(self.tags),
            targets: list(self.targets),
            exclude: self.exclude,
            idempotency_key: self.idempotency_key,
        }
    }
}

impl Client {
    /// Mints a token through the admin API (`authorization: Bearer <api_key>`): what an
    /// application server does for its clients.
    pub async fn issue_token(
        &self,
        api_key: &str,
        issue: IssueToken,
    ) -> Result<IssuedToken, ClientError> {
        let request = authorized(
            api_key,
            pb::IssueTokenRequest {
                channel: issue.channel,
                tags: issue.tags,
                att: issue.att.as_ref().map(json::to_proto),
                rpc: issue.rpc,
                ttl_seconds: issue.ttl_seconds,
            },
        )?;
        let response = DurableIteratorAdminClient::new(self.channel.clone())
            .issue_token(request)
            .await?
            .into_inner();
        Ok(IssuedToken {
            token: response.token,
            expires_at: response.expires_at,
        })
    }
}

/// `message` with `authorization: Bearer <api_key>`.
pub(crate) fn authorized<T>(api_key: &str, message: T) -> Result<Request<T>, ClientError> {
    let mut request = Request::new(message);
    let bearer = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| Status::invalid_argument("the API key is not a valid header value"))?;
    request.metadata_mut().insert("authorization", bearer);
    Ok(request)
}

/// Runs `invoke` with `method`'s input encoded, and decodes its output as `method` declares.
pub(crate) async fn typed_call<I, O, F>(
    method: &Method<I, O>,
    input: &I,
    invoke: impl FnOnce(serde_json::Value) -> F,
) -> Result<O, ClientError>
where
    I: serde::Serialize,
    O: serde::de::DeserializeOwned,
    F: std::future::Future<Output = Result<serde_json::Value, ClientError>>,
{
    let input = method
        .encode_input(input)
        .map_err(|source| ClientError::Encode {
            method: format!("{method:?}"),
            source,
        })?;
    let output = invoke(input).await?;
    method
        .decode_output(output)
        .map_err(|source| ClientError::Decode {
            method: format!("{method:?}"),
            source,
        })
}
