//! The [`EventStore`] contract as tests, run against every backend so they all behave alike.

use std::sync::Arc;

use super::{Direction, EventStore, History, PageQuery};
use crate::{
    event::{NewEvent, StoredEvent},
    filter::Filter,
};

pub(crate) fn event(at: u64) -> NewEvent {
    NewEvent {
        payload: bytes::Bytes::from_static(b"\x12\x00"),
        filter: Arc::new(Filter::everyone()),
        published_at_ms: at,
        idempotency_key: None,
    }
}

/// An event published at `at` with the idempotency key `key`.
pub(crate) fn keyed(at: u64, key: &str) -> NewEvent {
    NewEvent {
        idempotency_key: Some(key.into()),
        ..event(at)
    }
}

fn page_seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn forward(from: u64, limit: usize) -> PageQuery {
    PageQuery {
        from,
        direction: Direction::Forward,
        limit,
    }
}

fn backward(from: u64, limit: usize) -> PageQuery {
    PageQuery {
        from,
        direction: Direction::Backward,
        limit,
    }
}

fn seqs(history: &History) -> Vec<u64> {
    history.events.iter().map(|e| e.seq).collect()
}

/// Sequence numbers count from 1 per channel, and reads return exactly the asked range.
pub(crate) async fn assigns_consecutive_seqs_and_reads_ranges(store: &dyn EventStore) {
    let first = store.append("c", &[event(0), event(0)]).await.unwrap();
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    store.append("c", &[event(1)]).await.unwrap();
    store.append("d", &[event(1)]).await.unwrap();
    assert_eq!(store.last_seq("c").await.unwrap(), 3);
    assert_eq!(store.last_seq("d").await.unwrap(), 1);
    assert_eq!(store.last_seq("e").await.unwrap(), 0);
    assert_eq!(seqs(&store.read("c", 1, 3, 5).await.unwrap()), [2, 3]);
    assert_eq!(seqs(&store.read("c", 0, 2, 5).await.unwrap()), [1, 2]);
    assert!(store.read("c", 3, 3, 5).await.unwrap().events.is_empty());
    assert!(store.read("e", 0, 9, 5).await.unwrap().events.is_empty());
    // What is read back is what was stored: the frame and the filter.
    let filter = Arc::new(Filter {
        tags: Some(vec!["t".into()]),
        ..Filter::default()
    });
    let stored = store
        .append(
            "f",
            &[NewEvent {
                filter: filter.clone(),
                ..event(3)
            }],
        )
        .await
        .unwrap();
    let read = store.read("f", 0, 1, 4).await.unwrap();
    assert_eq!(read.events[0].frame, stored[0].frame);
    assert_eq!(read.events[0].filter, filter);
    assert_eq!(read.events[0].published_at_ms, 3);
}

/// An event is returned while `now < published_at + retention`, never after, and ids go on
/// after everything expired.
pub(crate) async fn retention_is_exact(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 1_000);
    store.append("c", &[event(0)]).await.unwrap();
    store.append("c", &[event(500)]).await.unwrap();
    let at_999 = store.read("c", 0, 2, 999).await.unwrap();
    assert_eq!(
        (seqs(&at_999), at_999.oldest_retained),
        (vec![1, 2], Some(1))
    );
    let at_1000 = store.read("c", 0, 2, 1_000).await.unwrap();
    assert_eq!(
        (seqs(&at_1000), at_1000.oldest_retained),
        (vec![2], Some(2))
    );
    assert_eq!(store.expire(1_000).await.unwrap(), 1);
    assert_eq!(store.expire(1_500).await.unwrap(), 1);
    assert_eq!(store.expire(1_500).await.unwrap(), 0);
    assert_eq!(
        store.read("c", 0, 2, 0).await.unwrap().oldest_retained,
        None
    );
    assert_eq!(store.append("c", &[event(2_000)]).await.unwrap()[0].seq, 3);
    assert_eq!(store.last_seq("c").await.unwrap(), 3);
}

