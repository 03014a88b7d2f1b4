//! Time on a live stream: heartbeats, the expiry notice, the end at expiry, and RefreshToken.
//! The server runs on a manual clock; "not yet" is proved with a marker event, never by waiting.

use std::time::Duration;

use crate::common::*;
use durable_iterator::{
    clock::Clock,
    pb::{self, subscribe_response::Kind},
    session,
    token::TokenClaims,
};
use serde_json::json;
use tonic::{Code, Streaming};

fn advance_secs(server: &TestServer, secs: u64) {
    server.clock.advance(Duration::from_secs(secs));
}

/// Claims for `channel` with `tags`, living `ttl` seconds from the clock's now.
fn claims(server: &TestServer, channel: &str, tags: &[&str], ttl: u64) -> TokenClaims {
    let mut claims = TokenClaims::new(channel, server.now_secs(), ttl);
    claims.tags = Some(tags.iter().map(|t| t.to_string()).collect());
    claims
}

fn with_rpc(mut claims: TokenClaims, rpc: &[&str]) -> TokenClaims {
    claims.rpc = Some(rpc.iter().map(|m| m.to_string()).collect());
    claims
}

async fn subscribe(
    server: &TestServer,
    claims: &TokenClaims,
) -> (pb::Subscribed, Streaming<pb::SubscribeResponse>) {
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.sign(claims)))
        .await
        .unwrap();
    assert_eq!(subscribed.token_expires_at as u64, claims.exp);
    (subscribed, stream)
}

fn is_heartbeat(kind: &Kind) -> bool {
    matches!(kind, Kind::Heartbeat(_))
}

/// Reads up to a marker and expects nothing but heartbeats before it: no notice, no event.
async fn expect_only_heartbeats_until_marker(
    server: &TestServer,
    channel: &str,
    stream: &mut Streaming<pb::SubscribeResponse>,
) {
    let before = messages_until_marker(server, channel, stream).await;
    assert!(before.iter().all(is_heartbeat), "{before:?}");
}

/// The next message that is not a heartbeat.
async fn next_but_heartbeats(stream: &mut Streaming<pb::SubscribeResponse>) -> Kind {
    loop {
        match next(stream).await {
            Ok(Kind::Heartbeat(_)) => continue,
            Ok(kind) => return kind,
            Err(status) => panic!("the stream ended: {status:?}"),
        }
    }
}

async fn expect_token_expiring(stream: &mut Streaming<pb::SubscribeResponse>, exp: u64) {
    match next_but_heartbeats(stream).await {
        Kind::TokenExpiring(notice) => assert_eq!(notice.token_expires_at as u64, exp),
        other => panic!("expected TokenExpiring, got {other:?}"),
    }
}

async fn expect_expired_end(stream: &mut Streaming<pb::SubscribeResponse>) {
    let message = expect_end(stream, Code::Unauthenticated).await;
    assert_eq!(message, "token expired");
}

