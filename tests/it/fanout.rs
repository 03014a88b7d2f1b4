//! Fan-out: publish filters live and on replay, session identity, slow consumers, batches.
//! (That every subscriber is sent one shared encoding is a unit test of `channel`.)

use std::sync::Arc;

use crate::common::*;
use durable_iterator::pb::{self, subscribe_response::Kind};
use serde_json::{Value, json};
use tonic::{Code, Streaming};

// ---------------------------------------------------------------------------------------------
// The oRPC filter matrix (SPEC §6)
// ---------------------------------------------------------------------------------------------

const MATRIX_CHANNEL: &str = "matrix";

/// The matrix's three sessions, each subscribed with its own token tags.
struct MatrixSession {
    token: String,
    id: String,
    ticket: String,
}

/// s1 holds tags [t1, t2], s2 holds [t2], s3 holds none.
fn matrix_tokens(server: &TestServer) -> [String; 3] {
    [
        server.token_with_tags(MATRIX_CHANNEL, &["t1", "t2"]),
        server.token_with_tags(MATRIX_CHANNEL, &["t2"]),
        server.token(MATRIX_CHANNEL),
    ]
}

async fn subscribe_matrix(
    server: &TestServer,
) -> (Vec<MatrixSession>, Vec<Streaming<pb::SubscribeResponse>>) {
    let mut sessions = Vec::new();
    let mut streams = Vec::new();
    for token in matrix_tokens(server) {
        let (subscribed, stream) = server
            .subscribe(subscribe_request(token.clone()))
            .await
            .unwrap();
        sessions.push(MatrixSession {
            token,
            id: subscribed.session_id,
            ticket: subscribed.session_ticket,
        });
        streams.push(stream);
    }
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "every subscriber gets its own session: {ids:?}"
    );
    (sessions, streams)
}

/// One publish of the matrix and the sessions (by index: 0 = s1, 1 = s2, 2 = s3) that must
/// receive it.
struct Case {
    name: &'static str,
    request: pb::PublishRequest,
    receivers: &'static [usize],
}

/// Every case of SPEC §6, with the real session ids filled in.
fn matrix_cases(sessions: &[MatrixSession]) -> Vec<Case> {
    let id = |i: usize| sessions[i].id.as_str();
    let case = |name: &'static str,
                tags: Option<pb::StringList>,
                targets: Option<pb::StringList>,
                exclude: &[&str],
                receivers: &'static [usize]| {
        let mut request = publish_request(MATRIX_CHANNEL, json!({ "case": name }));
        request.tags = tags;
        request.targets = targets;
        request.exclude = exclude.iter().map(|s| s.to_string()).collect();
        Case {
            name,
            request,
            receivers,
        }
    };
    vec![
        case("no filter", None, None, &[], &[0, 1, 2]),
        case("targets s1", None, string_list(&[id(0)]), &[], &[0]),
        case("exclude s1", None, None, &[id(0)], &[1, 2]),
        case(
            "targets s1 exclude s2",
            None,
            string_list(&[id(0)]),
            &[id(1)],
            &[0],
        ),
        case("tags t1", string_list(&["t1"]), None, &[], &[0]),
        case("tags t2", string_list(&["t2"]), None, &[], &[0, 1]),
        case(
            "tags t2 exclude s1",
            string_list(&["t2"]),
            None,
            &[id(0)],
            &[1],
        ),
        case(
            "tags t2 targets s1",
            string_list(&["t2"]),
            string_list(&[id(0)]),
            &[],
            &[0],
        ),
        // Duplicates in the event's tags must not duplicate the delivery.
        case(
            "tags t1 t2 t2",
            string_list(&["t1", "t2", "t2"]),
            None,
            &[],
            &[0, 1],
        ),
        // Present but empty differs from absent: it reaches nobody.
        case("tags empty", string_list(&[]), None, &[], &[]),
        case("targets empty", None, string_list(&[]), &[], &[]),
    ]
}

