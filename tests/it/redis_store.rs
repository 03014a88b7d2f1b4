//! The Redis store under a server, against a real `redis-server`: health follows Redis, a Redis
//! that is down refuses publishes at once, and everything comes back when it does.

use std::{sync::Arc, time::Duration};

use crate::common::{
    process::{ServerProcess, child_publish, child_token},
    redis_server::RedisServer,
    *,
};
use durable_iterator::{
    RedisConfig, RedisStore, RedisTls,
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

/// The configuration of a node on `redis` under `prefix`.
fn config_for(redis: &RedisServer, prefix: &str) -> RedisConfig {
    let mut config = RedisConfig::new(redis.url(), 3_600_000);
    config.key_prefix = prefix.to_owned();
    config
}

/// The configuration of a node on the TLS `redis`, trusting its CA.
fn tls_config_for(redis: &RedisServer, prefix: &str) -> RedisConfig {
    let mut config = config_for(redis, prefix);
    config.tls = RedisTls::from_pem_files(Some(&redis.tls_files().ca), None).unwrap();
    config
}

async fn server_with(config: RedisConfig) -> TestServer {
    let store = RedisStore::open_with(config).await.unwrap();
    TestServer::start_with(Options {
        store: Some(Arc::new(store)),
        ..Options::default()
    })
    .await
}

/// A CA that signed nothing of the test's servers, in `dir`.
fn unrelated_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
    let path = dir.join("unrelated-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

/// A direct connection to `redis`, to look at what it holds.
async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn stream_length(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}

/// Every event `server` has on `channel`, replayed from the start of the epoch of `id`.
async fn replayed_from_start(server: &TestServer, channel: &str, id: &str) -> Vec<String> {
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.token(channel)))
        .await
        .unwrap();
    drop(stream);
    let request = pb::SubscribeRequest {
        last_event_id: Some(format!("{}-0000000000000000", &id[..8])),
        ..resume_request(server.token(channel), id, &subscribed.session_ticket)
    };
    let (resumed, mut stream) = server.subscribe(request).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..resumed.resume.unwrap().replayed {
        ids.push(next_event(&mut stream).await.id);
    }
    ids
}

// The TLS server has no plaintext port: everything below, the pub/sub connection that carries
// events between nodes included, can only have gone over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_publish_subscribe_and_fan_out_over_tls() {
    let redis = RedisServer::start_tls(false);
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let a = server_with(tls_config_for(&redis, "tls")).await;
    let b = server_with(tls_config_for(&redis, "tls")).await;
    let (_, mut on_a) = a.subscribe(subscribe_request(a.token("c"))).await.unwrap();
    let (_, mut on_b) = b.subscribe(subscribe_request(b.token("c"))).await.unwrap();
    let mut published = Vec::new();
    for n in 0..6 {
        let node = if n % 2 == 0 { &a } else { &b };
        published.push(node.publish("c", json!(n)).await);
    }
    for stream in [&mut on_a, &mut on_b] {
        let mut received = Vec::new();
        for _ in 0..published.len() {
            received.push(next_event(stream).await.id);
        }
        assert_eq!(received, published, "every node's events, once, in order");
    }
    // History is read back over TLS too.
    assert_eq!(replayed_from_start(&b, "c", &published[0]).await, published);
}

