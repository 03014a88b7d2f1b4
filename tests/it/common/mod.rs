//! A real server on 127.0.0.1:0 with a manual clock, and gRPC clients for it.
#![allow(dead_code)]

pub(crate) mod balancer;
pub(crate) mod process;
#[path = "../../../src/store/redis/test_server.rs"]
pub(crate) mod redis_server;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use durable_iterator::{
    EventStore, Keyring, MemoryStore, Server, ServerConfig,
    clock::ManualClock,
    pb::{
        self, durable_iterator_admin_client::DurableIteratorAdminClient,
        durable_iterator_client::DurableIteratorClient, subscribe_response::Kind,
    },
    token::{self, TokenClaims},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, Streaming, transport::Channel};

pub(crate) const SIGNING_KEY: &str = "secret-key";
pub(crate) const API_KEY: &str = "admin-key";
/// The manual clock starts here (Unix ms): the day the token vectors were made.
pub(crate) const START_MS: u64 = 1_764_000_000_000;

/// A running server and what a test needs to talk to it.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub keyring: Keyring,
    pub store: Arc<dyn EventStore>,
    /// The configuration it was started with: a restart keeps it.
    config: ServerConfig,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Binds `addr`. A restart binds the port its predecessor just closed, which the kernel may
/// not have released yet on a loaded machine: retried for up to 10 s.
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let mut attempts = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot bind {addr}: {error}"),
        }
    }
}

/// How to start a test server.
pub(crate) struct Options {
    pub retention_ms: u64,
    pub config: Box<dyn FnOnce(&mut ServerConfig)>,
    pub store: Option<Arc<dyn EventStore>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retention_ms: 60_000,
            config: Box::new(|_| {}),
            store: None,
        }
    }
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub(crate) async fn start_with(options: Options) -> Self {
        let addr = "127.0.0.1:0".parse().unwrap();
        Self::start_on(addr, ManualClock::new(START_MS), options).await
    }

    /// Starts a server on `addr` (port 0 for any; or the address of a stopped one, to restart
    /// it on the same port) with `clock` (shared with a stopped server and with clients, so
    /// time stays one).
    pub(crate) async fn start_on(addr: SocketAddr, clock: ManualClock, options: Options) -> Self {
        let keyring = Keyring::new([SIGNING_KEY]).unwrap();
        let mut config = ServerConfig::new(keyring, Some(API_KEY.into()));
        (options.config)(&mut config);
        // A test may bring its own keyring (key rotation): tokens it signs follow the server's.
        let keyring = config.keyring.clone();
        let store = options
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::new(options.retention_ms)));
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::new(config.clone(), store.clone(), Arc::new(clock.clone()));
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            addr,
            clock,
            keyring,
            store,
            config,
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and starts a new one on the same port, store, clock and configuration:
    /// a restart that clients see as the same address going away and coming back.
    pub(crate) async fn restart(mut self) -> Self {
        let (addr, clock, store) = (self.addr, self.clock.clone(), self.store.clone());
        let config = self.config.clone();
        self.stop().await;
        drop(self);
        let options = Options {
            store: Some(store),
            config: Box::new(move |kept| *kept = config),
            ..Options::default()
        };
        Self::start_on(addr, clock, options).await
    }

    /// Stops the server and waits until it has stopped.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops")
                .unwrap();
        }
    }

    pub(crate) fn client(&self) -> DurableIteratorClient<Channel> {
        DurableIteratorClient::new(self.channel.clone())
    }

    /// A client on a connection of its own.
    pub(crate) async fn client_on_new_connection(&self) -> DurableIteratorClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        DurableIteratorClient::new(channel)
    }

    pub(crate) fn admin(&self) -> DurableIteratorAdminClient<Channel> {
        DurableIteratorAdminClient::new(self.channel.clone())
    }

    pub(crate) fn now_secs(&self) -> u64 {
        use durable_iterator::clock::Clock;
        self.clock.now_secs()
    }

    /// Claims for `channel` living one hour from the clock's now.
    pub(crate) fn claims(&self, channel: &str) -> TokenClaims {
        TokenClaims::new(channel, self.now_secs(), 3_600)
    }

    pub(crate) fn token(&self, channel: &str) -> String {
        token::sign(&self.keyring, &self.claims(channel))
    }

    pub(crate) fn token_with_tags(&self, channel: &str, tags: &[&str]) -> String {
        let mut claims = self.claims(channel);
        claims.tags = Some(tags.iter().map(|t| t.to_string()).collect());
        token::sign(&self.keyring, &claims)
    }

    /// Publishes a JSON payload; returns the event id.
    pub(crate) async fn publish(&self, channel: &str, payload: serde_json::Value) -> String {
        self.publish_with(publish_request(channel, payload))
            .await
            .unwrap()
    }

    pub(crate) async fn publish_with(&self, request: pb::PublishRequest) -> Result<String, Status> {
        Ok(self
            .admin()
            .publish(authorized(request))
            .await?
            .into_inner()
            .id)
    }

    /// Subscribes and returns the `Subscribed` message and the rest of the stream.
    pub(crate) async fn subscribe(
        &self,
        request: pb::SubscribeRequest,
    ) -> Result<(pb::Subscribed, Streaming<pb::SubscribeResponse>), Status> {
        subscribe_on(&mut self.client(), request).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn subscribe_on(
    client: &mut DurableIteratorClient<Channel>,
    request: pb::SubscribeRequest,
) -> Result<(pb::Subscribed, Streaming<pb::SubscribeResponse>), Status> {
    let mut stream = client.subscribe(request).await?.into_inner();
    match next(&mut stream).await? {
        Kind::Subscribed(subscribed) => Ok((subscribed, stream)),
        other => panic!("first message is not Subscribed: {other:?}"),
    }
}

pub(crate) fn subscribe_request(token: String) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        token,
        last_event_id: None,
        session_ticket: None,
    }
}

