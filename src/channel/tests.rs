//! Encode once, share the bytes: what every subscriber of a channel is handed, live and on
//! replay.

use std::{sync::Arc, time::Duration};

use futures::FutureExt;

use prost::Message;
use serde_json::{Value, json};

use super::{Admits, Batch, Channels, HubLimits, ReplayLimits, SubscriberQueue};
use crate::{
    clock::ManualClock,
    filter::Filter,
    json, pb,
    pb::subscribe_response::Kind,
    store::EventStore,
    store::MemoryStore,
    wire::{self, Frame},
};

const START_MS: u64 = 1_764_000_000_000;

/// A session every event reaches.
fn everyone() -> Admits {
    Arc::new(|_: &Filter| true)
}

fn payload(event: &pb::Event) -> Value {
    match &event.payload {
        Some(pb::event::Payload::Json(value)) => json::from_proto(value),
        other => panic!("not a JSON payload: {other:?}"),
    }
}

fn library_channels() -> (Channels, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new(60_000));
    let channels = Channels::new(
        store.clone(),
        Arc::new(ManualClock::new(START_MS)),
        HubLimits {
            subscriber_queue: 64,
            max_batch: 64,
            replay: ReplayLimits::default(),
        },
    );
    (channels, store)
}

fn json_payload(value: Value) -> bytes::Bytes {
    wire::encode_payload(&pb::event::Payload::Json(json::to_proto(&value)))
}

async fn next_batch(subscription: &mut SubscriberQueue) -> Batch {
    tokio::time::timeout(Duration::from_secs(20), subscription.next())
        .await
        .expect("a batch within 20 s")
        .expect("the subscription is open")
}

/// Decodes a frame as the `SubscribeResponse` a client receives.
fn decoded_event(frame: &Frame) -> pb::Event {
    match pb::SubscribeResponse::decode(frame.bytes().clone())
        .unwrap()
        .kind
    {
        Some(Kind::Event(event)) => event,
        other => panic!("not an event frame: {other:?}"),
    }
}

#[tokio::test]
async fn every_subscriber_is_sent_the_same_encoded_bytes() {
    let (channels, _store) = library_channels();
    let mut a = channels.open("shared", None, everyone()).await.unwrap();
    let mut b = channels.open("shared", None, everyone()).await.unwrap();
    let id = channels
        .publish(
            "shared",
            json_payload(json!({"hello": "world"})),
            Filter::everyone(),
        )
        .await
        .unwrap();

    let batch_a = next_batch(&mut a.subscription).await;
    let batch_b = next_batch(&mut b.subscription).await;
    assert_eq!((batch_a.len(), batch_b.len()), (1, 1));
    let (frame_a, frame_b) = (&batch_a[0].frame, &batch_b[0].frame);
    // One encoding in memory, not two equal ones.
    assert_eq!(frame_a.bytes().as_ptr(), frame_b.bytes().as_ptr());
    assert_eq!(frame_a.bytes().len(), frame_b.bytes().len());

    let event = decoded_event(frame_a);
    assert_eq!(event.id, id.to_string());
    assert_eq!(event.published_at_ms as u64, START_MS);
    assert_eq!(payload(&event), json!({"hello": "world"}));
}

#[tokio::test]
async fn a_replayed_event_is_sent_as_the_bytes_encoded_when_it_was_stored() {
    let (channels, store) = library_channels();
    let mut live = channels.open("kept", None, everyone()).await.unwrap();
    let first = channels
        .publish("kept", json_payload(json!(1)), Filter::everyone())
        .await
        .unwrap();
    let second = channels
        .publish("kept", json_payload(json!(2)), Filter::everyone())
        .await
        .unwrap();
    assert_eq!(first.epoch, store.epoch());
    let mut live_events = Vec::new();
    while live_events.len() < 2 {
        live_events.extend(next_batch(&mut live.subscription).await.iter().cloned());
    }

    let resumed = channels
        .open("kept", Some(first), everyone())
        .await
        .unwrap();
    assert!(resumed.outcome.recovered, "{:?}", resumed.outcome);
    assert_eq!(resumed.outcome.replayed, 1);
    let mut replay = resumed.replay;
    let replayed = replay
        .take_ready()
        .expect("the replayed event, read with the first page");
    assert!(replay.take_ready().is_none() && replay.is_done());
    let replayed = &replayed;
    assert_eq!(replayed.seq, second.seq);
    assert_eq!(live_events[1].seq, second.seq);
    assert_eq!(
        replayed.frame.bytes().as_ptr(),
        live_events[1].frame.bytes().as_ptr(),
        "the store keeps the encoded frame; replay does not re-encode"
    );
    let event = decoded_event(&replayed.frame);
    assert_eq!(event.id, second.to_string());
    assert_eq!(payload(&event), json!(2));
}

