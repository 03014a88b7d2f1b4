//! Reads (a channel's head, a range of its history) and expiry, behind the `EventStore` trait.

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable};
use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{
    EVENTS, EXPIRY, EXPIRY_CHUNK, HEADS, RedbStore, idempotency,
    open::storage,
    pages,
    record::{Decoder, RawEvent, raw_events},
    space::Reclaimed,
    writer::Append,
};
use crate::store::{
    Epoch, EventStore, History, NewEvent, PageQuery, StoreError, StoredBatch, StoredEvent,
    is_retained,
};

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
            let mut events = Vec::with_capacity(until.saturating_sub(after).min(4_096) as usize);
            let mut decoder = Decoder::default();
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
                            events.push(decoder.decode(&event)?);
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

    async fn read_page(
        &self,
        channel: &str,
        page: PageQuery,
        now_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (channel, retention_ms) = (channel.to_owned(), self.retention_ms);
        self.blocking(move |db| pages::read_page(db, &channel, page, retention_ms, now_ms))
            .await
    }

    async fn channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        let retention_ms = self.retention_ms;
        self.blocking(move |db| {
            pages::channels(db, &prefix, after.as_deref(), limit, retention_ms, now_ms)
        })
        .await
    }

    async fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let removed = self.purge(now_ms).await?;
        if removed > 0 {
            self.space.purged();
        }
        if self.space.is_due() {
            self.reclaim_space().await?;
        }
        Ok(removed)
    }
}

impl RedbStore {
    /// Deletes the events no longer retained at `now_ms`; how many.
    async fn purge(&self, now_ms: u64) -> Result<usize, StoreError> {
        let retention_ms = self.retention_ms;
        if retention_ms == 0 {
            return Ok(0);
        }
        self.blocking(move |db| {
            idempotency::expire_keys(db, retention_ms, now_ms)?;
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

    /// Lets redb reuse the pages purges freed, and compacts the file when it is mostly free.
    async fn reclaim_space(&self) -> Result<(), StoreError> {
        let (db, space) = (self.db.clone(), self.space.clone());
        let started = std::time::Instant::now();
        let reclaimed = tokio::task::spawn_blocking(move || space.reclaim(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))??;
        if let Some(Reclaimed {
            live_bytes,
            compacted: Some((before, after)),
        }) = reclaimed
        {
            tracing::info!(
                file_bytes_before = before,
                file_bytes_after = after,
                live_bytes,
                millis = started.elapsed().as_millis() as u64,
                "compacted the event store"
            );
        }
        Ok(())
    }
}

/// Deletes up to [`EXPIRY_CHUNK`] expired appends in one transaction. Returns the events
/// removed and whether more may be due.
pub(super) fn expire_chunk(
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
