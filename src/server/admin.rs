//! `durable_iterator.v1.DurableIteratorAdmin`: the calls application servers make, behind the
//! API key.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    Shared,
    generated::durable_iterator_admin_server::DurableIteratorAdmin,
    page_token,
    publish_request::{PublishBatchRequest, PublishRequest},
    publish_response::{PublishBatchResponse, PublishResponse},
};
use crate::{
    channel::{HistoryQuery, Publication},
    error::Error,
    event::EventId,
    json,
    limits::page_limit,
    pb,
    store::StoreError,
    token,
};

/// The events of one channel in a batch: their positions in the request, and the events.
type ChannelBatch = (Vec<usize>, Vec<Publication>);

/// The server-side service.
pub(crate) struct AdminApi {
    shared: Arc<Shared>,
}

impl AdminApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Error> {
        let keys = self.shared.keys();
        if keys.api_keys.is_empty() {
            return Err(Error::AdminDisabled);
        }
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_credentials)
            .unwrap_or_default();
        if keys.admits_api_key(presented) {
            Ok(())
        } else {
            Err(Error::AdminUnauthenticated)
        }
    }

    /// Checks one event of a publish and turns it into what the channel stores: the channel,
    /// and the event. Changes nothing.
    pub(super) fn checked_event(
        &self,
        request: PublishRequest,
    ) -> Result<(Arc<str>, Publication), Error> {
        let Some(payload) = request.payload else {
            return Err(Error::InvalidArgument(
                "payload is missing: set `json` or `typed`".into(),
            ));
        };
        // Empty is no key: not every client can tell an empty string from none.
        let idempotency_key = request.idempotency_key.filter(|key| !key.is_empty());
        self.shared.config.limits.check_publish(
            &request.channel,
            &payload,
            &request.filter,
            idempotency_key.as_deref(),
        )?;
        let event = Publication {
            payload,
            filter: request.filter,
            idempotency_key,
        };
        Ok((request.channel, event))
    }

    async fn publish_event(&self, request: PublishRequest) -> Result<PublishResponse, Error> {
        let (channel, event) = self.checked_event(request)?;
        let mut ids = self
            .shared
            .channels
            .publish_many(&channel, vec![event])
            .await?;
        let id = ids
            .pop()
            .ok_or_else(|| StoreError::Unavailable("the publish pipeline lost an event".into()))?;
        Ok(PublishResponse { id })
    }

    /// Checks every event of a batch, before any is published, and groups them by channel.
    /// Changes nothing.
    pub(super) fn checked_batch(
        &self,
        request: PublishBatchRequest,
    ) -> Result<Vec<(Arc<str>, ChannelBatch)>, Error> {
        let limits = &self.shared.config.limits;
        if request.events.len() > limits.max_batch_events {
            return Err(Error::InvalidArgument(format!(
                "{} events in one batch, the limit is {}",
                request.events.len(),
                limits.max_batch_events
            )));
        }
        let mut by_channel: Vec<(Arc<str>, ChannelBatch)> = Vec::new();
        // Where each channel's events are in `by_channel`; an event on the channel of the one
        // before (most are) is put there without looking its channel up.
        let mut groups: HashMap<Arc<str>, usize> = HashMap::new();
        let total = request.events.len();
        for (position, event) in request.events.into_iter().enumerate() {
            let (channel, event) = self
                .checked_event(event)
                .map_err(|e| Error::InvalidArgument(format!("event {position}: {e}")))?;
            let group = match by_channel.last() {
                Some((last, _)) if *last == channel => by_channel.len() - 1,
                _ => *groups.entry(channel.clone()).or_insert_with(|| {
                    // Room for every event in the first channel's group: most batches have one.
                    let room = if by_channel.is_empty() { total } else { 0 };
                    let group = (Vec::with_capacity(room), Vec::with_capacity(room));
                    by_channel.push((channel, group));
                    by_channel.len() - 1
                }),
            };
            let (positions, events) = &mut by_channel[group].1;
            positions.push(position);
            events.push(event);
        }
        Ok(by_channel)
    }

    async fn publish_batch(
        &self,
        request: PublishBatchRequest,
    ) -> Result<PublishBatchResponse, Error> {
        let by_channel = self.checked_batch(request)?;
        let total = by_channel
            .iter()
            .map(|(_, (positions, _))| positions.len())
            .sum();
        let channels = &self.shared.channels;
        let published = futures::future::try_join_all(by_channel.into_iter().map(
            |(channel, (positions, events))| async move {
                let ids = channels.publish_many(&channel, events).await?;
                Ok::<_, Error>(positions.into_iter().zip(ids))
            },
        ))
        .await?;
        // Every position is answered once: the batch's channels partition its events.
        let mut ids = vec![EventId { epoch: 0, seq: 0 }; total];
        for (position, id) in published.into_iter().flatten() {
            ids[position] = id;
        }
        Ok(PublishBatchResponse { ids })
    }

    pub(super) fn mint_token(
        &self,
        request: pb::IssueTokenRequest,
    ) -> Result<pb::IssueTokenResponse, Error> {
        let config = &self.shared.config;
        config.limits.check_channel(&request.channel)?;
        config.limits.check_tags(&request.tags)?;
        let ttl = match request.ttl_seconds {
            0 => config.default_token_ttl_secs,
            ttl => ttl,
        };
        config.limits.check_token_ttl(ttl)?;
        let mut claims =
            token::TokenClaims::new(request.channel, self.shared.clock.now_secs(), ttl);
        claims.tags = (!request.tags.is_empty()).then_some(request.tags);
        claims.att = request.att.as_ref().map(json::from_proto);
        claims.rpc = (!request.rpc.is_empty()).then_some(request.rpc);
        let token = token::sign(&self.shared.keys().keyring, &claims);
        config.limits.check_token(&token)?;
        Ok(pb::IssueTokenResponse {
            token,
            expires_at: claims.exp as i64,
        })
    }
}

