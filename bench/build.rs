//! Generates the bare-tonic baseline's services from `proto/` (no system `protoc`), against the
//! contract's messages, with the streamed `SubscribeResponse` replaced by [`crate::frame::Frame`]:
//! bytes encoded once per event and written by every stream as they are, as the product does,
//! so the baseline is the stack's ceiling, not a weaker server.
use std::io;

fn main() -> io::Result<()> {
    let fds = protox::compile(["durable_iterator/v1/durable_iterator.proto"], ["../proto"])
        .map_err(|e| io::Error::other(e.to_string()))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        // prost with a small per-call encode buffer, as the product's streams hold.
        .codec_path("crate::frame::FrameCodec")
        .extern_path(".durable_iterator.v1", "::durable_iterator::pb")
        .extern_path(
            ".durable_iterator.v1.SubscribeResponse",
            "crate::frame::Frame",
        )
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
