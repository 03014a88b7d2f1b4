//! A `redis-server` for tests: the Redis store's own, and the integration tests' (which include
//! this file).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` of the test's own, on a free loopback port, killed when dropped.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    setup: Setup,
}

/// What kind of server it is.
#[derive(Clone)]
enum Setup {
    /// Plaintext; `persistent` keeps its data across restarts (append-only file, fsync always).
    Plain { persistent: bool },
    /// TLS only (no plaintext port), with a certificate for 127.0.0.1 signed by a CA of the
    /// test's own; `auth_clients` asks clients for a certificate of that CA.
    Tls { auth_clients: bool },
    /// A replica of the server on this port.
    ReplicaOf(u16),
}

/// The files of a TLS server: its CA (which also signs the client certificate), and a client
/// certificate and key.
#[allow(dead_code)]
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart is a flush.
    pub(crate) fn start() -> Self {
        Self::start_with(Setup::Plain { persistent: false })
    }

    /// A server with `appendonly yes` and `appendfsync always`: a restart keeps every write.
    #[allow(dead_code)]
    pub(crate) fn start_persistent() -> Self {
        Self::start_with(Setup::Plain { persistent: true })
    }

    /// A server on a TLS port only, its certificate signed by the CA of [`RedisServer::tls_files`];
    /// with `auth_clients`, it refuses clients without a certificate of that CA.
    #[allow(dead_code)]
    pub(crate) fn start_tls(auth_clients: bool) -> Self {
        Self::start_with(Setup::Tls { auth_clients })
    }

    /// A replica of `primary` (see [`RedisServer::wait_for_replicas`] for when it has caught up).
    #[allow(dead_code)]
    pub(crate) fn start_replica_of(primary: &RedisServer) -> Self {
        Self::start_with(Setup::ReplicaOf(primary.port))
    }

    fn start_with(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Setup::Tls { .. } = setup {
            write_certificates(dir.path());
        }
        // redis-server cannot take port 0: take a free one, and try again if another process
        // takes it first.
        for _ in 0..10 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|listener| listener.local_addr())
                .unwrap()
                .port();
            let mut child = spawn(port, dir.path(), &setup);
            if wait_until_up(&mut child, port) {
                return Self {
                    child,
                    port,
                    dir,
                    setup,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start on a free port");
    }

    /// `redis://` or, for a TLS server, `rediss://` 127.0.0.1 and its port.
    pub(crate) fn url(&self) -> String {
        let scheme = match self.setup {
            Setup::Tls { .. } => "rediss",
            _ => "redis",
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The CA and client certificate of a TLS server.
    #[allow(dead_code)]
    pub(crate) fn tls_files(&self) -> TlsFiles {
        let path = |name: &str| self.dir.path().join(name);
        TlsFiles {
            ca: path("ca.pem"),
            client_cert: path("client.pem"),
            client_key: path("client-key.pem"),
        }
    }

    /// Waits (up to 30 s) until `count` replicas are connected and have caught up with this
    /// primary (`state=online` in `INFO replication`), panicking if they do not.
    #[allow(dead_code)]
    pub(crate) fn wait_for_replicas(&self, count: usize) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut connection)
                .unwrap();
            let online = info
                .lines()
                .filter(|line| line.starts_with("slave") && line.contains("state=online"))
                .count();
            if online >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{count} replicas did not catch up: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process (SIGSTOP) without closing its connections: a replica that lags.
    #[allow(dead_code)]
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    #[allow(dead_code)]
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the server again on the same port and directory, after [`RedisServer::kill`].
    #[allow(dead_code)]
    pub(crate) fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(self.port, self.dir.path(), &self.setup);
            if wait_until_up(&mut self.child, self.port) {
                return;
            }
            // The port may linger for a moment after the kill.
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(port: u16, dir: &Path, setup: &Setup) -> Child {
    let mut command = Command::new("redis-server");
    command.args([
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]);
    match setup {
        Setup::Plain { persistent: true } => {
            command.args(["--port", &port.to_string()]);
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        Setup::Plain { persistent: false } => {
            command.args(["--port", &port.to_string(), "--appendonly", "no"]);
        }
        Setup::Tls { auth_clients } => {
            let auth = if *auth_clients { "yes" } else { "no" };
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-auth-clients", auth, "--appendonly", "no"])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server-key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.pem"));
        }
        Setup::ReplicaOf(primary) => {
            command
                .args(["--port", &port.to_string(), "--appendonly", "no"])
                .args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
    }
    command
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed by the Redis store's tests (apt-get install redis-server)")
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signs, in `dir`.
fn write_certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL (Redis's side) takes a certificate whose subject is its
    // issuer's for a self-signed one.
    ca_params.distinguished_name = distinguished_name("durable-iterator test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, subject) in [("server", "127.0.0.1"), ("client", "client")] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![subject.to_owned()]).unwrap();
        params.distinguished_name = distinguished_name(subject);
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

fn distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    name
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
