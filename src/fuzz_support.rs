//! Each item here is a thin way into the code the server runs on untrusted bytes, so a target
//! exercises that code and not a copy of it.

use bytes::Bytes;
use tonic::Status;

pub use crate::server::{
    CheckedBatch, CheckedEvent, DecodeRequest, PublishBatchRequest, PublishRequest, RequestChecks,
};
use crate::{
    pb,
    store::{StoreError, StoredEvent, redb::record},
    wire::{self, Encoding},
};

/// A `Subscribe` request body as the server reads it: `grpc_encoding` is the request's
/// `grpc-encoding` header, if it has one.
pub fn read_subscribe_request(
    body: Bytes,
    grpc_encoding: Option<&[u8]>,
) -> Result<pb::SubscribeRequest, Status> {
    let encoding = grpc_encoding
        .map(Encoding::of_request)
        .transpose()?
        .flatten();
    crate::server::read_subscribe_request(body, encoding)
}

/// The session id part of a ticket, unverified, as the server reads it to look the session up.
pub fn unverified_session_id(ticket: &str) -> Option<&str> {
    crate::session::unverified_session_id(ticket)
}

/// The encoding a response is compressed with for a `grpc-accept-encoding` header, by name.
pub fn accepted_encoding(grpc_accept_encoding: &[u8]) -> Option<&'static str> {
    Encoding::accepted(grpc_accept_encoding).map(Encoding::name)
}

/// The compression flag and length of the gRPC message header at the start of `bytes`.
pub fn read_grpc_header(bytes: &[u8]) -> Option<(bool, usize)> {
    wire::read_header(bytes).map(|header| (header.compressed, header.len))
}

/// The on-disk store's record of `events`, as its writer encodes it.
pub fn encode_record(events: &[StoredEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_events(events, &mut out);
    out
}

/// The events of a record whose first event is `first_seq`, as a read decodes them.
pub fn decode_record(first_seq: u64, record: &[u8]) -> Result<Vec<StoredEvent>, StoreError> {
    record::raw_events(first_seq, record)
        .map(|raw| raw.and_then(|raw| raw.decode()))
        .collect()
}

/// The encoded `SubscribeResponse` a stored event is sent as.
pub fn frame(event: &StoredEvent) -> &[u8] {
    event.frame.bytes()
}
