//! The real `durable-iterator serve` binary as a child process, on its on-disk store.

use std::{
    io::{BufRead, BufReader, Lines},
    path::Path,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio},
};

use durable_iterator::{
    Keyring,
    clock::{Clock, SystemClock},
    pb,
    token::{self, TokenClaims},
};
use tonic::transport::Channel;

pub(crate) const CHILD_SIGNING_KEY: &str = "child-signing-key";
pub(crate) const CHILD_API_KEY: &str = "child-api-key";

/// A server process, killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    pub addr: String,
    // Kept open: the server may still write to its stdout.
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ServerProcess {
    /// `serve` on `listen` with the store in `data_dir`, keys known to the tests, an hour of
    /// retention.
    pub(crate) fn command(data_dir: &Path, listen: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_durable-iterator"));
        command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args([
                "--signing-key",
                CHILD_SIGNING_KEY,
                "--api-key",
                CHILD_API_KEY,
            ])
            .args([
                "--retention-seconds",
                "3600",
                "--shutdown-grace-seconds",
                "5",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    /// Starts the server and waits for the line that names its address.
    pub(crate) fn start(data_dir: &Path, listen: &str) -> Self {
        Self::spawn(Self::command(data_dir, listen))
    }

    /// Starts `command` (from [`ServerProcess::command`], with more arguments or environment)
    /// and waits for the line that names its address.
    pub(crate) fn spawn(command: Command) -> Self {
        Self::spawn_with_stderr(command, Stdio::inherit()).0
    }

    /// As [`ServerProcess::spawn`], with the server's stderr (its log) to read.
    pub(crate) fn spawn_logging(command: Command) -> (Self, ChildStderr) {
        let (server, stderr) = Self::spawn_with_stderr(command, Stdio::piped());
        (server, stderr.unwrap())
    }

    fn spawn_with_stderr(mut command: Command, stderr: Stdio) -> (Self, Option<ChildStderr>) {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server prints its address before anything else")
                .unwrap();
            if let Some(addr) = line.strip_prefix("durable-iterator listening on ") {
                break addr.to_owned();
            }
        };
        let server = Self {
            child,
            addr,
            stdout: lines,
        };
        (server, stderr)
    }

    /// Where `GET /metrics` is, as a server started with `--metrics-listen` prints it after
    /// its address.
    pub(crate) fn metrics_url(&mut self) -> String {
        loop {
            let line = self
                .stdout
                .next()
                .expect("the server prints its metrics address")
                .unwrap();
            if let Some(url) = line.strip_prefix("durable-iterator metrics on ") {
                return url.to_owned();
            }
        }
    }

    /// Sends `signal` (e.g. `-HUP`) without waiting for anything.
    pub(crate) fn send(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// SIGKILL: no shutdown path runs.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (e.g. `-TERM`) and waits for the process to exit.
    pub(crate) fn signal(&mut self, signal: &str) {
        self.send(signal);
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token for `channel`, signed with the child's key, valid for an hour of real time.
pub(crate) fn child_token(channel: &str) -> String {
    let keyring = Keyring::new([CHILD_SIGNING_KEY]).unwrap();
    token::sign(
        &keyring,
        &TokenClaims::new(channel, SystemClock.now_secs(), 3_600),
    )
}

/// A `Publish` of `payload` with the child's API key.
pub(crate) fn child_publish(
    channel: &str,
    payload: serde_json::Value,
) -> tonic::Request<pb::PublishRequest> {
    let mut request = tonic::Request::new(super::publish_request(channel, payload));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {CHILD_API_KEY}").parse().unwrap(),
    );
    request
}
