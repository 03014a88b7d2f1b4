//! What a `last_event_id` turns into: the pure half of resume. The hub reads the store;
//! these functions decide what the read means, so every outcome is table-tested.

use crate::event::{Epoch, EventId};

/// Why a requested resume could not recover every event after the client's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// The server keeps no history (retention 0).
    ResumeOff,
    /// Events after the id have left the retention window.
    TooOld,
    /// The id belongs to another epoch: the store's history was lost or replaced.
    StoreReset,
    /// The id is of this epoch but no such event was ever issued on the channel.
    UnknownId,
}

/// What happened to a subscription's `last_event_id`; reported in `Subscribed`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumeOutcome {
    /// A `last_event_id` was given.
    pub requested: bool,
    /// Every event after it was still retained (and is replayed, as the filter allows).
    pub recovered: bool,
    /// Why not, when requested and not recovered.
    pub failure: Option<ResumeFailure>,
    /// Events replayed before the stream went live.
    pub replayed: u64,
    /// The oldest event still retained on the channel.
    pub oldest_retained: Option<EventId>,
}

/// The first step of a resume, before the store is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeStart {
    /// Nothing to replay; the outcome is settled except for `oldest_retained`.
    Live {
        requested: bool,
        failure: Option<ResumeFailure>,
    },
    /// Replay retained events with `after < seq <= head`.
    Replay { after: u64 },
}

/// Decides from the client's id and the channel's state whether there is anything to replay.
/// `head` is the last sequence number delivered live on the channel.
pub(crate) fn start(
    requested: Option<EventId>,
    epoch: Epoch,
    retention_ms: u64,
    head: u64,
) -> ResumeStart {
    let failure = |failure| ResumeStart::Live {
        requested: true,
        failure: Some(failure),
    };
    match requested {
        None => ResumeStart::Live {
            requested: false,
            failure: None,
        },
        Some(id) if id.epoch != epoch => failure(ResumeFailure::StoreReset),
        Some(id) if id.seq > head => failure(ResumeFailure::UnknownId),
        // Nothing was missed: recovered, whatever the retention.
        Some(id) if id.seq == head => ResumeStart::Live {
            requested: true,
            failure: None,
        },
        Some(_) if retention_ms == 0 => failure(ResumeFailure::ResumeOff),
        Some(id) => ResumeStart::Replay { after: id.seq },
    }
}

/// Whether a replay after `after` recovered everything, given the oldest event the store still
/// retains: only if nothing between `after` and the oldest retained event has expired.
pub(crate) fn replay_failure(after: u64, oldest_retained: Option<u64>) -> Option<ResumeFailure> {
    match oldest_retained {
        Some(oldest) if oldest <= after + 1 => None,
        _ => Some(ResumeFailure::TooOld),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: Epoch = 7;

    fn id(seq: u64) -> Option<EventId> {
        Some(EventId { epoch: EPOCH, seq })
    }

    #[test]
    fn start_covers_every_case() {
        use ResumeFailure::*;
        let live = |requested, failure| ResumeStart::Live { requested, failure };
        let cases = [
            (None, 1_000, 10, live(false, None)),
            (
                Some(EventId { epoch: 8, seq: 3 }),
                1_000,
                10,
                live(true, Some(StoreReset)),
            ),
            (id(11), 1_000, 10, live(true, Some(UnknownId))),
            (id(10), 1_000, 10, live(true, None)),
            (id(10), 0, 10, live(true, None)),
            (id(3), 0, 10, live(true, Some(ResumeOff))),
            (id(3), 1_000, 10, ResumeStart::Replay { after: 3 }),
            (id(0), 1_000, 10, ResumeStart::Replay { after: 0 }),
        ];
        for (requested, retention, head, expected) in cases {
            assert_eq!(
                start(requested, EPOCH, retention, head),
                expected,
                "{requested:?}"
            );
        }
    }

    #[test]
    fn replay_recovers_only_without_holes() {
        assert_eq!(replay_failure(3, Some(4)), None);
        assert_eq!(replay_failure(3, Some(1)), None);
        assert_eq!(replay_failure(3, Some(5)), Some(ResumeFailure::TooOld));
        assert_eq!(replay_failure(3, None), Some(ResumeFailure::TooOld));
    }
}