/// Events appended together but published at different times each keep their own window.
pub(crate) async fn retention_is_exact_within_one_append(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 1_000);
    store
        .append("c", &[event(0), event(500), event(900)])
        .await
        .unwrap();
    let at_1000 = store.read("c", 0, 3, 1_000).await.unwrap();
    assert_eq!(
        (seqs(&at_1000), at_1000.oldest_retained),
        (vec![2, 3], Some(2))
    );
    store.expire(1_000).await.unwrap();
    let at_1500 = store.read("c", 1, 3, 1_500).await.unwrap();
    assert_eq!(
        (seqs(&at_1500), at_1500.oldest_retained),
        (vec![3], Some(3))
    );
    store.expire(1_900).await.unwrap();
    let at_1900 = store.read("c", 0, 3, 1_900).await.unwrap();
    assert_eq!((seqs(&at_1900), at_1900.oldest_retained), (vec![], None));
}

/// Retention 0 keeps no event but still counts ids.
pub(crate) async fn retention_zero_keeps_nothing_but_counts(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 0);
    store.append("c", &[event(0), event(0)]).await.unwrap();
    assert_eq!(store.last_seq("c").await.unwrap(), 2);
    let history = store.read("c", 0, 2, 0).await.unwrap();
    assert!(history.events.is_empty());
    assert_eq!(history.oldest_retained, None);
}

/// Appends racing on many channels each get their own consecutive ids.
pub(crate) async fn concurrent_appends_keep_every_channel_consecutive(store: Arc<dyn EventStore>) {
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let channel = format!("c{}", n % 4);
                let mut seqs = Vec::new();
                for _ in 0..20 {
                    let stored = store.append(&channel, &[event(1), event(1)]).await.unwrap();
                    seqs.extend(stored.iter().map(|e| e.seq));
                }
                (channel, seqs)
            })
        })
        .collect();
    let mut per_channel: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for task in tasks {
        let (channel, seqs) = task.await.unwrap();
        per_channel.entry(channel).or_default().extend(seqs);
    }
    for (channel, mut seqs) in per_channel {
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=320).collect::<Vec<_>>(), "{channel}");
        assert_eq!(store.last_seq(&channel).await.unwrap(), 320);
        assert_eq!(
            store.read(&channel, 0, 320, 2).await.unwrap().events.len(),
            320
        );
    }
}

