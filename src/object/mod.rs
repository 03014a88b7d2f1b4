//! Channel objects: Rust code bound to a channel, the Durable Object of oRPC's Durable Iterator.
//!
//! A type implementing [`ChannelObject`] is registered for a channel name or pattern
//! (`chat:*`); the server makes one instance per channel, on first use, and keeps it while the
//! server runs. The object
//! - answers method calls made with `Invoke`, by path, with typed input and output declared once
//!   as [`Method`](crate::Method) descriptors that the Rust client shares;
//! - hears when a session subscribes ([`ChannelObject::on_subscribed`]) and when a session has
//!   ended, i.e. its resume window lapsed without a reconnect
//!   ([`ChannelObject::on_session_ended`]);
//! - publishes to its channel from anywhere ([`ChannelHandle::publish`]), with filters that may
//!   name sessions or pick them by their token ([`PublishFilter`]).
//!
//! ```
//! use std::sync::Arc;
//! use durable_iterator::*;
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

mod bound;
mod handle;
mod registry;
pub mod relay;
mod router;

pub(crate) mod proxy;

use std::sync::Arc;

pub use crate::error::MethodError;
pub use handle::{ChannelHandle, PresentSession, PublishFilter, SessionInfo};
pub(crate) use registry::Objects;
pub use registry::{ChannelPattern, ObjectRegistry};
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
    /// Who calls.
    pub caller: Caller,
    /// The channel the object is bound to: publish to it, list its sessions.
    pub channel: ChannelHandle,
}
