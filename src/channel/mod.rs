//! Channels in this process: the registry of hubs, live sessions, and resume.
//!
//! [`Channels`] is the domain API the gRPC services call: publish to a channel, open a
//! subscription with its resume outcome. It knows nothing of gRPC.

mod history;
mod hub;
mod replay;
mod resume;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;

pub(crate) use history::{DEFAULT_PAGE, MAX_PAGE};
pub use history::{HistoryEvent, HistoryPage, HistoryQuery};
pub use hub::HubLimits;
pub(crate) use hub::{Batch, Hub, QueueEnd, SubscriberQueue};
pub use replay::ReplayLimits;
pub(crate) use replay::{Admits, Replay};
pub use resume::{ResumeFailure, ResumeOutcome};

use crate::{
    clock::SharedClock,
    event::{EventId, NewEvent},
    filter::Filter,
    session::Sessions,
    store::{EventStore, StoreError},
};

/// Every channel with subscribers, publishes in flight or kept recent events; made on first use.
pub struct Channels {
    store: Arc<dyn EventStore>,
    clock: SharedClock,
    limits: HubLimits,
    hubs: Mutex<HashMap<Arc<str>, Arc<Hub>>>,
    live: Arc<Sessions>,
    /// Replays in progress (see [`ReplayLimits::concurrent`]).
    replay_slots: Arc<tokio::sync::Semaphore>,
    /// The recent batches the hubs keep for resumes (see [`ReplayLimits::recent_bytes`]).
    recent_budget: Arc<hub::RecentBudget>,
}

/// One event to publish.
#[derive(Debug, Clone)]
pub(crate) struct Publication {
    /// Encoded as `Event`'s `oneof payload`.
    pub payload: Bytes,
    /// Shared by the events of a publish that have the same one (and, in the on-disk store,
    /// encoded once for a run of them).
    pub filter: Arc<Filter>,
    /// The publisher's key: a repeat of a retained event's key stores nothing.
    pub idempotency_key: Option<String>,
}

impl Publication {
    /// An event without an idempotency key.
    pub(crate) fn new(payload: Bytes, filter: Filter) -> Self {
        Self {
            payload,
            filter: Arc::new(filter),
            idempotency_key: None,
        }
    }
}

/// A subscription opened with its replay: what a `Subscribe` stream starts from.
pub(crate) struct Opened {
    /// The live queue: events after `head`.
    pub subscription: SubscriberQueue,
    /// The replay: events that pass the session's filter, in order, all with `seq <= head`:
    /// from the channel's recent batches when they hold the gap, else read from the store in
    /// pages as they are sent.
    pub replay: Replay,
    /// The last sequence number covered by the replay; live events up to it are duplicates.
    pub head: u64,
    pub outcome: ResumeOutcome,
}

impl Channels {
    /// Channels over `store`, with time from `clock`.
    pub fn new(store: Arc<dyn EventStore>, clock: SharedClock, limits: HubLimits) -> Self {
        let live = Arc::new(Sessions::new(
            clock.clone(),
            store.retention_ms(),
            store.cluster(),
        ));
        Self {
            store,
            clock,
            limits,
            hubs: Mutex::default(),
            live,
            replay_slots: replay::replay_slots(limits.replay),
            recent_budget: Arc::new(hub::RecentBudget::new(
                limits.replay.recent_bytes_per_channel,
                limits.replay.recent_bytes,
            )),
        }
    }

    /// The store behind every channel.
    pub(crate) fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The sessions of every channel: live, and closed but within their resume window.
    pub(crate) fn sessions(&self) -> &Arc<Sessions> {
        &self.live
    }

