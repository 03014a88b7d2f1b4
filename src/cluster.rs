//! The other nodes that share this node's channels, through a store they all use: where each
//! session's stream is, and the calls that must run on the node that holds it.
//!
//! A node alone (the embedded store, the memory store) has no [`Cluster`]: every session is
//! its own. On Redis, every node records the sessions it holds in a directory in Redis
//! (presence across nodes, revocations, who ends a session), and calls a node cannot answer
//! itself (a token refresh or an invoke for a session whose stream is elsewhere, a disconnect)
//! are forwarded to the node holding the session, which runs them as if they had come to it,
//! interceptors included, and answers through Redis.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::{object::PresentSession, pb, store::StoreError};

/// A node, as the directory names it: drawn at random when the node starts.
pub type NodeId = u64;

/// A call that runs on the node holding a session, as the API received it.
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardedCall {
    /// `RefreshToken` for a session whose stream is on that node.
    RefreshToken(pb::RefreshTokenRequest),
    /// `Invoke` naming a session (by its ticket) whose stream is on that node.
    Invoke(pb::InvokeRequest),
    /// `Disconnect` of a session of that node.
    Disconnect(pb::DisconnectRequest),
    /// `DisconnectAll`, for the sessions of that node.
    DisconnectAll(pb::DisconnectAllRequest),
}

/// The answer to a forwarded call: its response message, encoded, or the status it failed
/// with.
pub type ForwardedAnswer = Result<Vec<u8>, tonic::Status>;

/// A call another node forwarded here, and where its answer goes.
#[derive(Debug)]
pub struct IncomingCall {
    /// The call, to run on this node only (never forwarded again).
    pub call: ForwardedCall,
    /// Takes the answer back to the calling node.
    pub answer: oneshot::Sender<ForwardedAnswer>,
}

/// Where a session is, as the directory has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlace {
    /// The node holding its stream, or its resume window when the stream closed.
    pub node: NodeId,
    /// Its channel.
    pub channel: String,
}

/// The nodes sharing this node's channels (see the module docs).
#[async_trait]
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// This node.
    fn node(&self) -> NodeId;

    /// A stream of `session` opened here: the directory lists it as present on this node, and
    /// another node's older stream of it is superseded. Recorded in the background, in order
    /// with [`Self::closed`].
    fn opened(&self, session: &PresentSession);

    /// Returns once the changes told so far reached the directory (or failed to): a client
    /// told its stream opened may then call any node about it.
    async fn settled(&self);

    /// The token of `session`, present here, was refreshed: presence shows its new claims.
    fn refreshed(&self, session: &PresentSession);

    /// The stream of session `session_id` closed here; the session stays this node's for
    /// `window_ms` (its resume window), unless it opens elsewhere. In the background.
    fn closed(&self, session_id: &str, window_ms: u64);

    /// The resume window of session `session_id` lapsed here: whether the session is still
    /// this node's, in which case it has ended (and the directory forgets it). False when it
    /// opened on another node meanwhile: that node ends it.
    async fn ended_here(&self, session_id: &str) -> Result<bool, StoreError>;

    /// Refuses the tickets of sessions `session_ids` on every node for `for_ms` from now.
    async fn revoke(&self, session_ids: &[String], for_ms: u64) -> Result<(), StoreError>;

    /// Whether a node revoked the ticket of session `session_id`.
    async fn is_revoked(&self, session_id: &str) -> Result<bool, StoreError>;

    /// Where session `session_id` is, if any node holds it.
    async fn place(&self, session_id: &str) -> Result<Option<SessionPlace>, StoreError>;

    /// At most `limit` of the sessions present on `channel` on any node, in session id order,
    /// after `after`.
    async fn presence(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PresentSession>, StoreError>;

    /// How many sessions are present on `channel` on any node.
    async fn presence_count(&self, channel: &str) -> Result<usize, StoreError>;

    /// At most `limit` channels with sessions present on any node, in name order: those that
    /// start with `prefix` and sort after `after`.
    async fn present_channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// The nodes up now, this one included.
    async fn nodes(&self) -> Result<Vec<NodeId>, StoreError>;

    /// Runs `call` on `node` and waits for its answer; `UNAVAILABLE` when the node is gone or
    /// does not answer in time.
    async fn forward(&self, node: NodeId, call: ForwardedCall) -> ForwardedAnswer;

    /// The calls other nodes forward here; taken once, by the server.
    fn incoming(&self) -> Option<mpsc::UnboundedReceiver<IncomingCall>>;

    /// The sessions whose stream opened on another node; taken once, by the server.
    fn opened_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<String>>;
}
