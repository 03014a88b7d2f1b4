//! Generates the gRPC service traits of the server from `proto/` without a system `protoc`
//! (`protox` parses, `tonic-prost-build` generates), against the messages of the contract crate.
//!
//! `Subscribe` is left out of the generated client service: it is served on the HTTP/2 stream
//! directly (`server/subscribe_service.rs`), which writes each subscriber's events as slices of
//! their batch's shared wire buffer. Reflection still lists it: it serves the full descriptor set.
use std::io;

fn main() -> io::Result<()> {
    let mut fds = protox::compile(["durable_iterator/v1/durable_iterator.proto"], ["proto"])
        .map_err(|e| io::Error::other(e.to_string()))?;
    let client_service = fds
        .file
        .iter_mut()
        .flat_map(|file| file.service.iter_mut())
        .find(|service| service.name() == "DurableIterator")
        .ok_or_else(|| io::Error::other("the contract has no DurableIterator service"))?;
    client_service
        .method
        .retain(|method| method.name() != "Subscribe");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        // A request that does not decode is INVALID_ARGUMENT, not INTERNAL (server/codec.rs).
        .codec_path("crate::server::codec::RequestCodec")
        // The publish requests are read by the server's own types, which keep payloads as
        // their wire bytes (server/publish_request.rs), and answered by types that write ids
        // without making strings of them (server/publish_response.rs); every other message is
        // the contract's.
        .extern_path(
            ".durable_iterator.v1.PublishRequest",
            "crate::server::publish_request::PublishRequest",
        )
        .extern_path(
            ".durable_iterator.v1.PublishBatchRequest",
            "crate::server::publish_request::PublishBatchRequest",
        )
        .extern_path(
            ".durable_iterator.v1.PublishResponse",
            "crate::server::publish_response::PublishResponse",
        )
        .extern_path(
            ".durable_iterator.v1.PublishBatchResponse",
            "crate::server::publish_response::PublishBatchResponse",
        )
        .extern_path(".durable_iterator.v1", "::durable_iterator_contract::pb")
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