#[tokio::test]
async fn a_subscriber_that_keeps_up_survives_a_burst_larger_than_its_queue() {
    let channels = Channels::new(
        Arc::new(MemoryStore::new(60_000)),
        Arc::new(ManualClock::new(START_MS)),
        HubLimits {
            subscriber_queue: 4,
            max_batch: 64,
            replay: ReplayLimits::default(),
        },
    );
    let mut opened = channels.open("burst", None, everyone()).await.unwrap();
    // Polled together on this single-threaded runtime, all 16 publishes are queued before the
    // flush task first runs: they are stored and handed out as one batch of 16, four times
    // the queue. The subscriber has nothing unread, so it is not slow and must not be dropped.
    let ids: Vec<_> = futures::future::join_all(
        (0..16).map(|n| channels.publish("burst", json_payload(json!(n)), Filter::everyone())),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let mut received = Vec::new();
    while received.len() < ids.len() {
        received.extend(
            next_batch(&mut opened.subscription)
                .await
                .iter()
                .map(|e| e.seq),
        );
    }
    assert_eq!(received, ids.iter().map(|id| id.seq).collect::<Vec<_>>());
    // Still subscribed: the next event arrives too.
    let after = channels
        .publish("burst", json_payload(json!("after")), Filter::everyone())
        .await
        .unwrap();
    let batch = next_batch(&mut opened.subscription).await;
    assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [after.seq]);
}

#[tokio::test]
async fn a_publish_is_appended_whole_with_as_many_others_as_fit_a_batch() {
    let channels = Channels::new(
        Arc::new(MemoryStore::new(60_000)),
        Arc::new(ManualClock::new(START_MS)),
        HubLimits {
            subscriber_queue: 1_000,
            max_batch: 64,
            replay: ReplayLimits::default(),
        },
    );
    let mut opened = channels.open("whole", None, everyone()).await.unwrap();
    // Queued together (single-threaded runtime): publishes of 30, 30, 10, 100 and 5 events
    // against batches of 64 events.
    let sizes = [30, 30, 10, 100, 5];
    let publishes = sizes.iter().enumerate().map(|(n, &size)| {
        let events = (0..size)
            .map(|i| super::Publication::new(json_payload(json!([n, i])), Filter::everyone()))
            .collect();
        channels.publish_many("whole", events)
    });
    let ids: Vec<Vec<u64>> = futures::future::join_all(publishes)
        .await
        .into_iter()
        .map(|ids| ids.unwrap().iter().map(|id| id.seq).collect())
        .collect();
    // Each publish has consecutive ids, in the order queued.
    let mut next = 1;
    for (publish, size) in ids.iter().zip(sizes) {
        assert_eq!(*publish, (next..next + size as u64).collect::<Vec<_>>());
        next += size as u64;
    }
    let mut batches = Vec::new();
    while batches.iter().map(Vec::len).sum::<usize>() < 175 {
        let batch = next_batch(&mut opened.subscription).await;
        batches.push(batch.iter().map(|e| e.seq).collect::<Vec<_>>());
    }
    // 30 + 30 fit 64, 10 more would not; the 100 goes alone, though larger; then the 5.
    let lengths: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(lengths, [60, 10, 100, 5]);
    assert_eq!(batches.concat(), ids.concat());
}

