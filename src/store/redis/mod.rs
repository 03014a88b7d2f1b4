//! The Redis store: history in Redis Streams, one per channel, so that several nodes can share
//! one set of channels (the engine Centrifugo's users run for the same job).
//!
//! - **Atomic appends.** One Lua script per append assigns the sequence numbers, stores the
//!   events, trims the channel to its retention window and publishes the stored batch on the
//!   channel's topic (see `scripts.rs`).
//! - **Acknowledged means what Redis promises.** An append answers once the script ran: with
//!   `appendonly yes` and `appendfsync always` the events are on Redis's disk, with `everysec`
//!   they are in the AOF file but an OS crash can lose about the last second of them, with no
//!   AOF a Redis crash loses what came after the last RDB snapshot (the README has the table).
//!   With `wait_replicas` set, an append also waits until that many replicas have it (`WAIT`,
//!   on a connection of its own: see `replicated.rs`, which also writes `{prefix}:replicated`).
//! - **TLS.** A `rediss://` URL connects with TLS (rustls), trusting the system's roots or the
//!   CA the configuration gives, optionally with a client certificate (see `connect.rs`).
//! - **Epochs.** The history's epoch is a key in Redis, drawn by the first node that finds none.
//!   A flushed or replaced Redis has a new one, so ids of the old history read as `store
//!   reset`; a node that finds the epoch changed under it refuses appends until restarted.
//! - **Nodes share channels.** A node follows the topic of each channel it has subscribers on
//!   (see `follow.rs`) and delivers every node's appends to them; one that misses
//!   announcements (its pub/sub connection dropped) reads them back from the stream.
//! - **Every call is bounded.** Each command has a response timeout; a Redis that is down
//!   fails calls with `UNAVAILABLE` at once instead of hanging them.
//! - **Sessions across nodes.** The store is also the node's [`Cluster`](crate::cluster):
//!   a directory of which node holds each session, and calls forwarded to it (see
//!   `directory.rs` and `calls.rs`).
//!
//! Keys, under a prefix (`durable-iterator` unless configured, so deployments can share a
//! Redis): `{prefix}:epoch`, `{prefix}:heads` (hash: channel → last sequence number),
//! `{prefix}:channels` (channels with retained events, a sorted set listed by name),
//! `{prefix}:stream:{channel}`, `{prefix}:keys:{channel}` (hash: idempotency key → the event
//! that carried it), the pub/sub topic `{prefix}:topic:{channel}`; the directory's keys (see
//! `directory_scripts.rs`); `{prefix}:sessions`, where a node says which sessions opened a
//! stream on it (another node's older stream of one is superseded), and `{prefix}:node:{node}`,
//! where a node takes calls and answers.

mod announcement;
mod calls;
mod connect;
mod directory;
mod directory_scripts;
mod follow;
mod replicated;
mod scripts;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use redis::{AsyncCommands, aio::ConnectionManager, streams::StreamRangeReply};

use super::{
    Direction, Epoch, EventStore, Follower, History, NewEvent, PageQuery, StoreError, StoredBatch,
    StoredEvent, is_retained,
};
use crate::filter::Filter;
pub use connect::{DEFAULT_WAIT_TIMEOUT, RedisConfig, RedisTls};
use replicated::{Refused, ReplicatedAppends};
use scripts::Scripts;

/// The key prefix when none is configured.
pub const DEFAULT_KEY_PREFIX: &str = "durable-iterator";

/// How long one Redis command may take before it fails as `UNAVAILABLE`.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries a trim deletes per script run, so that a large purge does not hold Redis (which
/// runs one script at a time) for long.
const TRIM_CHUNK: u64 = 1_024;
/// Entries read per command while looking for a channel's oldest retained event.
const SCAN_CHUNK: usize = 256;

/// Events in Redis, shared by every node connected to it.
pub struct RedisStore {
    connection: ConnectionManager,
    /// Appends that wait for replicas, on a connection of their own (none: appends go on
    /// `connection` and answer once the primary ran them).
    replicated: Option<ReplicatedAppends>,
    keys: Keys,
    scripts: Arc<Scripts>,
    epoch: AtomicU32,
    /// The epoch in Redis is no longer ours (Redis was flushed or replaced while we ran).
    reset: AtomicBool,
    retention_ms: u64,
    location: String,
    /// The channels this node follows, and the task that keeps their connection up.
    topics: Arc<follow::Topics>,
    following: tokio::task::JoinHandle<()>,
    /// This node's sessions in the directory other nodes read, and the task that keeps it.
    cluster: Arc<directory::RedisCluster>,
    keeping: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.following.abort();
        self.keeping.abort();
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("location", &self.location)
            .field("epoch", &self.epoch())
            .field("retention_ms", &self.retention_ms)
            .finish_non_exhaustive()
    }
}