pub(crate) fn resume_request(
    token: String,
    last_event_id: &str,
    ticket: &str,
) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        token,
        last_event_id: Some(last_event_id.into()),
        session_ticket: Some(ticket.into()),
    }
}

pub(crate) fn publish_request(channel: &str, payload: serde_json::Value) -> pb::PublishRequest {
    pb::PublishRequest {
        channel: channel.into(),
        payload: Some(pb::publish_request::Payload::Json(
            durable_iterator::json::to_proto(&payload),
        )),
        tags: None,
        targets: None,
        exclude: Vec::new(),
        idempotency_key: None,
    }
}

pub(crate) fn string_list(items: &[&str]) -> Option<pb::StringList> {
    Some(pb::StringList {
        values: items.iter().map(|s| s.to_string()).collect(),
    })
}

pub(crate) fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().unwrap(),
    );
    request
}

/// The next message of a stream, bounded in time so a missing message fails the test instead
/// of hanging it. A stream that ended with a status returns that status.
pub(crate) async fn next(stream: &mut Streaming<pb::SubscribeResponse>) -> Result<Kind, Status> {
    match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
        Err(_) => panic!("no message within 20 s"),
        Ok(Ok(Some(message))) => Ok(message.kind.expect("message has a kind")),
        Ok(Ok(None)) => panic!("stream ended without a status"),
        Ok(Err(status)) => Err(status),
    }
}

