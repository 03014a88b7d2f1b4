//! Sessions: a subscriber's identity on a channel, assigned by the server and kept across
//! reconnects by a signed ticket ([`issue_ticket`], [`verify_ticket`]), and the registry of sessions with a stream open
//! now or closed less than a resume window ago.

mod across_nodes;
mod registry;
mod ticket;

pub use registry::SessionNotFound;
pub(crate) use registry::{LiveRegistration, RefreshError, Sessions, StreamEnd};
pub(crate) use ticket::unverified_session_id;
pub use ticket::{InvalidTicket, issue_ticket, new_session_id, verify_ticket};
