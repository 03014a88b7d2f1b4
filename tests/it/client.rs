//! The Rust client against the real server (in-process, or the binary as a child process) and
//! against small fake servers, with faults injected: restarts, SIGKILL, expired tokens, an
//! unreachable server, a silent stream, a failing token provider. Time-dependent behaviour
//! (backoff, refresh, liveness) runs on a `ManualClock` the test moves; nothing sleeps for a
//! timeout.

use std::{
    pin::Pin,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::{process::*, *};
use durable_iterator::{
    Keyring, Method, TokenClaims,
    clock::{Clock, ManualClock},
    pb::{
        self,
        durable_iterator_server::{DurableIterator, DurableIteratorServer},
    },
    token,
};
use durable_iterator_client::{
    Backoff, Client, ClientError, ConnectionState, Credentials, FixedToken, InvokeOptions, Publish,
    ResumeFailure, SigningProvider, SubscribeOptions, Subscription, SubscriptionHandle,
    SubscriptionItem,
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::{Code, Request, Response, Status};

type Item = Result<SubscriptionItem, ClientError>;

/// A client of `server` on the server's clock.
fn client_of(server: &TestServer) -> Client {
    Client::new(&format!("http://{}", server.addr))
        .unwrap()
        .with_clock(Arc::new(server.clock.clone()))
}

/// A subscription read by a task of its own, so the test can move the clock while the
/// subscription waits on it.
struct Consumer {
    items: mpsc::UnboundedReceiver<Item>,
    handle: SubscriptionHandle,
    task: tokio::task::JoinHandle<()>,
}

fn consume(mut subscription: Subscription) -> Consumer {
    let handle = subscription.handle();
    let (tx, items) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(item) = subscription.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    Consumer {
        items,
        handle,
        task,
    }
}

impl Consumer {
    /// The next item; whenever the subscription waits on the clock (backoff), the clock jumps
    /// to the end of that wait. `None`: the subscription ended.
    async fn next_driving(&mut self, clock: &ManualClock) -> Option<Item> {
        let mut progress = self.handle.watch();
        let wait = async {
            loop {
                let until = match progress.borrow_and_update().state {
                    ConnectionState::BackingOff { until_ms, .. }
                    | ConnectionState::TokenBackoff { until_ms, .. } => Some(until_ms),
                    _ => None,
                };
                if let Some(until) = until.filter(|until| *until > clock.now_ms()) {
                    clock.set_ms(until);
                }
                tokio::select! {
                    item = self.items.recv() => return item,
                    _ = progress.changed() => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("an item within 20 s")
    }

    /// The next item must be the event `id` with `payload`.
    async fn expect_event(&mut self, clock: &ManualClock, id: &str, payload: Value) {
        match self.next_driving(clock).await {
            Some(Ok(SubscriptionItem::Event(event))) => {
                assert_eq!((event.id.as_str(), event.json()), (id, Some(&payload)));
            }
            other => panic!("expected event {id} ({payload}), got {other:?}"),
        }
    }

    /// Waits until the subscription's progress satisfies `condition`, jumping the clock over
    /// every backoff on the way.
    async fn drive_until(
        &self,
        clock: &ManualClock,
        condition: impl Fn(&durable_iterator_client::Progress) -> bool,
    ) {
        let mut progress = self.handle.watch();
        let drive = async {
            loop {
                let state = {
                    let now = progress.borrow_and_update();
                    if condition(&now) {
                        return;
                    }
                    now.state
                };
                if let ConnectionState::BackingOff { until_ms, .. }
                | ConnectionState::TokenBackoff { until_ms, .. } = state
                {
                    clock.set_ms(until_ms.max(clock.now_ms()));
                }
                progress.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(20), drive)
            .await
            .expect("progress within 20 s");
    }

    /// Waits until the subscription's progress satisfies `condition`.
    async fn wait_for(&self, condition: impl Fn(&durable_iterator_client::Progress) -> bool) {
        let mut progress = self.handle.watch();
        tokio::time::timeout(Duration::from_secs(20), progress.wait_for(|p| condition(p)))
            .await
            .expect("progress within 20 s")
            .unwrap();
    }
}

/// Counts how often a provider is asked.
fn counted<P: durable_iterator_client::TokenProvider>(
    provider: P,
) -> (
    impl durable_iterator_client::TokenProvider,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let provider = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        provider.token()
    };
    (provider, calls)
}

fn minting(server: &TestServer, channel: &str, tags: &[&str], ttl_secs: u64) -> SigningProvider {
    let mut template = TokenClaims::new(channel, 0, 0);
    template.tags = (!tags.is_empty()).then(|| tags.iter().map(|t| t.to_string()).collect());
    SigningProvider::new(
        server.keyring.clone(),
        template,
        ttl_secs,
        Arc::new(server.clock.clone()),
    )
}

/// Options of a server whose heartbeat never comes during a test (the clock jumps far), so a
/// jump cannot be mistaken for a dead stream; retention of an hour.
fn quiet_server() -> Options {
    Options {
        retention_ms: 3_600_000,
        config: Box::new(|config| config.heartbeat = Duration::from_secs(24 * 3600)),
        store: None,
    }
}

#[tokio::test]
async fn a_server_restart_mid_stream_delivers_every_event_once_in_order() {
    let server = TestServer::start().await;
    let client = client_of(&server);
    let mut consumer = consume(client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    ));
    let clock = server.clock.clone();
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let ids = [
        server.publish("room", json!(1)).await,
        server.publish("room", json!(2)).await,
    ];
    consumer.expect_event(&clock, &ids[0], json!(1)).await;
    consumer.expect_event(&clock, &ids[1], json!(2)).await;
    let session = consumer.handle.session_id().unwrap();

    let server = server.restart().await;
    // Published while the client waits out its backoff (the clock has not moved): it gets
    // them by resuming, then live ones.
    let missed = [
        server.publish("room", json!(3)).await,
        server.publish("room", json!(4)).await,
    ];
    consumer.expect_event(&clock, &missed[0], json!(3)).await;
    consumer.expect_event(&clock, &missed[1], json!(4)).await;
    let live = server.publish("room", json!(5)).await;
    consumer.expect_event(&clock, &live, json!(5)).await;
    assert_eq!(consumer.handle.session_id().unwrap(), session);
    assert!(consumer.handle.progress().connections >= 2);
}

/// A connection that drops before its first event loses nothing: the client resumes from the
/// position `Subscribed` gave it.
#[tokio::test]
async fn a_disconnect_before_the_first_event_loses_nothing() {
    let server = TestServer::start().await;
    server.publish("room", json!("before")).await;
    let client = client_of(&server);
    let mut consumer = consume(client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    ));
    let clock = server.clock.clone();
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let server = server.restart().await;
    let missed = server.publish("room", json!("while away")).await;
    consumer
        .expect_event(&clock, &missed, json!("while away"))
        .await;
    let live = server.publish("room", json!("live")).await;
    consumer.expect_event(&clock, &live, json!("live")).await;
}

/// A provider that mints with `first` once, then with `then`; and how often it was asked.
fn first_then(
    first: SigningProvider,
    then: SigningProvider,
) -> (
    impl durable_iterator_client::TokenProvider,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let provider = move || {
        let token = match counted.fetch_add(1, Ordering::SeqCst) {
            0 => first.mint(),
            _ => then.mint(),
        };
        async move { Ok::<_, std::convert::Infallible>(token) }
    };
    (provider, calls)
}

/// Options that refresh the token a minute before it expires.
fn refreshing() -> SubscribeOptions {
    SubscribeOptions {
        refresh_before_expiry: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    }
}

fn real_now_secs() -> u64 {
    durable_iterator::clock::SystemClock.now_secs()
}

fn json_publish(channel: &str, payload: Value) -> Publish {
    Publish {
        channel: channel.into(),
        payload,
        ..Publish::default()
    }
}

/// The on-disk store behind the binary: stopped gracefully (SIGTERM) and killed (SIGKILL)
/// mid-stream, restarted on the same port; the consumer sees every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_disk_server_stopped_or_killed_mid_stream_delivers_every_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let addr = server.addr.clone();
    // The server runs on real time (token expiry); the client's clock only paces its backoff.
    let clock = ManualClock::new(real_now_secs() * 1000);
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let mut consumer =
        consume(client.subscribe(FixedToken(child_token("disk")), SubscribeOptions::default()));
    let mut n = 0;
    let mut publish = async |client: &Client| {
        n += 1;
        let id = client
            .publish(CHILD_API_KEY, json_publish("disk", json!(n)))
            .await
            .unwrap();
        (id, json!(n))
    };
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let (id, payload) = publish(&client).await;
    consumer.expect_event(&clock, &id, payload).await;
    let session = consumer.handle.session_id().unwrap();
    for signal in ["-TERM", "-KILL"] {
        let (id, payload) = publish(&client).await;
        consumer.expect_event(&clock, &id, payload).await;
        server.signal(signal);
        server = ServerProcess::start(dir.path(), &addr);
        let missed = [publish(&client).await, publish(&client).await];
        for (id, payload) in missed {
            consumer.expect_event(&clock, &id, payload).await;
        }
        let (id, payload) = publish(&client).await;
        consumer.expect_event(&clock, &id, payload).await;
        assert_eq!(consumer.handle.session_id().unwrap(), session, "{signal}");
    }
    assert!(
        consumer.handle.progress().connections >= 3,
        "reconnected after each restart"
    );
}

#[tokio::test]
async fn a_refresh_with_the_same_channel_and_tags_keeps_the_stream_and_the_session() {
    let server = TestServer::start_with(quiet_server()).await;
    let clock = server.clock.clone();
    let (provider, calls) = counted(minting(&server, "room", &["a", "b"], 120));
    let options = SubscribeOptions {
        refresh_before_expiry: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    let mut consumer = consume(client_of(&server).subscribe(provider, options));
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let first = server.publish("room", json!(1)).await;
    consumer.expect_event(&clock, &first, json!(1)).await;
    let session = consumer.handle.session_id().unwrap();

    // 61 s in: the token expires in 59 s, less than the 60 s asked for.
    clock.advance(Duration::from_secs(61));
    consumer.wait_for(|p| p.refreshes == 1).await;
    // Past the first token's expiry (120 s): the refreshed one (181 s) carries the stream; a
    // second refresh comes due at 121 s.
    clock.advance(Duration::from_secs(64));
    consumer.wait_for(|p| p.refreshes == 2).await;
    let second = server.publish("room", json!(2)).await;
    consumer.expect_event(&clock, &second, json!(2)).await;

    let progress = consumer.handle.progress();
    assert_eq!(progress.connections, 1, "never reconnected");
    assert_eq!(progress.state, ConnectionState::Live);
    assert_eq!(progress.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "first token and two refreshes"
    );
    // The server holds the last token the client swapped in.
    let token = consumer.handle.credentials().token;
    let claims = token::verify(&server.keyring, &token, server.now_secs()).unwrap();
    assert_eq!(
        claims.exp,
        server.now_secs() + 120,
        "minted at the second refresh"
    );
}

#[tokio::test]
async fn a_refresh_with_other_tags_reconnects_and_keeps_the_session() {
    let server = TestServer::start_with(quiet_server()).await;
    let clock = server.clock.clone();
    let before = minting(&server, "room", &["a"], 120);
    let after = minting(&server, "room", &["a", "b"], 120);
    let (provider, calls) = first_then(before, after);
    let options = refreshing();
    let mut consumer = consume(client_of(&server).subscribe(provider, options));
    consumer.wait_for(|p| p.connections == 1).await;
    let session = consumer.handle.session_id().unwrap();
    let tagged_b = |n| pb::PublishRequest {
        tags: string_list(&["b"]),
        ..publish_request("room", json!(n))
    };
    // Tag "b" does not reach the first token's session: only the untagged event arrives.
    server.publish_with(tagged_b(1)).await.unwrap();
    let untagged = server.publish("room", json!(2)).await;
    consumer.expect_event(&clock, &untagged, json!(2)).await;

    clock.advance(Duration::from_secs(61));
    consumer.wait_for(|p| p.connections == 2).await;
    let progress = consumer.handle.progress();
    assert_eq!(progress.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(progress.refreshes, 0, "not refreshed in place");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let id = server.publish_with(tagged_b(3)).await.unwrap();
    consumer.expect_event(&clock, &id, json!(3)).await;
}

#[tokio::test]
async fn a_reconnect_refused_for_an_expired_token_asks_the_provider_again() {
    let mut server = TestServer::start_with(quiet_server()).await;
    let clock = server.clock.clone();
    let (provider, calls) = counted(minting(&server, "room", &[], 60));
    let mut consumer = consume(client_of(&server).subscribe(provider, SubscribeOptions::default()));
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let first = server.publish("room", json!(1)).await;
    consumer.expect_event(&clock, &first, json!(1)).await;
    let session = consumer.handle.session_id().unwrap();

    let (addr, store) = (server.addr, server.store.clone());
    server.stop().await;
    drop(server);
    // The token expires while the server is down.
    clock.advance(Duration::from_secs(120));
    let server = TestServer::start_on(
        addr,
        clock.clone(),
        Options {
            store: Some(store),
            ..quiet_server()
        },
    )
    .await;
    let missed = server.publish("room", json!(2)).await;
    consumer.expect_event(&clock, &missed, json!(2)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a new token after the refusal"
    );
    assert_eq!(consumer.handle.session_id().unwrap(), session);
}

#[tokio::test]
async fn a_stream_ended_by_token_expiry_reconnects_with_a_new_token() {
    let server = TestServer::start_with(quiet_server()).await;
    let clock = server.clock.clone();
    let (provider, calls) = counted(minting(&server, "room", &[], 60));
    let mut consumer = consume(client_of(&server).subscribe(provider, SubscribeOptions::default()));
    consumer.wait_for(|p| p.connections == 1).await;
    clock.advance(Duration::from_secs(60));
    consumer.wait_for(|p| p.connections == 2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let id = server.publish("room", json!(1)).await;
    consumer.expect_event(&clock, &id, json!(1)).await;
}

#[tokio::test]
async fn a_fresh_token_that_is_refused_ends_the_subscription_instead_of_looping() {
    let server = TestServer::start().await;
    let bad = token::sign(
        &Keyring::new(["not-the-server-key"]).unwrap(),
        &server.claims("room"),
    );
    let (provider, calls) = counted(FixedToken(bad));
    let mut consumer = consume(client_of(&server).subscribe(provider, SubscribeOptions::default()));
    match consumer.next_driving(&server.clock).await {
        Some(Err(error)) => assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    assert!(consumer.next_driving(&server.clock).await.is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_retried_on_the_backoff_schedule_until_it_is_back() {
    let mut server = TestServer::start().await;
    let (addr, clock, token) = (server.addr, server.clock.clone(), server.token("room"));
    server.stop().await;
    drop(server);
    let backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(4),
        max_attempts: None,
    };
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let mut consumer = consume(client.subscribe(
        FixedToken(token),
        SubscribeOptions {
            backoff,
            ..SubscribeOptions::default()
        },
    ));
    // Every wait stays within the schedule's ceiling for its retry, and the retries count up.
    let mut progress = consumer.handle.watch();
    let mut retries = Vec::new();
    while retries.len() < 6 {
        tokio::time::timeout(Duration::from_secs(20), progress.changed())
            .await
            .unwrap()
            .unwrap();
        let state = progress.borrow_and_update().state;
        if let ConnectionState::BackingOff { retry, until_ms } = state {
            let wait = Duration::from_millis(until_ms - clock.now_ms());
            assert!(
                wait <= backoff.ceiling(retry),
                "retry {retry} waits {wait:?}"
            );
            retries.push(retry);
            clock.set_ms(until_ms);
        }
    }
    assert!(retries.windows(2).all(|w| w[0] < w[1]), "{retries:?}");
    assert!(retries[0] >= 2, "the first retry goes at once: {retries:?}");

    let server = TestServer::start_on(addr, clock.clone(), Options::default()).await;
    // Nothing to resume yet (no event was received): publish once the stream is open.
    consumer
        .drive_until(&clock, |p| p.state == ConnectionState::Live)
        .await;
    let live = server.publish("room", json!("live")).await;
    consumer.expect_event(&clock, &live, json!("live")).await;
}

#[tokio::test]
async fn the_attempt_limit_ends_the_subscription_with_the_last_failure() {
    let mut server = TestServer::start().await;
    let (addr, clock, token) = (server.addr, server.clock.clone(), server.token("room"));
    server.stop().await;
    drop(server);
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let options = SubscribeOptions {
        backoff: Backoff {
            max_attempts: Some(3),
            ..Backoff::default()
        },
        ..SubscribeOptions::default()
    };
    let mut consumer = consume(client.subscribe(FixedToken(token), options));
    match consumer.next_driving(&clock).await {
        Some(Err(ClientError::RetriesExhausted { attempts, last })) => {
            assert_eq!(attempts, 3);
            assert_eq!(last.code(), Code::Unavailable, "{last:?}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(consumer.next_driving(&clock).await.is_none());
    assert_eq!(consumer.handle.progress().state, ConnectionState::Closed);
}

#[tokio::test]
async fn a_provider_that_keeps_failing_surfaces_its_error_and_ends() {
    let clock = ManualClock::new(START_MS);
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<String, _>(std::io::Error::other("app server down")) }
        }
    };
    // Nothing listens there: the provider fails before any connection is tried.
    let client = Client::new("http://127.0.0.1:9")
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let options = SubscribeOptions {
        token_attempts: 3,
        ..SubscribeOptions::default()
    };
    let mut consumer = consume(client.subscribe(provider, options));
    // Between failures the subscription waits on the clock (never asks again at once).
    let start = clock.now_ms();
    match consumer.next_driving(&clock).await {
        Some(Err(ClientError::TokenProvider { attempts, source })) => {
            assert_eq!(attempts, 3);
            assert_eq!(source.to_string(), "app server down");
        }
        other => panic!("expected the provider's error, got {other:?}"),
    }
    assert!(consumer.next_driving(&clock).await.is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Two waits of at least half their ceilings (0.5 s, then 1 s).
    assert!(
        clock.now_ms() - start >= 1_500,
        "waited {} ms",
        clock.now_ms() - start
    );
}

#[tokio::test]
async fn a_lost_history_is_reported_never_hidden() {
    let server = TestServer::start().await;
    let id = server.publish("room", json!(1)).await;
    // The same sequence number in another epoch: a store that was reset.
    let other_epoch = format!(
        "{}{}",
        if id.starts_with('f') { "e" } else { "f" },
        &id[1..]
    );
    let options = SubscribeOptions {
        last_event_id: Some(other_epoch.clone()),
        ..SubscribeOptions::default()
    };
    let mut consumer =
        consume(client_of(&server).subscribe(FixedToken(server.token("room")), options));
    match consumer.next_driving(&server.clock).await {
        Some(Ok(SubscriptionItem::Resumed(report))) => {
            assert_eq!(report.failure, ResumeFailure::StoreReset);
            assert_eq!(report.last_event_id, other_epoch);
            assert_eq!(Some(report.session_id), consumer.handle.session_id());
        }
        other => panic!("expected a resume report, got {other:?}"),
    }
    let live = server.publish("room", json!(2)).await;
    consumer.expect_event(&server.clock, &live, json!(2)).await;
}

#[tokio::test]
async fn a_session_taken_over_by_another_stream_ends_with_aborted() {
    let server = TestServer::start().await;
    let client = client_of(&server);
    let mut first = consume(client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    ));
    first.wait_for(|p| p.connections == 1).await;
    let ticket = first.handle.credentials().session_ticket;
    let mut second = consume(client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions {
            session_ticket: ticket,
            ..SubscribeOptions::default()
        },
    ));
    second.wait_for(|p| p.connections == 1).await;
    assert_eq!(second.handle.session_id(), first.handle.session_id());
    match first.next_driving(&server.clock).await {
        Some(Err(error)) => assert_eq!(error.code(), Some(Code::Aborted), "{error}"),
        other => panic!("expected ABORTED, got {other:?}"),
    }
    assert!(first.next_driving(&server.clock).await.is_none());
    assert_eq!(
        first.handle.progress().connections,
        1,
        "no fight over the session"
    );
    let id = server.publish("room", json!(1)).await;
    second.expect_event(&server.clock, &id, json!(1)).await;
}

#[tokio::test]
async fn a_token_that_expired_while_the_server_was_down_before_the_first_connect_is_renewed() {
    let mut server = TestServer::start_with(quiet_server()).await;
    let (addr, clock, store) = (server.addr, server.clock.clone(), server.store.clone());
    let (provider, calls) = counted(minting(&server, "room", &[], 60));
    server.stop().await;
    drop(server);
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let mut consumer = consume(client.subscribe(provider, SubscribeOptions::default()));
    // The provider's first token was never accepted: the server was down.
    consumer
        .wait_for(|p| matches!(p.state, ConnectionState::BackingOff { .. }))
        .await;
    // It expires before the server is back: the refusal must renew it, not end the
    // subscription (it is not a token the server refused on its first try).
    clock.advance(Duration::from_secs(120));
    let server = TestServer::start_on(
        addr,
        clock.clone(),
        Options {
            store: Some(store),
            ..quiet_server()
        },
    )
    .await;
    consumer
        .drive_until(&clock, |p| {
            matches!(p.state, ConnectionState::Live | ConnectionState::Closed)
        })
        .await;
    if consumer.handle.progress().state == ConnectionState::Closed {
        let item = consumer.next_driving(&clock).await;
        panic!("the subscription ended: {item:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a new token after the refusal"
    );
    let id = server.publish("room", json!(1)).await;
    consumer.expect_event(&clock, &id, json!(1)).await;
}

#[tokio::test]
async fn a_refresh_to_another_channel_reconnects_as_a_new_subscription_of_that_channel() {
    let server = TestServer::start_with(quiet_server()).await;
    let clock = server.clock.clone();
    let room = minting(&server, "room", &[], 120);
    let hall = minting(&server, "hall", &[], 120);
    let (provider, _) = first_then(room, hall);
    let options = refreshing();
    let mut consumer = consume(client_of(&server).subscribe(provider, options));
    consumer.wait_for(|p| p.connections == 1).await;
    let session = consumer.handle.session_id().unwrap();
    let id = server.publish("room", json!(1)).await;
    consumer.expect_event(&clock, &id, json!(1)).await;

    // The session ticket is bound to "room" and the last id counts "room"'s events: neither
    // can be presented to "hall".
    clock.advance(Duration::from_secs(61));
    consumer
        .drive_until(&clock, |p| {
            p.connections == 2 || p.state == ConnectionState::Closed
        })
        .await;
    if consumer.handle.progress().state == ConnectionState::Closed {
        let item = consumer.next_driving(&clock).await;
        panic!("the subscription ended: {item:?}");
    }
    assert_ne!(consumer.handle.session_id().unwrap(), session);
    let id = server.publish("hall", json!(2)).await;
    consumer.expect_event(&clock, &id, json!(2)).await;
}

#[tokio::test]
async fn a_subscription_polled_after_its_end_stays_ended() {
    let server = TestServer::start().await;
    let bad = token::sign(
        &Keyring::new(["not-the-server-key"]).unwrap(),
        &server.claims("room"),
    );
    let mut subscription =
        client_of(&server).subscribe(FixedToken(bad), SubscribeOptions::default());
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .expect("an item within 20 s")
    };
    let item = next().await;
    assert!(
        matches!(&item, Some(Err(e)) if e.code() == Some(Code::Unauthenticated)),
        "{item:?}"
    );
    assert!(next().await.is_none());
    // A `select!` loop may poll a finished stream again: that must not panic.
    assert!(next().await.is_none());
}

// ---- Fake servers: a silent stream, and a channel object with methods -------------------

/// A `DurableIterator` that answers `Subscribe` with `Subscribed` and then nothing, and
/// `Invoke` with a tiny channel object.
#[derive(Clone, Default)]
struct FakeServer {
    subscribes: Arc<Mutex<Vec<pb::SubscribeRequest>>>,
    count: Arc<Option<watch::Sender<usize>>>,
    flaky_left: Arc<AtomicUsize>,
    /// After `Subscribed`: `TokenExpiring` at once, then the end with UNAVAILABLE (a server
    /// draining its streams, for a token inside the expiry-notice window).
    expiring_then_unavailable: bool,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DurableIterator for FakeServer {
    type SubscribeStream = FrameStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<FrameStream>, Status> {
        let mut subscribes = self.subscribes.lock().unwrap();
        subscribes.push(request.into_inner());
        if let Some(count) = self.count.as_ref() {
            count.send_replace(subscribes.len());
        }
        let subscribed = pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Subscribed(pb::Subscribed {
                channel: "room".into(),
                session_id: "fake-session".into(),
                session_ticket: "fake-ticket".into(),
                resume: Some(pb::ResumeOutcome::default()),
                token_expires_at: (START_MS / 1000 + 3_600) as i64,
                heartbeat_interval_ms: 1_000,
                retention_seconds: 60,
                position: String::new(),
            })),
        };
        let first = futures::stream::iter([Ok(subscribed)]);
        if self.expiring_then_unavailable {
            let expiring = pb::SubscribeResponse {
                kind: Some(pb::subscribe_response::Kind::TokenExpiring(
                    pb::TokenExpiring {
                        token_expires_at: (START_MS / 1000 + 3_600) as i64,
                    },
                )),
            };
            let rest = futures::stream::iter([Ok(expiring), Err(Status::unavailable("draining"))]);
            return Ok(Response::new(Box::pin(first.chain(rest))));
        }
        Ok(Response::new(Box::pin(
            first.chain(futures::stream::pending()),
        )))
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let request = request.into_inner();
        if request.token != "fake-token" {
            return Err(Status::unauthenticated("bad token"));
        }
        let input = request
            .input
            .as_ref()
            .map(durable_iterator::json::from_proto)
            .unwrap_or(Value::Null);
        let path: Vec<&str> = request.path.iter().map(String::as_str).collect();
        let output = match path.as_slice() {
            ["routerClient", "echo"] => {
                json!(format!("Echo: {}", input["text"].as_str().unwrap_or("")))
            }
            ["routerClient", "stats"] => json!({"subscribers": 1}),
            ["routerClient", "flaky"] => {
                let left = self.flaky_left.load(Ordering::SeqCst);
                if left > 0 {
                    self.flaky_left.store(left - 1, Ordering::SeqCst);
                    return Err(Status::unavailable("try again"));
                }
                json!("finally")
            }
            _ => return Err(Status::not_found("no such method")),
        };
        Ok(Response::new(pb::InvokeResponse {
            output: Some(durable_iterator::json::to_proto(&output)),
        }))
    }

    async fn refresh_token(
        &self,
        _request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` on 127.0.0.1:0 until the returned sender is dropped.
async fn serve_fake(fake: FakeServer) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DurableIteratorServer::new(fake))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn a_stream_silent_for_two_and_a_half_heartbeats_is_reconnected() {
    let (count_tx, mut count) = watch::channel(0);
    let fake = FakeServer {
        count: Arc::new(Some(count_tx)),
        ..FakeServer::default()
    };
    let (url, _stop) = serve_fake(fake.clone()).await;
    let clock = ManualClock::new(START_MS);
    let client = Client::new(&url)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let consumer =
        consume(client.subscribe(FixedToken("fake-token".into()), SubscribeOptions::default()));
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    // The heartbeat interval is 1 s: 2.5 s of silence is a dead stream.
    clock.advance(Duration::from_millis(2_500));
    tokio::time::timeout(Duration::from_secs(20), count.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    let requests = fake.subscribes.lock().unwrap().clone();
    assert_eq!(requests[0].session_ticket, None);
    assert_eq!(
        requests[1].session_ticket.as_deref(),
        Some("fake-ticket"),
        "the reconnect keeps the session"
    );
    consumer.wait_for(|p| p.connections == 2).await;
}

#[tokio::test]
async fn a_token_expiring_notice_does_not_reset_the_backoff() {
    let (count_tx, mut count) = watch::channel(0);
    let fake = FakeServer {
        count: Arc::new(Some(count_tx)),
        expiring_then_unavailable: true,
        ..FakeServer::default()
    };
    let (url, _stop) = serve_fake(fake.clone()).await;
    let clock = ManualClock::new(START_MS);
    let client = Client::new(&url)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let consumer =
        consume(client.subscribe(FixedToken("fake-token".into()), SubscribeOptions::default()));
    // Each stream ends right after `Subscribed` and a notice sent at once: nothing proves it
    // worked, so the second retry waits (the clock stands still) instead of reconnecting at
    // once forever.
    let mut progress = consumer.handle.watch();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            biased;
            _ = progress.wait_for(|p| matches!(p.state, ConnectionState::BackingOff { .. })) => Ok(()),
            _ = count.wait_for(|n| *n >= 5) => Err(()),
        }
    })
    .await
    .unwrap();
    assert!(
        outcome.is_ok(),
        "reconnected at once {} times",
        *count.borrow()
    );
    assert_eq!(
        *count.borrow(),
        2,
        "the first attempt and the immediate retry"
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Echo {
    text: String,
}

const ECHO: Method<Echo, String> = Method::new(&["routerClient", "echo"]);
/// Declared with the wrong output type: the server answers an object.
const STATS_AS_STRING: Method<(), String> = Method::new(&["routerClient", "stats"]);
const FLAKY: Method<(), String> = Method::new(&["routerClient", "flaky"]);

#[tokio::test]
async fn typed_calls_send_the_declared_input_and_decode_the_declared_output() {
    let fake = FakeServer::default();
    let (url, _stop) = serve_fake(fake.clone()).await;
    let client = Client::new(&url).unwrap();
    let credentials = Credentials {
        token: "fake-token".into(),
        session_ticket: None,
    };
    let none = InvokeOptions::default();
    let echoed = client
        .call(&credentials, &ECHO, &Echo { text: "hi".into() }, none)
        .await
        .unwrap();
    assert_eq!(echoed, "Echo: hi");

    let error = client
        .call(&credentials, &STATS_AS_STRING, &(), none)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Decode { method, .. } if method == "Method(routerClient.stats)"),
        "{error:?}"
    );
    let error = client
        .invoke(&credentials, &["nothing"], Value::Null, none)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound));

    // UNAVAILABLE is retried only as often as asked.
    let immediate = InvokeOptions {
        retries: 2,
        backoff: Backoff {
            base: Duration::ZERO,
            ..Backoff::default()
        },
    };
    fake.flaky_left.store(2, Ordering::SeqCst);
    let once_more = InvokeOptions {
        retries: 1,
        ..immediate
    };
    let error = client
        .call(&credentials, &FLAKY, &(), once_more)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable));
    fake.flaky_left.store(2, Ordering::SeqCst);
    let answer = client.call(&credentials, &FLAKY, &(), immediate).await;
    assert_eq!(answer.unwrap(), "finally");
}

#[tokio::test]
async fn invoke_on_the_real_server_calls_as_the_session_and_maps_refusals() {
    use durable_iterator::relay::{self, RelayPublish};
    let server = TestServer::start().await;
    let mut claims = server.claims("room");
    claims.rpc = Some(vec!["publish".into()]);
    let token = server.sign(&claims);
    let client = client_of(&server);
    let mut caller =
        consume(client.subscribe(FixedToken(token.clone()), SubscribeOptions::default()));
    let mut other =
        consume(client.subscribe(FixedToken(token.clone()), SubscribeOptions::default()));
    caller.wait_for(|p| p.state == ConnectionState::Live).await;
    other.wait_for(|p| p.state == ConnectionState::Live).await;
    let none = InvokeOptions::default();

    // Typed, over the subscription's connection and as its session: the relay excludes the
    // caller, so only the other subscriber receives the event.
    let input = RelayPublish {
        payload: json!({"text": "hi"}),
        tags: None,
        exclude_self: true,
    };
    let published = caller
        .handle
        .call(&relay::PUBLISH, &input, none)
        .await
        .unwrap();
    other
        .expect_event(&server.clock, &published.id, json!({"text": "hi"}))
        .await;
    let marker = server.publish("room", json!("marker")).await;
    caller
        .expect_event(&server.clock, &marker, json!("marker"))
        .await;

    // Refusals keep their codes and messages.
    let error = caller
        .handle
        .invoke(&["other"], json!({}), none)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(
        error
            .to_string()
            .contains(r#"Method "other" is not allowed."#),
        "{error}"
    );
    let error = caller
        .handle
        .invoke(&["publish", "nothing"], json!({}), none)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
    // By token alone there is no calling session to exclude.
    let by_token = Credentials {
        token,
        session_ticket: None,
    };
    let error = client
        .call(&by_token, &relay::PUBLISH, &input, none)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
    assert!(error.to_string().contains("exclude_self"), "{error}");
}

// ---- Stopping: drop and cancel leave nothing running -------------------------------------

/// Waits until the runtime runs no more tasks than at `baseline` (streams wind down
/// asynchronously; the baseline may still hold the tail of the warm-up call, hence "no more").
async fn wait_for_tasks(baseline: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..2_000 {
        if metrics.num_alive_tasks() <= baseline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} tasks alive, at most {baseline} expected",
        metrics.num_alive_tasks()
    );
}

/// The tasks alive once `client` is connected: the connection's own tasks are not a
/// subscription's.
async fn connected_task_baseline(client: &Client) -> usize {
    client
        .publish(API_KEY, json_publish("warmup", json!(0)))
        .await
        .unwrap();
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test]
async fn dropping_the_subscription_closes_its_stream_and_leaves_no_task() {
    let server = TestServer::start().await;
    let client = client_of(&server);
    let baseline = connected_task_baseline(&client).await;

    let mut subscription = client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    );
    let handle = subscription.handle();
    // The subscription connects when polled: publish once it is live.
    let publish_when_live = async {
        let mut progress = handle.watch();
        progress
            .wait_for(|p| p.state == ConnectionState::Live)
            .await
            .unwrap();
        server.publish("room", json!(1)).await
    };
    let (item, id) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(20), subscription.next()),
        publish_when_live
    );
    let item = item.unwrap();
    assert!(matches!(item, Some(Ok(SubscriptionItem::Event(e))) if e.id == id));
    let ticket = handle.credentials().session_ticket.unwrap();
    drop(subscription);

    assert_eq!(handle.progress().state, ConnectionState::Closed);
    wait_until_not_live(&server, "room", &ticket).await;
    wait_for_tasks(baseline).await;
}

#[tokio::test]
async fn cancelling_the_subscription_ends_it_live_or_backing_off_and_leaves_no_task() {
    let server = TestServer::start().await;
    let client = client_of(&server);
    let baseline = connected_task_baseline(&client).await;

    let mut consumer = consume(client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    ));
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let ticket = consumer.handle.credentials().session_ticket.unwrap();
    consumer.handle.cancel();
    assert!(
        consumer.next_driving(&server.clock).await.is_none(),
        "no error item"
    );
    tokio::time::timeout(Duration::from_secs(20), &mut consumer.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(consumer.handle.progress().state, ConnectionState::Closed);
    wait_until_not_live(&server, "room", &ticket).await;
    wait_for_tasks(baseline).await;

    // While waiting out a backoff against a server that is gone.
    let unreachable = Client::new("http://127.0.0.1:9")
        .unwrap()
        .with_clock(Arc::new(server.clock.clone()));
    let subscription = unreachable.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    );
    let token = subscription.handle().cancellation_token();
    let consumer = consume(subscription);
    consumer
        .wait_for(|p| matches!(p.state, ConnectionState::BackingOff { .. }))
        .await;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(20), consumer.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(consumer.handle.progress().state, ConnectionState::Closed);
}

// ---- The command line: `publish` and `subscribe` against the binary ----------------------

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durable-iterator"));
    command
        .env_remove("DURABLE_ITERATOR_SIGNING_KEY")
        .env_remove("DURABLE_ITERATOR_API_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn cli_publish(addr: &str, extra: &[&str]) -> String {
    let output = cli()
        .args(["publish", "--server", &format!("http://{addr}")])
        .args(["--api-key", CHILD_API_KEY, "--channel", "cli"])
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Lines of a child's pipe, read by a thread, with a bounded wait for each.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_line(lines: &std::sync::mpsc::Receiver<String>) -> Value {
    let line = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a line within 20 s");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

#[test]
fn the_command_line_publishes_and_subscribes_from_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let first = cli_publish(&server.addr, &["--json", r#"{"n":1}"#]);
    let second = cli_publish(&server.addr, &["--json", "2", "--tags", "a,b"]);
    // Reaches nobody: an empty tag list is not "no filter".
    cli_publish(&server.addr, &["--json", "3", "--tags", ""]);
    let start_of_epoch = format!("{}-0000000000000000", &first[..8]);

    let mut subscriber = cli()
        .args(["subscribe", "--server", &format!("http://{}", server.addr)])
        .args(["--channel", "cli", "--tags", "a", "--from", &start_of_epoch])
        .args(["--signing-key", CHILD_SIGNING_KEY])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = lines_of(subscriber.stdout.take().unwrap());
    let stderr = lines_of(subscriber.stderr.take().unwrap());
    let _subscriber = KillOnDrop(subscriber);

    let connected = next_line(&stderr);
    assert!(
        connected["connected"]["session_ticket"].is_string(),
        "{connected}"
    );
    let event = next_line(&stdout);
    assert_eq!(
        (&event["id"], &event["payload"]),
        (&json!(first), &json!({"n": 1}))
    );
    assert!(event["published_at_ms"].as_i64().unwrap() > 0, "{event}");
    let event = next_line(&stdout);
    assert_eq!(
        (&event["id"], &event["payload"]),
        (&json!(second), &json!(2))
    );
    let live = cli_publish(&server.addr, &["--json", r#""live""#]);
    let event = next_line(&stdout);
    assert_eq!(
        (&event["id"], &event["payload"]),
        (&json!(live), &json!("live"))
    );

    // A wrong key is refused with the server's message and a failure exit code.
    let output = cli()
        .args(["publish", "--server", &format!("http://{}", server.addr)])
        .args(["--api-key", "wrong", "--channel", "cli", "--json", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Unauthenticated") || stderr.contains("API key"),
        "{stderr}"
    );
}

/// A refresh that comes due while events are waiting to be read starts at once, not once the
/// stream runs dry: a stream that never pauses must not ride its token into expiry.
#[tokio::test]
async fn a_refresh_due_while_events_wait_starts_before_the_next_event() {
    let server = TestServer::start_with(quiet_server()).await;
    let clock = server.clock.clone();
    let (provider, calls) = counted(minting(&server, "busy", &[], 120));
    let mut subscription = client_of(&server).subscribe(provider, refreshing());
    let handle = subscription.handle();
    let first = {
        let publish_once_live = async {
            let mut progress = handle.watch();
            progress
                .wait_for(|p| p.state == ConnectionState::Live)
                .await
                .unwrap();
            server.publish("busy", json!(0)).await
        };
        let (item, _) = tokio::join!(subscription.next(), publish_once_live);
        item
    };
    assert!(
        matches!(first, Some(Ok(SubscriptionItem::Event(_)))),
        "{first:?}"
    );
    // A backlog of events, all acknowledged (so sent) before the client reads on.
    for n in 1..=300 {
        server.publish("busy", json!(n)).await;
    }
    assert!(matches!(read(&mut subscription).await, Some(Ok(_))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The refresh comes due (61 s in, 60 s before a 120 s token expires).
    clock.advance(Duration::from_secs(61));
    assert!(matches!(read(&mut subscription).await, Some(Ok(_))));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the provider is asked before the next waiting event is handed out"
    );
    // The rest arrive, in order, on the same stream, which now runs on the new token.
    let mut last = 0;
    while last < 300 {
        match read(&mut subscription).await {
            Some(Ok(SubscriptionItem::Event(event))) => {
                let n = event.json().and_then(Value::as_u64).unwrap();
                assert!(n > last || last == 0, "{n} after {last}");
                last = n;
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
    let mut progress = handle.watch();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if progress.borrow_and_update().refreshes == 1 {
                return;
            }
            // The refresh completes while the stream is polled.
            tokio::select! {
                _ = progress.changed() => {}
                _ = subscription.next() => panic!("no more events were published"),
            }
        }
    })
    .await
    .expect("the refresh completes");
    assert_eq!(handle.progress().connections, 1);
}

/// The next item, bounded in time.
async fn read(subscription: &mut Subscription) -> Option<Item> {
    tokio::time::timeout(Duration::from_secs(20), subscription.next())
        .await
        .expect("an item within 20 s")
}

#[path = "client_on_nodes.rs"]
mod on_nodes;
