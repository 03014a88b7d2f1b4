//! The admin service's requests (`Publish`, `PublishBatch`, `IssueToken`) from any bytes,
//! through the server's own decoding and the checks its handlers make before anything changes
//! (the API key aside: these run as an authorized caller).
//!
//! Whatever the bytes, the answer is the checked request or INVALID_ARGUMENT: never another
//! code, never a panic. A publish request reads as prost reads it (its payloads encoded again),
//! whether the server's one-pass reading took it or left it to prost. A token `IssueToken` mints verifies to what was asked and is one that
//! `Subscribe` accepts.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use durable_iterator::{
    Limits,
    fuzz_support::{DecodeRequest, PublishBatchRequest, PublishRequest, RequestChecks},
    json, pb, token,
};
use durable_iterator_fuzz::{NOW_SECS, assert_keeps_the_key, checks, keyring};
use libfuzzer_sys::fuzz_target;
use tonic::{Code, Status};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    call: Call,
    /// The request message, as on the wire.
    message: &'a [u8],
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Call {
    Publish,
    PublishBatch,
    IssueToken,
}

/// The refusal of a request made of `sent`: INVALID_ARGUMENT, telling nothing it should not.
fn assert_invalid_argument(status: &Status, sent: &[u8]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_keeps_the_key(status, sent);
}

fn decode<M: DecodeRequest>(message: &[u8], sent: &[u8]) -> Option<M> {
    RequestChecks::decode(message)
        .inspect_err(|status| assert_invalid_argument(status, sent))
        .ok()
}

/// `read`, the server's reading of `message`, is prost's decoding of `P` made into the
/// server's type: both refuse it, or both read the same request.
fn assert_read_as_prost_reads<P, M>(read: &Option<M>, message: &[u8])
where
    P: prost::Message + Default + Into<M>,
    M: PartialEq + std::fmt::Debug,
{
    let by_prost = P::decode(message).ok().map(Into::into);
    assert_eq!(read, &by_prost, "the one-pass reading differs from prost's");
}

fuzz_target!(|sent: &[u8]| {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(sent)) {
        check(input, sent);
    }
});

fn check(input: Input<'_>, sent: &[u8]) {
    let limits = Limits::default();
    match input.call {
        Call::Publish => {
            let read = decode::<PublishRequest>(input.message, sent);
            assert_read_as_prost_reads::<pb::PublishRequest, _>(&read, input.message);
            let Some(request) = read else {
                return;
            };
            match checks().publish(request) {
                Ok((channel, payload, _)) => {
                    assert!(limits.check_channel(&channel).is_ok());
                    assert!(payload.len() <= limits.max_payload_bytes);
                }
                Err(status) => assert_invalid_argument(&status, sent),
            }
        }
        Call::PublishBatch => {
            let read = decode::<PublishBatchRequest>(input.message, sent);
            assert_read_as_prost_reads::<pb::PublishBatchRequest, _>(&read, input.message);
            let Some(request) = read else {
                return;
            };
            let events = request.events.len();
            match checks().publish_batch(request) {
                Ok(by_channel) => {
                    let mut positions: Vec<usize> = by_channel
                        .values()
                        .flat_map(|positions| positions.iter().copied())
                        .collect();
                    positions.sort_unstable();
                    assert!(
                        positions.into_iter().eq(0..events),
                        "an event lost or doubled"
                    );
                }
                Err(status) => assert_invalid_argument(&status, sent),
            }
        }
        Call::IssueToken => {
            let Some(request) = decode::<pb::IssueTokenRequest>(input.message, sent) else {
                return;
            };
            let asked = request.clone();
            let issued = match checks().issue_token(request) {
                Ok(issued) => issued,
                Err(status) => return assert_invalid_argument(&status, sent),
            };
            let claims =
                token::verify(keyring(), &issued.token, NOW_SECS).expect("a minted token verifies");
            assert_eq!(claims.chn, asked.channel);
            assert_eq!(claims.tags(), asked.tags);
            assert_eq!(claims.rpc.unwrap_or_default(), asked.rpc);
            assert_eq!(claims.att, asked.att.as_ref().map(json::from_proto));
            assert_eq!(claims.exp as i64, issued.expires_at);
            let subscribe = pb::SubscribeRequest {
                token: issued.token,
                ..Default::default()
            };
            if let Err(status) = checks().subscribe(&subscribe) {
                panic!("Subscribe refuses a token IssueToken minted: {status:?}");
            }
        }
    }
}
