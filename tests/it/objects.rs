//! Channel objects over real gRPC: the seed's chat room (the example's own code), typed methods,
//! the allow-list, hooks, the relay, predicates, and the HTTP method proxy.

#[path = "../../examples/chat/contract.rs"]
mod contract;
#[path = "../../examples/chat/room.rs"]
mod room;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::*;
use durable_iterator::{
    Call, ChannelHandle, ChannelObject, Interceptor, InvokeCall, Method, MethodError, Next,
    ProxyConfig, PublishFilter, RefreshCall, ResumeOutcome, Router, SessionInfo, SubscribeCall,
    TokenClaims, json, pb,
};
use serde_json::{Value, json};
use tonic::{Code, Streaming};

fn chat_server_options(retention_ms: u64) -> Options {
    Options {
        retention_ms,
        config: Box::new(|config| {
            config.objects.register("chat:*", room::ChatRoom::new);
        }),
        ..Options::default()
    }
}

/// A token for `channel` allowed to call `rpc`, with `att.userId = user`.
fn member_token(server: &TestServer, channel: &str, user: &str, rpc: &[&str]) -> String {
    let mut claims: TokenClaims = server.claims(channel);
    claims.rpc = Some(rpc.iter().map(|m| m.to_string()).collect());
    claims.att = Some(json!({ "userId": user }));
    server.sign(&claims)
}

/// Calls `method` with a typed input; answers the typed output.
async fn call<I: serde::Serialize, O: serde::de::DeserializeOwned>(
    server: &TestServer,
    token: &str,
    ticket: Option<&str>,
    method: Method<I, O>,
    input: &I,
) -> Result<O, tonic::Status> {
    let mut request = invoke_request(token, ticket, method.path());
    request.input = Some(json::to_proto(&method.encode_input(input).unwrap()));
    let output = server.invoke(request).await?.output.unwrap_or_default();
    Ok(method.decode_output(json::from_proto(&output)).unwrap())
}

async fn invoke_json(
    server: &TestServer,
    token: &str,
    ticket: Option<&str>,
    path: &[&str],
    input: Value,
) -> Result<Value, tonic::Status> {
    let mut request = invoke_request(token, ticket, path);
    request.input = Some(json::to_proto(&input));
    let output = server.invoke(request).await?.output.unwrap_or_default();
    Ok(json::from_proto(&output))
}

const CHAT_RPC: &[&str] = &["sendMessage", "routerClient"];

struct Member {
    token: String,
    subscribed: pb::Subscribed,
    stream: Streaming<pb::SubscribeResponse>,
}

