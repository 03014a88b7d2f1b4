//! The benchmark suite of durable-iterator: the load generator, the servers it starts, and the
//! table it prints. See `BENCHMARKS.md` at the repository root.
//!
//! Every server runs as a child process on a random loopback port: the product (the release
//! `durable-iterator` binary, redb store, tokens and a tag filter on every event), the bare
//! tonic ceiling (`durable-iterator-bench baseline-server`), and nats-server. The load runs in
//! this process, so publish and delivery times come from one clock.
//!
//! Two scenarios measure the product against itself, in the same run: `tls` (plaintext, then
//! a second product server with `--dev-tls`, reached over TLS) and `gzip` (subscribers that do
//! not, then do, accept gzip). They are printed in a table of their own, with the figure
//! without the feature, the figure with it, and their ratio.
//!
//! Two groups set the product beside other durable systems: `redis` (the product's Redis store
//! against its redb store, on one node and across two, and redis-server's own ceiling; only
//! when asked for) and `peers` (see [`peers`]: NATS JetStream and Redis Streams, each
//! acknowledging after its own durable write, the same shapes as the product's; in their own
//! table, with a ratio per peer).
//!
//! The soak (`soak`, see [`soak`]) is never part of the default set: it runs only when asked
//! for (`--only soak`), for 30 minutes unless told otherwise, and prints tables of its own.

pub mod baseline;
pub mod frame;
pub mod load;
pub mod peers;
mod redis_rows;
pub mod scenarios;
pub mod servers;
pub mod soak;
pub mod stages;

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use scenarios::{FanOut, FanOutPlan, Layout, System};
use serde::Serialize;

/// Sizes and switches of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `durable-iterator` binary.
    pub server_binary: PathBuf,
    /// The `durable-iterator-bench` binary (it serves the baseline).
    pub bench_binary: PathBuf,
    /// (subscribers, events per publish call: 1 is `Publish`, more is `PublishBatch`)
    pub fan_out: Vec<(usize, usize)>,
    pub fan_out_duration: Duration,
    pub fan_out_max_events: u64,
    /// Connections the "shared" layout spreads sessions over.
    pub shared_connections: usize,
    /// (events per second, subscribers, events)
    pub latency: Vec<(u64, usize, u64)>,
    /// The latency case (events per second, subscribers) whose product server also times its
    /// stages (`latency stages` rows, see [`stages`]).
    pub latency_stages: Option<(u64, usize)>,
    pub idle_sessions: usize,
    /// (publishers, calls in flight each, events per call)
    pub publishers: Vec<(usize, usize, usize)>,
    pub publish_duration: Duration,
    pub publish_max_events: u64,
    pub storm_sessions: usize,
    /// (sessions, events of the gap each resumes) of the resume-memory scenario.
    pub resume_memory: (usize, u64),
    pub storm_missed: u64,
    /// `tls`: fan-out subscriber counts, each over the shared connections and with one
    /// connection per session; idle memory uses `idle_sessions`.
    pub tls_fan_out: Vec<usize>,
    /// `gzip`: fan-out cases (subscribers, payload bytes), over the shared connections.
    pub gzip: Vec<(usize, usize)>,
    /// `peers`: consumer counts of the fan-out rows (over the shared connections).
    pub peers_fan_out: Vec<usize>,
    /// `peers`: retained events replayed to one reader.
    pub replay_events: u64,
    /// `redis`: requests of each redis-benchmark run of the ceiling row.
    pub ceiling_requests: u64,
    /// Run the nats-server reference.
    pub nats: bool,
    /// Run the bare tonic reference.
    pub baseline: bool,
    /// Run only these scenarios (`fan-out`, `latency`, `idle`, `publish`, `storm`,
    /// `resume-memory`, `tls`, `gzip`, `peers`, `redis`, `soak`); empty: all but `redis` and
    /// `soak`.
    pub only: Vec<String>,
    /// The soak, when `only` asks for it.
    pub soak: soak::SoakPlan,
    /// More arguments for every product server the scenarios start (not the soak's).
    pub server_args: Vec<String>,
}

impl Config {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.asks_for(scenario)
    }

    /// Whether `only` names `scenario` (the soak runs only then).
    pub fn asks_for(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }
}

