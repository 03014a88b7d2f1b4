//! The sessions of every node sharing this node's channels: presence, revocation and
//! disconnects reach them all, through the [`Cluster`](crate::cluster::Cluster) when there is
//! one; a node alone answers from its own registry.

use prost::Message;

use super::{Sessions, registry::SessionNotFound};
use crate::{
    cluster::ForwardedCall,
    error::Error,
    object::{PresentSession, SessionInfo},
    pb,
};

/// Sessions read per page while collecting every session of a channel.
const COLLECT_PAGE: usize = 1_000;

impl Sessions {
    /// At most `limit` of the sessions with a stream open on `channel` on any node, in session
    /// id order, after `after`.
    pub(crate) async fn presence(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PresentSession>, Error> {
        match self.cluster() {
            Some(cluster) => Ok(cluster.presence(channel, after, limit).await?),
            None => Ok(self
                .page_on(channel, after, limit)
                .iter()
                .map(|session| session.present())
                .collect()),
        }
    }

    /// Every session with a stream open on `channel` on any node (what publish predicates
    /// pick from).
    pub(crate) async fn everyone_on(&self, channel: &str) -> Result<Vec<SessionInfo>, Error> {
        if self.cluster().is_none() {
            return Ok(self
                .on_channel(channel)
                .iter()
                .map(|session| session.present().session)
                .collect());
        }
        let mut everyone: Vec<SessionInfo> = Vec::new();
        loop {
            let after = everyone.last().map(|s| s.session_id.clone());
            let page = self
                .presence(channel, after.as_deref(), COLLECT_PAGE)
                .await?;
            let last_page = page.len() < COLLECT_PAGE;
            everyone.extend(page.into_iter().map(|present| present.session));
            if last_page {
                return Ok(everyone);
            }
        }
    }

    /// How many sessions have a stream open on `channel` on any node.
    pub(crate) async fn presence_count(&self, channel: &str) -> Result<usize, Error> {
        match self.cluster() {
            Some(cluster) => Ok(cluster.presence_count(channel).await?),
            None => Ok(self.count_on(channel)),
        }
    }

    /// At most `limit` channels with sessions on any node, in name order: those starting
    /// with `prefix` that sort after `after`.
    pub(crate) async fn present_channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        match self.cluster() {
            Some(cluster) => Ok(cluster.present_channels(prefix, after, limit).await?),
            None => Ok(self.channels(prefix, after, limit)),
        }
    }

    /// Whether any node revoked the ticket of session `session_id`.
    pub(crate) async fn is_revoked_anywhere(&self, session_id: &str) -> Result<bool, Error> {
        if self.is_revoked(session_id) {
            return Ok(true);
        }
        match self.cluster() {
            Some(cluster) => Ok(cluster.is_revoked(session_id).await?),
            None => Ok(false),
        }
    }

    /// [`Sessions::disconnect`] on whichever node holds the session; a revocation is
    /// recorded for every node before the session's stream ends.
    pub(crate) async fn disconnect_anywhere(
        &self,
        channel: &str,
        session_id: &str,
        revoke: bool,
    ) -> Result<bool, Error> {
        let Some(cluster) = self.cluster() else {
            return Ok(self.disconnect(channel, session_id, revoke)?);
        };
        let here = self.get(session_id).is_some_and(|s| s.channel == channel)
            || self.is_closed_here(channel, session_id);
        let revoked = [session_id.to_owned()];
        if here {
            if revoke {
                cluster.revoke(&revoked, self.revocation_ms()).await?;
            }
            return Ok(self.disconnect(channel, session_id, revoke)?);
        }
        let not_found = || SessionNotFound {
            channel: channel.to_owned(),
            session_id: session_id.to_owned(),
        };
        let place = cluster
            .place(session_id)
            .await?
            .filter(|place| place.channel == channel && place.node != cluster.node())
            .ok_or_else(not_found)?;
        if revoke {
            cluster.revoke(&revoked, self.revocation_ms()).await?;
        }
        let call = ForwardedCall::Disconnect(pb::DisconnectRequest {
            channel: channel.to_owned(),
            session_id: session_id.to_owned(),
            revoke,
        });
        let answer = cluster
            .forward(place.node, call)
            .await
            .map_err(Error::Forwarded)?;
        let answer = pb::DisconnectResponse::decode(answer.as_slice())
            .map_err(|_| Error::Forwarded(tonic::Status::internal("a malformed answer")))?;
        Ok(answer.was_live)
    }

    /// [`Sessions::disconnect_all`] on every node; how many streams ended.
    pub(crate) async fn disconnect_all_anywhere(
        &self,
        channel: &str,
        revoke: bool,
    ) -> Result<u64, Error> {
        let Some(cluster) = self.cluster() else {
            return Ok(self.disconnect_all(channel, revoke) as u64);
        };
        if revoke {
            // Recorded for every node first: a session cannot resume elsewhere meanwhile.
            let everyone: Vec<String> = self
                .everyone_on(channel)
                .await?
                .into_iter()
                .map(|session| session.session_id)
                .collect();
            cluster.revoke(&everyone, self.revocation_ms()).await?;
        }
        let mut disconnected = self.disconnect_all(channel, revoke) as u64;
        let call = ForwardedCall::DisconnectAll(pb::DisconnectAllRequest {
            channel: channel.to_owned(),
            revoke,
        });
        let others = cluster.nodes().await?;
        let answers = others
            .into_iter()
            .filter(|node| *node != cluster.node())
            .map(|node| cluster.forward(node, call.clone()));
        for answer in futures::future::join_all(answers).await {
            let answer = answer.map_err(Error::Forwarded)?;
            let answer = pb::DisconnectAllResponse::decode(answer.as_slice())
                .map_err(|_| Error::Forwarded(tonic::Status::internal("a malformed answer")))?;
            disconnected += answer.disconnected;
        }
        Ok(disconnected)
    }
}
