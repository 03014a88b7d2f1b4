//! # durable-iterator-contract
//!
//! What the durable-iterator server and its Rust client agree on, declared once:
//!
//! - [`pb`]: the gRPC messages, client stubs and service traits of both services, generated
//!   from `proto/durable_iterator/v1/durable_iterator.proto`;
//! - [`token`]: the oRPC-compatible channel token (sign, verify, claims), with the [`Keyring`]
//!   of signing keys;
//! - [`Method`]: a channel object's method as a typed descriptor, which the server implements
//!   and the client calls, so a call with the wrong types does not compile;
//! - [`json`]: how JSON travels as `google.protobuf.Value`;
//! - [`clock`]: time, injected, so both sides test expiry, heartbeats and backoff without
//!   sleeping.
//!
//! Everything here is pure or async-runtime-agnostic: no I/O, no transport.

pub mod clock;
pub mod json;
pub mod keyring;
mod method;
pub mod token;

pub use keyring::{Keyring, KeyringError};
pub use method::Method;

/// The generated protobuf messages, and the client stubs and service traits of both services.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/durable_iterator.v1.rs"));

    /// The encoded descriptor set of the contract (for reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/durable_iterator_descriptor.bin"));
}
