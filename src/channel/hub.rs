//! One channel in this process: the publish pipeline and the live subscribers.
//!
//! Publishes are queued; one flush task at a time takes everything queued, appends it to the
//! store in one call (so concurrent publishers share a commit), then hands the stored batch to
//! every subscriber's queue and acknowledges the publishers. The channel's `head` (last
//! sequence delivered live) moves under the same lock as the subscriber list, so a subscriber
//! that registers sees every event after `head` live and finds the ones up to `head` in the
//! store: replay and live meet with no gap and no duplicate.
//!
//! On a store that several nodes share, the hub also follows the channel's announcements while
//! it has subscribers (see [`EventStore::follow`]): appends of other nodes reach its
//! subscribers the same way. Batches are delivered in sequence order, one at a time: one seen
//! already (this node's own append, announced too) is dropped, and one that leaves a gap after
//! `head` (an announcement missed while the broker reconnected) has the gap read from the
//! store first.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Waker,
    time::Instant,
};

use futures::task::AtomicWaker;
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::{
    clock::SharedClock,
    event::{NewEvent, StoredBatch, StoredEvent},
    metrics::{self, Stage},
    store::{Announced, EventStore, StoreError},
};

/// Events handed to subscribers together, shared by all of them.
pub(crate) type Batch = Arc<StoredBatch>;

/// How a channel treats its subscribers.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Events a subscriber may have unread before it counts as a slow consumer (it may hold
    /// up to `subscriber_queue - 1` and a batch: a batch is never split).
    pub subscriber_queue: usize,
    /// Events appended to the store in one call at most, from as many publishes as fit (a
    /// publish of more is appended alone: its events are never split).
    pub max_batch: usize,
    /// How resumes read their gap from the store.
    pub replay: super::ReplayLimits,
}

/// Why a publish did not go through. `Retired`: the hub was retired (no subscribers, nothing
/// queued) and removed from the registry; the caller takes the channel's new hub and retries
/// with the events it gets back.
pub(crate) enum PublishError {
    Retired(Vec<NewEvent>),
    Store(StoreError),
}

/// One channel's publish pipeline and live subscribers.
pub(crate) struct Hub {
    name: Arc<str>,
    store: Arc<dyn EventStore>,
    clock: SharedClock,
    limits: HubLimits,
    state: Mutex<State>,
    /// The store's following of this channel, started by the first subscriber: `None` inside
    /// for a store no other node appends to. Dropped with the hub.
    following: OnceCell<Option<Box<dyn Send + Sync>>>,
    /// Held while a batch is delivered (and a gap before it read): batches go out one at a
    /// time, in sequence order.
    delivering: tokio::sync::Mutex<()>,
    /// The average size of the events of the last batch delivered (0: none yet), which sizes
    /// the first page a resume reads.
    recent_event_bytes: AtomicUsize,
    /// Bytes of recent batches kept by every hub of the process, this one's included.
    recent_budget: Arc<RecentBudget>,
    /// Held while the store is asked for the oldest retained event: resumes that arrive
    /// together (a storm) ask it once, and the rest find the answer kept.
    oldest_lookup: tokio::sync::Mutex<()>,
}

/// How many bytes of recent batches the hubs of a process keep, at most and now.
#[derive(Debug, Default)]
pub(crate) struct RecentBudget {
    pub(super) per_channel: usize,
    pub(super) total: usize,
    pub(super) kept: AtomicUsize,
    /// Told when a hub found the total exceeded: the channels whose newest kept events are the
    /// oldest are then trimmed at once ([`super::Channels::trim_recent`]), not at the next sweep.
    pub(super) exceeded: tokio::sync::Notify,
}

impl RecentBudget {
    pub(crate) fn new(per_channel: usize, total: usize) -> Self {
        Self {
            per_channel,
            total,
            kept: AtomicUsize::new(0),
            exceeded: tokio::sync::Notify::new(),
        }
    }
}

/// The channel's latest delivered batches, consecutive in sequence, newest last: a resume whose
/// gap they hold is replayed from them (see [`super::replay::from_recent`]). Bounded by the
/// [`RecentBudget`]: a channel over its share lets its oldest batches go; a process over its
/// total, the channels whose newest kept events are the oldest give theirs up first
/// ([`super::Channels::trim_recent`], with each hub trimming its own run until then so that the
/// total is never exceeded).
#[derive(Default)]
struct Recent {
    batches: VecDeque<(Batch, usize)>,
    bytes: usize,
}