/// A store that counts its `read`s.
struct CountingReads {
    inner: MemoryStore,
    reads: std::sync::atomic::AtomicUsize,
}

impl CountingReads {
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A memory store with 60 s of retention that counts its reads, and a clock for it.
fn counting_store() -> (Arc<CountingReads>, Arc<ManualClock>) {
    let store = Arc::new(CountingReads {
        inner: MemoryStore::new(60_000),
        reads: Default::default(),
    });
    (store, Arc::new(ManualClock::new(START_MS)))
}

#[async_trait::async_trait]
impl EventStore for CountingReads {
    fn epoch(&self) -> crate::store::Epoch {
        self.inner.epoch()
    }
    fn retention_ms(&self) -> u64 {
        self.inner.retention_ms()
    }
    async fn append(
        &self,
        channel: &str,
        events: &[crate::store::NewEvent],
    ) -> Result<crate::store::StoredBatch, crate::store::StoreError> {
        self.inner.append(channel, events).await
    }
    async fn last_seq(&self, channel: &str) -> Result<u64, crate::store::StoreError> {
        self.inner.last_seq(channel).await
    }
    async fn read(
        &self,
        channel: &str,
        after: u64,
        until: u64,
        now_ms: u64,
    ) -> Result<crate::store::History, crate::store::StoreError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // As a store on disk or across the network would, so that concurrent callers interleave.
        tokio::task::yield_now().await;
        self.inner.read(channel, after, until, now_ms).await
    }
    async fn read_page(
        &self,
        channel: &str,
        page: crate::store::PageQuery,
        now_ms: u64,
    ) -> Result<Vec<crate::store::StoredEvent>, crate::store::StoreError> {
        self.inner.read_page(channel, page, now_ms).await
    }
    async fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, crate::store::StoreError> {
        self.inner.channels(prefix, after, limit, now_ms).await
    }
    async fn expire(&self, now_ms: u64) -> Result<usize, crate::store::StoreError> {
        self.inner.expire(now_ms).await
    }
}

#[tokio::test]
async fn a_short_gap_on_a_channel_that_published_is_read_in_one_page() {
    let (store, clock) = counting_store();
    let channels = Channels::new(
        store.clone(),
        clock,
        HubLimits {
            subscriber_queue: 1_000,
            max_batch: 1_024,
            // Nothing kept in memory: the store is read.
            replay: without_recent(),
        },
    );
    let events = (0..100)
        .map(|n| super::Publication::new(json_payload(json!(n)), Filter::everyone()))
        .collect();
    let ids = channels.publish_many("short", events).await.unwrap();
    let reads = || store.reads();
    let before = reads();
    let resumed = channels
        .open("short", Some(ids[0]), everyone())
        .await
        .unwrap();
    assert_eq!(resumed.outcome.replayed, 99);
    // The channel's events are small: the first page covers the 99 (64 events would not).
    assert_eq!(reads() - before, 1);
}

/// Replay limits that keep no recent batches: every replay reads the store.
fn without_recent() -> ReplayLimits {
    ReplayLimits {
        recent_bytes_per_channel: 0,
        ..ReplayLimits::default()
    }
}

/// Replay limits that keep a few recent events of a channel only.
fn few_recent() -> ReplayLimits {
    ReplayLimits {
        recent_bytes_per_channel: 1_000,
        ..ReplayLimits::default()
    }
}

/// Publishes `count` events on `channel`, one per call, `apart` from each other on `clock`.
async fn publish_each(
    channels: &Channels,
    channel: &str,
    count: i32,
    clock: &ManualClock,
    apart: Duration,
) -> Vec<crate::event::EventId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let event = super::Publication::new(json_payload(json!(n)), Filter::everyone());
        ids.extend(channels.publish_many(channel, vec![event]).await.unwrap());
        clock.advance(apart);
    }
    ids
}

