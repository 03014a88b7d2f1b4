//! A resume's replay, read from the store in pages while it is sent, so that a resuming session
//! holds one page at a time whatever its gap, and the server a bounded number of replays.
//!
//! Opening counts the gap in a first pass (one page in memory at a time), so that
//! `Subscribed.resume.replayed` is exact before the first event goes out; the pages after the
//! first are read again as the stream sends. Both passes judge retention at the same instant,
//! so they see the same events (an event the store's upkeep deletes in between, being that old,
//! is the one exception, and is then missing from the replay).

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    event::StoredEvent,
    filter::Filter,
    store::{EventStore, StoreError},
};

/// Which stored events the resuming session receives (its session id and tags).
pub(crate) type Admits = Arc<dyn Fn(&Filter) -> bool + Send + Sync>;

/// How replays read and how many run at once.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Bytes of events a page aims at: the next page's length in events is this divided by
    /// the size of the last page's events (at least 16, at most 4,096 events).
    pub page_bytes: usize,
    /// Replays in progress at once; a session over it waits its turn (it is not refused).
    pub concurrent: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            page_bytes: crate::server::defaults::REPLAY_PAGE_BYTES,
            concurrent: crate::server::defaults::MAX_CONCURRENT_REPLAYS,
        }
    }
}

/// Events of the first page of a replay, before any size is known: small enough that even
/// events of the largest payload stay within a few MiB.
const FIRST_PAGE_EVENTS: u64 = 64;
const MIN_PAGE_EVENTS: u64 = 16;
const MAX_PAGE_EVENTS: u64 = 4_096;

/// Where a replay stands: the events read and not yet sent, and what is left to read.
pub(crate) struct Replay {
    store: Arc<dyn EventStore>,
    channel: Arc<str>,
    admits: Admits,
    now_ms: u64,
    page_bytes: usize,
    /// Admitted events read and not yet taken.
    page: VecDeque<StoredEvent>,
    /// Events up to here have been read.
    read_until: u64,
    /// The end of the replay (the head when the subscription opened).
    until: u64,
    next_page_events: u64,
    /// Held for as long as the replay runs.
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("channel", &self.channel)
            .field("read_until", &self.read_until)
            .field("until", &self.until)
            .field("page", &self.page.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of the counting pass.
pub(crate) struct Counted {
    /// The replay, its first page read.
    pub(crate) replay: Replay,
    /// Events the replay will send.
    pub(crate) events: u64,
    /// The oldest event still retained on the channel.
    pub(crate) oldest_retained: Option<u64>,
}

/// The replays in progress: a semaphore of [`ReplayLimits::concurrent`] permits.
pub(crate) fn replay_slots(limits: ReplayLimits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.concurrent.max(1)))
}

/// Counts the events of `channel` with `after < seq <= until` retained at `now_ms` that
/// `admits` lets through, and keeps the first page of them for sending.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn count(
    store: Arc<dyn EventStore>,
    channel: Arc<str>,
    after: u64,
    until: u64,
    now_ms: u64,
    admits: Admits,
    limits: ReplayLimits,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Counted, StoreError> {
    let mut replay = Replay {
        store,
        channel,
        admits,
        now_ms,
        page_bytes: limits.page_bytes.max(1),
        page: VecDeque::new(),
        read_until: after,
        until,
        next_page_events: FIRST_PAGE_EVENTS,
        _permit: permit,
    };
    // The first page is kept, and the ones after it while they fit in one page's bytes (a
    // short gap is read once); the rest is only counted, and read again when it is sent.
    let (mut page, oldest_retained) = replay.read_page(after).await?;
    let (mut events, mut kept_bytes, mut keeping) = (0, 0, true);
    loop {
        events += page.len() as u64;
        kept_bytes += page_bytes(&page.events);
        let first = replay.read_until == after;
        if keeping && (first || kept_bytes <= replay.page_bytes) {
            replay.read_until = page.end;
            replay.page.extend(page.events);
        } else {
            keeping = false;
        }
        if page.end >= until {
            break;
        }
        page = replay.read_page(page.end).await?.0;
    }
    Ok(Counted {
        replay,
        events,
        oldest_retained,
    })
}

/// The encoded size of `events`.
fn page_bytes<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> usize {
    events
        .into_iter()
        .map(|event| event.frame.bytes().len())
        .sum()
}

/// A page read: the admitted events, and the last sequence number it covers.
struct Page {
    events: VecDeque<StoredEvent>,
    end: u64,
}

impl Page {
    fn len(&self) -> usize {
        self.events.len()
    }
}

impl Replay {
    /// The next event of the page read, if any (no store read).
    pub(crate) fn take_ready(&mut self) -> Option<StoredEvent> {
        self.page.pop_front()
    }

    /// The size of the next event of the page read, if any.
    pub(crate) fn peek_ready_len(&self) -> Option<usize> {
        self.page.front().map(|event| event.frame.bytes().len())
    }

    /// Reads pages until one has an event for this session or the replay is done; call it
    /// once the page read is taken.
    pub(crate) async fn load(&mut self) -> Result<(), StoreError> {
        while self.page.is_empty() && self.read_until < self.until {
            let (page, _) = self.read_page(self.read_until).await?;
            self.read_until = page.end;
            self.page = page.events;
        }
        Ok(())
    }

    /// Whether every event has been taken.
    pub(crate) fn is_done(&self) -> bool {
        self.page.is_empty() && self.read_until >= self.until
    }

    /// Reads the page after `after`; sizes the next one from it.
    async fn read_page(&mut self, after: u64) -> Result<(Page, Option<u64>), StoreError> {
        let end = self.until.min(after + self.next_page_events);
        let history = self
            .store
            .read(&self.channel, after, end, self.now_ms)
            .await?;
        self.next_page_events = self.page_events_after(&history.events);
        let events = history
            .events
            .into_iter()
            .filter(|event| (self.admits)(&event.filter))
            .collect();
        Ok((Page { events, end }, history.oldest_retained))
    }

    /// How many events the page after `events` should span: about `page_bytes` of them.
    fn page_events_after(&self, events: &[StoredEvent]) -> u64 {
        if events.is_empty() {
            return self.next_page_events;
        }
        let average = (page_bytes(events) / events.len()).max(1);
        ((self.page_bytes / average) as u64).clamp(MIN_PAGE_EVENTS, MAX_PAGE_EVENTS)
    }
}