#[tokio::test]
async fn an_idle_stream_gets_a_heartbeat_every_interval() {
    let server = TestServer::start().await;
    let (subscribed, mut stream) = subscribe(&server, &server.claims("room")).await;
    assert_eq!(subscribed.heartbeat_interval_ms, 15_000);
    for n in 1..=2 {
        advance_secs(&server, 15);
        match next(&mut stream).await {
            Ok(Kind::Heartbeat(heartbeat)) => {
                assert_eq!(heartbeat.server_time_ms as u64, server.clock.now_ms());
                assert_eq!(heartbeat.server_time_ms as u64, START_MS + n * 15_000);
            }
            other => panic!("expected heartbeat {n}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_heartbeat_comes_before_the_interval_since_the_last_message() {
    let server = TestServer::start().await;
    let (_, mut stream) = subscribe(&server, &server.claims("room")).await;
    advance_secs(&server, 14);
    // The marker comes first: no heartbeat 14 s after `Subscribed`.
    assert!(
        messages_until_marker(&server, "room", &mut stream)
            .await
            .is_empty()
    );
    // The interval counts from the last message sent (the marker, at 14 s), not from the
    // subscription: at 28 s nothing is due yet either.
    advance_secs(&server, 14);
    assert!(
        messages_until_marker(&server, "room", &mut stream)
            .await
            .is_empty()
    );
    advance_secs(&server, 15);
    match next(&mut stream).await {
        Ok(Kind::Heartbeat(heartbeat)) => {
            assert_eq!(heartbeat.server_time_ms as u64, START_MS + 43_000);
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

#[tokio::test]
async fn the_heartbeat_interval_is_configurable() {
    let server = TestServer::start_with(Options {
        config: Box::new(|config| config.heartbeat = Duration::from_secs(5)),
        ..Options::default()
    })
    .await;
    let (subscribed, mut stream) = subscribe(&server, &server.claims("room")).await;
    assert_eq!(subscribed.heartbeat_interval_ms, 5_000);
    advance_secs(&server, 4);
    assert!(
        messages_until_marker(&server, "room", &mut stream)
            .await
            .is_empty()
    );
    advance_secs(&server, 5);
    match next(&mut stream).await {
        Ok(Kind::Heartbeat(heartbeat)) => {
            assert_eq!(heartbeat.server_time_ms as u64, START_MS + 9_000);
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expiring_token_is_announced_30_s_ahead_and_ends_the_stream_at_exp() {
    let server = TestServer::start().await;
    let claims = claims(&server, "room", &[], 120);
    let (_, mut stream) = subscribe(&server, &claims).await;

    advance_secs(&server, 89);
    expect_only_heartbeats_until_marker(&server, "room", &mut stream).await;
    advance_secs(&server, 1);
    expect_token_expiring(&mut stream, claims.exp).await;

    // Still delivering a second before exp, and the notice is not repeated.
    advance_secs(&server, 29);
    expect_only_heartbeats_until_marker(&server, "room", &mut stream).await;
    advance_secs(&server, 1);
    assert_eq!(server.now_secs(), claims.exp);
    expect_expired_end(&mut stream).await;
}

#[tokio::test]
async fn refresh_with_the_same_channel_and_tags_keeps_the_stream_past_the_old_expiry() {
    let server = TestServer::start().await;
    let old = claims(&server, "room", &["a", "b"], 120);
    let (subscribed, mut stream) = subscribe(&server, &old).await;
    let ticket = subscribed.session_ticket.as_str();
    let message = expect_refused(
        server
            .invoke(invoke_request("", Some(ticket), &["m"]))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(message, r#"Method "m" is not allowed."#);

    advance_secs(&server, 90);
    expect_token_expiring(&mut stream, old.exp).await;

    // The same tag set in another order, a later expiry, and a method.
    let new = with_rpc(claims(&server, "room", &["b", "a"], 300), &["m"]);
    let expires_at = server
        .refresh_token(ticket, server.sign(&new))
        .await
        .unwrap();
    assert_eq!(expires_at as u64, new.exp);
    // The new `rpc` applies at once.
    let message = expect_refused(
        server
            .invoke(invoke_request("", Some(ticket), &["m"]))
            .await,
        // Allowed now: the relay object of the channel has no such method.
        Code::NotFound,
    );
    assert!(message.contains(r#""room""#), "{message}");

    // Past the old expiry the same stream keeps delivering.
    advance_secs(&server, 31);
    assert!(server.now_secs() > old.exp);
    let event = server.publish("room", json!("after the old exp")).await;
    assert_eq!(next_event(&mut stream).await.id, event);

    // A new notice before the new expiry, not earlier, then the end at the new expiry.
    server.clock.set_ms((new.exp - 31) * 1000);
    expect_only_heartbeats_until_marker(&server, "room", &mut stream).await;
    advance_secs(&server, 1);
    expect_token_expiring(&mut stream, new.exp).await;
    advance_secs(&server, 30);
    expect_expired_end(&mut stream).await;
}

#[tokio::test]
async fn refresh_to_an_earlier_expiry_reaches_an_idle_stream_at_once() {
    // No heartbeat is due and the clock stands still: only the refresh can wake the stream.
    let server = TestServer::start_with(Options {
        config: Box::new(|config| config.heartbeat = Duration::from_secs(3_600)),
        ..Options::default()
    })
    .await;
    let old = claims(&server, "room", &["a"], 3_600);
    let (subscribed, mut stream) = subscribe(&server, &old).await;
    // Issued 100 s ago and expiring in 20 s: its notice (30 s ahead, a quarter of its 120 s
    // lifetime) is due now.
    let mut new = claims(&server, "room", &["a"], 20);
    new.iat -= 100;
    server
        .refresh_token(&subscribed.session_ticket, server.sign(&new))
        .await
        .unwrap();
    expect_token_expiring(&mut stream, new.exp).await;
    advance_secs(&server, 20);
    expect_expired_end(&mut stream).await;
}

#[tokio::test]
async fn refresh_applies_to_a_stream_that_is_busy_sending() {
    let server = TestServer::start().await;
    let old = claims(&server, "room", &[], 120);
    let (subscribed, mut stream) = subscribe(&server, &old).await;
    // More than the client's HTTP/2 stream window (2 MiB) of events, unread: the server has
    // events queued for this stream and cannot send them until the client reads.
    let big = "x".repeat(60_000);
    let mut ids = Vec::new();
    for n in 0..80 {
        ids.push(server.publish("room", json!([n, big])).await);
    }
    let new = claims(&server, "room", &[], 600);
    let expires_at = server
        .refresh_token(&subscribed.session_ticket, server.sign(&new))
        .await
        .unwrap();
    assert_eq!(expires_at as u64, new.exp);
    // The old expiry passes while the stream is still busy with its queue.
    advance_secs(&server, 121);
    let before = messages_until_marker(&server, "room", &mut stream).await;
    let delivered: Vec<&str> = before
        .iter()
        .filter_map(|kind| match kind {
            Kind::Event(event) => Some(event.id.as_str()),
            Kind::Heartbeat(_) => None,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(delivered, ids);
}

#[tokio::test]
async fn refresh_that_changes_tags_or_channel_fails_and_the_stream_keeps_its_old_expiry() {
    let server = TestServer::start().await;
    let old = claims(&server, "room", &["a", "b"], 120);
    let (subscribed, mut stream) = subscribe(&server, &old).await;
    let ticket = subscribed.session_ticket.as_str();
    let changes = [
        claims(&server, "room", &["a"], 600),
        claims(&server, "room", &["a", "b", "c"], 600),
        claims(&server, "room", &[], 600),
        TokenClaims::new("room", server.now_secs(), 600),
        claims(&server, "other", &["a", "b"], 600),
    ];
    for change in changes {
        let change = with_rpc(change, &["m"]);
        let message = expect_refused(
            server.refresh_token(ticket, server.sign(&change)).await,
            Code::FailedPrecondition,
        );
        assert!(
            message.contains("changes the channel or tags"),
            "{change:?}: {message}"
        );
    }
    // Nothing of the refused tokens applies: not their methods, not their expiry.
    expect_refused(
        server
            .invoke(invoke_request("", Some(ticket), &["m"]))
            .await,
        Code::PermissionDenied,
    );
    expect_only_heartbeats_until_marker(&server, "room", &mut stream).await;
    advance_secs(&server, 90);
    expect_token_expiring(&mut stream, old.exp).await;
    advance_secs(&server, 30);
    expect_expired_end(&mut stream).await;
}

#[tokio::test]
async fn refresh_with_an_expired_token_or_a_forged_ticket_is_unauthenticated() {
    let server = TestServer::start().await;
    let old = claims(&server, "room", &["a"], 120);
    let (subscribed, mut stream) = subscribe(&server, &old).await;
    let ticket = subscribed.session_ticket.as_str();

    let expired = claims(&server, "room", &["a"], 0);
    assert_eq!(expired.exp, server.now_secs());
    let message = expect_refused(
        server.refresh_token(ticket, server.sign(&expired)).await,
        Code::Unauthenticated,
    );
    assert_eq!(message, "token expired");

    let new = server.sign(&claims(&server, "room", &["a"], 600));
    let id = subscribed.session_id.as_str();
    let other_key = durable_iterator::Keyring::new(["other-key"]).unwrap();
    let forged = [
        session::issue_ticket(&other_key, "room", id),
        session::issue_ticket(&server.keyring, "other", id),
        format!("{id}.AAAA"),
        "abc".into(),
        String::new(),
    ];
    for forged in forged {
        let message = expect_refused(
            server.refresh_token(&forged, new.clone()).await,
            Code::Unauthenticated,
        );
        assert!(
            message.contains("invalid session ticket"),
            "{forged}: {message}"
        );
    }
    // The stream is as it was.
    expect_only_heartbeats_until_marker(&server, "room", &mut stream).await;
    advance_secs(&server, 90);
    expect_token_expiring(&mut stream, old.exp).await;
}

#[tokio::test]
async fn refresh_of_a_session_that_is_not_live_fails_precondition() {
    let server = TestServer::start().await;
    let short = claims(&server, "room", &[], 60);
    let (subscribed, mut stream) = subscribe(&server, &short).await;
    advance_secs(&server, 60);
    expect_expired_end(&mut stream).await;
    let never = session::issue_ticket(&server.keyring, "room", &session::new_session_id());
    let new = server.sign(&claims(&server, "room", &[], 600));
    for ticket in [subscribed.session_ticket.as_str(), never.as_str()] {
        let message = expect_refused(
            server.refresh_token(ticket, new.clone()).await,
            Code::FailedPrecondition,
        );
        assert!(message.contains("not connected"), "{message}");
    }
}

/// A stream that never runs dry is still warned before its token expires: the notice goes out
/// between batches, not only once the queue is empty.
#[tokio::test]
async fn a_busy_stream_gets_the_expiry_notice_between_batches() {
    let server = TestServer::start().await;
    let token = claims(&server, "room", &[], 120);
    let (_subscribed, mut stream) = subscribe(&server, &token).await;
    // More than the client's HTTP/2 window of unread events keeps the server's queue busy.
    let big = "x".repeat(60_000);
    let mut ids = Vec::new();
    for n in 0..80 {
        ids.push(server.publish("room", json!([n, big])).await);
    }
    advance_secs(&server, 90);
    let messages = messages_until_marker(&server, "room", &mut stream).await;
    let notice_at = messages
        .iter()
        .position(|kind| matches!(kind, Kind::TokenExpiring(_)))
        .expect("the notice is sent while events are still queued");
    let last_event_at = messages
        .iter()
        .rposition(|kind| matches!(kind, Kind::Event(_)))
        .unwrap();
    assert!(
        notice_at < last_event_at,
        "notice at {notice_at}, last event at {last_event_at}"
    );
    let delivered: Vec<&str> = messages
        .iter()
        .filter_map(|kind| match kind {
            Kind::Event(event) => Some(event.id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, ids, "every event still arrives, in order");
}