async fn join(server: &TestServer, channel: &str, user: &str) -> Member {
    let token = member_token(server, channel, user, CHAT_RPC);
    let (subscribed, stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    Member {
        token,
        subscribed,
        stream,
    }
}

impl Member {
    fn ticket(&self) -> Option<&str> {
        Some(&self.subscribed.session_ticket)
    }

    async fn send(&self, server: &TestServer, message: &str) {
        send(server, &self.token, self.ticket(), message).await;
    }
}

async fn send(server: &TestServer, token: &str, ticket: Option<&str>, message: &str) {
    let input = contract::SendMessage {
        message: message.into(),
    };
    call(server, token, ticket, contract::SEND_MESSAGE, &input)
        .await
        .unwrap();
}

#[tokio::test]
async fn chat_messages_reach_everyone_but_the_sender_even_across_a_reconnect() {
    let server = TestServer::start_with(chat_server_options(60_000)).await;
    let mut alice = join(&server, "chat:1", "alice").await;
    let mut bob = join(&server, "chat:1", "bob").await;

    alice.send(&server, "hi bob").await;
    let marker = server.publish("chat:1", json!("marker")).await;
    assert_eq!(
        payloads_until(&mut bob.stream, &marker).await,
        [json!({"message": "hi bob", "from": "alice"})]
    );
    assert!(payloads_until(&mut alice.stream, &marker).await.is_empty());

    // Alice drops her stream, sends while away (token + ticket), and comes back: the replay
    // holds Bob's message but not her own, because her session id survived.
    let Member {
        token: alice_token,
        subscribed: alice_subscribed,
        stream,
    } = alice;
    drop(stream);
    let alice_ticket = Some(alice_subscribed.session_ticket.as_str());
    send(&server, &alice_token, alice_ticket, "sent while away").await;
    bob.send(&server, "welcome back").await;
    let (resubscribed, mut alice_stream) = server
        .subscribe(resume_request(
            alice_token.clone(),
            &marker,
            &alice_subscribed.session_ticket,
        ))
        .await
        .unwrap();
    assert_eq!(resubscribed.session_id, alice_subscribed.session_id);
    let resume = resubscribed.resume.unwrap();
    assert!(resume.recovered && resume.replayed == 1, "{resume:?}");
    let marker = server.publish("chat:1", json!("marker")).await;
    assert_eq!(
        payloads_until(&mut alice_stream, &marker).await,
        [json!({"message": "welcome back", "from": "bob"})]
    );
    assert_eq!(
        payloads_until(&mut bob.stream, &marker).await,
        [json!({"message": "sent while away", "from": "alice"})]
    );
}

#[tokio::test]
async fn typed_methods_answer_and_refuse_with_the_right_codes() {
    let server = TestServer::start_with(chat_server_options(60_000)).await;
    let member = join(&server, "chat:1", "alice").await;
    let token = &member.token;
    assert_eq!(
        call(&server, token, None, contract::PING, &())
            .await
            .unwrap(),
        "pong"
    );
    let echo = contract::Echo {
        text: "Hello".into(),
    };
    assert_eq!(
        call(&server, token, None, contract::ECHO, &echo)
            .await
            .unwrap(),
        "Echo: Hello"
    );
    // Input that does not decode as the method's type.
    let message = expect_refused(
        invoke_json(
            &server,
            token,
            None,
            &["routerClient", "echo"],
            json!({"txt": 1}),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("routerClient.echo"), "{message}");
    // An allowed router without that method, and a method the token does not list.
    let message = expect_refused(
        invoke_json(&server, token, None, &["routerClient", "nope"], Value::Null).await,
        Code::NotFound,
    );
    assert_eq!(
        message,
        r#"channel "chat:1" has no method routerClient.nope"#
    );
    let message = expect_refused(
        invoke_json(&server, token, None, &["admin"], Value::Null).await,
        Code::PermissionDenied,
    );
    assert_eq!(message, r#"Method "admin" is not allowed."#);
    let pinger = member_token(&server, "chat:1", "carol", &["routerClient"]);
    expect_refused(
        call(
            &server,
            &pinger,
            None,
            contract::SEND_MESSAGE,
            &contract::SendMessage {
                message: "x".into(),
            },
        )
        .await,
        Code::PermissionDenied,
    );
    // The method's own error, with the code it chose: no session to exclude.
    let message = expect_refused(
        call(
            &server,
            token,
            None,
            contract::SEND_MESSAGE,
            &contract::SendMessage {
                message: "x".into(),
            },
        )
        .await,
        Code::FailedPrecondition,
    );
    assert!(message.contains("session ticket"), "{message}");
}

#[tokio::test]
async fn channels_outside_the_pattern_get_the_relay() {
    let server = TestServer::start_with(chat_server_options(60_000)).await;
    let token = member_token(&server, "lobby", "alice", &["sendMessage", "publish"]);
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    expect_refused(
        invoke_json(
            &server,
            &token,
            None,
            &["sendMessage"],
            json!({"message": "x"}),
        )
        .await,
        Code::NotFound,
    );
    let ticket = Some(subscribed.session_ticket.as_str());
    let published = invoke_json(
        &server,
        &token,
        ticket,
        &["publish"],
        json!({"payload": {"text": "relayed"}}),
    )
    .await
    .unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(published, json!({ "id": event.id }));
    assert_eq!(payload(&event), json!({"text": "relayed"}));
    // exclude_self keeps the caller's own event away from it.
    invoke_json(
        &server,
        &token,
        ticket,
        &["publish"],
        json!({"payload": "not for me", "exclude_self": true}),
    )
    .await
    .unwrap();
    assert!(
        drain_until_marker(&server, "lobby", &mut stream)
            .await
            .is_empty()
    );
    let message = expect_refused(
        invoke_json(
            &server,
            &token,
            ticket,
            &["publish"],
            json!({"payload": 1, "bad": 2}),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(message.contains("bad"), "{message}");
    // Without `publish` in the token's rpc, the relay is closed.
    let reader = member_token(&server, "lobby", "bob", &[]);
    expect_refused(
        invoke_json(&server, &reader, None, &["publish"], json!({"payload": 1})).await,
        Code::PermissionDenied,
    );
}

/// Records its hooks, and publishes to the sessions an `att` predicate picks.
struct Recorder {
    channel: ChannelHandle,
    log: Log,
}

type Log = Arc<tokio::sync::watch::Sender<Vec<String>>>;

const NOTIFY_ADMINS: Method<String, String> = Method::new(&["notifyAdmins"]);

#[async_trait::async_trait]
impl ChannelObject for Recorder {
    fn methods(router: &mut Router<Self>) {
        router.method(
            NOTIFY_ADMINS,
            |recorder: Arc<Self>, _call: Call, text: String| async move {
                let is_admin = |s: &SessionInfo| {
                    s.claims
                        .att
                        .as_ref()
                        .is_some_and(|att| att["role"] == "admin")
                };
                let id = recorder
                    .channel
                    .publish(&text, PublishFilter::everyone().targets_matching(is_admin))
                    .await
                    .map_err(MethodError::from)?;
                Ok(id.to_string())
            },
        );
    }

    async fn on_subscribed(&self, session: &SessionInfo, resume: &ResumeOutcome) {
        self.log.send_modify(|log| {
            log.push(format!(
                "subscribed {} requested={} recovered={}",
                session.session_id, resume.requested, resume.recovered
            ))
        });
    }

    async fn on_session_ended(&self, session_id: &str) {
        self.log
            .send_modify(|log| log.push(format!("ended {session_id}")));
    }
}

fn recorder_options(log: Log) -> Options {
    Options {
        retention_ms: 10_000,
        config: Box::new(move |config| {
            config.objects.register("rec", move |channel| Recorder {
                channel,
                log: log.clone(),
            });
        }),
        ..Options::default()
    }
}

/// Waits, bounded, until the log holds `count` entries: hooks run beside the calls.
async fn log_with(log: &Log, count: usize) -> Vec<String> {
    let mut entries = log.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        entries.wait_for(|entries| entries.len() >= count),
    )
    .await
    .expect("the hook runs")
    .unwrap()
    .clone()
}

#[tokio::test]
async fn on_session_ended_fires_once_the_window_lapses_and_not_on_a_dropped_connection() {
    let log: Log = Arc::default();
    let server = TestServer::start_with(recorder_options(log.clone())).await;
    let token = server.token("rec");
    let (subscribed, stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let id = subscribed.session_id.clone();
    // A second session, whose end comes last and so tells when every earlier end was heard.
    let (witness, witness_stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let subscribed_entries = log_with(&log, 2).await;
    assert!(
        subscribed_entries.contains(&format!("subscribed {id} requested=false recovered=false")),
        "{subscribed_entries:?}"
    );
    let last = server.publish("rec", json!(1)).await;

    // The connection drops; the session comes back 1 ms before its 10 s window lapses.
    drop(stream);
    wait_until_not_live(&server, "rec", &subscribed.session_ticket).await;
    server.clock.advance(Duration::from_millis(9_999));
    let (_, stream) = server
        .subscribe(resume_request(
            token.clone(),
            &last,
            &subscribed.session_ticket,
        ))
        .await
        .unwrap();
    assert_eq!(
        log_with(&log, 3).await[2],
        format!("subscribed {id} requested=true recovered=true")
    );
    // Far past the first window: the session is live, so nothing ends.
    server.clock.advance(Duration::from_secs(60));
    // It drops again and stays away; the witness drops 1 ms later.
    drop(stream);
    wait_until_not_live(&server, "rec", &subscribed.session_ticket).await;
    server.clock.advance(Duration::from_millis(1));
    drop(witness_stream);
    wait_until_not_live(&server, "rec", &witness.session_ticket).await;
    server.clock.advance(Duration::from_millis(10_000));
    let witness_ended = format!("ended {}", witness.session_id);
    let mut entries = log.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        entries.wait_for(|entries| entries.contains(&witness_ended)),
    )
    .await
    .expect("the witness ends")
    .unwrap();
    let ends: Vec<String> = log
        .borrow()
        .iter()
        .filter(|entry| entry.starts_with("ended"))
        .cloned()
        .collect();
    assert_eq!(ends, [format!("ended {id}"), witness_ended]);
}

#[tokio::test]
async fn predicates_pick_live_sessions_by_their_token() {
    let server = TestServer::start_with(recorder_options(Log::default())).await;
    let mut streams = Vec::new();
    for role in ["admin", "user", "admin"] {
        let mut claims = server.claims("rec");
        claims.att = Some(json!({ "role": role }));
        claims.rpc = Some(vec!["notifyAdmins".into()]);
        let (_, stream) = server
            .subscribe(subscribe_request(server.sign(&claims)))
            .await
            .unwrap();
        streams.push((role, server.sign(&claims), stream));
    }
    let token = streams[1].1.clone();
    let id = call(
        &server,
        &token,
        None,
        NOTIFY_ADMINS,
        &"to admins".to_owned(),
    )
    .await
    .unwrap();
    let marker = server.publish("rec", json!("marker")).await;
    for (role, _, stream) in &mut streams {
        let expected = if *role == "admin" {
            vec![json!("to admins")]
        } else {
            vec![]
        };
        assert_eq!(payloads_until(stream, &marker).await, expected, "{role}");
    }
    assert!(id < marker);
}

/// A one-endpoint HTTP server standing in for the application behind the method proxy: it
/// answers by path[1] of the call, and records the bodies it was sent.
async fn upstream(bodies: Arc<Mutex<Vec<Value>>>) -> std::net::SocketAddr {
    upstream_over(bodies, None).await
}

/// [`upstream`], over TLS when `tls` is given.
async fn upstream_over(
    bodies: Arc<Mutex<Vec<Value>>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::net::SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::{Response, StatusCode, server::conn::http1, service::service_fn};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let bodies = bodies.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let bodies = bodies.clone();
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                        bodies.lock().unwrap().push(body.clone());
                        let (status, answer) = match body["path"][1].as_str() {
                            Some("ok") => (StatusCode::OK, json!({"echo": body["input"]})),
                            Some("missing") => {
                                (StatusCode::NOT_FOUND, json!({"message": "no such thing"}))
                            }
                            Some("denied") => (StatusCode::FORBIDDEN, json!("plain")),
                            _ => (StatusCode::BAD_GATEWAY, json!({})),
                        };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(bytes::Bytes::from(answer.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let builder = http1::Builder::new();
                match tls {
                    None => {
                        let io = hyper_util::rt::TokioIo::new(socket);
                        let _ = builder.serve_connection(io, service).await;
                    }
                    Some(tls) => {
                        let Ok(stream) = tls.accept(socket).await else {
                            return;
                        };
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = builder.serve_connection(io, service).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_method_proxy_forwards_calls_and_maps_upstream_errors() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let addr = upstream(bodies.clone()).await;
    let server = TestServer::start_with(Options {
        config: Box::new(move |config| {
            config.objects.register("chat:*", room::ChatRoom::new);
            config.objects.proxy_unregistered(ProxyConfig {
                url: format!("http://{addr}/invoke").parse().unwrap(),
                timeout: Duration::from_secs(20),
            });
        }),
        ..Options::default()
    })
    .await;
    let token = member_token(&server, "app:1", "alice", &["api"]);
    let (subscribed, _stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    let ticket = Some(subscribed.session_ticket.as_str());
    let output = invoke_json(&server, &token, ticket, &["api", "ok"], json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(output, json!({"echo": {"n": 1}}));
    assert_eq!(
        bodies.lock().unwrap()[0],
        json!({
            "channel": "app:1",
            "session_id": subscribed.session_id,
            "att": {"userId": "alice"},
            "path": ["api", "ok"],
            "input": {"n": 1},
        })
    );
    let message = expect_refused(
        invoke_json(&server, &token, None, &["api", "missing"], Value::Null).await,
        Code::NotFound,
    );
    assert_eq!(message, "no such thing");
    let message = expect_refused(
        invoke_json(&server, &token, None, &["api", "denied"], Value::Null).await,
        Code::PermissionDenied,
    );
    assert_eq!(message, "\"plain\"");
    expect_refused(
        invoke_json(&server, &token, None, &["api", "broken"], Value::Null).await,
        Code::Unavailable,
    );
    // The allow-list is checked before anything is forwarded.
    let calls = bodies.lock().unwrap().len();
    expect_refused(
        invoke_json(&server, &token, None, &["other"], Value::Null).await,
        Code::PermissionDenied,
    );
    assert_eq!(bodies.lock().unwrap().len(), calls);
    // Registered objects still serve their own channels.
    let member = member_token(&server, "chat:1", "bob", CHAT_RPC);
    assert_eq!(
        call(&server, &member, None, contract::PING, &())
            .await
            .unwrap(),
        "pong"
    );
}

/// `serve --method-proxy https://...`: the server trusts the system's roots, here the test's
/// certificate through `SSL_CERT_FILE`, and forwards over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_proxy_forwards_over_https_trusting_the_system_roots() {
    use crate::common::process::{CHILD_SIGNING_KEY, ServerProcess};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = durable_iterator::dev_certificate(dir.path()).unwrap();
    let chain: Vec<_> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, PrivateKeyDer::from_pem_file(&key).unwrap())
    .unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let upstream = upstream_over(bodies.clone(), Some(Arc::new(config).into())).await;

    let mut command = ServerProcess::command(&dir.path().join("data"), "127.0.0.1:0");
    command
        .args(["--method-proxy"])
        .arg(format!("https://localhost:{}/invoke", upstream.port()))
        .env("SSL_CERT_FILE", &cert);
    let server = ServerProcess::spawn(command);
    let mut claims = TokenClaims::new("app:1", real_now_secs(), 600);
    claims.rpc = Some(vec!["api".into()]);
    let keyring = durable_iterator::Keyring::new([CHILD_SIGNING_KEY]).unwrap();
    let mut request = invoke_request(
        &durable_iterator::token::sign(&keyring, &claims),
        None,
        &["api", "ok"],
    );
    request.input = Some(json::to_proto(&json!({"over": "https"})));
    let output = pb::durable_iterator_client::DurableIteratorClient::new(server.channel().await)
        .invoke(request)
        .await
        .unwrap()
        .into_inner()
        .output
        .unwrap_or_default();
    assert_eq!(
        json::from_proto(&output),
        json!({"echo": {"over": "https"}})
    );
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

fn real_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn an_unreachable_method_proxy_is_unavailable() {
    // A port nothing listens on: bound, then closed.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::start_with(Options {
        config: Box::new(move |config| {
            config.objects.proxy_unregistered(ProxyConfig {
                url: format!("http://{addr}/").parse().unwrap(),
                timeout: Duration::from_secs(20),
            });
        }),
        ..Options::default()
    })
    .await;
    let token = member_token(&server, "app", "alice", &["api"]);
    let message = expect_refused(
        invoke_json(&server, &token, None, &["api"], Value::Null).await,
        Code::Unavailable,
    );
    assert!(message.contains("method proxy unreachable"), "{message}");
}

/// Records every hook it runs around; the "gate" one refuses paths named "forbidden".
struct Audit {
    name: &'static str,
    log: Log,
}

impl Audit {
    fn note(&self, what: String) {
        self.log
            .send_modify(|log| log.push(format!("{} {what}", self.name)));
    }
}

#[async_trait::async_trait]
impl Interceptor for Audit {
    async fn subscribe(
        &self,
        call: &SubscribeCall,
        next: Next<'_, SubscribeCall, ResumeOutcome>,
    ) -> Result<ResumeOutcome, tonic::Status> {
        self.note(format!("subscribe {}", call.channel));
        let outcome = next.run().await?;
        self.note(format!("subscribed requested={}", outcome.requested));
        Ok(outcome)
    }

    async fn invoke(
        &self,
        call: &InvokeCall,
        next: Next<'_, InvokeCall, Value>,
    ) -> Result<Value, tonic::Status> {
        self.note(format!("invoke {}", call.path.join(".")));
        if self.name == "gate" && call.path == ["forbidden"] {
            return Err(tonic::Status::permission_denied("blocked by the gate"));
        }
        let output = next.run().await?;
        self.note(format!("invoked {output}"));
        Ok(output)
    }

    async fn refresh(
        &self,
        call: &RefreshCall,
        next: Next<'_, RefreshCall, i64>,
    ) -> Result<i64, tonic::Status> {
        self.note(format!("refresh {}", call.claims.chn));
        next.run().await
    }
}

#[tokio::test]
async fn interceptors_run_in_order_around_subscribe_invoke_and_refresh() {
    let log: Log = Arc::default();
    let hooks = log.clone();
    let server = TestServer::start_with(Options {
        config: Box::new(move |config| {
            config.objects.register("chat:*", room::ChatRoom::new);
            for name in ["audit", "gate"] {
                config.interceptors.push(Audit {
                    name,
                    log: hooks.clone(),
                });
            }
        }),
        ..Options::default()
    })
    .await;
    let token = member_token(&server, "chat:1", "alice", &["routerClient", "forbidden"]);
    let (subscribed, mut stream) = server
        .subscribe(subscribe_request(token.clone()))
        .await
        .unwrap();
    assert_eq!(
        log_with(&log, 4).await,
        [
            "audit subscribe chat:1",
            "gate subscribe chat:1",
            "gate subscribed requested=false",
            "audit subscribed requested=false",
        ]
    );
    call(&server, &token, None, contract::PING, &())
        .await
        .unwrap();
    assert_eq!(
        log_with(&log, 8).await[4..],
        [
            "audit invoke routerClient.ping",
            "gate invoke routerClient.ping",
            "gate invoked \"pong\"",
            "audit invoked \"pong\"",
        ]
    );
    let message = expect_refused(
        invoke_json(&server, &token, None, &["forbidden"], Value::Null).await,
        Code::PermissionDenied,
    );
    assert_eq!(message, "blocked by the gate");
    assert_eq!(
        log_with(&log, 10).await[8..],
        ["audit invoke forbidden", "gate invoke forbidden"]
    );
    server
        .refresh_token(&subscribed.session_ticket, token)
        .await
        .unwrap();
    assert_eq!(
        log_with(&log, 12).await[10..],
        ["audit refresh chat:1", "gate refresh chat:1"]
    );
    // The stream the interceptors let through is the real one.
    let id = server.publish("chat:1", json!("after")).await;
    assert_eq!(next_event(&mut stream).await.id, id);
}