impl Config {
    /// The full run, as in `BENCHMARKS.md`.
    pub fn full(server_binary: PathBuf, bench_binary: PathBuf) -> Self {
        Self {
            server_binary,
            bench_binary,
            fan_out: vec![(1, 1), (1, 100), (100, 1), (1_000, 1), (1_000, 100)],
            fan_out_duration: Duration::from_secs(4),
            fan_out_max_events: u64::MAX,
            shared_connections: 4,
            latency: vec![(1_000, 1_000, 5_000), (10_000, 100, 50_000)],
            latency_stages: Some((10_000, 100)),
            idle_sessions: 10_000,
            publishers: vec![(1, 1, 1), (16, 1, 1), (16, 64, 1), (16, 4, 100)],
            publish_duration: Duration::from_secs(3),
            publish_max_events: u64::MAX,
            storm_sessions: 10_000,
            resume_memory: (20, 300_000),
            storm_missed: 100,
            tls_fan_out: vec![1_000],
            gzip: vec![(1_000, 100), (1_000, 4_096), (100, 4_096)],
            peers_fan_out: vec![1, 100, 1_000],
            replay_events: 100_000,
            ceiling_requests: 200_000,
            nats: true,
            baseline: true,
            only: Vec::new(),
            soak: soak::SoakPlan::full(1_800),
            server_args: Vec::new(),
        }
    }

    /// Every scenario at a tiny size, without nats (the CI smoke test).
    pub fn smoke(server_binary: PathBuf, bench_binary: PathBuf) -> Self {
        Self {
            server_binary,
            bench_binary,
            fan_out: vec![(2, 1), (2, 5)],
            fan_out_duration: Duration::from_secs(20),
            fan_out_max_events: 50,
            shared_connections: 2,
            latency: vec![(500, 2, 50)],
            latency_stages: Some((500, 2)),
            idle_sessions: 20,
            publishers: vec![(1, 1, 1), (2, 1, 1), (2, 2, 5)],
            publish_duration: Duration::from_secs(20),
            publish_max_events: 50,
            storm_sessions: 10,
            resume_memory: (2, 200),
            storm_missed: 5,
            tls_fan_out: vec![2],
            gzip: vec![(2, 100), (2, 4_096)],
            peers_fan_out: vec![2],
            replay_events: 200,
            ceiling_requests: 2_000,
            nats: false,
            baseline: true,
            only: Vec::new(),
            soak: soak::SoakPlan::smoke(),
            server_args: Vec::new(),
        }
    }
}

/// One line of the table. Ratios are the product's figure over the reference's.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub case: String,
    pub unit: String,
    pub product: Option<f64>,
    pub baseline: Option<f64>,
    pub nats: Option<f64>,
    pub vs_baseline: Option<f64>,
    pub vs_nats: Option<f64>,
    /// What the product's run should have counted and what it counted.
    pub expected: u64,
    pub counted: u64,
    pub note: String,
    pub errors: Vec<String>,
    /// Set when the row compares the product with itself (`tls`, `gzip`): then `product` is
    /// the figure with the feature, and this holds the same measurement without it.
    pub variant: Option<Variant>,
    /// Set on the rows of `peers`: the same measurement against the durable peers, in the same
    /// run (`product` is the product's figure).
    pub peers: Option<peers::Peers>,
}

/// The other half of a row that compares the product with itself, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// What `Row::product` was measured with: `TLS`, `gzip`.
    pub with: String,
    /// What `without` was measured with: `plaintext`, `no gzip`.
    pub without_label: String,
    /// The figure without the feature.
    pub without: Option<f64>,
    /// `Row::product` / `without`: what the feature costs (or saves).
    pub ratio: Option<f64>,
    /// What the run without the feature should have counted and what it counted.
    pub expected: u64,
    pub counted: u64,
}

impl Row {
    /// A row comparing the product `with` a feature against itself `without` it.
    fn versus(
        scenario: &str,
        case: impl Into<String>,
        unit: &str,
        without: &str,
        with: &str,
    ) -> Self {
        Self {
            variant: Some(Variant {
                with: with.into(),
                without_label: without.into(),
                without: None,
                ratio: None,
                expected: 0,
                counted: 0,
            }),
            ..Self::new(scenario, case, unit)
        }
    }

    /// For a `versus` row: the figure of the run with the feature, or without it.
    fn set(&mut self, with: bool, value: Option<f64>, expected: u64, counted: u64) {
        match (&mut self.variant, with) {
            (Some(variant), false) => {
                variant.without = value;
                variant.expected = expected;
                variant.counted = counted;
            }
            _ => {
                self.product = value;
                self.expected = expected;
                self.counted = counted;
            }
        }
    }

    fn new(scenario: &str, case: impl Into<String>, unit: &str) -> Self {
        Self {
            scenario: scenario.into(),
            case: case.into(),
            unit: unit.into(),
            product: None,
            baseline: None,
            nats: None,
            vs_baseline: None,
            vs_nats: None,
            expected: 0,
            counted: 0,
            note: String::new(),
            errors: Vec::new(),
            variant: None,
            peers: None,
        }
    }

