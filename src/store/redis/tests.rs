use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::store::{
    Announced, Follower,
    contract::{self, event},
};

#[path = "test_server.rs"]
mod test_server;
use test_server::RedisServer;

async fn open(redis: &RedisServer, prefix: &str, retention_ms: u64) -> RedisStore {
    RedisStore::open(&redis.url(), prefix, retention_ms)
        .await
        .unwrap()
}

#[tokio::test]
async fn keeps_the_store_contract() {
    let redis = RedisServer::start();
    contract::assigns_consecutive_seqs_and_reads_ranges(&open(&redis, "a", 10_000).await).await;
    contract::retention_is_exact(&open(&redis, "b", 1_000).await).await;
    contract::retention_zero_keeps_nothing_but_counts(&open(&redis, "c", 0).await).await;
    contract::retention_is_exact_within_one_append(&open(&redis, "d", 1_000).await).await;
    contract::pages_read_either_way_within_retention(&open(&redis, "e", 1_000).await).await;
    contract::channels_are_listed_in_pages(&open(&redis, "f", 1_000).await).await;
    contract::a_key_stores_its_event_once_while_retained(&open(&redis, "g", 1_000).await).await;
    contract::retention_zero_remembers_no_key(&open(&redis, "h", 0).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_with_one_key_store_one_event() {
    let redis = RedisServer::start();
    contract::racing_appends_with_one_key_store_one_event(Arc::new(
        open(&redis, "r", 10_000).await,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_keep_every_channel_consecutive() {
    let redis = RedisServer::start();
    contract::concurrent_appends_keep_every_channel_consecutive(Arc::new(
        open(&redis, "p", 10_000).await,
    ))
    .await;
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_ids_and_history() {
    let redis = RedisServer::start();
    let (a, b) = (
        open(&redis, "x", 10_000).await,
        open(&redis, "x", 10_000).await,
    );
    assert_eq!(
        a.epoch(),
        b.epoch(),
        "the second node takes the first one's epoch"
    );
    assert_eq!(a.append("c", &[event(1)]).await.unwrap()[0].seq, 1);
    assert_eq!(b.append("c", &[event(2)]).await.unwrap()[0].seq, 2);
    let read = a.read("c", 0, 2, 3).await.unwrap();
    assert_eq!(
        read.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2]
    );
    let other = open(&redis, "y", 10_000).await;
    assert_eq!(
        other.last_seq("c").await.unwrap(),
        0,
        "prefixes keep deployments apart"
    );
}

#[tokio::test]
async fn a_flushed_redis_is_a_new_history() {
    let redis = RedisServer::start();
    let store = open(&redis, "f", 10_000).await;
    let epoch = store.epoch();
    store.append("c", &[event(1)]).await.unwrap();
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut store.connection.clone())
        .await
        .unwrap();
    let error = store.append("c", &[event(2)]).await.unwrap_err();
    assert!(error.to_string().contains("flushed or replaced"), "{error}");
    assert!(
        store.append("c", &[event(3)]).await.is_err(),
        "refused until restarted"
    );
    let restarted = open(&redis, "f", 10_000).await;
    assert_ne!(restarted.epoch(), epoch, "old ids read as a store reset");
    assert_eq!(restarted.append("c", &[event(4)]).await.unwrap()[0].seq, 1);
}

#[tokio::test]
async fn an_append_is_announced_as_it_was_stored() {
    let redis = RedisServer::start();
    let store = open(&redis, "t", 10_000).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(store.keys.topic("c")).await.unwrap();
    store.append("c", &[event(1)]).await.unwrap();
    let filter = Arc::new(Filter {
        tags: Some(vec!["t".into()]),
        targets: None,
        exclude: vec![],
    });
    let published = [
        NewEvent {
            filter: filter.clone(),
            ..event(5)
        },
        NewEvent { filter, ..event(6) },
    ];
    store.append("c", &published).await.unwrap();
    let mut messages = pubsub.on_message();
    let first = messages.next().await.unwrap();
    let first: Vec<u8> = first.get_payload().unwrap();
    assert_eq!(announcement::parse(&first).unwrap().first_seq, 1);
    let second: Vec<u8> = messages.next().await.unwrap().get_payload().unwrap();
    let announced = announcement::parse(&second).unwrap();
    assert_eq!(announced.first_seq, 2);
    let stored = store.read("c", 1, 3, 7).await.unwrap();
    assert_eq!(announced.events.len(), stored.events.len());
    for (announced, stored) in announced.events.iter().zip(&stored.events) {
        assert_eq!(announced.published_at_ms, stored.published_at_ms);
        assert_eq!(
            Filter::from_stored(announced.filter).unwrap(),
            *stored.filter
        );
        assert_eq!(announced.payload, b"\x12\x00");
    }
}

#[tokio::test]
async fn expiry_deletes_in_chunks_and_keeps_what_is_retained() {
    let redis = RedisServer::start();
    let store = open(&redis, "e", 1_000).await;
    let total = TRIM_CHUNK as usize * 2 + 10;
    let events: Vec<NewEvent> = (0..total as u64).map(|n| event(n % 100)).collect();
    store.append("c", &events).await.unwrap();
    store.append("c", &[event(900)]).await.unwrap();
    assert_eq!(store.expire(1_100).await.unwrap(), total);
    let last = total as u64 + 1;
    let read = store.read("c", 0, last, 1_100).await.unwrap();
    assert_eq!(read.oldest_retained, Some(last));
    assert_eq!(read.events.len(), 1);
    assert_eq!(store.expire(2_000).await.unwrap(), 1);
    let channels: Vec<String> = store
        .connection
        .clone()
        .zrange(store.keys.channels(), 0, -1)
        .await
        .unwrap();
    assert!(
        channels.is_empty(),
        "an empty channel is not scanned again: {channels:?}"
    );
    assert_eq!(store.last_seq("c").await.unwrap(), last, "its ids go on");
}

#[tokio::test]
async fn a_redis_that_is_down_fails_calls_instead_of_hanging_them() {
    let mut redis = RedisServer::start();
    let store = open(&redis, "d", 10_000).await;
    store.append("c", &[event(1)]).await.unwrap();
    redis.kill();
    let error = store.append("c", &[event(2)]).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(store.read("c", 0, 1, 2).await.is_err());
    let error = RedisStore::open(&redis.url(), "d", 10_000)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot reach Redis"), "{error}");
}

#[test]
fn passwords_stay_out_of_messages() {
    assert_eq!(
        redacted("redis://user:secret@host:6379/0"),
        "redis://***@host:6379/0"
    );
    assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
}

async fn next(follower: &mut Follower) -> Announced {
    tokio::time::timeout(Duration::from_secs(20), follower.updates.recv())
        .await
        .expect("an announcement within 20 s")
        .expect("still following")
}

#[tokio::test]
async fn a_follower_is_told_to_resync_when_pubsub_reconnects_and_then_follows_on() {
    let redis = RedisServer::start();
    let store = open(&redis, "s", 10_000).await;
    let mut follower = store.follow("c").await.unwrap().unwrap();
    store.append("c", &[event(1)]).await.unwrap();
    assert!(matches!(next(&mut follower).await, Announced::Batch(b) if b[0].seq == 1));
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut store.connection.clone())
        .await
        .unwrap();
    assert!(
        matches!(next(&mut follower).await, Announced::Resync),
        "what was announced while it was down is to be read back"
    );
    // Subscribed again: appends are announced as before.
    store.append("c", &[event(2)]).await.unwrap();
    assert!(matches!(next(&mut follower).await, Announced::Batch(b) if b[0].seq == 2));
    drop(follower);
}

fn present(session_id: &str, channel: &str, tags: &[&str]) -> crate::object::PresentSession {
    let mut claims = crate::token::TokenClaims::new(channel, 0, 60);
    claims.tags = Some(tags.iter().map(|t| t.to_string()).collect());
    crate::object::PresentSession {
        session: crate::object::SessionInfo {
            session_id: session_id.into(),
            claims: Arc::new(claims),
        },
        connected_at_ms: 7,
        resumes: 1,
    }
}

async fn presence_ids(store: &RedisStore, channel: &str) -> Vec<String> {
    let cluster = store.cluster().unwrap();
    let page = cluster.presence(channel, None, 100).await.unwrap();
    page.into_iter().map(|p| p.session.session_id).collect()
}

#[tokio::test]
async fn the_directory_follows_sessions_from_node_to_node_and_ends_each_once() {
    let redis = RedisServer::start();
    let (a, b) = (
        open(&redis, "d", 10_000).await,
        open(&redis, "d", 10_000).await,
    );
    let (on_a, on_b) = (a.cluster().unwrap(), b.cluster().unwrap());
    on_a.opened(&present("s1", "room", &["x"]));
    on_a.opened(&present("s2", "room", &[]));
    on_a.settled().await;
    assert_eq!(presence_ids(&b, "room").await, ["s1", "s2"]);
    let listed = on_b.presence("room", None, 100).await.unwrap();
    assert_eq!(listed[0].session.claims.tags(), ["x".to_owned()]);
    assert_eq!((listed[0].connected_at_ms, listed[0].resumes), (7, 1));
    assert_eq!(on_b.presence_count("room").await.unwrap(), 2);
    assert_eq!(on_b.present_channels("", None, 10).await.unwrap(), ["room"]);
    let place = on_b.place("s1").await.unwrap().unwrap();
    assert_eq!((place.node, place.channel.as_str()), (on_a.node(), "room"));
    // Pages of one.
    let first = on_b.presence("room", None, 1).await.unwrap();
    let second = on_b.presence("room", Some("s1"), 1).await.unwrap();
    assert_eq!(first[0].session.session_id, "s1");
    assert_eq!(second[0].session.session_id, "s2");

    // s1 closes on a and comes back on b within its window: b holds it, and the lapse of a's
    // window does not end it there.
    on_a.closed("s1", 60_000);
    on_a.settled().await;
    assert_eq!(presence_ids(&b, "room").await, ["s2"]);
    on_b.opened(&present("s1", "room", &["x"]));
    on_b.settled().await;
    assert!(!on_a.ended_here("s1").await.unwrap(), "it moved to b");
    on_b.closed("s1", 60_000);
    assert!(on_b.ended_here("s1").await.unwrap(), "it ends on b");
    assert!(!on_b.ended_here("s1").await.unwrap(), "once");
    assert_eq!(on_b.place("s1").await.unwrap(), None);
}

#[tokio::test]
async fn the_sessions_of_a_node_whose_lease_lapsed_leave_the_directory() {
    let redis = RedisServer::start();
    let (a, b) = (
        open(&redis, "lease", 10_000).await,
        open(&redis, "lease", 10_000).await,
    );
    let dead = a.cluster().unwrap();
    dead.opened(&present("gone", "room", &[]));
    dead.settled().await;
    b.cluster().unwrap().opened(&present("kept", "room", &[]));
    b.cluster().unwrap().settled().await;
    let node = dead.node();
    drop(dead);
    // Node a dies (its keeper stops with it) and its lease lapses: a kill -9, without the
    // ten seconds.
    drop(a);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = connection.zadd("lease:nodes", node, 1).await.unwrap();
    // Presence leaves it out at once; b's next heartbeat cleans it up.
    assert_eq!(presence_ids(&b, "room").await, ["kept"]);
    let on_b = b.cluster().unwrap();
    assert_eq!(on_b.place("gone").await.unwrap(), None);
    assert_eq!(
        on_b.presence_count("room").await.unwrap(),
        2,
        "counted until cleaned up"
    );
    b.cluster.heartbeat().await.unwrap();
    assert_eq!(on_b.presence_count("room").await.unwrap(), 1);
    let nodes = on_b.nodes().await.unwrap();
    assert_eq!(nodes, [on_b.node()], "the dead node is forgotten");
    let left: Option<String> = connection.hget("lease:session:gone", "node").await.unwrap();
    assert_eq!(left, None);
}

/// A store on `primary` whose appends wait for one replica.
async fn open_replicated(primary: &RedisServer, prefix: &str, retention_ms: u64) -> RedisStore {
    let mut config = RedisConfig::new(primary.url(), retention_ms);
    config.key_prefix = prefix.to_owned();
    config.wait_replicas = 1;
    RedisStore::open_with(config).await.unwrap()
}

// Every append goes through the rounds of `replicated.rs`: their answers (first seqs,
// duplicates, the epoch check) must be the plain path's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_wait_for_a_replica_keep_the_store_contract() {
    let primary = RedisServer::start();
    let _replica = RedisServer::start_replica_of(&primary);
    primary.wait_for_replicas(1);
    let store = |prefix, retention_ms| open_replicated(&primary, prefix, retention_ms);
    contract::assigns_consecutive_seqs_and_reads_ranges(&store("a", 10_000).await).await;
    contract::retention_is_exact_within_one_append(&store("d", 1_000).await).await;
    contract::a_key_stores_its_event_once_while_retained(&store("g", 1_000).await).await;
    contract::retention_zero_remembers_no_key(&store("h", 0).await).await;
    contract::racing_appends_with_one_key_store_one_event(Arc::new(store("r", 10_000).await)).await;
    contract::concurrent_appends_keep_every_channel_consecutive(Arc::new(store("p", 10_000).await))
        .await;

    // Redis forgets its scripts (SCRIPT FLUSH, a restart): the append loads it again.
    let flushed = store("f", 10_000).await;
    flushed.append("c", &[event(1)]).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut flushed.connection.clone())
        .await
        .unwrap();
    let stored = flushed.append("c", &[event(2)]).await.unwrap();
    assert_eq!(stored[0].seq, 2);

    // A flushed Redis is refused as on the plain path.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut flushed.connection.clone())
        .await
        .unwrap();
    let refused = flushed.append("c", &[event(3)]).await.unwrap_err();
    assert!(
        refused.to_string().contains("flushed or replaced"),
        "{refused}"
    );
}