/// The names of the store's keys.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
    fn heads(&self) -> String {
        format!("{}:heads", self.prefix)
    }
    fn channels(&self) -> String {
        format!("{}:channels", self.prefix)
    }
    fn stream(&self, channel: &str) -> String {
        format!("{}:stream:{channel}", self.prefix)
    }
    fn topic(&self, channel: &str) -> String {
        format!("{}:topic:{channel}", self.prefix)
    }
    fn idempotency_keys(&self, channel: &str) -> String {
        format!("{}:keys:{channel}", self.prefix)
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://HOST:PORT/DB`), keeping events for
    /// `retention_ms` under keys starting with `prefix`; [`RedisStore::open_with`] says more.
    pub async fn open(url: &str, prefix: &str, retention_ms: u64) -> Result<Self, StoreError> {
        let mut config = RedisConfig::new(url, retention_ms);
        config.key_prefix = prefix.to_owned();
        Self::open_with(config).await
    }

    /// Connects to the Redis of `config` (over TLS for a `rediss://` URL).
    ///
    /// Fails when Redis cannot be reached (a TLS handshake that fails says so), the
    /// configuration is contradictory (certificates for a `redis://` URL, replicas to wait for
    /// with no timeout), or the history has a malformed epoch.
    pub async fn open_with(config: RedisConfig) -> Result<Self, StoreError> {
        let location = redacted(&config.url);
        if config.wait_replicas > 0 && config.wait_timeout.is_zero() {
            return Err(StoreError::Unavailable(
                "waiting for replicas needs a timeout above zero (Redis would wait forever)".into(),
            ));
        }
        let client = connect::client(&config)?;
        let manager_config = |response_timeout| {
            redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(response_timeout))
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_number_of_retries(1)
        };
        let connection = client
            .get_connection_manager_with_config(manager_config(RESPONSE_TIMEOUT))
            .await
            .map_err(|e| connect::unreachable(&location, &e))?;
        let keys = Keys {
            prefix: config.key_prefix.clone(),
        };
        let epoch = init_epoch(&mut connection.clone(), &keys).await?;
        if config.wait_replicas == 0 {
            warn_if_acks_can_be_lost(&mut connection.clone(), &location).await;
        }
        let scripts = Arc::<Scripts>::default();
        let replicated = match config.wait_replicas {
            0 => None,
            replicas => {
                // The answer of an append is its WAIT's, which may take the whole wait.
                let appends = client
                    .get_connection_manager_with_config(manager_config(
                        RESPONSE_TIMEOUT + config.wait_timeout,
                    ))
                    .await
                    .map_err(|e| connect::unreachable(&location, &e))?;
                let wait = replicated::Wait {
                    replicas,
                    timeout: config.wait_timeout,
                };
                let marker = format!("{}:replicated", keys.prefix);
                Some(ReplicatedAppends::start(appends, scripts.clone(), marker, wait).await)
            }
        };
        let (cluster, keeping) = directory::RedisCluster::start(
            &config.key_prefix,
            connection.clone(),
            config.retention_ms,
        )
        .await?;
        let topics = follow::Topics::new(epoch, &config.key_prefix, cluster.clone());
        let messages = follow::connect(&client, &topics)
            .await
            .inspect_err(|_| keeping.abort())?;
        let following = tokio::spawn(follow::run(client, Arc::downgrade(&topics), Some(messages)));
        Ok(Self {
            connection,
            replicated,
            keys,
            scripts,
            epoch: AtomicU32::new(epoch),
            reset: AtomicBool::new(false),
            retention_ms: config.retention_ms,
            location,
            topics,
            following,
            cluster,
            keeping,
        })
    }

    /// Where the events are: the Redis URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn reset_error() -> StoreError {
        StoreError::Unavailable(
            "the history in Redis was flushed or replaced while this node ran: restart it to \
             take the new history (old event ids then read as a store reset)"
                .into(),
        )
    }

    /// Deletes what `channel` holds past retention at `now_ms`, in chunks; how many entries.
    async fn trim(&self, channel: &str, now_ms: u64) -> Result<usize, StoreError> {
        let before = expired_before(now_ms, self.retention_ms);
        let mut removed = 0;
        loop {
            let (deleted, more): (u64, u64) = self
                .scripts
                .trim
                .key(self.keys.stream(channel))
                .key(self.keys.channels())
                .key(self.keys.idempotency_keys(channel))
                .arg(before)
                .arg(TRIM_CHUNK)
                .arg(channel)
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(unavailable)?;
            removed += deleted as usize;
            if more == 0 {
                return Ok(removed);
            }
        }
    }
}