#[test]
fn a_redis_whose_certificate_the_configured_ca_did_not_sign_is_refused_at_startup() {
    let redis = RedisServer::start_tls(false);
    let dir = tempfile::tempdir().unwrap();
    let unrelated = unrelated_ca(dir.path());
    let serve = |ca: Option<&std::path::Path>| {
        let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
        command.args(["--store", "redis", "--redis-url", &redis.url()]);
        if let Some(ca) = ca {
            command.arg("--redis-ca-file").arg(ca);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // With the wrong CA, and with the system's roots (which do not know the test's CA).
    for refused in [serve(Some(&unrelated)), serve(None)] {
        assert!(
            refused.contains("cannot reach Redis at rediss://127.0.0.1"),
            "{refused}"
        );
        assert!(refused.contains("the TLS handshake failed"), "{refused}");
        assert!(refused.contains("--redis-ca-file"), "{refused}");
    }
    // The right CA: it starts (and is stopped by the drop).
    let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
    command
        .args(["--store", "redis", "--redis-url", &redis.url()])
        .arg("--redis-ca-file")
        .arg(redis.tls_files().ca);
    let _server = ServerProcess::spawn(command);
}

// The client certificate comes from each place a setting can: the file names one, the
// environment the other, and the command line the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_asks_for_client_certificates_takes_the_configured_one() {
    let redis = RedisServer::start_tls(true);
    let files = redis.tls_files();
    let refused = RedisStore::open_with(tls_config_for(&redis, "mtls"))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("asks for a client certificate"),
        "{refused}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"redis\"\nredis-ca-file = {:?}\nredis-cert-file = {:?}\n",
            files.ca.display().to_string(),
            files.client_cert.display().to_string()
        ),
    )
    .unwrap();
    let command = || {
        let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
        command
            .args(["--redis-url", &redis.url(), "--config"])
            .arg(&config)
            .env("DURABLE_ITERATOR_REDIS_KEY_FILE", &files.client_key);
        command
    };
    let printed = command().arg("--print-config").output().unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    for line in [
        "redis-ca-file = ",
        "redis-cert-file = ",
        "redis-key-file = ",
        "redis-wait-replicas = 0",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    let server = ServerProcess::spawn(command());
    let mut client = durable_iterator::pb::durable_iterator_client::DurableIteratorClient::new(
        server.channel().await,
    );
    let (_, mut stream) = subscribe_on(&mut client, subscribe_request(child_token("c")))
        .await
        .unwrap();
    let mut admin =
        durable_iterator::pb::durable_iterator_admin_client::DurableIteratorAdminClient::new(
            server.channel().await,
        );
    let id = admin
        .publish(child_publish("c", json!("over mutual TLS")))
        .await
        .unwrap()
        .into_inner()
        .id;
    assert_eq!(next_event(&mut stream).await.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_publish_is_on_the_replicas_it_waits_for() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    primary.wait_for_replicas(1);
    let mut config = config_for(&primary, "wait");
    config.wait_replicas = 1;
    let server = server_with(config).await;
    let mut on_replica = redis_connection(&replica).await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("c")))
        .await
        .unwrap();
    for n in 1..=5 {
        let id = server.publish("c", json!(n)).await;
        assert_eq!(stream_length(&mut on_replica, "wait:stream:c").await, n);
        assert_eq!(next_event(&mut stream).await.id, id);
    }
    // Publishes in flight together (they share WAITs): each is on the replica once answered.
    let channels: Vec<String> = (0..24).map(|n| format!("many-{n}")).collect();
    futures::future::join_all(
        channels
            .iter()
            .map(|channel| server.publish(channel, json!(1))),
    )
    .await;
    for channel in &channels {
        let key = format!("wait:stream:{channel}");
        assert_eq!(stream_length(&mut on_replica, &key).await, 1, "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_too_few_replicas_acknowledge_fails_unavailable_but_is_stored() {
    let primary = RedisServer::start();
    let _replica = RedisServer::start_replica_of(&primary);
    primary.wait_for_replicas(1);
    let mut config = config_for(&primary, "few");
    config.wait_replicas = 2;
    // Long enough that a connected replica answers in time on a loaded machine.
    config.wait_timeout = Duration::from_secs(2);
    let server = server_with(config).await;
    let request = pb::PublishRequest {
        idempotency_key: Some("order-1".into()),
        ..publish_request("c", json!("once"))
    };
    let refused = server.publish_with(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    for said in [
        "stored on the Redis primary",
        "only 1 of the 2 replicas",
        "same idempotency key",
    ] {
        assert!(refused.message().contains(said), "{said}: {refused:?}");
    }
    let mut on_primary = redis_connection(&primary).await;
    assert_eq!(stream_length(&mut on_primary, "few:stream:c").await, 1);

    // With a second replica, the retry is acknowledged: the same event, not a second one.
    let _second = RedisServer::start_replica_of(&primary);
    primary.wait_for_replicas(2);
    let id = server.publish_with(request).await.unwrap();
    assert_eq!(replayed_from_start(&server, "c", &id).await, [id]);
}

// A retry whose events are all stored already writes nothing; its WAIT must still cover the
// first attempt, even when that was another node's (which `{prefix}:replicated` makes sure of;
// Redis 7.0 also counts from its read-only script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_node_is_acknowledged_only_once_the_replica_has_the_first_attempt() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    primary.wait_for_replicas(1);
    let node = || {
        let mut config = config_for(&primary, "retry");
        config.wait_replicas = 1;
        // Long enough that a connected replica answers in time on a loaded machine.
        config.wait_timeout = Duration::from_secs(2);
        server_with(config)
    };
    let (a, b) = (node().await, node().await);
    let request = pb::PublishRequest {
        idempotency_key: Some("order-2".into()),
        ..publish_request("c", json!("once"))
    };
    // The replica stays connected but takes nothing in: it lags.
    replica.pause();
    let first = a.publish_with(request.clone()).await.unwrap_err();
    assert_eq!(first.code(), Code::Unavailable, "{first:?}");
    let retry = b.publish_with(request.clone()).await.unwrap_err();
    assert_eq!(retry.code(), Code::Unavailable, "{retry:?}");
    assert!(retry.message().contains("0 of the 1"), "{retry:?}");
    replica.resume();
    let id = b.publish_with(request).await.unwrap();
    let mut on_replica = redis_connection(&replica).await;
    assert_eq!(stream_length(&mut on_replica, "retry:stream:c").await, 1);
    assert_eq!(replayed_from_start(&a, "c", &id).await, [id]);
}
