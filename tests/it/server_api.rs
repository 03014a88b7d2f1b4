//! The server API's inspection and session calls end to end over gRPC, on both stores:
//! History, ChannelInfo, ListChannels, Presence, PresenceStats, Disconnect, DisconnectAll, and
//! idempotent publish (across a kill -9 too).

use std::{sync::Arc, time::Duration};

use crate::common::{process::*, *};
use durable_iterator::{
    Call, ChannelHandle, ChannelObject, HistoryQuery, MethodError, RedbStore, Router, pb,
};
use serde_json::{Value, json};
use tonic::{Code, Request};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redb,
}

/// Runs the test function `$name(Backend)` once per store.
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(super::Backend::Memory).await
            }
            #[tokio::test]
            async fn redb() {
                super::$name(super::Backend::Redb).await
            }
        }
    };
}

/// A server on `backend` keeping events for `retention_ms`; the directory lives as long as it.
async fn start(
    backend: Backend,
    retention_ms: u64,
    config: impl FnOnce(&mut durable_iterator::ServerConfig) + 'static,
) -> (TestServer, Option<tempfile::TempDir>) {
    let dir = matches!(backend, Backend::Redb).then(|| tempfile::tempdir().unwrap());
    let store: Option<Arc<dyn durable_iterator::EventStore>> = dir
        .as_ref()
        .map(|dir| Arc::new(RedbStore::open(dir.path(), retention_ms).unwrap()) as _);
    let options = Options {
        retention_ms,
        store,
        config: Box::new(config),
    };
    (TestServer::start_with(options).await, dir)
}

fn history_request(
    channel: &str,
    after: Option<&str>,
    limit: u32,
    reverse: bool,
) -> pb::HistoryRequest {
    pb::HistoryRequest {
        channel: channel.into(),
        after_id: after.map(Into::into),
        limit,
        reverse,
    }
}

async fn history(
    server: &TestServer,
    request: pb::HistoryRequest,
) -> Result<pb::HistoryResponse, tonic::Status> {
    Ok(server
        .admin()
        .history(authorized(request))
        .await?
        .into_inner())
}

fn ids(page: &pb::HistoryResponse) -> Vec<String> {
    page.events
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.clone())
        .collect()
}

fn other_epoch(id: &str) -> String {
    let epoch = u32::from_str_radix(&id[..8], 16).unwrap();
    format!("{:08x}{}", epoch ^ 1, &id[8..])
}

async fn history_reads_pages_both_ways_with_what_was_published(backend: Backend) {
    let (server, _dir) = start(backend, 60_000, |_| {}).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(server.publish("room", json!({ "n": n })).await);
    }
    let tagged = server
        .publish_with(pb::PublishRequest {
            tags: string_list(&["t"]),
            exclude: vec!["s1".into()],
            ..publish_request("room", json!("tagged"))
        })
        .await
        .unwrap();
    published.push(tagged.clone());

    // Forward, two at a time, each page continuing from the last.
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = history(&server, history_request("room", after.as_deref(), 2, false))
            .await
            .unwrap();
        assert_eq!(page.newest_id, tagged);
        assert_eq!(page.oldest_retained_id, published[0]);
        pages.push(ids(&page));
        if page.next_after_id.is_empty() {
            break;
        }
        after = Some(page.next_after_id);
    }
    assert_eq!(pages.concat(), published);
    assert_eq!(
        pages.len(),
        3,
        "{pages:?}: the third page ends at the newest event"
    );

    // Backward, newest first.
    let first = history(&server, history_request("room", None, 4, true))
        .await
        .unwrap();
    let expected: Vec<String> = published.iter().rev().take(4).cloned().collect();
    assert_eq!(ids(&first), expected);
    let rest = history(
        &server,
        history_request("room", Some(&first.next_after_id), 4, true),
    )
    .await
    .unwrap();
    assert_eq!(ids(&rest), [published[1].clone(), published[0].clone()]);
    assert!(rest.next_after_id.is_empty(), "the oldest event ends it");

    // Each event comes with its payload, time and filter.
    let page = history(
        &server,
        history_request("room", Some(&published[4]), 0, false),
    )
    .await
    .unwrap();
    let event = &page.events[0];
    assert_eq!(payload(event.event.as_ref().unwrap()), json!("tagged"));
    assert_eq!(
        event.event.as_ref().unwrap().published_at_ms,
        START_MS as i64
    );
    assert_eq!(event.tags, string_list(&["t"]));
    assert_eq!(event.targets, None);
    assert_eq!(event.exclude, ["s1"]);
    let untagged = history(&server, history_request("room", None, 1, false))
        .await
        .unwrap();
    assert_eq!(
        (
            untagged.events[0].tags.clone(),
            untagged.events[0].targets.clone()
        ),
        (None, None)
    );
}
on_both_stores!(history_reads_pages_both_ways_with_what_was_published);

