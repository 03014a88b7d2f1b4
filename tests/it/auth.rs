//! Refusals over real gRPC: bad tokens, admin keys, limits, the method allow-list. Every refusal
//! has an exact code, says why, and changes nothing.

use crate::common::*;
use durable_iterator::{
    Keyring,
    pb::{self, subscribe_response::Kind},
    session,
    token::{self, TokenClaims, TokenError},
};
use serde_json::json;
use tonic::{Code, Request};

/// What a refused token's message must say.
const MALFORMED: &[&str] = &["malformed"];
const BAD_SIGNATURE: &[&str] = &["bad signature"];
const EXPIRED: &[&str] = &["token expired"];
/// A cut signature either fails to decode or decodes to too few bytes, depending on its last
/// characters: both are fine, as long as the message says one of them.
const MALFORMED_OR_BAD_SIGNATURE: &[&str] = &["malformed", "bad signature"];

/// Tokens every client call must refuse with UNAUTHENTICATED: (what, token, accepted reasons).
fn bad_tokens(server: &TestServer) -> Vec<(String, String, &'static [&'static str])> {
    let valid = server.token("room");
    let now = server.now_secs();
    let mut expired = TokenClaims::new("room", now - 60, 60);
    assert_eq!(expired.exp, now, "expired exactly now");
    expired.rpc = Some(vec!["m".into()]);
    let other_key = Keyring::new(["other-key"]).unwrap();
    let mut tokens: Vec<(String, String, &'static [&'static str])> = vec![
        ("abc".into(), "abc".into(), MALFORMED),
        ("{}.".into(), "{}.".into(), BAD_SIGNATURE),
        (
            "minus its last character".into(),
            valid[..valid.len() - 1].into(),
            MALFORMED_OR_BAD_SIGNATURE,
        ),
        (
            "minus half".into(),
            valid[..valid.len() / 2].into(),
            MALFORMED,
        ),
        (
            "exp == now".into(),
            token::sign(&server.keyring, &expired),
            EXPIRED,
        ),
        (
            "signed with another key".into(),
            token::sign(&other_key, &server.claims("room")),
            BAD_SIGNATURE,
        ),
        (
            "tampered payload".into(),
            valid.replacen("\"room\"", "\"roon\"", 1),
            BAD_SIGNATURE,
        ),
        (
            // Signed with the right key, but `chn` is not a string.
            "validly signed, wrong schema".into(),
            sign_raw(
                server,
                &format!(r#"{{"chn":1,"iat":{now},"exp":{}}}"#, now + 60),
            ),
            MALFORMED,
        ),
    ];
    // Random bytes, made into a string (a protobuf string is UTF-8), from a fixed seed.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for len in [1, 17, 64, 200] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        tokens.push((
            format!("{len} random bytes"),
            text,
            MALFORMED_OR_BAD_SIGNATURE,
        ));
        // The same with a dot, so the signature part is what gets judged.
        tokens.push((
            format!("{len} random bytes with a dot"),
            format!("{}.{}", String::from_utf8_lossy(&bytes), "AAAA"),
            MALFORMED_OR_BAD_SIGNATURE,
        ));
    }
    tokens
}

