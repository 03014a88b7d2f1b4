//! A `redis-server` for tests: the Redis store's own, and the integration tests' (which include
//! this file).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` of the test's own, on a free loopback port, killed when dropped.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// Keeps its data across restarts (append-only file, fsync always).
    persistent: bool,
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart is a flush.
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    /// A server with `appendonly yes` and `appendfsync always`: a restart keeps every write.
    #[allow(dead_code)]
    pub(crate) fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // redis-server cannot take port 0: take a free one, and try again if another process
        // takes it first.
        for _ in 0..10 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|listener| listener.local_addr())
                .unwrap()
                .port();
            let mut child = spawn(port, dir.path(), persistent);
            if wait_until_up(&mut child, port) {
                return Self {
                    child,
                    port,
                    dir,
                    persistent,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start on a free port");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory, after [`RedisServer::kill`].
    #[allow(dead_code)]
    pub(crate) fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(self.port, self.dir.path(), self.persistent);
            if wait_until_up(&mut self.child, self.port) {
                return;
            }
            // The port may linger for a moment after the kill.
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(port: u16, dir: &Path, persistent: bool) -> Child {
    let persistence: &[&str] = if persistent {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--protected-mode", "no"])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed by the Redis store's tests (apt-get install redis-server)")
}

fn wait_until_up(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
