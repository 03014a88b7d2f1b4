//! `durable_iterator.v1.DurableIteratorAdmin`: the calls application servers make, behind the
//! API key.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{Shared, generated::durable_iterator_admin_server::DurableIteratorAdmin};
use crate::{error::Error, filter::Filter, json, pb, token, wire};

/// The events of one channel in a batch: their positions in the request, and the events.
pub(super) type ChannelBatch = (Vec<usize>, Vec<(Bytes, Filter)>);

/// The server-side service.
pub(crate) struct AdminApi {
    shared: Arc<Shared>,
}

impl AdminApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Error> {
        let Some(expected) = self.shared.config.api_key.as_deref() else {
            return Err(Error::AdminDisabled);
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_credentials)
            .unwrap_or_default();
        // Digests have one length, so the comparison does not reveal the key's length either.
        let digest = |key: &str| Sha256::digest(key.as_bytes());
        if bool::from(digest(presented).ct_eq(&digest(expected))) {
            Ok(())
        } else {
            Err(Error::AdminUnauthenticated)
        }
    }

    /// Checks one event of a publish and turns it into what the channel stores: the channel,
    /// the encoded payload, the filter. Changes nothing.
    pub(super) fn checked_event(
        &self,
        request: pb::PublishRequest,
    ) -> Result<(String, Bytes, Filter), Error> {
        let payload = match request.payload {
            Some(pb::publish_request::Payload::Json(value)) => pb::event::Payload::Json(value),
            Some(pb::publish_request::Payload::Typed(any)) => pb::event::Payload::Typed(any),
            None => {
                return Err(Error::InvalidArgument(
                    "payload is missing: set `json` or `typed`".into(),
                ));
            }
        };
        let payload = wire::encode_payload(&payload);
        let filter = Filter {
            tags: request.tags.map(|list| list.values),
            targets: request.targets.map(|list| list.values),
            exclude: request.exclude,
        };
        self.shared
            .config
            .limits
            .check_publish(&request.channel, &payload, &filter)?;
        Ok((request.channel, payload, filter))
    }

    async fn publish_event(
        &self,
        request: pb::PublishRequest,
    ) -> Result<pb::PublishResponse, Error> {
        let (channel, payload, filter) = self.checked_event(request)?;
        let id = self
            .shared
            .channels
            .publish(&channel, payload, filter)
            .await?;
        Ok(pb::PublishResponse { id: id.to_string() })
    }

    /// Checks every event of a batch, before any is published, and groups them by channel.
    /// Changes nothing.
    pub(super) fn checked_batch(
        &self,
        request: pb::PublishBatchRequest,
    ) -> Result<HashMap<String, ChannelBatch>, Error> {
        let limits = &self.shared.config.limits;
        if request.events.len() > limits.max_batch_events {
            return Err(Error::InvalidArgument(format!(
                "{} events in one batch, the limit is {}",
                request.events.len(),
                limits.max_batch_events
            )));
        }
        let mut by_channel: HashMap<String, ChannelBatch> = HashMap::new();
        for (position, event) in request.events.into_iter().enumerate() {
            let (channel, payload, filter) = self
                .checked_event(event)
                .map_err(|e| Error::InvalidArgument(format!("event {position}: {e}")))?;
            let (positions, events) = by_channel.entry(channel).or_default();
            positions.push(position);
            events.push((payload, filter));
        }
        Ok(by_channel)
    }

    async fn publish_batch(
        &self,
        request: pb::PublishBatchRequest,
    ) -> Result<pb::PublishBatchResponse, Error> {
        let by_channel = self.checked_batch(request)?;
        let total = by_channel
            .values()
            .map(|(positions, _)| positions.len())
            .sum();
        let channels = &self.shared.channels;
        let published = futures::future::try_join_all(by_channel.into_iter().map(
            |(channel, (positions, events))| async move {
                let ids = channels.publish_many(&channel, events).await?;
                Ok::<_, Error>(positions.into_iter().zip(ids))
            },
        ))
        .await?;
        let mut ids = vec![String::new(); total];
        for (position, id) in published.into_iter().flatten() {
            ids[position] = id.to_string();
        }
        Ok(pb::PublishBatchResponse { ids })
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
        let token = token::sign(&config.keyring, &claims);
        config.limits.check_token(&token)?;
        Ok(pb::IssueTokenResponse {
            token,
            expires_at: claims.exp as i64,
        })
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
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(
            self.publish_event(request.into_inner()).await?,
        ))
    }

    async fn publish_batch(
        &self,
        request: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
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
