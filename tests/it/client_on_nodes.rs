//! The Rust client's faults against two nodes on one Redis behind a load balancer: the client
//! sees one server. A node stopping hands the session to the other; a second stream of the
//! session on the other node ends the first with ABORTED; a disconnect through the other node
//! is final; Redis restarting mid-stream loses nothing.

use super::*;
use crate::common::{balancer::Balancer, redis_server::RedisServer};
use durable_iterator::RedisStore;

/// Two nodes on `redis` sharing `clock`, and a balancer whose first connection goes to the
/// first node.
async fn node_pair(redis: &RedisServer, clock: &ManualClock) -> (TestServer, TestServer, Balancer) {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::open(&redis.url(), "pair", 3_600_000)
            .await
            .unwrap();
        let options = Options {
            store: Some(Arc::new(store)),
            ..quiet_server()
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        nodes.push(TestServer::start_on(addr, clock.clone(), options).await);
    }
    let balancer = Balancer::start(nodes.iter().map(|node| node.addr).collect()).await;
    let second = nodes.pop().unwrap();
    let first = nodes.pop().unwrap();
    (first, second, balancer)
}

fn client_through(balancer: &Balancer, clock: &ManualClock) -> Client {
    Client::new(&format!("http://{}", balancer.addr))
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
}

/// A subscription to `room` through the balancer (its stream on node `a`), live and past one
/// event published on each node.
async fn live_on_a(
    balancer: &Balancer,
    clock: &ManualClock,
    a: &TestServer,
    b: &TestServer,
) -> Consumer {
    let mut consumer = consume(
        client_through(balancer, clock)
            .subscribe(FixedToken(a.token("room")), SubscribeOptions::default()),
    );
    consumer
        .wait_for(|p| p.state == ConnectionState::Live)
        .await;
    let first = [
        a.publish("room", json!("first")).await,
        b.publish("room", json!("second")).await,
    ];
    consumer
        .expect_event(clock, &first[0], json!("first"))
        .await;
    consumer
        .expect_event(clock, &first[1], json!("second"))
        .await;
    consumer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopping_mid_stream_hands_the_session_to_the_other_with_every_event_once() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let (mut a, b, balancer) = node_pair(&redis, &clock).await;
    let mut consumer = live_on_a(&balancer, &clock, &a, &b).await;
    let session = consumer.handle.session_id().unwrap();

    // The client's node goes; what is published meanwhile is read back on the other one.
    a.stop().await;
    let missed = [
        b.publish("room", json!(3)).await,
        b.publish("room", json!(4)).await,
    ];
    consumer.expect_event(&clock, &missed[0], json!(3)).await;
    consumer.expect_event(&clock, &missed[1], json!(4)).await;
    let live = b.publish("room", json!(5)).await;
    consumer.expect_event(&clock, &live, json!(5)).await;
    assert_eq!(consumer.handle.session_id().unwrap(), session);
    assert_eq!(consumer.handle.progress().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_through_the_other_node_ends_with_aborted() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let (a, b, balancer) = node_pair(&redis, &clock).await;
    // Two clients: two connections, one to each node.
    let mut first = consume(
        client_through(&balancer, &clock)
            .subscribe(FixedToken(a.token("room")), SubscribeOptions::default()),
    );
    first.wait_for(|p| p.connections == 1).await;
    let ticket = first.handle.credentials().session_ticket;
    let mut second = consume(client_through(&balancer, &clock).subscribe(
        FixedToken(b.token("room")),
        SubscribeOptions {
            session_ticket: ticket,
            ..SubscribeOptions::default()
        },
    ));
    second.wait_for(|p| p.connections == 1).await;
    assert_eq!(second.handle.session_id(), first.handle.session_id());
    match first.next_driving(&clock).await {
        Some(Err(error)) => assert_eq!(error.code(), Some(Code::Aborted), "{error}"),
        other => panic!("expected ABORTED, got {other:?}"),
    }
    assert!(first.next_driving(&clock).await.is_none());
    assert_eq!(
        first.handle.progress().connections,
        1,
        "no fight over the session"
    );
    let id = a.publish("room", json!(1)).await;
    second.expect_event(&clock, &id, json!(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_through_the_other_node_stops_the_client() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(START_MS);
    let (a, b, balancer) = node_pair(&redis, &clock).await;
    let mut consumer = live_on_a(&balancer, &clock, &a, &b).await;
    let session_id = consumer.handle.session_id().unwrap();
    let request = pb::DisconnectRequest {
        channel: "room".into(),
        session_id,
        revoke: false,
    };
    let answer = b.admin().disconnect(authorized(request)).await.unwrap();
    assert!(answer.into_inner().was_live);
    match consumer.next_driving(&clock).await {
        Some(Err(error)) => {
            assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
            assert!(
                error.to_string().contains("disconnected by the server"),
                "{error}"
            );
        }
        other => panic!("expected the disconnect, got {other:?}"),
    }
    assert!(
        consumer.next_driving(&clock).await.is_none(),
        "final: no reconnect"
    );
    assert_eq!(consumer.handle.progress().connections, 1);
}

/// Publishes on `node` until it is acknowledged, with an idempotency key so that a retry after
/// a lost answer stores nothing twice (Redis may still be coming back).
async fn publish_until_acknowledged(node: &TestServer, payload: Value, key: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut request = publish_request("room", payload.clone());
        request.idempotency_key = Some(key.into());
        match node.publish_with(request).await {
            Ok(id) => return id,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Redis did not come back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_loses_nothing_and_repeats_nothing() {
    let mut redis = RedisServer::start_persistent();
    let clock = ManualClock::new(START_MS);
    let (a, b, balancer) = node_pair(&redis, &clock).await;
    let mut consumer = live_on_a(&balancer, &clock, &a, &b).await;

    redis.kill();
    // The node notices (its health check), ends the stream, and the client backs off.
    consumer
        .wait_for(|p| p.state != ConnectionState::Live)
        .await;
    redis.restart();
    let after = [
        publish_until_acknowledged(&b, json!(3), "three").await,
        publish_until_acknowledged(&a, json!(4), "four").await,
    ];
    consumer.expect_event(&clock, &after[0], json!(3)).await;
    consumer.expect_event(&clock, &after[1], json!(4)).await;
    let live = b.publish("room", json!(5)).await;
    consumer.expect_event(&clock, &live, json!(5)).await;
    assert!(consumer.handle.progress().connections >= 2);
}
