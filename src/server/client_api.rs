//! `durable_iterator.v1.DurableIterator`: the calls clients make.

use std::sync::Arc;

use futures::future::BoxFuture;
use tonic::{Request, Response, Status};

use super::{
    Shared, generated::durable_iterator_server::DurableIterator,
    subscriber_stream::SubscriberStream,
};
use crate::{
    channel::{Admits, Replay, ResumeFailure, ResumeOutcome, SubscriberQueue},
    cluster::{ForwardedCall, NodeId},
    error::Error,
    event::EventId,
    filter::Filter,
    interceptor::{InvokeCall, RefreshCall, SubscribeCall},
    json, metrics,
    object::{Caller, SessionInfo},
    pb, session,
    session::RefreshError,
    token::TokenClaims,
    wire::Frame,
};

/// An optional string of a request, empty meaning absent: clients in several languages cannot
/// send an empty string apart from no string.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

/// A subscription opened and its replay read, not yet started: what the interceptors decide on.
struct PendingStream {
    /// The stream's first message.
    subscribed: Frame,
    replay: Replay,
    subscription: SubscriberQueue,
    head: u64,
    outcome: ResumeOutcome,
}

/// The client-facing service.
pub(crate) struct ClientApi {
    shared: Arc<Shared>,
}

impl ClientApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Authenticates a `Subscribe`, runs the interceptors around opening its stream, and
    /// returns the stream.
    pub(crate) async fn open(
        &self,
        request: pb::SubscribeRequest,
    ) -> Result<SubscriberStream, Status> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown.into());
        }
        let (call, last_event_id) = self.subscribe_call(&request)?;
        if given(&request.session_ticket).is_some() {
            self.unrevoked_anywhere(&call.session_id).await?;
        }
        let mut opened = None;
        let (slot, opening) = (&mut opened, &call);
        let open = move || -> BoxFuture<'_, Result<ResumeOutcome, Status>> {
            Box::pin(async move {
                let pending = self.open_stream(opening, last_event_id).await?;
                let outcome = pending.outcome.clone();
                *slot = Some(pending);
                Ok(outcome)
            })
        };
        shared.config.interceptors.subscribe(&call, open).await?;
        let pending = opened.ok_or_else(|| {
            Status::internal("an interceptor answered without opening the stream")
        })?;
        // Only a stream every interceptor let through takes the session over (ending an older
        // stream of it) and is announced to the channel's object: a refusal after `next.run()`
        // drops the subscription and leaves the session as it was.
        let stream = self.start_stream(&call, pending);
        // The other nodes know where the session is before its client does.
        if let Some(cluster) = shared.channels.sessions().cluster() {
            cluster.settled().await;
        }
        Ok(stream)
    }

    /// Checks a `Subscribe` before anything changes: the token, the position to resume from and
    /// the session ticket.
    pub(super) fn subscribe_call(
        &self,
        request: &pb::SubscribeRequest,
    ) -> Result<(SubscribeCall, Option<EventId>), Error> {
        let shared = &self.shared;
        let claims = shared.verify_token(&request.token)?;
        let last_event_id = given(&request.last_event_id)
            .map(str::parse::<EventId>)
            .transpose()?;
        let session_id = match given(&request.session_ticket) {
            Some(ticket) => self.unrevoked(shared.verify_ticket(&claims.chn, ticket)?)?,
            None => session::new_session_id(),
        };
        let call = SubscribeCall {
            channel: claims.chn.clone(),
            session_id,
            claims: Arc::new(claims),
            last_event_id: given(&request.last_event_id).map(str::to_owned),
        };
        Ok((call, last_event_id))
    }

    /// Opens the stream of an authenticated `Subscribe`: registers the subscriber and reads the
    /// replay. Nothing else changes until [`Self::start_stream`].
    async fn open_stream(
        &self,
        call: &SubscribeCall,
        last_event_id: Option<EventId>,
    ) -> Result<PendingStream, Error> {
        let shared = &self.shared;
        let claims = &call.claims;
        let session_id = &call.session_id;
        let ticket = session::issue_ticket(&shared.keys().keyring, &claims.chn, session_id);
        let admits: Admits = {
            let (session_id, claims) = (session_id.clone(), claims.clone());
            Arc::new(move |filter: &Filter| filter.admits(&session_id, claims.tags()))
        };
        let opened = shared
            .channels
            .open(&claims.chn, last_event_id, admits)
            .await?;
        let subscribed = pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Subscribed(pb::Subscribed {
                channel: claims.chn.clone(),
                session_id: session_id.clone(),
                session_ticket: ticket,
                resume: Some(resume_to_proto(&opened.outcome)),
                token_expires_at: claims.exp as i64,
                heartbeat_interval_ms: shared.timing.heartbeat_ms as u32,
                retention_seconds: shared.channels.store().retention_ms() / 1000,
                position: EventId {
                    epoch: shared.channels.store().epoch(),
                    seq: opened.head,
                }
                .to_string(),
            })),
        };
        Ok(PendingStream {
            subscribed: Frame::message(&subscribed),
            replay: opened.replay,
            subscription: opened.subscription,
            head: opened.head,
            outcome: opened.outcome,
        })
    }

    /// Registers the session as live, tells the channel's object, and starts the stream.
    fn start_stream(&self, call: &SubscribeCall, pending: PendingStream) -> SubscriberStream {
        let shared = &self.shared;
        let claims = &call.claims;
        let registration = shared
            .channels
            .sessions()
            .register(call.session_id.clone(), claims.clone());
        let session = SessionInfo {
            session_id: call.session_id.clone(),
            claims: claims.clone(),
        };
        tracing::info!(
            channel = %claims.chn,
            session_id = %call.session_id,
            resume = metrics::outcome_label(&pending.outcome),
            replaying = pending.outcome.replayed,
            "stream started"
        );
        let stream = SubscriberStream::new(
            Some(pending.subscribed),
            pending.replay,
            pending.subscription,
            pending.head,
            registration,
            shared.timing,
            shared.clock.clone(),
            &shared.shutdown,
            &pending.outcome,
        );
        shared
            .objects
            .subscribed(&claims.chn, session, pending.outcome);
        stream
    }

    /// `session_id`, unless the server API revoked it.
    fn unrevoked(&self, session_id: String) -> Result<String, Error> {
        if self.shared.channels.sessions().is_revoked(&session_id) {
            return Err(Error::Revoked);
        }
        Ok(session_id)
    }

    /// Refuses session `session_id` if any node revoked it (the local check is in
    /// [`Self::unrevoked`]).
    async fn unrevoked_anywhere(&self, session_id: &str) -> Result<(), Error> {
        let sessions = self.shared.channels.sessions();
        if sessions.cluster().is_some() && sessions.is_revoked_anywhere(session_id).await? {
            return Err(Error::Revoked);
        }
        Ok(())
    }

    /// The node that holds the session `ticket` names, when it is not this one (the ticket is
    /// verified there).
    async fn held_elsewhere(&self, ticket: &str) -> Result<Option<NodeId>, Error> {
        let sessions = self.shared.channels.sessions();
        let Some(cluster) = sessions.cluster() else {
            return Ok(None);
        };
        let Some(session_id) = session::unverified_session_id(ticket) else {
            return Ok(None);
        };
        if sessions.get(session_id).is_some() {
            return Ok(None);
        }
        Ok(cluster
            .place(session_id)
            .await?
            .map(|place| place.node)
            .filter(|node| *node != cluster.node()))
    }

    /// Runs `call` on `node` and decodes its answer.
    async fn forward<M: prost::Message + Default>(
        &self,
        node: NodeId,
        call: ForwardedCall,
    ) -> Result<M, Status> {
        let cluster = self
            .shared
            .channels
            .sessions()
            .cluster()
            .ok_or_else(|| Status::internal("forwarding without other nodes"))?;
        let answer = cluster.forward(node, call).await?;
        M::decode(answer.as_slice())
            .map_err(|_| Status::internal("the node holding the session answered malformed"))
    }

    /// The claims a call acts under: those of the token if one is given, else those of the
    /// live session named by the ticket.
    fn caller(
        &self,
        token: &str,
        ticket: Option<&str>,
    ) -> Result<(TokenClaims, Option<String>), Error> {
        let shared = &self.shared;
        if !token.is_empty() {
            let claims = shared.verify_token(token)?;
            let session_id = ticket
                .map(|t| shared.verify_ticket(&claims.chn, t))
                .transpose()?
                .map(|id| self.unrevoked(id))
                .transpose()?;
            return Ok((claims, session_id));
        }
        let Some(ticket) = ticket else {
            return Err(Error::InvalidArgument(
                "a token or a session ticket is required".into(),
            ));
        };
        let session_id = session::unverified_session_id(ticket).ok_or(session::InvalidTicket)?;
        let live = shared
            .channels
            .sessions()
            .get(session_id)
            .ok_or(Error::Refresh(RefreshError::NotLive))?;
        shared.verify_ticket(&live.channel, ticket)?;
        let claims = live.claims();
        if shared.clock.now_secs() >= claims.exp {
            return Err(crate::token::TokenError::Expired.into());
        }
        Ok((
            (*claims).clone(),
            Some(self.unrevoked(live.session_id.clone())?),
        ))
    }
}

