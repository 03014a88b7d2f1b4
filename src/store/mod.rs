//! Where events live between publish and resume.
//!
//! One trait, [`EventStore`], for every backend: [`redb::RedbStore`], the embedded on-disk log
//! the server uses by default; [`memory::MemoryStore`] for tests and servers that need no history
//! across restarts; [`redis::RedisStore`], history in Redis Streams that several nodes share. The store assigns sequence
//! numbers and is the only source of truth for replay; the channel hub on top of it orders
//! fan-out and resume (see `crate::channel`).

#[cfg(test)]
pub(crate) mod contract;
pub(crate) mod memory;
pub(crate) mod redb;
pub(crate) mod redis;

use async_trait::async_trait;

pub use crate::event::{Epoch, NewEvent, StoredBatch, StoredEvent};

pub use self::redb::{FILE_NAME as REDB_FILE_NAME, RedbStore};
pub use self::redis::{
    DEFAULT_KEY_PREFIX as REDIS_DEFAULT_KEY_PREFIX,
    DEFAULT_WAIT_TIMEOUT as REDIS_DEFAULT_WAIT_TIMEOUT, RedisConfig, RedisStore, RedisTls,
};
pub use memory::MemoryStore;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes now (disk full, I/O error, shutting down); nothing was
    /// acknowledged.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The store's data is damaged.
    #[error("event store corrupt: {0}")]
    Corrupt(String),
}

/// The events of a channel between two positions, as far as they are still retained.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Retained events with `after < seq <= until`, in sequence order.
    pub events: Vec<StoredEvent>,
    /// The sequence number of the oldest event still retained on the channel, if any.
    pub oldest_retained: Option<u64>,
}

/// Which way a page of history reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first: events after the page's position.
    Forward,
    /// Newest first: events before the page's position.
    Backward,
}

/// A page of a channel's history: at most `limit` retained events on one side of `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// The position the page starts from, excluded: events with `seq > from` going forward,
    /// `seq < from` going backward (`u64::MAX`: from the newest).
    pub from: u64,
    /// Which way the page reads.
    pub direction: Direction,
    /// Events in the page at most.
    pub limit: usize,
}

/// An append-only log of events per channel with a retention window.
///
/// Contract every backend keeps:
/// - `append` assigns each channel consecutive sequence numbers from 1, and returns only once
///   the events are as durable as the backend promises (on disk for the on-disk store);
/// - sequence numbers never repeat within an [`Epoch`], not even after restarts;
/// - an event is retained while `now < published_at + retention`, and never returned after;
/// - an event with an idempotency key that an event of the same channel retained at its
///   `published_at` already carried is not stored: the append answers that event's sequence
///   number for it ([`StoredBatch::answers`]) and leaves it out of the batch, decided
///   atomically with the append (so also between events of one append and between racing
///   appends), and remembered as long as the event it names.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The epoch of this store's history; event ids carry it.
    fn epoch(&self) -> Epoch;

    /// How long events are kept for resume, in milliseconds (0: not kept).
    fn retention_ms(&self) -> u64;

    /// Appends `events` to `channel` in order and returns them with their sequence numbers and
    /// encoded frames.
    async fn append(&self, channel: &str, events: &[NewEvent]) -> Result<StoredBatch, StoreError>;

    /// The last sequence number assigned on `channel` (0 if none ever was).
    async fn last_seq(&self, channel: &str) -> Result<u64, StoreError>;

    /// The events retained at `now_ms` with `after < seq <= until`.
    async fn read(
        &self,
        channel: &str,
        after: u64,
        until: u64,
        now_ms: u64,
    ) -> Result<History, StoreError>;

    /// A page of the events of `channel` retained at `now_ms` (see [`PageQuery`]), reading no
    /// more of the history than the page needs.
    async fn read_page(
        &self,
        channel: &str,
        page: PageQuery,
        now_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The names of channels with events retained at `now_ms`, in name order: at most `limit`
    /// of those that start with `prefix` and sort after `after`.
    async fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError>;

    /// Drops every event no longer retained at `now_ms`; returns how many were dropped.
    async fn expire(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Whether the store can take appends now; the server's health follows it (checked once a
    /// second). A store in this process always can; one behind a network asks its server.
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Follows the appends of `channel` by every node that shares this store, this one
    /// included, in sequence order, from now on; `None` for a store that only this process
    /// appends to (its own appends are all there is). A channel's hub follows while it has
    /// subscribers.
    async fn follow(&self, _channel: &str) -> Result<Option<Follower>, StoreError> {
        Ok(None)
    }

    /// The other nodes that share this store, and this node's place among them; `None` for a
    /// store only this process uses.
    fn cluster(&self) -> Option<std::sync::Arc<dyn crate::cluster::Cluster>> {
        None
    }
}

/// What a shared store tells a follower of a channel.
#[derive(Debug)]
pub enum Announced {
    /// An append, as the appending node stored it (shared by the node's followers).
    Batch(std::sync::Arc<StoredBatch>),
    /// Announcements may have been missed (the connection to the broker was lost and is back):
    /// the follower reads the store from where it stands.
    Resync,
}

/// A channel followed (see [`EventStore::follow`]): the announcements, in order, until the
/// follower is dropped.
pub struct Follower {
    /// The announcements; ends when the store stops following (the follower dropped or the
    /// store closed).
    pub updates: tokio::sync::mpsc::UnboundedReceiver<Announced>,
    /// Stops the following when dropped.
    pub guard: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

/// Whether an event published at `published_at_ms` is still retained at `now_ms`.
pub(crate) fn is_retained(published_at_ms: u64, retention_ms: u64, now_ms: u64) -> bool {
    now_ms < published_at_ms.saturating_add(retention_ms)
}