async fn history_refuses_bad_positions_and_answers_unknown_channels_empty(backend: Backend) {
    let (server, _dir) = start(backend, 60_000, |_| {}).await;
    let unknown = history(&server, history_request("nowhere", None, 10, false))
        .await
        .unwrap();
    assert!(
        unknown.events.is_empty()
            && unknown.next_after_id.is_empty()
            && unknown.newest_id.is_empty()
    );
    let first = server.publish("room", json!(1)).await;
    server.publish("room", json!(2)).await;

    let message = expect_refused(
        history(
            &server,
            history_request("room", Some(&other_epoch(&first)), 10, false),
        )
        .await,
        Code::FailedPrecondition,
    );
    assert!(
        message.contains("another epoch") && message.contains(&first),
        "{message}"
    );
    let never = format!("{}-00000000000000ff", &first[..8]);
    let message = expect_refused(
        history(&server, history_request("room", Some(&never), 10, false)).await,
        Code::FailedPrecondition,
    );
    assert!(
        message.contains("never issued") && message.contains(&first),
        "{message}"
    );
    for malformed in ["x", "00000000-1", &format!("{first}0")] {
        expect_refused(
            history(&server, history_request("room", Some(malformed), 10, false)).await,
            Code::InvalidArgument,
        );
    }
    let message = expect_refused(
        history(&server, history_request("room", None, 1_001, false)).await,
        Code::InvalidArgument,
    );
    assert!(message.contains("1000"), "{message}");
    assert_eq!(
        ids(
            &history(&server, history_request("room", None, 1_000, false))
                .await
                .unwrap()
        )
        .len(),
        2
    );
    expect_refused(
        history(&server, history_request("", None, 10, false)).await,
        Code::InvalidArgument,
    );
}
on_both_stores!(history_refuses_bad_positions_and_answers_unknown_channels_empty);

async fn history_and_channel_info_follow_the_retention_window(backend: Backend) {
    let (server, _dir) = start(backend, 10_000, |_| {}).await;
    let old = server.publish("room", json!("old")).await;
    server.clock.advance(Duration::from_secs(6));
    let newer = server.publish("room", json!("newer")).await;
    server.clock.advance(Duration::from_secs(4));
    // The first event left the window: an id before it starts at the oldest retained one.
    let page = history(&server, history_request("room", None, 10, false))
        .await
        .unwrap();
    assert_eq!(ids(&page), std::slice::from_ref(&newer));
    assert_eq!(page.oldest_retained_id, newer);
    let from_old = history(&server, history_request("room", Some(&old), 10, false))
        .await
        .unwrap();
    assert_eq!(ids(&from_old), std::slice::from_ref(&newer));
    let info = channel_info(&server, "room").await;
    assert_eq!(
        (
            info.newest_id,
            info.oldest_retained_id,
            info.retained_events,
            info.retention_seconds
        ),
        (newer.clone(), newer.clone(), 1, 10)
    );
    server.clock.advance(Duration::from_secs(6));
    let info = channel_info(&server, "room").await;
    assert_eq!(
        (
            info.newest_id,
            info.oldest_retained_id,
            info.retained_events
        ),
        (newer, String::new(), 0),
        "the newest id stays once its event expired"
    );
}
on_both_stores!(history_and_channel_info_follow_the_retention_window);

async fn channel_info(server: &TestServer, channel: &str) -> pb::ChannelInfoResponse {
    let request = pb::ChannelInfoRequest {
        channel: channel.into(),
    };
    server
        .admin()
        .channel_info(authorized(request))
        .await
        .unwrap()
        .into_inner()
}