/// Reads the history's epoch, or draws one if Redis has none (a new or flushed Redis).
async fn init_epoch(connection: &mut ConnectionManager, keys: &Keys) -> Result<Epoch, StoreError> {
    let drawn: Epoch = rand::random();
    // Whoever comes first draws it: the others read the same one.
    let _: Option<String> = redis::cmd("SET")
        .arg(keys.epoch())
        .arg(drawn)
        .arg("NX")
        .query_async(connection)
        .await
        .map_err(unavailable)?;
    let stored: String = connection.get(keys.epoch()).await.map_err(unavailable)?;
    stored
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("the epoch in Redis, {stored:?}, is malformed")))
}

/// Logs a warning when Redis's persistence lets a crash lose acknowledged publishes: their
/// sequence numbers are then given again to new events, which a client that saw the lost ones
/// skips on resume (the epoch survives in what Redis kept). Quiet when `CONFIG` is not allowed
/// (managed Redis): the README says what each setting means.
async fn warn_if_acks_can_be_lost(connection: &mut ConnectionManager, location: &str) {
    let setting = async |name: &str| -> Option<String> {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut connection.clone())
            .await
            .ok()?;
        pair.into_iter().nth(1)
    };
    let (Some(appendonly), Some(appendfsync)) =
        (setting("appendonly").await, setting("appendfsync").await)
    else {
        return;
    };
    if appendonly != "yes" || appendfsync != "always" {
        tracing::warn!(
            %location,
            appendonly,
            appendfsync,
            "a Redis crash can lose acknowledged publishes with these settings, and new events \
             then reuse their ids: use appendonly yes and appendfsync always, or \
             --redis-wait-replicas (README, \"What an acknowledged publish survives\")"
        );
    }
}

/// Events published before this are expired at `now_ms` (see [`is_retained`]).
fn expired_before(now_ms: u64, retention_ms: u64) -> u64 {
    (now_ms + 1).saturating_sub(retention_ms)
}

/// A Redis error, as a store error: nothing was acknowledged.
fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {error}"))
}

/// `url` without its password, for messages and logs.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn malformed(seq: u64) -> StoreError {
    StoreError::Corrupt(format!("the stream entry of event {seq} is malformed"))
}

