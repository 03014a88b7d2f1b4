//! What a channel object holds of its channel: its name, publishing, and its live sessions.

use std::{fmt, sync::Arc};

use serde::Serialize;

use crate::{
    channel::{Channels, HistoryPage, HistoryQuery, MAX_PAGE},
    error::Error,
    event::EventId,
    filter::Filter,
    json,
    limits::Limits,
    pb,
    token::TokenClaims,
    wire,
};

/// A live session on a channel, as objects and publish predicates see it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The server-assigned session id.
    pub session_id: String,
    /// The payload of the session's current token (`att` included).
    pub claims: Arc<TokenClaims>,
}

/// A live session with its connection: what `presence` lists.
#[derive(Debug, Clone)]
pub struct PresentSession {
    /// The session and its token.
    pub session: SessionInfo,
    /// When its current stream opened, Unix milliseconds.
    pub connected_at_ms: u64,
    /// How many times it came back with its ticket while this server knew it.
    pub resumes: u64,
}

/// The channel a [`ChannelObject`](super::ChannelObject) is bound to. Cloning is cheap.
#[derive(Clone)]
pub struct ChannelHandle {
    name: Arc<str>,
    channels: Arc<Channels>,
    limits: Limits,
}

impl fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelHandle({})", self.name)
    }
}

impl ChannelHandle {
    pub(crate) fn new(name: Arc<str>, channels: Arc<Channels>, limits: Limits) -> Self {
        Self {
            name,
            channels,
            limits,
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes `event` (as JSON) to the channel with `filter`; returns once the event is
    /// stored (durable with the on-disk store), with its id.
    pub async fn publish<E: Serialize + ?Sized>(
        &self,
        event: &E,
        filter: PublishFilter,
    ) -> Result<EventId, Error> {
        let value = serde_json::to_value(event)
            .map_err(|e| Error::InvalidArgument(format!("event does not serialize: {e}")))?;
        let payload = wire::encode_payload(&pb::event::Payload::Json(json::to_proto(&value)));
        let filter = filter.resolve(&self.channels, &self.name).await?;
        self.limits
            .check_publish(&self.name, &payload, &filter, None)?;
        Ok(self.channels.publish(&self.name, payload, filter).await?)
    }

    /// A page of the channel's retained events (as the server API's `History`): an `after` of
    /// another epoch, or never issued here, is refused (`FAILED_PRECONDITION`).
    pub async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, Error> {
        if query.limit > MAX_PAGE {
            return Err(Error::InvalidArgument(format!(
                "limit is {}, pages hold at most {MAX_PAGE}",
                query.limit
            )));
        }
        self.channels.history(&self.name, query).await
    }

    /// At most `limit` of the sessions with a stream open on this channel now, on any node,
    /// in session id order, after the session `after` (the last of the previous page).
    pub async fn presence(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PresentSession>, Error> {
        self.channels
            .sessions()
            .presence(&self.name, after, limit)
            .await
    }

    /// Ends the stream of session `session_id` on this channel with PERMISSION_DENIED
    /// ("disconnected by the server"), which clients treat as final. With `revoke`, its ticket
    /// is refused from then on and [`on_session_ended`](super::ChannelObject::on_session_ended)
    /// runs at once. Returns whether a stream was open; `NOT_FOUND` when the session is not on
    /// the channel.
    pub async fn disconnect(&self, session_id: &str, revoke: bool) -> Result<bool, Error> {
        self.channels
            .sessions()
            .disconnect_anywhere(&self.name, session_id, revoke)
            .await
    }

    /// The sessions with a stream open on this channel now, on any node.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        self.channels.sessions().everyone_on(&self.name).await
    }
}

type Predicate = Arc<dyn Fn(&SessionInfo) -> bool + Send + Sync>;

/// Sessions chosen by id, or by a predicate over the live sessions.
#[derive(Clone)]
enum Selection {
    Ids(Vec<String>),
    Matching(Predicate),
}

impl Selection {
    fn resolve(&self, live: &[SessionInfo]) -> Vec<String> {
        match self {
            Selection::Ids(ids) => ids.clone(),
            Selection::Matching(predicate) => live
                .iter()
                .filter(|session| predicate(session))
                .map(|session| session.session_id.clone())
                .collect(),
        }
    }
}

/// Who receives an event an object publishes (oRPC's `tags`, `targets`, `exclude`).
///
/// Predicates are resolved against the live sessions when the event is published, and stored
/// as the resulting session ids, so replay delivers to exactly the sessions live delivery did.
#[derive(Clone, Default)]
pub struct PublishFilter {
    tags: Option<Vec<String>>,
    targets: Option<Selection>,
    exclude: Vec<Selection>,
}

impl fmt::Debug for PublishFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishFilter")
            .field("tags", &self.tags)
            .field("targets", &self.targets.is_some())
            .field("exclude", &self.exclude.len())
            .finish()
    }
}

