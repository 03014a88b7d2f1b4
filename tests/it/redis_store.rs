//! The Redis store under a server, against a real `redis-server`: health follows Redis, a Redis
//! that is down refuses publishes at once, and everything comes back when it does.

use std::{sync::Arc, time::Duration};

use crate::common::{redis_server::RedisServer, *};
use durable_iterator::{
    RedisStore,
    pb::{self, subscribe_response::Kind},
};
use serde_json::json;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn server_on(redis: &RedisServer, prefix: &str) -> TestServer {
    let store = RedisStore::open(&redis.url(), prefix, 3_600_000)
        .await
        .unwrap();
    TestServer::start_with(Options {
        store: Some(Arc::new(store)),
        ..Options::default()
    })
    .await
}

/// The next status the health watch reports.
async fn next_health(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> ServingStatus {
    tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("a health update within 30 s")
        .unwrap()
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_redis_and_publishes_come_back_with_it() {
    let mut redis = RedisServer::start_persistent();
    let server = server_on(&redis, "health").await;
    let before = server.publish("c", json!("before")).await;
    let mut health = HealthClient::new(server.channel());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_health(&mut watch).await, ServingStatus::Serving);
    let (_, mut open_stream) = server
        .subscribe(subscribe_request(server.token("c")))
        .await
        .unwrap();

    redis.kill();
    let refused = server
        .publish_with(publish_request("c", json!("while down")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(next_health(&mut watch).await, ServingStatus::NotServing);
    // Open streams end so their clients resume, on another node if this one stays cut off.
    let ended = expect_end(&mut open_stream, Code::Unavailable).await;
    assert!(ended.contains("lost the event store"), "{ended}");

    redis.restart();
    assert_eq!(next_health(&mut watch).await, ServingStatus::Serving);
    let after = server.publish("c", json!("after")).await;
    // Nothing of the history was lost: a resume from the start replays both.
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.token("c")))
        .await
        .unwrap();
    drop(stream);
    let request = pb::SubscribeRequest {
        last_event_id: Some(format!("{}-0000000000000000", &before[..8])),
        ..resume_request(server.token("c"), &before, &subscribed.session_ticket)
    };
    let (resumed, mut stream) = server.subscribe(request).await.unwrap();
    assert_eq!(resumed.resume.unwrap().replayed, 2);
    assert_eq!(next_event(&mut stream).await.id, before);
    assert_eq!(next_event(&mut stream).await.id, after);
}

#[tokio::test]
async fn a_flushed_redis_answers_old_ids_with_store_reset() {
    let redis = RedisServer::start();
    let server = server_on(&redis, "flush").await;
    let old = server.publish("c", json!("old")).await;
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.token("c")))
        .await
        .unwrap();
    drop(stream);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    let refused = server
        .publish_with(publish_request("c", json!("after the flush")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("flushed or replaced"),
        "{refused:?}"
    );

    // A restarted node takes the new history: the old id is from another one.
    let server = server_on(&redis, "flush").await;
    let (resumed, _stream) = server
        .subscribe(resume_request(
            server.token("c"),
            &old,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    let resume = resumed.resume.unwrap();
    assert!(!resume.recovered);
    assert_eq!(
        resume.failure(),
        pb::ResumeFailure::StoreReset,
        "{resume:?}"
    );
}

/// Two nodes on one Redis and one key prefix.
async fn two_nodes(redis: &RedisServer, prefix: &str) -> (TestServer, TestServer) {
    (
        server_on(redis, prefix).await,
        server_on(redis, prefix).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_on_one_node_reach_subscribers_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, "fanout").await;
    let (_, mut on_b) = b.subscribe(subscribe_request(b.token("c"))).await.unwrap();
    let (_, mut on_a) = a.subscribe(subscribe_request(a.token("c"))).await.unwrap();
    let (_, mut tagged_on_b) = b
        .subscribe(subscribe_request(b.token_with_tags("c", &["vip"])))
        .await
        .unwrap();
    let mut published = Vec::new();
    for n in 0..20 {
        let node = if n % 2 == 0 { &a } else { &b };
        published.push(node.publish("c", json!(n)).await);
    }
    let mut for_vip = publish_request("c", json!("vip only"));
    for_vip.tags = Some(pb::StringList {
        values: vec!["vip".into()],
    });
    let vip = a.publish_with(for_vip).await.unwrap();
    for stream in [&mut on_a, &mut on_b] {
        let mut received = Vec::new();
        for _ in 0..published.len() {
            received.push(next_event(stream).await.id);
        }
        assert_eq!(received, published, "every node's events, once, in order");
    }
    // The tag filter holds across nodes too: the untagged sessions never see `vip`.
    let mut received = Vec::new();
    for _ in 0..=published.len() {
        received.push(next_event(&mut tagged_on_b).await.id);
    }
    assert_eq!(received.last(), Some(&vip));
    let marker = b.publish("c", json!("marker")).await;
    assert_eq!(
        next_event(&mut on_a).await.id,
        marker,
        "no vip event before it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_the_other_node_and_goes_on_live() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, "resume").await;
    let (subscribed, mut on_a) = a.subscribe(subscribe_request(a.token("c"))).await.unwrap();
    let first = a.publish("c", json!(1)).await;
    assert_eq!(next_event(&mut on_a).await.id, first);
    drop(on_a);
    let missed: Vec<String> =
        futures::future::join_all((2..6).map(|n| a.publish("c", json!(n)))).await;
    let mut missed = missed;
    missed.sort();
    let (resumed, mut on_b) = b
        .subscribe(resume_request(
            b.token("c"),
            &first,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    assert_eq!(resumed.session_id, subscribed.session_id);
    assert_eq!(resumed.resume.unwrap().replayed, 4);
    for id in &missed {
        assert_eq!(&next_event(&mut on_b).await.id, id);
    }
    let live = a.publish("c", json!("live")).await;
    assert_eq!(
        next_event(&mut on_b).await.id,
        live,
        "then live, from the other node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_missed_while_pubsub_reconnects_are_read_back() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, "missed").await;
    let (_, mut on_b) = b.subscribe(subscribe_request(b.token("c"))).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut published = Vec::new();
    for round in 0..3 {
        // Every subscriber connection goes: both nodes' pub/sub, mid-stream.
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection)
            .await
            .unwrap();
        for n in 0..10 {
            published.push(a.publish("c", json!([round, n])).await);
        }
    }
    let mut received = Vec::new();
    for _ in 0..published.len() {
        received.push(next_event(&mut on_b).await.id);
    }
    assert_eq!(received, published, "nothing skipped, nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_resumes_on_another_node_ends_its_old_stream_with_aborted() {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(&redis, "supersede").await;
    let (subscribed, mut on_a) = a.subscribe(subscribe_request(a.token("c"))).await.unwrap();
    let first = a.publish("c", json!(1)).await;
    assert_eq!(next_event(&mut on_a).await.id, first);
    // The old stream is still open (a half-dead connection, say) when the client comes back
    // through another node.
    let (_, mut on_b) = b
        .subscribe(resume_request(
            b.token("c"),
            &first,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    let ended = loop {
        match next(&mut on_a).await {
            Ok(Kind::Heartbeat(_) | Kind::Event(_)) => continue,
            Ok(other) => panic!("expected the end of the stream, got {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    let live = a.publish("c", json!(2)).await;
    assert_eq!(
        next_event(&mut on_b).await.id,
        live,
        "the session goes on on the other node"
    );
}