/// Channels over `store` with `replay`'s limits.
fn channels_on(
    store: Arc<dyn EventStore>,
    clock: &Arc<ManualClock>,
    replay: ReplayLimits,
) -> Channels {
    Channels::new(
        store,
        clock.clone(),
        HubLimits {
            subscriber_queue: 100_000,
            max_batch: 16,
            replay,
        },
    )
}

/// What a subscription sends before it goes live: its outcome and the replayed events' ids.
async fn replayed(
    channels: &Channels,
    channel: &str,
    after: Option<crate::event::EventId>,
    admits: Admits,
) -> (super::ResumeOutcome, Vec<u64>, bool) {
    let opened = channels.open(channel, after, admits).await.unwrap();
    let mut replay = opened.replay;
    let mut seqs = Vec::new();
    loop {
        while let Some(event) = replay.take_ready() {
            seqs.push(event.seq);
        }
        if replay.is_done() {
            break;
        }
        replay.load().await.unwrap();
    }
    (opened.outcome, seqs, replay.is_done())
}

/// A gap the hub still holds in memory is replayed from there with no store read, and is the
/// same replay the store gives: the same events, outcome and oldest retained id, whatever the
/// filter, the resume point, or the events that expired meanwhile.
#[tokio::test]
async fn a_replay_from_memory_is_the_replay_the_store_gives() {
    let (store, clock) = counting_store();
    let from_memory = channels_on(store.clone(), &clock, ReplayLimits::default());
    let from_store = channels_on(store.clone(), &clock, without_recent());
    let reads = || store.reads();
    // 200 events in batches of up to 16, 10 s apart in groups of 50: the first group expires
    // below while the rest stays.
    let mut ids = Vec::new();
    for group in 0..4 {
        let publishes = (0..50).map(|n| {
            let tags = if n % 3 == 0 {
                vec!["a".to_owned()]
            } else {
                vec!["b".to_owned()]
            };
            from_memory.publish_many(
                "kept",
                vec![super::Publication::new(
                    json_payload(json!([group, n])),
                    Filter {
                        tags: Some(tags),
                        ..Filter::everyone()
                    },
                )],
            )
        });
        for published in futures::future::join_all(publishes).await {
            ids.extend(published.unwrap());
        }
        clock.advance(Duration::from_secs(10));
    }
    let only_a: Admits = Arc::new(|filter: &Filter| {
        filter
            .tags
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|t| t == "a"))
    });
    for (label, after, admits) in [
        ("everything after the first", Some(ids[0]), everyone()),
        ("the last few", Some(ids[195]), everyone()),
        ("tags a only", Some(ids[60]), only_a.clone()),
        ("nothing missed", Some(ids[199]), everyone()),
        ("no resume", None, everyone()),
    ] {
        let expected = replayed(&from_store, "kept", after, admits.clone()).await;
        // Learns the oldest retained event once; then nothing is read.
        replayed(&from_memory, "kept", after, admits.clone()).await;
        let before = reads();
        let got = replayed(&from_memory, "kept", after, admits).await;
        assert_eq!(reads(), before, "{label}: read from memory");
        assert_eq!(got, expected, "{label}");
    }
    // The first group expires: a resume from before it is TOO_OLD, from both alike, and
    // replays what is left.
    clock.advance(Duration::from_secs(25));
    let expected = replayed(&from_store, "kept", Some(ids[10]), everyone()).await;
    assert_eq!(
        expected.0.failure,
        Some(super::ResumeFailure::TooOld),
        "{expected:?}"
    );
    assert_eq!(expected.1.first(), Some(&ids[50].seq));
    let before = reads();
    let got = replayed(&from_memory, "kept", Some(ids[10]), everyone()).await;
    assert_eq!(got, expected);
    // The oldest event the hub knew expired: its recent batches hold the next one.
    assert_eq!(reads(), before);
}

