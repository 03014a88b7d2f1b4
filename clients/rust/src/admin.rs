//! The server API's inspection and session calls on [`Client`]: history, channels, presence,
//! disconnects. Each takes the API key (`authorization: Bearer <api_key>`).

use std::collections::HashMap;

use durable_iterator_contract::json;

use crate::{Client, ClientError, Event, authorized, pb};
use pb::durable_iterator_admin_client::DurableIteratorAdminClient;

/// Which page of a channel's history to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Continue from this id (the [`HistoryPage::next_after_id`] of the previous page);
    /// `None`: from the oldest retained event (the newest with `reverse`).
    pub after_id: Option<String>,
    /// Events per page, at most 1,000; 0: 100.
    pub limit: u32,
    /// Newest first.
    pub reverse: bool,
}

/// A retained event and the filter it was published with.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    /// The event as subscribers receive it.
    pub event: Event,
    /// `None`: every tag; `Some(empty)`: nobody.
    pub tags: Option<Vec<String>>,
    /// `None`: no restriction; `Some(empty)`: nobody.
    pub targets: Option<Vec<String>>,
    /// Never delivered to these sessions.
    pub exclude: Vec<String>,
}

/// A page of a channel's history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryPage {
    /// In id order, newest first when reversed.
    pub events: Vec<HistoryEvent>,
    /// Pass as [`HistoryOptions::after_id`] for the next page; `None` at the end.
    pub next_after_id: Option<String>,
    /// The channel's newest id when the page was read.
    pub newest_id: Option<String>,
    /// The oldest event retained when the page was read.
    pub oldest_retained_id: Option<String>,
}

/// Where a channel stands (`ChannelInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelInfo {
    /// The last id assigned on the channel (it stays after its event expires).
    pub newest_id: Option<String>,
    /// The oldest event retained.
    pub oldest_retained_id: Option<String>,
    /// Events retained.
    pub retained_events: u64,
    /// Sessions with a stream open.
    pub live_sessions: u64,
    /// How long events are kept, in seconds (0: resume off).
    pub retention_seconds: u64,
}

/// A page of channel names (`ListChannels`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelPage {
    /// In name order.
    pub channels: Vec<String>,
    /// Pass to the next call; `None` at the end.
    pub next_page_token: Option<String>,
}

/// A session with a stream open (`Presence`).
#[derive(Debug, Clone, PartialEq)]
pub struct PresentSession {
    /// The server-assigned session id.
    pub session_id: String,
    /// The tags of its token.
    pub tags: Vec<String>,
    /// The `att` of its current token.
    pub att: Option<serde_json::Value>,
    /// When its current stream opened, Unix milliseconds.
    pub connected_at_ms: i64,
    /// How many times it came back with its ticket while the server knew it.
    pub resumes: u64,
}

/// A page of a channel's live sessions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PresencePage {
    /// In session id order.
    pub sessions: Vec<PresentSession>,
    /// Pass to the next call; `None` at the end.
    pub next_page_token: Option<String>,
}

