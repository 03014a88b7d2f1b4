//! Generates the gRPC code from `proto/` without a system `protoc`: `protox` parses the files,
//! `tonic-prost-build` generates from the descriptor set.
//!
//! Two passes over the same descriptors:
//! - messages and clients, the plain prost types every Rust user sees (`durable_iterator::pb`);
//! - servers, where the streamed `SubscribeResponse` is replaced by `crate::frame::Frame`,
//!   a message encoded once per event whose bytes every subscriber's stream writes as they are,
//!   through `crate::frame::FrameCodec` (prost with a small per-call encode buffer).
use std::{env, io, path::PathBuf};

fn main() -> io::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fds = protox::compile(["durable_iterator/v1/durable_iterator.proto"], ["proto"])
        .map_err(|e| io::Error::other(e.to_string()))?;

    std::fs::write(
        out_dir.join("durable_iterator_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds.clone())?;

    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .out_dir(&server_dir)
        // prost with a small per-call encode buffer: idle streams hold less (see frame.rs).
        .codec_path("crate::frame::FrameCodec")
        .extern_path(".durable_iterator.v1", "crate::pb")
        .extern_path(
            ".durable_iterator.v1.SubscribeResponse",
            "crate::frame::Frame",
        )
        .compile_fds(fds)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