/// A gap longer than what the hub keeps is read from the store, and comes out the same.
#[tokio::test]
async fn a_gap_longer_than_the_recent_batches_is_read_from_the_store() {
    let (store, clock) = counting_store();
    // Room for a few events only.
    let small = few_recent();
    let channels = channels_on(store.clone(), &clock, small);
    let events = (0..100)
        .map(|n| super::Publication::new(json_payload(json!(n)), Filter::everyone()))
        .collect();
    let ids = channels.publish_many("long", events).await.unwrap();
    let events = (0..3)
        .map(|n| super::Publication::new(json_payload(json!(n)), Filter::everyone()))
        .collect();
    let last = channels.publish_many("long", events).await.unwrap();
    let reads = || store.reads();
    replayed(&channels, "long", Some(ids[99]), everyone()).await;
    let before = reads();
    let (outcome, seqs, _) = replayed(&channels, "long", Some(ids[99]), everyone()).await;
    assert_eq!(reads(), before, "the last 3 are in memory");
    assert_eq!(seqs, last.iter().map(|id| id.seq).collect::<Vec<_>>());
    assert!(outcome.recovered);
    let (outcome, seqs, _) = replayed(&channels, "long", Some(ids[0]), everyone()).await;
    assert!(reads() > before, "the first 100 are not");
    assert_eq!(seqs.len(), 102);
    assert_eq!(outcome.replayed, 102);
}

