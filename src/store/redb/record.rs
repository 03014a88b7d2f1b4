//! The record format: the events of one append, as one value of the `events` table.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    filter::Filter,
    store::{StoreError, StoredEvent},
    wire::Frame,
};

/// The events of one append, each as `published_at_ms` (8 bytes LE), filter length (4 bytes
/// LE), the filter as JSON (empty for everyone), frame length (4 bytes LE), the encoded frame.
pub(crate) fn encode_events(events: &[StoredEvent], out: &mut Vec<u8>) {
    out.clear();
    // Events appended together mostly have equal filters (the same one, shared, for a
    // publish's events; equal ones for concurrent publishes): serialized once for a run.
    let mut filter: Option<(&Arc<Filter>, Vec<u8>)> = None;
    for event in events {
        let json = match &filter {
            Some((shared, json)) if **shared == event.filter => json,
            _ => &filter.insert((&event.filter, event.filter.to_stored())).1,
        };
        let frame = event.frame.bytes();
        out.extend_from_slice(&event.published_at_ms.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
}

/// One event of a record, not yet decoded.
pub(crate) struct RawEvent<'a> {
    pub(super) seq: u64,
    pub(super) published_at_ms: u64,
    pub(super) filter: &'a [u8],
    pub(super) frame: &'a [u8],
}

impl RawEvent<'_> {
    pub(crate) fn decode(&self) -> Result<StoredEvent, StoreError> {
        Decoder::default().decode(self)
    }
}

/// Decodes the events of a read: a filter stored as the same bytes as the event before's
/// (a run of one publish, or of publishes with equal filters) is shared, not parsed again.
#[derive(Default)]
pub(crate) struct Decoder {
    last_filter: Option<(Vec<u8>, Arc<Filter>)>,
}

impl Decoder {
    pub(crate) fn decode(&mut self, raw: &RawEvent<'_>) -> Result<StoredEvent, StoreError> {
        let filter = match &self.last_filter {
            Some((stored, filter)) if stored.as_slice() == raw.filter => filter.clone(),
            _ => {
                let filter = Filter::from_stored(raw.filter).ok_or_else(|| malformed(raw.seq))?;
                self.last_filter
                    .insert((raw.filter.to_vec(), Arc::new(filter)))
                    .1
                    .clone()
            }
        };
        Ok(StoredEvent {
            seq: raw.seq,
            published_at_ms: raw.published_at_ms,
            filter,
            frame: Frame::from_encoded(Bytes::copy_from_slice(raw.frame)),
        })
    }
}

pub(super) fn malformed(seq: u64) -> StoreError {
    StoreError::Corrupt(format!("the record of event {seq} is malformed"))
}

/// The events of the record of the append that starts at `first_seq`.
pub(crate) fn raw_events(
    first_seq: u64,
    mut record: &[u8],
) -> impl Iterator<Item = Result<RawEvent<'_>, StoreError>> {
    let mut next_seq = Some(first_seq);
    std::iter::from_fn(move || {
        if record.is_empty() {
            return None;
        }
        let Some(seq) = next_seq else {
            // More events than sequence numbers left after the key's: the file is damaged.
            record = &[];
            return Some(Err(malformed(u64::MAX)));
        };
        let mut take = |n: usize| {
            let (head, rest) = record.split_at_checked(n)?;
            record = rest;
            Some(head)
        };
        let event = (|| {
            let published_at_ms = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let filter_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let filter = take(filter_len)?;
            let frame_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let frame = take(frame_len)?;
            Some(RawEvent {
                seq,
                published_at_ms,
                filter,
                frame,
            })
        })();
        let event = event.ok_or_else(|| {
            record = &[];
            malformed(seq)
        });
        next_seq = seq.checked_add(1);
        Some(event)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEvent, contract::event};

    #[test]
    fn records_round_trip() {
        let filter = Filter {
            tags: Some(vec!["t".into()]),
            targets: None,
            exclude: vec!["s".into()],
        };
        // A run of events sharing one filter is encoded with it each time.
        let shared = Arc::new(filter);
        let stored: Vec<StoredEvent> = [Arc::new(Filter::everyone()), shared.clone(), shared]
            .into_iter()
            .zip(9..)
            .map(|(filter, seq)| {
                let new = NewEvent {
                    filter,
                    ..event(40 + seq)
                };
                StoredEvent::new(7, seq, &new)
            })
            .collect();
        let mut record = Vec::new();
        encode_events(&stored, &mut record);
        let decoded: Vec<StoredEvent> = raw_events(9, &record)
            .map(|raw| raw.and_then(|raw| raw.decode()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded.len(), 3);
        let mut decoder = Decoder::default();
        let shared: Vec<StoredEvent> = raw_events(9, &record)
            .map(|raw| decoder.decode(&raw.unwrap()).unwrap())
            .collect();
        assert!(
            Arc::ptr_eq(&shared[1].filter, &shared[2].filter),
            "a filter stored the same for consecutive events is parsed once"
        );
        assert!(!Arc::ptr_eq(&shared[0].filter, &shared[1].filter));
        for (decoded, stored) in decoded.iter().zip(&stored) {
            assert_eq!(decoded.seq, stored.seq);
            assert_eq!(decoded.published_at_ms, stored.published_at_ms);
            assert_eq!(decoded.filter, stored.filter);
            assert_eq!(decoded.frame, stored.frame);
        }
        // A record cut inside an event reads as corrupt, never as fewer events. (One cut
        // between two events reads as the events before the cut: a record has no count.)
        for cut in [1, 8, 12, record.len() - 1] {
            let results: Vec<_> = raw_events(9, &record[..cut]).collect();
            assert!(
                results
                    .last()
                    .is_some_and(|last| matches!(last, Err(StoreError::Corrupt(_)))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_record_past_the_last_sequence_number_is_corrupt() {
        // Found by fuzzing: counting past u64::MAX panicked instead of reporting the damage.
        let stored: Vec<StoredEvent> = (1..=2)
            .map(|seq| StoredEvent::new(7, seq, &event(seq)))
            .collect();
        let mut record = Vec::new();
        encode_events(&stored, &mut record);
        let results: Vec<_> = raw_events(u64::MAX, &record).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].as_ref().is_ok_and(|raw| raw.seq == u64::MAX));
        assert!(matches!(results[1], Err(StoreError::Corrupt(_))));
    }
}