impl Recent {
    fn keep(&mut self, batch: Batch, bytes: usize, budget: &RecentBudget) {
        let (Some(first), Some(last)) = (batch.first(), self.batches.back()) else {
            // An empty batch holds nothing; the first batch starts the run.
            if !batch.is_empty() {
                self.push(batch, bytes, budget);
                self.trim(budget);
            }
            return;
        };
        // Only a consecutive run is kept: after a gap or an overlap (a resync), it starts anew.
        if last.0.last().is_none_or(|last| first.seq != last.seq + 1) {
            self.clear(budget);
        }
        self.push(batch, bytes, budget);
        self.trim(budget);
    }

    fn push(&mut self, batch: Batch, bytes: usize, budget: &RecentBudget) {
        self.batches.push_back((batch, bytes));
        self.bytes += bytes;
        budget.kept.fetch_add(bytes, Ordering::Relaxed);
    }

    fn trim(&mut self, budget: &RecentBudget) {
        if budget.kept.load(Ordering::Relaxed) > budget.total {
            budget.exceeded.notify_one();
        }
        // Until the least recent channels are trimmed, this one keeps within the total itself.
        while self.bytes > budget.per_channel || budget.kept.load(Ordering::Relaxed) > budget.total
        {
            let Some((_, bytes)) = self.batches.pop_front() else {
                return;
            };
            self.bytes -= bytes;
            budget.kept.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn clear(&mut self, budget: &RecentBudget) {
        budget.kept.fetch_sub(self.bytes, Ordering::Relaxed);
        self.batches.clear();
        self.bytes = 0;
    }

    /// When the newest kept event was published, if any is kept.
    fn newest_published_ms(&self) -> Option<u64> {
        Some(self.batches.back()?.0.last()?.published_at_ms)
    }

    /// The first event after `seq` retained at `now_ms`, if the run holds every event after
    /// `seq` and one of them is retained.
    fn first_retained_after(
        &self,
        seq: u64,
        retention_ms: u64,
        now_ms: u64,
    ) -> Option<&StoredEvent> {
        if self.batches.front()?.0.first()?.seq > seq + 1 {
            return None;
        }
        (self.batches.iter())
            .flat_map(|(batch, _)| batch.iter())
            .find(|event| {
                event.seq > seq
                    && crate::store::is_retained(event.published_at_ms, retention_ms, now_ms)
            })
    }

    /// The batches that hold every event with `after < seq <= until`, if these do.
    fn holding(&self, after: u64, until: u64) -> Option<VecDeque<Batch>> {
        let first = self.batches.front()?.0.first()?.seq;
        let last = self.batches.back()?.0.last()?.seq;
        if first > after + 1 || last < until {
            return None;
        }
        Some(
            (self.batches.iter())
                .filter(|(batch, _)| {
                    batch.first().is_some_and(|event| event.seq <= until)
                        && batch.last().is_some_and(|event| event.seq > after)
                })
                .map(|(batch, _)| batch.clone())
                .collect(),
        )
    }
}

/// Memory a kept event holds beside its frame: its record in the batch and its place in the
/// batch's layout.
const KEPT_BYTES_PER_EVENT: usize =
    std::mem::size_of::<StoredEvent>() + std::mem::size_of::<usize>();

/// What the hub knows of the channel's oldest retained event, so that a subscription that
/// reads nothing from the store can still say which it is.
#[derive(Debug, Clone, Copy, Default)]
enum Oldest {
    #[default]
    Unknown,
    /// The channel retains no event: true until the hub delivers one.
    None,
    /// This event, for as long as it is retained (the ones before it expired already).
    Event { seq: u64, published_at_ms: u64 },
}

#[derive(Default)]
struct State {
    /// The last sequence number delivered live; `None` until first known.
    head: Option<u64>,
    subscribers: HashMap<u64, Sink>,
    next_subscriber: u64,
    /// Publishes waiting for the flush, each with its events (kept together: one ack each).
    queued: VecDeque<QueuedPublish>,
    flushing: bool,
    retired: bool,
    recent: Recent,
    oldest: Oldest,
    /// Batches delivered so far: the store's answer that the channel retains nothing is kept
    /// only if none was delivered while it was asked.
    delivered: u64,
    /// Times the hub lost its subscribers to the store being out of reach: an answer of the
    /// store asked for before is not kept.
    lost: u64,
    /// Lookups of the oldest retained event begun: a resume that waited for another's lookup
    /// and still finds nothing known (it failed) does not ask again.
    lookups: u64,
    /// Since when the hub has had no subscribers, as the sweep saw it.
    idle_since_ms: Option<u64>,
    /// The latest time a resume from memory judged retention at: what it learnt of the
    /// oldest event holds from then on, not before.
    judged_at_ms: u64,
}

impl State {
    /// The channel's oldest retained event at `now_ms` as far as the hub knows it: when the
    /// one it knew expired, the next retained one its recent batches hold.
    fn known_oldest(&mut self, retention_ms: u64, now_ms: u64) -> Option<Option<u64>> {
        match self.oldest {
            Oldest::Unknown => None,
            Oldest::None => Some(None),
            Oldest::Event {
                seq,
                published_at_ms,
            } => {
                if crate::store::is_retained(published_at_ms, retention_ms, now_ms) {
                    return Some(Some(seq));
                }
                // Every event up to `seq` has expired too (retention follows sequence order).
                let next = (self.recent).first_retained_after(seq, retention_ms, now_ms)?;
                self.oldest = Oldest::Event {
                    seq: next.seq,
                    published_at_ms: next.published_at_ms,
                };
                Some(Some(next.seq))
            }
        }
    }
}

struct QueuedPublish {
    events: Vec<NewEvent>,
    /// When the publish call began, if publish stages are timed.
    received: Option<Instant>,
    ack: oneshot::Sender<Result<Vec<u64>, StoreError>>,
}

/// The hub's end of a subscriber's queue; dropping it closes the queue.
struct Sink {
    shared: Arc<QueueShared>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }
}

/// A subscriber's queue, shared by the hub and the subscriber. Idle, it holds no buffer (a
/// channel's would be allocated up front for every session).
#[derive(Debug, Default)]
struct QueueShared {
    /// Batches handed over and not yet taken.
    batches: Mutex<VecDeque<Batch>>,
    /// Wakes the subscriber when a batch arrives or the queue closes: registering and waking
    /// are a few atomic operations, once per event for a subscriber that keeps up at low rates.
    waker: AtomicWaker,
    /// The hub let go of this subscriber; what is queued can still be taken.
    closed: AtomicBool,
    /// Events sent and not yet taken by the subscriber.
    queued: AtomicUsize,
    /// The hub dropped this subscriber because its queue overflowed.
    overflowed: AtomicBool,
    /// The hub dropped this subscriber because the store it follows is out of reach.
    store_lost: AtomicBool,
}

impl QueueShared {
    fn batches(&self) -> MutexGuard<'_, VecDeque<Batch>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hub {
    pub(crate) fn new(
        name: Arc<str>,
        store: Arc<dyn EventStore>,
        clock: SharedClock,
        limits: HubLimits,
        recent_budget: Arc<RecentBudget>,
    ) -> Self {
        Self {
            name,
            store,
            clock,
            limits,
            state: Mutex::default(),
            following: OnceCell::new(),
            delivering: tokio::sync::Mutex::new(()),
            recent_event_bytes: AtomicUsize::new(0),
            recent_budget,
            oldest_lookup: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything that can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `events`, contiguous and in order, and waits until all are stored; returns their
    /// sequence numbers. `Retired` gives the events back, for the channel's new hub.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        events: Vec<NewEvent>,
        received: Option<Instant>,
    ) -> Result<Vec<u64>, PublishError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (ack, acked) = oneshot::channel();
        {
            let mut state = self.state();
            if state.retired {
                return Err(PublishError::Retired(events));
            }
            state.queued.push_back(QueuedPublish {
                events,
                received,
                ack,
            });
            if !state.flushing {
                state.flushing = true;
                // A task of its own, so a publisher that goes away cannot stall the others.
                tokio::spawn(self.clone().flush());
            }
        }
        match acked.await {
            Ok(result) => result.map_err(PublishError::Store),
            Err(_) => Err(PublishError::Store(StoreError::Unavailable(
                "the publish pipeline stopped".into(),
            ))),
        }
    }

