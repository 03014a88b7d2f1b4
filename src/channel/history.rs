//! What the server API and channel objects read of a channel: a page of its history, where it
//! stands, and which channels there are. Pages are read from the store page by page: a long
//! history is never loaded whole.

use crate::{
    error::Error,
    event::{EventId, StoredEvent},
    filter::Filter,
    pb,
    store::{Direction, PageQuery},
};

use super::Channels;

/// Events in a page when the caller does not say.
pub(crate) const DEFAULT_PAGE: usize = 100;
/// Events (channels, sessions) in a page at most.
pub(crate) const MAX_PAGE: usize = 1_000;

/// Which page of a channel's history to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Continue from this id, excluded (a page's [`HistoryPage::next_after`]); `None`: from the
    /// oldest retained event (the newest with `reverse`).
    pub after: Option<EventId>,
    /// Events in the page at most, up to 1,000; 0 means 100.
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

/// A retained event as read back.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    /// Its id.
    pub id: EventId,
    /// When it was stored, Unix milliseconds.
    pub published_at_ms: u64,
    /// Who it was published to (session lists as resolved at publish time).
    pub filter: Filter,
    /// The payload as published.
    pub payload: Option<pb::event::Payload>,
}

impl HistoryEvent {
    fn from_stored(epoch: crate::event::Epoch, event: &StoredEvent) -> Result<Self, Error> {
        let decoded =
            <pb::SubscribeResponse as prost::Message>::decode(&event.frame.bytes()[..])
                .map_err(|e| crate::store::StoreError::Corrupt(format!("stored event: {e}")))?;
        let payload = match decoded.kind {
            Some(pb::subscribe_response::Kind::Event(event)) => event.payload,
            _ => None,
        };
        Ok(Self {
            id: EventId {
                epoch,
                seq: event.seq,
            },
            published_at_ms: event.published_at_ms,
            filter: (*event.filter).clone(),
            payload,
        })
    }

    /// The payload as JSON, if it was published as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        match &self.payload {
            Some(pb::event::Payload::Json(value)) => Some(crate::json::from_proto(value)),
            _ => None,
        }
    }
}

/// A page of a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// In id order, newest first when reversed.
    pub events: Vec<HistoryEvent>,
    /// Where the next page starts; `None` when this one reached the end.
    pub next_after: Option<EventId>,
    /// The channel's newest id when the page was read.
    pub newest: Option<EventId>,
    /// The oldest event retained when the page was read.
    pub oldest_retained: Option<EventId>,
}

/// Where a channel stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChannelState {
    /// The last id assigned (it stays after its event expires).
    pub(crate) newest: Option<EventId>,
    /// The oldest event retained.
    pub(crate) oldest_retained: Option<EventId>,
    /// Events retained, from the oldest retained to the newest.
    pub(crate) retained_events: u64,
    /// Sessions with a stream open.
    pub(crate) live_sessions: u64,
}

impl Channels {
    /// Where `channel` stands now: an unknown channel is all zeros.
    pub(crate) async fn state(&self, channel: &str) -> Result<ChannelState, Error> {
        let store = self.store();
        let epoch = store.epoch();
        let head = store.last_seq(channel).await?;
        let oldest = if head == 0 {
            None
        } else {
            store
                .read(channel, head, head, self.clock.now_ms())
                .await?
                .oldest_retained
        };
        let id = |seq| EventId { epoch, seq };
        Ok(ChannelState {
            newest: (head > 0).then(|| id(head)),
            oldest_retained: oldest.map(id),
            retained_events: oldest.map_or(0, |oldest| (head + 1).saturating_sub(oldest)),
            live_sessions: self.sessions().presence_count(channel).await? as u64,
        })
    }

    /// A page of `channel`'s retained events. An unknown channel answers an empty page; an
    /// `after` of another epoch, or never issued on the channel, is refused
    /// (`FAILED_PRECONDITION`) with the oldest retained id to start again from.
    pub(crate) async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, Error> {
        let state = self.state(channel).await?;
        let Some(newest) = state.newest else {
            return Ok(HistoryPage::default());
        };
        let start_again = || match state.oldest_retained {
            Some(oldest) => format!("start again from the oldest retained event, {oldest}"),
            None => "no event is retained now".to_owned(),
        };
        if let Some(after) = query.after {
            if after.epoch != newest.epoch {
                return Err(Error::HistoryPosition(format!(
                    "after_id {after} is of another epoch of the store (its history was reset): {}",
                    start_again()
                )));
            }
            if after.seq > newest.seq {
                return Err(Error::HistoryPosition(format!(
                    "after_id {after} was never issued on channel {channel:?}: {}",
                    start_again()
                )));
            }
        }
        let limit = match query.limit {
            0 => DEFAULT_PAGE,
            limit => limit.min(MAX_PAGE),
        };
        let page = PageQuery {
            from: match (query.after, query.reverse) {
                (Some(after), _) => after.seq,
                (None, false) => 0,
                (None, true) => u64::MAX,
            },
            direction: if query.reverse {
                Direction::Backward
            } else {
                Direction::Forward
            },
            limit,
        };
        let stored = self
            .store()
            .read_page(channel, page, self.clock.now_ms())
            .await?;
        let epoch = newest.epoch;
        let events = stored
            .iter()
            .map(|event| HistoryEvent::from_stored(epoch, event))
            .collect::<Result<Vec<_>, _>>()?;
        // A short page reached the end; a full one may have reached it too, which the id says.
        let next_after = match (events.last(), events.len() == limit) {
            // Past `newest`: published while the page was read, more may follow.
            (Some(last), true) if !query.reverse && last.id.seq != newest.seq => Some(last.id),
            (Some(last), true)
                if query.reverse
                    && state
                        .oldest_retained
                        .is_some_and(|oldest| last.id.seq > oldest.seq) =>
            {
                Some(last.id)
            }
            _ => None,
        };
        Ok(HistoryPage {
            events,
            next_after,
            newest: state.newest,
            oldest_retained: state.oldest_retained,
        })
    }

    /// The channels with retained events or live sessions, in name order: at most `limit` of
    /// those starting with `prefix` that sort after `after`.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let stored = self
            .store()
            .channels(prefix, after, limit, self.clock.now_ms())
            .await?;
        let live = self
            .sessions()
            .present_channels(prefix, after, limit)
            .await?;
        // Both are sorted and hold the first `limit` of their kind: merged, the first `limit`
        // of either kind.
        let mut names: Vec<String> = stored.into_iter().chain(live).collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(limit);
        Ok(names)
    }
}
