//! The in-memory store: for tests and for servers that need no history across restarts.
//! Its epoch is drawn at random when it is created, so ids from a previous run read as
//! `store reset`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{EventStore, History, StoreError, is_retained};
use crate::event::{Epoch, NewEvent, StoredBatch, StoredEvent};

/// Events in memory, per channel, for the retention window.
#[derive(Debug)]
pub struct MemoryStore {
    epoch: Epoch,
    retention_ms: u64,
    channels: Mutex<HashMap<String, ChannelLog>>,
}

#[derive(Debug, Default)]
struct ChannelLog {
    /// Kept even when every event has expired, so sequence numbers never repeat.
    last_seq: u64,
    /// Consecutive sequence numbers, oldest first.
    events: VecDeque<StoredEvent>,
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
        before - self.events.len()
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

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, ChannelLog>> {
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
        let stored = StoredEvent::batch(self.epoch, log.last_seq + 1, events);
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_keep_every_channel_consecutive() {
        contract::concurrent_appends_keep_every_channel_consecutive(Arc::new(MemoryStore::new(
            10_000,
        )))
        .await;
    }
}
