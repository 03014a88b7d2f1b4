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
//! | `idempotency`, `idempotency_expiry` | see `idempotency.rs` | |
//!
//! One record per append, not per event: a commit of many events is a few B-tree inserts.

mod idempotency;
mod open;
mod pages;
mod query;
pub(crate) mod record;
mod space;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use ::redb::{Database, StorageBackend, TableDefinition};
use tokio::sync::mpsc;

use super::StoreError;
use crate::event::Epoch;

use open::{Opener, Reopenable, init_meta, open_error};
use space::Space;
use writer::{Append, write_loop};

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
    space: Arc<Space>,
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
        let file = path.clone();
        Self::start(
            Box::new(move || Database::builder().create(&path)),
            location,
            Some(file),
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
            None,
            retention_ms,
        )
    }

    fn start(
        open: Opener,
        location: String,
        file: Option<PathBuf>,
        retention_ms: u64,
    ) -> Result<Self, StoreError> {
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
            space: Arc::new(Space::new(file)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{self, event};
    use crate::store::{EventStore, NewEvent};
    use open::IO_FAILURE;

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

    #[tokio::test]
    async fn keeps_the_store_contract_for_pages_listings_and_keys() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        contract::pages_read_either_way_within_retention(&open(&dirs[0], 1_000)).await;
        contract::channels_are_listed_in_pages(&open(&dirs[1], 1_000)).await;
        contract::a_key_stores_its_event_once_while_retained(&open(&dirs[2], 1_000)).await;
        contract::retention_zero_remembers_no_key(&open(&dirs[3], 0)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_appends_with_one_key_store_one_event() {
        let dir = tempfile::tempdir().unwrap();
        contract::racing_appends_with_one_key_store_one_event(Arc::new(open(&dir, 10_000))).await;
    }

    #[tokio::test]
    async fn keys_survive_reopening_and_a_file_without_key_tables_opens() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 10_000);
        let first = store.append("c", &[contract::keyed(1, "k")]).await.unwrap();
        drop(store);
        let store = open(&dir, 10_000);
        let again = store.append("c", &[contract::keyed(2, "k")]).await.unwrap();
        assert_eq!(again.answers(), first.answers());
        assert_eq!(store.last_seq("c").await.unwrap(), 1);
        drop(store);
        // A file of the previous version: the same tables but the key ones.
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(idempotency::IDEMPOTENCY).unwrap();
            txn.delete_table(idempotency::IDEMPOTENCY_EXPIRY).unwrap();
            txn.commit().unwrap();
        }
        let store = open(&dir, 10_000);
        assert_eq!(store.last_seq("c").await.unwrap(), 1);
        let after = store.append("c", &[contract::keyed(3, "k")]).await.unwrap();
        assert_eq!(after.answers(), [2], "the old file had no keys");
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_space_of_expired_events_goes_back_while_idle() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 1_000);
        let file_bytes = || std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        let payload = bytes::Bytes::from(vec![b'x'; 4_096]);
        let batch: Vec<NewEvent> = (0..64)
            .map(|_| NewEvent {
                payload: payload.clone(),
                ..event(0)
            })
            .collect();
        // 32 MiB of events, then one that stays: the file is mostly free once the rest expire.
        for n in 0..128 {
            store.append(&format!("c{}", n % 4), &batch).await.unwrap();
        }
        store.append("kept", &[event(900)]).await.unwrap();
        let full = file_bytes();
        assert!(full > 32 << 20, "{full} bytes");
        // No publish comes after the purge: the upkeep alone gives the space back.
        assert_eq!(store.expire(1_100).await.unwrap(), 128 * 64);
        let after = file_bytes();
        assert!(
            after * 4 < full,
            "the file went from {full} to only {after} bytes"
        );
        let read = store.read("kept", 0, 1, 1_100).await.unwrap();
        assert_eq!(
            read.events.len(),
            1,
            "the live event survives the compaction"
        );
        assert_eq!(store.append("kept", &[event(901)]).await.unwrap()[0].seq, 2);
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
}