/// Counts of a channel's live sessions (`PresenceStats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceStats {
    /// Sessions with a stream open.
    pub sessions: u64,
    /// Of them, how many have each tag.
    pub sessions_by_tag: HashMap<String, u64>,
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl Client {
    fn admin(&self) -> DurableIteratorAdminClient<tonic::transport::Channel> {
        DurableIteratorAdminClient::new(self.channel().clone())
    }

    /// A page of `channel`'s retained events. An unknown channel is an empty page; an
    /// `after_id` of a reset store (or never issued) is FAILED_PRECONDITION, whose message
    /// names the oldest retained id.
    pub async fn history(
        &self,
        api_key: &str,
        channel: &str,
        options: HistoryOptions,
    ) -> Result<HistoryPage, ClientError> {
        let request = pb::HistoryRequest {
            channel: channel.to_owned(),
            after_id: options.after_id,
            limit: options.limit,
            reverse: options.reverse,
        };
        let page = self
            .admin()
            .history(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(HistoryPage {
            events: page
                .events
                .into_iter()
                .map(|event| HistoryEvent {
                    event: Event::from_proto(event.event.unwrap_or_default()),
                    tags: event.tags.map(|list| list.values),
                    targets: event.targets.map(|list| list.values),
                    exclude: event.exclude,
                })
                .collect(),
            next_after_id: non_empty(page.next_after_id),
            newest_id: non_empty(page.newest_id),
            oldest_retained_id: non_empty(page.oldest_retained_id),
        })
    }

    /// Where `channel` stands: ids, retained events, live sessions, retention.
    pub async fn channel_info(
        &self,
        api_key: &str,
        channel: &str,
    ) -> Result<ChannelInfo, ClientError> {
        let request = pb::ChannelInfoRequest {
            channel: channel.to_owned(),
        };
        let info = self
            .admin()
            .channel_info(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(ChannelInfo {
            newest_id: non_empty(info.newest_id),
            oldest_retained_id: non_empty(info.oldest_retained_id),
            retained_events: info.retained_events,
            live_sessions: info.live_sessions,
            retention_seconds: info.retention_seconds,
        })
    }

    /// A page of the channels with retained events or live sessions whose name starts with
    /// `prefix`; `page_token` from the previous page (`None` for the first), `limit` ≤ 1,000
    /// (0: 100).
    pub async fn list_channels(
        &self,
        api_key: &str,
        prefix: &str,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<ChannelPage, ClientError> {
        let request = pb::ListChannelsRequest {
            prefix: prefix.to_owned(),
            page_token: page_token.unwrap_or_default().to_owned(),
            limit,
        };
        let page = self
            .admin()
            .list_channels(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(ChannelPage {
            channels: page.channels,
            next_page_token: non_empty(page.next_page_token),
        })
    }

    /// A page of the sessions with a stream open on `channel`.
    pub async fn presence(
        &self,
        api_key: &str,
        channel: &str,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<PresencePage, ClientError> {
        let request = pb::PresenceRequest {
            channel: channel.to_owned(),
            page_token: page_token.unwrap_or_default().to_owned(),
            limit,
        };
        let page = self
            .admin()
            .presence(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(PresencePage {
            sessions: page
                .sessions
                .into_iter()
                .map(|session| PresentSession {
                    session_id: session.session_id,
                    tags: session.tags,
                    att: session.att.as_ref().map(json::from_proto),
                    connected_at_ms: session.connected_at_ms,
                    resumes: session.resumes,
                })
                .collect(),
            next_page_token: non_empty(page.next_page_token),
        })
    }

    /// Counts of the sessions with a stream open on `channel`.
    pub async fn presence_stats(
        &self,
        api_key: &str,
        channel: &str,
    ) -> Result<PresenceStats, ClientError> {
        let request = pb::PresenceStatsRequest {
            channel: channel.to_owned(),
        };
        let stats = self
            .admin()
            .presence_stats(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(PresenceStats {
            sessions: stats.sessions,
            sessions_by_tag: stats.sessions_by_tag,
        })
    }

    /// Ends session `session_id`'s stream on `channel` with PERMISSION_DENIED ("disconnected
    /// by the server"), which clients treat as final; with `revoke` its ticket is refused from
    /// then on. Returns whether a stream was open; NOT_FOUND when the session is not there.
    pub async fn disconnect(
        &self,
        api_key: &str,
        channel: &str,
        session_id: &str,
        revoke: bool,
    ) -> Result<bool, ClientError> {
        let request = pb::DisconnectRequest {
            channel: channel.to_owned(),
            session_id: session_id.to_owned(),
            revoke,
        };
        let answer = self
            .admin()
            .disconnect(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(answer.was_live)
    }

    /// [`Client::disconnect`] for every session live on `channel`; returns how many were.
    pub async fn disconnect_all(
        &self,
        api_key: &str,
        channel: &str,
        revoke: bool,
    ) -> Result<u64, ClientError> {
        let request = pb::DisconnectAllRequest {
            channel: channel.to_owned(),
            revoke,
        };
        let answer = self
            .admin()
            .disconnect_all(authorized(api_key, request)?)
            .await?
            .into_inner();
        Ok(answer.disconnected)
    }
}
