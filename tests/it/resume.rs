//! Publish, live delivery and resume over real gRPC.

use std::{sync::Arc, time::Duration};

use crate::common::*;
use durable_iterator::pb::ResumeFailure;
use serde_json::json;

#[tokio::test]
async fn first_message_is_subscribed_then_live_events_in_order() {
    let server = TestServer::start().await;
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(server.token("lobby")))
        .await
        .unwrap();
    assert_eq!(subscribed.channel, "lobby");
    assert_eq!(subscribed.session_id.len(), 22);
    assert!(
        subscribed
            .session_ticket
            .starts_with(&subscribed.session_id)
    );
    assert_eq!(
        subscribed.token_expires_at as u64,
        server.now_secs() + 3_600
    );
    assert_eq!(subscribed.retention_seconds, 60);
    assert_eq!(subscribed.heartbeat_interval_ms, 15_000);
    let resume = subscribed.resume.unwrap();
    assert!(!resume.requested && !resume.recovered);
    // Nothing published yet: the stream stands before the first event.
    assert!(
        subscribed.position.ends_with("-0000000000000000"),
        "{}",
        subscribed.position
    );

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(server.publish("lobby", json!({ "n": n })).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let event = next_event(&mut stream).await;
        assert_eq!(&event.id, id);
        assert_eq!(payload(&event), json!({ "n": n }));
        assert_eq!(event.published_at_ms as u64, START_MS);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids increase as strings");
    // Another channel's events do not arrive.
    server.publish("elsewhere", json!("x")).await;
    assert!(
        drain_until_marker(&server, "lobby", &mut stream)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn resume_replays_what_was_missed_and_keeps_the_session() {
    let server = TestServer::start().await;
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
    assert!(resume.requested && resume.recovered, "{resume:?}");
    assert_eq!(resume.replayed, 2);
    assert_eq!(resume.oldest_retained_id, first);
    // The replay ends at the newest event; live ones come after it.
    assert_eq!(resubscribed.position, missed[1]);
    for id in &missed {
        assert_eq!(&next_event(&mut stream).await.id, id);
    }
    let live = server.publish("room", json!(4)).await;
    assert_eq!(next_event(&mut stream).await.id, live);
}

#[tokio::test]
async fn resume_at_the_latest_id_replays_nothing_and_recovers() {
    let server = TestServer::start().await;
    let last = server.publish("room", json!(1)).await;
    let (subscribed, _stream) = server.subscribe(pb_resume(&server, &last)).await.unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(resume.recovered && resume.replayed == 0, "{resume:?}");
}

fn pb_resume(server: &TestServer, last: &str) -> durable_iterator::pb::SubscribeRequest {
    durable_iterator::pb::SubscribeRequest {
        token: server.token("room"),
        last_event_id: Some(last.into()),
        session_ticket: None,
    }
}

#[tokio::test]
async fn unrecoverable_resumes_say_why() {
    let server = TestServer::start_with(Options {
        retention_ms: 10_000,
        ..Options::default()
    })
    .await;
    let first = server.publish("room", json!(1)).await;
    server.clock.advance(Duration::from_secs(6));
    let second = server.publish("room", json!(2)).await;
    server.publish("room", json!(3)).await;

    // Unknown id: a sequence number the channel never reached.
    let epoch = &first[..8];
    let (subscribed, _s) = server
        .subscribe(pb_resume(&server, &format!("{epoch}-00000000000000ff")))
        .await
        .unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(resume.requested && !resume.recovered);
    assert_eq!(resume.failure(), ResumeFailure::UnknownId);
    assert_eq!(resume.replayed, 0);

    // Store reset: another epoch.
    let other_epoch = if epoch == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let (subscribed, _s) = server
        .subscribe(pb_resume(
            &server,
            &format!("{other_epoch}-0000000000000001"),
        ))
        .await
        .unwrap();
    assert_eq!(
        subscribed.resume.unwrap().failure(),
        ResumeFailure::StoreReset
    );

    // Too old: the first event left the window, the rest is replayed and said to be partial.
    server.clock.advance(Duration::from_secs(5));
    let zero = format!("{epoch}-0000000000000000");
    let (subscribed, mut stream) = server.subscribe(pb_resume(&server, &zero)).await.unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(!resume.recovered);
    assert_eq!(resume.failure(), ResumeFailure::TooOld);
    assert_eq!(resume.replayed, 2);
    assert_eq!(resume.oldest_retained_id, second);
    assert_eq!(next_event(&mut stream).await.id, second);

    // Resuming after the expired event itself still needs nothing that expired.
    let (subscribed, _s) = server.subscribe(pb_resume(&server, &first)).await.unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(resume.recovered && resume.replayed == 2, "{resume:?}");
}

#[tokio::test]
async fn retention_zero_reports_resume_off() {
    let server = TestServer::start_with(Options {
        retention_ms: 0,
        ..Options::default()
    })
    .await;
    let first = server.publish("room", json!(1)).await;
    server.publish("room", json!(2)).await;
    let (subscribed, _s) = server.subscribe(pb_resume(&server, &first)).await.unwrap();
    assert_eq!(subscribed.retention_seconds, 0);
    let resume = subscribed.resume.unwrap();
    assert!(!resume.recovered && resume.replayed == 0);
    assert_eq!(resume.failure(), ResumeFailure::ResumeOff);
}

/// Publishers race a resuming subscriber: replay and live must meet with no gap and no
/// duplicate. Repeated so that the join falls at many different points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_live_meet_without_gap_or_duplicate_under_concurrent_publishes() {
    let store = YieldingStore(durable_iterator::store::MemoryStore::new(60_000));
    replay_and_live_meet_under_concurrent_publishes(Arc::new(store), from_store_in_pages()).await;
}

/// The same race with the gaps replayed from the channel's recent batches in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_memory_and_live_meet_without_gap_or_duplicate() {
    let store = YieldingStore(durable_iterator::store::MemoryStore::new(60_000));
    replay_and_live_meet_under_concurrent_publishes(
        Arc::new(store),
        durable_iterator::ReplayLimits::default(),
    )
    .await;
}

