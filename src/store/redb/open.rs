//! Opening the file, and opening it again after an I/O failure; the store's metadata.

use std::sync::{Arc, RwLock};

use ::redb::{Database, ReadableTable};

use super::{
    EVENTS, EXPIRY, FORMAT, HEADS, META,
    idempotency::{IDEMPOTENCY, IDEMPOTENCY_EXPIRY},
};
use crate::store::{Epoch, StoreError};

/// Opens the database: at start, and again after a failed write.
pub(super) type Opener = Box<dyn Fn() -> Result<Database, ::redb::DatabaseError> + Send + Sync>;

/// The open database, and how to open it again. After an I/O error redb trusts nothing of its
/// state until reopened; reopening (which repairs what the failed commit left) lets the store
/// recover by itself once the cause is gone, e.g. disk space freed, with no restart.
pub(super) struct Reopenable {
    /// `None` while a reopen failed; the next use tries again.
    pub(super) current: RwLock<Option<Arc<Database>>>,
    pub(super) open: Opener,
    /// Where the events are, for messages: the file, or a custom backend.
    pub(super) location: String,
    pub(super) epoch: Epoch,
}

/// The start of the message of errors that call for a reopen.
pub(super) const IO_FAILURE: &str = "I/O failure in the data directory";

pub(super) fn needs_reopen(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(message) if message.starts_with(IO_FAILURE))
}

impl Reopenable {
    /// The open database, reopening it if a reopen is due.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
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
    pub(super) fn run<T>(
        &self,
        work: impl Fn(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
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
    pub(super) fn reopen(
        &self,
        failed: Option<Arc<Database>>,
    ) -> Result<Arc<Database>, StoreError> {
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
            if let Err(db) = sole_handle(db) {
                *current = Some(db);
                return Err(StoreError::Unavailable(format!(
                    "{IO_FAILURE}: {} cannot be reopened while in use",
                    self.location
                )));
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
        // Reported by the writer when commits succeed again, not per reopen (a full disk
        // reopens once per refused commit).
        tracing::debug!(location = %self.location, "event store reopened after an I/O failure");
        let db = Arc::new(db);
        *current = Some(db.clone());
        Ok(db)
    }

    /// Runs `work` on the database with no transaction open: new ones wait until it is done.
    /// `None` when transactions begun before stay open too long (the next call tries again).
    pub(super) fn exclusive<T>(&self, work: impl FnOnce(&mut Database) -> T) -> Option<T> {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let db = current.take()?;
        match sole_handle(db) {
            Ok(mut db) => {
                let result = Arc::get_mut(&mut db).map(work);
                *current = Some(db);
                result
            }
            Err(db) => {
                *current = Some(db);
                None
            }
        }
    }
}

/// Waits until `db` is the last handle, i.e. every transaction begun with another has ended
/// (new ones cannot begin: the caller holds the lock they take a handle under). Gives `db`
/// back as the error after 10 s.
fn sole_handle(db: Arc<Database>) -> Result<Arc<Database>, Arc<Database>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&db) > 1 {
        if std::time::Instant::now() > deadline {
            return Err(db);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(db)
}

/// Reads the epoch, or draws and stores one in a new file.
pub(super) fn init_meta(db: &Database) -> Result<Epoch, StoreError> {
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
    // Files written before idempotency keys get these tables here.
    txn.open_table(IDEMPOTENCY).map_err(storage)?;
    txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
    txn.commit().map_err(storage)?;
    Ok(epoch)
}

pub(super) fn open_error(at: &str, error: ::redb::DatabaseError) -> StoreError {
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
pub(super) fn storage(error: impl Into<::redb::Error>) -> StoreError {
    match error.into() {
        ::redb::Error::Corrupted(why) => StoreError::Corrupt(why),
        ::redb::Error::PreviousIo => StoreError::Unavailable(format!(
            "{IO_FAILURE}: an earlier write failed (disk full?); reopening"
        )),
        ::redb::Error::Io(io) => StoreError::Unavailable(format!("{IO_FAILURE}: {io}")),
        other => StoreError::Unavailable(other.to_string()),
    }
}