/// The inspection and session calls: history, channels, presence, disconnects.
impl AdminApi {
    async fn history(&self, request: pb::HistoryRequest) -> Result<pb::HistoryResponse, Error> {
        self.shared.config.limits.check_channel(&request.channel)?;
        let after = request
            .after_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map(str::parse::<EventId>)
            .transpose()?;
        let query = HistoryQuery {
            after,
            limit: page_limit(request.limit)?,
            reverse: request.reverse,
        };
        let page = self
            .shared
            .channels
            .history(&request.channel, query)
            .await?;
        let id_text = |id: Option<EventId>| id.map(|id| id.to_string()).unwrap_or_default();
        let list = |values: Option<Vec<String>>| values.map(|values| pb::StringList { values });
        Ok(pb::HistoryResponse {
            events: page
                .events
                .into_iter()
                .map(|event| pb::HistoryEvent {
                    event: Some(pb::Event {
                        id: event.id.to_string(),
                        payload: event.payload,
                        published_at_ms: event.published_at_ms as i64,
                    }),
                    tags: list(event.filter.tags),
                    targets: list(event.filter.targets),
                    exclude: event.filter.exclude,
                })
                .collect(),
            next_after_id: id_text(page.next_after),
            newest_id: id_text(page.newest),
            oldest_retained_id: id_text(page.oldest_retained),
        })
    }

    async fn channel_info(
        &self,
        request: pb::ChannelInfoRequest,
    ) -> Result<pb::ChannelInfoResponse, Error> {
        self.shared.config.limits.check_channel(&request.channel)?;
        let state = self.shared.channels.state(&request.channel).await?;
        let id_text = |id: Option<EventId>| id.map(|id| id.to_string()).unwrap_or_default();
        Ok(pb::ChannelInfoResponse {
            newest_id: id_text(state.newest),
            oldest_retained_id: id_text(state.oldest_retained),
            retained_events: state.retained_events,
            live_sessions: state.live_sessions,
            retention_seconds: self.shared.channels.store().retention_ms() / 1000,
        })
    }

    async fn list_channels(
        &self,
        request: pb::ListChannelsRequest,
    ) -> Result<pb::ListChannelsResponse, Error> {
        let limit = page_limit(request.limit)?;
        let after = page_token::parse(&request.page_token)?;
        // One more than the page: whether there is a next one.
        let mut channels = self
            .shared
            .channels
            .list(&request.prefix, after.as_deref(), limit + 1)
            .await?;
        let more = channels.len() > limit;
        channels.truncate(limit);
        let next_page_token = match channels.last() {
            Some(last) if more => page_token::after(last),
            _ => String::new(),
        };
        Ok(pb::ListChannelsResponse {
            channels,
            next_page_token,
        })
    }