    fn hubs(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Hub>>> {
        self.hubs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hub(&self, channel: &str) -> Arc<Hub> {
        let mut hubs = self.hubs();
        if let Some(hub) = hubs.get(channel) {
            return hub.clone();
        }
        let name: Arc<str> = channel.into();
        let hub = Arc::new(Hub::new(
            name.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.limits,
            self.recent_budget.clone(),
        ));
        hubs.insert(name, hub.clone());
        hub
    }

    /// Stores an event and delivers it to the channel's live subscribers that the filter
    /// admits. Returns once the store has it.
    pub async fn publish(
        &self,
        channel: &str,
        payload: Bytes,
        filter: Filter,
    ) -> Result<EventId, StoreError> {
        let mut ids = self
            .publish_many(channel, vec![Publication::new(payload, filter)])
            .await?;
        ids.pop()
            .ok_or_else(|| StoreError::Unavailable("the publish pipeline lost an event".into()))
    }

    /// Stores `events` on `channel`, contiguous and in order (concurrent publishers do not
    /// interleave with them), and delivers them; returns their ids once the store has them all.
    /// An event whose idempotency key a retained event of the channel carried is neither
    /// stored nor delivered: its id is that event's.
    pub(crate) async fn publish_many(
        &self,
        channel: &str,
        events: Vec<Publication>,
    ) -> Result<Vec<EventId>, StoreError> {
        let mut events: Vec<NewEvent> = events
            .into_iter()
            .map(|event| NewEvent {
                payload: event.payload,
                filter: event.filter,
                published_at_ms: 0, // stamped by the hub's flush, in store order
                idempotency_key: event.idempotency_key.map(Arc::from),
            })
            .collect();
        let started = crate::metrics::publish_started();
        loop {
            match self.hub(channel).publish(events, started).await {
                Ok(seqs) => {
                    crate::metrics::publish_durable(started);
                    let epoch = self.store.epoch();
                    return Ok(seqs.into_iter().map(|seq| EventId { epoch, seq }).collect());
                }
                Err(hub::PublishError::Retired(returned)) => events = returned,
                Err(hub::PublishError::Store(error)) => return Err(error),
            }
        }
    }

    /// Opens a live subscription on `channel` and counts what `last_event_id` asks to replay,
    /// keeping only events that `admits` lets through: from the channel's recent batches in
    /// memory when they hold the whole gap, else from the store in pages as it is sent.
    pub(crate) async fn open(
        &self,
        channel: &str,
        last_event_id: Option<EventId>,
        admits: Admits,
    ) -> Result<Opened, StoreError> {
        match self
            .open_from_memory(channel, last_event_id, &admits)
            .await?
        {
            Some(opened) => Ok(opened),
            None => self.open_from_store(channel, last_event_id, admits).await,
        }
    }

    /// A subscription whose replay, if it has one, the hub's recent batches hold: no store
    /// read and no replay slot (its events are the buffers live subscribers were sent, shared).
    /// `None` when the store is needed.
    async fn open_from_memory(
        &self,
        channel: &str,
        last_event_id: Option<EventId>,
        admits: &Admits,
    ) -> Result<Option<Opened>, StoreError> {
        let (hub, subscription, head) = self.subscribe_live(channel).await?;
        let epoch = self.store.epoch();
        // Never before the time another resume judged the channel's oldest event at.
        let now_ms = hub.now_after_others(self.clock.now_ms());
        let start = resume::start(last_event_id, epoch, self.store.retention_ms(), head);
        let (after, requested, failure) = match start {
            resume::ResumeStart::Live { requested, failure } => (head, requested, failure),
            resume::ResumeStart::Replay { after } => (after, true, None),
        };
        let recent = match start {
            resume::ResumeStart::Live { .. } => Default::default(),
            resume::ResumeStart::Replay { after } => match hub.recent_holding(after, head) {
                Some(recent) => recent,
                None => return Ok(None),
            },
        };
        let Ok(oldest_retained) = hub.oldest_retained(now_ms).await else {
            // The store path reads it again, and says what failed.
            return Ok(None);
        };
        let (replay, events) = replay::from_recent(
            self.store.clone(),
            channel.into(),
            admits.clone(),
            now_ms,
            recent,
            after,
            head,
        );
        let failure = match start {
            resume::ResumeStart::Replay { after } => resume::replay_failure(after, oldest_retained),
            resume::ResumeStart::Live { .. } => failure,
        };
        Ok(Some(Opened {
            subscription,
            replay,
            head,
            outcome: ResumeOutcome {
                requested,
                recovered: requested && failure.is_none(),
                failure,
                replayed: events,
                oldest_retained: oldest_retained.map(|seq| EventId { epoch, seq }),
            },
        }))
    }

    /// Registers a live subscriber on the channel's hub (its new hub if the one found was
    /// retired meanwhile); the hub, the queue, and the head it starts after.
    async fn subscribe_live(
        &self,
        channel: &str,
    ) -> Result<(Arc<Hub>, SubscriberQueue, u64), StoreError> {
        loop {
            let hub = self.hub(channel);
            match hub.subscribe().await {
                Ok((subscription, head)) => return Ok((hub, subscription, head)),
                Err(hub::SubscribeError::Retired) => continue,
                Err(hub::SubscribeError::Store(error)) => return Err(error),
            }
        }
    }

    /// [`Channels::open`] with the replay read from the store. A resume waits for one of the
    /// replay slots first (before subscribing, so that live events do not pile up while it
    /// waits).
    async fn open_from_store(
        &self,
        channel: &str,
        last_event_id: Option<EventId>,
        admits: Admits,
    ) -> Result<Opened, StoreError> {
        let grant = match last_event_id {
            Some(_) => Some(replay::SlotGrant {
                slots: self.replay_slots.clone(),
                permit: self
                    .replay_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?,
            }),
            None => None,
        };
        let (hub, subscription, head) = self.subscribe_live(channel).await?;
        let event_bytes = hub.recent_event_bytes();
        let epoch = self.store.epoch();
        let now_ms = self.clock.now_ms();
        let start = resume::start(last_event_id, epoch, self.store.retention_ms(), head);
        let (after, requested, failure) = match start {
            resume::ResumeStart::Live { requested, failure } => (head, requested, failure),
            resume::ResumeStart::Replay { after } => (after, true, None),
        };
        let counted = replay::count(
            self.store.clone(),
            channel.into(),
            after,
            head,
            now_ms,
            admits,
            self.limits.replay,
            grant,
            event_bytes,
        )
        .await?;
        let failure = match start {
            resume::ResumeStart::Replay { after } => {
                resume::replay_failure(after, counted.oldest_retained)
            }
            resume::ResumeStart::Live { .. } => failure,
        };
        let outcome = ResumeOutcome {
            requested,
            recovered: requested && failure.is_none(),
            failure,
            replayed: counted.events,
            oldest_retained: counted.oldest_retained.map(|seq| EventId { epoch, seq }),
        };
        Ok(Opened {
            subscription,
            replay: counted.replay,
            head,
            outcome,
        })
    }

    /// Closes the queue of every live subscriber on every channel: each stream sends what is
    /// already queued, then ends. A subscriber that registers afterwards is not closed here:
    /// the server cancels its shutdown token first, and a stream built after that closes its
    /// own queue ([`SubscriberQueue::close`]).
    pub(crate) fn close_subscribers(&self) {
        let hubs: Vec<Arc<Hub>> = self.hubs().values().cloned().collect();
        for hub in hubs {
            hub.close_subscribers();
        }
    }

    /// Ends every live subscriber's stream because the store is out of reach (see
    /// [`Hub::lose_subscribers`]).
    pub(crate) fn lose_subscribers(&self) {
        let hubs: Vec<Arc<Hub>> = self.hubs().values().cloned().collect();
        for hub in hubs {
            hub.lose_subscribers();
        }
    }

    /// Replays holding a slot now.
    pub(crate) fn replays_in_progress(&self) -> usize {
        self.limits
            .replay
            .concurrent
            .max(1)
            .saturating_sub(self.replay_slots.available_permits())
    }

    /// Forgets hubs with no subscribers and nothing in flight (after
    /// [`defaults::RECENT_KEPT_IDLE`](crate::server::defaults::RECENT_KEPT_IDLE) for one that
    /// keeps recent batches still retained); returns how many remain. Trims the recent batches
    /// first ([`Channels::trim_recent`]).
    pub(crate) fn sweep_idle(&self) -> usize {
        self.trim_recent();
        let now_ms = self.clock.now_ms();
        let keep_idle_ms = crate::server::defaults::RECENT_KEPT_IDLE.as_millis() as u64;
        let mut hubs = self.hubs();
        hubs.retain(|_, hub| !hub.retire_if_idle(now_ms, keep_idle_ms));
        hubs.len()
    }

    /// When the hubs keep more recent batches than three quarters of
    /// [`ReplayLimits::recent_bytes`], the channels whose newest kept events are the oldest let
    /// theirs go until they do not: the busy channels keep room for their next batches.
    pub(crate) fn trim_recent(&self) {
        let budget = &self.recent_budget;
        let target = budget.total / 4 * 3;
        let kept = || budget.kept.load(std::sync::atomic::Ordering::Relaxed);
        if kept() <= target {
            return;
        }
        let hubs: Vec<Arc<Hub>> = self.hubs().values().cloned().collect();
        let mut by_age: Vec<(u64, Arc<Hub>)> = (hubs.into_iter())
            .filter_map(|hub| Some((hub.recent_newest_ms()?, hub)))
            .collect();
        by_age.sort_unstable_by_key(|(newest_ms, _)| *newest_ms);
        for (_, hub) in by_age {
            if kept() <= target {
                return;
            }
            hub.drop_recent();
        }
    }

    /// Resolves when a hub found the recent batches over their total: time for
    /// [`Channels::trim_recent`].
    pub(crate) async fn recent_exceeded(&self) {
        self.recent_budget.exceeded.notified().await;
    }
}

#[cfg(test)]
mod tests;
