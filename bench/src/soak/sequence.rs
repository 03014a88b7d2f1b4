//! What a soak event carries (its channel and a per-channel counter) and the check of what a
//! subscriber receives: every counter once, in order.
//!
//! Each channel has one writer that waits for every acknowledgement before it sends the next
//! event, so counter order is id order and a subscriber must see 0, 1, 2, ... with no gap, no
//! repeat and nothing out of order, across its reconnects.

use std::{collections::BTreeSet, fmt::Write as _, ops::Range};

/// Bytes of every soak payload, as in the other scenarios.
pub(crate) const PAYLOAD_BYTES: usize = crate::load::PAYLOAD_BYTES;

/// How an event was published, written into its payload (for a reader of a capture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Publish,
    PublishBatch,
    Invoke,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Publish => "publish",
            Via::PublishBatch => "batch",
            Via::Invoke => "invoke",
        }
    }
}

/// The payload of event `counter` of channel `channel`: `ch=3 seq=000000000042 via=batch;`,
/// padded to [`PAYLOAD_BYTES`].
pub(crate) fn payload(channel: usize, counter: u64, via: Via) -> String {
    let mut text = String::with_capacity(PAYLOAD_BYTES);
    let _ = write!(text, "ch={channel} seq={counter:012} via={};", via.name());
    let pad = PAYLOAD_BYTES.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// The channel and counter a payload carries.
pub(crate) fn parse(payload: &str) -> Option<(usize, u64)> {
    let rest = payload.strip_prefix("ch=")?;
    let (channel, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("seq=")?;
    let counter = rest.get(..12)?;
    Some((channel.parse().ok()?, counter.parse().ok()?))
}

/// What one counter was, next to what came before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    /// The next one.
    InOrder,
    /// Counters were skipped: these did not arrive (yet).
    Gap(Range<u64>),
    /// A counter skipped earlier arrived after later ones.
    OutOfOrder,
    /// A counter that had arrived already.
    Duplicate,
}

/// One subscriber's view of its channel's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sequence {
    /// The counter expected next: every one below it arrived, or is in `missing`.
    pub(crate) next: u64,
    /// Counters skipped over (not arrived), in order, disjoint.
    pub(crate) missing: Vec<Range<u64>>,
    /// Counters that arrived twice.
    pub(crate) duplicates: u64,
    /// Skipped counters that arrived later.
    pub(crate) out_of_order: u64,
    /// Events received, repeats included.
    pub(crate) received: u64,
}

impl Sequence {
    /// Records the arrival of `counter`.
    pub(crate) fn observe(&mut self, counter: u64) -> Observed {
        self.received += 1;
        if counter == self.next {
            self.next += 1;
            return Observed::InOrder;
        }
        if counter > self.next {
            let gap = self.next..counter;
            self.missing.push(gap.clone());
            self.next = counter + 1;
            return Observed::Gap(gap);
        }
        match self
            .missing
            .iter()
            .position(|range| range.contains(&counter))
        {
            Some(at) => {
                let range = self.missing.remove(at);
                let after = counter + 1..range.end;
                let before = range.start..counter;
                for part in [after, before] {
                    if !part.is_empty() {
                        self.missing.insert(at, part);
                    }
                }
                self.out_of_order += 1;
                Observed::OutOfOrder
            }
            None => {
                self.duplicates += 1;
                Observed::Duplicate
            }
        }
    }

    /// Acknowledged events of the channel that never arrived: the skipped counters and those
    /// from `next` up to `published` (the channel's next counter when publishing stopped),
    /// leaving out `unacknowledged` ones (a publish that failed may not have stored them).
    pub(crate) fn lost(&self, published: u64, unacknowledged: &BTreeSet<u64>) -> u64 {
        let tail = self.next.min(published)..published;
        self.missing
            .iter()
            .cloned()
            .chain(std::iter::once(tail))
            .map(|range| {
                let skipped = unacknowledged.range(range.clone()).count() as u64;
                range.end.saturating_sub(range.start) - skipped
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_channel_and_counter_and_have_the_benchmark_size() {
        for (channel, counter, via) in [
            (0, 0, Via::Publish),
            (9, 123_456, Via::PublishBatch),
            (42, 999_999_999_999, Via::Invoke),
        ] {
            let text = payload(channel, counter, via);
            assert_eq!(text.len(), PAYLOAD_BYTES, "{text}");
            assert_eq!(parse(&text), Some((channel, counter)), "{text}");
        }
        for garbage in [
            "",
            "ch=1",
            "ch=x seq=000000000001",
            "ch=1 seq=12",
            "seq=1 ch=1",
        ] {
            assert_eq!(parse(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn every_arrival_is_classified_against_what_came_before() {
        let mut sequence = Sequence::default();
        let table = [
            (0, Observed::InOrder),
            (1, Observed::InOrder),
            (1, Observed::Duplicate),
            (5, Observed::Gap(2..5)),
            (3, Observed::OutOfOrder),
            (3, Observed::Duplicate),
            (6, Observed::InOrder),
            (0, Observed::Duplicate),
        ];
        for (counter, expected) in table {
            assert_eq!(sequence.observe(counter), expected, "counter {counter}");
        }
        assert_eq!(sequence.next, 7);
        assert_eq!(sequence.missing, vec![2..3, 4..5]);
        assert_eq!(
            (
                sequence.duplicates,
                sequence.out_of_order,
                sequence.received
            ),
            (3, 1, 8)
        );
    }

    #[test]
    fn lost_counts_gaps_and_the_tail_but_not_unacknowledged_events() {
        let mut sequence = Sequence::default();
        for counter in [0, 1, 4, 5, 9] {
            sequence.observe(counter);
        }
        // Missing 2, 3, 6, 7, 8; the channel published up to 11 (10 and 11 did not arrive).
        let none = BTreeSet::new();
        assert_eq!(sequence.lost(12, &none), 7);
        assert_eq!(sequence.lost(10, &none), 5);
        let failed: BTreeSet<u64> = [3, 7, 11, 40].into();
        assert_eq!(sequence.lost(12, &failed), 4);
        let mut complete = Sequence::default();
        for counter in 0..10 {
            complete.observe(counter);
        }
        assert_eq!(complete.lost(10, &none), 0);
        assert_eq!(complete.lost(11, &none), 1);
    }
}
