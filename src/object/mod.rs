//! Channel objects: Rust code bound to a channel, the Durable Object of oRPC's Durable Iterator.
//!
//! A type implementing [`ChannelObject`] is registered for a channel name or pattern
//! (`chat:*`); the server makes one instance per channel, on first use, and keeps it while the
//! server runs. The object
//! - answers method calls made with `Invoke`, by path, with typed input and output declared once
//!   as [`Method`](crate::contract::Method) descriptors that the Rust client shares;
//! - hears when a session subscribes ([`ChannelObject::on_subscribed`]) and when a session has
//!   ended, i.e. its resume window lapsed without a reconnect
//!   ([`ChannelObject::on_session_ended`]);
//! - publishes to its channel from anywhere ([`ChannelHandle::publish`]), with filters that may
//!   name sessions or pick them by their token ([`PublishFilter`]).
//!
//! ```
//! use std::sync::Arc;
//! use durable_iterator::{contract::Method, object::*};
//!
//! const PING: Method<(), String> = Method::new(&["ping"]);
//!
//! struct Room;
//!
//! impl ChannelObject for Room {
//!     fn methods(router: &mut Router<Self>) {
//!         router.method(PING, |_room: Arc<Room>, _call: Call, ()| async { Ok("pong".to_owned()) });
//!     }
//! }
//!
//! let mut objects = ObjectRegistry::new();
//! objects.register("room:*", |_channel: ChannelHandle| Room);
//! ```
//!
//! Channels with no registered object get the [`relay`] object (or, when the server is given
//! one, a [`proxy`] to an HTTP endpoint), so the standalone binary is useful without Rust code.

mod handle;
mod registry;
pub mod relay;
mod router;

pub mod proxy;

use std::sync::Arc;

pub use handle::{ChannelHandle, PublishFilter, SessionInfo};
pub use registry::{ChannelPattern, ObjectRegistry, Objects};
pub use router::Router;

use crate::{channel::ResumeOutcome, token::TokenClaims};

/// The Durable Object equivalent: user code bound to one channel.
///
/// Every hook has a default that does nothing, so an object implements only what it needs.
#[async_trait::async_trait]
pub trait ChannelObject: Send + Sync + Sized + 'static {
    /// Declares the object's methods; called once per registration.
    fn methods(router: &mut Router<Self>);

    /// A session subscribed (first time or resumed); runs beside the stream, which does not
    /// wait for it. Events it publishes reach the session live.
    async fn on_subscribed(&self, _session: &SessionInfo, _resume: &ResumeOutcome) {}

    /// A session ended: its stream closed and it did not come back within the resume window.
    async fn on_session_ended(&self, _session_id: &str) {}
}

/// Who calls a method: the session (when the call named one with its ticket) and the claims of
/// the token the call was made under.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The calling session, when the call presented its session ticket.
    pub session_id: Option<String>,
    /// The token's payload: channel, tags, `att`, `rpc`, expiry.
    pub claims: Arc<TokenClaims>,
}

impl Caller {
    /// The token's attachment (`att`), if any.
    pub fn att(&self) -> Option<&serde_json::Value> {
        self.claims.att.as_ref()
    }
}

/// One method call: who calls, and the channel the object is bound to.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    pub channel: ChannelHandle,
}

/// A method's failure, with the gRPC status code the caller receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MethodError {
    pub code: tonic::Code,
    pub message: String,
}

impl MethodError {
    /// A failure with `code` and a message for the caller.
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The caller's input is wrong (`INVALID_ARGUMENT`).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::InvalidArgument, message)
    }

    /// The caller may not do this (`PERMISSION_DENIED`).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::PermissionDenied, message)
    }

    /// The object's state does not allow this now (`FAILED_PRECONDITION`).
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::FailedPrecondition, message)
    }

    /// Something the caller can retry later (`UNAVAILABLE`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unavailable, message)
    }

    /// A bug or failure on the object's side (`INTERNAL`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Internal, message)
    }
}

impl From<crate::error::Error> for MethodError {
    fn from(error: crate::error::Error) -> Self {
        Self::new(error.code(), error.to_string())
    }
}
