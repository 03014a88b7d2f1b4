//! Three nodes on one Redis behave as one server: events, resumes, token refreshes, invokes,
//! presence, disconnects and session ends reach a session wherever its stream is.

use std::{sync::Arc, time::Duration};

use crate::common::{redis_server::RedisServer, *};
use durable_iterator::{
    Call, ChannelHandle, ChannelObject, MethodError, PublishFilter, RedisStore, Router,
    SessionInfo, pb,
};
use serde_json::{Value, json};
use tonic::Code;

/// The sessions whose end each node's objects were told of: (node, session id).
type Ended = Arc<tokio::sync::watch::Sender<Vec<(String, String)>>>;

/// A channel object that says which node runs it and who called, publishes to the sessions a
/// predicate picks, and records ended sessions.
struct Witness {
    node: String,
    channel: ChannelHandle,
    ended: Ended,
}

#[async_trait::async_trait]
impl ChannelObject for Witness {
    fn methods(router: &mut Router<Self>) {
        router.method(
            durable_iterator::Method::<(), Value>::new(&["whoami"]),
            |witness: Arc<Self>, call: Call, ()| async move {
                Ok(json!({
                    "node": witness.node,
                    "session": call.caller.session_id,
                    "att": call.caller.claims.att,
                }))
            },
        );
        router.method(
            durable_iterator::Method::<String, String>::new(&["to_role"]),
            |witness: Arc<Self>, _call: Call, role: String| async move {
                let picked = role.clone();
                let filter = PublishFilter::everyone().targets_matching(move |s: &SessionInfo| {
                    s.claims
                        .att
                        .as_ref()
                        .is_some_and(|att| att["role"] == picked)
                });
                let id = witness
                    .channel
                    .publish(&json!({ "for": role }), filter)
                    .await
                    .map_err(MethodError::from)?;
                Ok(id.to_string())
            },
        );
    }

    async fn on_session_ended(&self, session_id: &str) {
        self.ended
            .send_modify(|ended| ended.push((self.node.clone(), session_id.to_owned())));
    }
}

/// A node named `name` on `redis` under `prefix`, its objects recording into `ended`.
async fn node(redis: &RedisServer, prefix: &str, name: &str, ended: &Ended) -> TestServer {
    let store = RedisStore::open(&redis.url(), prefix, 60_000)
        .await
        .unwrap();
    let (name, ended) = (name.to_owned(), ended.clone());
    TestServer::start_with(Options {
        store: Some(Arc::new(store)),
        config: Box::new(move |config| {
            config.objects.register("room:*", move |channel| Witness {
                node: name.clone(),
                channel,
                ended: ended.clone(),
            });
        }),
        ..Options::default()
    })
    .await
}

async fn three_nodes(redis: &RedisServer, prefix: &str) -> ([TestServer; 3], Ended) {
    let ended: Ended = Arc::new(tokio::sync::watch::Sender::new(Vec::new()));
    let nodes = [
        node(redis, prefix, "a", &ended).await,
        node(redis, prefix, "b", &ended).await,
        node(redis, prefix, "c", &ended).await,
    ];
    (nodes, ended)
}

/// The methods of [`Witness`].
fn witness_methods() -> Option<Vec<String>> {
    Some(vec!["whoami".into(), "to_role".into()])
}

