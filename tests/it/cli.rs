//! The `durable-iterator` binary as a user runs it: `serve` with no configuration at all, and
//! `token`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
};

use crate::common::*;
use durable_iterator::{
    Keyring,
    pb::{self, durable_iterator_admin_client::DurableIteratorAdminClient},
    token,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durable-iterator"));
    // Nothing from the environment: what a fresh machine has.
    command
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The JSON after `-d '` in a printed grpcurl command.
fn grpcurl_data(line: &str) -> Value {
    let data = line
        .split_once("-d '")
        .and_then(|(_, rest)| rest.split_once("' "))
        .map(|(data, _)| data)
        .unwrap_or_else(|| panic!("no -d '…' in {line:?}"));
    serde_json::from_str(data).unwrap()
}

#[tokio::test]
async fn serve_with_no_configuration_prints_a_token_and_commands_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-key");
    let mut child = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
        .arg("--dev-key-file")
        .arg(&key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = || lines.next().expect("more output").unwrap();
    let addr = loop {
        if let Some(addr) = next_line().strip_prefix("durable-iterator listening on ") {
            break addr.to_owned();
        }
    };
    let subscribe_line = loop {
        let line = next_line();
        if line.contains("DurableIterator/Subscribe") {
            break line;
        }
    };
    let publish_line = loop {
        let line = next_line();
        if line.contains("DurableIteratorAdmin/Publish") {
            break line;
        }
    };
    assert!(subscribe_line.starts_with("grpcurl -plaintext"));
    assert!(subscribe_line.contains(&addr));
    assert!(publish_line.contains(&key_file.display().to_string()));

    // The printed request subscribes; the generated API key publishes.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request: pb::SubscribeRequest = pb::SubscribeRequest {
        token: grpcurl_data(&subscribe_line)["token"]
            .as_str()
            .unwrap()
            .to_owned(),
        last_event_id: None,
        session_ticket: None,
    };
    let mut client = pb::durable_iterator_client::DurableIteratorClient::new(channel.clone());
    let (subscribed, mut stream) = subscribe_on(&mut client, request).await.unwrap();
    assert_eq!(subscribed.channel, "lobby");
    let api_key = std::fs::read_to_string(&key_file).unwrap();
    let publish = grpcurl_data(&publish_line);
    assert_eq!(
        publish,
        json!({"channel": "lobby", "json": {"text": "hello"}})
    );
    let mut request = tonic::Request::new(publish_request("lobby", json!({"text": "hello"})));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", api_key.trim()).parse().unwrap(),
    );
    let id = DurableIteratorAdminClient::new(channel)
        .publish(request)
        .await
        .unwrap()
        .into_inner()
        .id;
    let event = next_event(&mut stream).await;
    assert_eq!(
        (&event.id, payload(&event)),
        (&id, json!({"text": "hello"}))
    );

    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("no signing key configured"), "{log}");
    assert!(log.contains("no admin API key configured"), "{log}");
    assert!(!log.contains(api_key.trim()), "the API key is never logged");
}