/// Pages as small as they go (16 events; the first, 64), so a replay crosses many of them
/// while the publishers race it; one replay at a time; nothing replayed from memory.
fn from_store_in_pages() -> durable_iterator::ReplayLimits {
    durable_iterator::ReplayLimits {
        page_bytes: 1,
        concurrent: 1,
        recent_bytes_per_channel: 0,
        ..Default::default()
    }
}

/// The same race on the on-disk store, whose appends go through its writer thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_live_meet_on_the_on_disk_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = durable_iterator::store::RedbStore::open(dir.path(), 60_000).unwrap();
    replay_and_live_meet_under_concurrent_publishes(Arc::new(store), from_store_in_pages()).await;
}

async fn replay_and_live_meet_under_concurrent_publishes(
    store: Arc<dyn durable_iterator::store::EventStore>,
    replay: durable_iterator::ReplayLimits,
) {
    let server = Arc::new(
        TestServer::start_with(Options {
            store: Some(store),
            config: Box::new(move |config| config.replay = replay),
            ..Options::default()
        })
        .await,
    );
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.token("race")))
        .await
        .unwrap();
    drop(stream);
    let mut before = server.publish("race", json!("start")).await;

    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 150;
    for round in 0..5 {
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let server = server.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for n in 0..PER_PUBLISHER {
                        ids.push(server.publish("race", json!([round, p, n])).await);
                    }
                    ids
                })
            })
            .collect();
        // Subscribe while the publishers are running.
        tokio::task::yield_now().await;
        let (resubscribed, mut stream) = server
            .subscribe(resume_request(
                server.token("race"),
                &before,
                &subscribed.session_ticket,
            ))
            .await
            .unwrap();
        let resume = resubscribed.resume.unwrap();
        assert!(resume.recovered);
        let mut published = Vec::new();
        for publisher in publishers {
            published.extend(publisher.await.unwrap());
        }
        published.sort();
        let total = published.len();
        let mut received = Vec::with_capacity(total);
        while received.len() < total {
            received.push(next_event(&mut stream).await.id);
        }
        assert_eq!(
            received, published,
            "round {round}: every event once, in order"
        );
        // `replayed` counted exactly the events up to the stream's position, across pages.
        let replayed = received
            .iter()
            .filter(|id| id.as_str() <= resubscribed.position.as_str())
            .count() as u64;
        assert_eq!(resume.replayed, replayed, "round {round}");
        // And nothing after them.
        let marker = server.publish("race", json!("marker")).await;
        assert_eq!(next_event(&mut stream).await.id, marker);
        // The next round resumes from here.
        before = marker;
    }
}

/// An empty `last_event_id` or `session_ticket` is no id and no ticket: clients in several
/// languages cannot send an empty string apart from none.
#[tokio::test]
async fn empty_last_event_id_and_ticket_mean_none() {
    let server = TestServer::start().await;
    let request = durable_iterator::pb::SubscribeRequest {
        token: server.token("lobby"),
        last_event_id: Some(String::new()),
        session_ticket: Some(String::new()),
    };
    let (subscribed, mut stream) = server.subscribe(request).await.unwrap();
    let resume = subscribed.resume.unwrap();
    assert!(!resume.requested && !resume.recovered, "{resume:?}");
    assert_eq!(subscribed.session_id.len(), 22, "a new session");
    let id = server.publish("lobby", json!("live")).await;
    assert_eq!(next_event(&mut stream).await.id, id);
}

