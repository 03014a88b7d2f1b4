//! The reconnecting subscription: a state machine driven by the consumer's polls.
//!
//! It spawns no task: the gRPC stream, the timers (backoff, refresh, liveness) and a refresh in
//! flight all live inside the stream's state, so dropping the stream stops everything, and a
//! cancelled subscription stops at its next poll (at once when the consumer is waiting on it).
//!
//! One loop: connect (wait the backoff, get a token if needed, `Subscribe`, read `Subscribed`),
//! then read the stream while watching the liveness deadline and the refresh deadline. Any end
//! of the stream goes through [`on_status`]: reconnect, renew the token, or fail.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::{
    Backoff, Client, ClientError, Credentials, InvokeOptions,
    item::{Event, ResumeReport, SubscriptionItem},
    policy::{Disposition, on_status},
    token_provider::{ProviderError, TokenProvider, refreshable_in_place, unverified_claims},
};
use crate::{Method, SharedClock, pb};

/// How a subscription behaves.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Resume after this event id at the first subscribe (later reconnects resume after the
    /// last event received).
    pub last_event_id: Option<String>,
    /// Keep the session of this ticket (from an earlier subscription) at the first subscribe.
    pub session_ticket: Option<String>,
    /// The reconnect schedule (first retry at once, then 1 s .. 10 s with full jitter,
    /// unlimited attempts).
    pub backoff: Backoff,
    /// Ask the provider for a new token this long before the current one expires, and swap it
    /// on the live stream. `None` (the default): no refresh; an expired stream reconnects
    /// with a new token from the provider.
    pub refresh_before_expiry: Option<Duration>,
    /// The stream counts as dead when nothing (event or heartbeat) arrived for this many
    /// heartbeat intervals; `None` turns the check off. Default 2.5.
    pub liveness_intervals: Option<f64>,
    /// Longest wait for `Subscribed` after the call is sent. Default 30 s.
    pub handshake_timeout: Duration,
    /// Token provider failures in a row before the subscription ends with the error (between
    /// them it waits per the backoff). Default 5.
    pub token_attempts: u32,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            last_event_id: None,
            session_ticket: None,
            backoff: Backoff::default(),
            refresh_before_expiry: None,
            liveness_intervals: Some(2.5),
            handshake_timeout: Duration::from_secs(30),
            token_attempts: 5,
        }
    }
}

/// Where the subscription is, for status displays and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Calling `Subscribe` (retry 0 is the first connect or a deliberate reconnect).
    Connecting {
        /// Failed attempts since the stream last worked.
        retry: u32,
    },
    /// Waiting before retry `retry`, until `until_ms` on the client's clock.
    BackingOff {
        /// The attempt waited for.
        retry: u32,
        /// Until when, on the client's clock (Unix ms).
        until_ms: u64,
    },
    /// Waiting for the token provider (after `failures` failures in a row).
    FetchingToken {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Waiting before asking a failing token provider again, until `until_ms`.
    TokenBackoff {
        /// Failures in a row so far.
        failures: u32,
        /// Until when, on the client's clock (Unix ms).
        until_ms: u64,
    },
    /// The stream is open.
    Live,
    /// The subscription has ended (error, cancel, or drop).
    Closed,
}

/// A snapshot of the subscription's progress (see [`SubscriptionHandle::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Where the subscription is now.
    pub state: ConnectionState,
    /// Streams opened so far (`Subscribed` received).
    pub connections: u64,
    /// Tokens swapped on a live stream (`RefreshToken`).
    pub refreshes: u64,
    /// The server-assigned session id, once known.
    pub session_id: Option<String>,
}

/// What the stream and its handles share.
struct Shared {
    client: Client,
    provider: Arc<dyn TokenProvider>,
    cancel: CancellationToken,
    progress: watch::Sender<Progress>,
    /// The token in use and the session ticket, for `Invoke` through the handle.
    credentials: Mutex<Credentials>,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(change);
    }

    fn set_state(&self, state: ConnectionState) {
        self.progress.send_if_modified(|progress| {
            let changed = progress.state != state;
            progress.state = state;
            changed
        });
    }
}

