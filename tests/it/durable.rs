//! The embedded on-disk store end to end: restarts, crashes, replaced data directories, exact
//! retention, and data directories the server must refuse.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{process::*, redis_server::RedisServer, *};
use durable_iterator::{
    RedbStore,
    pb::{
        self, ResumeFailure, durable_iterator_admin_client::DurableIteratorAdminClient,
        durable_iterator_client::DurableIteratorClient,
    },
};
use serde_json::json;

fn redb_options(dir: &Path, retention_ms: u64) -> Options {
    Options {
        store: Some(Arc::new(RedbStore::open(dir, retention_ms).unwrap())),
        ..Options::default()
    }
}

/// The id of sequence number 0 in the epoch of `id`: resuming after it replays everything.
fn start_of_epoch(id: &str) -> String {
    format!("{}-0000000000000000", &id[..8])
}

#[tokio::test]
async fn a_restart_keeps_every_event_the_ids_and_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with(redb_options(dir.path(), 60_000)).await;
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let first = server.publish("room", json!(1)).await;
    assert_eq!(next_event(&mut stream).await.id, first);
    drop(stream);
    let missed = [
        server.publish("room", json!(2)).await,
        server.publish("room", json!(3)).await,
    ];
    server.stop().await;
    drop(server);

    let server = TestServer::start_with(redb_options(dir.path(), 60_000)).await;
    let (resubscribed, mut stream) = server
        .subscribe(resume_request(
            server.token("room"),
            &first,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    assert_eq!(resubscribed.session_id, subscribed.session_id);
    let resume = resubscribed.resume.unwrap();
    assert!(resume.recovered, "{resume:?}");
    assert_eq!(resume.replayed, 2);
    for (id, n) in missed.iter().zip([2, 3]) {
        let event = next_event(&mut stream).await;
        assert_eq!((&event.id, payload(&event)), (id, json!(n)));
    }
    let after_restart = server.publish("room", json!(4)).await;
    assert!(
        after_restart > missed[1],
        "ids keep increasing across restarts"
    );
    assert_eq!(&after_restart[..8], &first[..8], "same epoch");
    assert_eq!(next_event(&mut stream).await.id, after_restart);
}

#[tokio::test]
async fn a_replaced_data_directory_reports_store_reset() {
    let old_dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with(redb_options(old_dir.path(), 60_000)).await;
    let old_id = server.publish("room", json!("old")).await;
    server.stop().await;
    drop(server);

    let new_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(redb_options(new_dir.path(), 60_000)).await;
    // The new history has events too: an old id must not be matched against them.
    for n in 0..3 {
        server.publish("room", json!(n)).await;
    }
    let request = pb::SubscribeRequest {
        last_event_id: Some(old_id),
        ..subscribe_request(server.token("room"))
    };
    let (subscribed, _stream) = server.subscribe(request).await.unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(resume.requested && !resume.recovered);
    assert_eq!(resume.failure(), ResumeFailure::StoreReset);
    assert_eq!(resume.replayed, 0);
}

#[tokio::test]
async fn retention_on_disk_is_exact_before_and_after_the_purge() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(redb_options(dir.path(), 10_000)).await;
    let first = server.publish("room", json!(1)).await;
    server.clock.advance(Duration::from_secs(6));
    let second = server.publish("room", json!(2)).await;
    // The first event's window ends exactly 10 s after it was published.
    server.clock.advance(Duration::from_millis(3_999));
    let from_start = || pb::SubscribeRequest {
        last_event_id: Some(start_of_epoch(&first)),
        ..subscribe_request(server.token("room"))
    };
    let (subscribed, _s) = server.subscribe(from_start()).await.unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(resume.recovered && resume.replayed == 2, "{resume:?}");

    server.clock.advance(Duration::from_millis(1));
    for purge in [false, true] {
        if purge {
            let now = START_MS + 10_000;
            assert_eq!(server.store.expire(now).await.unwrap(), 1);
        }
        let (subscribed, mut stream) = server.subscribe(from_start()).await.unwrap();
        let resume = subscribed.resume.unwrap();
        assert!(!resume.recovered, "purged: {purge}");
        assert_eq!(resume.failure(), ResumeFailure::TooOld);
        assert_eq!(resume.replayed, 1);
        assert_eq!(resume.oldest_retained_id, second);
        assert_eq!(next_event(&mut stream).await.id, second);
    }
}