/// `payload` with a valid signature by the server's key.
fn sign_raw(server: &TestServer, payload: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let signature = server.keyring.sign(&[payload.as_bytes()]);
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn assert_says_why(what: &str, message: &str, reasons: &[&str]) {
    assert!(
        reasons.iter().any(|reason| message.contains(reason)),
        "{what}: {message:?} says none of {reasons:?}"
    );
    assert!(
        !message.contains(SIGNING_KEY),
        "{what}: the message echoes the signing key: {message:?}"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_by_subscribe_with_unauthenticated() {
    let server = TestServer::start().await;
    let tokens = bad_tokens(&server);
    // "" is a token too for Subscribe: it has no other way in.
    for (what, token, reasons) in
        tokens
            .into_iter()
            .chain([(String::from("empty"), String::new(), MALFORMED)])
    {
        let message = expect_refused(
            server.subscribe(subscribe_request(token)).await,
            Code::Unauthenticated,
        );
        assert_says_why(&what, &message, reasons);
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_by_invoke_with_unauthenticated() {
    let server = TestServer::start().await;
    // For Invoke an empty token means "no token" (see `invoke_needs_a_path_and_a_caller`).
    for (what, token, reasons) in bad_tokens(&server) {
        let message = expect_refused(
            server.invoke(invoke_request(&token, None, &["m"])).await,
            Code::Unauthenticated,
        );
        assert_says_why(&what, &message, reasons);
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_by_refresh_with_unauthenticated_and_the_stream_goes_on() {
    let server = TestServer::start().await;
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    for (what, token, reasons) in
        bad_tokens(&server)
            .into_iter()
            .chain([(String::from("empty"), String::new(), MALFORMED)])
    {
        let message = expect_refused(
            server
                .refresh_token(&subscribed.session_ticket, token)
                .await,
            Code::Unauthenticated,
        );
        assert_says_why(&what, &message, reasons);
    }
    assert!(
        messages_until_marker(&server, "room", &mut stream)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_rotated_keyring_accepts_both_keys_and_signs_with_the_first() {
    let server = TestServer::start_with(Options {
        config: Box::new(|config| {
            config.keyring = Keyring::new(["new-key", SIGNING_KEY]).unwrap();
        }),
        ..Options::default()
    })
    .await;
    let old = Keyring::new([SIGNING_KEY]).unwrap();
    let new = Keyring::new(["new-key"]).unwrap();
    for (which, ring) in [("old", &old), ("new", &new)] {
        let token = token::sign(ring, &server.claims("room"));
        let (subscribed, _stream) = server
            .subscribe(subscribe_request(token))
            .await
            .unwrap_or_else(|status| panic!("a token signed with the {which} key: {status:?}"));
        assert_eq!(subscribed.channel, "room");
    }
    let retired = token::sign(
        &Keyring::new(["retired-key"]).unwrap(),
        &server.claims("room"),
    );
    let message = expect_refused(
        server.subscribe(subscribe_request(retired)).await,
        Code::Unauthenticated,
    );
    assert_says_why("a key not in the ring", &message, BAD_SIGNATURE);

    let issued = issue(&server, issue_request("room")).await.unwrap();
    let now = server.now_secs();
    assert!(token::verify(&new, &issued.token, now).is_ok());
    assert_eq!(
        token::verify(&old, &issued.token, now),
        Err(TokenError::BadSignature)
    );
}

fn issue_request(channel: &str) -> pb::IssueTokenRequest {
    pb::IssueTokenRequest {
        channel: channel.into(),
        tags: Vec::new(),
        att: None,
        rpc: Vec::new(),
        ttl_seconds: 0,
    }
}

/// `IssueToken` with the API key.
async fn issue(
    server: &TestServer,
    request: pb::IssueTokenRequest,
) -> Result<pb::IssueTokenResponse, tonic::Status> {
    let response = server.admin().issue_token(authorized(request)).await?;
    Ok(response.into_inner())
}

fn with_authorization<T>(message: T, value: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn admin_calls_without_the_right_key_are_unauthenticated_and_store_nothing() {
    let server = TestServer::start().await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let mut last = server.publish("room", json!("before")).await;
    assert_eq!(next_event(&mut stream).await.id, last);
    let wrong = [
        None,
        Some("Bearer wrong-key"),
        Some("Bearer "),
        Some("Bearer"),
        Some("Bearer admin-keyx"),
        Some("Basic admin-key"),
        Some("Token admin-key"),
        Some(API_KEY),
    ];
    for authorization in wrong {
        let status = server
            .admin()
            .publish(with_authorization(
                publish_request("room", json!("refused")),
                authorization,
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{authorization:?}: {status:?}"
        );
        assert!(status.message().contains("API key"), "{status:?}");
        assert!(!status.message().contains(API_KEY), "{status:?}");
        last = expect_nothing_stored_since(&server, "room", &mut stream, &last).await;

        let status = server
            .admin()
            .issue_token(with_authorization(issue_request("room"), authorization))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{authorization:?}: {status:?}"
        );
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let authorization = format!("{scheme} {API_KEY}");
        server
            .admin()
            .publish(with_authorization(
                publish_request("room", json!(scheme)),
                Some(&authorization),
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn issue_token_refuses_a_lifetime_over_the_limit() {
    let server = TestServer::start().await;
    for ttl in [366 * 86_400 + 1, u64::MAX] {
        let mut request = issue_request("room");
        request.ttl_seconds = ttl;
        let message = expect_refused(issue(&server, request).await, Code::InvalidArgument);
        assert!(message.contains("token lifetime"), "{message}");
    }
    let mut request = issue_request("room");
    request.ttl_seconds = 366 * 86_400;
    issue(&server, request).await.unwrap();
}

#[tokio::test]
async fn an_admin_api_without_a_configured_key_refuses_every_call() {
    let server = TestServer::start_with(Options {
        config: Box::new(|config| config.api_key = None),
        ..Options::default()
    })
    .await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    for authorization in [None, Some("Bearer admin-key"), Some("Bearer ")] {
        let status = server
            .admin()
            .publish(with_authorization(
                publish_request("room", json!("refused")),
                authorization,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        // The operator learns what to do about it.
        assert!(
            status.message().contains("no API key configured")
                && status.message().contains("--api-key"),
            "{status:?}"
        );
        let status = server
            .admin()
            .issue_token(with_authorization(issue_request("room"), authorization))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("--api-key"), "{status:?}");
    }
    // No marker can be published here: ask the store, and the stream shows nothing arrived.
    assert_eq!(server.store.last_seq("room").await.unwrap(), 0);
    server.clock.advance(std::time::Duration::from_secs(15));
    assert!(matches!(next(&mut stream).await, Ok(Kind::Heartbeat(_))));
}

/// Publishes `request` expecting INVALID_ARGUMENT, then proves nothing was stored on "room".
async fn refused_publish(
    server: &TestServer,
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    last: &mut String,
    request: pb::PublishRequest,
) -> String {
    let message = expect_refused(server.publish_with(request).await, Code::InvalidArgument);
    *last = expect_nothing_stored_since(server, "room", stream, last).await;
    message
}

/// A subscriber on "room" and the id of the last event it has seen.
async fn watched_room(server: &TestServer) -> (tonic::Streaming<pb::SubscribeResponse>, String) {
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let last = server.publish("room", json!("before")).await;
    assert_eq!(next_event(&mut stream).await.id, last);
    (stream, last)
}

#[tokio::test]
async fn oversized_payloads_are_invalid_and_store_nothing() {
    let server = TestServer::start().await;
    let (mut stream, mut last) = watched_room(&server).await;
    let huge = json!("x".repeat(64 * 1024));
    let message = refused_publish(
        &server,
        &mut stream,
        &mut last,
        publish_request("room", huge),
    )
    .await;
    assert!(
        message.contains("payload") && message.contains("the limit is 65536"),
        "{message}"
    );
    let nested = json!({ "list": vec!["y".repeat(1_000); 70] });
    refused_publish(
        &server,
        &mut stream,
        &mut last,
        publish_request("room", nested),
    )
    .await;
}

fn tags(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("t{n}")).collect()
}

#[tokio::test]
async fn too_many_or_bad_tags_are_invalid_on_publish_issue_token_and_in_tokens() {
    let server = TestServer::start().await;
    let (mut stream, mut last) = watched_room(&server).await;
    let bad: [(&str, Vec<String>); 4] = [
        ("65 tags", tags(65)),
        ("an empty tag", vec!["ok".into(), String::new()]),
        ("a tag of 256 bytes", vec!["t".repeat(256)]),
        ("only an empty tag", vec![String::new()]),
    ];
    for (what, bad_tags) in bad {
        let mut request = publish_request("room", json!("refused"));
        request.tags = Some(pb::StringList {
            values: bad_tags.clone(),
        });
        let message = refused_publish(&server, &mut stream, &mut last, request).await;
        assert!(message.contains("tag"), "{what}: {message}");

        let mut request = issue_request("room");
        request.tags = bad_tags.clone();
        let message = expect_refused(issue(&server, request).await, Code::InvalidArgument);
        assert!(message.contains("tag"), "{what}: {message}");

        let mut claims = server.claims("room");
        claims.tags = Some(bad_tags.clone());
        let message = expect_refused(
            server
                .subscribe(subscribe_request(server.sign(&claims)))
                .await,
            Code::InvalidArgument,
        );
        assert!(message.contains("tag"), "{what}: {message}");
    }
    // 64 is the limit, not one less.
    let mut request = publish_request("room", json!("64 tags"));
    request.tags = Some(pb::StringList { values: tags(64) });
    server.publish_with(request).await.unwrap();
}

fn bad_channels() -> Vec<String> {
    let mut channels: Vec<String> = ["", "a\nb", "tab\there", "del\u{7f}"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    channels.push("x".repeat(256));
    channels
}

#[tokio::test]
async fn invalid_channel_names_are_invalid_on_publish_issue_token_and_in_tokens() {
    let server = TestServer::start().await;
    let (mut stream, mut last) = watched_room(&server).await;
    for channel in bad_channels() {
        let message = refused_publish(
            &server,
            &mut stream,
            &mut last,
            publish_request(&channel, json!("refused")),
        )
        .await;
        assert!(message.contains("channel name"), "{channel:?}: {message}");

        let message = expect_refused(
            issue(&server, issue_request(&channel)).await,
            Code::InvalidArgument,
        );
        assert!(message.contains("channel name"), "{channel:?}: {message}");

        let token = server.sign(&server.claims(&channel));
        let message = expect_refused(
            server.subscribe(subscribe_request(token.clone())).await,
            Code::InvalidArgument,
        );
        assert!(message.contains("channel name"), "{channel:?}: {message}");
        expect_refused(
            server.invoke(invoke_request(&token, None, &["m"])).await,
            Code::InvalidArgument,
        );
    }
    // 255 bytes is the limit, not one less.
    let longest = "x".repeat(255);
    server.publish(&longest, json!("ok")).await;
}

#[tokio::test]
async fn oversized_tokens_are_invalid() {
    let server = TestServer::start().await;
    let mut claims = server.claims("room");
    claims.att = Some(json!("a".repeat(8 * 1024)));
    let message = expect_refused(
        server
            .subscribe(subscribe_request(server.sign(&claims)))
            .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("token is"), "{message}");
    // IssueToken will not mint what Subscribe would refuse.
    let mut request = issue_request("room");
    request.att = Some(durable_iterator::json::to_proto(&json!(
        "a".repeat(8 * 1024)
    )));
    expect_refused(issue(&server, request).await, Code::InvalidArgument);
}

#[tokio::test]
async fn a_subscribe_request_over_the_message_limit_is_out_of_range() {
    let server = TestServer::start().await;
    let request = subscribe_request("t".repeat(5 * 1024 * 1024));
    let message = expect_refused(server.subscribe(request).await, Code::OutOfRange);
    assert!(message.contains("larger than the limit"), "{message}");
    // The server is fine afterwards.
    server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_last_event_ids_are_invalid() {
    let server = TestServer::start().await;
    let valid = server.publish("room", json!(1)).await;
    let too_long = format!("{valid}{}", "0".repeat(1_000));
    // (An empty one is no id at all: `empty_last_event_id_and_ticket_mean_none`.)
    for last_event_id in ["xyz", "3f9a12c4-9", too_long.as_str()] {
        let request = pb::SubscribeRequest {
            token: server.token("room"),
            last_event_id: Some(last_event_id.into()),
            session_ticket: None,
        };
        let message = expect_refused(server.subscribe(request).await, Code::InvalidArgument);
        assert!(message.contains("malformed event id"), "{message}");
        // The id is quoted, but not at any length.
        assert!(message.len() < 200, "{message}");
    }
}

#[tokio::test]
async fn publish_without_a_payload_or_with_too_long_session_lists_is_invalid() {
    let server = TestServer::start().await;
    let (mut stream, mut last) = watched_room(&server).await;
    let mut request = publish_request("room", json!("x"));
    request.payload = None;
    let message = refused_publish(&server, &mut stream, &mut last, request).await;
    assert!(message.contains("payload is missing"), "{message}");

    let ids: Vec<String> = (0..1_001).map(|n| format!("session-{n}")).collect();
    let mut request = publish_request("room", json!("x"));
    request.targets = Some(pb::StringList {
        values: ids.clone(),
    });
    let message = refused_publish(&server, &mut stream, &mut last, request).await;
    assert!(message.contains("targets has 1001"), "{message}");

    let mut request = publish_request("room", json!("x"));
    request.exclude = ids;
    let message = refused_publish(&server, &mut stream, &mut last, request).await;
    assert!(message.contains("exclude has 1001"), "{message}");
}

#[tokio::test]
async fn issue_token_defaults_to_a_day_and_carries_tags_att_and_rpc() {
    let server = TestServer::start().await;
    let now = server.now_secs();
    let request = pb::IssueTokenRequest {
        channel: "room".into(),
        tags: vec!["b".into(), "a".into()],
        att: Some(durable_iterator::json::to_proto(
            &json!({"userId": "u-1", "n": 3}),
        )),
        rpc: vec!["echo".into()],
        ttl_seconds: 0,
    };
    let issued = issue(&server, request).await.unwrap();
    assert_eq!(issued.expires_at as u64, now + 86_400);
    // The payload is oRPC's, field for field and in order.
    let (payload, _) = issued.token.rsplit_once('.').unwrap();
    assert_eq!(
        payload,
        format!(
            r#"{{"chn":"room","tags":["b","a"],"att":{{"n":3,"userId":"u-1"}},"rpc":["echo"],"iat":{now},"exp":{}}}"#,
            now + 86_400
        )
    );
    let claims = token::verify(&server.keyring, &issued.token, now).unwrap();
    assert_eq!(claims.att, Some(json!({"userId": "u-1", "n": 3})));
    assert!(claims.allows_method("echo"));

    let (subscribed, _stream) = server
        .subscribe(subscribe_request(issued.token))
        .await
        .unwrap();
    assert_eq!(subscribed.channel, "room");
    assert_eq!(subscribed.token_expires_at, issued.expires_at);
}

#[tokio::test]
async fn issue_token_with_a_ttl_lives_exactly_that_long() {
    let server = TestServer::start().await;
    let now = server.now_secs();
    let mut request = issue_request("room");
    request.ttl_seconds = 120;
    let issued = issue(&server, request).await.unwrap();
    assert_eq!(issued.expires_at as u64, now + 120);
    let (payload, _) = issued.token.rsplit_once('.').unwrap();
    assert_eq!(
        payload,
        format!(r#"{{"chn":"room","iat":{now},"exp":{}}}"#, now + 120)
    );
    assert!(token::verify(&server.keyring, &issued.token, now + 119).is_ok());
    assert_eq!(
        token::verify(&server.keyring, &issued.token, now + 120),
        Err(TokenError::Expired)
    );
    let (subscribed, _stream) = server
        .subscribe(subscribe_request(issued.token))
        .await
        .unwrap();
    assert_eq!(subscribed.token_expires_at, issued.expires_at);
}

fn token_with_rpc(server: &TestServer, channel: &str, rpc: &[&str]) -> String {
    let mut claims = server.claims(channel);
    claims.rpc = Some(rpc.iter().map(|m| m.to_string()).collect());
    server.sign(&claims)
}

#[tokio::test]
async fn invoke_refuses_methods_the_token_does_not_list() {
    let server = TestServer::start().await;
    let token = token_with_rpc(&server, "room", &["echo"]);
    let message = expect_refused(
        server
            .invoke(invoke_request(&token, None, &["x", "echo"]))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(message, r#"Method "x" is not allowed."#);
    // A token with no `rpc` allows nothing.
    let message = expect_refused(
        server
            .invoke(invoke_request(&server.token("room"), None, &["echo"]))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(message, r#"Method "echo" is not allowed."#);
}

#[tokio::test]
async fn invoke_of_an_allowed_method_the_object_lacks_is_not_found() {
    let server = TestServer::start().await;
    let token = token_with_rpc(&server, "room", &["echo"]);
    let message = expect_refused(
        server
            .invoke(invoke_request(&token, None, &["echo", "deep"]))
            .await,
        Code::NotFound,
    );
    assert_eq!(message, r#"channel "room" has no method echo.deep"#);
}

#[tokio::test]
async fn invoke_needs_a_path_and_a_caller() {
    let server = TestServer::start().await;
    let token = token_with_rpc(&server, "room", &["echo"]);
    let message = expect_refused(
        server.invoke(invoke_request(&token, None, &[])).await,
        Code::InvalidArgument,
    );
    assert_eq!(message, "path is empty");
    let message = expect_refused(
        server.invoke(invoke_request("", None, &["echo"])).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("a token or a session ticket is required"));
}

#[tokio::test]
async fn invoke_with_only_a_ticket_acts_as_the_live_session() {
    let server = TestServer::start().await;
    let (subscribed, _stream) = server
        .subscribe(subscribe_request(token_with_rpc(
            &server,
            "room",
            &["echo"],
        )))
        .await
        .unwrap();
    let ticket = Some(subscribed.session_ticket.as_str());
    let message = expect_refused(
        server.invoke(invoke_request("", ticket, &["echo"])).await,
        Code::NotFound,
    );
    assert!(message.contains(r#""room""#), "{message}");
    let message = expect_refused(
        server.invoke(invoke_request("", ticket, &["other"])).await,
        Code::PermissionDenied,
    );
    assert_eq!(message, r#"Method "other" is not allowed."#);
}

#[tokio::test]
async fn invoke_with_the_ticket_of_a_session_that_is_not_live_fails_precondition() {
    let server = TestServer::start().await;
    // A session whose stream ended: its token expired.
    let mut claims = TokenClaims::new("room", server.now_secs(), 60);
    claims.rpc = Some(vec!["echo".into()]);
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(server.sign(&claims)))
        .await
        .unwrap();
    server.clock.advance(std::time::Duration::from_secs(60));
    expect_end(&mut stream, Code::Unauthenticated).await;
    // A session that was never connected, with an authentic ticket.
    let never = session::issue_ticket(&server.keyring, "room", &session::new_session_id());
    for ticket in [subscribed.session_ticket.as_str(), never.as_str()] {
        let message = expect_refused(
            server
                .invoke(invoke_request("", Some(ticket), &["echo"]))
                .await,
            Code::FailedPrecondition,
        );
        assert!(message.contains("not connected"), "{message}");
    }
}

#[tokio::test]
async fn invoke_with_a_forged_ticket_is_unauthenticated() {
    let server = TestServer::start().await;
    let token = token_with_rpc(&server, "room", &["echo"]);
    let (subscribed, _stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let id = subscribed.session_id.as_str();
    let forged = [
        // The live session's id, with a MAC made with another key.
        session::issue_ticket(&Keyring::new(["other-key"]).unwrap(), "room", id),
        // The live session's id, with the MAC of another channel's ticket.
        session::issue_ticket(&server.keyring, "other", id),
        format!("{id}.AAAA"),
        format!("{id}.!!!"),
    ];
    for ticket in &forged {
        for token in ["", token.as_str()] {
            let message = expect_refused(
                server
                    .invoke(invoke_request(token, Some(ticket), &["echo"]))
                    .await,
                Code::Unauthenticated,
            );
            assert!(message.contains("invalid session ticket"), "{message}");
        }
    }
}