/// A subscription: a `Stream` of `Result<SubscriptionItem, ClientError>`.
///
/// It reconnects on transport failures and retryable statuses, resuming after the last event
/// id with the session ticket, so the session (and `targets`/`exclude` aimed at it) survives.
/// An error that retrying cannot fix comes as one `Err` item, then the stream ends. Dropping
/// it closes the gRPC stream and stops its timers; [`SubscriptionHandle::cancel`] does the
/// same from elsewhere.
pub struct Subscription {
    inner: BoxStream<'static, Result<SubscriptionItem, ClientError>>,
    shared: Arc<Shared>,
}

/// A handle to a running subscription: cancel it, watch its progress, call methods as its
/// session. Cheap to clone.
#[derive(Clone)]
pub struct SubscriptionHandle {
    shared: Arc<Shared>,
}

impl Subscription {
    pub(super) fn start(
        client: Client,
        provider: Arc<dyn TokenProvider>,
        options: SubscribeOptions,
    ) -> Self {
        let shared = Arc::new(Shared {
            client: client.clone(),
            provider: provider.clone(),
            cancel: CancellationToken::new(),
            progress: watch::Sender::new(Progress {
                state: ConnectionState::Connecting { retry: 0 },
                connections: 0,
                refreshes: 0,
                session_id: None,
            }),
            credentials: Mutex::new(Credentials {
                token: String::new(),
                session_ticket: options.session_ticket.clone(),
            }),
        });
        let driver = Driver {
            grpc: client.grpc(),
            clock: client.clock().clone(),
            provider,
            shared: shared.clone(),
            token: None,
            token_fresh: false,
            last_event_id: options.last_event_id.clone(),
            ticket: options.session_ticket.clone(),
            session_id: String::new(),
            channel: None,
            failures: 0,
            last_failure: None,
            live: None,
            done: false,
            options,
        };
        // Fused: a finished subscription polled again (a `select!` loop) yields `None` again
        // instead of panicking.
        let inner = Box::pin(
            futures::stream::unfold(driver, |mut driver| async move {
                let item = driver.next_item().await?;
                Some((item, driver))
            })
            .fuse(),
        );
        Self { inner, shared }
    }

    /// A handle to this subscription.
    pub fn handle(&self) -> SubscriptionHandle {
        SubscriptionHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionItem, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.set_state(ConnectionState::Closed);
    }
}

impl SubscriptionHandle {
    /// Ends the subscription: the stream yields `None` and closes its gRPC stream at its next
    /// poll (at once if the consumer is waiting on it).
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// A token cancelled when the subscription is cancelled; cancelling it cancels the
    /// subscription (tie it to the lifetime of a page, a request, a task).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    /// The subscription's progress now.
    pub fn progress(&self) -> Progress {
        self.shared.progress.borrow().clone()
    }

    /// Progress as it changes.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    /// The server-assigned session id, once the first stream opened.
    pub fn session_id(&self) -> Option<String> {
        self.progress().session_id
    }