impl ClientApi {
    /// Checks a `RefreshToken` before anything changes: the new token, and the ticket of a
    /// live session.
    pub(super) fn refresh_call(
        &self,
        request: &pb::RefreshTokenRequest,
    ) -> Result<RefreshCall, Error> {
        let shared = &self.shared;
        let claims = shared.verify_token(&request.token)?;
        let live = session::unverified_session_id(&request.session_ticket)
            .and_then(|id| shared.channels.sessions().get(id));
        let Some(live) = live else {
            // Authentic but not connected is FAILED_PRECONDITION; anything else is refused.
            shared.verify_ticket(&claims.chn, &request.session_ticket)?;
            return Err(RefreshError::NotLive.into());
        };
        // The ticket is checked against the channel it was issued for, so a token for another
        // channel reads as a changed subscription, not as a forged ticket.
        shared.verify_ticket(&live.channel, &request.session_ticket)?;
        Ok(RefreshCall {
            channel: live.channel.clone(),
            session_id: live.session_id.clone(),
            claims: Arc::new(claims),
        })
    }

    /// `RefreshToken`, on the node that holds the session's stream.
    async fn refresh(
        &self,
        request: pb::RefreshTokenRequest,
    ) -> Result<pb::RefreshTokenResponse, Status> {
        match self.held_elsewhere(&request.session_ticket).await? {
            Some(node) => {
                self.forward(node, ForwardedCall::RefreshToken(request))
                    .await
            }
            None => self.refresh_here(request).await,
        }
    }

