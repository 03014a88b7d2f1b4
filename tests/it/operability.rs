//! What an operator sees and does, on the real binary as a child process: Prometheus metrics,
//! JSON logs, the configuration file's precedence, key reload on SIGHUP, and the drain on
//! SIGTERM.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{ChildStderr, Command},
    sync::mpsc,
    time::Duration,
};

use crate::common::{process::*, *};
use durable_iterator::{
    Keyring,
    clock::{Clock, SystemClock},
    pb::{
        self, durable_iterator_admin_client::DurableIteratorAdminClient,
        durable_iterator_client::DurableIteratorClient, subscribe_response::Kind,
    },
    token::{self, TokenClaims},
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The samples of a scrape: `name{labels}` to value.
async fn scrape(url: &str) -> HashMap<String, f64> {
    let address = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (sample, value) = line.rsplit_once(' ').unwrap();
            (sample.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// How much each sample moved between two scrapes (absent before: from 0).
fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, sample: &str) -> f64 {
    let value = |scrape: &HashMap<String, f64>| scrape.get(sample).copied().unwrap_or(0.0);
    assert!(after.contains_key(sample), "{sample} is not exposed");
    value(after) - value(before)
}

fn token_signed_with(key: &str, channel: &str) -> String {
    let keyring = Keyring::new([key]).unwrap();
    token::sign(
        &keyring,
        &TokenClaims::new(channel, SystemClock.now_secs(), 3_600),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_subscribes_resumes_slow_consumers_and_publishes() {
    const EVENTS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
    command.args(["--metrics-listen", "127.0.0.1:0", "--subscriber-queue", "8"]);
    let mut server = ServerProcess::spawn(command);
    let url = server.metrics_url();
    let mut client = DurableIteratorClient::new(server.channel().await);
    let mut admin = DurableIteratorAdminClient::new(server.channel().await);
    let before = scrape(&url).await;

    // A new subscriber receives three events.
    let token = child_token("room");
    let (subscribed, mut first) = subscribe_on(&mut client, subscribe_request(token.clone()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let response = admin
            .publish(child_publish("room", json!({ "n": n })))
            .await;
        ids.push(response.unwrap().into_inner().id);
    }
    for id in &ids {
        assert_eq!(&next_event(&mut first).await.id, id);
    }
    // It resumes after the first on another stream: two replayed, the old stream superseded.
    let (resumed, mut second) = subscribe_on(
        &mut client,
        resume_request(token, &ids[0], &subscribed.session_ticket),
    )
    .await
    .unwrap();
    assert_eq!(resumed.resume.unwrap().replayed, 2);
    expect_end(&mut first, Code::Aborted).await;
    for id in &ids[1..] {
        assert_eq!(&next_event(&mut second).await.id, id);
    }

    // A subscriber that does not read, on a connection of its own, overflows its queue of 8.
    let mut slow_client = DurableIteratorClient::new(server.channel().await);
    let (_, mut slow) = subscribe_on(&mut slow_client, subscribe_request(child_token("firehose")))
        .await
        .unwrap();
    let filler = "x".repeat(32 * 1024);
    for n in 0..EVENTS {
        let event = json!({ "n": n, "filler": filler });
        admin
            .publish(child_publish("firehose", event))
            .await
            .unwrap();
    }
    let mut received = 0;
    let status = loop {
        match next(&mut slow).await {
            Ok(Kind::Event(_)) => received += 1,
            Ok(other) => panic!("expected events, got {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A forged token, a method the token does not allow, a refresh.
    let forged = token_signed_with("not-the-key", "room");
    let refused = subscribe_on(&mut client, subscribe_request(forged)).await;
    expect_refused(refused, Code::Unauthenticated);
    let invoke = pb::InvokeRequest {
        token: child_token("room"),
        path: vec!["nope".into()],
        ..Default::default()
    };
    expect_refused(client.invoke(invoke).await, Code::PermissionDenied);
    let refresh = pb::RefreshTokenRequest {
        session_ticket: subscribed.session_ticket.clone(),
        token: child_token("room"),
    };
    client.refresh_token(refresh).await.unwrap();

    let after = scrape(&url).await;
    let m = |sample: &str| moved(&before, &after, sample);
    assert_eq!(
        m(r#"durable_iterator_subscribes_total{outcome="new"}"#),
        2.0
    );
    assert_eq!(
        m(r#"durable_iterator_subscribes_total{outcome="recovered"}"#),
        1.0
    );
    assert_eq!(
        m(r#"durable_iterator_subscribes_total{outcome="too_old"}"#),
        0.0
    );
    assert_eq!(
        m(r#"durable_iterator_streams_ended_total{reason="superseded"}"#),
        1.0
    );
    assert_eq!(
        m(r#"durable_iterator_streams_ended_total{reason="slow_consumer"}"#),
        1.0
    );
    assert_eq!(
        m(r#"durable_iterator_streams_ended_total{reason="client"}"#),
        0.0
    );
    assert_eq!(
        after["durable_iterator_live_sessions"], 1.0,
        "the resumed stream"
    );
    let published = (3 + EVENTS) as f64;
    assert_eq!(m("durable_iterator_events_published_total"), published);
    // The gap is the channel's latest events: replayed from memory.
    assert_eq!(
        m(r#"durable_iterator_events_replayed_total{from="memory"}"#),
        2.0
    );
    assert_eq!(
        m(r#"durable_iterator_events_replayed_total{from="store"}"#),
        0.0
    );
    // Live: three to the first stream, none yet to the resumed one, and what the slow one got.
    assert_eq!(
        m("durable_iterator_events_delivered_total"),
        (3 + received) as f64
    );
    assert_eq!(
        m("durable_iterator_publish_durable_seconds_count"),
        published
    );
    assert_eq!(m("durable_iterator_store_commit_events_sum"), published);
    assert!(m("durable_iterator_store_commit_seconds_count") >= 1.0);
    let failures = r#"durable_iterator_token_verification_failures_total{reason="bad_signature"}"#;
    assert_eq!(m(failures), 1.0);
    assert_eq!(
        m(r#"durable_iterator_invokes_total{code="PERMISSION_DENIED"}"#),
        1.0
    );
    assert_eq!(
        m(r#"durable_iterator_token_refreshes_total{result="ok"}"#),
        1.0
    );
    assert!(after["durable_iterator_store_file_bytes"] > 0.0);
    assert!(
        !after
            .keys()
            .any(|sample| sample.starts_with("durable_iterator_publish_stage_seconds")),
        "stages are timed only with --stage-timings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_timings_time_each_publish_batch_and_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
    command.args(["--metrics-listen", "127.0.0.1:0", "--stage-timings"]);
    let mut server = ServerProcess::spawn(command);
    let url = server.metrics_url();
    let mut client = DurableIteratorClient::new(server.channel().await);
    let mut admin = DurableIteratorAdminClient::new(server.channel().await);
    let (_, mut first) = subscribe_on(&mut client, subscribe_request(child_token("timed")))
        .await
        .unwrap();
    let (_, mut second) = subscribe_on(&mut client, subscribe_request(child_token("timed")))
        .await
        .unwrap();
    // One at a time: three publish calls, three batches, each sent to both streams.
    for n in 0..3 {
        let id = admin
            .publish(child_publish("timed", json!({ "n": n })))
            .await
            .unwrap()
            .into_inner()
            .id;
        assert_eq!(next_event(&mut first).await.id, id);
        assert_eq!(next_event(&mut second).await.id, id);
    }
    let scraped = scrape(&url).await;
    let stage = |stage: &str, part: &str| {
        let sample = format!(r#"durable_iterator_publish_stage_seconds_{part}{{stage="{stage}"}}"#);
        *scraped
            .get(&sample)
            .unwrap_or_else(|| panic!("{sample} is not exposed"))
    };
    assert_eq!(stage("received_to_committed", "count"), 3.0);
    assert_eq!(stage("committed_to_queued", "count"), 3.0);
    assert_eq!(stage("committed_to_sent", "count"), 6.0);
    assert_eq!(
        stage("store_commit", "count"),
        scraped["durable_iterator_store_commit_seconds_count"]
    );
    // A commit (an fsync) takes time; handing a batch over takes some too.
    assert!(stage("received_to_committed", "sum") > 0.0);
    assert!(stage("committed_to_sent", "sum") > 0.0);
}

/// Lines of a child's stderr, each parsed as JSON (a line that is not JSON fails the test).
struct JsonLog {
    lines: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl JsonLog {
    fn new(stderr: ChildStderr) -> Self {
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line whose message starts with `message` (lines before it are kept in
    /// `seen`).
    fn wait_for(&mut self, message: &str) -> serde_json::Value {
        loop {
            let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) else {
                panic!("no log line {message:?} within 30 s after {:#?}", self.seen);
            };
            let parsed: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
            self.seen.push(parsed.clone());
            let said = parsed["fields"]["message"].as_str().unwrap_or_default();
            if said.starts_with(message) {
                return parsed;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_line_per_stream_start_and_end_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
    command
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info,durable_iterator=debug");
    let (server, stderr) = ServerProcess::spawn_logging(command);
    let mut log = JsonLog::new(stderr);
    let mut client = DurableIteratorClient::new(server.channel().await);
    let mut admin = DurableIteratorAdminClient::new(server.channel().await);

    let token = child_token("logged");
    let (subscribed, mut stream) = subscribe_on(&mut client, subscribe_request(token.clone()))
        .await
        .unwrap();
    let started = log.wait_for("stream started");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["channel"], "logged");
    assert_eq!(
        started["fields"]["session_id"],
        subscribed.session_id.as_str()
    );
    assert_eq!(started["fields"]["resume"], "new");
    for n in 0..2 {
        admin
            .publish(child_publish("logged", json!({ "n": n })))
            .await
            .unwrap();
        next_event(&mut stream).await;
    }
    drop(stream);
    let ended = log.wait_for("stream ended");
    assert_eq!(
        ended["fields"]["session_id"],
        subscribed.session_id.as_str()
    );
    assert_eq!(ended["fields"]["reason"], "client");
    assert_eq!(ended["fields"]["events_sent"], 2);
    assert!(ended["fields"]["duration_ms"].is_u64(), "{ended}");

    let refused = subscribe_on(
        &mut client,
        subscribe_request(token_signed_with("x", "logged")),
    );
    expect_refused(refused.await, Code::Unauthenticated);
    let debug = log.wait_for("call refused");
    assert_eq!(debug["level"], "DEBUG");
    assert_eq!(debug["fields"]["call"], "Subscribe");

    let text = log
        .seen
        .iter()
        .map(|line| line.to_string())
        .collect::<String>();
    for secret in [CHILD_SIGNING_KEY, CHILD_API_KEY, token.as_str()] {
        assert!(!text.contains(secret), "the log holds a secret");
    }
}

/// `serve --print-config` with `flag`, `env` and `file` values of `--retention-seconds`.
fn effective_retention(
    dir: &Path,
    flag: Option<&str>,
    env: Option<&str>,
    file: Option<&str>,
) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durable-iterator"));
    command.args(["serve", "--print-config", "--signing-key", "k"]);
    command.env_remove("DURABLE_ITERATOR_RETENTION_SECONDS");
    if let Some(value) = flag {
        command.args(["--retention-seconds", value]);
    }
    if let Some(value) = env {
        command.env("DURABLE_ITERATOR_RETENTION_SECONDS", value);
    }
    if let Some(value) = file {
        let path = dir.join(format!("config-{value}.toml"));
        std::fs::write(&path, format!("retention-seconds = {value}\n")).unwrap();
        command.arg("--config").arg(path);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let line = printed
        .lines()
        .find(|line| line.starts_with("retention-seconds = "))
        .unwrap();
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn configuration_precedence_is_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            Some("1"),
            Some("2"),
            Some("3"),
            "retention-seconds = 1 # flag",
        ),
        (
            None,
            Some("2"),
            Some("3"),
            "retention-seconds = 2 # environment",
        ),
        (None, None, Some("3"), "retention-seconds = 3 # file"),
        (None, None, None, "retention-seconds = 300 # default"),
        (Some("1"), None, Some("3"), "retention-seconds = 1 # flag"),
        (Some("1"), Some("2"), None, "retention-seconds = 1 # flag"),
    ];
    for (flag, env, file, expected) in cases {
        assert_eq!(
            effective_retention(dir.path(), flag, env, file),
            expected,
            "flag {flag:?}, environment {env:?}, file {file:?}"
        );
    }
}

#[test]
fn a_bad_configuration_file_refuses_to_start_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bogus = 1\n", "key `bogus`: unknown key"),
        (
            "retention-seconds = \"soon\"\n",
            "key `retention-seconds`: invalid value",
        ),
        ("store = \"floppy\"\n", "key `store`: invalid value"),
        (
            "dev-tls = \"yes\"\n",
            "key `dev-tls`: expected true or false",
        ),
        ("retention-seconds = \n", "config file"),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_durable-iterator"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&path.display().to_string()),
            "{text}: {stderr}"
        );
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn print_config_redacts_keys_and_redis_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "signing-key = [\"file-signing-secret\"]\nredis-url = \"redis://:redis-secret@127.0.0.1:6379/0\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_durable-iterator"))
        .args([
            "serve",
            "--print-config",
            "--api-key",
            "flag-api-secret",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    for secret in ["file-signing-secret", "redis-secret", "flag-api-secret"] {
        assert!(!printed.contains(secret), "{printed}");
    }
    assert!(
        printed.contains("redis://:<redacted>@127.0.0.1:6379/0"),
        "{printed}"
    );
    assert!(printed.contains("api-key = \"<redacted>\""), "{printed}");
}

/// A server that reads its keys from files, logging JSON.
fn server_with_key_files(dir: &Path) -> (ServerProcess, JsonLog) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durable-iterator"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--signing-key-file")
        .arg(dir.join("signing-keys"))
        .arg("--api-key-file")
        .arg(dir.join("api-keys"))
        .args(["--log-format", "json", "--shutdown-grace-seconds", "5"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null());
    let (server, stderr) = ServerProcess::spawn_logging(command);
    (server, JsonLog::new(stderr))
}

fn admin_request<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_keys_and_keeps_live_streams() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing-keys"), "old-signing-key\n").unwrap();
    std::fs::write(
        dir.path().join("api-keys"),
        "# rotated monthly\nold-api-key\n",
    )
    .unwrap();
    let (server, mut log) = server_with_key_files(dir.path());
    let mut client = DurableIteratorClient::new(server.channel().await);
    let mut admin = DurableIteratorAdminClient::new(server.channel().await);
    let publish =
        |key: &str, n: u64| admin_request(publish_request("keys", json!({ "n": n })), key);

    let old_token = token_signed_with("old-signing-key", "keys");
    let (subscribed, mut live) = subscribe_on(&mut client, subscribe_request(old_token.clone()))
        .await
        .unwrap();
    admin.publish(publish("old-api-key", 0)).await.unwrap();
    assert_eq!(payload(&next_event(&mut live).await), json!({ "n": 0 }));

    // The old keys are removed, new ones put in.
    std::fs::write(dir.path().join("signing-keys"), "new-signing-key\n").unwrap();
    std::fs::write(dir.path().join("api-keys"), "new-api-key\n").unwrap();
    server.send("-HUP");
    // The files are also watched: a reload between the two writes may come first.
    let reloaded = loop {
        let reloaded = log.wait_for("keys reloaded");
        if reloaded["fields"]["trigger"] == "SIGHUP" {
            break reloaded;
        }
    };
    assert_eq!(reloaded["fields"]["signing_keys"], 1);
    assert_eq!(reloaded["fields"]["api_keys"], 1);

    // The live stream goes on, fed by a publish with the new API key.
    expect_refused(
        admin.publish(publish("old-api-key", 1)).await,
        Code::Unauthenticated,
    );
    admin.publish(publish("new-api-key", 2)).await.unwrap();
    assert_eq!(payload(&next_event(&mut live).await), json!({ "n": 2 }));
    // Tokens signed with the removed key stop verifying at their next check; new ones work.
    let again = subscribe_on(&mut client, subscribe_request(old_token.clone())).await;
    expect_refused(again, Code::Unauthenticated);
    let refresh = |token: String| pb::RefreshTokenRequest {
        session_ticket: subscribed.session_ticket.clone(),
        token,
    };
    expect_refused(
        client.refresh_token(refresh(old_token)).await,
        Code::Unauthenticated,
    );
    let new_token = token_signed_with("new-signing-key", "keys");
    // The session ticket was signed with the old key too: it no longer verifies.
    expect_refused(
        client.refresh_token(refresh(new_token.clone())).await,
        Code::Unauthenticated,
    );
    let (_, mut fresh) = subscribe_on(&mut client, subscribe_request(new_token.clone()))
        .await
        .unwrap();

    // A reload that fails keeps the keys in force.
    std::fs::write(dir.path().join("signing-keys"), "\n# nothing here\n").unwrap();
    server.send("-HUP");
    let failed = log.wait_for("key reload failed");
    assert_eq!(failed["level"], "ERROR");
    assert!(
        failed["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("no key"),
        "{failed}"
    );
    admin.publish(publish("new-api-key", 3)).await.unwrap();
    assert_eq!(payload(&next_event(&mut live).await), json!({ "n": 3 }));
    assert_eq!(payload(&next_event(&mut fresh).await), json!({ "n": 3 }));
    subscribe_on(&mut client, subscribe_request(new_token))
        .await
        .unwrap();

    let text = log.seen.iter().map(|l| l.to_string()).collect::<String>();
    for secret in [
        "old-signing-key",
        "new-signing-key",
        "old-api-key",
        "new-api-key",
    ] {
        assert!(!text.contains(secret), "the log holds a key");
    }
}

/// `durable-iterator health` against `server`: whether it exited 0, and what it printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_file_is_reloaded_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signing-keys"), "first-key\n").unwrap();
    std::fs::write(dir.path().join("api-keys"), "api-key\n").unwrap();
    let (server, mut log) = server_with_key_files(dir.path());
    let mut client = DurableIteratorClient::new(server.channel().await);
    let first = token_signed_with("first-key", "watched");
    let (_, mut live) = subscribe_on(&mut client, subscribe_request(first.clone()))
        .await
        .unwrap();

    // The new key first, the old one kept: both verify.
    std::fs::write(dir.path().join("signing-keys"), "second-key\nfirst-key\n").unwrap();
    let reloaded = log.wait_for("keys reloaded");
    assert_eq!(reloaded["fields"]["trigger"], "a changed file");
    assert_eq!(reloaded["fields"]["signing_keys"], 2);
    subscribe_on(&mut client, subscribe_request(first))
        .await
        .unwrap();
    let second = token_signed_with("second-key", "watched");
    subscribe_on(&mut client, subscribe_request(second))
        .await
        .unwrap();
    let mut admin = DurableIteratorAdminClient::new(server.channel().await);
    let publish = admin_request(publish_request("watched", json!("still here")), "api-key");
    admin.publish(publish).await.unwrap();
    assert_eq!(payload(&next_event(&mut live).await), json!("still here"));
}

async fn health_command(server: &ServerProcess) -> (bool, String) {
    let url = format!("http://{}", server.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_durable-iterator"))
            .args(["health", "--server", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    (output.status.success(), printed.trim().to_owned())
}

async fn health_status(server: &ServerProcess) -> ServingStatus {
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let response = health.check(request).await.unwrap().into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_health_first_then_streams_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = ServerProcess::command(dir.path(), "127.0.0.1:0");
    // Longer than the test: the second SIGTERM ends the drain, not a timer.
    command.args(["--drain-seconds", "600"]);
    let mut server = ServerProcess::spawn(command);
    let mut client = DurableIteratorClient::new(server.channel().await);
    let mut admin = DurableIteratorAdminClient::new(server.channel().await);
    let (_, mut open) = subscribe_on(&mut client, subscribe_request(child_token("drain")))
        .await
        .unwrap();
    assert_eq!(health_status(&server).await, ServingStatus::Serving);
    assert_eq!(health_command(&server).await, (true, "SERVING".to_owned()));

    server.send("-TERM");
    // Health turns first, while everything else goes on.
    while health_status(&server).await != ServingStatus::NotServing {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        health_command(&server).await,
        (false, "NOT_SERVING".to_owned())
    );
    let (_, mut during) = subscribe_on(&mut client, subscribe_request(child_token("drain")))
        .await
        .unwrap();
    admin
        .publish(child_publish("drain", json!({ "during": "drain" })))
        .await
        .unwrap();
    assert_eq!(
        payload(&next_event(&mut open).await),
        json!({ "during": "drain" })
    );
    assert_eq!(
        payload(&next_event(&mut during).await),
        json!({ "during": "drain" })
    );

    // The drain ends: open streams are told to reconnect, then the process exits cleanly.
    server.send("-TERM");
    expect_end(&mut open, Code::Unavailable).await;
    expect_end(&mut during, Code::Unavailable).await;
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A node of the binary on `redis`, with metrics.
fn redis_node(dir: &Path, redis: &redis_server::RedisServer) -> (ServerProcess, String) {
    let mut command = ServerProcess::command(dir, "127.0.0.1:0");
    command
        .args(["--store", "redis", "--redis-url", &redis.url()])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let mut server = ServerProcess::spawn(command);
    let url = server.metrics_url();
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_calls_and_redis_appends_are_counted() {
    let redis = redis_server::RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, url_a) = redis_node(dir_a.path(), &redis);
    let (b, url_b) = redis_node(dir_b.path(), &redis);
    let (before_a, before_b) = (scrape(&url_a).await, scrape(&url_b).await);

    let mut on_a = DurableIteratorClient::new(a.channel().await);
    let (subscribed, mut stream) = subscribe_on(&mut on_a, subscribe_request(child_token("room")))
        .await
        .unwrap();
    let id = DurableIteratorAdminClient::new(a.channel().await)
        .publish(child_publish("room", json!(1)))
        .await
        .unwrap()
        .into_inner()
        .id;
    assert_eq!(next_event(&mut stream).await.id, id);
    // A refresh through node b runs on node a, where the stream is.
    let refresh = pb::RefreshTokenRequest {
        session_ticket: subscribed.session_ticket.clone(),
        token: child_token("room"),
    };
    DurableIteratorClient::new(b.channel().await)
        .refresh_token(refresh)
        .await
        .unwrap();

    let (after_a, after_b) = (scrape(&url_a).await, scrape(&url_b).await);
    let forwarded_ok = "durable_iterator_forwarded_calls_total{code=\"OK\"}";
    assert_eq!(moved(&before_b, &after_b, forwarded_ok), 1.0);
    assert_eq!(
        moved(&before_a, &after_a, forwarded_ok),
        0.0,
        "run, not forwarded, on a"
    );
    let refreshed = "durable_iterator_token_refreshes_total{result=\"ok\"}";
    assert_eq!(
        moved(&before_b, &after_b, refreshed),
        1.0,
        "counted where it came in"
    );
    let commits = "durable_iterator_store_commit_events_count";
    assert_eq!(
        moved(&before_a, &after_a, commits),
        1.0,
        "one append script"
    );
}
