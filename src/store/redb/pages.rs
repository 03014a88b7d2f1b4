//! Bounded reads: a page of a channel's history either way, and the channels with retained
//! events a page at a time. Each reads the records the page needs, not the channel's history.

use std::ops::Bound;

use ::redb::{Database, ReadableDatabase};

use super::{
    EVENTS,
    open::storage,
    record::{Decoder, raw_events},
};
use crate::store::{Direction, PageQuery, StoreError, StoredEvent, is_retained};

/// See [`crate::store::EventStore::read_page`].
pub(super) fn read_page(
    db: &Database,
    channel: &str,
    page: PageQuery,
    retention_ms: u64,
    now_ms: u64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(EVENTS).map_err(storage)?;
    let mut events = Vec::new();
    let mut decoder = Decoder::default();
    if page.limit == 0 {
        return Ok(events);
    }
    let retained = |at: u64| is_retained(at, retention_ms, now_ms);
    match page.direction {
        Direction::Forward => {
            let Some(after) = page.from.checked_add(1) else {
                return Ok(events);
            };
            // From the record that holds `from + 1`: the last one starting at or before it.
            let start = table
                .range((channel, 0)..=(channel, after))
                .map_err(storage)?
                .next_back()
                .transpose()
                .map_err(storage)?
                .map_or(after, |(key, _)| key.value().1);
            for entry in table
                .range((channel, start)..=(channel, u64::MAX))
                .map_err(storage)?
            {
                let (key, value) = entry.map_err(storage)?;
                for event in raw_events(key.value().1, value.value()) {
                    let event = event?;
                    if event.seq > page.from && retained(event.published_at_ms) {
                        events.push(decoder.decode(&event)?);
                        if events.len() == page.limit {
                            return Ok(events);
                        }
                    }
                }
            }
        }
        Direction::Backward => {
            for entry in table
                .range((channel, 0)..(channel, page.from))
                .map_err(storage)?
                .rev()
            {
                let (key, value) = entry.map_err(storage)?;
                // A record is short (one append); its events are read forward, kept backward.
                let record: Vec<_> =
                    raw_events(key.value().1, value.value()).collect::<Result<_, _>>()?;
                for event in record.iter().rev() {
                    if event.seq < page.from && retained(event.published_at_ms) {
                        events.push(decoder.decode(event)?);
                        if events.len() == page.limit {
                            return Ok(events);
                        }
                    }
                }
            }
        }
    }
    Ok(events)
}

/// See [`crate::store::EventStore::channels`]: one seek per channel, to its newest record.
pub(super) fn channels(
    db: &Database,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    retention_ms: u64,
    now_ms: u64,
) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(EVENTS).map_err(storage)?;
    let mut names = Vec::new();
    // `(name, u64::MAX)` excluded is past every record of `name`: one seek to the next channel.
    let mut from = match after {
        Some(after) if after >= prefix => Bound::Excluded((after.to_owned(), u64::MAX)),
        _ => Bound::Included((prefix.to_owned(), 0)),
    };
    while names.len() < limit {
        let start = match &from {
            Bound::Excluded((name, seq)) => Bound::Excluded((name.as_str(), *seq)),
            Bound::Included((name, seq)) => Bound::Included((name.as_str(), *seq)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let first = table
            .range::<(&str, u64)>((start, Bound::Unbounded))
            .map_err(storage)?
            .next()
            .transpose()
            .map_err(storage)?;
        let Some((key, _)) = first else { break };
        let name = key.value().0.to_owned();
        if !name.starts_with(prefix) {
            break;
        }
        // Records are by first seq: the newest is the channel's last one.
        let newest = table
            .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
            .map_err(storage)?
            .next_back()
            .transpose()
            .map_err(storage)?;
        if let Some((key, value)) = newest {
            let mut has_retained = false;
            for event in raw_events(key.value().1, value.value()) {
                has_retained |= is_retained(event?.published_at_ms, retention_ms, now_ms);
            }
            if has_retained {
                names.push(name.clone());
            }
        }
        from = Bound::Excluded((name, u64::MAX));
    }
    Ok(names)
}