fn token_command(args: &[&str]) -> Output {
    binary()
        .args(["token", "--signing-key", "cli-key"])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn token_mints_tokens_the_server_accepts() {
    let output = token_command(&[
        "--channel",
        "room",
        "--tags",
        "a,b",
        "--rpc",
        "m",
        "--att",
        r#"{"u":1}"#,
        "--ttl",
        "60",
    ]);
    let minted = stdout(&output);
    let keyring = Keyring::new(["cli-key"]).unwrap();
    let claims = token::verify(&keyring, &minted, now_secs()).unwrap();
    assert_eq!(claims.chn, "room");
    assert_eq!(claims.tags(), ["a", "b"]);
    assert_eq!(claims.att, Some(json!({"u": 1})));
    assert!(claims.allows_method("m"));
    assert_eq!(claims.exp - claims.iat, 60);
}

#[test]
fn token_prints_ready_subscribe_and_invoke_requests() {
    let subscribe: Value = serde_json::from_str(&stdout(&token_command(&[
        "--channel",
        "room",
        "--request",
        "--last-event-id",
        "0000000a-0000000000000001",
        "--session-ticket",
        "id.mac",
    ])))
    .unwrap();
    assert_eq!(subscribe["last_event_id"], "0000000a-0000000000000001");
    assert_eq!(subscribe["session_ticket"], "id.mac");
    assert!(
        subscribe["token"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"chn":"room""#)
    );

    let invoke: Value = serde_json::from_str(&stdout(&token_command(&[
        "--channel",
        "room",
        "--rpc",
        "routerClient",
        "--invoke",
        "routerClient.echo",
        "--input",
        r#"{"text":"Hello"}"#,
    ])))
    .unwrap();
    assert_eq!(invoke["path"], json!(["routerClient", "echo"]));
    assert_eq!(invoke["input"], json!({"text": "Hello"}));
}

#[test]
fn token_refuses_bad_arguments_with_a_message() {
    for (args, says) in [
        (
            vec!["--channel", "room", "--ttl", "999999999"],
            "token lifetime",
        ),
        (
            vec!["--channel", "room", "--att", "{not json"],
            "--att is not JSON",
        ),
        (vec!["--channel", "a\nb"], "channel name"),
    ] {
        let output = token_command(&args);
        assert!(!output.status.success(), "{args:?}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains(says), "{args:?}: {error}");
    }
    let output = binary()
        .args(["token", "--channel", "room"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no signing key"));
}

#[test]
fn serve_refuses_a_method_proxy_that_is_not_http_or_https() {
    let output = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
        .args(["--signing-key", "k", "--api-key", "a"])
        .args(["--method-proxy", "ftp://app.example/invoke"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("give an http:// or https:// URL"));
}

/// The README's configuration table says what `serve --help` says: every flag it lists with a
/// default shows that default in `--help` (both come from `durable_iterator::defaults` and
/// `Limits::default()`), and every flag of `--help` is in the table.
#[test]
fn the_readme_configuration_table_matches_serve_help() {
    let output = binary().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let readme = include_str!("../../README.md");
    let table: Vec<(&str, &str)> = readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            flag.starts_with("--")
                .then(|| (flag, *cells.get(3).unwrap_or(&"")))
        })
        .collect();
    assert!(
        table.len() >= 10,
        "the README lists the serve flags: {table:?}"
    );
    for (flag, readme_default) in &table {
        let block = help
            .split("\n  -")
            .chain(help.split("\n      --"))
            .find(|block| block.trim_start_matches('-').starts_with(&flag[2..]))
            .unwrap_or_else(|| panic!("{flag} is in the README but not in serve --help"));
        let help_default = block
            .split("[default: ")
            .nth(1)
            .and_then(|rest| rest.split(']').next());
        let readme_default = readme_default.trim_matches('`').replace(',', "");
        match help_default {
            Some(value) => assert_eq!(
                value, readme_default,
                "{flag}: --help says {value}, the README says {readme_default}"
            ),
            None => assert!(
                !readme_default.chars().all(|c| c.is_ascii_digit()),
                "{flag}: the README gives a default ({readme_default}) that --help does not"
            ),
        }
    }
    for line in help.lines() {
        let Some(flag) = line.trim_start().strip_prefix("--") else {
            continue;
        };
        let flag = format!("--{}", flag.split([' ', '=']).next().unwrap_or_default());
        if flag == "--help" {
            continue;
        }
        assert!(
            table.iter().any(|(listed, _)| *listed == flag),
            "{flag} is in serve --help but not in the README's configuration table"
        );
    }
}

/// `publish` and `subscribe` speak https with `--ca-cert`: against `serve --dev-tls`, trusting
/// the certificate it made; without `--ca-cert` the certificate is not trusted.
#[test]
fn the_commands_speak_https_with_a_ca_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = binary()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--dev-tls",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(["--signing-key", "k", "--api-key", "a"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("durable-iterator listening on ")
        .expect("the address first")
        .to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}");
    let cert = dir.path().join("dev-tls-cert.pem");
    let publish = |trust: bool| {
        let mut command = binary();
        command
            .args(["publish", "--server", &url, "--api-key", "a"])
            .args(["--channel", "secure", "--json", "{\"n\":1}"]);
        if trust {
            command.arg("--ca-cert").arg(&cert);
        }
        command.output().unwrap()
    };
    let trusted = publish(true);
    let stderr = String::from_utf8_lossy(&trusted.stderr);
    assert!(trusted.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&trusted.stdout).trim().is_empty());
    let untrusted = publish(false);
    assert!(!untrusted.status.success());

    // A subscriber over https prints the event published after it connected.
    let mut subscriber = binary()
        .args(["subscribe", "--server", &url, "--channel", "secure"])
        .args(["--signing-key", "k", "--ca-cert"])
        .arg(&cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut notices = BufReader::new(subscriber.stderr.take().unwrap()).lines();
    let connected = notices.next().unwrap().unwrap();
    assert!(connected.starts_with("{\"connected\""), "{connected}");
    let published = publish(true);
    let id = String::from_utf8_lossy(&published.stdout).trim().to_owned();
    // Read on a thread of its own, so a missing event fails the test instead of hanging it.
    let stdout = subscriber.stdout.take().unwrap();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout).lines().next();
        let _ = sender.send(line);
    });
    let line = received
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the event within 30 s");
    let event: Value = serde_json::from_str(&line.unwrap().unwrap()).unwrap();
    assert_eq!(event["id"], json!(id));
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    let _ = server.kill();
    let _ = server.wait();
}

/// With no API key configured, the generated one is written inside the data directory,
/// readable by this user only: two servers on one host do not share (or overwrite) one file.
#[test]
fn a_generated_api_key_is_written_in_the_data_directory_for_this_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory"])
        .args(["--signing-key", "k", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let key_file = data.join("dev-api-key");
    let publish_line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("DurableIteratorAdmin/Publish"));
    let _ = child.kill();
    let _ = child.wait();
    let publish_line = publish_line.expect("the walk-through's publish command");
    assert!(
        publish_line.contains(&key_file.display().to_string()),
        "{publish_line}"
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().len(), 64);
}
