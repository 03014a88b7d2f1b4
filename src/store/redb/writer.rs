//! The group-commit writer: one thread, one transaction for everything queued, answers after
//! the fsync.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use ::redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::{
    EVENTS, EXPIRY, HEADS, MAX_APPENDS_PER_COMMIT,
    idempotency::Keys,
    open::{Reopenable, needs_reopen, storage},
    record::encode_events,
};
use crate::store::{Epoch, NewEvent, StoreError, StoredBatch, StoredEvent};

pub(super) struct Append {
    pub(super) channel: String,
    pub(super) events: Vec<NewEvent>,
    pub(super) reply: oneshot::Sender<Result<StoredBatch, StoreError>>,
}

/// Whether commits are failing, so that a failure (a full disk, say) is reported once when it
/// starts and once when it ends, not once per refused commit.
#[derive(Debug, Default)]
pub(super) struct CommitHealth {
    /// Failed commits in a row; `None` while commits succeed.
    failing: Option<u64>,
}

impl CommitHealth {
    /// Counts a failed commit; true for the first of a run (the one to report).
    pub(super) fn failed(&mut self) -> bool {
        let first = self.failing.is_none();
        *self.failing.get_or_insert(0) += 1;
        first
    }

    /// Counts a commit that went through; the number of failures it ends, if it ends a run.
    pub(super) fn succeeded(&mut self) -> Option<u64> {
        self.failing.take()
    }
}

/// The writer thread: one transaction for everything queued, then the answers.
pub(super) fn write_loop(
    db: &Reopenable,
    retention_ms: u64,
    mut queue: mpsc::UnboundedReceiver<Append>,
    commits: &AtomicU64,
) {
    let mut health = CommitHealth::default();
    // The records of a commit are encoded here one after the other: kept from commit to
    // commit, the buffer stops growing once it has held the largest.
    let mut record = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_APPENDS_PER_COMMIT {
            match queue.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        let started = crate::metrics::commit_started();
        let committed = db.get().and_then(|current| {
            let result = commit(&current, db.epoch, retention_ms, &batch, &mut record);
            if result.as_ref().is_err_and(needs_reopen) {
                // Nothing of this batch is acknowledged; the next one gets a fresh database.
                if let Err(error) = db.reopen(Some(current)) {
                    tracing::debug!(%error, "reopening the event store failed; retrying on next use");
                }
            }
            result
        });
        match committed {
            Ok(stored) => {
                if let Some(failed) = health.succeeded() {
                    tracing::warn!(failed_commits = failed, "event store commits succeed again");
                }
                commits.fetch_add(1, Ordering::Relaxed);
                let events = stored.iter().map(|batch| batch.len()).sum();
                crate::metrics::committed(events, started);
                for (append, stored) in batch.into_iter().zip(stored) {
                    let _ = append.reply.send(Ok(stored));
                }
            }
            Err(error) => {
                if health.failed() {
                    tracing::error!(
                        %error,
                        appends = batch.len(),
                        "event store commits fail: nothing is acknowledged until one succeeds \
                         (reported again when they do)"
                    );
                } else {
                    tracing::debug!(%error, appends = batch.len(), "commit failed again");
                }
                for append in batch {
                    let _ = append.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

pub(super) fn commit(
    db: &Database,
    epoch: Epoch,
    retention_ms: u64,
    batch: &[Append],
    record: &mut Vec<u8>,
) -> Result<Vec<StoredBatch>, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut heads = txn.open_table(HEADS).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut expiry = txn.open_table(EXPIRY).map_err(storage)?;
        // Opened for the first append that carries a key: most commits have none.
        let mut keys: Option<Keys<'_>> = None;
        // Heads of channels met in this batch: several appends may hit one channel.
        let mut last_seqs: HashMap<&str, u64> = HashMap::new();
        for append in batch {
            let channel = append.channel.as_str();
            let last_seq = match last_seqs.get(channel) {
                Some(seq) => *seq,
                None => heads
                    .get(channel)
                    .map_err(storage)?
                    .map_or(0, |v| v.value()),
            };
            let keyed = append.events.iter().any(|e| e.idempotency_key.is_some());
            let duplicates = if keyed && retention_ms > 0 {
                if keys.is_none() {
                    keys = Some(Keys::open(&txn)?);
                }
                match keys.as_mut() {
                    Some(keys) => {
                        keys.duplicates(channel, &append.events, last_seq + 1, retention_ms)?
                    }
                    None => Vec::new(),
                }
            } else {
                Vec::new()
            };
            let stored = if duplicates.is_empty() {
                StoredEvent::batch(epoch, last_seq + 1, &append.events)
            } else {
                let mut places = duplicates.iter().map(|(place, _)| *place).peekable();
                let fresh: Vec<NewEvent> = (append.events.iter().enumerate())
                    .filter(|(place, _)| places.next_if_eq(place).is_none())
                    .map(|(_, event)| event.clone())
                    .collect();
                StoredEvent::batch(epoch, last_seq + 1, &fresh).with_duplicates(duplicates)
            };
            let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
                results.push(stored);
                continue;
            };
            if retention_ms > 0 {
                encode_events(&stored, record);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_is_reported_once_when_it_starts_and_once_when_it_ends() {
        let mut health = CommitHealth::default();
        assert_eq!(
            health.succeeded(),
            None,
            "nothing to report while commits succeed"
        );
        assert!(health.failed(), "the first failure is reported");
        assert!(!health.failed());
        assert!(!health.failed());
        assert_eq!(
            health.succeeded(),
            Some(3),
            "the recovery says how many failed"
        );
        assert_eq!(health.succeeded(), None);
        assert!(health.failed(), "a new run is reported again");
    }
}
