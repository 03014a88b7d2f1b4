//! `durable_iterator.v1.DurableIteratorAdmin`: the calls application servers make, behind the
//! API key.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{Shared, generated::durable_iterator_admin_server::DurableIteratorAdmin};
use crate::{error::Error, filter::Filter, frame, json, pb, token};

/// The server-side service.
pub struct AdminApi {
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

    async fn publish_event(
        &self,
        request: pb::PublishRequest,
    ) -> Result<pb::PublishResponse, Error> {
        let limits = &self.shared.config.limits;
        limits.check_channel(&request.channel)?;
        let payload = match request.payload {
            Some(pb::publish_request::Payload::Json(value)) => pb::event::Payload::Json(value),
            Some(pb::publish_request::Payload::Typed(any)) => pb::event::Payload::Typed(any),
            None => {
                return Err(Error::InvalidArgument(
                    "payload is missing: set `json` or `typed`".into(),
                ));
            }
        };
        let payload = frame::encode_payload(&payload);
        limits.check_payload(payload.len())?;
        let tags = request.tags.map(|list| list.values);
        if let Some(tags) = &tags {
            limits.check_tags(tags)?;
        }
        let targets = request.targets.map(|list| list.values);
        if let Some(targets) = &targets {
            limits.check_session_list("targets", targets)?;
        }
        limits.check_session_list("exclude", &request.exclude)?;
        let filter = Filter {
            tags,
            targets,
            exclude: request.exclude,
        };
        let id = self
            .shared
            .channels
            .publish(&request.channel, payload, filter)
            .await?;
        Ok(pb::PublishResponse { id: id.to_string() })
    }

    fn mint_token(&self, request: pb::IssueTokenRequest) -> Result<pb::IssueTokenResponse, Error> {
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
