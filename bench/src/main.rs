//! `durable-iterator-bench`: builds the server in release mode, starts it (and the references) on
//! loopback, drives the load from this process, prints a table and writes JSON.
//!
//!     cargo run --release -p durable-iterator-bench -- --json target/bench.json
//!
//! Figures never fail a run. The soak (`--only soak`) is the exception for correctness: the
//! exit code is 2 when it lost, repeated or reordered events, saw an unexpected status, or
//! could not run.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use clap::{Parser, Subcommand, ValueEnum};
use durable_iterator_bench::{Config, baseline, elapsed_note, run, table};

#[derive(Parser)]
#[command(about = "Benchmarks durable-iterator against a bare tonic server and nats-server.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
    /// How big a run: `full` (the figures of BENCHMARKS.md, a few minutes) or `smoke` (every
    /// scenario at a tiny size, seconds).
    #[arg(long, value_enum, default_value_t = Size::Full)]
    size: Size,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
    /// The `durable-iterator` binary to measure; by default it is built with
    /// `cargo build --release --bin durable-iterator`.
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Leave out the nats-server reference.
    #[arg(long)]
    no_nats: bool,
    /// Leave out the bare tonic reference.
    #[arg(long)]
    no_baseline: bool,
    /// Fan-out subscriber counts, comma separated (overrides the size's).
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// With --subscribers: events per publish call, comma separated (more than 1 uses
    /// PublishBatch); every subscriber count runs with every batch size.
    #[arg(long, value_delimiter = ',', default_value = "1",
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    batch: Vec<u16>,
    /// Latency cases as RATE:SUBSCRIBERS:EVENTS, comma separated (overrides the size's).
    #[arg(long, value_delimiter = ',')]
    latency: Vec<String>,
    /// `tls` fan-out subscriber counts, comma separated (overrides the size's).
    #[arg(long, value_delimiter = ',')]
    tls_subscribers: Vec<usize>,
    /// `gzip` cases as SUBSCRIBERS:PAYLOAD_BYTES, comma separated (overrides the size's).
    #[arg(long, value_delimiter = ',')]
    gzip: Vec<String>,
    /// Idle sessions of the `idle` and `tls` memory cases (overrides the size's).
    #[arg(long)]
    idle_sessions: Option<usize>,
    /// Run only these scenarios, comma separated: fan-out, latency, idle, publish, storm,
    /// resume-memory (long resumes at once, server RSS), tls
    /// (the product plaintext and over TLS), gzip (subscribers without and with gzip), soak
    /// (mixed load for --soak-seconds: memory, file size, loss; only run when named here),
    /// peers (NATS JetStream and Redis Streams beside the product: acknowledged publishes,
    /// fan-out, replay; each peer runs when its server is installed), redis (the Redis store
    /// against redb, on one node and across two, and redis-server's ceiling; only when named
    /// here).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// How long the soak's load runs, in seconds (with `--only soak`; default 1800, 5 with
    /// `--size smoke`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    soak_seconds: Option<u64>,
    /// Events per second of the soak over all its channels, invokes included (with
    /// `--only soak`; default 1000, 300 with `--size smoke`).
    #[arg(long)]
    soak_rate: Option<f64>,
    /// One more argument for the product servers of the scenarios, repeatable, e.g.
    /// `--server-arg=--metrics-listen=127.0.0.1:0` to measure what metrics cost.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

#[derive(Subcommand)]
enum Commands {
    /// Serves the bare tonic baseline (started by the benchmark itself).
    #[command(hide = true)]
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    Full,
    Smoke,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Some(Commands::BaselineServer { listen }) = cli.command {
        return match runtime.block_on(baseline::serve(listen)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let server_binary = match cli.server_binary {
        Some(path) => path,
        None => match build_server() {
            Ok(path) => path,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let bench_binary = std::env::current_exe().expect("own path");
    let mut config = match cli.size {
        Size::Full => Config::full(server_binary, bench_binary),
        Size::Smoke => Config::smoke(server_binary, bench_binary),
    };
    config.nats &= !cli.no_nats;
    config.baseline &= !cli.no_baseline;
    if !cli.subscribers.is_empty() {
        config.fan_out = cli
            .subscribers
            .into_iter()
            .flat_map(|subscribers| {
                cli.batch
                    .iter()
                    .map(move |&batch| (subscribers, usize::from(batch)))
            })
            .collect();
    }
    config.only = cli.only;
    config.server_args = cli.server_arg;
    if let Some(seconds) = cli.soak_seconds {
        config.soak = config.soak.with_duration(seconds);
    }
    if let Some(rate) = cli.soak_rate {
        if !(rate.is_finite() && rate >= 1.0) {
            eprintln!("error: --soak-rate takes events per second, at least 1");
            return std::process::ExitCode::FAILURE;
        }
        config.soak.events_per_second = rate;
        config.soak.invokes_per_second = config.soak.invokes_per_second.min(rate / 2.0);
    }
    if !cli.tls_subscribers.is_empty() {
        config.tls_fan_out = cli.tls_subscribers;
    }
    if let Some(sessions) = cli.idle_sessions {
        config.idle_sessions = sessions.max(1);
    }
    if !cli.gzip.is_empty() {
        let parsed: Option<Vec<(usize, usize)>> = cli
            .gzip
            .iter()
            .map(|case| {
                let (subscribers, bytes) = case.split_once(':')?;
                let bytes: usize = bytes.parse().ok()?;
                // The payload carries a 24-byte timestamp; the server takes up to 64 KiB.
                (24..=65_536)
                    .contains(&bytes)
                    .then_some((subscribers.parse().ok()?, bytes))
            })
            .collect();
        match parsed {
            Some(cases) => config.gzip = cases,
            None => {
                eprintln!("error: --gzip takes SUBSCRIBERS:PAYLOAD_BYTES (24 to 65536 bytes)");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if !cli.latency.is_empty() {
        let parsed: Option<Vec<(u64, usize, u64)>> = cli
            .latency
            .iter()
            .map(|case| {
                let mut parts = case.split(':').map(str::parse::<u64>);
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(Ok(r)), Some(Ok(s)), Some(Ok(e))) => Some((r, s as usize, e)),
                    _ => None,
                }
            })
            .collect();
        match parsed {
            Some(cases) => config.latency = cases,
            None => {
                eprintln!("error: --latency takes RATE:SUBSCRIBERS:EVENTS");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let started = Instant::now();
    let mut report = runtime.block_on(run(&config));
    report.notes.push(elapsed_note(started));
    print!("{}", table(&report));
    if let Some(dir) = cli.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(
        &cli.json,
        serde_json::to_string_pretty(&report).expect("serializable"),
    ) {
        Ok(()) => println!("JSON written to {}", cli.json.display()),
        Err(e) => eprintln!("cannot write {}: {e}", cli.json.display()),
    }
    // Speed is never judged; the soak's lost events and unexpected statuses are correctness.
    if config.asks_for("soak") && report.soak.as_ref().is_none_or(|soak| soak.failed()) {
        return std::process::ExitCode::from(2);
    }
    std::process::ExitCode::SUCCESS
}

/// Builds the server in release mode and returns its path.
fn build_server() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the server: cargo build --release --bin durable-iterator");
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "durable-iterator"])
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release --bin durable-iterator failed".into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("release").join("durable-iterator"))
}
