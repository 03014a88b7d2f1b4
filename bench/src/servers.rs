//! The servers under test, each a child process on a random loopback port, killed when dropped.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The signing key and admin API key the benchmark gives the product server.
pub const SIGNING_KEY: &str = "62656e63686d61726b2d7369676e696e672d6b65792d3031";
pub const API_KEY: &str = "bench-api-key";

use tonic::transport::Certificate;

use crate::load::Target;

/// A server child process; killed (and reaped) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The certificate to trust when the server speaks TLS (the product with `--dev-tls`).
    pub tls: Option<Certificate>,
    /// Holds the product's data directory for as long as the server runs.
    dir: Option<tempfile::TempDir>,
}

impl Server {
    /// How the load client reaches it.
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            tls: self.tls.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> Option<u64> {
        process_rss_bytes(self.pid())
    }

    /// CPU time (user + system) the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.pid())
    }

    /// The product's data directory (`--data-dir`), for servers that have one.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.path().join("data"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of a process, in seconds.
/// The resident memory of process `pid`, in bytes.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// Starts a server that prints `... listening on ADDR` on stdout and waits for that line.
fn spawn_announcing(
    mut command: Command,
    what: &str,
    dir: Option<tempfile::TempDir>,
) -> Result<Server, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
                sent = true;
            }
            // Keep reading so the child never blocks on a full pipe.
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not announce its address within 30 s"));
        }
    };
    let addr = line
        .parse()
        .map_err(|e| format!("{what} printed an odd address {line:?}: {e}"))?;
    Ok(Server {
        child,
        addr,
        tls: None,
        dir,
    })
}

/// How the product server is started (besides its keys, loopback port and temp data directory).
#[derive(Debug, Clone)]
pub struct ProductOptions {
    /// Serve TLS with the self-signed certificate `--dev-tls` makes in the data directory.
    pub tls: bool,
    /// `--subscriber-queue`: events a subscriber may have unread before it is a slow consumer.
    pub subscriber_queue: usize,
    /// `--heartbeat-seconds`; `None`: the server's default.
    pub heartbeat_seconds: Option<u64>,
    /// `--retention-seconds`; `None`: the server's default.
    pub retention_seconds: Option<u64>,
    /// `--store redis --redis-url URL`; `None`: the embedded redb store.
    pub redis_url: Option<String>,
    /// More arguments of `serve`, e.g. `--metrics-listen=127.0.0.1:9464` (what they cost is
    /// measured by running with and without them).
    pub extra_args: Vec<String>,
}

impl ProductOptions {
    /// What the throughput scenarios run against: their subscribers keep up by construction
    /// (the publisher waits for them), so a deep queue keeps a momentary lag from ending a
    /// stream as a slow consumer, and heartbeats stay out of the way.
    pub fn benchmark(tls: bool) -> Self {
        Self {
            tls,
            subscriber_queue: 1_000_000,
            heartbeat_seconds: Some(300),
            retention_seconds: None,
            redis_url: None,
            extra_args: Vec::new(),
        }
    }
}

/// The product: the `durable-iterator` binary with the embedded (redb) store. With `tls`, it
/// serves TLS on its port with the self-signed certificate `--dev-tls` makes in its (own)
/// data directory, which the returned server's `tls` trusts.
pub fn start_product(binary: &Path, tls: bool, extra_args: &[String]) -> Result<Server, String> {
    let options = ProductOptions {
        extra_args: extra_args.to_vec(),
        ..ProductOptions::benchmark(tls)
    };
    start_product_with(binary, &options)
}

