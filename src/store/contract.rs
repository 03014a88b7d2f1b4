//! The [`EventStore`] contract as tests, run against every backend so they all behave alike.

use std::sync::Arc;

use super::{EventStore, History};
use crate::{event::NewEvent, filter::Filter};

pub(crate) fn event(at: u64) -> NewEvent {
    NewEvent {
        payload: bytes::Bytes::from_static(b"\x12\x00"),
        filter: Arc::new(Filter::everyone()),
        published_at_ms: at,
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
