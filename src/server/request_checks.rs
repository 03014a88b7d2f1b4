//! The checks every call makes of its request before anything changes, on their own: the fuzz
//! targets drive the handlers' own validation through these, without a listener, a stream or
//! a store write.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use tonic::Status;

use super::{
    Server, ServerConfig,
    admin::AdminApi,
    client_api::ClientApi,
    codec::DecodeRequest,
    publish_request::{PublishBatchRequest, PublishRequest},
};
use crate::{
    clock::SharedClock,
    event::EventId,
    filter::Filter,
    interceptor::{InvokeCall, RefreshCall, SubscribeCall},
    pb,
    store::MemoryStore,
};

/// The validation of both services' handlers, over a server with no sessions and an empty
/// in-memory store.
pub struct RequestChecks {
    client: ClientApi,
    admin: AdminApi,
}

impl std::fmt::Debug for RequestChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestChecks").finish_non_exhaustive()
    }
}

/// A checked `Publish`: the channel, the event's encoded payload and its filter.
pub type CheckedEvent = (String, Bytes, Filter);

/// A checked `PublishBatch`: per channel, the events' positions in the request.
pub type CheckedBatch = HashMap<String, Vec<usize>>;

impl RequestChecks {
    /// The checks of a server configured by `config`, at the time of `clock`.
    pub fn new(config: ServerConfig, clock: SharedClock) -> Self {
        let server = Server::new(config, Arc::new(MemoryStore::new(0)), clock);
        Self {
            client: ClientApi::new(server.shared.clone()),
            admin: AdminApi::new(server.shared),
        }
    }

    /// Decodes a request message as its call does; a failure is `INVALID_ARGUMENT`.
    pub fn decode<M: DecodeRequest>(message: &[u8]) -> Result<M, Status> {
        M::decode_request(message)
    }

    /// What `Subscribe` checks before it opens the stream.
    pub fn subscribe(
        &self,
        request: &pb::SubscribeRequest,
    ) -> Result<(SubscribeCall, Option<EventId>), Status> {
        Ok(self.client.subscribe_call(request)?)
    }

    /// What `Invoke` checks before it runs the method.
    pub fn invoke(&self, request: pb::InvokeRequest) -> Result<InvokeCall, Status> {
        Ok(self.client.invoke_call(request)?)
    }

    /// What `RefreshToken` checks before it swaps the token.
    pub fn refresh_token(&self, request: &pb::RefreshTokenRequest) -> Result<RefreshCall, Status> {
        Ok(self.client.refresh_call(request)?)
    }

    /// What `Publish` checks before it publishes (the API key aside).
    pub fn publish(&self, request: PublishRequest) -> Result<CheckedEvent, Status> {
        let (channel, event) = self.admin.checked_event(request)?;
        Ok((channel.to_string(), event.payload, (*event.filter).clone()))
    }

    /// What `PublishBatch` checks before it publishes (the API key aside).
    pub fn publish_batch(&self, request: PublishBatchRequest) -> Result<CheckedBatch, Status> {
        let by_channel = self.admin.checked_batch(request)?;
        Ok(by_channel
            .into_iter()
            .map(|(channel, (positions, _))| (channel.to_string(), positions))
            .collect())
    }

    /// `IssueToken` (the API key aside): it changes nothing, so all of it runs.
    pub fn issue_token(
        &self,
        request: pb::IssueTokenRequest,
    ) -> Result<pb::IssueTokenResponse, Status> {
        Ok(self.admin.mint_token(request)?)
    }
}