/// A token for `channel` with `att`, allowed the witness's methods.
fn token_with_att(server: &TestServer, channel: &str, att: Value) -> String {
    let mut claims = server.claims(channel);
    claims.att = Some(att);
    claims.rpc = witness_methods();
    server.sign(&claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_on_a_subscribed_on_b_resumed_on_c_after_b_stops_exactly_once_in_order() {
    let redis = RedisServer::start();
    let ([a, mut b, c], _) = three_nodes(&redis, "three").await;
    let (subscribed, mut on_b) = b
        .subscribe(subscribe_request(b.token("room:1")))
        .await
        .unwrap();
    let mut published = Vec::new();
    for n in 0..10 {
        published.push(a.publish("room:1", json!(n)).await);
    }
    let mut last_seen = String::new();
    for id in &published[..5] {
        last_seen = next_event(&mut on_b).await.id;
        assert_eq!(&last_seen, id);
    }
    b.stop().await;
    drop(on_b);
    for n in 10..15 {
        published.push(a.publish("room:1", json!(n)).await);
    }
    let (resumed, mut on_c) = c
        .subscribe(resume_request(
            c.token("room:1"),
            &last_seen,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    assert_eq!(resumed.session_id, subscribed.session_id);
    assert_eq!(resumed.resume.unwrap().replayed, 10);
    published.push(a.publish("room:1", json!("live")).await);
    let mut received = Vec::new();
    for _ in 5..published.len() {
        received.push(next_event(&mut on_c).await.id);
    }
    assert_eq!(received, published[5..], "the rest, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_invoke_reach_the_node_that_holds_the_session() {
    let redis = RedisServer::start();
    let ([a, b, c], _) = three_nodes(&redis, "calls").await;
    let token = token_with_att(&a, "room:1", json!({ "v": 1 }));
    let (subscribed, _on_a) = a.subscribe(subscribe_request(token)).await.unwrap();
    let ticket = subscribed.session_ticket.clone();

    // An invoke with the ticket alone acts as the live session: only node a knows its token.
    let answer = b
        .invoke(invoke_request("", Some(&ticket), &["whoami"]))
        .await
        .unwrap();
    let answer = durable_iterator::json::from_proto(&answer.output.unwrap());
    assert_eq!(answer["node"], "a", "run by the session's node");
    assert_eq!(answer["session"], json!(subscribed.session_id));
    assert_eq!(answer["att"], json!({ "v": 1 }));

    // A refresh through node c swaps the token of the stream on node a.
    let mut claims = c.claims("room:1");
    claims.att = Some(json!({ "v": 2 }));
    claims.rpc = witness_methods();
    claims.exp += 600;
    let expires = c.refresh_token(&ticket, c.sign(&claims)).await.unwrap();
    assert_eq!(expires, claims.exp as i64);
    let answer = c
        .invoke(invoke_request("", Some(&ticket), &["whoami"]))
        .await
        .unwrap();
    let answer = durable_iterator::json::from_proto(&answer.output.unwrap());
    assert_eq!(
        answer["att"],
        json!({ "v": 2 }),
        "the new token is in force"
    );

    // The node that holds the session answers as it would itself: a refresh that changes the
    // tags is refused there, and a forged ticket is refused.
    let mut other_tags = c.claims("room:1");
    other_tags.tags = Some(vec!["vip".into()]);
    let refused = b.refresh_token(&ticket, b.sign(&other_tags)).await;
    expect_refused(refused, Code::FailedPrecondition);
    let (session_id, _) = ticket.rsplit_once('.').unwrap();
    let forged = format!("{session_id}.AAAA");
    expect_refused(
        b.refresh_token(&forged, b.token("room:1")).await,
        Code::Unauthenticated,
    );
}

async fn presence_ids(server: &TestServer, channel: &str) -> Vec<String> {
    let request = pb::PresenceRequest {
        channel: channel.into(),
        limit: 1,
        page_token: String::new(),
    };
    let mut ids = Vec::new();
    let mut request = request;
    loop {
        let page = server
            .admin()
            .presence(authorized(request.clone()))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.sessions.into_iter().map(|s| s.session_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        request.page_token = page.next_page_token;
    }
}

/// Waits until presence on `server` lists exactly `expected` (sorted): the directory is
/// written in the background.
async fn wait_for_presence(server: &TestServer, channel: &str, expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ids = presence_ids(server, channel).await;
        if ids == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence {ids:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_disconnect_see_the_sessions_of_every_node() {
    let redis = RedisServer::start();
    let ([a, b, c], _) = three_nodes(&redis, "presence").await;
    let (on_a, mut stream_a) = a
        .subscribe(subscribe_request(a.token_with_tags("room:1", &["x"])))
        .await
        .unwrap();
    let (on_b, mut stream_b) = b
        .subscribe(subscribe_request(b.token_with_tags("room:1", &["x", "y"])))
        .await
        .unwrap();
    let (on_b2, mut stream_b2) = b
        .subscribe(subscribe_request(b.token("room:1")))
        .await
        .unwrap();
    let ids = [
        on_a.session_id.clone(),
        on_b.session_id.clone(),
        on_b2.session_id.clone(),
    ];
    wait_for_presence(&c, "room:1", &ids).await;

    let stats = c
        .admin()
        .presence_stats(authorized(pb::PresenceStatsRequest {
            channel: "room:1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.sessions, 3);
    assert_eq!(stats.sessions_by_tag.get("x"), Some(&2));
    assert_eq!(stats.sessions_by_tag.get("y"), Some(&1));
    let info = c
        .admin()
        .channel_info(authorized(pb::ChannelInfoRequest {
            channel: "room:1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.live_sessions, 3);
    let listed = c
        .admin()
        .list_channels(authorized(pb::ListChannelsRequest {
            prefix: "room:".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.channels, vec!["room:1".to_owned()]);

    // Disconnect through node c ends the stream on node a; the session may come back.
    let disconnect = |id: &str, revoke| pb::DisconnectRequest {
        channel: "room:1".into(),
        session_id: id.into(),
        revoke,
    };
    let answer = c
        .admin()
        .disconnect(authorized(disconnect(&on_a.session_id, false)))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.was_live);
    assert_eq!(
        expect_end(&mut stream_a, Code::PermissionDenied).await,
        "disconnected by the server"
    );

    // A revoke through node a ends the stream on node b, and no node takes the ticket again.
    let answer = a
        .admin()
        .disconnect(authorized(disconnect(&on_b.session_id, true)))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.was_live);
    expect_end(&mut stream_b, Code::PermissionDenied).await;
    for (name, node) in [("a", &a), ("b", &b), ("c", &c)] {
        eprintln!("resuming a revoked session on node {name}");
        let refused = node
            .subscribe(resume_request(
                node.token("room:1"),
                "",
                &on_b.session_ticket,
            ))
            .await;
        expect_refused(refused.map(|_| ()), Code::PermissionDenied);
    }

    // Unknown sessions are NOT_FOUND on every node.
    let refused = c
        .admin()
        .disconnect(authorized(disconnect("no-such-session", false)))
        .await;
    expect_refused(refused, Code::NotFound);

    // DisconnectAll through node a reaches node b's last session, and revokes it everywhere.
    let answer = a
        .admin()
        .disconnect_all(authorized(pb::DisconnectAllRequest {
            channel: "room:1".into(),
            revoke: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.disconnected, 1);
    expect_end(&mut stream_b2, Code::PermissionDenied).await;
    let refused = c
        .subscribe(resume_request(c.token("room:1"), "", &on_b2.session_ticket))
        .await;
    expect_refused(refused.map(|_| ()), Code::PermissionDenied);
    wait_for_presence(&a, "room:1", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_naming_sessions_hold_across_nodes_live_and_on_replay() {
    let redis = RedisServer::start();
    let ([a, b, c], _) = three_nodes(&redis, "filters").await;
    let admin_token = token_with_att(&a, "room:1", json!({ "role": "admin" }));
    let (admin, mut admin_on_a) = a.subscribe(subscribe_request(admin_token)).await.unwrap();
    let user_token = token_with_att(&b, "room:1", json!({ "role": "user" }));
    let (user, mut user_on_b) = b.subscribe(subscribe_request(user_token)).await.unwrap();
    let start = c.publish("room:1", json!("start")).await;
    assert_eq!(next_event(&mut admin_on_a).await.id, start);
    assert_eq!(next_event(&mut user_on_b).await.id, start);
    wait_for_presence(
        &c,
        "room:1",
        &[admin.session_id.clone(), user.session_id.clone()],
    )
    .await;

    let mut to_user = publish_request("room:1", json!("to the user"));
    to_user.targets = string_list(&[&user.session_id]);
    let to_user = c.publish_with(to_user).await.unwrap();
    let mut not_admin = publish_request("room:1", json!("not the admin"));
    not_admin.exclude = vec![admin.session_id.clone()];
    let not_admin = a.publish_with(not_admin).await.unwrap();
    // A predicate run on node c picks the admin, whose stream is on node a.
    let caller = token_with_att(&c, "room:1", json!({ "role": "publisher" }));
    let mut invoke = invoke_request(&caller, None, &["to_role"]);
    invoke.input = Some(durable_iterator::json::to_proto(&json!("admin")));
    let to_admin = c.invoke(invoke).await.unwrap();
    let to_admin: String = serde_json::from_value(durable_iterator::json::from_proto(
        &to_admin.output.unwrap(),
    ))
    .unwrap();
    let end = b.publish("room:1", json!("end")).await;

    let expected_admin = vec![to_admin.clone(), end.clone()];
    let expected_user = vec![to_user.clone(), not_admin.clone(), end.clone()];
    let mut got_admin = Vec::new();
    for _ in 0..expected_admin.len() {
        got_admin.push(next_event(&mut admin_on_a).await.id);
    }
    let mut got_user = Vec::new();
    for _ in 0..expected_user.len() {
        got_user.push(next_event(&mut user_on_b).await.id);
    }
    assert_eq!(got_admin, expected_admin, "live, on node a");
    assert_eq!(got_user, expected_user, "live, on node b");

    // On replay, through the third node, each session gets exactly what it got live.
    for (session, token, expected) in [
        (
            &admin,
            token_with_att(&c, "room:1", json!({ "role": "admin" })),
            &expected_admin,
        ),
        (
            &user,
            token_with_att(&c, "room:1", json!({ "role": "user" })),
            &expected_user,
        ),
    ] {
        let (resumed, mut replay) = c
            .subscribe(resume_request(token, &start, &session.session_ticket))
            .await
            .unwrap();
        assert_eq!(resumed.resume.unwrap().replayed, expected.len() as u64);
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(next_event(&mut replay).await.id);
        }
        assert_eq!(&got, expected, "on replay, on node c");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_moved_to_another_node_ends_once_on_that_node() {
    let redis = RedisServer::start();
    let ([a, b, _c], ended) = three_nodes(&redis, "ended").await;
    let (subscribed, on_a) = a
        .subscribe(subscribe_request(a.token("room:1")))
        .await
        .unwrap();
    drop(on_a);
    wait_until_not_live(&a, "room:1", &subscribed.session_ticket).await;
    // Back within its window, through node b; then gone for good.
    let (_, on_b) = b
        .subscribe(resume_request(
            b.token("room:1"),
            "",
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    wait_for_presence(&a, "room:1", std::slice::from_ref(&subscribed.session_id)).await;
    drop(on_b);
    wait_for_presence(&a, "room:1", &[]).await;
    // Both nodes see the window lapse; the session ends once, on node b.
    a.clock.advance(Duration::from_secs(61));
    b.clock.advance(Duration::from_secs(61));
    let mut watch = ended.subscribe();
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|e| !e.is_empty()))
        .await
        .expect("the session ends")
        .unwrap();
    // A marker session ended on node a after it shows node a's reaper had its turn.
    let (marker, on_a) = a
        .subscribe(subscribe_request(a.token("room:2")))
        .await
        .unwrap();
    drop(on_a);
    wait_until_not_live(&a, "room:2", &marker.session_ticket).await;
    a.clock.advance(Duration::from_secs(61));
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|e| e.iter().any(|(_, id)| *id == marker.session_id)),
    )
    .await
    .expect("the marker session ends")
    .unwrap();
    let ended_sessions: Vec<(String, String)> = ended
        .borrow()
        .iter()
        .filter(|(_, id)| *id == subscribed.session_id)
        .cloned()
        .collect();
    assert_eq!(
        ended_sessions,
        vec![("b".to_owned(), subscribed.session_id.clone())],
        "once, on the node it moved to"
    );
}
