//! The embedded on-disk store: one redb file in a data directory, the server's default.
//!
//! - **Group commit.** Appends from every channel go to one writer thread, which takes everything
//!   queued, writes it in one transaction and commits it with an fsync before any publisher is
//!   answered. Concurrent publishes share an fsync instead of queueing for one each.
//! - **Ids survive restarts.** Each channel's last sequence number is stored beside its events
//!   and kept when the events expire. The store's epoch is drawn once, when the file is created:
//!   a replaced or wiped data directory has a new epoch, so old ids read as `store reset`.
//! - **Exact retention.** Reads skip events whose window has passed; deleting them is upkeep,
//!   done in small transactions through an index by publish time so it never stalls publishes.
//! - **Nothing silently wiped.** A file that cannot be opened, is locked by another process or is
//!   corrupt is an error at open; the caller refuses to start.
//!
//! Tables:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | name | `epoch`, `format` |
//! | `heads` | channel | last sequence number assigned |
//! | `events` | (channel, first seq) | the events of one append: published_at_ms, filter, frame each |
//! | `expiry` | (newest published_at_ms, channel, first seq) | last seq of that append |
//!
//! One record per append, not per event: a commit of many events is a few B-tree inserts.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{EventStore, History, StoreError, is_retained};
use crate::{
    event::{Epoch, NewEvent, StoredBatch, StoredEvent},
    filter::Filter,
    wire::Frame,
};

/// The file inside the data directory.
/// The file the store keeps in its data directory.
pub const FILE_NAME: &str = "events.redb";
/// The layout written by this version; a newer one is refused rather than misread.
const FORMAT: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const EXPIRY: TableDefinition<(u64, &str, u64), u64> = TableDefinition::new("expiry");

/// Appends committed in one transaction at most: bounds a commit's size and latency.
const MAX_APPENDS_PER_COMMIT: usize = 256;
/// Append records deleted per expiry transaction, so publishes interleave with a large purge.
const EXPIRY_CHUNK: usize = 512;