    /// `RefreshToken` for a session whose stream is on this node (or on none).
    pub(super) async fn refresh_here(
        &self,
        request: pb::RefreshTokenRequest,
    ) -> Result<pb::RefreshTokenResponse, Status> {
        let shared = &self.shared;
        let call = self.refresh_call(&request)?;
        let live = shared.channels.sessions();
        let check = || -> BoxFuture<'_, Result<i64, Status>> {
            Box::pin(async {
                live.check_refresh(&call.session_id, &call.claims)
                    .map_err(Error::from)?;
                Ok(call.claims.exp as i64)
            })
        };
        let token_expires_at = shared.config.interceptors.refresh(&call, check).await?;
        // Swapped only once every interceptor let the refresh through: a refusal after
        // `next.run()` leaves the session on its old token.
        live.refresh(&call.session_id, (*call.claims).clone())
            .map_err(Error::from)?;
        Ok(pb::RefreshTokenResponse { token_expires_at })
    }
}

impl ClientApi {
    /// Checks an `Invoke` before anything runs: who calls, and whether their token allows the
    /// method.
    pub(super) fn invoke_call(&self, request: pb::InvokeRequest) -> Result<InvokeCall, Error> {
        let (claims, session_id) = self.caller(&request.token, given(&request.session_ticket))?;
        let Some(method) = request.path.first() else {
            return Err(Error::InvalidArgument("path is empty".into()));
        };
        if !claims.allows_method(method) {
            return Err(Error::MethodNotAllowed(method.clone()));
        }
        Ok(InvokeCall {
            channel: claims.chn.clone(),
            caller: Caller {
                session_id,
                claims: Arc::new(claims),
            },
            path: request.path,
            input: request
                .input
                .as_ref()
                .map_or(serde_json::Value::Null, json::from_proto),
        })
    }
}