/// The recent batches of every hub share one budget: a hub that keeps its batches counts
/// them against it; over three quarters of it, the channels whose newest kept events are the
/// oldest give theirs up first; a hub found over the total asks for that at once; an idle hub
/// keeps its batches for a while, then goes and gives them back.
#[tokio::test]
async fn hubs_keep_recent_batches_within_one_budget() {
    async fn publish(channels: &Channels, channel: &str) {
        let events = (0..12)
            .map(|n| super::Publication::new(json_payload(json!(n)), Filter::everyone()))
            .collect();
        channels.publish_many(channel, events).await.unwrap();
    }
    let kept = |channels: &Channels| {
        (channels.recent_budget.kept).load(std::sync::atomic::Ordering::Relaxed)
    };
    let clock = Arc::new(ManualClock::new(START_MS));
    // What one publish of 12 events keeps, whatever an event's record takes.
    let probe = channels_on(
        Arc::new(MemoryStore::new(60_000)),
        &clock,
        ReplayLimits::default(),
    );
    publish(&probe, "probe").await;
    let one_run = kept(&probe);
    assert!(one_run > 12 * 8, "{one_run}");
    // Room for three runs and a half: three quarters of it is 2.6 runs.
    let limits = ReplayLimits {
        recent_bytes_per_channel: 1 << 20,
        recent_bytes: one_run * 7 / 2,
        ..ReplayLimits::default()
    };
    let channels = channels_on(Arc::new(MemoryStore::new(60_000)), &clock, limits);
    let holds = |channel: &str| {
        (channels.hubs().get(channel)).is_some_and(|hub| hub.recent_newest_ms().is_some())
    };
    for channel in ["one", "two", "three"] {
        publish(&channels, channel).await;
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(kept(&channels), 3 * one_run);
    assert!(channels.recent_exceeded().now_or_never().is_none());
    channels.sweep_idle();
    assert_eq!(kept(&channels), 2 * one_run);
    assert_eq!(
        [holds("one"), holds("two"), holds("three")],
        [false, true, true]
    );
    // Over the total: the hub keeps within it by itself (it gives up what it just kept), and
    // asks for the trim, which lets the least recent go and makes room again.
    publish(&channels, "four").await;
    publish(&channels, "five").await;
    assert_eq!(kept(&channels), 3 * one_run);
    assert!(!holds("five"));
    assert!(channels.recent_exceeded().now_or_never().is_some());
    channels.trim_recent();
    assert_eq!(kept(&channels), 2 * one_run);
    assert_eq!(
        [holds("two"), holds("three"), holds("four")],
        [false, true, true]
    );
    publish(&channels, "five").await;
    assert!(holds("five"));
    // Idle hubs stay for a while with what they keep, then go and give it back (three goes at
    // once: three runs are over three quarters again).
    let remaining = channels.sweep_idle();
    assert_eq!(remaining, 2);
    assert!(holds("four") && holds("five"));
    clock.advance(Duration::from_secs(20));
    assert_eq!(channels.sweep_idle(), remaining);
    clock.advance(Duration::from_secs(11));
    assert_eq!(channels.sweep_idle(), 0);
    assert_eq!(kept(&channels), 0);
}

/// Whether a resume's gap is held in memory is decided at the run's first event: a resume
/// from just before it is replayed from memory, one from further back from the store.
#[tokio::test]
async fn a_gap_is_replayed_from_memory_exactly_when_the_recent_batches_start_after_it() {
    let (store, clock) = counting_store();
    let small = few_recent();
    let channels = channels_on(store.clone(), &clock, small);
    let reads = || store.reads();
    let ids = publish_each(&channels, "edge", 40, &clock, Duration::ZERO).await;
    let head = ids[39].seq;
    let hub = channels.hub("edge");
    let in_memory: Vec<u64> = (0..head)
        .filter(|after| hub.recent_holding(*after, head).is_some())
        .collect();
    let first_kept = in_memory[0] + 1;
    assert!(
        first_kept > 2,
        "only the last events are kept: {in_memory:?}"
    );
    assert_eq!(in_memory, (first_kept - 1..head).collect::<Vec<_>>());
    // The oldest retained event is learnt once (two reads); then a resume from just before
    // the run reads nothing, one from the event before that reads the store.
    replayed(&channels, "edge", Some(ids[38]), everyone()).await;
    let from = |seq: u64| Some(ids[(seq - 1) as usize]);
    let before = reads();
    let (outcome, seqs, _) = replayed(&channels, "edge", from(first_kept - 1), everyone()).await;
    assert_eq!(reads(), before);
    assert_eq!(seqs, (first_kept..=head).collect::<Vec<_>>());
    assert!(outcome.recovered);
    let (outcome, seqs, _) = replayed(&channels, "edge", from(first_kept - 2), everyone()).await;
    assert!(reads() > before);
    assert_eq!(seqs, (first_kept - 1..=head).collect::<Vec<_>>());
    assert!(outcome.recovered);
}

/// Resumes that arrive together on a channel whose oldest retained event the hub does not know
/// ask the store once between them; and when that event expires, the next one is taken from
/// the recent batches, with no read.
#[tokio::test]
async fn resumes_together_ask_the_store_for_the_oldest_event_once() {
    let (store, clock) = counting_store();
    let channels = channels_on(store.clone(), &clock, ReplayLimits::default());
    let reads = || store.reads();
    let ids = publish_each(&channels, "storm", 20, &clock, Duration::from_secs(1)).await;
    let before = reads();
    let resumes = (0..50).map(|_| replayed(&channels, "storm", Some(ids[5]), everyone()));
    for (outcome, seqs, _) in futures::future::join_all(resumes).await {
        assert_eq!(seqs.len(), 14);
        assert_eq!(outcome.oldest_retained, Some(ids[0]));
    }
    assert_eq!(
        reads() - before,
        2,
        "one lookup of the oldest event (two reads)"
    );
    // The first three expire: the fourth is the oldest, known without a read.
    clock.advance(Duration::from_millis(60_000 - 20_000 + 2_500));
    let before = reads();
    let (outcome, seqs, _) = replayed(&channels, "storm", Some(ids[5]), everyone()).await;
    assert_eq!(reads(), before);
    assert_eq!(outcome.oldest_retained, Some(ids[3]));
    assert_eq!(seqs.len(), 14);
    assert!(outcome.recovered);
}

/// A hub that lost the store forgets what it kept: the next resume reads the store, and the
/// channel's oldest retained event is asked again.
#[tokio::test]
async fn a_hub_that_lost_the_store_replays_from_the_store_again() {
    let (store, clock) = counting_store();
    let channels = channels_on(store.clone(), &clock, ReplayLimits::default());
    let reads = || store.reads();
    let events = (0..10)
        .map(|n| super::Publication::new(json_payload(json!(n)), Filter::everyone()))
        .collect();
    let ids = channels.publish_many("lost", events).await.unwrap();
    let expected = replayed(&channels, "lost", Some(ids[2]), everyone()).await;
    let before = reads();
    assert_eq!(
        replayed(&channels, "lost", Some(ids[2]), everyone()).await,
        expected
    );
    assert_eq!(reads(), before, "from memory");
    channels.lose_subscribers();
    assert_eq!(channels.hub("lost").recent_newest_ms(), None);
    let before = reads();
    assert_eq!(
        replayed(&channels, "lost", Some(ids[2]), everyone()).await,
        expected
    );
    assert!(reads() > before, "from the store");
}

/// When the oldest event the hub knew expires and its recent batches start further on, the
/// store is asked which is the oldest now.
#[tokio::test]
async fn an_oldest_event_the_recent_batches_do_not_follow_is_asked_of_the_store() {
    let (store, clock) = counting_store();
    let small = few_recent();
    let channels = channels_on(store.clone(), &clock, small);
    let reads = || store.reads();
    let ids = publish_each(&channels, "far", 40, &clock, Duration::from_secs(1)).await;
    let (outcome, ..) = replayed(&channels, "far", Some(ids[38]), everyone()).await;
    assert_eq!(outcome.oldest_retained, Some(ids[0]));
    // The first two expire; the recent batches hold only the last few events.
    clock.advance(Duration::from_millis(60_000 - 40_000 + 1_500));
    let before = reads();
    let (outcome, seqs, _) = replayed(&channels, "far", Some(ids[38]), everyone()).await;
    assert_eq!(seqs, [ids[39].seq]);
    assert_eq!(outcome.oldest_retained, Some(ids[2]));
    assert!(reads() > before);
}

/// A channel only published to on this node does not read what other nodes appended when its
/// next publish finds them: nobody waits for them here; a resume still gets every one.
#[tokio::test]
async fn a_hub_with_no_subscriber_does_not_read_the_events_it_missed() {
    let (store, clock) = counting_store();
    let here = channels_on(store.clone(), &clock, ReplayLimits::default());
    let there = channels_on(store.clone(), &clock, ReplayLimits::default());
    let reads = || store.reads();
    async fn publish(channels: &Channels, n: i32) -> Vec<crate::event::EventId> {
        let event = super::Publication::new(json_payload(json!(n)), Filter::everyone());
        channels.publish_many("shared", vec![event]).await.unwrap()
    }
    let first = publish(&here, 0).await;
    for n in 1..=5 {
        publish(&there, n).await;
    }
    let before = reads();
    let last = publish(&here, 6).await;
    assert_eq!(
        reads(),
        before,
        "nothing read before the publish is acknowledged"
    );
    let (outcome, seqs, _) = replayed(&here, "shared", Some(first[0]), everyone()).await;
    assert_eq!(seqs, (first[0].seq + 1..=last[0].seq).collect::<Vec<_>>());
    assert!(outcome.recovered);
}

/// Resumes that read the clock a moment apart agree on what is retained: one that read it
/// earlier than another already judged by does not replay an event the other found expired.
#[tokio::test]
async fn resumes_together_agree_on_which_events_expired() {
    let (store, clock) = counting_store();
    let channels = channels_on(store, &clock, ReplayLimits::default());
    let ids = publish_each(&channels, "skew", 20, &clock, Duration::from_secs(1)).await;
    // The first two expired, by the later clock.
    let later = START_MS + 60_000 + 1_500;
    clock.set_ms(later);
    let (first, ..) = replayed(&channels, "skew", Some(ids[0]), everyone()).await;
    assert_eq!(first.oldest_retained, Some(ids[2]));
    // A resume whose clock read a second earlier, when only the first had expired.
    clock.set_ms(later - 1_000);
    let (outcome, seqs, _) = replayed(&channels, "skew", Some(ids[0]), everyone()).await;
    assert_eq!(
        (outcome.failure, outcome.oldest_retained),
        (first.failure, first.oldest_retained)
    );
    assert_eq!(seqs.first(), Some(&ids[2].seq), "{outcome:?}");
}