/// Events on disk, in a redb file.
pub struct RedbStore {
    db: Arc<Reopenable>,
    epoch: Epoch,
    retention_ms: u64,
    appends: Option<mpsc::UnboundedSender<Append>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

struct Append {
    channel: String,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<StoredBatch, StoreError>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("location", &self.db.location)
            .field("epoch", &self.epoch)
            .field("retention_ms", &self.retention_ms)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`, keeping events for `retention_ms`.
    ///
    /// Fails, and changes nothing, when the directory cannot be created, the file is held by
    /// another process, is corrupt, or was written by a newer version.
    pub fn open(data_dir: &Path, retention_ms: u64) -> Result<Self, StoreError> {
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(StoreError::Unavailable(format!(
                "data directory {} exists and is not a directory",
                data_dir.display()
            )));
        }
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(FILE_NAME);
        let location = path.display().to_string();
        Self::start(
            Box::new(move || Database::builder().create(&path)),
            location,
            retention_ms,
        )
    }

    /// A store on another redb storage backend than a file (redb's in-memory one, or one that
    /// injects faults in tests). `backend` is called again to reopen the database after a
    /// failed write.
    pub fn open_with_backend<B: StorageBackend>(
        backend: impl Fn() -> std::io::Result<B> + Send + Sync + 'static,
        retention_ms: u64,
    ) -> Result<Self, StoreError> {
        Self::start(
            Box::new(move || Database::builder().create_with_backend(backend()?)),
            "custom storage backend".to_owned(),
            retention_ms,
        )
    }

    fn start(open: Opener, location: String, retention_ms: u64) -> Result<Self, StoreError> {
        let db = open().map_err(|e| open_error(&location, e))?;
        let epoch = init_meta(&db).map_err(|e| match e {
            StoreError::Corrupt(why) => StoreError::Corrupt(format!("{location}: {why}")),
            other => other,
        })?;
        let db = Arc::new(Reopenable {
            current: RwLock::new(Some(Arc::new(db))),
            open,
            location,
            epoch,
        });
        let (appends, queue) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = {
            let db = db.clone();
            let commits = commits.clone();
            std::thread::Builder::new()
                .name("durable-iterator-writer".into())
                .spawn(move || write_loop(&db, retention_ms, queue, &commits))
                .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?
        };
        Ok(Self {
            db,
            epoch,
            retention_ms,
            appends: Some(appends),
            writer: Some(writer),
            commits,
        })
    }

    /// Durable commits of appended events so far (each is one fsync); with the events
    /// published, tells how well concurrent publishes share commits.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Where the events are: the redb file, or a custom backend.
    pub fn location(&self) -> &str {
        &self.db.location
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl Fn(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.run(work))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Opens the database: at start, and again after a failed write.
type Opener = Box<dyn Fn() -> Result<Database, ::redb::DatabaseError> + Send + Sync>;

/// The open database, and how to open it again. After an I/O error redb trusts nothing of its
/// state until reopened; reopening (which repairs what the failed commit left) lets the store
/// recover by itself once the cause is gone, e.g. disk space freed, with no restart.
struct Reopenable {
    /// `None` while a reopen failed; the next use tries again.
    current: RwLock<Option<Arc<Database>>>,
    open: Opener,
    /// Where the events are, for messages: the file, or a custom backend.
    location: String,
    epoch: Epoch,
}

/// The start of the message of errors that call for a reopen.
const IO_FAILURE: &str = "I/O failure in the data directory";

fn needs_reopen(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(message) if message.starts_with(IO_FAILURE))
}

impl Reopenable {
    /// The open database, reopening it if a reopen is due.
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match current {
            Some(db) => Ok(db),
            None => self.reopen(None),
        }
    }

    /// Runs `work`; if it met an I/O failure, reopens and runs it once more.
    fn run<T>(&self, work: impl Fn(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let db = self.get()?;
        match work(&db) {
            Err(error) if needs_reopen(&error) => {
                let db = self.reopen(Some(db))?;
                work(&db)
            }
            result => result,
        }
    }

    /// Replaces `failed` (or nothing, when the last reopen failed) with a fresh open. Whoever
    /// comes second finds the work done.
    fn reopen(&self, failed: Option<Arc<Database>>) -> Result<Arc<Database>, StoreError> {
        // Only the identity of the failed handle is kept while waiting for the lock: a reopen
        // in progress waits for every handle to go, so holding one here would stall it (for
        // its whole deadline) while this waits for it.
        let failed = failed.map(|db| Arc::downgrade(&db));
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match (&*current, &failed) {
            (Some(db), Some(failed)) if !std::ptr::eq(Arc::as_ptr(db), failed.as_ptr()) => {
                return Ok(db.clone());
            }
            (Some(db), None) => return Ok(db.clone()),
            _ => {}
        }
        if let Some(db) = current.take() {
            // The file lock goes with the last handle: readers hold one for a transaction.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&db) > 1 {
                if std::time::Instant::now() > deadline {
                    *current = Some(db);
                    return Err(StoreError::Unavailable(format!(
                        "{IO_FAILURE}: {} cannot be reopened while in use",
                        self.location
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let db = (self.open)().map_err(|e| open_error(&self.location, e))?;
        let epoch = init_meta(&db)?;
        if epoch != self.epoch {
            return Err(StoreError::Corrupt(format!(
                "{} changed its epoch while open (replaced under a running server?)",
                self.location
            )));
        }
        tracing::warn!(location = %self.location, "event store reopened after an I/O failure");
        let db = Arc::new(db);
        *current = Some(db.clone());
        Ok(db)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // The writer finishes what is queued and exits; joining it first means the last handle
        // to the database is ours, so the file is closed cleanly (no repair at the next open).
        self.appends.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Reads the epoch, or draws and stores one in a new file.
fn init_meta(db: &Database) -> Result<Epoch, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let epoch = {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let format = meta.get("format").map_err(storage)?.map(|v| v.value());
        match format {
            Some(format) if format != FORMAT => {
                return Err(StoreError::Corrupt(format!(
                    "written in format {format} by another version (this one reads format \
                     {FORMAT} only): move the data directory away or use that version"
                )));
            }
            Some(_) => {}
            None => {
                meta.insert("format", FORMAT).map_err(storage)?;
            }
        }
        let stored = meta.get("epoch").map_err(storage)?.map(|v| v.value());
        match stored {
            Some(epoch) => Epoch::try_from(epoch)
                .map_err(|_| StoreError::Corrupt(format!("epoch {epoch} out of range")))?,
            None => {
                let epoch: Epoch = rand::random();
                meta.insert("epoch", u64::from(epoch)).map_err(storage)?;
                epoch
            }
        }
    };
    // Create every table now, so readers never meet a missing one.
    txn.open_table(HEADS).map_err(storage)?;
    txn.open_table(EVENTS).map_err(storage)?;
    txn.open_table(EXPIRY).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(epoch)
}

fn open_error(at: &str, error: ::redb::DatabaseError) -> StoreError {
    use ::redb::{DatabaseError, StorageError as Redb};
    match error {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
            "{at} is in use by another process (is another server running on this data directory?)"
        )),
        DatabaseError::Storage(Redb::Corrupted(why)) => {
            StoreError::Corrupt(format!("{at} is corrupt: {why}"))
        }
        DatabaseError::Storage(Redb::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("{at} is not a readable event store: {io}"))
        }
        DatabaseError::UpgradeRequired(version) => StoreError::Corrupt(format!(
            "{at} has file format {version}, which this version cannot open"
        )),
        other => StoreError::Unavailable(format!("cannot open {at}: {other}")),
    }
}

/// Any redb error, as a store error: data damage is `Corrupt`, the rest `Unavailable`.
fn storage(error: impl Into<::redb::Error>) -> StoreError {
    match error.into() {
        ::redb::Error::Corrupted(why) => StoreError::Corrupt(why),
        ::redb::Error::PreviousIo => StoreError::Unavailable(format!(
            "{IO_FAILURE}: an earlier write failed (disk full?); reopening"
        )),
        ::redb::Error::Io(io) => StoreError::Unavailable(format!("{IO_FAILURE}: {io}")),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// The writer thread: one transaction for everything queued, then the answers.
fn write_loop(
    db: &Reopenable,
    retention_ms: u64,
    mut queue: mpsc::UnboundedReceiver<Append>,
    commits: &AtomicU64,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_APPENDS_PER_COMMIT {
            match queue.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        let committed = db.get().and_then(|current| {
            let result = commit(&current, db.epoch, retention_ms, &batch);
            if result.as_ref().is_err_and(needs_reopen) {
                // Nothing of this batch is acknowledged; the next one gets a fresh database.
                if let Err(error) = db.reopen(Some(current)) {
                    tracing::error!(%error, "reopening the event store failed; retrying on next use");
                }
            }
            result
        });
        match committed {
            Ok(stored) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for (append, stored) in batch.into_iter().zip(stored) {
                    let _ = append.reply.send(Ok(stored));
                }
            }
            Err(error) => {
                tracing::error!(%error, appends = batch.len(), "commit failed; nothing acknowledged");
                for append in batch {
                    let _ = append.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn commit(
    db: &Database,
    epoch: Epoch,
    retention_ms: u64,
    batch: &[Append],
) -> Result<Vec<StoredBatch>, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut heads = txn.open_table(HEADS).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(storage)?;
        // Heads of channels met in this batch: several appends may hit one channel.
        let mut last_seqs: HashMap<&str, u64> = HashMap::new();
        let mut record = Vec::new();
        for append in batch {
            let channel = append.channel.as_str();
            let last_seq = match last_seqs.get(channel) {
                Some(seq) => *seq,
                None => heads
                    .get(channel)
                    .map_err(storage)?
                    .map_or(0, |v| v.value()),
            };
            let stored = StoredEvent::batch(epoch, last_seq + 1, &append.events);
            let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
                results.push(stored);
                continue;
            };
            if retention_ms > 0 {
                encode_events(&stored, &mut record);
                events
                    .insert((channel, first.seq), record.as_slice())
                    .map_err(storage)?;
                // The record goes when its newest event expires; reads skip older ones before.
                let newest = stored.iter().map(|e| e.published_at_ms).max();
                expiry
                    .insert(
                        (newest.unwrap_or(first.published_at_ms), channel, first.seq),
                        last.seq,
                    )
                    .map_err(storage)?;
            }
            last_seqs.insert(channel, last.seq);
            results.push(stored);
        }
        for (channel, seq) in last_seqs {
            heads.insert(channel, seq).map_err(storage)?;
        }
    }
    txn.commit().map_err(storage)?;
    Ok(results)
}

/// The events of one append, each as `published_at_ms` (8 bytes LE), filter length (4 bytes
/// LE), the filter as JSON (empty for everyone), frame length (4 bytes LE), the encoded frame.
fn encode_events(events: &[StoredEvent], out: &mut Vec<u8>) {
    out.clear();
    // Events of one publish share their filter: it is serialized once for a run of them.
    let mut filter: Option<(&Arc<Filter>, Vec<u8>)> = None;
    for event in events {
        out.extend_from_slice(&event.published_at_ms.to_le_bytes());
        let json = match &filter {
            Some((shared, json)) if Arc::ptr_eq(shared, &event.filter) => json,
            _ => {
                let json = if event.filter.is_everyone() {
                    Vec::new()
                } else {
                    // A filter is strings and lists of strings: serializing it cannot fail.
                    serde_json::to_vec(event.filter.as_ref()).unwrap_or_default()
                };
                &filter.insert((&event.filter, json)).1
            }
        };
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(&(event.frame.bytes().len() as u32).to_le_bytes());
        out.extend_from_slice(event.frame.bytes());
    }
}

/// One event of a record, not yet decoded.
struct RawEvent<'a> {
    seq: u64,
    published_at_ms: u64,
    filter: &'a [u8],
    frame: &'a [u8],
}

impl RawEvent<'_> {
    fn decode(&self) -> Result<StoredEvent, StoreError> {
        let filter = if self.filter.is_empty() {
            Filter::everyone()
        } else {
            serde_json::from_slice(self.filter).map_err(|_| malformed(self.seq))?
        };
        Ok(StoredEvent {
            seq: self.seq,
            published_at_ms: self.published_at_ms,
            filter: Arc::new(filter),
            frame: Frame::from_encoded(Bytes::copy_from_slice(self.frame)),
        })
    }
}

fn malformed(seq: u64) -> StoreError {
    StoreError::Corrupt(format!("the record of event {seq} is malformed"))
}

/// The events of the record of the append that starts at `first_seq`.
fn raw_events(
    first_seq: u64,
    mut record: &[u8],
) -> impl Iterator<Item = Result<RawEvent<'_>, StoreError>> {
    let mut seq = first_seq;
    std::iter::from_fn(move || {
        if record.is_empty() {
            return None;
        }
        let mut take = |n: usize| {
            let (head, rest) = record.split_at_checked(n)?;
            record = rest;
            Some(head)
        };
        let event = (|| {
            let published_at_ms = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let filter_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let filter = take(filter_len)?;
            let frame_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let frame = take(frame_len)?;
            Some(RawEvent {
                seq,
                published_at_ms,
                filter,
                frame,
            })
        })();
        let event = event.ok_or_else(|| {
            record = &[];
            malformed(seq)
        });
        seq += 1;
        Some(event)
    })
}

#[async_trait]
impl EventStore for RedbStore {
    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn retention_ms(&self) -> u64 {
        self.retention_ms
    }

    async fn append(&self, channel: &str, events: &[NewEvent]) -> Result<StoredBatch, StoreError> {
        let (reply, answer) = oneshot::channel();
        let append = Append {
            channel: channel.to_owned(),
            events: events.to_vec(),
            reply,
        };
        let closed = || StoreError::Unavailable("the store is closed".into());
        self.appends
            .as_ref()
            .ok_or_else(closed)?
            .send(append)
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn last_seq(&self, channel: &str) -> Result<u64, StoreError> {
        let channel = channel.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let heads = txn.open_table(HEADS).map_err(storage)?;
            Ok(heads
                .get(channel.as_str())
                .map_err(storage)?
                .map_or(0, |v| v.value()))
        })
        .await
    }

    async fn read(
        &self,
        channel: &str,
        after: u64,
        until: u64,
        now_ms: u64,
    ) -> Result<History, StoreError> {
        let channel = channel.to_owned();
        let retention_ms = self.retention_ms;
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(EVENTS).map_err(storage)?;
            let channel = channel.as_str();
            let retained =
                |event: &RawEvent| is_retained(event.published_at_ms, retention_ms, now_ms);
            // Events not yet purged may still sit before the oldest retained one.
            let mut oldest_retained = None;
            'records: for entry in table
                .range((channel, 0)..=(channel, u64::MAX))
                .map_err(storage)?
            {
                let (key, value) = entry.map_err(storage)?;
                for event in raw_events(key.value().1, value.value()) {
                    let event = event?;
                    if retained(&event) {
                        oldest_retained = Some(event.seq);
                        break 'records;
                    }
                }
            }
            let mut events = Vec::new();
            if after < until {
                // From the record that holds `after + 1`: the last one starting at or before it.
                let start = table
                    .range((channel, 0)..=(channel, after + 1))
                    .map_err(storage)?
                    .next_back()
                    .transpose()
                    .map_err(storage)?
                    .map_or(after + 1, |(key, _)| key.value().1);
                for entry in table
                    .range((channel, start)..=(channel, until))
                    .map_err(storage)?
                {
                    let (key, value) = entry.map_err(storage)?;
                    for event in raw_events(key.value().1, value.value()) {
                        let event = event?;
                        if event.seq > after && event.seq <= until && retained(&event) {
                            events.push(event.decode()?);
                        }
                    }
                }
            }
            Ok(History {
                events,
                oldest_retained,
            })
        })
        .await
    }

    async fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let retention_ms = self.retention_ms;
        if retention_ms == 0 {
            return Ok(0);
        }
        self.blocking(move |db| {
            // Most ticks find nothing due: a read says so without a write transaction, which
            // would queue behind the writer's commits.
            let due = {
                let txn = db.begin_read().map_err(storage)?;
                let expiry = txn.open_table(EXPIRY).map_err(storage)?;
                let oldest = expiry.first().map_err(storage)?;
                oldest.is_some_and(|(key, _)| !is_retained(key.value().0, retention_ms, now_ms))
            };
            if !due {
                return Ok(0);
            }
            let mut removed = 0;
            loop {
                let (chunk_removed, more) = expire_chunk(db, retention_ms, now_ms)?;
                removed += chunk_removed;
                if !more {
                    return Ok(removed);
                }
            }
        })
        .await
    }
}

/// Deletes up to [`EXPIRY_CHUNK`] expired appends in one transaction. Returns the events
/// removed and whether more may be due.
fn expire_chunk(
    db: &Database,
    retention_ms: u64,
    now_ms: u64,
) -> Result<(usize, bool), StoreError> {
    let mut txn = db.begin_write().map_err(storage)?;
    // Losing a purge in a crash is harmless (reads skip expired events), so it need not wait
    // for an fsync: the next durable commit carries it.
    txn.set_durability(Durability::None).map_err(storage)?;
    let mut removed = 0;
    let mut more = false;
    {
        let mut expiry = txn.open_table(EXPIRY).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut due = Vec::new();
        for entry in expiry.iter().map_err(storage)? {
            let (key, last) = entry.map_err(storage)?;
            let (published_at_ms, channel, first) = key.value();
            if is_retained(published_at_ms, retention_ms, now_ms) {
                break;
            }
            if due.len() == EXPIRY_CHUNK {
                more = true;
                break;
            }
            due.push((published_at_ms, channel.to_owned(), first, last.value()));
        }
        for (published_at_ms, channel, first, last) in due {
            let channel = channel.as_str();
            if events.remove((channel, first)).map_err(storage)?.is_some() {
                removed += (last + 1 - first) as usize;
            }
            expiry
                .remove((published_at_ms, channel, first))
                .map_err(storage)?;
        }
    }
    txn.commit().map_err(storage)?;
    Ok((removed, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{self, event};

    fn open(dir: &tempfile::TempDir, retention_ms: u64) -> RedbStore {
        RedbStore::open(dir.path(), retention_ms).unwrap()
    }

    #[tokio::test]
    async fn keeps_the_store_contract() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        contract::assigns_consecutive_seqs_and_reads_ranges(&open(&dirs[0], 10_000)).await;
        contract::retention_is_exact(&open(&dirs[1], 1_000)).await;
        contract::retention_zero_keeps_nothing_but_counts(&open(&dirs[2], 0)).await;
        contract::retention_is_exact_within_one_append(&open(&dirs[3], 1_000)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_keep_every_channel_consecutive() {
        let dir = tempfile::tempdir().unwrap();
        contract::concurrent_appends_keep_every_channel_consecutive(Arc::new(open(&dir, 10_000)))
            .await;
    }

    #[tokio::test]
    async fn ids_epoch_and_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 10_000);
        let epoch = store.epoch();
        let stored = store.append("c", &[event(1), event(2)]).await.unwrap();
        drop(store);
        let store = open(&dir, 10_000);
        assert_eq!(store.epoch(), epoch);
        assert_eq!(store.last_seq("c").await.unwrap(), 2);
        let read = store.read("c", 0, 2, 3).await.unwrap();
        assert_eq!(read.events.len(), 2);
        assert_eq!(read.events[1].frame, stored[1].frame);
        assert_eq!(store.append("c", &[event(3)]).await.unwrap()[0].seq, 3);
        // Expired events are gone after a reopen too, and the ids still go on.
        assert_eq!(store.expire(20_000).await.unwrap(), 3);
        drop(store);
        let store = open(&dir, 10_000);
        assert_eq!(store.last_seq("c").await.unwrap(), 3);
        assert_eq!(
            store.read("c", 0, 3, 20_000).await.unwrap().oldest_retained,
            None
        );
    }

    #[tokio::test]
    async fn a_new_data_directory_has_a_new_epoch() {
        let epochs: std::collections::HashSet<Epoch> = (0..4)
            .map(|_| open(&tempfile::tempdir().unwrap(), 0).epoch())
            .collect();
        assert_eq!(epochs.len(), 4);
    }

    #[tokio::test]
    async fn expiry_purges_in_chunks_and_keeps_what_is_retained() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000);
        for n in 0..(EXPIRY_CHUNK as u64 * 2 + 10) {
            store.append("c", &[event(n % 100)]).await.unwrap();
        }
        store.append("c", &[event(900)]).await.unwrap();
        let total = EXPIRY_CHUNK * 2 + 10;
        // Published at 0 to 99: all expired at 1,099 + 1; the one at 900 is kept until 1,900.
        assert_eq!(store.expire(1_100).await.unwrap(), total);
        let last = total as u64 + 1;
        let read = store.read("c", 0, last, 1_100).await.unwrap();
        assert_eq!(read.oldest_retained, Some(last));
        assert_eq!(read.events.len(), 1);
    }

    #[test]
    fn a_locked_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(&dir, 0);
        let error = RedbStore::open(dir.path(), 0).unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        assert!(
            error.to_string().contains("in use by another process"),
            "{error}"
        );
    }

    #[test]
    fn a_corrupt_file_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let garbage = b"this is not a redb file, but it is not empty either".repeat(100);
        std::fs::write(&path, &garbage).unwrap();
        let error = RedbStore::open(dir.path(), 0).unwrap_err();
        assert!(
            error.to_string().contains(&*path.to_string_lossy()),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "nothing wiped");
    }

    #[test]
    fn a_file_in_place_of_the_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"x").unwrap();
        let error = RedbStore::open(&path, 0).unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    /// redb's file backend with a switch that makes writes and syncs fail, as a full disk
    /// would.
    #[derive(Debug)]
    struct FailingDisk {
        inner: ::redb::backends::FileBackend,
        full: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FailingDisk {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: no space left on device"));
            }
            Ok(())
        }
    }

    impl StorageBackend for FailingDisk {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.inner.close()
        }
        fn try_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, ::redb::BackendError> {
            self.inner.try_lock_range(start, end)
        }
        fn try_lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, ::redb::BackendError> {
            self.inner.try_lock_shared_range(start, end)
        }
        fn unlock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), ::redb::BackendError> {
            self.inner.unlock_range(start, end)
        }
    }

    #[tokio::test]
    async fn a_write_error_acknowledges_nothing_and_the_store_recovers_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let switch = full.clone();
        let store = RedbStore::open_with_backend(
            move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                let inner = ::redb::backends::FileBackend::new(file)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(FailingDisk {
                    inner,
                    full: switch.clone(),
                })
            },
            10_000,
        )
        .unwrap();
        store.append("c", &[event(1)]).await.unwrap();
        full.store(true, Ordering::SeqCst);
        let error = store.append("c", &[event(2), event(2)]).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        assert!(error.to_string().contains("no space left"), "{error}");
        assert_eq!(store.commits(), 1);

        // Space is back: no restart needed, and the failed events were never stored.
        full.store(false, Ordering::SeqCst);
        assert_eq!(store.last_seq("c").await.unwrap(), 1);
        assert_eq!(store.append("c", &[event(3)]).await.unwrap()[0].seq, 2);
        let read = store.read("c", 0, 2, 3).await.unwrap();
        assert_eq!(
            read.events
                .iter()
                .map(|e| e.published_at_ms)
                .collect::<Vec<_>>(),
            [1, 3]
        );
        let epoch = store.epoch();
        drop(store);
        let reopened = open(&dir, 10_000);
        assert_eq!(
            (reopened.epoch(), reopened.last_seq("c").await.unwrap()),
            (epoch, 2)
        );
    }

    #[test]
    fn a_reader_that_meets_an_io_failure_does_not_stall_a_reopen_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 10_000);
        let db = store.db.clone();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let reopening = std::sync::Mutex::new(None);
        let read = db.run(|_| {
            if calls.fetch_add(1, Ordering::SeqCst) > 0 {
                return Ok("read after the reopen");
            }
            // The writer meets the failure too and starts reopening while this read still
            // holds the database: it waits for the read's handle to go.
            let writer_side = db.clone();
            *reopening.lock().unwrap() = Some(std::thread::spawn(move || {
                let failed = writer_side.get().unwrap();
                writer_side.reopen(Some(failed)).map(|_| ())
            }));
            while db.current.try_read().is_ok() {
                std::thread::yield_now();
            }
            Err(StoreError::Unavailable(format!("{IO_FAILURE}: injected")))
        });
        assert_eq!(read, Ok("read after the reopen"));
        // Before the fix the reader kept its handle while queueing for the lock, and the
        // writer's reopen gave up after its deadline with "cannot be reopened while in use".
        let writer = reopening.into_inner().unwrap().unwrap().join().unwrap();
        assert_eq!(writer, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn records_round_trip() {
        let filter = Filter {
            tags: Some(vec!["t".into()]),
            targets: None,
            exclude: vec!["s".into()],
        };
        // A run of events sharing one filter is encoded with it each time.
        let shared = Arc::new(filter);
        let stored: Vec<StoredEvent> = [Arc::new(Filter::everyone()), shared.clone(), shared]
            .into_iter()
            .zip(9..)
            .map(|(filter, seq)| {
                let new = NewEvent {
                    filter,
                    ..event(40 + seq)
                };
                StoredEvent::new(7, seq, &new)
            })
            .collect();
        let mut record = Vec::new();
        encode_events(&stored, &mut record);
        let decoded: Vec<StoredEvent> = raw_events(9, &record)
            .map(|raw| raw.and_then(|raw| raw.decode()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded.len(), 3);
        for (decoded, stored) in decoded.iter().zip(&stored) {
            assert_eq!(decoded.seq, stored.seq);
            assert_eq!(decoded.published_at_ms, stored.published_at_ms);
            assert_eq!(decoded.filter, stored.filter);
            assert_eq!(decoded.frame, stored.frame);
        }
        // A record cut anywhere reads as corrupt, never as fewer events.
        for cut in [1, 8, 12, record.len() - 1] {
            let results: Vec<_> = raw_events(9, &record[..cut]).collect();
            assert!(
                results
                    .last()
                    .is_some_and(|last| matches!(last, Err(StoreError::Corrupt(_)))),
                "cut at {cut}"
            );
        }
    }
}