async fn list_channels(
    server: &TestServer,
    prefix: &str,
    page_token: &str,
    limit: u32,
) -> Result<pb::ListChannelsResponse, tonic::Status> {
    let request = pb::ListChannelsRequest {
        prefix: prefix.into(),
        page_token: page_token.into(),
        limit,
    };
    Ok(server
        .admin()
        .list_channels(authorized(request))
        .await?
        .into_inner())
}

async fn channels_are_described_and_listed_with_their_live_sessions(backend: Backend) {
    let (server, _dir) = start(backend, 60_000, |_| {}).await;
    for channel in ["room:b", "room:a", "lobby"] {
        server.publish(channel, json!(1)).await;
    }
    let newest = server.publish("room:a", json!(2)).await;
    // A channel with live sessions and no events, and one session on room:a.
    let (_, _quiet) = server
        .subscribe(subscribe_request(server.token("room:quiet")))
        .await
        .unwrap();
    let (_, _a) = server
        .subscribe(subscribe_request(server.token("room:a")))
        .await
        .unwrap();

    let info = channel_info(&server, "room:a").await;
    assert_eq!(
        (
            info.newest_id,
            info.retained_events,
            info.live_sessions,
            info.retention_seconds
        ),
        (newest, 2, 1, 60)
    );
    assert!(!info.oldest_retained_id.is_empty());
    let quiet = channel_info(&server, "room:quiet").await;
    assert_eq!(
        (
            quiet.newest_id.as_str(),
            quiet.retained_events,
            quiet.live_sessions
        ),
        ("", 0, 1)
    );
    let unknown = channel_info(&server, "nowhere").await;
    assert_eq!(
        unknown,
        pb::ChannelInfoResponse {
            retention_seconds: 60,
            ..Default::default()
        }
    );

    let all = list_channels(&server, "", "", 0).await.unwrap();
    assert_eq!(all.channels, ["lobby", "room:a", "room:b", "room:quiet"]);
    assert!(all.next_page_token.is_empty());
    let first = list_channels(&server, "room:", "", 2).await.unwrap();
    assert_eq!(first.channels, ["room:a", "room:b"]);
    let second = list_channels(&server, "room:", &first.next_page_token, 2)
        .await
        .unwrap();
    assert_eq!(
        (second.channels, second.next_page_token),
        (vec!["room:quiet".to_owned()], String::new())
    );
    for bad in ["room:a", "p1.!!"] {
        expect_refused(
            list_channels(&server, "", bad, 2).await,
            Code::InvalidArgument,
        );
    }
    expect_refused(
        list_channels(&server, "", "", 1_001).await,
        Code::InvalidArgument,
    );
}
on_both_stores!(channels_are_described_and_listed_with_their_live_sessions);

async fn presence(
    server: &TestServer,
    channel: &str,
    page_token: &str,
    limit: u32,
) -> pb::PresenceResponse {
    let request = pb::PresenceRequest {
        channel: channel.into(),
        page_token: page_token.into(),
        limit,
    };
    server
        .admin()
        .presence(authorized(request))
        .await
        .unwrap()
        .into_inner()
}

