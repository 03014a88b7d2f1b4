//! The client service's requests (`Subscribe`, `Invoke`, `RefreshToken`) from any bytes,
//! through the server's own decoding and the checks its handlers make before anything changes.
//!
//! Bytes that do not decode are INVALID_ARGUMENT. A request that decodes is refused as the
//! contract says: UNAUTHENTICATED for a token or ticket that does not verify, INVALID_ARGUMENT
//! for what is malformed or over a limit, PERMISSION_DENIED for a method the token does not
//! allow, FAILED_PRECONDITION for a session that is not live; never INTERNAL, never a panic,
//! and no message gives a key away.
//!
//! A fuzzer cannot forge signatures, so the input may also replace the token with one signed
//! over its own payload (the schema checks behind the signature) or one minted from its claims
//! (the checks behind the token's), and the ticket with one issued by the server.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use durable_iterator::{
    TokenClaims,
    fuzz_support::RequestChecks,
    pb,
    session::{issue_ticket, verify_ticket},
    token,
};
use durable_iterator_fuzz::{NOW_SECS, assert_keeps_the_key, checks, keyring, signed};
use libfuzzer_sys::fuzz_target;
use tonic::{Code, Status};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    call: Call,
    token: TokenChoice,
    ticket: TicketChoice,
    /// The request message, as on the wire.
    message: &'a [u8],
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Call {
    Subscribe,
    Invoke,
    RefreshToken,
}

#[derive(Arbitrary, Debug)]
enum TokenChoice {
    /// The token as decoded.
    AsSent,
    /// The decoded token's payload (all of it if it has no dot), signed with the server's key.
    SignedPayload,
    /// A token the server minted, for the checks behind the token's.
    Minted {
        chn: String,
        tags: Option<Vec<String>>,
        rpc: Option<Vec<String>>,
        /// Seconds from now to `exp`: negative is expired.
        lifetime: i32,
    },
}

#[derive(Arbitrary, Debug)]
enum TicketChoice {
    /// The ticket as decoded.
    AsSent,
    /// A ticket the server issued for the decoded ticket's session id on the token's channel.
    IssuedForTheTokensChannel,
}

fn choose_token(token: &mut String, choice: TokenChoice) {
    match choice {
        TokenChoice::AsSent => {}
        TokenChoice::SignedPayload => {
            let payload = token
                .rsplit_once('.')
                .map_or(token.as_str(), |(payload, _)| payload);
            *token = signed(payload);
        }
        TokenChoice::Minted {
            chn,
            tags,
            rpc,
            lifetime,
        } => {
            let claims = TokenClaims {
                chn,
                tags,
                att: None,
                rpc,
                iat: NOW_SECS,
                exp: NOW_SECS.saturating_add_signed(lifetime.into()),
            };
            *token = token::sign(keyring(), &claims);
        }
    }
}

fn issue_for_channel(ticket: &mut String, token: &str, choice: &TicketChoice) {
    if let TicketChoice::IssuedForTheTokensChannel = choice {
        // The claims as they are, whether or not they pass the server's checks.
        let Some(channel) = token::verify(keyring(), token, 0)
            .ok()
            .map(|claims| claims.chn)
        else {
            return;
        };
        let session_id = ticket
            .rsplit_once('.')
            .map_or(ticket.as_str(), |(id, _)| id);
        *ticket = issue_ticket(keyring(), &channel, session_id);
    }
}

/// A refusal of a request made of `sent` with one of `allowed` codes, telling nothing it should
/// not.
fn assert_refused(status: &Status, allowed: &[Code], sent: &[u8]) {
    assert!(allowed.contains(&status.code()), "{status:?}");
    assert_keeps_the_key(status, sent);
}

fn decode<M: prost::Message + Default>(message: &[u8], sent: &[u8]) -> Option<M> {
    RequestChecks::decode(message)
        .inspect_err(|status| assert_refused(status, &[Code::InvalidArgument], sent))
        .ok()
}

fuzz_target!(|sent: &[u8]| {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(sent)) {
        check(input, sent);
    }
});

fn check(input: Input<'_>, sent: &[u8]) {
    match input.call {
        Call::Subscribe => {
            let Some(mut request) = decode::<pb::SubscribeRequest>(input.message, sent) else {
                return;
            };
            choose_token(&mut request.token, input.token);
            if let Some(ticket) = request.session_ticket.as_mut() {
                issue_for_channel(ticket, &request.token, &input.ticket);
            }
            match checks().subscribe(&request) {
                Ok((call, last_event_id)) => {
                    assert_eq!(call.channel, call.claims.chn);
                    assert!(NOW_SECS < call.claims.exp);
                    assert!(!call.session_id.is_empty());
                    let asked = request.last_event_id.as_deref().filter(|id| !id.is_empty());
                    assert_eq!(last_event_id.is_some(), asked.is_some());
                    if let Some(ticket) =
                        request.session_ticket.as_deref().filter(|t| !t.is_empty())
                    {
                        let kept = verify_ticket(keyring(), &call.channel, ticket);
                        assert_eq!(kept.as_deref(), Ok(call.session_id.as_str()));
                    }
                }
                Err(status) => assert_refused(
                    &status,
                    &[Code::Unauthenticated, Code::InvalidArgument],
                    sent,
                ),
            }
        }
        Call::Invoke => {
            let Some(mut request) = decode::<pb::InvokeRequest>(input.message, sent) else {
                return;
            };
            // An empty token stays empty: the call then acts under the live session of its ticket.
            if !request.token.is_empty() || matches!(input.token, TokenChoice::Minted { .. }) {
                choose_token(&mut request.token, input.token);
            }
            if let Some(ticket) = request.session_ticket.as_mut() {
                issue_for_channel(ticket, &request.token, &input.ticket);
            }
            match checks().invoke(request) {
                Ok(call) => {
                    let method = call.path.first().expect("a call has a method");
                    assert!(call.caller.claims.allows_method(method));
                    assert!(NOW_SECS < call.caller.claims.exp);
                }
                Err(status) => assert_refused(
                    &status,
                    &[
                        Code::Unauthenticated,
                        Code::InvalidArgument,
                        Code::PermissionDenied,
                        Code::FailedPrecondition,
                    ],
                    sent,
                ),
            }
        }
        Call::RefreshToken => {
            let Some(mut request) = decode::<pb::RefreshTokenRequest>(input.message, sent) else {
                return;
            };
            choose_token(&mut request.token, input.token);
            issue_for_channel(&mut request.session_ticket, &request.token, &input.ticket);
            // No session is live on this server: every refresh is refused.
            let status = checks()
                .refresh_token(&request)
                .expect_err("a refresh of a session that is not live");
            assert_refused(
                &status,
                &[
                    Code::Unauthenticated,
                    Code::InvalidArgument,
                    Code::FailedPrecondition,
                ],
                sent,
            );
        }
    }
}