/// Pages read at most `limit` retained events on either side of their position, across the
/// events of one append and skipping expired ones.
pub(crate) async fn pages_read_either_way_within_retention(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 1_000);
    store
        .append("c", &[event(0), event(0), event(0)])
        .await
        .unwrap();
    store.append("c", &[event(500)]).await.unwrap();
    store.append("c", &[event(500)]).await.unwrap();
    let page = |query| async move { page_seqs(&store.read_page("c", query, 10).await.unwrap()) };
    assert_eq!(page(forward(0, 2)).await, [1, 2]);
    assert_eq!(page(forward(1, 1)).await, [2], "from inside an append");
    assert_eq!(page(forward(2, 10)).await, [3, 4, 5]);
    assert_eq!(page(forward(5, 10)).await, Vec::<u64>::new());
    assert_eq!(page(backward(u64::MAX, 2)).await, [5, 4]);
    assert_eq!(page(backward(3, 1)).await, [2], "from inside an append");
    assert_eq!(page(backward(4, 10)).await, [3, 2, 1]);
    assert_eq!(page(backward(1, 10)).await, Vec::<u64>::new());
    // What is read is what was stored.
    let read = store.read_page("c", forward(3, 1), 10).await.unwrap();
    let stored = store.read("c", 3, 4, 10).await.unwrap();
    assert_eq!(read[0].frame, stored.events[0].frame);
    assert_eq!(read[0].published_at_ms, 500);
    // At 1,000 the first append has expired, purged or not.
    for purge in [false, true] {
        if purge {
            store.expire(1_000).await.unwrap();
        }
        let at_1000 =
            |query| async move { page_seqs(&store.read_page("c", query, 1_000).await.unwrap()) };
        assert_eq!(at_1000(forward(0, 10)).await, [4, 5], "purged: {purge}");
        assert_eq!(
            at_1000(backward(u64::MAX, 10)).await,
            [5, 4],
            "purged: {purge}"
        );
    }
    assert!(
        store
            .read_page("unknown", forward(0, 10), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Channels with retained events are listed in name order, by prefix, a page at a time.
pub(crate) async fn channels_are_listed_in_pages(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 1_000);
    for channel in ["a:2", "b:1", "a:1", "ab"] {
        store.append(channel, &[event(0)]).await.unwrap();
    }
    store.append("a:3", &[event(900)]).await.unwrap();
    let list = |prefix: &'static str, after: Option<&'static str>, limit, now| async move {
        store.channels(prefix, after, limit, now).await.unwrap()
    };
    assert_eq!(
        list("", None, 10, 10).await,
        ["a:1", "a:2", "a:3", "ab", "b:1"]
    );
    assert_eq!(list("a:", None, 2, 10).await, ["a:1", "a:2"]);
    assert_eq!(list("a:", Some("a:2"), 2, 10).await, ["a:3"]);
    assert_eq!(list("a:", Some("a:3"), 2, 10).await, Vec::<String>::new());
    assert_eq!(
        list("b", Some("a:9"), 2, 10).await,
        ["b:1"],
        "after sorts before the prefix"
    );
    assert_eq!(
        list("", None, 10, 1_000).await,
        ["a:3"],
        "expired channels are left out"
    );
    store.expire(1_000).await.unwrap();
    assert_eq!(list("", None, 10, 1_000).await, ["a:3"]);
}

/// An event whose key a retained event of its channel already carried is not stored and
/// answers that event's sequence number; the key is the channel's, and lapses with its event.
pub(crate) async fn a_key_stores_its_event_once_while_retained(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 1_000);
    let first = store.append("c", &[keyed(0, "k")]).await.unwrap();
    assert_eq!(first.answers(), [1]);
    let again = store.append("c", &[keyed(10, "k")]).await.unwrap();
    assert_eq!(
        (again.len(), again.answers()),
        (0, vec![1]),
        "nothing stored"
    );
    assert_eq!(store.last_seq("c").await.unwrap(), 1);
    let mixed = store
        .append(
            "c",
            &[event(10), keyed(10, "k"), keyed(10, "j"), keyed(10, "j")],
        )
        .await
        .unwrap();
    assert_eq!(mixed.answers(), [2, 1, 3, 3]);
    assert_eq!(
        page_seqs(&mixed),
        [2, 3],
        "the batch holds the stored events only"
    );
    assert_eq!(
        store
            .append("d", &[keyed(10, "k")])
            .await
            .unwrap()
            .answers(),
        [1],
        "keys are per channel"
    );
    assert_eq!(seqs(&store.read("c", 0, 9, 20).await.unwrap()), [1, 2, 3]);
    // The event of "k" (published at 0) leaves the window at 1,000: the key goes with it.
    assert_eq!(
        store
            .append("c", &[keyed(999, "k")])
            .await
            .unwrap()
            .answers(),
        [1]
    );
    assert_eq!(
        store
            .append("c", &[keyed(1_000, "k")])
            .await
            .unwrap()
            .answers(),
        [4]
    );
    // Purged keys are gone too, and a purge keeps the retained ones.
    store.expire(1_010).await.unwrap();
    assert_eq!(
        store
            .append("c", &[keyed(1_010, "k")])
            .await
            .unwrap()
            .answers(),
        [4]
    );
    assert_eq!(
        store
            .append("c", &[keyed(1_010, "j")])
            .await
            .unwrap()
            .answers(),
        [5]
    );
    assert_eq!(store.last_seq("c").await.unwrap(), 5);
}

/// With retention 0 no key is remembered: every event is stored.
pub(crate) async fn retention_zero_remembers_no_key(store: &dyn EventStore) {
    assert_eq!(store.retention_ms(), 0);
    let answers = store
        .append("c", &[keyed(0, "k"), keyed(0, "k")])
        .await
        .unwrap()
        .answers();
    assert_eq!(answers, [1, 2]);
}

/// Appends racing with one key store one event, and all answer its sequence number.
pub(crate) async fn racing_appends_with_one_key_store_one_event(store: Arc<dyn EventStore>) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(
                async move { store.append("c", &[keyed(1, "k")]).await.unwrap().answers() },
            )
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), [1]);
    }
    assert_eq!(store.last_seq("c").await.unwrap(), 1);
}