/// The next event, skipping heartbeats.
pub(crate) async fn next_event(stream: &mut Streaming<pb::SubscribeResponse>) -> pb::Event {
    loop {
        match next(stream).await {
            Ok(Kind::Event(event)) => return event,
            Ok(Kind::Heartbeat(_)) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// The JSON payload of an event.
pub(crate) fn payload(event: &pb::Event) -> serde_json::Value {
    match &event.payload {
        Some(pb::event::Payload::Json(value)) => durable_iterator::json::from_proto(value),
        other => panic!("not a JSON payload: {other:?}"),
    }
}

/// Expects the stream to end with `code`; returns the status message.
pub(crate) async fn expect_end(
    stream: &mut Streaming<pb::SubscribeResponse>,
    code: Code,
) -> String {
    loop {
        match next(stream).await {
            Ok(Kind::Heartbeat(_)) | Ok(Kind::TokenExpiring(_)) => continue,
            Ok(other) => panic!("expected the stream to end with {code:?}, got {other:?}"),
            Err(status) => {
                assert_eq!(status.code(), code, "{status:?}");
                return status.message().to_owned();
            }
        }
    }
}

/// Publishes a marker event and reads the stream up to it: every event before the marker is
/// returned. Proves that nothing else was delivered, without waiting for a timeout.
pub(crate) async fn drain_until_marker(
    server: &TestServer,
    channel: &str,
    stream: &mut Streaming<pb::SubscribeResponse>,
) -> Vec<serde_json::Value> {
    let marker = server
        .publish(channel, serde_json::json!({"marker": true}))
        .await;
    let mut seen = Vec::new();
    loop {
        let event = next_event(stream).await;
        if event.id == marker {
            return seen;
        }
        seen.push(payload(&event));
    }
}

/// A memory store that yields to the scheduler inside every call, the way a store that waits
/// for a disk or a network does: it widens the windows in which publishes race subscribers.
pub(crate) struct YieldingStore(pub MemoryStore);

#[async_trait::async_trait]
impl EventStore for YieldingStore {
    fn epoch(&self) -> durable_iterator::store::Epoch {
        self.0.epoch()
    }

    fn retention_ms(&self) -> u64 {
        self.0.retention_ms()
    }

    async fn append(
        &self,
        channel: &str,
        events: &[durable_iterator::store::NewEvent],
    ) -> Result<durable_iterator::store::StoredBatch, durable_iterator::store::StoreError> {
        tokio::task::yield_now().await;
        let stored = self.0.append(channel, events).await;
        tokio::task::yield_now().await;
        stored
    }

    async fn last_seq(&self, channel: &str) -> Result<u64, durable_iterator::store::StoreError> {
        tokio::task::yield_now().await;
        let seq = self.0.last_seq(channel).await;
        tokio::task::yield_now().await;
        seq
    }

    async fn read(
        &self,
        channel: &str,
        after: u64,
        until: u64,
        now_ms: u64,
    ) -> Result<durable_iterator::store::History, durable_iterator::store::StoreError> {
        tokio::task::yield_now().await;
        self.0.read(channel, after, until, now_ms).await
    }

    async fn read_page(
        &self,
        channel: &str,
        page: durable_iterator::store::PageQuery,
        now_ms: u64,
    ) -> Result<Vec<durable_iterator::store::StoredEvent>, durable_iterator::store::StoreError>
    {
        tokio::task::yield_now().await;
        self.0.read_page(channel, page, now_ms).await
    }

    async fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, durable_iterator::store::StoreError> {
        self.0.channels(prefix, after, limit, now_ms).await
    }

    async fn expire(&self, now_ms: u64) -> Result<usize, durable_iterator::store::StoreError> {
        self.0.expire(now_ms).await
    }
}

/// Reads a stream up to the event `marker_id` (published by the caller, e.g. once for several
/// streams) and returns the payloads of the events before it, skipping heartbeats.
pub(crate) async fn payloads_until(
    stream: &mut Streaming<pb::SubscribeResponse>,
    marker_id: &str,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(stream).await;
        if event.id == marker_id {
            return seen;
        }
        seen.push(payload(&event));
    }
}

impl TestServer {
    /// The server's shared connection, for clients other than the two services' (reflection,
    /// health).
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

/// Expects `result` to be refused with `code`; returns the status message.
pub(crate) fn expect_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    match result {
        Ok(value) => panic!("expected {code:?}, the call succeeded with {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            status.message().to_owned()
        }
    }
}

pub(crate) fn invoke_request(
    token: &str,
    ticket: Option<&str>,
    path: &[&str],
) -> pb::InvokeRequest {
    pb::InvokeRequest {
        token: token.into(),
        session_ticket: ticket.map(Into::into),
        path: path.iter().map(|p| p.to_string()).collect(),
        input: None,
    }
}

impl TestServer {
    /// Signs `claims` with the server's signing key.
    pub(crate) fn sign(&self, claims: &TokenClaims) -> String {
        token::sign(&self.keyring, claims)
    }

    pub(crate) async fn invoke(
        &self,
        request: pb::InvokeRequest,
    ) -> Result<pb::InvokeResponse, Status> {
        Ok(self.client().invoke(request).await?.into_inner())
    }

    /// `RefreshToken`; returns the new expiry.
    pub(crate) async fn refresh_token(&self, ticket: &str, token: String) -> Result<i64, Status> {
        let request = pb::RefreshTokenRequest {
            session_ticket: ticket.into(),
            token,
        };
        Ok(self
            .client()
            .refresh_token(request)
            .await?
            .into_inner()
            .token_expires_at)
    }
}

/// Publishes a marker and reads the stream up to it: every message before it is returned,
/// heartbeats and `TokenExpiring` included. Proves what was (not) sent without waiting.
pub(crate) async fn messages_until_marker(
    server: &TestServer,
    channel: &str,
    stream: &mut Streaming<pb::SubscribeResponse>,
) -> Vec<Kind> {
    let marker = server
        .publish(channel, serde_json::json!({"marker": true}))
        .await;
    let mut seen = Vec::new();
    loop {
        match next(stream).await {
            Ok(Kind::Event(event)) if event.id == marker => return seen,
            Ok(kind) => seen.push(kind),
            Err(status) => panic!(
                "stream ended before the marker: {status:?}, after {} messages",
                seen.len()
            ),
        }
    }
}

/// Proves that nothing was stored on `channel` since the event `last_id`: a marker published
/// now is the very next sequence number and the subscriber receives nothing before it.
/// Returns the marker's id.
pub(crate) async fn expect_nothing_stored_since(
    server: &TestServer,
    channel: &str,
    stream: &mut Streaming<pb::SubscribeResponse>,
    last_id: &str,
) -> String {
    use durable_iterator::EventId;
    let marker = server
        .publish(channel, serde_json::json!({"marker": true}))
        .await;
    let before = payloads_until(stream, &marker).await;
    assert!(before.is_empty(), "delivered before the marker: {before:?}");
    let last: EventId = last_id.parse().unwrap();
    let next: EventId = marker.parse().unwrap();
    assert_eq!(
        (next.epoch, next.seq),
        (last.epoch, last.seq + 1),
        "the marker is the next event"
    );
    marker
}

/// Waits until the server no longer has the session of `ticket` live: it notices a dropped
/// stream when the transport says so. A refresh answers FAILED_PRECONDITION from then on.
pub(crate) async fn wait_until_not_live(server: &TestServer, channel: &str, ticket: &str) {
    for _ in 0..2_000 {
        match server.refresh_token(ticket, server.token(channel)).await {
            Err(status) if status.code() == Code::FailedPrecondition => {
                assert!(status.message().contains("not connected"), "{status:?}");
                return;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(status) => panic!("{status:?}"),
        }
    }
    panic!("the session is still live on the server");
}
