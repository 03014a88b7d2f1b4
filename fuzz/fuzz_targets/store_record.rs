//! The on-disk store's records: bytes read back from a damaged file decode or are reported
//! corrupt, never a panic; what the writer encodes reads back as the same events.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use durable_iterator::{
    Filter,
    fuzz_support::{decode_record, encode_record, frame},
    store::{NewEvent, StoreError, StoredEvent},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// A record as read from a file that may be damaged.
    Read { first_seq: u64, record: &'a [u8] },
    /// The events of one append, written and read back.
    Written {
        epoch: u32,
        first_seq: u64,
        events: Vec<Event<'a>>,
    },
}

#[derive(Arbitrary, Debug)]
struct Event<'a> {
    payload: &'a [u8],
    published_at_ms: u64,
    /// `None`: the previous event's filter, shared as a publish shares it.
    filter: Option<FilterInput>,
}

#[derive(Arbitrary, Debug)]
struct FilterInput {
    tags: Option<Vec<String>>,
    targets: Option<Vec<String>>,
    exclude: Vec<String>,
}

fuzz_target!(|input: Input<'_>| match input {
    Input::Read { first_seq, record } => match decode_record(first_seq, record) {
        Ok(events) => {
            for (n, event) in events.iter().enumerate() {
                assert_eq!(Some(event.seq), first_seq.checked_add(n as u64));
            }
        }
        Err(StoreError::Corrupt(_)) => {}
        Err(other) => panic!("a damaged record is not reported corrupt: {other:?}"),
    },
    Input::Written {
        epoch,
        first_seq,
        events,
    } => {
        if events.is_empty() || first_seq.checked_add(events.len() as u64).is_none() {
            // No append is empty, and sequence numbers do not run out.
            return;
        }
        let mut filter = Arc::new(Filter::everyone());
        let new: Vec<NewEvent> = events
            .iter()
            .map(|event| {
                if let Some(published) = &event.filter {
                    filter = Arc::new(Filter {
                        tags: published.tags.clone(),
                        targets: published.targets.clone(),
                        exclude: published.exclude.clone(),
                    });
                }
                NewEvent {
                    payload: Bytes::copy_from_slice(event.payload),
                    filter: filter.clone(),
                    published_at_ms: event.published_at_ms,
                    idempotency_key: None,
                }
            })
            .collect();
        let stored = StoredEvent::batch(epoch, first_seq, &new).into_events();
        let record = encode_record(&stored);
        let read = decode_record(first_seq, &record).expect("a written record reads back");
        assert_eq!(read.len(), stored.len());
        for (read, stored) in read.iter().zip(&stored) {
            assert_eq!(read.seq, stored.seq);
            assert_eq!(read.published_at_ms, stored.published_at_ms);
            assert_eq!(read.filter, stored.filter);
            assert_eq!(frame(read), frame(stored));
        }
        // Every event is at least its 16 bytes of lengths and time: a cut inside the last one.
        let cut = decode_record(first_seq, &record[..record.len() - 1]);
        assert!(cut.is_err(), "a cut record read as fewer events");
    }
});