fn resume_to_proto(outcome: &ResumeOutcome) -> pb::ResumeOutcome {
    let failure = match outcome.failure {
        None => pb::ResumeFailure::Unspecified,
        Some(ResumeFailure::ResumeOff) => pb::ResumeFailure::ResumeOff,
        Some(ResumeFailure::TooOld) => pb::ResumeFailure::TooOld,
        Some(ResumeFailure::StoreReset) => pb::ResumeFailure::StoreReset,
        Some(ResumeFailure::UnknownId) => pb::ResumeFailure::UnknownId,
    };
    pb::ResumeOutcome {
        requested: outcome.requested,
        recovered: outcome.recovered,
        failure: failure as i32,
        replayed: outcome.replayed,
        oldest_retained_id: outcome
            .oldest_retained
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

impl ClientApi {
    /// `Invoke`; one that names a session (by its ticket) runs on the node holding its
    /// stream.
    async fn invoke_method(
        &self,
        request: pb::InvokeRequest,
    ) -> Result<pb::InvokeResponse, Status> {
        let held_elsewhere = match given(&request.session_ticket) {
            Some(ticket) => self.held_elsewhere(ticket).await?,
            None => None,
        };
        match held_elsewhere {
            Some(node) => self.forward(node, ForwardedCall::Invoke(request)).await,
            None => self.invoke_here(request).await,
        }
    }

    /// `Invoke` on this node's channel object.
    pub(super) async fn invoke_here(
        &self,
        request: pb::InvokeRequest,
    ) -> Result<pb::InvokeResponse, Status> {
        let call = self.invoke_call(request)?;
        if let Some(session_id) = &call.caller.session_id {
            self.unrevoked_anywhere(session_id).await?;
        }
        let run = || -> BoxFuture<'_, Result<serde_json::Value, Status>> {
            Box::pin(async {
                let objects = &self.shared.objects;
                let output = objects
                    .invoke(
                        &call.channel,
                        &call.path,
                        call.caller.clone(),
                        call.input.clone(),
                    )
                    .await?;
                Ok(output)
            })
        };
        let output = self.shared.config.interceptors.invoke(&call, run).await?;
        Ok(pb::InvokeResponse {
            output: Some(json::to_proto(&output)),
        })
    }
}

/// A refused call, at debug: its code and message (never a token: statuses do not carry them).
pub(super) fn refused(call: &'static str, status: &Status) {
    tracing::debug!(call, code = ?status.code(), detail = status.message(), "call refused");
}

#[tonic::async_trait]
impl DurableIterator for ClientApi {
    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let answered = self.invoke_method(request.into_inner()).await;
        match &answered {
            Ok(_) => metrics::invoked(tonic::Code::Ok),
            Err(status) => {
                metrics::invoked(status.code());
                refused("Invoke", status);
            }
        }
        answered.map(Response::new)
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let refreshed = self.refresh(request.into_inner()).await;
        metrics::refreshed(refreshed.is_ok());
        if let Err(status) = &refreshed {
            refused("RefreshToken", status);
        }
        Ok(Response::new(refreshed?))
    }
}