/// The sequence number of a stream entry id `0-<seq>`.
fn entry_seq(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

/// An event read from a stream entry.
fn entry_event(
    id: &str,
    fields: &std::collections::HashMap<String, redis::Value>,
) -> Result<(u64, NewEvent), StoreError> {
    let seq = entry_seq(id).ok_or_else(|| {
        StoreError::Corrupt(format!("a stream entry has the id {id}, not 0-<seq>"))
    })?;
    let bytes = |name: &str| match fields.get(name) {
        Some(redis::Value::BulkString(bytes)) => Ok(bytes.as_slice()),
        _ => Err(malformed(seq)),
    };
    let published_at_ms = std::str::from_utf8(bytes("t")?)
        .ok()
        .and_then(|at| at.parse().ok())
        .ok_or_else(|| malformed(seq))?;
    let filter = Filter::from_stored(bytes("f")?).ok_or_else(|| malformed(seq))?;
    Ok((
        seq,
        NewEvent {
            payload: Bytes::copy_from_slice(bytes("p")?),
            filter: Arc::new(filter),
            published_at_ms,
            idempotency_key: None,
        },
    ))
}

#[async_trait]
impl EventStore for RedisStore {
    fn epoch(&self) -> Epoch {
        self.epoch.load(Ordering::Relaxed)
    }

    fn retention_ms(&self) -> u64 {
        self.retention_ms
    }

    async fn append(&self, channel: &str, events: &[NewEvent]) -> Result<StoredBatch, StoreError> {
        if self.reset.load(Ordering::Relaxed) {
            return Err(Self::reset_error());
        }
        let epoch = self.epoch();
        if events.is_empty() {
            let last = self.last_seq(channel).await?;
            return Ok(StoredEvent::batch(epoch, last + 1, &[]));
        }
        let newest = events.iter().map(|e| e.published_at_ms).max().unwrap_or(0);
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(self.keys.epoch())
            .key(self.keys.heads())
            .key(self.keys.stream(channel))
            .key(self.keys.channels())
            .key(self.keys.topic(channel))
            .key(self.keys.idempotency_keys(channel))
            .arg(epoch.to_string())
            .arg(channel)
            .arg(self.retention_ms)
            .arg(expired_before(newest, self.retention_ms));
        // Events of one publish share their filter: it is serialized once for a run of them.
        let mut filter: Option<(&Arc<Filter>, Vec<u8>)> = None;
        for event in events {
            let json = match &filter {
                Some((shared, json)) if Arc::ptr_eq(shared, &event.filter) => json,
                _ => &filter.insert((&event.filter, event.filter.to_stored())).1,
            };
            let key = match &event.idempotency_key {
                Some(key) => format!("+{key}"),
                None => "-".to_owned(),
            };
            invocation
                .arg(event.published_at_ms)
                .arg(json.as_slice())
                .arg(event.payload.as_ref())
                .arg(key);
        }
        let started = crate::metrics::commit_started();
        let answer: Result<Vec<String>, _> = match &self.replicated {
            None => invocation.invoke_async(&mut self.connection.clone()).await,
            Some(replicated) => match replicated
                .append(redis::Cmd::invoke_script(&invocation))
                .await
            {
                Ok(answer) => Ok(answer),
                Err(Refused::Redis(error)) => Err(error),
                Err(Refused::NotReplicated(message)) => {
                    return Err(StoreError::Unavailable(message));
                }
            },
        };
        if answer.is_ok() {
            crate::metrics::committed(events.len(), started);
        }
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) if error.code() == Some("EPOCH") => {
                if !self.reset.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        location = %self.location,
                        "the history in Redis changed its epoch under this node (flushed or \
                         replaced?): appends are refused until the node restarts"
                    );
                }
                return Err(Self::reset_error());
            }
            Err(error) => return Err(unavailable(error)),
        };
        let numbers: Vec<u64> = answer
            .iter()
            .map(|n| n.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| StoreError::Corrupt(format!("the append script answered {answer:?}")))?;
        let Some((&first, duplicates)) = numbers.split_first() else {
            return Err(StoreError::Corrupt(
                "the append script answered nothing".into(),
            ));
        };
        let duplicates: Vec<(usize, u64)> = duplicates
            .chunks_exact(2)
            .map(|pair| (pair[0] as usize, pair[1]))
            .collect();
        if duplicates.is_empty() {
            return Ok(StoredEvent::batch(epoch, first, events));
        }
        let stored: Vec<NewEvent> = events
            .iter()
            .enumerate()
            .filter(|(place, _)| !duplicates.iter().any(|(at, _)| at == place))
            .map(|(_, event)| event.clone())
            .collect();
        Ok(StoredEvent::batch(epoch, first, &stored).with_duplicates(duplicates))
    }

    async fn last_seq(&self, channel: &str) -> Result<u64, StoreError> {
        let last: Option<u64> = self
            .connection
            .clone()
            .hget(self.keys.heads(), channel)
            .await
            .map_err(unavailable)?;
        Ok(last.unwrap_or(0))
    }

    async fn read(
        &self,
        channel: &str,
        after: u64,
        until: u64,
        now_ms: u64,
    ) -> Result<History, StoreError> {
        let stream = self.keys.stream(channel);
        let mut connection = self.connection.clone();
        let retained =
            |event: &NewEvent| is_retained(event.published_at_ms, self.retention_ms, now_ms);
        // Entries not yet trimmed may still sit before the oldest retained one.
        let mut oldest_retained = None;
        let mut from = "-".to_owned();
        'scan: loop {
            let reply: StreamRangeReply = connection
                .xrange_count(&stream, &from, "+", SCAN_CHUNK)
                .await
                .map_err(unavailable)?;
            for entry in &reply.ids {
                let (seq, event) = entry_event(&entry.id, &entry.map)?;
                if retained(&event) {
                    oldest_retained = Some(seq);
                    break 'scan;
                }
                from = format!("0-{}", seq + 1);
            }
            if reply.ids.len() < SCAN_CHUNK {
                break;
            }
        }
        let mut events = Vec::new();
        if after < until {
            let start = oldest_retained.map_or(after + 1, |oldest| oldest.max(after + 1));
            let reply: StreamRangeReply = connection
                .xrange(&stream, format!("0-{start}"), format!("0-{until}"))
                .await
                .map_err(unavailable)?;
            let epoch = self.epoch();
            for entry in &reply.ids {
                let (seq, event) = entry_event(&entry.id, &entry.map)?;
                if retained(&event) {
                    events.push(StoredEvent::new(epoch, seq, &event));
                }
            }
        }
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
        let stream = self.keys.stream(channel);
        let mut connection = self.connection.clone();
        let epoch = self.epoch();
        let mut events = Vec::new();
        // Bounds `(0-<seq>` exclude the position; expired entries not yet trimmed are skipped.
        let mut from = page.from;
        while events.len() < page.limit {
            let wanted = page.limit - events.len();
            let reply: StreamRangeReply = match page.direction {
                Direction::Forward if from == u64::MAX => break,
                Direction::Forward => {
                    connection
                        .xrange_count(&stream, format!("(0-{from}"), "+", wanted)
                        .await
                }
                Direction::Backward if from == 0 => break,
                Direction::Backward if from == u64::MAX => {
                    connection.xrevrange_count(&stream, "+", "-", wanted).await
                }
                Direction::Backward => {
                    connection
                        .xrevrange_count(&stream, format!("(0-{from}"), "-", wanted)
                        .await
                }
            }
            .map_err(unavailable)?;
            for entry in &reply.ids {
                let (seq, event) = entry_event(&entry.id, &entry.map)?;
                from = seq;
                if is_retained(event.published_at_ms, self.retention_ms, now_ms) {
                    events.push(StoredEvent::new(epoch, seq, &event));
                }
            }
            if reply.ids.len() < wanted {
                break;
            }
        }
        Ok(events)
    }

    async fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut connection = self.connection.clone();
        let mut start = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ => format!("[{prefix}"),
        };
        let mut listed = Vec::new();
        while listed.len() < limit {
            let names: Vec<String> = connection
                .zrangebylex_limit(self.keys.channels(), &start, "+", 0, SCAN_CHUNK as isize)
                .await
                .map_err(unavailable)?;
            for name in &names {
                if !name.starts_with(prefix) || listed.len() == limit {
                    return Ok(listed);
                }
                // A channel's newest event is retained if any is.
                let newest: StreamRangeReply = connection
                    .xrevrange_count(self.keys.stream(name), "+", "-", 1)
                    .await
                    .map_err(unavailable)?;
                if let Some(entry) = newest.ids.first() {
                    let (_, event) = entry_event(&entry.id, &entry.map)?;
                    if is_retained(event.published_at_ms, self.retention_ms, now_ms) {
                        listed.push(name.clone());
                    }
                }
            }
            match names.last() {
                Some(last) if names.len() == SCAN_CHUNK => start = format!("({last}"),
                _ => break,
            }
        }
        Ok(listed)
    }

    async fn follow(&self, channel: &str) -> Result<Option<Follower>, StoreError> {
        self.topics.follow(self.keys.topic(channel)).await.map(Some)
    }

    fn cluster(&self) -> Option<Arc<dyn crate::cluster::Cluster>> {
        Some(self.cluster.clone())
    }

    async fn check(&self) -> Result<(), StoreError> {
        if self.reset.load(Ordering::Relaxed) {
            return Err(Self::reset_error());
        }
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        if self.retention_ms == 0 {
            return Ok(0);
        }
        let channels: Vec<String> = self
            .connection
            .clone()
            .zrange(self.keys.channels(), 0, -1)
            .await
            .map_err(unavailable)?;
        let mut removed = 0;
        for channel in channels {
            removed += self.trim(&channel, now_ms).await?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