/// `kill -9` under concurrent publish load, several times over: after every restart, every
/// acknowledged event is replayable, in order, exactly once, with the payload it was sent with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    acknowledged_events_survive_sigkill(|| ServerProcess::command(dir.path(), "127.0.0.1:0")).await;
}

/// The same on the Redis store: the node is killed, Redis keeps what the node acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill_under_load_on_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    acknowledged_events_survive_sigkill(|| {
        let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
        command.args(["--store", "redis", "--redis-url", &redis.url()]);
        command
    })
    .await;
}

/// Rounds of publishers racing a kill -9 of the server `serve` starts; after each restart, a
/// resume from the first event replays every acknowledged event with its payload, in order.
async fn acknowledged_events_survive_sigkill(serve: impl Fn() -> std::process::Command) {
    const ROUNDS: usize = 3;
    const PUBLISHERS: usize = 8;
    const ACKED_BEFORE_KILL: usize = 300;
    // (id, payload) of every acknowledged publish, over all rounds.
    let acked: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut server = ServerProcess::spawn(serve());
        let channel = server.channel().await;
        let (enough_tx, enough) = tokio::sync::watch::channel(false);
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let mut admin = DurableIteratorAdminClient::new(channel.clone());
                let acked = acked.clone();
                let enough_tx = enough_tx.clone();
                tokio::spawn(async move {
                    for n in 0.. {
                        let payload = json!({ "round": round, "publisher": p, "n": n });
                        // Unacknowledged publishes (the kill cut them off) may or may not
                        // have been stored; only acknowledged ones are owed.
                        let Ok(response) =
                            admin.publish(child_publish("load", payload.clone())).await
                        else {
                            return;
                        };
                        let mut acked = acked.lock().unwrap();
                        acked.push((response.into_inner().id, payload));
                        if acked.len() >= (round + 1) * ACKED_BEFORE_KILL {
                            let _ = enough_tx.send(true);
                        }
                    }
                })
            })
            .collect();
        drop(enough_tx);
        let mut enough = enough;
        tokio::time::timeout(Duration::from_secs(120), enough.wait_for(|e| *e))
            .await
            .expect("publishes are acknowledged")
            .unwrap();
        server.kill();
        for publisher in publishers {
            tokio::time::timeout(Duration::from_secs(60), publisher)
                .await
                .expect("publishers stop once the server is gone")
                .unwrap();
        }

        let server = ServerProcess::spawn(serve());
        let acked = acked.lock().unwrap().clone();
        let mut client = DurableIteratorClient::new(server.channel().await);
        let request = pb::SubscribeRequest {
            last_event_id: Some(start_of_epoch(&acked[0].0)),
            ..subscribe_request(child_token("load"))
        };
        let (subscribed, mut stream) = subscribe_on(&mut client, request).await.unwrap();
        let resume = subscribed.resume.unwrap();
        assert!(resume.recovered, "round {round}: {resume:?}");
        let mut replayed = Vec::with_capacity(resume.replayed as usize);
        for _ in 0..resume.replayed {
            let event = next_event(&mut stream).await;
            replayed.push((event.id.clone(), payload(&event)));
        }
        assert!(
            replayed.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "round {round}: replay in strictly increasing id order, no duplicate"
        );
        let replayed: std::collections::HashMap<_, _> = replayed.into_iter().collect();
        for (id, payload) in &acked {
            assert_eq!(
                replayed.get(id),
                Some(payload),
                "round {round}: acknowledged event {id} replayed with its payload"
            );
        }
    }
}

fn refused_start(data_dir: &Path) -> String {
    let output = ServerProcess::command(data_dir, "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server must refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_refuses_a_locked_a_corrupt_and_an_unusable_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let _running = ServerProcess::start(&data, "127.0.0.1:0");
        let error = refused_start(&data);
        assert!(error.contains("in use by another process"), "{error}");
    }

    let file = data.join(durable_iterator::store::REDB_FILE_NAME);
    let garbage = b"not an event store".repeat(300);
    std::fs::write(&file, &garbage).unwrap();
    let error = refused_start(&data);
    assert!(error.contains("corrupt"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), garbage, "nothing wiped");

    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let error = refused_start(&not_a_dir);
    assert!(error.contains("not a directory"), "{error}");
}