async fn presence_stats(server: &TestServer, channel: &str) -> pb::PresenceStatsResponse {
    let request = pb::PresenceStatsRequest {
        channel: channel.into(),
    };
    server
        .admin()
        .presence_stats(authorized(request))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn presence_lists_live_sessions_in_pages_with_their_tokens() {
    let server = TestServer::start().await;
    let mut subscribed = Vec::new();
    let mut streams = Vec::new();
    for (tags, role) in [
        (vec!["a", "b"], "admin"),
        (vec!["b"], "user"),
        (vec![], "user"),
    ] {
        let mut claims = server.claims("room");
        claims.tags = (!tags.is_empty()).then(|| tags.iter().map(|t| t.to_string()).collect());
        claims.att = Some(json!({ "role": role }));
        let (s, stream) = server
            .subscribe(subscribe_request(server.sign(&claims)))
            .await
            .unwrap();
        subscribed.push(s);
        streams.push(stream);
    }
    let mut expected: Vec<String> = subscribed.iter().map(|s| s.session_id.clone()).collect();
    expected.sort();

    let first = presence(&server, "room", "", 2).await;
    assert_eq!(first.sessions.len(), 2);
    let second = presence(&server, "room", &first.next_page_token, 2).await;
    assert!(second.next_page_token.is_empty());
    let listed: Vec<String> = first
        .sessions
        .iter()
        .chain(&second.sessions)
        .map(|s| s.session_id.clone())
        .collect();
    assert_eq!(listed, expected);
    let admin = first
        .sessions
        .iter()
        .chain(&second.sessions)
        .find(|s| s.session_id == subscribed[0].session_id)
        .unwrap();
    assert_eq!(admin.tags, ["a", "b"]);
    assert_eq!(
        admin.att.as_ref().map(durable_iterator::json::from_proto),
        Some(json!({"role": "admin"}))
    );
    assert_eq!((admin.connected_at_ms, admin.resumes), (START_MS as i64, 0));

    let stats = presence_stats(&server, "room").await;
    assert_eq!(stats.sessions, 3);
    assert_eq!(
        stats.sessions_by_tag,
        [("a".to_owned(), 1), ("b".to_owned(), 2)]
            .into_iter()
            .collect()
    );

    // A session that comes back with its ticket counts the resume and its new stream's time.
    drop(streams.remove(0));
    wait_until_not_live(&server, "room", &subscribed[0].session_ticket).await;
    assert_eq!(presence_stats(&server, "room").await.sessions, 2);
    server.clock.advance(Duration::from_secs(5));
    let request = pb::SubscribeRequest {
        session_ticket: Some(subscribed[0].session_ticket.clone()),
        ..subscribe_request(server.token("room"))
    };
    let (_, _back) = server.subscribe(request).await.unwrap();
    let back = presence(&server, "room", "", 0).await;
    let resumed = back
        .sessions
        .iter()
        .find(|s| s.session_id == subscribed[0].session_id)
        .unwrap();
    assert_eq!(
        (resumed.connected_at_ms, resumed.resumes),
        (START_MS as i64 + 5_000, 1)
    );

    assert!(
        presence(&server, "nowhere", "", 0)
            .await
            .sessions
            .is_empty()
    );
    assert_eq!(
        presence_stats(&server, "nowhere").await,
        pb::PresenceStatsResponse::default()
    );
}

fn disconnect_request(channel: &str, session_id: &str, revoke: bool) -> pb::DisconnectRequest {
    pb::DisconnectRequest {
        channel: channel.into(),
        session_id: session_id.into(),
        revoke,
    }
}

async fn disconnect(
    server: &TestServer,
    request: pb::DisconnectRequest,
) -> Result<bool, tonic::Status> {
    Ok(server
        .admin()
        .disconnect(authorized(request))
        .await?
        .into_inner()
        .was_live)
}

#[tokio::test]
async fn disconnect_ends_the_stream_with_a_final_status_and_the_session_may_come_back() {
    let server = TestServer::start().await;
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let (other, mut other_stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let id = &subscribed.session_id;
    expect_refused(
        disconnect(&server, disconnect_request("room", "nobody", false)).await,
        Code::NotFound,
    );
    expect_refused(
        disconnect(&server, disconnect_request("other", id, false)).await,
        Code::NotFound,
    );
    expect_refused(
        disconnect(&server, disconnect_request("room", "", false)).await,
        Code::InvalidArgument,
    );

    assert!(
        disconnect(&server, disconnect_request("room", id, false))
            .await
            .unwrap()
    );
    let message = expect_end(&mut stream, Code::PermissionDenied).await;
    assert_eq!(message, "disconnected by the server");
    // The other session goes on.
    let event = server.publish("room", json!(1)).await;
    assert_eq!(next_event(&mut other_stream).await.id, event);
    // Not revoked: the ticket still works.
    wait_until_not_live(&server, "room", &subscribed.session_ticket).await;
    expect_refused(
        disconnect(&server, disconnect_request("room", id, false)).await,
        Code::NotFound,
    );
    let (back, _stream) = server
        .subscribe(resume_request(
            server.token("room"),
            &event,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    assert_eq!(&back.session_id, id);
    drop(other);
}

#[tokio::test]
async fn disconnect_all_ends_every_stream_of_the_channel_only() {
    let server = TestServer::start().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(
            server
                .subscribe(subscribe_request(server.token("room")))
                .await
                .unwrap()
                .1,
        );
    }
    let (_, mut elsewhere) = server
        .subscribe(subscribe_request(server.token("lobby")))
        .await
        .unwrap();
    let request = pb::DisconnectAllRequest {
        channel: "room".into(),
        revoke: false,
    };
    let answer = server
        .admin()
        .disconnect_all(authorized(request.clone()))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().disconnected, 3);
    for stream in &mut streams {
        assert_eq!(
            expect_end(stream, Code::PermissionDenied).await,
            "disconnected by the server"
        );
    }
    let event = server.publish("lobby", json!(1)).await;
    assert_eq!(next_event(&mut elsewhere).await.id, event);
    let empty = pb::DisconnectAllRequest {
        channel: "nowhere".into(),
        revoke: true,
    };
    assert_eq!(
        server
            .admin()
            .disconnect_all(authorized(empty))
            .await
            .unwrap()
            .into_inner()
            .disconnected,
        0
    );
}

/// Records ended sessions; its methods use the handle's history, presence and disconnect.
struct Inspector {
    channel: ChannelHandle,
    ended: Arc<tokio::sync::watch::Sender<Vec<String>>>,
}

#[async_trait::async_trait]
impl ChannelObject for Inspector {
    fn methods(router: &mut Router<Self>) {
        router.method(
            durable_iterator::Method::<u64, Vec<String>>::new(&["history"]),
            |inspector: Arc<Self>, _call: Call, limit: u64| async move {
                let query = HistoryQuery {
                    limit: limit as usize,
                    reverse: true,
                    ..HistoryQuery::default()
                };
                let page = inspector
                    .channel
                    .history(query)
                    .await
                    .map_err(MethodError::from)?;
                Ok(page
                    .events
                    .iter()
                    .map(|e| e.json().unwrap().to_string())
                    .collect())
            },
        );
        router.method(
            durable_iterator::Method::<(), Vec<String>>::new(&["presence"]),
            |inspector: Arc<Self>, _call: Call, ()| async move {
                Ok(inspector
                    .channel
                    .presence(None, 100)
                    .await
                    .map_err(MethodError::from)?
                    .into_iter()
                    .map(|p| p.session.session_id)
                    .collect())
            },
        );
        router.method(
            durable_iterator::Method::<String, bool>::new(&["kick"]),
            |inspector: Arc<Self>, _call: Call, session_id: String| async move {
                inspector
                    .channel
                    .disconnect(&session_id, true)
                    .await
                    .map_err(MethodError::from)
            },
        );
    }

    async fn on_session_ended(&self, session_id: &str) {
        self.ended
            .send_modify(|ended| ended.push(session_id.to_owned()));
    }
}

async fn wait_for_ended(ended: &tokio::sync::watch::Sender<Vec<String>>, id: &str) {
    let mut watch = ended.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|e| e.iter().any(|e| e == id)),
    )
    .await
    .expect("the session ends")
    .unwrap();
}