impl PublishFilter {
    /// Every session of the channel.
    pub fn everyone() -> Self {
        Self::default()
    }

    /// Only sessions whose token tags intersect `tags` (an empty list reaches nobody).
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Only these sessions (AND with tags).
    pub fn targets<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.targets = Some(Selection::Ids(ids.into_iter().map(Into::into).collect()));
        self
    }

    /// Only the live sessions `predicate` picks, e.g. by `att`.
    pub fn targets_matching(
        mut self,
        predicate: impl Fn(&SessionInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.targets = Some(Selection::Matching(Arc::new(predicate)));
        self
    }

    /// Never these sessions (e.g. the sender).
    pub fn exclude<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.exclude
            .push(Selection::Ids(ids.into_iter().map(Into::into).collect()));
        self
    }

    /// Never the live sessions `predicate` picks.
    pub fn exclude_matching(
        mut self,
        predicate: impl Fn(&SessionInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.exclude.push(Selection::Matching(Arc::new(predicate)));
        self
    }

    /// The stored filter: predicates turned into the ids of the sessions they pick among those
    /// live on `channel`, on any node.
    pub(crate) async fn resolve(
        &self,
        channels: &Channels,
        channel: &str,
    ) -> Result<Filter, Error> {
        let needs_live = self
            .targets
            .iter()
            .chain(&self.exclude)
            .any(|s| matches!(s, Selection::Matching(_)));
        let live = if needs_live {
            channels.sessions().everyone_on(channel).await?
        } else {
            Vec::new()
        };
        Ok(self.resolve_among(&live))
    }

    /// The stored filter, predicates picking among `live`.
    fn resolve_among(&self, live: &[SessionInfo]) -> Filter {
        Filter {
            tags: self.tags.clone(),
            targets: self.targets.as_ref().map(|s| s.resolve(live)),
            exclude: self.exclude.iter().flat_map(|s| s.resolve(live)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, role: &str) -> SessionInfo {
        let mut claims = TokenClaims::new("c", 0, 10);
        claims.att = Some(serde_json::json!({ "role": role }));
        SessionInfo {
            session_id: id.into(),
            claims: Arc::new(claims),
        }
    }

    #[test]
    fn predicates_resolve_to_the_ids_of_live_sessions() {
        let live = || {
            vec![
                session("a", "admin"),
                session("b", "user"),
                session("c", "user"),
            ]
        };
        let is_admin =
            |s: &SessionInfo| s.claims.att.as_ref().is_some_and(|a| a["role"] == "admin");
        let filter = PublishFilter::everyone()
            .tags(["t"])
            .targets_matching(move |s| !is_admin(s))
            .exclude(["c"])
            .exclude_matching(|s| s.session_id == "z")
            .resolve_among(&live());
        assert_eq!(filter.tags, Some(vec!["t".to_owned()]));
        assert_eq!(filter.targets, Some(vec!["b".to_owned(), "c".to_owned()]));
        assert_eq!(filter.exclude, vec!["c".to_owned()]);
        assert!(filter.admits("b", &["t".to_owned()]));
        assert!(!filter.admits("c", &["t".to_owned()]));
        assert!(!filter.admits("a", &["t".to_owned()]));
    }

    #[test]
    fn id_lists_need_no_live_sessions() {
        let filter = PublishFilter::everyone().targets(["x"]).resolve_among(&[]);
        assert_eq!(filter.targets, Some(vec!["x".to_owned()]));
        assert!(PublishFilter::everyone().resolve_among(&[]).is_everyone());
    }
}
