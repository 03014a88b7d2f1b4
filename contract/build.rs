//! Generates the messages, the client stubs and the service traits of both services from
//! `proto/` without a system `protoc`: `protox` parses the files, `tonic-prost-build` generates
//! from the descriptor set. The service traits serve test doubles and other implementations of
//! the contract; the server crate generates its own (it serves `Subscribe` on the HTTP/2 stream
//! directly), against these messages.
use std::{env, io, path::PathBuf};

fn main() -> io::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let fds = protox::compile(["durable_iterator/v1/durable_iterator.proto"], ["../proto"])
        .map_err(|e| io::Error::other(e.to_string()))?;
    std::fs::write(
        out_dir.join("durable_iterator_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