/// Channel names are any UTF-8 without control characters, as oRPC allows: a token minted for
/// `salle de café 🙂` subscribes, and events published to it arrive.
#[tokio::test]
async fn a_channel_named_in_any_script_with_spaces_works() {
    let server = TestServer::start().await;
    let channel = "salle de café 🙂";
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(server.token(channel)))
        .await
        .unwrap();
    assert_eq!(subscribed.channel, channel);
    let id = server.publish(channel, json!({"bonjour": true})).await;
    let event = next_event(&mut stream).await;
    assert_eq!(event.id, id);
    assert_eq!(payload(&event), json!({"bonjour": true}));
}

/// A long gap is replayed in many pages: every retained event the session may see, once, in
/// order, `replayed` counting exactly them; a session whose tags admit half of them gets half.
#[tokio::test]
async fn a_long_gap_is_replayed_in_pages_exactly() {
    let server = TestServer::start_with(Options {
        config: Box::new(|config| {
            config.replay = durable_iterator::ReplayLimits {
                page_bytes: 1,
                concurrent: 1,
                // From the store, in pages: what is tested.
                recent_bytes_per_channel: 0,
                ..Default::default()
            }
        }),
        ..Options::default()
    })
    .await;
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.token_with_tags("pages", &["a"])))
        .await
        .unwrap();
    drop(stream);
    let start = server.publish("pages", json!("start")).await;
    let mut expected = Vec::new();
    let events: Vec<_> = (0..2_000)
        .map(|n| {
            let mut request = publish_request("pages", json!(n));
            // Every other event is for tag `b`, which the session does not hold.
            let tag = if n % 2 == 0 { "a" } else { "b" };
            request.tags = Some(durable_iterator::pb::StringList {
                values: vec![tag.into()],
            });
            request
        })
        .collect();
    for (n, request) in events.into_iter().enumerate() {
        let id = server.publish_with(request).await.unwrap();
        if n % 2 == 0 {
            expected.push(id);
        }
    }
    let request = resume_request(
        server.token_with_tags("pages", &["a"]),
        &start,
        &subscribed.session_ticket,
    );
    let (resubscribed, mut stream) = server.subscribe(request).await.unwrap();
    let resume = resubscribed.resume.unwrap();
    assert!(resume.recovered);
    assert_eq!(resume.replayed, 1_000);
    let mut received = Vec::new();
    while received.len() < expected.len() {
        received.push(next_event(&mut stream).await.id);
    }
    assert_eq!(received, expected);
    let marker = server.publish("pages", json!("marker")).await;
    assert_eq!(next_event(&mut stream).await.id, marker, "then live");
}

/// A client that stops reading mid-replay gives its replay slot to the next resume: with one
/// slot, a second session's replay still runs to its end, and the first, reading again, gets
/// all of its events too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_replay_gives_its_slot_to_the_next() {
    let server = TestServer::start_with(Options {
        config: Box::new(|config| {
            config.replay = durable_iterator::ReplayLimits {
                page_bytes: 64 << 10,
                concurrent: 1,
                stall: Duration::from_millis(200),
                // From the store: the slot is what is tested.
                recent_bytes_per_channel: 0,
                ..Default::default()
            }
        }),
        ..Options::default()
    })
    .await;
    let channel = "stall";
    let (first, stream) = server
        .subscribe(subscribe_request(server.token(channel)))
        .await
        .unwrap();
    drop(stream);
    let (second, stream) = server
        .subscribe(subscribe_request(server.token(channel)))
        .await
        .unwrap();
    drop(stream);
    let start = server.publish(channel, json!("start")).await;
    // 32 MiB of events: more than HTTP/2's windows and the sockets' buffers hold, so the
    // replay to a client that reads nothing stops mid-way.
    let big = "x".repeat(16 << 10);
    const EVENTS: usize = 2_048;
    for _ in 0..EVENTS / 128 {
        let events = (0..128)
            .map(|_| publish_request(channel, json!(big)))
            .collect();
        server
            .admin()
            .publish_batch(authorized(durable_iterator::pb::PublishBatchRequest {
                events,
            }))
            .await
            .unwrap();
    }
    // Each on a connection of its own: the stalled one's windows must not stop the other's.
    let mut stalled_client = server.client_on_new_connection().await;
    let (_, mut stalled) = subscribe_on(
        &mut stalled_client,
        resume_request(server.token(channel), &start, &first.session_ticket),
    )
    .await
    .unwrap();
    let mut reading_client = server.client_on_new_connection().await;
    let resume = subscribe_on(
        &mut reading_client,
        resume_request(server.token(channel), &start, &second.session_ticket),
    );
    // Without the slot given back, this waits for as long as the stalled stream lives.
    let (resumed, mut reading) = tokio::time::timeout(Duration::from_secs(60), resume)
        .await
        .expect("the second resume still waits for the stalled one's slot")
        .unwrap();
    assert_eq!(resumed.resume.unwrap().replayed, EVENTS as u64);
    for _ in 0..EVENTS {
        next_event(&mut reading).await;
    }
    for _ in 0..EVENTS {
        next_event(&mut stalled).await;
    }
}
