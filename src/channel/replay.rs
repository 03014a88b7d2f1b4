//! A resume's replay: from the channel's recent batches when they hold its whole gap (shared
//! buffers, no store read: [`from_recent`]), else read from the store in pages while it is sent,
//! so that a resuming session holds one page at a time whatever its gap, and the server a
//! bounded number of replays ([`count`]).
//!
//! Opening counts the gap in a first pass (one page in memory at a time), so that
//! `Subscribed.resume.replayed` is exact before the first event goes out; the pages after the
//! first are read again as the stream sends. Both passes judge retention at the same instant,
//! so they see the same events (an event the store's upkeep deletes in between, being that old,
//! is the one exception, and is then missing from the replay).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Batch;
use crate::{
    event::StoredEvent,
    filter::Filter,
    metrics::ReplaySource,
    store::{EventStore, StoreError, is_retained},
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
    /// A replay whose client reads nothing for this long gives its slot to the next in line;
    /// it waits for one again when its client reads on.
    pub stall: Duration,
    /// Bytes of a channel's latest delivered events kept in memory: a resume whose gap they
    /// hold replays them from there (the same shared buffers live subscribers were sent), with
    /// no store read and no replay slot. 0 keeps none.
    pub recent_bytes_per_channel: usize,
    /// The same, across every channel of the process.
    pub recent_bytes: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            page_bytes: crate::server::defaults::REPLAY_PAGE_BYTES,
            concurrent: crate::server::defaults::MAX_CONCURRENT_REPLAYS,
            stall: crate::server::defaults::REPLAY_STALL,
            recent_bytes_per_channel: crate::server::defaults::RECENT_BYTES_PER_CHANNEL,
            recent_bytes: crate::server::defaults::RECENT_BYTES,
        }
    }
}

/// Events of the first page of a replay when no size is known (the channel published nothing
/// since its hub opened): small enough that even events of the largest payload stay within a
/// few MiB.
const FIRST_PAGE_EVENTS: u64 = 64;
const MIN_PAGE_EVENTS: u64 = 16;
const MAX_PAGE_EVENTS: u64 = 4_096;

/// Where a replay stands: the events read and not yet sent, and what is left to read.
pub(crate) struct Replay {
    /// Where its events come from.
    source: ReplaySource,
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
    /// The replay's slot (none for a subscription that resumes nothing, or one replayed
    /// from memory).
    slot: Option<Slot>,
    /// A replay from memory: the channel's recent batches that hold its events, taken one
    /// event at a time (the next one to send first, at `cursor`); nothing is read from the
    /// store then.
    recent: VecDeque<Batch>,
    cursor: usize,
    /// The events of `recent` sent are those after this, up to `until`, retained for
    /// `retention_ms` at `now_ms`.
    recent_after: u64,
    retention_ms: u64,
}

/// A replay's hold on one of the replay slots. Without it a replay that stalls (a client that
/// stops reading mid-replay) would keep its slot for as long as its connection lives, and
/// [`ReplayLimits::concurrent`] such clients would stop every other resume.
struct Slot {
    slots: Arc<Semaphore>,
    hold: Arc<SlotHold>,
    stall: Duration,
}

/// What the replay and its stall watch share.
#[derive(Default)]
struct SlotHold {
    /// `None` once the watch took the permit back.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Counts the chunks the replay sent: the watch sees whether it moved.
    progress: AtomicU64,
}