fn inspector_config(
    ended: Arc<tokio::sync::watch::Sender<Vec<String>>>,
) -> impl FnOnce(&mut durable_iterator::ServerConfig) + 'static {
    move |config| {
        config.objects.register("insp:*", move |channel| Inspector {
            channel,
            ended: ended.clone(),
        });
    }
}

async fn revoking_refuses_the_ticket_and_ends_the_session_once(backend: Backend) {
    let ended = Arc::new(tokio::sync::watch::Sender::new(Vec::new()));
    let (server, _dir) = start(backend, 10_000, inspector_config(ended.clone())).await;
    let token = server.token("insp:1");
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let id = subscribed.session_id.clone();
    assert!(
        disconnect(&server, disconnect_request("insp:1", &id, true))
            .await
            .unwrap()
    );
    assert_eq!(
        expect_end(&mut stream, Code::PermissionDenied).await,
        "disconnected by the server"
    );
    // Ended at once, not after the 10 s window.
    wait_for_ended(&ended, &id).await;
    let request = pb::SubscribeRequest {
        session_ticket: Some(subscribed.session_ticket.clone()),
        ..subscribe_request(token.clone())
    };
    let refused = expect_refused(
        server.subscribe(request.clone()).await.map(|(s, _)| s),
        Code::PermissionDenied,
    );
    assert_eq!(
        refused,
        "disconnected by the server: the session was revoked"
    );
    let invoke = invoke_request(&token, Some(&subscribed.session_ticket), &["presence"]);
    expect_refused(server.invoke(invoke).await, Code::PermissionDenied);
    // Still refused long after the resume window; the session ended once.
    server.clock.advance(Duration::from_secs(60));
    expect_refused(
        server.subscribe(request).await.map(|(s, _)| s),
        Code::PermissionDenied,
    );
    let (witness, witness_stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    drop(witness_stream);
    wait_until_not_live(&server, "insp:1", &witness.session_ticket).await;
    server.clock.advance(Duration::from_secs(11));
    wait_for_ended(&ended, &witness.session_id).await;
    assert_eq!(*ended.borrow(), [id, witness.session_id]);
}
on_both_stores!(revoking_refuses_the_ticket_and_ends_the_session_once);

#[tokio::test]
async fn a_session_that_dropped_can_be_revoked_inside_its_resume_window() {
    let ended = Arc::new(tokio::sync::watch::Sender::new(Vec::new()));
    let (server, _dir) = start(Backend::Memory, 10_000, inspector_config(ended.clone())).await;
    let (subscribed, stream) = server
        .subscribe(subscribe_request(server.token("insp:1")))
        .await
        .unwrap();
    drop(stream);
    wait_until_not_live(&server, "insp:1", &subscribed.session_ticket).await;
    let id = &subscribed.session_id;
    expect_refused(
        disconnect(&server, disconnect_request("insp:1", id, false)).await,
        Code::NotFound,
    );
    assert!(
        !disconnect(&server, disconnect_request("insp:1", id, true))
            .await
            .unwrap()
    );
    wait_for_ended(&ended, id).await;
    let request = pb::SubscribeRequest {
        session_ticket: Some(subscribed.session_ticket.clone()),
        ..subscribe_request(server.token("insp:1"))
    };
    expect_refused(
        server.subscribe(request).await.map(|(s, _)| s),
        Code::PermissionDenied,
    );
    // Once ended, there is nothing left to revoke.
    expect_refused(
        disconnect(&server, disconnect_request("insp:1", id, true)).await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn channel_objects_read_history_and_presence_and_disconnect_through_their_handle() {
    let ended = Arc::new(tokio::sync::watch::Sender::new(Vec::new()));
    let (server, _dir) = start(Backend::Memory, 60_000, inspector_config(ended.clone())).await;
    let mut claims = server.claims("insp:1");
    claims.rpc = Some(vec!["history".into(), "presence".into(), "kick".into()]);
    let token = server.sign(&claims);
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    for n in 0..3 {
        server.publish("insp:1", json!(n)).await;
    }
    let call = |path: &'static str, input: Value| {
        let mut request = invoke_request(&token, None, &[path]);
        request.input = Some(durable_iterator::json::to_proto(&input));
        let server = &server;
        async move {
            server
                .invoke(request)
                .await
                .map(|answer| durable_iterator::json::from_proto(&answer.output.unwrap()))
        }
    };
    assert_eq!(call("history", json!(2)).await.unwrap(), json!(["2", "1"]));
    assert_eq!(
        call("presence", json!(null)).await.unwrap(),
        json!([subscribed.session_id])
    );
    assert_eq!(
        call("kick", json!(subscribed.session_id)).await.unwrap(),
        json!(true)
    );
    for _ in 0..3 {
        next_event(&mut stream).await;
    }
    assert_eq!(
        expect_end(&mut stream, Code::PermissionDenied).await,
        "disconnected by the server"
    );
    wait_for_ended(&ended, &subscribed.session_id).await;
    let refused = call("kick", json!("nobody")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
}

async fn a_repeated_idempotency_key_stores_and_delivers_nothing(backend: Backend) {
    let (server, _dir) = start(backend, 60_000, |_| {}).await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let keyed = |key: &str, payload: Value| pb::PublishRequest {
        idempotency_key: Some(key.into()),
        ..publish_request("room", payload)
    };
    let first = server
        .publish_with(keyed("order-1", json!("first")))
        .await
        .unwrap();
    let again = server
        .publish_with(keyed("order-1", json!("again")))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(payload(&next_event(&mut stream).await), json!("first"));
    // An empty key is no key; another channel has its own keys.
    let unkeyed = server
        .publish_with(keyed("", json!("unkeyed")))
        .await
        .unwrap();
    assert_ne!(unkeyed, first);
    assert_eq!(next_event(&mut stream).await.id, unkeyed);
    let elsewhere = pb::PublishRequest {
        channel: "lobby".into(),
        ..keyed("order-1", json!("lobby"))
    };
    server.publish_with(elsewhere).await.unwrap();
    let lobby = history(&server, history_request("lobby", None, 0, false))
        .await
        .unwrap();
    assert_eq!(
        payload(lobby.events[0].event.as_ref().unwrap()),
        json!("lobby"),
        "stored: the key was the room's"
    );

    // In a batch, per event, against earlier publishes and within the batch.
    let batch = pb::PublishBatchRequest {
        events: vec![
            keyed("order-1", json!("dup of first")),
            keyed("order-2", json!("second")),
            keyed("order-2", json!("dup in batch")),
            publish_request("room", json!("plain")),
        ],
    };
    let answer = server
        .admin()
        .publish_batch(authorized(batch))
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(answer[0], first);
    assert_eq!(answer[1], answer[2]);
    assert_eq!(payload(&next_event(&mut stream).await), json!("second"));
    assert_eq!(payload(&next_event(&mut stream).await), json!("plain"));
    expect_nothing_stored_since(&server, "room", &mut stream, &answer[3]).await;
    let page = history(&server, history_request("room", None, 0, false))
        .await
        .unwrap();
    let stored: Vec<Value> = page
        .events
        .iter()
        .map(|e| payload(e.event.as_ref().unwrap()))
        .collect();
    assert_eq!(
        stored[..4],
        [
            json!("first"),
            json!("unkeyed"),
            json!("second"),
            json!("plain")
        ]
    );

    // The key lapses with its event.
    server.clock.advance(Duration::from_secs(60));
    let later = server
        .publish_with(keyed("order-1", json!("later")))
        .await
        .unwrap();
    assert_ne!(later, first);
    assert_eq!(payload(&next_event(&mut stream).await), json!("later"));

    let long = keyed(&"k".repeat(129), json!("x"));
    let message = expect_refused(server.publish_with(long).await, Code::InvalidArgument);
    assert!(message.contains("idempotency key"), "{message}");
    let batch = pb::PublishBatchRequest {
        events: vec![
            publish_request("room", json!("ok")),
            keyed(&"k".repeat(129), json!("x")),
        ],
    };
    expect_refused(
        server.admin().publish_batch(authorized(batch)).await,
        Code::InvalidArgument,
    );
    server
        .publish_with(keyed(&"k".repeat(128), json!("at the limit")))
        .await
        .unwrap();
}
on_both_stores!(a_repeated_idempotency_key_stores_and_delivers_nothing);

#[tokio::test]
async fn an_idempotency_key_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let keyed = |payload: Value| {
        let mut request = child_publish("orders", payload);
        request.get_mut().idempotency_key = Some("order-7".into());
        request
    };
    let mut admin =
        pb::durable_iterator_admin_client::DurableIteratorAdminClient::new(process.channel().await);
    let first = admin
        .publish(keyed(json!("first")))
        .await
        .unwrap()
        .into_inner()
        .id;
    process.kill();
    drop(admin);

    let process = ServerProcess::start(dir.path(), "127.0.0.1:0");
    let mut admin =
        pb::durable_iterator_admin_client::DurableIteratorAdminClient::new(process.channel().await);
    let again = admin
        .publish(keyed(json!("again")))
        .await
        .unwrap()
        .into_inner()
        .id;
    assert_eq!(again, first);
    let mut request = Request::new(history_request("orders", None, 0, false));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {CHILD_API_KEY}").parse().unwrap(),
    );
    let page = admin.history(request).await.unwrap().into_inner();
    assert_eq!(ids(&page), [first]);
    assert_eq!(
        payload(page.events[0].event.as_ref().unwrap()),
        json!("first")
    );
}

#[tokio::test]
async fn every_call_needs_the_api_key() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let codes = [
        admin
            .history(history_request("room", None, 0, false))
            .await
            .map(|_| ()),
        admin
            .channel_info(pb::ChannelInfoRequest {
                channel: "room".into(),
            })
            .await
            .map(|_| ()),
        admin
            .list_channels(pb::ListChannelsRequest::default())
            .await
            .map(|_| ()),
        admin
            .presence(pb::PresenceRequest {
                channel: "room".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        admin
            .presence_stats(pb::PresenceStatsRequest {
                channel: "room".into(),
            })
            .await
            .map(|_| ()),
        admin
            .disconnect(disconnect_request("room", "s", false))
            .await
            .map(|_| ()),
        admin
            .disconnect_all(pb::DisconnectAllRequest {
                channel: "room".into(),
                revoke: false,
            })
            .await
            .map(|_| ()),
    ];
    for result in codes {
        expect_refused(result, Code::Unauthenticated);
    }
}

#[tokio::test]
async fn the_rust_client_calls_the_server_api_and_stops_when_disconnected() {
    use durable_iterator_client::{
        Client, FixedToken, HistoryOptions, Publish, SubscribeOptions, SubscriptionItem,
    };
    use futures::StreamExt;

    let server = TestServer::start().await;
    let client = Client::new(&format!("http://{}", server.addr))
        .unwrap()
        .with_clock(Arc::new(server.clock.clone()));
    let publish = |key: &str| Publish {
        channel: "room".into(),
        payload: json!({ "key": key }),
        idempotency_key: Some(key.into()),
        ..Publish::default()
    };
    let first = client.publish(API_KEY, publish("a")).await.unwrap();
    assert_eq!(client.publish(API_KEY, publish("a")).await.unwrap(), first);
    let ids = client
        .publish_batch(API_KEY, vec![publish("a"), publish("b")])
        .await
        .unwrap();
    assert_eq!(ids[0], first);

    let mut subscription = client.subscribe(
        FixedToken(server.token("room")),
        SubscribeOptions::default(),
    );
    let handle = subscription.handle();
    let mut progress = handle.watch();
    // The subscription runs as it is read: a task reads it.
    let (items, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = subscription.next().await {
            let _ = items.send(item);
        }
    });
    tokio::time::timeout(
        Duration::from_secs(20),
        progress.wait_for(|p| p.connections == 1),
    )
    .await
    .unwrap()
    .unwrap();
    let session_id = handle.session_id().unwrap();

    let page = client
        .history(
            API_KEY,
            "room",
            HistoryOptions {
                limit: 1,
                ..HistoryOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.events[0].event.id, first);
    assert_eq!(page.events[0].event.json(), Some(&json!({ "key": "a" })));
    let rest = client
        .history(
            API_KEY,
            "room",
            HistoryOptions {
                after_id: page.next_after_id.clone(),
                ..HistoryOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((rest.events.len(), rest.next_after_id), (1, None));
    let info = client.channel_info(API_KEY, "room").await.unwrap();
    assert_eq!((info.retained_events, info.live_sessions), (2, 1));
    let channels = client.list_channels(API_KEY, "ro", None, 0).await.unwrap();
    assert_eq!(
        (channels.channels, channels.next_page_token),
        (vec!["room".to_owned()], None)
    );
    let present = client.presence(API_KEY, "room", None, 0).await.unwrap();
    assert_eq!(present.sessions[0].session_id, session_id);
    assert_eq!(
        client
            .presence_stats(API_KEY, "room")
            .await
            .unwrap()
            .sessions,
        1
    );
    let unknown = client
        .disconnect(API_KEY, "room", "nobody", false)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(Code::NotFound));

    assert!(
        client
            .disconnect(API_KEY, "room", &session_id, false)
            .await
            .unwrap()
    );
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match received.recv().await {
                Some(Ok(SubscriptionItem::Event(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    match end {
        Some(Err(error)) => {
            assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
            assert!(
                error.to_string().contains("disconnected by the server"),
                "{error}"
            );
        }
        other => panic!("expected the disconnect, got {other:?}"),
    }
    let after = tokio::time::timeout(Duration::from_secs(20), received.recv()).await;
    assert!(
        matches!(after, Ok(None)),
        "the subscription ended: {after:?}"
    );
    assert_eq!(handle.progress().connections, 1, "no reconnect");
    assert_eq!(
        client.disconnect_all(API_KEY, "room", true).await.unwrap(),
        0
    );
}