    async fn flush(self: Arc<Self>) {
        loop {
            // Whole publishes, in order, up to `max_batch` events (one larger publish alone).
            let mut events: Vec<NewEvent> = Vec::new();
            let mut acks = Vec::new();
            {
                let mut state = self.state();
                while let Some(next) = state.queued.front() {
                    let fits = events.len() + next.events.len() <= self.limits.max_batch;
                    if !events.is_empty() && !fits {
                        break;
                    }
                    let Some(publish) = state.queued.pop_front() else {
                        break;
                    };
                    acks.push((publish.events.len(), publish.received, publish.ack));
                    if events.is_empty() {
                        events = publish.events;
                    } else {
                        events.extend(publish.events);
                    }
                }
                if events.is_empty() {
                    state.flushing = false;
                    return;
                }
            }
            let now_ms = self.clock.now_ms();
            for event in &mut events {
                event.published_at_ms = now_ms; // in store order
            }
            match self.store.append(&self.name, &events).await {
                Ok(stored) => {
                    let committed = metrics::stage_clock();
                    if committed.is_some() {
                        for received in acks.iter().filter_map(|(_, received, _)| *received) {
                            metrics::stage_took(Stage::ReceivedToCommitted, received);
                        }
                    }
                    // Duplicates (by idempotency key) are answered the first event's seq and
                    // are not in the batch: subscribers received them the first time.
                    let mut seqs = stored.answers().into_iter();
                    metrics::published(stored.len());
                    self.deliver(Arc::new(stored.committed_at(committed))).await;
                    if let Some(committed) = committed {
                        metrics::stage_took(Stage::CommittedToQueued, committed);
                    }
                    for (count, _, ack) in acks {
                        let _ = ack.send(Ok(seqs.by_ref().take(count).collect()));
                    }
                }
                Err(error) => {
                    tracing::error!(channel = %self.name, %error, "append failed");
                    for (_, _, ack) in acks {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Hands `batch` to the subscribers in sequence order: dropped if it was delivered
    /// already, after the events of a gap before it (read from the store) if there is one.
    async fn deliver(&self, batch: Batch) {
        let _turn = self.delivering.lock().await;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        let (first, last) = (first.seq, last.seq);
        let head = self.state().head;
        match head {
            Some(head) if last <= head => return,
            Some(head) if first > head + 1 && !self.skip_unwatched(first - 1) => {
                self.fill_gap(head, first - 1).await
            }
            _ => {}
        }
        self.fan_out(batch);
    }

    /// With no subscriber, nobody waits for the events up to `until` that the hub missed (a
    /// channel only published to, which follows nobody's announcements): the head moves past
    /// them, as a subscriber's first follow would move it, and nothing is read.
    fn skip_unwatched(&self, until: u64) -> bool {
        let mut state = self.state();
        if !state.subscribers.is_empty() {
            return false;
        }
        state.head = Some(state.head.map_or(until, |head| head.max(until)));
        true
    }

    /// Delivers what the store holds after `head` up to `until`, when announcements were
    /// missed: from a gap before a batch, or after a resync.
    async fn fill_gap(&self, head: u64, until: u64) {
        match self
            .store
            .read(&self.name, head, until, self.clock.now_ms())
            .await
        {
            Ok(history) if !history.events.is_empty() => {
                self.fan_out(Arc::new(StoredBatch::from_events(history.events)));
            }
            Ok(_) => {}
            Err(error) => {
                // The subscribers' queues are closed: each stream ends, and its client resumes
                // from the store, which has what could not be read now.
                tracing::warn!(channel = %self.name, %error, "reading missed announcements failed");
                self.lose_subscribers();
            }
        }
    }

    /// After a resync: delivers whatever the store has beyond `head`.
    async fn resync(&self) {
        let _turn = self.delivering.lock().await;
        let Some(head) = self.state().head else {
            return;
        };
        match self.store.last_seq(&self.name).await {
            Ok(last) if last > head && !self.skip_unwatched(last) => {
                self.fill_gap(head, last).await
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(channel = %self.name, %error, "resync failed");
                self.lose_subscribers();
            }
        }
    }

    /// Follows the channel's announcements if the store is shared, once per hub, before its
    /// first subscriber registers.
    async fn follow(self: &Arc<Self>) -> Result<(), StoreError> {
        self.following
            .get_or_try_init(|| async {
                let Some(follower) = self.store.follow(&self.name).await? else {
                    return Ok(None);
                };
                // Until now the hub knew only this node's appends (it published with no
                // subscribers): its head moves to the store's. Nobody subscribed yet, so
                // nobody waits for what it skips; appends from here on are announced.
                let last = self.store.last_seq(&self.name).await?;
                let mut state = self.state();
                if state.head.is_some_and(|head| head < last) {
                    state.head = Some(last);
                }
                drop(state);
                tokio::spawn(deliver_announcements(
                    Arc::downgrade(self),
                    follower.updates,
                ));
                Ok::<_, StoreError>(Some(follower.guard))
            })
            .await?;
        Ok(())
    }

    /// The average size of the channel's recent events, if it delivered any.
    pub(crate) fn recent_event_bytes(&self) -> Option<usize> {
        Some(self.recent_event_bytes.load(Ordering::Relaxed)).filter(|bytes| *bytes > 0)
    }

    fn fan_out(&self, batch: Batch) {
        let Some(last) = batch.last() else { return };
        let bytes: usize = batch.iter().map(|event| event.frame.bytes().len()).sum();
        self.recent_event_bytes
            .store((bytes / batch.len()).max(1), Ordering::Relaxed);
        // What keeping the batch holds: its frames (one buffer) and an event record for each
        // (the compressed layouts some streams make are not counted: at most as large again).
        let kept_bytes = bytes + batch.len() * KEPT_BYTES_PER_EVENT;
        let keeps = self.store.retention_ms() > 0;
        let limit = self.limits.subscriber_queue;
        let mut state = self.state();
        // Never backwards: a batch that overlaps what was delivered only adds its newer events
        // (subscribers skip the rest by sequence number).
        state.head = Some(state.head.map_or(last.seq, |head| head.max(last.seq)));
        state.delivered += 1;
        if let (Oldest::None, Some(first)) = (state.oldest, batch.first()) {
            state.oldest = Oldest::Event {
                seq: first.seq,
                published_at_ms: first.published_at_ms,
            };
        }
        if keeps {
            state
                .recent
                .keep(batch.clone(), kept_bytes, &self.recent_budget);
        }
        state.subscribers.retain(|_, sink| {
            let queued = sink.shared.queued.fetch_add(batch.len(), Ordering::AcqRel);
            // Slow means `limit` events already unread, not a batch (of concurrent publishes,
            // up to `max_batch`) larger than the queue: that would drop subscribers that keep up.
            if queued >= limit {
                // Dropping the sender ends the subscriber's stream once it has read what is
                // queued; it resumes from the store.
                sink.shared.overflowed.store(true, Ordering::Release);
                return false;
            }
            sink.shared.batches().push_back(batch.clone());
            sink.shared.waker.wake();
            true
        });
    }

    /// Registers a live subscriber. Returns its queue and the channel's `head`: every event
    /// after `head` arrives on the queue, every event up to it is in the store.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
    ) -> Result<(SubscriberQueue, u64), SubscribeError> {
        // Following starts before the head is read: an append in between is announced too.
        self.follow().await.map_err(SubscribeError::Store)?;
        let known_head = self.state().head;
        let store_head = match known_head {
            Some(head) => head,
            None => self
                .store
                .last_seq(&self.name)
                .await
                .map_err(SubscribeError::Store)?,
        };
        let mut state = self.state();
        if state.retired {
            return Err(SubscribeError::Retired);
        }
        // A flush may have moved `head` while the store was asked: the newer value wins, and
        // events the store already counted but that arrive live are dropped by sequence.
        let head = *state.head.get_or_insert(store_head);
        let key = state.next_subscriber;
        state.next_subscriber += 1;
        let shared = Arc::new(QueueShared::default());
        state.subscribers.insert(
            key,
            Sink {
                shared: shared.clone(),
            },
        );
        drop(state);
        Ok((
            SubscriberQueue {
                hub: self.clone(),
                key,
                shared,
            },
            head,
        ))
    }

    /// The recent batches that hold every event with `after < seq <= until`, if they do.
    pub(crate) fn recent_holding(&self, after: u64, until: u64) -> Option<VecDeque<Batch>> {
        self.state().recent.holding(after, until)
    }

    /// The sequence number of the channel's oldest retained event at `now_ms`, if any: what
    /// the hub knows (or its recent batches tell), or else what the store says (two reads, by
    /// one resume at a time).
    pub(crate) async fn oldest_retained(&self, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let retention_ms = self.store.retention_ms();
        if let Some(known) = self.state().known_oldest(retention_ms, now_ms) {
            return Ok(known);
        }
        let begun = self.state().lookups;
        let _lookup = self.oldest_lookup.lock().await;
        let (delivered, lost) = {
            let mut state = self.state();
            if let Some(known) = state.known_oldest(retention_ms, now_ms) {
                return Ok(known);
            }
            if state.lookups != begun {
                // The lookup this one waited for failed: one store that does not answer is
                // not asked again by every resume in line.
                return Err(StoreError::Unavailable(
                    "the store did not say which event is the oldest".into(),
                ));
            }
            state.lookups += 1;
            (state.delivered, state.lost)
        };
        let Some(seq) = self
            .store
            .read(&self.name, 0, 0, now_ms)
            .await?
            .oldest_retained
        else {
            let mut state = self.state();
            if (state.delivered, state.lost) == (delivered, lost) {
                state.oldest = Oldest::None;
            }
            return Ok(None);
        };
        let read = self.store.read(&self.name, seq - 1, seq, now_ms).await?;
        if let Some(event) = read.events.first().filter(|event| event.seq == seq) {
            let mut state = self.state();
            // Events delivered meanwhile are newer: the answer holds, unless the store was
            // lost meanwhile (what it has when back may differ).
            if state.lost == lost {
                state.oldest = Oldest::Event {
                    seq,
                    published_at_ms: event.published_at_ms,
                };
            }
        }
        Ok(Some(seq))
    }

    /// `now_ms`, or the latest time a resume from memory on this channel took if later (a
    /// clock read a moment earlier, by a resume that was slower to get here): resumes that run
    /// together agree on which events are retained.
    pub(crate) fn now_after_others(&self, now_ms: u64) -> u64 {
        let mut state = self.state();
        state.judged_at_ms = state.judged_at_ms.max(now_ms);
        state.judged_at_ms
    }

    /// When the newest event of the recent batches was published, if the hub keeps any.
    pub(crate) fn recent_newest_ms(&self) -> Option<u64> {
        self.state().recent.newest_published_ms()
    }

    /// Lets go of the recent batches (the process keeps too many).
    pub(crate) fn drop_recent(&self) {
        self.state().recent.clear(&self.recent_budget);
    }

    /// Marks the hub retired if it has no subscribers and nothing in flight, unless it keeps
    /// recent batches still retained at `now_ms` and lost its last subscriber less than
    /// `keep_idle_ms` ago: sessions that all lost their connection at once resume from those.
    pub(crate) fn retire_if_idle(&self, now_ms: u64, keep_idle_ms: u64) -> bool {
        let retention_ms = self.store.retention_ms();
        let mut state = self.state();
        if !state.subscribers.is_empty() {
            state.idle_since_ms = None;
            return state.retired;
        }
        let idle_since_ms = *state.idle_since_ms.get_or_insert(now_ms);
        let keeps_recent = now_ms.saturating_sub(idle_since_ms) < keep_idle_ms
            && (state.recent.newest_published_ms())
                .is_some_and(|ms| crate::store::is_retained(ms, retention_ms, now_ms));
        if state.queued.is_empty() && !state.flushing && !keeps_recent {
            state.retired = true;
        }
        state.retired
    }

    /// Closes every subscriber's queue (the server is shutting down): each stream sends what
    /// is already queued, then ends. One wake-up per stream, instead of every stream also
    /// watching a shutdown signal that all of them share.
    pub(crate) fn close_subscribers(&self) {
        let closed = std::mem::take(&mut self.state().subscribers);
        drop(closed);
    }

    /// Closes every subscriber's queue because the store is out of reach: each stream sends
    /// what is queued, then ends as [`QueueEnd::StoreLost`] (its client resumes, maybe on a
    /// node that reaches the store).
    pub(crate) fn lose_subscribers(&self) {
        let lost = {
            let mut state = self.state();
            // What the hub kept may not be what the store has when it is back.
            state.recent.clear(&self.recent_budget);
            state.oldest = Oldest::Unknown;
            state.lost += 1;
            std::mem::take(&mut state.subscribers)
        };
        for sink in lost.values() {
            sink.shared.store_lost.store(true, Ordering::Release);
        }
        drop(lost);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let recent = &mut self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .recent;
        recent.clear(&self.recent_budget);
    }
}

/// Delivers what the store announces for the hub's channel until the hub or the following
/// goes.
async fn deliver_announcements(
    hub: std::sync::Weak<Hub>,
    mut updates: mpsc::UnboundedReceiver<Announced>,
) {
    while let Some(update) = updates.recv().await {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        match update {
            Announced::Batch(batch) => hub.deliver(batch).await,
            Announced::Resync => hub.resync().await,
        }
    }
}

/// Why a subscriber was not registered; `Retired` as for [`PublishError`].
pub(crate) enum SubscribeError {
    Retired,
    Store(StoreError),
}

/// A live subscriber's end of the channel. Dropping it unregisters the subscriber.
pub(crate) struct SubscriberQueue {
    hub: Arc<Hub>,
    key: u64,
    shared: Arc<QueueShared>,
}

/// What ended a subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueEnd {
    /// It fell behind by more than the queue holds.
    Overflowed,
    /// The hub went away (server shutting down).
    Closed,
    /// The hub could not read what the store holds for it (see [`Hub::lose_subscribers`]).
    StoreLost,
}

impl SubscriberQueue {
    fn took(&self, batch: &Batch) {
        self.shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
    }

    /// The next batch if one is queued, without waiting.
    pub(crate) fn try_next(&mut self) -> Result<Option<Batch>, QueueEnd> {
        if let Some(batch) = self.shared.batches().pop_front() {
            self.took(&batch);
            return Ok(Some(batch));
        }
        if !self.shared.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        // Closed: the hub queued its last batches before closing, so look once more.
        match self.shared.batches().pop_front() {
            Some(batch) => {
                self.took(&batch);
                Ok(Some(batch))
            }
            None => Err(self.end()),
        }
    }

    /// Waits for the next batch (streams poll [`SubscriberQueue::try_next`] instead).
    #[cfg(test)]
    pub(crate) async fn next(&mut self) -> Result<Batch, QueueEnd> {
        std::future::poll_fn(|cx| {
            if let Some(batch) = self.try_next()? {
                return std::task::Poll::Ready(Ok(batch));
            }
            self.register(cx.waker());
            // Looked at again once registered: a batch that came in between is not missed.
            match self.try_next() {
                Ok(Some(batch)) => std::task::Poll::Ready(Ok(batch)),
                Ok(None) => std::task::Poll::Pending,
                Err(end) => std::task::Poll::Ready(Err(end)),
            }
        })
        .await
    }

    /// Has `waker` woken when a batch arrives or the queue closes (the last registered waker
    /// only). Look at the queue after registering: what came before is not woken for.
    pub(crate) fn register(&self, waker: &Waker) {
        self.shared.waker.register(waker);
    }

    /// Whether a batch is queued or the queue is closed.
    pub(crate) fn is_ready(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || !self.shared.batches().is_empty()
    }

    fn end(&self) -> QueueEnd {
        if self.shared.overflowed.load(Ordering::Acquire) {
            QueueEnd::Overflowed
        } else if self.shared.store_lost.load(Ordering::Acquire) {
            QueueEnd::StoreLost
        } else {
            QueueEnd::Closed
        }
    }

    /// Closes this subscriber's queue as the hub does at shutdown: what is queued can still be
    /// taken, then the queue reports [`QueueEnd::Closed`].
    pub(crate) fn close(&self) {
        let sink = self.hub.state().subscribers.remove(&self.key);
        drop(sink);
    }
}

impl Drop for SubscriberQueue {
    fn drop(&mut self) {
        self.hub.state().subscribers.remove(&self.key);
    }
}