    /// The token in use and the session ticket.
    pub fn credentials(&self) -> Credentials {
        self.shared
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Calls a method of the channel object as this subscription's session, over the same
    /// connection. A call refused as UNAUTHENTICATED (the token expired) is sent once more
    /// with a new token from the provider.
    pub async fn invoke(
        &self,
        path: &[&str],
        input: serde_json::Value,
        options: InvokeOptions,
    ) -> Result<serde_json::Value, ClientError> {
        let mut credentials = self.credentials();
        if credentials.token.is_empty() {
            credentials.token = self.fresh_token().await?;
        }
        let client = &self.shared.client;
        match client
            .invoke(&credentials, path, input.clone(), options)
            .await
        {
            Err(ClientError::Status(status)) if status.code() == tonic::Code::Unauthenticated => {
                credentials.token = self.fresh_token().await?;
                client.invoke(&credentials, path, input, options).await
            }
            result => result,
        }
    }

    /// Calls a typed method as this subscription's session; see [`SubscriptionHandle::invoke`].
    pub async fn call<I, O>(
        &self,
        method: &Method<I, O>,
        input: &I,
        options: InvokeOptions,
    ) -> Result<O, ClientError>
    where
        I: serde::Serialize,
        O: serde::de::DeserializeOwned,
    {
        super::typed_call(method, input, |input| {
            self.invoke(method.path(), input, options)
        })
        .await
    }

    async fn fresh_token(&self) -> Result<String, ClientError> {
        self.shared
            .provider
            .token()
            .await
            .map_err(|source| ClientError::TokenProvider {
                attempts: 1,
                source,
            })
    }
}

/// A refresh in flight: the provider call, then `RefreshToken` when the token allows it.
type RefreshFuture = Pin<Box<dyn Future<Output = Refreshed> + Send>>;

enum Refreshed {
    /// The live stream now runs on `token`, expiring at `expires_at` (Unix seconds).
    InPlace { token: String, expires_at: u64 },
    /// The new token names another channel or tag set (or the server said so): reconnect.
    Reconnect { token: String },
    /// The provider or the call failed; try again later.
    Failed,
}

/// The open stream and its deadlines.
struct Live {
    stream: Streaming<pb::SubscribeResponse>,
    expires_at_ms: u64,
    heartbeat_ms: u64,
    last_seen_ms: u64,
    /// Whether anything but `Subscribed` arrived: only then has the stream proved itself and
    /// the backoff starts over (a server that accepts and drops at once gets no fast loop).
    proven: bool,
    refresh: Option<RefreshFuture>,
    /// When to start the next refresh; `None`: refresh off.
    refresh_at_ms: Option<u64>,
    refresh_failures: u32,
}

/// How one connect attempt went.
enum Connected {
    Live(Option<ResumeReport>),
    Retry,
    Fatal(ClientError),
    Cancelled,
}

/// What woke the streaming loop.
enum Step {
    Cancelled,
    Message(Result<Option<pb::SubscribeResponse>, Status>),
    Refreshed(Refreshed),
    Dead,
    StartRefresh,
}

struct Driver {
    grpc: pb::durable_iterator_client::DurableIteratorClient<tonic::transport::Channel>,
    clock: SharedClock,
    provider: Arc<dyn TokenProvider>,
    shared: Arc<Shared>,
    options: SubscribeOptions,
    /// The token to subscribe with; `None`: ask the provider first.
    token: Option<String>,
    /// The token came from the provider and has not been tried yet: if its first try is
    /// refused as unauthenticated, asking again would loop, so that ends the subscription. A
    /// try that failed otherwise (a server that was down) clears it: by the next try the
    /// token may have expired, and then the provider must be asked again.
    token_fresh: bool,
    last_event_id: Option<String>,
    ticket: Option<String>,
    session_id: String,
    /// The channel of the last `Subscribed`.
    channel: Option<String>,
    /// Failed attempts since the stream last worked; retry `failures` is next.
    failures: u32,
    last_failure: Option<Status>,
    live: Option<Live>,
    done: bool,
}

/// Completes at `deadline_ms`, never if `None`.
async fn sleep_until(clock: &SharedClock, deadline_ms: Option<u64>) {
    match deadline_ms {
        Some(deadline) => clock.sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn next_item(&mut self) -> Option<Result<SubscriptionItem, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            if self.shared.cancel.is_cancelled() {
                return self.close();
            }
            if self.live.is_none() {
                match self.connect().await {
                    Connected::Live(Some(report)) => {
                        return Some(Ok(SubscriptionItem::Resumed(report)));
                    }
                    Connected::Live(None) | Connected::Retry => continue,
                    Connected::Fatal(error) => return self.fail(error),
                    Connected::Cancelled => return self.close(),
                }
            }
            if let Some(item) = self.read().await {
                return item;
            }
        }
    }

    fn close(&mut self) -> Option<Result<SubscriptionItem, ClientError>> {
        self.done = true;
        self.live = None;
        self.shared.set_state(ConnectionState::Closed);
        None
    }

    fn fail(&mut self, error: ClientError) -> Option<Result<SubscriptionItem, ClientError>> {
        self.close();
        Some(Err(error))
    }

