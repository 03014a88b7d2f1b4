//! # durable-iterator
//!
//! Durable event streams over gRPC. A client subscribes to a *channel* with a signed token,
//! receives its events over a server stream, reconnects and resumes from the last event id with
//! nothing lost inside the retention window, refreshes its token without dropping the stream,
//! and calls the channel object's methods over the same connection.
//!
//! ## The design in a page
//!
//! - [`token`], [`session`], [`filter`] are pure: signing and verifying (oRPC-compatible
//!   tokens, session tickets), and who receives an event. No I/O, time passed in.
//! - [`store`] holds events per channel for the retention window behind one trait,
//!   [`store::EventStore`]; the store assigns sequence numbers. [`store::RedbStore`], the
//!   default, is an embedded on-disk log: one writer thread commits everything queued from every
//!   channel in one transaction (group commit), and a publish is acknowledged only once durable.
//! - [`channel`] is the domain core: one [`channel::Hub`] per active channel queues publishes,
//!   appends them to the store in batches (concurrent publishers share a commit), and hands each
//!   stored batch to every subscriber's bounded queue. Because the hub's `head` moves under the
//!   same lock as its subscriber list, a resuming subscriber replays from the store up to `head`
//!   and receives everything after it live: no gap, no duplicate.
//! - [`frame`]: every event is encoded into its `SubscribeResponse` bytes once, when stored;
//!   all subscribers, live or replaying, send those bytes as they are. A batch handed to the
//!   subscribers holds its events as gRPC messages back to back in one shared buffer
//!   ([`event::StoredBatch`]), and a `Subscribe` stream writes a run of them to HTTP/2 as one slice
//!   of it, without tonic's per-message copy (`server/wire.rs`).
//! - [`channel::Sessions`] knows the sessions with an open stream (what `RefreshToken` and
//!   `Invoke` act on) and the closed ones until their resume window lapses: a session has
//!   *ended* only when it did not come back in time.
//! - [`object`] runs user code bound to channels (the Durable Object): methods by path, typed
//!   once as [`Method`] descriptors shared with the client; hooks when sessions
//!   subscribe and end; publishing with filters. Channels with no object get the relay, or an
//!   HTTP method proxy. [`interceptor`]s wrap every Subscribe, Invoke and RefreshToken.
//! - [`server`] is the gRPC edge: services, grpc-web, reflection, health; domain errors become
//!   status codes in one place, [`error`].
//! - [`client`] is the Rust client: a subscription that reconnects, resumes and refreshes by
//!   itself as a plain `Stream` (no background task), and typed method calls.
//! - Time comes from a [`clock::Clock`], on both sides, so expiry, heartbeats, retention,
//!   backoff and liveness are tested without sleeping.
//!
//! Locks are `std::sync::Mutex`: they guard short, non-async critical sections, which is
//! cheaper than an async mutex and cannot be held across an `.await`.

mod channel;
mod error;
mod event;
mod filter;
mod interceptor;
mod limits;
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

pub use channel::{ResumeFailure, ResumeOutcome};
pub use error::Error;
pub use event::{EventId, MalformedEventId};
pub use filter::Filter;
pub use interceptor::{Interceptor, Interceptors, InvokeCall, Next, RefreshCall, SubscribeCall};
pub use limits::Limits;
pub use object::{
    Call, Caller, ChannelHandle, ChannelObject, ChannelPattern, MethodError, ObjectRegistry,
    PublishFilter, Router, SessionInfo, proxy::ProxyConfig, relay,
};
pub use server::{Server, ServerConfig, defaults};
pub use store::{EventStore, MemoryStore, RedbStore, StoreError};
