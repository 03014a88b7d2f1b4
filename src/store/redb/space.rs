//! Giving back the space of purged events, while the channels are idle too.
//!
//! The purge commits without an fsync (losing one in a crash is harmless), and redb reuses the
//! pages such a commit frees only after a durable commit; with no publishes coming, none comes.
//! So a purge is followed by one durable commit, which also cuts free pages off the file's
//! end. Free pages in the middle stay in the file: when the live pages are a small part of a
//! large file, the file is compacted (the live pages are moved to its start and the rest cut
//! off).

use std::{
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::open::{Reopenable, storage};
use crate::store::StoreError;

/// A file smaller than this is never compacted: the space is not worth the pause.
const COMPACT_AT_LEAST_BYTES: u64 = 16 << 20;
/// A file is compacted when its live pages are less than this share of it.
const COMPACT_BELOW_LIVE_PERCENT: u64 = 25;
/// Durable commits a reclaim makes at most to shrink the file's free end.
const MAX_SHRINK_COMMITS: usize = 16;
/// Publishes wait while a compaction moves the live pages: after one, the next waits this many
/// times as long as it took (at least [`COMPACT_AT_MOST_EVERY`]), so that compacting takes at
/// most 1 % of the writer's time whatever the file's size.
const COMPACT_PAUSE_FACTOR: u32 = 100;
const COMPACT_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// What a reclaim found and did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reclaimed {
    /// Bytes of the pages in use.
    pub(super) live_bytes: u64,
    /// The file's size before and after a compaction, if one ran.
    pub(super) compacted: Option<(u64, u64)>,
}

/// Whether space is to be given back, and when the file was last compacted.
#[derive(Debug)]
pub(super) struct Space {
    /// The file, if the store is one (a custom backend is never compacted).
    file: Option<PathBuf>,
    state: Mutex<SpaceState>,
}

#[derive(Debug, Default)]
struct SpaceState {
    /// Events were purged since the last reclaim (or a compaction was put off).
    due: bool,
    /// No compaction before this.
    next_compaction: Option<Instant>,
}

impl Space {
    pub(super) fn new(file: Option<PathBuf>) -> Self {
        Self {
            file,
            state: Mutex::default(),
        }
    }

    /// Notes that a purge freed pages.
    pub(super) fn purged(&self) {
        self.lock().due = true;
    }

    /// Whether a [`reclaim`](Self::reclaim) has anything to do.
    pub(super) fn is_due(&self) -> bool {
        self.lock().due
    }

    /// Gives back the space freed since the last call, if any; blocking.
    pub(super) fn reclaim(&self, db: &Reopenable) -> Result<Option<Reclaimed>, StoreError> {
        if !self.lock().due {
            return Ok(None);
        }
        let durable_commit = || {
            db.run(|db| {
                let txn = db.begin_write().map_err(storage)?;
                let stats = txn.stats().map_err(storage)?;
                // Empty, and durable (the default): it is what lets redb reuse the freed pages.
                txn.commit().map_err(storage)?;
                Ok(stats.allocated_pages() * stats.page_size() as u64)
            })
        };
        let mut live_bytes = durable_commit()?;
        // Each durable commit cuts off up to half of the free pages at the file's end.
        for _ in 0..MAX_SHRINK_COMMITS {
            let before = self.file_bytes();
            if before.is_none() {
                break;
            }
            live_bytes = durable_commit()?;
            if self.file_bytes() >= before {
                break;
            }
        }
        let mut state = self.lock();
        state.due = false;
        let Some(file_bytes) = self.file_bytes() else {
            return Ok(Some(Reclaimed {
                live_bytes,
                compacted: None,
            }));
        };
        let worth_it = file_bytes >= COMPACT_AT_LEAST_BYTES
            && live_bytes * 100 < file_bytes * COMPACT_BELOW_LIVE_PERCENT;
        if !worth_it {
            return Ok(Some(Reclaimed {
                live_bytes,
                compacted: None,
            }));
        }
        if state.next_compaction.is_some_and(|at| Instant::now() < at) {
            // Tried again on a later call.
            state.due = true;
            return Ok(Some(Reclaimed {
                live_bytes,
                compacted: None,
            }));
        }
        drop(state);
        let started = Instant::now();
        let result = db.exclusive(|db| db.compact());
        let took = started.elapsed();
        self.lock().next_compaction =
            Some(Instant::now() + (took * COMPACT_PAUSE_FACTOR).max(COMPACT_AT_MOST_EVERY));
        let compacted = match result {
            Some(Ok(_)) => true,
            Some(Err(error)) => {
                tracing::warn!(%error, "compacting the event store failed");
                false
            }
            // Transactions stayed open: tried again after the next purge.
            None => false,
        };
        Ok(Some(Reclaimed {
            live_bytes,
            compacted: compacted.then(|| (file_bytes, self.file_bytes().unwrap_or(file_bytes))),
        }))
    }

    fn file_bytes(&self) -> Option<u64> {
        let file = self.file.as_ref()?;
        std::fs::metadata(file).ok().map(|meta| meta.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpaceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