    /// Waits until `until_ms` on the clock unless cancelled first; false if cancelled.
    /// (Borrows only what it needs: the driver itself is not `Sync`.)
    fn wait(&self, until_ms: u64) -> impl Future<Output = bool> + Send + 'static {
        let cancel = self.shared.cancel.clone();
        let sleep = self.clock.sleep_until(until_ms);
        async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                _ = sleep => true,
            }
        }
    }

    async fn connect(&mut self) -> Connected {
        let retry = self.failures;
        if self.options.backoff.exhausted(retry) {
            let last = self
                .last_failure
                .take()
                .unwrap_or_else(|| Status::unavailable("no reason given"));
            return Connected::Fatal(ClientError::RetriesExhausted {
                attempts: retry - 1,
                last,
            });
        }
        let delay = self.options.backoff.random_delay(retry);
        if !delay.is_zero() {
            let until_ms = self.clock.now_ms() + delay.as_millis() as u64;
            self.shared
                .set_state(ConnectionState::BackingOff { retry, until_ms });
            if !self.wait(until_ms).await {
                return Connected::Cancelled;
            }
        }
        let token = match self.token.clone() {
            Some(token) => token,
            None => match self.fetch_token().await {
                Ok(Some(token)) => token,
                Ok(None) => return Connected::Cancelled,
                Err(error) => return Connected::Fatal(error),
            },
        };
        // A token for another channel starts a new subscription there: the ticket is bound to
        // the old channel, and the last id counts the old channel's events.
        let claims = unverified_claims(&token);
        if let (Some(channel), Some(claims)) = (&self.channel, claims)
            && claims.chn != *channel
        {
            self.ticket = None;
            self.last_event_id = None;
        }
        self.shared.set_state(ConnectionState::Connecting { retry });
        let request = pb::SubscribeRequest {
            token,
            last_event_id: self.last_event_id.clone(),
            session_ticket: self.ticket.clone(),
        };
        let mut grpc = self.grpc.clone();
        let open = async move {
            let mut stream = grpc.subscribe(request).await?.into_inner();
            let first = stream.message().await?;
            Ok::<_, Status>((stream, first))
        };
        let handshake_deadline =
            self.clock.now_ms() + self.options.handshake_timeout.as_millis() as u64;
        let opened = tokio::select! {
            _ = self.shared.cancel.cancelled() => return Connected::Cancelled,
            _ = self.clock.sleep_until(handshake_deadline) => {
                Err(Status::deadline_exceeded("no Subscribed message in time"))
            }
            opened = open => opened,
        };
        let (stream, subscribed) = match opened {
            Ok((
                stream,
                Some(pb::SubscribeResponse {
                    kind: Some(pb::subscribe_response::Kind::Subscribed(subscribed)),
                }),
            )) => (stream, subscribed),
            Ok(_) => {
                return self.on_end(Status::internal(
                    "the stream did not start with a Subscribed message",
                ));
            }
            Err(status) => return self.on_end(status),
        };
        Connected::Live(self.went_live(stream, subscribed))
    }

    /// Asks the provider until it answers, waiting per the backoff between failures; `None`
    /// if cancelled.
    async fn fetch_token(&mut self) -> Result<Option<String>, ClientError> {
        let mut failures = 0;
        loop {
            self.shared
                .set_state(ConnectionState::FetchingToken { failures });
            let fetched = tokio::select! {
                _ = self.shared.cancel.cancelled() => return Ok(None),
                fetched = self.provider.token() => fetched,
            };
            match fetched {
                Ok(token) => {
                    self.token = Some(token.clone());
                    self.token_fresh = true;
                    return Ok(Some(token));
                }
                Err(source) => {
                    failures += 1;
                    tracing::warn!(error = %source, failures, "the token provider failed");
                    if failures >= self.options.token_attempts {
                        return Err(ClientError::TokenProvider {
                            attempts: failures,
                            source,
                        });
                    }
                    // Never at once: a failing provider (the app server) must not be hammered.
                    let delay = self.options.backoff.random_patient_delay(failures + 1);
                    let until_ms = self.clock.now_ms() + delay.as_millis() as u64;
                    self.shared
                        .set_state(ConnectionState::TokenBackoff { failures, until_ms });
                    if !self.wait(until_ms).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn went_live(
        &mut self,
        stream: Streaming<pb::SubscribeResponse>,
        subscribed: pb::Subscribed,
    ) -> Option<ResumeReport> {
        let now = self.clock.now_ms();
        let report = subscribed.resume.as_ref().and_then(|outcome| {
            ResumeReport::from_outcome(
                outcome,
                self.last_event_id.as_deref(),
                &subscribed.session_id,
            )
        });
        self.token_fresh = false;
        // With no event received yet, or an id the server could not resume from and nothing
        // replayed, the stream's position is where to resume: events published while the
        // connection is down are then not lost (the lost history was reported above).
        let unusable = subscribed
            .resume
            .as_ref()
            .is_some_and(|r| r.requested && !r.recovered && r.replayed == 0);
        if (self.last_event_id.is_none() || unusable) && !subscribed.position.is_empty() {
            self.last_event_id = Some(subscribed.position.clone());
        }
        self.ticket = Some(subscribed.session_ticket.clone());
        self.session_id = subscribed.session_id.clone();
        self.channel = Some(subscribed.channel.clone());
        {
            let mut credentials = self
                .shared
                .credentials
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            credentials.token = self.token.clone().unwrap_or_default();
            credentials.session_ticket = self.ticket.clone();
        }
        let expires_at_ms = (subscribed.token_expires_at.max(0) as u64).saturating_mul(1000);
        self.live = Some(Live {
            stream,
            expires_at_ms,
            heartbeat_ms: u64::from(subscribed.heartbeat_interval_ms),
            last_seen_ms: now,
            proven: false,
            refresh: None,
            refresh_at_ms: self.refresh_deadline(expires_at_ms),
            refresh_failures: 0,
        });
        self.shared.update(|progress| {
            progress.state = ConnectionState::Live;
            progress.connections += 1;
            progress.session_id = Some(subscribed.session_id.clone());
        });
        report
    }

    fn refresh_deadline(&self, expires_at_ms: u64) -> Option<u64> {
        let before = self.options.refresh_before_expiry?;
        Some(expires_at_ms.saturating_sub(before.as_millis() as u64))
    }

    /// Decides what a status that ended (or refused) the stream means for the next attempt.
    fn on_end(&mut self, status: Status) -> Connected {
        self.live = None;
        match on_status(status.code()) {
            Disposition::Reconnect => self.token_fresh = false,
            Disposition::RenewToken if self.token_fresh => {
                // A token straight from the provider was refused: asking again would loop.
                return Connected::Fatal(status.into());
            }
            Disposition::RenewToken => {
                self.token = None;
            }
            Disposition::Fail => return Connected::Fatal(status.into()),
        }
        tracing::debug!(code = ?status.code(), message = status.message(), "reconnecting");
        self.failures += 1;
        self.last_failure = Some(status);
        Connected::Retry
    }

    /// Reads the open stream until it yields an item for the consumer (`Some`) or has to be
    /// reconnected (`None`, with `self.live` cleared).
    async fn read(&mut self) -> Option<Option<Result<SubscriptionItem, ClientError>>> {
        let live = self.live.as_mut()?;
        let liveness_at = match self.options.liveness_intervals {
            Some(factor) if live.heartbeat_ms > 0 => {
                Some(live.last_seen_ms + (live.heartbeat_ms as f64 * factor) as u64)
            }
            _ => None,
        };
        let refresh_at = if live.refresh.is_none() {
            live.refresh_at_ms
        } else {
            None
        };
        let Live {
            stream, refresh, ..
        } = live;
        let clock = &self.clock;
        let step = tokio::select! {
            biased;
            _ = self.shared.cancel.cancelled() => Step::Cancelled,
            // A refresh goes before waiting messages: a stream that never pauses must not ride
            // its token into expiry.
            refreshed = async { refresh.as_mut().expect("guarded").await }, if refresh.is_some() => {
                Step::Refreshed(refreshed)
            }
            _ = sleep_until(clock, refresh_at) => Step::StartRefresh,
            // Messages already received come before the liveness deadline: a consumer that was
            // busy must not take its own slowness for a dead stream.
            message = stream.message() => Step::Message(message),
            _ = sleep_until(clock, liveness_at) => Step::Dead,
        };
        let now = self.clock.now_ms();
        match step {
            Step::Cancelled => Some(self.close()),
            Step::Message(Ok(Some(message))) => {
                live.last_seen_ms = now;
                // An event (progress) or a heartbeat (the stream lived a heartbeat interval)
                // proves the stream; a `TokenExpiring` sent at once on open proves nothing.
                let proof = matches!(
                    message.kind,
                    Some(
                        pb::subscribe_response::Kind::Event(_)
                            | pb::subscribe_response::Kind::Heartbeat(_)
                    )
                );
                if proof && !live.proven {
                    live.proven = true;
                    self.failures = 0;
                    self.last_failure = None;
                }
                match message.kind {
                    Some(pb::subscribe_response::Kind::Event(event)) => {
                        self.last_event_id = Some(event.id.clone());
                        Some(Some(Ok(SubscriptionItem::Event(Event::from_proto(event)))))
                    }
                    Some(pb::subscribe_response::Kind::TokenExpiring(_)) => {
                        // The server's clock says the token is about to expire: refresh now
                        // if refreshing is on (whatever our own deadline says).
                        if live.refresh_at_ms.is_some() && live.refresh.is_none() {
                            live.refresh_at_ms = Some(now);
                        }
                        None
                    }
                    _ => None,
                }
            }
            Step::Message(Ok(None)) => {
                self.on_connection_loss(Status::unavailable("the stream ended without a status"))
            }
            Step::Message(Err(status)) => self.on_connection_loss(status),
            Step::Dead => {
                tracing::debug!("no event or heartbeat in time: reconnecting");
                self.on_connection_loss(Status::deadline_exceeded(
                    "no event or heartbeat within the liveness window",
                ))
            }
            Step::StartRefresh => {
                let refresh = self.refresh_future();
                if let Some(live) = self.live.as_mut() {
                    live.refresh = Some(refresh);
                }
                None
            }
            Step::Refreshed(refreshed) => {
                self.on_refreshed(refreshed, now);
                None
            }
        }
    }

    fn on_connection_loss(
        &mut self,
        status: Status,
    ) -> Option<Option<Result<SubscriptionItem, ClientError>>> {
        match self.on_end(status) {
            Connected::Fatal(error) => Some(self.fail(error)),
            _ => None,
        }
    }

    fn refresh_future(&self) -> RefreshFuture {
        let provider = self.provider.clone();
        let mut grpc = self.grpc.clone();
        let current = self.token.clone().unwrap_or_default();
        let ticket = self.ticket.clone().unwrap_or_default();
        Box::pin(async move {
            let token = match provider.token().await {
                Ok(token) => token,
                Err(error) => {
                    let error: ProviderError = error;
                    tracing::warn!(%error, "the token provider failed (refresh)");
                    return Refreshed::Failed;
                }
            };
            if !refreshable_in_place(&current, &token) {
                return Refreshed::Reconnect { token };
            }
            let request = pb::RefreshTokenRequest {
                session_ticket: ticket,
                token: token.clone(),
            };
            match grpc.refresh_token(request).await {
                Ok(response) => Refreshed::InPlace {
                    token,
                    expires_at: response.into_inner().token_expires_at.max(0) as u64,
                },
                // The server judges the subscription changed, or the session is not live on
                // it (the stream is being replaced): a reconnect with the new token settles both.
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    Refreshed::Reconnect { token }
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "RefreshToken failed");
                    Refreshed::Failed
                }
            }
        })
    }

    fn on_refreshed(&mut self, refreshed: Refreshed, now: u64) {
        match refreshed {
            Refreshed::Reconnect { token } => {
                // A deliberate reconnect, at once: the session ticket keeps the session.
                self.token = Some(token);
                self.token_fresh = true;
                self.live = None;
                self.failures = 0;
            }
            Refreshed::InPlace { token, expires_at } => {
                let expires_at_ms = expires_at.saturating_mul(1000);
                let refresh_at = self.refresh_deadline(expires_at_ms);
                let Some(live) = self.live.as_mut() else {
                    return;
                };
                live.refresh = None;
                if expires_at_ms <= live.expires_at_ms {
                    // The provider handed out a token that expires no later: refreshing again
                    // at once would spin, so this counts as a failure.
                    Self::refresh_failed(live, &self.options.backoff, now);
                    return;
                }
                live.expires_at_ms = expires_at_ms;
                live.refresh_at_ms = refresh_at;
                live.refresh_failures = 0;
                self.token = Some(token.clone());
                self.shared
                    .credentials
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .token = token;
                self.shared.update(|progress| progress.refreshes += 1);
            }
            Refreshed::Failed => {
                if let Some(live) = self.live.as_mut() {
                    live.refresh = None;
                    Self::refresh_failed(live, &self.options.backoff, now);
                }
            }
        }
    }

    /// Schedules the next refresh attempt after a failure, never at once.
    fn refresh_failed(live: &mut Live, backoff: &Backoff, now: u64) {
        live.refresh_failures += 1;
        let delay = backoff.random_patient_delay(live.refresh_failures + 1);
        live.refresh_at_ms = Some(now + delay.as_millis().max(1) as u64);
    }
}