    async fn presence(&self, request: pb::PresenceRequest) -> Result<pb::PresenceResponse, Error> {
        self.shared.config.limits.check_channel(&request.channel)?;
        let limit = page_limit(request.limit)?;
        let after = page_token::parse(&request.page_token)?;
        let mut sessions = self
            .shared
            .channels
            .sessions()
            .presence(&request.channel, after.as_deref(), limit + 1)
            .await?;
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let next_page_token = match sessions.last() {
            Some(last) if more => page_token::after(&last.session.session_id),
            _ => String::new(),
        };
        Ok(pb::PresenceResponse {
            sessions: sessions
                .iter()
                .map(|present| {
                    let claims = &present.session.claims;
                    pb::PresentSession {
                        session_id: present.session.session_id.clone(),
                        tags: claims.tags().to_vec(),
                        att: claims.att.as_ref().map(json::to_proto),
                        connected_at_ms: present.connected_at_ms as i64,
                        resumes: present.resumes,
                    }
                })
                .collect(),
            next_page_token,
        })
    }

    async fn presence_stats(
        &self,
        request: pb::PresenceStatsRequest,
    ) -> Result<pb::PresenceStatsResponse, Error> {
        self.shared.config.limits.check_channel(&request.channel)?;
        let sessions = self
            .shared
            .channels
            .sessions()
            .everyone_on(&request.channel)
            .await?;
        let mut sessions_by_tag: HashMap<String, u64> = HashMap::new();
        for session in &sessions {
            let claims = &session.claims;
            // A token may repeat a tag: the session counts once.
            let mut tags: Vec<&String> = claims.tags().iter().collect();
            tags.sort_unstable();
            tags.dedup();
            for tag in tags {
                *sessions_by_tag.entry(tag.clone()).or_default() += 1;
            }
        }
        Ok(pb::PresenceStatsResponse {
            sessions: sessions.len() as u64,
            sessions_by_tag,
        })
    }

    async fn disconnect(
        &self,
        request: pb::DisconnectRequest,
    ) -> Result<pb::DisconnectResponse, Error> {
        self.shared.config.limits.check_channel(&request.channel)?;
        if request.session_id.is_empty() {
            return Err(Error::InvalidArgument("session_id is empty".into()));
        }
        let was_live = self
            .shared
            .channels
            .sessions()
            .disconnect_anywhere(&request.channel, &request.session_id, request.revoke)
            .await?;
        Ok(pb::DisconnectResponse { was_live })
    }

    async fn disconnect_all(
        &self,
        request: pb::DisconnectAllRequest,
    ) -> Result<pb::DisconnectAllResponse, Error> {
        self.shared.config.limits.check_channel(&request.channel)?;
        let disconnected = self
            .shared
            .channels
            .sessions()
            .disconnect_all_anywhere(&request.channel, request.revoke)
            .await?;
        Ok(pb::DisconnectAllResponse { disconnected })
    }
}

/// The credentials of an `authorization: Bearer <credentials>` value; the scheme is matched
/// case-insensitively, as HTTP has it.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

#[tonic::async_trait]
impl DurableIteratorAdmin for AdminApi {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.publish_event(request.into_inner()).await?,
        ))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.publish_batch(request.into_inner()).await?,
        ))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(self.mint_token(request.into_inner())?))
    }
    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(self.history(request.into_inner()).await?))
    }

    async fn channel_info(
        &self,
        request: Request<pb::ChannelInfoRequest>,
    ) -> Result<Response<pb::ChannelInfoResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.channel_info(request.into_inner()).await?,
        ))
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.list_channels(request.into_inner()).await?,
        ))
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(self.presence(request.into_inner()).await?))
    }

    async fn presence_stats(
        &self,
        request: Request<pb::PresenceStatsRequest>,
    ) -> Result<Response<pb::PresenceStatsResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.presence_stats(request.into_inner()).await?,
        ))
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(self.disconnect(request.into_inner()).await?))
    }

    async fn disconnect_all(
        &self,
        request: Request<pb::DisconnectAllRequest>,
    ) -> Result<Response<pb::DisconnectAllResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.disconnect_all(request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_nothing_else_passes() {
        for (value, expected) in [
            ("Bearer k", Some("k")),
            ("bearer k", Some("k")),
            ("BEARER  k", Some("k")),
            ("Bearer ", Some("")),
            ("Bearer", None),
            ("Basic k", None),
            ("k", None),
        ] {
            assert_eq!(bearer_credentials(value), expected, "{value:?}");
        }
    }
}