    fn ratios(mut self) -> Self {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        self.vs_baseline = ratio(self.product, self.baseline);
        self.vs_nats = ratio(self.product, self.nats);
        if let Some(variant) = &mut self.variant {
            variant.ratio = ratio(self.product, variant.without);
        }
        if let Some(peers) = &mut self.peers {
            peers.set_ratios(self.product);
        }
        self
    }

    fn note(&mut self, text: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(text.as_ref());
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: String,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    /// The soak's findings, when it ran.
    pub soak: Option<soak::SoakReport>,
}

/// CPU time this process has used, in seconds.
pub fn load_cpu_seconds() -> f64 {
    servers::process_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| format!(", {} GiB RAM", kb / (1 << 20)));
    format!("{cpu}, {cores} cores{memory}; server and load generator share them, loopback")
}

/// Runs every scenario; prints progress on stderr. Never fails on a number: a scenario that
/// could not run says why in its row.
pub async fn run(config: &Config) -> Report {
    let mut notes = Vec::new();
    let fds = servers::raise_fd_limit();
    notes.push(format!("open-file limit {fds}"));
    // Only fan-out, latency and idle memory compare with nats-server.
    let wants_nats = ["fan-out", "latency", "idle"]
        .iter()
        .any(|scenario| config.runs(scenario));
    let nats_binary = if config.nats && wants_nats {
        match servers::find_or_install_nats() {
            Ok(path) => Some(path),
            Err(why) => {
                let line = format!("nats column skipped: {why}");
                eprintln!("{line}");
                notes.push(line);
                None
            }
        }
    } else {
        notes.push(
            "nats column skipped: not requested (smoke mode, --no-nats, or no scenario that compares with it)"
                .into(),
        );
        None
    };
    let mut rows = Vec::new();

    // Fan-out.
    let fan_out: &[(usize, usize)] = if config.runs("fan-out") {
        &config.fan_out
    } else {
        &[]
    };
    for &(subscribers, batch) in fan_out {
        let mut layouts = vec![Layout::Shared(config.shared_connections)];
        if subscribers > 1 {
            layouts.push(Layout::PerSession);
        }
        for layout in layouts {
            let case = format!(
                "{subscribers} sub{}, {}{}",
                if subscribers == 1 { "" } else { "s" },
                layout.describe(),
                if batch > 1 {
                    format!(", {batch}/call")
                } else {
                    String::new()
                }
            );
            eprintln!("fan-out: {case}");
            let mut row = Row::new("fan-out", case, "delivered events/s");
            let plan = FanOutPlan {
                batch,
                ..FanOutPlan::new(
                    subscribers,
                    layout,
                    config.fan_out_duration,
                    config.fan_out_max_events,
                )
            };
            for system in systems(config, nats_binary.is_some()) {
                let result = match start(config, system, nats_binary.as_ref()) {
                    Ok(server) => scenarios::fan_out(system, &server, &plan).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(outcome) => {
                        let rate = Some(outcome.rate());
                        let expected = outcome.expected(subscribers);
                        row.note(fan_out_note(system_name(system), &outcome, subscribers));
                        match system {
                            System::Product => {
                                row.product = rate;
                                row.expected = expected;
                                row.counted = outcome.delivered;
                            }
                            System::Baseline => row.baseline = rate,
                            System::Nats => row.nats = rate,
                        }
                    }
                    Err(e) => row.errors.push(format!("{}: {e}", system_name(system))),
                }
            }
            rows.push(row.ratios());
        }
    }

    // Latency.
    let latency: &[(u64, usize, u64)] = if config.runs("latency") {
        &config.latency
    } else {
        &[]
    };
    for &(rate, subscribers, events) in latency {
        let case = format!("{rate} ev/s to {subscribers} subs");
        eprintln!("latency: {case}");
        let mut quantiles: Vec<Row> = ["p50", "p99", "p99.9"]
            .iter()
            .map(|q| Row::new("latency", format!("{case}, {q}"), "ms"))
            .collect();
        let timed = config.latency_stages == Some((rate, subscribers));
        let mut stage_rows = Vec::new();
        for system in systems(config, nats_binary.is_some()) {
            let result = if timed && system == System::Product {
                timed_latency(config, subscribers, rate, events, &mut stage_rows).await
            } else {
                match start(config, system, nats_binary.as_ref()) {
                    Ok(server) => {
                        scenarios::latency(system, &server, subscribers, rate, events).await
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(latency) => {
                    let expected = latency.published * subscribers as u64;
                    for (row, q) in quantiles.iter_mut().zip([0.5, 0.99, 0.999]) {
                        let value = latency.quantile_ms(q);
                        match system {
                            System::Product => {
                                row.product = value;
                                row.expected = events * subscribers as u64;
                                row.counted = latency.delivered;
                            }
                            System::Baseline => row.baseline = value,
                            System::Nats => row.nats = value,
                        }
                        if latency.failed > 0 {
                            row.note(format!(
                                "{}: {} publishes FAILED (first: {})",
                                system_name(system),
                                latency.failed,
                                latency.first_failure.as_deref().unwrap_or("?")
                            ));
                        }
                        if latency.delivered < expected {
                            row.note(format!(
                                "{}: LOST {} of {expected}",
                                system_name(system),
                                expected - latency.delivered
                            ));
                        }
                    }
                }
                Err(e) => {
                    for row in &mut quantiles {
                        row.errors.push(format!("{}: {e}", system_name(system)));
                    }
                }
            }
        }
        rows.extend(quantiles.into_iter().map(Row::ratios));
        rows.extend(stage_rows);
    }

    // Idle memory.
    let idle_layouts = if config.runs("idle") {
        vec![
            Layout::Shared(config.shared_connections),
            Layout::PerSession,
        ]
    } else {
        Vec::new()
    };
    for layout in idle_layouts {
        let case = format!("{} sessions, {}", config.idle_sessions, layout.describe());
        eprintln!("idle memory: {case}");
        let mut row = Row::new("idle memory", case, "bytes/session");
        let mut systems = vec![System::Product];
        if config.baseline {
            systems.push(System::Baseline);
        }
        for system in systems {
            let result = match start(config, system, None) {
                Ok(server) => {
                    scenarios::idle_memory(system, &server, config.idle_sessions, layout).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(memory) => {
                    let value = Some(memory.per_session_bytes());
                    row.note(format!(
                        "{}: RSS {:.1} -> {:.1} MiB",
                        system_name(system),
                        memory.rss_before as f64 / 1048576.0,
                        memory.rss_after as f64 / 1048576.0
                    ));
                    if system == System::Product {
                        row.product = value;
                        row.expected = memory.sessions;
                        row.counted = memory.opened;
                    } else {
                        row.baseline = value;
                    }
                }
                Err(e) => row.errors.push(format!("{}: {e}", system_name(system))),
            }
        }
        rows.push(row.ratios());
    }

    // Durable publish.
    let publishers: &[(usize, usize, usize)] = if config.runs("publish") {
        &config.publishers
    } else {
        &[]
    };
    for &(publishers, in_flight, batch) in publishers {
        let case = publish_case(publishers, in_flight, batch);
        eprintln!("durable publish: {case}");
        let mut row = Row::new("durable publish (redb)", case, "acked events/s");
        // The bare tonic server takes the very same load with no store: the stack's ceiling.
        let mut systems = vec![System::Product];
        if config.baseline {
            systems.push(System::Baseline);
        }
        for system in systems {
            let result = match start(config, system, None) {
                Ok(server) => {
                    scenarios::durable_publish(
                        &server,
                        publishers,
                        in_flight,
                        batch,
                        config.publish_duration,
                        config.publish_max_events,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(publish) => {
                    let expected = if config.publish_max_events == u64::MAX {
                        publish.acknowledged
                    } else {
                        config.publish_max_events
                    };
                    row.note(publish_note(system_name(system), &publish, expected));
                    if system == System::Product {
                        row.product = Some(publish.rate());
                        row.counted = publish.acknowledged;
                        row.expected = expected;
                    } else {
                        row.baseline = Some(publish.rate());
                    }
                }
                Err(e) => row.errors.push(format!("{}: {e}", system_name(system))),
            }
        }
        rows.push(row.ratios());
    }

    // Resume storm, and the memory of long resumes.
    if config.runs("storm") {
        rows.push(storm_row(config).await);
    }
    if config.runs("resume-memory") {
        rows.extend(resume_memory_rows(config).await);
    }

    // Durable peers: JetStream and Redis Streams beside the product.
    if config.runs("peers") {
        rows.extend(peers::peer_rows(config, &mut notes).await);
    }

    // The Redis store against the embedded one.
    if config.asks_for("redis") {
        rows.extend(redis_rows::redis_rows(config, &mut notes).await);
    }

    // The product against itself: TLS, gzip.
    if config.runs("tls") {
        rows.extend(tls_rows(config).await);
    }
    if config.runs("gzip") {
        rows.extend(gzip_rows(config).await);
    }

    let soak = if config.asks_for("soak") {
        match soak::soak(&config.server_binary, &config.soak).await {
            Ok(report) => Some(report),
            Err(e) => {
                let line = format!("soak: ERROR {e}");
                eprintln!("{line}");
                notes.push(line);
                None
            }
        }
    } else {
        None
    };

    Report {
        machine: machine(),
        notes,
        rows,
        soak,
    }
}

/// How a durable publish shape is named in the table.
pub(crate) fn publish_case(publishers: usize, in_flight: usize, batch: usize) -> String {
    let mut case = if in_flight == 1 {
        format!(
            "{publishers} publisher{}",
            if publishers == 1 { "" } else { "s" }
        )
    } else {
        format!("{publishers} publishers x {in_flight} in flight")
    };
    if batch > 1 {
        case.push_str(&format!(", {batch}/call"));
    }
    case
}

/// A fan-out run's `details`: what was published, the CPU each side used, and any loss.
pub(crate) fn fan_out_note(tag: &str, outcome: &FanOut, subscribers: usize) -> String {
    let expected = outcome.expected(subscribers);
    let seconds = outcome.seconds.max(1e-9);
    format!(
        "{tag}: {} events, {:.1}s, server {:.2} cores ({:.0} ns per delivery), load {:.2} cores{}",
        outcome.published,
        outcome.seconds,
        outcome.server_cpu_seconds.unwrap_or(0.0) / seconds,
        outcome.server_ns_per_delivery().unwrap_or(0.0),
        outcome.load_cpu_seconds / seconds,
        if outcome.delivered < expected {
            format!(", LOST {} of {expected}", expected - outcome.delivered)
        } else {
            String::new()
        }
    )
}

/// A durable publish run's `details`: what was acknowledged, the CPU each side used, and what
/// a bounded run left unacknowledged.
fn publish_note(tag: &str, publish: &scenarios::DurablePublish, expected: u64) -> String {
    let seconds = publish.seconds.max(1e-9);
    let server = match (publish.server_cpu_seconds, publish.server_ns_per_event()) {
        (Some(cpu), Some(ns)) => format!(
            "server {:.2} cores ({:.2} µs per acknowledged event)",
            cpu / seconds,
            ns / 1e3
        ),
        _ => "server CPU unknown".to_owned(),
    };
    format!(
        "{tag}: {} events, {:.1}s, {server}, load {:.2} cores{}",
        publish.acknowledged,
        publish.seconds,
        publish.load_cpu_seconds.unwrap_or(0.0) / seconds,
        if publish.acknowledged < expected {
            format!(
                ", {} of {expected} unacknowledged",
                expected - publish.acknowledged
            )
        } else {
            String::new()
        }
    )
}

/// One product server (plaintext, or TLS with `--dev-tls`) and one fan-out run against it.
async fn product_fan_out(config: &Config, tls: bool, plan: &FanOutPlan) -> Result<FanOut, String> {
    let server = servers::start_product(&config.server_binary, tls, &config.server_args)?;
    scenarios::fan_out(System::Product, &server, plan).await
}

/// What TLS costs: the same fan-out and idle-memory runs against a plaintext product server
/// and against a second one serving TLS (`--dev-tls`, its own data directory), every
/// connection of the load client (subscribers and publishers) over TLS.
async fn tls_rows(config: &Config) -> Vec<Row> {
    const WITHOUT: &str = "plaintext";
    const WITH: &str = "TLS";
    let label = |tls: bool| if tls { WITH } else { WITHOUT };
    let layouts = [
        Layout::Shared(config.shared_connections),
        Layout::PerSession,
    ];
    let mut rows = Vec::new();
    for &subscribers in &config.tls_fan_out {
        for layout in layouts {
            let case = format!("fan-out {subscribers} subs, {}", layout.describe());
            eprintln!("tls: {case}");
            let plan = FanOutPlan::new(
                subscribers,
                layout,
                config.fan_out_duration,
                config.fan_out_max_events,
            );
            let mut rate = Row::versus("tls", &case, "delivered events/s", WITHOUT, WITH);
            let mut cpu = Row::versus(
                "tls",
                format!("{case}, server CPU"),
                "server ns/delivery",
                WITHOUT,
                WITH,
            );
            for tls in [false, true] {
                match product_fan_out(config, tls, &plan).await {
                    Ok(outcome) => {
                        rate.note(fan_out_note(label(tls), &outcome, subscribers));
                        let expected = outcome.expected(subscribers);
                        rate.set(tls, Some(outcome.rate()), expected, outcome.delivered);
                        let ns = outcome.server_ns_per_delivery();
                        cpu.set(tls, ns, expected, outcome.delivered);
                    }
                    Err(e) => {
                        rate.errors.push(format!("{}: {e}", label(tls)));
                        cpu.errors.push(format!("{}: {e}", label(tls)));
                    }
                }
            }
            rate.note(
                "TLS: a second server with --dev-tls; subscribers and publishers over TLS 1.3 \
                 (rustls with ring at both ends, so TLS_AES_256_GCM_SHA384, ECDSA P-256)",
            );
            rows.push(rate.ratios());
            rows.push(cpu.ratios());
        }
    }
    for layout in layouts {
        let case = format!(
            "idle {} sessions, {}",
            config.idle_sessions,
            layout.describe()
        );
        eprintln!("tls: {case}");
        let mut row = Row::versus("tls", case, "bytes/session", WITHOUT, WITH);
        for tls in [false, true] {
            let result =
                match servers::start_product(&config.server_binary, tls, &config.server_args) {
                    Ok(server) => {
                        scenarios::idle_memory(
                            System::Product,
                            &server,
                            config.idle_sessions,
                            layout,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
            match result {
                Ok(memory) => {
                    row.note(format!(
                        "{}: RSS {:.1} -> {:.1} MiB",
                        label(tls),
                        memory.rss_before as f64 / 1048576.0,
                        memory.rss_after as f64 / 1048576.0
                    ));
                    let value = Some(memory.per_session_bytes());
                    row.set(tls, value, memory.sessions, memory.opened);
                }
                Err(e) => row.errors.push(format!("{}: {e}", label(tls))),
            }
        }
        rows.push(row.ratios());
    }
    rows
}

/// What gzip costs: fan-out to subscribers that do not, then do, send `grpc-accept-encoding:
/// gzip` (the product compresses events of at least 1 KiB, once per batch for all of them, and
/// sends smaller ones as they are), with `load::text_payload`'s JSON-like text.
async fn gzip_rows(config: &Config) -> Vec<Row> {
    const WITHOUT: &str = "no gzip";
    const WITH: &str = "gzip";
    let label = |gzip: bool| if gzip { WITH } else { WITHOUT };
    let mut rows = Vec::new();
    for &(subscribers, bytes) in &config.gzip {
        let layout = Layout::Shared(config.shared_connections);
        let case = format!("{subscribers} subs, {}, {bytes} B", layout.describe());
        eprintln!("gzip: {case}");
        let mut plan = FanOutPlan {
            payload: load::text_payload(0, bytes),
            ..FanOutPlan::new(
                subscribers,
                layout,
                config.fan_out_duration,
                config.fan_out_max_events,
            )
        };
        let mut rate = Row::versus("gzip", &case, "delivered events/s", WITHOUT, WITH);
        let mut cpu = Row::versus("gzip", &case, "server ns/delivery", WITHOUT, WITH);
        let mut wire = Row::versus("gzip", &case, "gRPC bytes/delivery", WITHOUT, WITH);
        for gzip in [false, true] {
            plan.accept_gzip = gzip;
            match product_fan_out(config, false, &plan).await {
                Ok(outcome) => {
                    rate.note(fan_out_note(label(gzip), &outcome, subscribers));
                    let expected = outcome.expected(subscribers);
                    let delivered = outcome.delivered;
                    rate.set(gzip, Some(outcome.rate()), expected, delivered);
                    cpu.set(gzip, outcome.server_ns_per_delivery(), expected, delivered);
                    let per_event = Some(outcome.bytes_per_delivery());
                    wire.set(gzip, per_event, expected, delivered);
                }
                Err(e) => {
                    for row in [&mut rate, &mut cpu, &mut wire] {
                        row.errors.push(format!("{}: {e}", label(gzip)));
                    }
                }
            }
        }
        let (plain, gzipped) = (wire.variant.as_ref().and_then(|v| v.without), wire.product);
        if let (Some(plain), Some(gzipped)) = (plain, gzipped)
            && (gzipped - plain).abs() <= plain * 0.005
        {
            rate.note(
                "nothing was compressed (the product sends events under 1 KiB as they are): \
                 this is what accepting gzip costs when it does not apply",
            );
        }
        wire.note(
            "bytes of the subscribers' DATA frames per delivered event: gRPC messages with their \
             5-byte headers; HTTP/2 frame headers not counted",
        );
        rows.extend([rate.ratios(), cpu.ratios(), wire.ratios()]);
    }
    rows
}

async fn storm_row(config: &Config) -> Row {
    let case = format!(
        "{} sessions x {} missed events",
        config.storm_sessions, config.storm_missed
    );
    eprintln!("resume storm: {case}");
    let mut row = Row::new("resume storm", case, "s until all caught up");
    let result = match start(config, System::Product, None) {
        Ok(server) => {
            scenarios::resume_storm(&server, config.storm_sessions, config.storm_missed).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(storm) => {
            row.product = Some(storm.seconds);
            row.expected = storm.sessions * storm.missed;
            row.counted = storm.delivered;
            row.note(format!(
                "{} of {} sessions caught up; {:.0} replayed events/s",
                storm.caught_up,
                storm.sessions,
                storm.delivered as f64 / storm.seconds.max(1e-9)
            ));
        }
        Err(e) => row.errors.push(format!("product: {e}")),
    }
    row
}

async fn resume_memory_rows(config: &Config) -> Vec<Row> {
    let (sessions, gap) = config.resume_memory;
    let case = format!("{sessions} sessions x {gap} events at once");
    eprintln!("resume memory: {case}");
    let mut peak = Row::new("resume memory", format!("{case}, peak"), "MiB above before");
    let mut after = Row::new(
        "resume memory",
        format!("{case}, closed"),
        "MiB above before",
    );
    let mut time = Row::new("resume memory", case, "s until all caught up");
    let result = match start(config, System::Product, None) {
        Ok(server) => scenarios::resume_memory(&server, sessions, gap).await,
        Err(e) => Err(e),
    };
    let mib = |bytes: u64, base: u64| bytes.saturating_sub(base) as f64 / (1 << 20) as f64;
    match result {
        Ok(memory) => {
            peak.product = Some(mib(memory.rss_peak, memory.rss_before));
            after.product = Some(mib(memory.rss_after, memory.rss_before));
            time.product = Some(memory.seconds);
            for row in [&mut peak, &mut after, &mut time] {
                row.expected = memory.sessions * memory.gap;
                row.counted = memory.delivered;
            }
            peak.note(format!(
                "server RSS {:.0} MiB before, {:.0} MiB at the peak (sampled every 50 ms), {:.1} MiB per resuming session",
                mib(memory.rss_before, 0),
                mib(memory.rss_peak, 0),
                mib(memory.rss_peak, memory.rss_before) / memory.sessions.max(1) as f64
            ));
        }
        Err(e) => {
            for row in [&mut peak, &mut after, &mut time] {
                row.errors.push(format!("product: {e}"));
            }
        }
    }
    vec![peak, after, time]
}

fn systems(config: &Config, nats: bool) -> Vec<System> {
    let mut systems = vec![System::Product];
    if config.baseline {
        systems.push(System::Baseline);
    }
    if nats {
        systems.push(System::Nats);
    }
    systems
}

fn system_name(system: System) -> &'static str {
    match system {
        System::Product => "product",
        System::Baseline => "bare tonic",
        System::Nats => "nats",
    }
}

/// The product's latency run of the `latency_stages` case, on a server that times its stages:
/// their p50 and p99 as rows (observations of the warm-up included).
async fn timed_latency(
    config: &Config,
    subscribers: usize,
    rate: u64,
    events: u64,
    rows: &mut Vec<Row>,
) -> Result<scenarios::Latency, String> {
    let port = servers::free_port()?;
    let mut args = config.server_args.clone();
    args.extend(stages::server_args(port));
    let server = servers::start_product(&config.server_binary, false, &args)?;
    let latency = scenarios::latency(System::Product, &server, subscribers, rate, events).await?;
    let case = format!("{rate} ev/s to {subscribers} subs");
    match stages::scrape(port).await {
        Ok(scraped) => {
            for ((stage, name), buckets) in stages::STAGES.iter().zip(&scraped) {
                let counted = stages::count(buckets);
                // One observation per publish call; the other stages count batches and
                // commits, which group commit makes fewer than the events.
                let expected = match *stage {
                    "received_to_committed" => latency.published,
                    _ => counted,
                };
                for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
                    let case = format!("{case}, {name} {label}");
                    let mut row = Row::new("latency stages", case, "ms");
                    row.product = stages::quantile_ms(buckets, q);
                    row.expected = expected;
                    row.counted = counted;
                    rows.push(row);
                }
            }
        }
        Err(e) => {
            let mut row = Row::new("latency stages", case, "ms");
            row.errors.push(e);
            rows.push(row);
        }
    }
    Ok(latency)
}

fn start(
    config: &Config,
    system: System,
    nats: Option<&PathBuf>,
) -> Result<servers::Server, String> {
    match system {
        System::Product => {
            servers::start_product(&config.server_binary, false, &config.server_args)
        }
        System::Baseline => servers::start_baseline(&config.bench_binary),
        System::Nats => servers::start_nats(nats.ok_or("no nats-server")?),
    }
}

/// The table, for a terminal.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "machine: {}", report.machine);
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let plain = |r: &&Row| r.variant.is_none() && r.peers.is_none();
    if report.rows.iter().any(|r| plain(&r)) {
        let _ = writeln!(
            out,
            "\n{:<24} {:<36} {:>13} {:>13} {:>7} {:>13} {:>7}  unit",
            "scenario", "case", "product", "bare tonic", "x base", "nats", "x nats"
        );
    }
    let number = |v: Option<f64>| match v {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
    };
    // Three decimals below 0.1, so that a small share still reads as a number.
    let ratio = |v: Option<f64>| match v {
        None => "-".to_owned(),
        Some(v) if v.abs() < 0.1 => format!("{v:.3}"),
        Some(v) => format!("{v:.2}"),
    };
    for row in report.rows.iter().filter(plain) {
        let _ = writeln!(
            out,
            "{:<24} {:<36} {:>13} {:>13} {:>7} {:>13} {:>7}  {}",
            row.scenario,
            row.case,
            number(row.product),
            number(row.baseline),
            ratio(row.vs_baseline),
            number(row.nats),
            ratio(row.vs_nats),
            row.unit
        );
    }
    // Durable peers: the product's figure and each peer's, with product / peer.
    if report.rows.iter().any(|r| r.peers.is_some()) {
        let _ = writeln!(
            out,
            "\ndurable peers (same run, each acknowledging after its own write; x = product / peer):"
        );
        let _ = writeln!(
            out,
            "{:<24} {:<44} {:>13} {:>13} {:>7} {:>13} {:>7}  unit",
            "scenario",
            "case",
            "product",
            peers::JETSTREAM,
            "x JS",
            peers::REDIS_STREAMS,
            "x Redis"
        );
    }
    for row in &report.rows {
        let Some(peers) = &row.peers else {
            continue;
        };
        let value =
            |figure: &Option<peers::PeerFigure>| number(figure.as_ref().and_then(|f| f.value));
        let times =
            |figure: &Option<peers::PeerFigure>| ratio(figure.as_ref().and_then(|f| f.ratio));
        let _ = writeln!(
            out,
            "{:<24} {:<44} {:>13} {:>13} {:>7} {:>13} {:>7}  {}",
            row.scenario,
            row.case,
            number(row.product),
            value(&peers.jetstream),
            times(&peers.jetstream),
            value(&peers.redis_streams),
            times(&peers.redis_streams),
            row.unit
        );
    }
    // The product against itself: a header for each pair of conditions.
    let mut header = None;
    for row in &report.rows {
        let Some(variant) = &row.variant else {
            continue;
        };
        let labels = (variant.without_label.as_str(), variant.with.as_str());
        if header != Some(labels) {
            if header.is_none() {
                let _ = writeln!(
                    out,
                    "\nside by side (same run, same binary; ratio = right / left: with / without \
                     a feature, Redis / redb, two nodes / one):"
                );
            }
            header = Some(labels);
            let _ = writeln!(
                out,
                "{:<24} {:<44} {:>13} {:>13} {:>7}  unit",
                "scenario", "case", labels.0, labels.1, "ratio",
            );
        }
        let _ = writeln!(
            out,
            "{:<24} {:<44} {:>13} {:>13} {:>7}  {}",
            row.scenario,
            row.case,
            number(variant.without),
            number(row.product),
            ratio(variant.ratio),
            row.unit
        );
    }
    if let Some(soak) = &report.soak {
        let _ = writeln!(out, "\n{}", soak.markdown());
    }
    if report.rows.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\ndetails:");
    for row in &report.rows {
        if !row.note.is_empty() || !row.errors.is_empty() {
            // Rows against the product itself share a case between units: name the unit.
            let unit = if row.variant.is_some() {
                format!(" ({})", row.unit)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {} / {}{unit}: {}", row.scenario, row.case, row.note);
            for error in &row.errors {
                let _ = writeln!(out, "    ERROR {error}");
            }
        }
    }
    out
}

/// How long a run took, for the report's notes.
pub fn elapsed_note(started: Instant) -> String {
    format!("run took {:.0} s", started.elapsed().as_secs_f64())
}
