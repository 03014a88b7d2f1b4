//! The in-memory store: for tests and for servers that need no history across restarts.
//! Its epoch is drawn at random when it is created, so ids from a previous run read as
//! `store reset`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use super::{Direction, EventStore, History, PageQuery, StoreError, is_retained};
use crate::event::{Epoch, NewEvent, StoredBatch, StoredEvent};

/// Events in memory, per channel, for the retention window.
#[derive(Debug)]
pub struct MemoryStore {
    epoch: Epoch,
    retention_ms: u64,
    /// In name order, for listing channels a page at a time.
    channels: Mutex<BTreeMap<String, ChannelLog>>,
}

#[derive(Debug, Default)]
struct ChannelLog {
    /// Kept even when every event has expired, so sequence numbers never repeat.
    last_seq: u64,
    /// Consecutive sequence numbers, oldest first.
    events: VecDeque<StoredEvent>,
    /// Idempotency key → (sequence number, published_at_ms) of the event that carried it.
    keys: HashMap<Arc<str>, (u64, u64)>,
    /// The keys in the order they were stored, for expiring them with their events.
    keys_by_age: VecDeque<(u64, Arc<str>)>,
}

impl ChannelLog {
    fn expire(&mut self, retention_ms: u64, now_ms: u64) -> usize {
        let before = self.events.len();
        while self
            .events
            .front()
            .is_some_and(|e| !is_retained(e.published_at_ms, retention_ms, now_ms))
        {
            self.events.pop_front();
        }
        while self
            .keys_by_age
            .front()
            .is_some_and(|(at, _)| !is_retained(*at, retention_ms, now_ms))
        {
            let Some((at, key)) = self.keys_by_age.pop_front() else {
                break;
            };
            // A key used again after it lapsed names its newer event, which stays.
            if self.keys.get(&key).is_some_and(|(_, since)| *since == at) {
                self.keys.remove(&key);
            }
        }
        before - self.events.len()
    }

    /// The event that already carried `key`, if it is retained at `now_ms`.
    fn duplicate_of(&self, key: &str, retention_ms: u64, now_ms: u64) -> Option<u64> {
        self.keys
            .get(key)
            .filter(|(_, published_at_ms)| is_retained(*published_at_ms, retention_ms, now_ms))
            .map(|(seq, _)| *seq)
    }
}