impl SlotHold {
    fn permit(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.permit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slot {
    fn new(slots: Arc<Semaphore>, permit: OwnedSemaphorePermit, stall: Duration) -> Self {
        let slot = Self {
            slots,
            hold: Arc::default(),
            stall,
        };
        slot.hold_with(permit);
        slot
    }

    /// Holds `permit` and watches the replay's progress until it stalls or ends.
    fn hold_with(&self, permit: OwnedSemaphorePermit) {
        *self.hold.permit() = Some(permit);
        tokio::spawn(watch_for_stall(Arc::downgrade(&self.hold), self.stall));
    }

    /// Waits for a slot again if the watch took this one back.
    async fn reacquire(&self) -> Result<(), StoreError> {
        if self.hold.permit().is_some() {
            return Ok(());
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?;
        self.hold_with(permit);
        Ok(())
    }
}

/// Takes the permit back when `hold`'s progress stays the same for a whole `stall` (so after
/// `stall` to twice that without a read); ends with the replay.
async fn watch_for_stall(hold: Weak<SlotHold>, stall: Duration) {
    let mut seen = None;
    loop {
        tokio::time::sleep(stall).await;
        let Some(hold) = hold.upgrade() else {
            return;
        };
        let progress = hold.progress.load(Ordering::Relaxed);
        if seen == Some(progress) {
            if hold.permit().take().is_some() {
                tracing::debug!("a replay's client stopped reading: its slot goes to the next");
            }
            return;
        }
        seen = Some(progress);
    }
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

/// A slot of `slots` for a replay, held with `permit` (acquired by the caller before the
/// replay opens).
pub(crate) struct SlotGrant {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) permit: OwnedSemaphorePermit,
}

/// Counts the events of `channel` with `after < seq <= until` retained at `now_ms` that
/// `admits` lets through, and keeps the first page of them for sending. `event_bytes`, the
/// size of the channel's recent events if known, sizes the first page as the next ones are
/// (a short gap is then one read, not two).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn count(
    store: Arc<dyn EventStore>,
    channel: Arc<str>,
    after: u64,
    until: u64,
    now_ms: u64,
    admits: Admits,
    limits: ReplayLimits,
    grant: Option<SlotGrant>,
    event_bytes: Option<usize>,
) -> Result<Counted, StoreError> {
    let page_size = limits.page_bytes.max(1);
    let first_page_events =
        event_bytes.map_or(FIRST_PAGE_EVENTS, |bytes| page_events(page_size, bytes));
    let mut replay = Replay {
        source: ReplaySource::Store,
        store,
        channel,
        admits,
        now_ms,
        page_bytes: page_size,
        page: VecDeque::new(),
        read_until: after,
        until,
        next_page_events: first_page_events,
        slot: grant.map(|grant| Slot::new(grant.slots, grant.permit, limits.stall)),
        recent: VecDeque::new(),
        cursor: 0,
        recent_after: until,
        retention_ms: 0,
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

/// A replay of the events of `recent` (the channel's recent batches, contiguous, holding every
/// event with `after < seq <= until`) that are retained at `now_ms` and that `admits` lets
/// through, as [`count`] would read them from the store; and how many they are.
pub(crate) fn from_recent(
    store: Arc<dyn EventStore>,
    channel: Arc<str>,
    admits: Admits,
    now_ms: u64,
    recent: VecDeque<Batch>,
    after: u64,
    until: u64,
) -> (Replay, u64) {
    let retention_ms = store.retention_ms();
    let mut replay = Replay {
        source: ReplaySource::Memory,
        store,
        channel,
        admits,
        now_ms,
        page_bytes: 0,
        page: VecDeque::new(),
        read_until: until,
        until,
        next_page_events: MIN_PAGE_EVENTS,
        slot: None,
        recent,
        cursor: 0,
        recent_after: after,
        retention_ms,
    };
    let events = (replay.recent.iter())
        .flat_map(|batch| batch.iter())
        .filter(|event| replay.sends_recent(event))
        .count() as u64;
    replay.settle();
    (replay, events)
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
    /// Where the replay takes its events from.
    pub(crate) fn source(&self) -> ReplaySource {
        self.source
    }

    /// The next event of the page read, if any (no store read).
    pub(crate) fn take_ready(&mut self) -> Option<StoredEvent> {
        if let Some(event) = self.next_recent().cloned() {
            self.cursor += 1;
            self.settle();
            return Some(event);
        }
        self.page.pop_front()
    }

    /// The size of the next event of the page read, if any.
    pub(crate) fn peek_ready_len(&self) -> Option<usize> {
        self.next_recent()
            .or_else(|| self.page.front())
            .map(|event| event.frame.bytes().len())
    }

    /// The next event of a replay from memory; [`Replay::settle`] keeps it one to send.
    fn next_recent(&self) -> Option<&StoredEvent> {
        self.recent.front()?.get(self.cursor)
    }

    /// Whether a replay from memory sends `event` (as a store read and the filter would).
    fn sends_recent(&self, event: &StoredEvent) -> bool {
        self.recent_after < event.seq
            && event.seq <= self.until
            && is_retained(event.published_at_ms, self.retention_ms, self.now_ms)
            && (self.admits)(&event.filter)
    }

    /// Moves the cursor of a replay from memory to the next event it sends, letting go of
    /// each batch once passed (and of all of them past `until`).
    fn settle(&mut self) {
        while let Some(batch) = self.recent.front() {
            match batch.get(self.cursor) {
                Some(event) if event.seq > self.until => self.recent.clear(),
                Some(event) if self.sends_recent(event) => return,
                Some(_) => self.cursor += 1,
                None => {
                    self.recent.pop_front();
                    self.cursor = 0;
                }
            }
        }
    }

    /// Notes that a chunk of the replay was sent: the replay is not stalled.
    pub(crate) fn progressed(&self) {
        if let Some(slot) = &self.slot {
            slot.hold.progress.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads pages until one has an event for this session or the replay is done; call it
    /// once the page read is taken. A replay whose slot was taken back waits for one first.
    pub(crate) async fn load(&mut self) -> Result<(), StoreError> {
        if self.page.is_empty()
            && self.read_until < self.until
            && let Some(slot) = &self.slot
        {
            slot.reacquire().await?;
        }
        while self.page.is_empty() && self.read_until < self.until {
            let (page, _) = self.read_page(self.read_until).await?;
            self.read_until = page.end;
            self.page = page.events;
        }
        Ok(())
    }

    /// Whether every event has been taken.
    pub(crate) fn is_done(&self) -> bool {
        self.recent.is_empty() && self.page.is_empty() && self.read_until >= self.until
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
        page_events(self.page_bytes, page_bytes(events) / events.len())
    }
}

/// How many events of `event_bytes` each make a page of about `page_bytes`.
fn page_events(page_bytes: usize, event_bytes: usize) -> u64 {
    ((page_bytes / event_bytes.max(1)) as u64).clamp(MIN_PAGE_EVENTS, MAX_PAGE_EVENTS)
}
