//! # durable-iterator
//!
//! Durable event streams over gRPC. A client subscribes to a *channel* with a signed token,
//! receives its events over a server stream, reconnects and resumes from the last event id with
//! nothing lost inside the retention window, refreshes its token without dropping the stream,
//! and calls the channel object's methods over the same connection.
//!
//! ## The design in a page
//!
//! The workspace has one home per concern; this crate is the server.
//!
//! - The contract is declared once, in `proto/` and the [`durable_iterator_contract`] crate
//!   (re-exported here): the generated messages ([`pb`]), the oRPC-compatible [`token`], typed
//!   method descriptors ([`Method`]), the [`json`] mapping, and the injected [`clock`]. The Rust
//!   client (`clients/rust`, crate `durable-iterator-client`) depends on it, not on this crate.
//! - `token` (in the contract), [`session`] and `filter` are pure: signing and verifying tokens
//!   and session tickets, and who receives an event ([`Filter`]). No I/O, time passed in.
//! - [`store`] holds events per channel for the retention window behind one trait,
//!   [`EventStore`]; the store assigns sequence numbers. [`RedbStore`], the default, is an
//!   embedded on-disk log: one writer thread commits everything queued from every channel in
//!   one transaction (group commit), and a publish is acknowledged only once durable.
//!   [`MemoryStore`] is the same in memory.
//! - `channel` is the domain core: one hub per active channel queues publishes, appends them to
//!   the store in batches (concurrent publishers share a commit), and hands each stored batch to
//!   every subscriber's bounded queue. Because the hub's head moves under the same lock as its
//!   subscriber list, a resuming subscriber replays from the store up to the head and receives
//!   everything after it live: no gap, no duplicate.
//! - `session` also holds the registry of sessions: those with an open stream (what
//!   `RefreshToken` and `Invoke` act on) and the closed ones until their resume window lapses;
//!   a session has *ended* only when it did not come back in time.
//! - `wire` is gRPC message framing: every event is encoded into its `SubscribeResponse` once,
//!   when stored, as a gRPC message inside its batch's shared buffer; all subscribers, live or
//!   replaying, send those bytes as they are.
//! - Channel objects ([`ChannelObject`]) run user code bound to channels (the Durable Object):
//!   methods by path through a [`Router`], typed once as [`Method`] descriptors shared with the
//!   client; hooks when sessions subscribe and end; publishing with a [`PublishFilter`].
//!   Channels with no object get the [`relay`], or an HTTP method proxy ([`ProxyConfig`]).
//!   [`Interceptor`]s wrap every Subscribe, Invoke and RefreshToken.
//! - `server` is the gRPC edge ([`Server`], [`ServerConfig`], [`defaults`]): both services,
//!   grpc-web, reflection, health; `Subscribe` is served on the HTTP/2 stream directly, writing
//!   runs of events as slices of their batch's buffer. Domain errors become status codes in one
//!   place, [`Error`].
//! - The command line (`src/bin/durable-iterator/`, one file per command) is behind the default
//!   `cli` feature, so a library user need not compile clap.
//!
//! Locks are `std::sync::Mutex`: they guard short, non-async critical sections, which is
//! cheaper than an async mutex and cannot be held across an `.await`.

mod channel;
pub mod cluster;
mod error;
mod event;
mod filter;
mod interceptor;
mod limits;
pub mod metrics;
mod object;
mod server;
pub mod session;
pub mod store;
mod wire;

use durable_iterator_contract::keyring;

#[doc(inline)]
pub use durable_iterator_contract::{
    Keyring, KeyringError, Method, clock, json, pb,
    token::{self, TokenClaims},
};

pub use channel::{
    HistoryEvent, HistoryPage, HistoryQuery, ReplayLimits, ResumeFailure, ResumeOutcome,
};
pub use error::Error;
pub use event::{EventId, MalformedEventId};

/// What `benches/durable_publish.rs` measures below the gRPC edge: not part of the API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::channel::{Channels, HubLimits};
}
/// What the fuzz targets in `fuzz/` drive below the gRPC edge: not part of the API.
#[doc(hidden)]
pub mod fuzz_support;
pub use filter::Filter;
pub use interceptor::{Interceptor, Interceptors, InvokeCall, Next, RefreshCall, SubscribeCall};
pub use limits::Limits;
pub use object::{
    Call, Caller, ChannelHandle, ChannelObject, ChannelPattern, MethodError, ObjectRegistry,
    PresentSession, PublishFilter, Router, SessionInfo, proxy::ProxyConfig, relay,
};
pub use server::{
    KeyReloader, Server, ServerConfig, TlsConfig, TlsError, defaults, dev_certificate,
    write_private_file,
};
pub use store::{
    EventStore, MemoryStore, RedbStore, RedisConfig, RedisStore, RedisTls, StoreError,
};