impl MemoryStore {
    /// An empty store keeping events for `retention_ms` (0: assign ids, keep nothing).
    pub fn new(retention_ms: u64) -> Self {
        Self {
            epoch: rand::random(),
            retention_ms,
            channels: Mutex::default(),
        }
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelLog>> {
        // A panic while holding the lock leaves the map consistent (every update is one
        // statement), so a poisoned lock is still usable.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn retention_ms(&self) -> u64 {
        self.retention_ms
    }

    async fn append(&self, channel: &str, events: &[NewEvent]) -> Result<StoredBatch, StoreError> {
        let mut channels = self.channels();
        let log = channels.entry(channel.to_owned()).or_default();
        let retention_ms = self.retention_ms;
        let keyed = retention_ms > 0 && events.iter().any(|e| e.idempotency_key.is_some());
        // Decided under the lock that assigns the sequence numbers: atomic with the append.
        let mut fresh = Vec::new();
        let mut duplicates = Vec::new();
        for (place, event) in events.iter().enumerate().filter(|_| keyed) {
            let Some(key) = event.idempotency_key.as_ref().filter(|_| retention_ms > 0) else {
                fresh.push(event.clone());
                continue;
            };
            match log.duplicate_of(key, retention_ms, event.published_at_ms) {
                Some(seq) => duplicates.push((place, seq)),
                None => {
                    let seq = log.last_seq + 1 + fresh.len() as u64;
                    log.keys.insert(key.clone(), (seq, event.published_at_ms));
                    log.keys_by_age
                        .push_back((event.published_at_ms, key.clone()));
                    fresh.push(event.clone());
                }
            }
        }
        // Without keys, the events as they are: no copy.
        let fresh = if keyed { &fresh[..] } else { events };
        let stored =
            StoredEvent::batch(self.epoch, log.last_seq + 1, fresh).with_duplicates(duplicates);
        log.last_seq += stored.len() as u64;
        if self.retention_ms > 0 {
            log.events.extend(stored.iter().cloned());
            if let Some(last) = stored.last() {
                log.expire(self.retention_ms, last.published_at_ms);
            }
        }
        Ok(stored)
    }

    async fn last_seq(&self, channel: &str) -> Result<u64, StoreError> {
        Ok(self.channels().get(channel).map_or(0, |log| log.last_seq))
    }

    async fn read(
        &self,
        channel: &str,
        after: u64,
        until: u64,
        now_ms: u64,
    ) -> Result<History, StoreError> {
        let channels = self.channels();
        let Some(log) = channels.get(channel) else {
            return Ok(History::default());
        };
        let retained = |e: &&StoredEvent| is_retained(e.published_at_ms, self.retention_ms, now_ms);
        let oldest_retained = log.events.iter().find(retained).map(|e| e.seq);
        let events = match log.events.front() {
            Some(front) => {
                // Sequence numbers are consecutive, so positions follow from them.
                let start = (after + 1).saturating_sub(front.seq) as usize;
                log.events
                    .iter()
                    .skip(start)
                    .take_while(|e| e.seq <= until)
                    .filter(retained)
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(History {
            events,
            oldest_retained,
        })
    }

    async fn read_page(
        &self,
        channel: &str,
        page: PageQuery,
        now_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let channels = self.channels();
        let Some(log) = channels.get(channel) else {
            return Ok(Vec::new());
        };
        let retained = |e: &&StoredEvent| is_retained(e.published_at_ms, self.retention_ms, now_ms);
        let Some(front) = log.events.front().map(|e| e.seq) else {
            return Ok(Vec::new());
        };
        // Sequence numbers are consecutive, so positions follow from them.
        let events = match page.direction {
            Direction::Forward => {
                let start = (page.from.saturating_add(1)).saturating_sub(front) as usize;
                log.events
                    .iter()
                    .skip(start)
                    .filter(retained)
                    .take(page.limit)
                    .cloned()
                    .collect()
            }
            Direction::Backward => {
                let end = page.from.saturating_sub(front).min(log.events.len() as u64) as usize;
                log.events
                    .range(..end)
                    .rev()
                    .filter(retained)
                    .take(page.limit)
                    .cloned()
                    .collect()
            }
        };
        Ok(events)
    }

    async fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let channels = self.channels();
        Ok(channels
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter(|(_, log)| {
                log.events
                    .back()
                    .is_some_and(|e| is_retained(e.published_at_ms, self.retention_ms, now_ms))
            })
            .take(limit)
            .map(|(name, _)| name.clone())
            .collect())
    }

    async fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let retention_ms = self.retention_ms;
        Ok(self
            .channels()
            .values_mut()
            .map(|log| log.expire(retention_ms, now_ms))
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::contract;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        contract::assigns_consecutive_seqs_and_reads_ranges(&MemoryStore::new(10_000)).await;
        contract::retention_is_exact(&MemoryStore::new(1_000)).await;
        contract::retention_is_exact_within_one_append(&MemoryStore::new(1_000)).await;
        contract::retention_zero_keeps_nothing_but_counts(&MemoryStore::new(0)).await;
        contract::pages_read_either_way_within_retention(&MemoryStore::new(1_000)).await;
        contract::channels_are_listed_in_pages(&MemoryStore::new(1_000)).await;
        contract::a_key_stores_its_event_once_while_retained(&MemoryStore::new(1_000)).await;
        contract::retention_zero_remembers_no_key(&MemoryStore::new(0)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_keep_every_channel_consecutive() {
        contract::concurrent_appends_keep_every_channel_consecutive(Arc::new(MemoryStore::new(
            10_000,
        )))
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_appends_with_one_key_store_one_event() {
        contract::racing_appends_with_one_key_store_one_event(Arc::new(MemoryStore::new(10_000)))
            .await;
    }
}
