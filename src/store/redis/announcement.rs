//! The announcement an append publishes on its channel's topic (written by the append script
//! in `scripts.rs`), read back by the nodes that follow the channel.

use std::sync::Arc;

use bytes::Bytes;

use crate::{event::NewEvent, filter::Filter};

/// One event of an announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AnnouncedEvent<'a> {
    pub(super) published_at_ms: u64,
    pub(super) filter: &'a [u8],
    pub(super) payload: &'a [u8],
}

/// An append's announcement: `<first seq> <count>\n`, then per event its published_at (ASCII
/// decimal), filter and payload, each after a 4-byte big-endian length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Announcement<'a> {
    pub(super) first_seq: u64,
    pub(super) events: Vec<AnnouncedEvent<'a>>,
}

impl Announcement<'_> {
    /// The announced events, as they were appended; `None` if a filter is malformed.
    pub(super) fn new_events(&self) -> Option<Vec<NewEvent>> {
        self.events
            .iter()
            .map(|event| {
                Some(NewEvent {
                    payload: Bytes::copy_from_slice(event.payload),
                    filter: Arc::new(Filter::from_stored(event.filter)?),
                    published_at_ms: event.published_at_ms,
                    idempotency_key: None,
                })
            })
            .collect()
    }
}

/// Reads an announcement; `None` if it is malformed.
pub(super) fn parse(message: &[u8]) -> Option<Announcement<'_>> {
    let newline = message.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&message[..newline]).ok()?;
    let (first, count) = header.split_once(' ')?;
    let first_seq: u64 = first.parse().ok()?;
    let count: usize = count.parse().ok()?;
    let mut rest = &message[newline + 1..];
    let mut field = || {
        let (len, tail) = rest.split_at_checked(4)?;
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let (value, tail) = tail.split_at_checked(len)?;
        rest = tail;
        Some(value)
    };
    let mut events = Vec::with_capacity(count.min(4_096));
    for _ in 0..count {
        let at = field()?;
        let filter = field()?;
        let payload = field()?;
        events.push(AnnouncedEvent {
            published_at_ms: std::str::from_utf8(at).ok()?.parse().ok()?,
            filter,
            payload,
        });
    }
    rest.is_empty()
        .then_some(Announcement { first_seq, events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_announcements_are_refused_not_misread() {
        let mut good = b"7 1\n".to_vec();
        for field in [&b"12"[..], b"", b"\x12\x00"] {
            good.extend_from_slice(&(field.len() as u32).to_be_bytes());
            good.extend_from_slice(field);
        }
        let parsed = parse(&good).unwrap();
        assert_eq!(parsed.first_seq, 7);
        assert_eq!(
            parsed.events,
            vec![AnnouncedEvent {
                published_at_ms: 12,
                filter: b"",
                payload: b"\x12\x00",
            }]
        );
        for cut in 0..good.len() {
            assert_eq!(parse(&good[..cut]), None, "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(parse(&longer), None, "trailing bytes");
    }
}
