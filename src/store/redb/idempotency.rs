//! Idempotency keys on disk: which event of a channel carried a key, decided in the writer's
//! transaction together with the append, and purged with the events.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `idempotency` | (channel, key) | (seq, published_at_ms) of the event that carried it |
//! | `idempotency_expiry` | (published_at_ms, channel, key) | () |
//!
//! Tables of their own, so files written before keys existed open as they are (the format is
//! unchanged; `init_meta` creates the tables).

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};

use super::{EXPIRY_CHUNK, open::storage};
use crate::store::{NewEvent, StoreError, is_retained};

pub(super) const IDEMPOTENCY: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("idempotency");
pub(super) const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");

/// The keys of a write transaction.
pub(super) struct Keys<'txn> {
    keys: Table<'txn, (&'static str, &'static str), (u64, u64)>,
    by_age: Table<'txn, (u64, &'static str, &'static str), ()>,
}

impl<'txn> Keys<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            keys: txn.open_table(IDEMPOTENCY).map_err(storage)?,
            by_age: txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?,
        })
    }

    /// The events of an append to `channel` from `first_seq` that duplicate a retained event
    /// (their place, the earlier event's seq); records the keys of the others. The transaction
    /// sees its own records, so duplicates between appends of one commit are found too.
    pub(super) fn duplicates(
        &mut self,
        channel: &str,
        events: &[NewEvent],
        first_seq: u64,
        retention_ms: u64,
    ) -> Result<Vec<(usize, u64)>, StoreError> {
        let mut duplicates = Vec::new();
        if retention_ms == 0 {
            return Ok(duplicates);
        }
        for (place, event) in events.iter().enumerate() {
            let Some(key) = event.idempotency_key.as_deref() else {
                continue;
            };
            let earlier = self
                .keys
                .get((channel, key))
                .map_err(storage)?
                .map(|v| v.value())
                .filter(|(_, at)| is_retained(*at, retention_ms, event.published_at_ms));
            if let Some((seq, _)) = earlier {
                duplicates.push((place, seq));
                continue;
            }
            let seq = first_seq + (place - duplicates.len()) as u64;
            self.keys
                .insert((channel, key), (seq, event.published_at_ms))
                .map_err(storage)?;
            self.by_age
                .insert((event.published_at_ms, channel, key), ())
                .map_err(storage)?;
        }
        Ok(duplicates)
    }
}

/// Deletes the keys whose event is no longer retained at `now_ms`, in chunks.
pub(super) fn expire_keys(db: &Database, retention_ms: u64, now_ms: u64) -> Result<(), StoreError> {
    let due = |db: &Database| -> Result<bool, StoreError> {
        let txn = db.begin_read().map_err(storage)?;
        let by_age = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
        let oldest = by_age.first().map_err(storage)?;
        Ok(oldest.is_some_and(|(key, _)| !is_retained(key.value().0, retention_ms, now_ms)))
    };
    while due(db)? {
        let mut txn = db.begin_write().map_err(storage)?;
        // As for events: a purge lost in a crash is redone, and reads judge retention anyway.
        txn.set_durability(Durability::None).map_err(storage)?;
        {
            let mut keys = txn.open_table(IDEMPOTENCY).map_err(storage)?;
            let mut by_age = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
            let mut lapsed = Vec::new();
            for entry in by_age.iter().map_err(storage)?.take(EXPIRY_CHUNK) {
                let (key, _) = entry.map_err(storage)?;
                let (at, channel, name) = key.value();
                if is_retained(at, retention_ms, now_ms) {
                    break;
                }
                lapsed.push((at, channel.to_owned(), name.to_owned()));
            }
            for (at, channel, name) in lapsed {
                let (channel, name) = (channel.as_str(), name.as_str());
                // A key used again after it lapsed names its newer event, which stays.
                let current = keys
                    .get((channel, name))
                    .map_err(storage)?
                    .map(|v| v.value());
                if current.is_some_and(|(_, since)| since == at) {
                    keys.remove((channel, name)).map_err(storage)?;
                }
                by_age.remove((at, channel, name)).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
    }
    Ok(())
}