/// The product, started with `options`.
pub fn start_product_with(binary: &Path, options: &ProductOptions) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let data = dir.path().join("data");
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--signing-key", SIGNING_KEY, "--api-key", API_KEY])
        .arg("--subscriber-queue")
        .arg(options.subscriber_queue.to_string())
        .args(["--shutdown-grace-seconds", "1"])
        .env("RUST_LOG", "warn");
    match &options.redis_url {
        Some(url) => command.args(["--store", "redis", "--redis-url", url]),
        None => command.args(["--store", "redb"]),
    };
    if let Some(seconds) = options.heartbeat_seconds {
        command.arg("--heartbeat-seconds").arg(seconds.to_string());
    }
    if let Some(seconds) = options.retention_seconds {
        command.arg("--retention-seconds").arg(seconds.to_string());
    }
    if options.tls {
        command.arg("--dev-tls");
    }
    command.args(&options.extra_args);
    let mut server = spawn_announcing(command, "durable-iterator", Some(dir))?;
    if options.tls {
        // Written before the server binds its port, so there once it has announced it.
        let cert = data.join("dev-tls-cert.pem");
        let pem = std::fs::read(&cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        server.tls = Some(Certificate::from_pem(pem));
    }
    Ok(server)
}

/// The bare tonic ceiling: `durable-iterator-bench baseline-server`.
pub fn start_baseline(bench_binary: &Path) -> Result<Server, String> {
    let mut command = Command::new(bench_binary);
    command.args(["baseline-server", "--listen", "127.0.0.1:0"]);
    spawn_announcing(command, "the bare tonic baseline", None)
}

/// nats-server on a free loopback port.
pub fn start_nats(binary: &Path) -> Result<Server, String> {
    let port = free_port()?;
    let mut command = Command::new(binary);
    command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    spawn_on_port(command, port, "nats-server", None)
}

/// nats-server with JetStream on a free loopback port, its store in a temp directory (removed
/// with the server). nats-server 2.9 writes each stored message to its file before the
/// acknowledgement and fsyncs every 2 minutes, with no setting for more (`sync_interval`
/// arrived in 2.10): see BENCHMARKS.md, "Durable peers".
pub fn start_jetstream(binary: &Path) -> Result<Server, String> {
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let mut command = Command::new(binary);
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path());
    spawn_on_port(command, port, "nats-server -js", Some(dir))
}

/// A free loopback port, for servers that cannot be told to take port 0.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Starts `command`, quiet, and waits (15 s at most) until it accepts connections on `port`.
fn spawn_on_port(
    mut command: Command,
    port: u16,
    what: &str,
    dir: Option<tempfile::TempDir>,
) -> Result<Server, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not accept connections within 15 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server {
        child,
        addr,
        tls: None,
        dir,
    })
}

/// redis-server on a free loopback port, acknowledging writes only once they are in its
/// append-only file on disk (`appendfsync always`): the durability the redb store gives.
pub fn start_redis() -> Result<Server, String> {
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let binary = find_binary("redis-server").unwrap_or_else(|| "redis-server".into());
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir.path());
    spawn_on_port(
        command,
        port,
        "redis-server (apt-get install redis-server)",
        Some(dir),
    )
}

/// Finds nats-server; installs the Debian package when running as root with apt. `Err` says why
/// the nats column is skipped.
pub fn find_or_install_nats() -> Result<PathBuf, String> {
    if let Some(found) = find_nats() {
        return Ok(found);
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = Path::new("/usr/bin/apt-get").exists();
    if !root || !apt {
        return Err(format!(
            "nats-server is not installed and cannot be installed here ({}); install the Debian \
             package `nats-server` to get the nats column",
            if !apt { "no apt-get" } else { "not root" }
        ));
    }
    eprintln!("nats-server not found: running `apt-get install -y nats-server`");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "nats-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        // A fresh machine may have no package lists yet.
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    find_nats().ok_or_else(|| "`apt-get install -y nats-server` did not provide nats-server".into())
}

fn find_nats() -> Option<PathBuf> {
    find_binary("nats-server")
}

/// An installed program: on `PATH`, or in the system directories a Debian package puts it in
/// (nats-server is in `/usr/sbin`, which a user's `PATH` may leave out).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Raises this process's open-file limit to its hard limit (children inherit it): a session per
/// connection needs one descriptor per session on each side.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the calls to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}