/// What session `index` must receive, in publish order.
fn expected_for(cases: &[Case], index: usize) -> Vec<Value> {
    cases
        .iter()
        .filter(|case| case.receivers.contains(&index))
        .map(|case| json!({ "case": case.name }))
        .collect()
}

async fn publish_cases(server: &TestServer, cases: &[Case]) {
    for case in cases {
        server
            .publish_with(case.request.clone())
            .await
            .unwrap_or_else(|status| panic!("publishing {:?}: {status:?}", case.name));
    }
}

#[tokio::test]
async fn live_delivery_follows_the_orpc_filter_matrix() {
    let server = TestServer::start().await;
    let (sessions, mut streams) = subscribe_matrix(&server).await;
    let cases = matrix_cases(&sessions);
    publish_cases(&server, &cases).await;
    // One marker for all three: whatever a session did not get before it, it never gets.
    let marker = server.publish(MATRIX_CHANNEL, json!("marker")).await;
    for (index, stream) in streams.iter_mut().enumerate() {
        assert_eq!(
            payloads_until(stream, &marker).await,
            expected_for(&cases, index),
            "session s{}",
            index + 1
        );
    }
}

#[tokio::test]
async fn replay_applies_the_same_filter_matrix_as_live_delivery() {
    let server = TestServer::start().await;
    let (sessions, mut streams) = subscribe_matrix(&server).await;
    let start = server.publish(MATRIX_CHANNEL, json!("start")).await;
    for stream in &mut streams {
        assert_eq!(next_event(stream).await.id, start);
    }
    drop(streams);

    // Published while nobody is connected: the filters, with their session ids, are stored
    // with the events and applied again on replay.
    let cases = matrix_cases(&sessions);
    publish_cases(&server, &cases).await;

    let mut resumed = Vec::new();
    for (index, session) in sessions.iter().enumerate() {
        let (subscribed, stream) = server
            .subscribe(resume_request(
                session.token.clone(),
                &start,
                &session.ticket,
            ))
            .await
            .unwrap();
        assert_eq!(subscribed.session_id, session.id, "s{}", index + 1);
        let resume = subscribed.resume.unwrap();
        assert!(resume.requested && resume.recovered, "{resume:?}");
        assert_eq!(
            resume.replayed,
            expected_for(&cases, index).len() as u64,
            "s{} replay count",
            index + 1
        );
        resumed.push(stream);
    }
    let marker = server.publish(MATRIX_CHANNEL, json!("marker")).await;
    for (index, stream) in resumed.iter_mut().enumerate() {
        assert_eq!(
            payloads_until(stream, &marker).await,
            expected_for(&cases, index),
            "session s{} on replay",
            index + 1
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_ticket_keeps_the_session_id_and_no_ticket_gets_a_new_one() {
    let server = TestServer::start().await;
    let token = server.token("sessions");
    let (first, stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    drop(stream);

    let (kept, mut kept_stream) = server
        .subscribe(pb::SubscribeRequest {
            token: token.clone(),
            last_event_id: None,
            session_ticket: Some(first.session_ticket.clone()),
        })
        .await
        .unwrap();
    assert_eq!(kept.session_id, first.session_id);

    let (fresh, mut fresh_stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    assert_ne!(fresh.session_id, first.session_id);

    // The kept identity is the one `targets` names.
    let mut request = publish_request("sessions", json!("for the first session"));
    request.targets = string_list(&[&first.session_id]);
    server.publish_with(request).await.unwrap();
    let marker = server.publish("sessions", json!("marker")).await;
    assert_eq!(
        payloads_until(&mut kept_stream, &marker).await,
        [json!("for the first session")]
    );
    assert!(payloads_until(&mut fresh_stream, &marker).await.is_empty());
}

/// The status a refused `Subscribe` ended with.
fn refused<T>(result: Result<T, tonic::Status>, accepted: &str) -> tonic::Status {
    match result {
        Ok(_) => panic!("{accepted}"),
        Err(status) => status,
    }
}

/// The same character, changed to another base64url character.
fn altered(ticket: &str, index: usize) -> String {
    let mut chars: Vec<char> = ticket.chars().collect();
    chars[index] = if chars[index] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn forged_session_tickets_are_refused() {
    let server = TestServer::start().await;
    let token = server.token("forgery");
    let (subscribed, _stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let ticket = &subscribed.session_ticket;
    let (id_part, mac_part) = ticket.rsplit_once('.').unwrap();
    assert_eq!(id_part, subscribed.session_id);
    assert!(!mac_part.is_empty());

    // The first MAC character carries six whole bits, so changing it changes the MAC.
    let forged_mac = altered(ticket, id_part.len() + 1);
    let forged_id = altered(ticket, 0);
    for forged in [forged_mac, forged_id] {
        assert_ne!(&forged, ticket);
        let status = server
            .subscribe(pb::SubscribeRequest {
                token: token.clone(),
                last_event_id: None,
                session_ticket: Some(forged.clone()),
            })
            .await;
        let status = refused(status, &format!("forged ticket {forged:?} was accepted"));
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().contains("invalid session ticket"),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn a_ticket_from_another_channel_is_refused() {
    let server = TestServer::start().await;
    let (subscribed, _stream) = server
        .subscribe(subscribe_request(server.token("room-a")))
        .await
        .unwrap();
    let status = server
        .subscribe(pb::SubscribeRequest {
            token: server.token("room-b"),
            last_event_id: None,
            session_ticket: Some(subscribed.session_ticket),
        })
        .await;
    let status = refused(status, "a ticket of room-a opened room-b");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("invalid session ticket"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_second_stream_with_the_same_ticket_supersedes_the_first() {
    let server = TestServer::start().await;
    let token = server.token("takeover");
    let (first, mut first_stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let (second, mut second_stream) = server
        .subscribe(pb::SubscribeRequest {
            token,
            last_event_id: None,
            session_ticket: Some(first.session_ticket.clone()),
        })
        .await
        .unwrap();
    assert_eq!(second.session_id, first.session_id);

    let message = expect_end(&mut first_stream, Code::Aborted).await;
    assert!(message.contains("another stream"), "{message}");

    // The session lives on in the second stream, `targets` included.
    let mut request = publish_request("takeover", json!("still here"));
    request.targets = string_list(&[&first.session_id]);
    let id = server.publish_with(request).await.unwrap();
    let event = next_event(&mut second_stream).await;
    assert_eq!((&event.id, payload(&event)), (&id, json!("still here")));
}

/// A client on a connection of its own whose streams' flow-control window holds only a few
/// events: while it reads nothing, what is published waits in the session's queue.
async fn small_window_client(
    server: &TestServer,
) -> durable_iterator::pb::durable_iterator_client::DurableIteratorClient<tonic::transport::Channel>
{
    let connection = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    durable_iterator::pb::durable_iterator_client::DurableIteratorClient::new(connection)
}

#[tokio::test]
async fn events_queued_one_batch_each_arrive_once_each_and_in_order() {
    const EVENTS: usize = 300;
    let server = TestServer::start().await;
    let mut client = small_window_client(&server).await;
    let (_, mut stream) = subscribe_on(&mut client, subscribe_request(server.token("queued")))
        .await
        .unwrap();
    // One publish at a time: one batch each, most of them queued behind the full window and
    // sent together once the client reads.
    let mut ids = Vec::new();
    for n in 0..EVENTS {
        ids.push(server.publish("queued", json!(n)).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let event = next_event(&mut stream).await;
        assert_eq!((&event.id, payload(&event)), (id, json!(n)));
    }
    let marker = server.publish("queued", json!("marker")).await;
    assert_eq!(next_event(&mut stream).await.id, marker);
}

#[tokio::test]
async fn a_busy_stream_ends_at_its_next_batch_once_superseded() {
    const EVENTS: usize = 200;
    let server = TestServer::start().await;
    // A stream window of a few events: the rest wait in the session's queue, one batch per
    // publish, while this client reads nothing.
    let mut client = small_window_client(&server).await;
    let token = server.token("busy");
    let (first, mut first_stream) = subscribe_on(&mut client, subscribe_request(token.clone()))
        .await
        .unwrap();
    for n in 0..EVENTS {
        server.publish("busy", json!(n)).await;
    }
    let (_second, _second_stream) = server
        .subscribe(pb::SubscribeRequest {
            token,
            last_event_id: None,
            session_ticket: Some(first.session_ticket),
        })
        .await
        .unwrap();

    // What was already written to the connection arrives; the queued batches do not.
    let mut received = 0;
    let status = loop {
        match next(&mut first_stream).await {
            Ok(Kind::Event(_)) => received += 1,
            Ok(Kind::Heartbeat(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        received < EVENTS,
        "the superseded stream sent its whole queue ({received} events) before it ended"
    );
}

// ---------------------------------------------------------------------------------------------
// Slow consumers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_consumer_ends_with_resource_exhausted_and_resumes_without_loss() {
    const CHANNEL: &str = "firehose";
    const EVENTS: usize = 400;
    let server = TestServer::start_with(Options {
        config: Box::new(|config| config.subscriber_queue = 8),
        ..Options::default()
    })
    .await;
    // A connection of its own: its flow-control windows fill up without holding back the
    // publisher's calls on the shared connection.
    let mut slow_client = server.client_on_new_connection().await;
    let token = server.token(CHANNEL);
    let (subscribed, mut slow) = subscribe_on(&mut slow_client, subscribe_request(token.clone()))
        .await
        .unwrap();

    // 400 events of 32 KB are about 13 MB: far more than the HTTP/2 windows (2 MB per stream
    // on the client) and the server's send buffer can hold, so while the subscriber does not
    // read, its queue of 8 must overflow. No timing: only volume decides.
    let filler = "x".repeat(32 * 1024);
    let mut ids = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        ids.push(
            server
                .publish(CHANNEL, json!({ "n": n, "filler": filler }))
                .await,
        );
    }

    let mut received = Vec::new();
    let status = loop {
        match next(&mut slow).await {
            Ok(Kind::Event(event)) => received.push(event),
            Ok(other) => panic!("expected events, got {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("resume from last id"),
        "{status:?}"
    );
    let got = received.len();
    assert!(
        (1..EVENTS).contains(&got),
        "{got} of {EVENTS} events before the end"
    );
    // What arrived is a prefix of what was published, in order.
    for (n, event) in received.iter().enumerate() {
        assert_eq!(event.id, ids[n]);
        assert_eq!(payload(event)["n"], json!(n));
    }

    let last = &received[got - 1].id;
    let (resubscribed, mut resumed) = subscribe_on(
        &mut slow_client,
        resume_request(token, last, &subscribed.session_ticket),
    )
    .await
    .unwrap();
    assert_eq!(resubscribed.session_id, subscribed.session_id);
    let resume = resubscribed.resume.unwrap();
    assert!(resume.requested && resume.recovered, "{resume:?}");
    assert_eq!(resume.replayed, (EVENTS - got) as u64);
    for (n, id) in ids.iter().enumerate().skip(got) {
        let event = next_event(&mut resumed).await;
        assert_eq!(&event.id, id);
        assert_eq!(payload(&event)["n"], json!(n));
    }
    // Exactly once: nothing else before a fresh marker.
    assert!(
        drain_until_marker(&server, CHANNEL, &mut resumed)
            .await
            .is_empty()
    );
}

fn batch_event(channel: &str, payload: serde_json::Value) -> pb::PublishRequest {
    publish_request(channel, payload)
}

async fn publish_batch(
    server: &TestServer,
    events: Vec<pb::PublishRequest>,
) -> Result<Vec<String>, tonic::Status> {
    let request = authorized(pb::PublishBatchRequest { events });
    Ok(server
        .admin()
        .publish_batch(request)
        .await?
        .into_inner()
        .ids)
}

fn seq_of(id: &str) -> u64 {
    id.parse::<durable_iterator::EventId>().unwrap().seq
}

#[tokio::test]
async fn a_batch_publishes_every_event_in_order_with_ids_in_request_order() {
    let server = TestServer::start().await;
    let (_, mut a) = server
        .subscribe(subscribe_request(server.token("a")))
        .await
        .unwrap();
    let (_, mut b) = server
        .subscribe(subscribe_request(server.token("b")))
        .await
        .unwrap();
    let ids = publish_batch(
        &server,
        vec![
            batch_event("a", json!("a1")),
            batch_event("b", json!("b1")),
            batch_event("a", json!("a2")),
            pb::PublishRequest {
                tags: string_list(&["nobody"]),
                ..batch_event("b", json!("filtered"))
            },
            batch_event("a", json!("a3")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 5);
    let a_seqs: Vec<u64> = [0, 2, 4].iter().map(|&i| seq_of(&ids[i])).collect();
    assert_eq!(a_seqs, [1, 2, 3]);
    for (i, expected) in [(0, "a1"), (2, "a2"), (4, "a3")] {
        let event = next_event(&mut a).await;
        assert_eq!(
            (event.id.as_str(), payload(&event)),
            (ids[i].as_str(), json!(expected))
        );
    }
    let event = next_event(&mut b).await;
    assert_eq!(
        (event.id.as_str(), payload(&event)),
        (ids[1].as_str(), json!("b1"))
    );
    // The filter of each event applies: "filtered" reaches no session without the tag.
    assert!(drain_until_marker(&server, "b", &mut b).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_contiguously_while_others_publish() {
    let server = Arc::new(TestServer::start().await);
    let singles: Vec<_> = (0..4)
        .map(|p| {
            let server = server.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    server.publish("busy", json!([p, n])).await;
                }
            })
        })
        .collect();
    let events = (0..500).map(|n| batch_event("busy", json!(n))).collect();
    let ids = publish_batch(&server, events).await.unwrap();
    for single in singles {
        single.await.unwrap();
    }
    let seqs: Vec<u64> = ids.iter().map(|id| seq_of(id)).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "no other publish lands inside a batch: {seqs:?}"
    );
}

#[tokio::test]
async fn an_invalid_event_refuses_the_whole_batch_and_stores_nothing() {
    let server = TestServer::start().await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("a")))
        .await
        .unwrap();
    let last = server.publish("a", json!("before")).await;
    assert_eq!(next_event(&mut stream).await.id, last);
    let message = expect_refused(
        publish_batch(
            &server,
            vec![
                batch_event("a", json!(1)),
                batch_event("a", json!(2)),
                batch_event("bad\nchannel", json!(3)),
            ],
        )
        .await,
        tonic::Code::InvalidArgument,
    );
    assert!(message.starts_with("event 2: channel name"), "{message}");
    let too_many = (0..10_001).map(|n| batch_event("a", json!(n))).collect();
    let message = expect_refused(
        publish_batch(&server, too_many).await,
        tonic::Code::InvalidArgument,
    );
    assert!(message.contains("the limit is 10000"), "{message}");
    let unauthorized = server
        .admin()
        .publish_batch(pb::PublishBatchRequest {
            events: vec![batch_event("a", json!(1))],
        })
        .await
        .unwrap_err();
    assert_eq!(unauthorized.code(), tonic::Code::Unauthenticated);
    expect_nothing_stored_since(&server, "a", &mut stream, &last).await;
}

#[tokio::test]
async fn the_client_publishes_batches() {
    let server = TestServer::start().await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("a")))
        .await
        .unwrap();
    let client = durable_iterator_client::Client::from_channel(server.channel());
    let events = (0..3)
        .map(|n| durable_iterator_client::Publish {
            channel: "a".into(),
            payload: json!(n),
            ..Default::default()
        })
        .collect();
    let ids = client.publish_batch(API_KEY, events).await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        let event = next_event(&mut stream).await;
        assert_eq!((&event.id, payload(&event)), (id, json!(n)));
    }
}
