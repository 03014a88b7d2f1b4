//! The request side of `Subscribe`, which the server reads itself rather than through tonic:
//! the `grpc-encoding` and `grpc-accept-encoding` headers and the body's gRPC framing and
//! compression. Any bytes give the request or a status, never a panic, and never a status that
//! tells the client to retry what cannot succeed where tonic would not.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use durable_iterator::fuzz_support::{accepted_encoding, read_grpc_header, read_subscribe_request};
use libfuzzer_sys::fuzz_target;
use tonic::Code;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    grpc_encoding: Option<&'a [u8]>,
    grpc_accept_encoding: &'a [u8],
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let accepted = accepted_encoding(input.grpc_accept_encoding);
    assert!(matches!(accepted, None | Some("gzip" | "zstd")));

    let header = read_grpc_header(input.body);
    assert_eq!(header.is_some(), input.body.len() >= 5);

    let body = Bytes::copy_from_slice(input.body);
    if let Err(status) = read_subscribe_request(body, input.grpc_encoding) {
        // INTERNAL for a body that is not one gRPC message and UNIMPLEMENTED for an unknown
        // encoding, as tonic answers the other calls; OUT_OF_RANGE past the size limit;
        // INVALID_ARGUMENT for a message that does not decode.
        assert!(
            matches!(
                status.code(),
                Code::Internal | Code::Unimplemented | Code::OutOfRange | Code::InvalidArgument
            ),
            "{status:?}"
        );
        // One whole uncompressed message: only its contents can be wrong.
        if let Some((false, len)) = header
            && input.body.len() == 5 + len
            && input.grpc_encoding.is_none()
        {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        }
    }
});
