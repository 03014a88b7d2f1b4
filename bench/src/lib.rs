//! The benchmark suite of durable-iterator: the load generator, the servers it starts, and the
//! table it prints. See `BENCHMARKS.md` at the repository root.
//!
//! Every server runs as a child process on a random loopback port: the product (the release
//! `durable-iterator` binary, redb store, tokens and a tag filter on every event), the bare
//! tonic ceiling (`durable-iterator-bench baseline-server`), and nats-server. The load runs in
//! this process, so publish and delivery times come from one clock.

pub mod baseline;
pub mod frame;
pub mod load;
pub mod scenarios;
pub mod servers;

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use scenarios::{Layout, System};
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
    pub idle_sessions: usize,
    /// (publishers, calls in flight each, events per call)
    pub publishers: Vec<(usize, usize, usize)>,
    pub publish_duration: Duration,
    pub publish_max_events: u64,
    pub storm_sessions: usize,
    pub storm_missed: u64,
    /// Run the nats-server reference.
    pub nats: bool,
    /// Run the bare tonic reference.
    pub baseline: bool,
    /// Run only these scenarios (`fan-out`, `latency`, `idle`, `publish`, `storm`); empty: all.
    pub only: Vec<String>,
}

impl Config {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
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
            idle_sessions: 10_000,
            publishers: vec![(1, 1, 1), (16, 1, 1), (16, 64, 1), (16, 4, 100)],
            publish_duration: Duration::from_secs(3),
            publish_max_events: u64::MAX,
            storm_sessions: 10_000,
            storm_missed: 100,
            nats: true,
            baseline: true,
            only: Vec::new(),
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
            idle_sessions: 20,
            publishers: vec![(1, 1, 1), (2, 1, 1), (2, 2, 5)],
            publish_duration: Duration::from_secs(20),
            publish_max_events: 50,
            storm_sessions: 10,
            storm_missed: 5,
            nats: false,
            baseline: true,
            only: Vec::new(),
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
}

impl Row {
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
        }
    }

    fn ratios(mut self) -> Self {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        self.vs_baseline = ratio(self.product, self.baseline);
        self.vs_nats = ratio(self.product, self.nats);
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
    let nats_binary = if config.nats {
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
        notes.push("nats column skipped: not requested (smoke mode or --no-nats)".into());
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
            for system in systems(config, nats_binary.is_some()) {
                let result = match start(config, system, nats_binary.as_ref()) {
                    Ok(server) => {
                        scenarios::fan_out(
                            system,
                            &server,
                            subscribers,
                            layout,
                            config.fan_out_duration,
                            config.fan_out_max_events,
                            batch,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(outcome) => {
                        let rate = Some(outcome.rate());
                        let expected = outcome.expected(subscribers);
                        let cpu = outcome
                            .server_cpu_seconds
                            .map(|c| c / outcome.seconds.max(1e-9));
                        let tag = system_name(system);
                        row.note(format!(
                            "{tag}: {} events, {:.1}s, server {:.2} cores ({:.0} ns per delivery), \
                             load {:.2} cores{}",
                            outcome.published,
                            outcome.seconds,
                            cpu.unwrap_or(0.0),
                            outcome.server_cpu_seconds.unwrap_or(0.0) * 1e9
                                / outcome.delivered.max(1) as f64,
                            outcome.load_cpu_seconds / outcome.seconds.max(1e-9),
                            if outcome.delivered < expected {
                                format!(", LOST {} of {expected}", expected - outcome.delivered)
                            } else {
                                String::new()
                            }
                        ));
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
        for system in systems(config, nats_binary.is_some()) {
            let result = match start(config, system, nats_binary.as_ref()) {
                Ok(server) => scenarios::latency(system, &server, subscribers, rate, events).await,
                Err(e) => Err(e),
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
        eprintln!("durable publish: {case}");
        let mut row = Row::new("durable publish (redb)", case, "acked events/s");
        let result = match start(config, System::Product, None) {
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
                row.product = Some(publish.acknowledged as f64 / publish.seconds.max(1e-9));
                row.counted = publish.acknowledged;
                row.expected = if config.publish_max_events == u64::MAX {
                    publish.acknowledged
                } else {
                    config.publish_max_events
                };
            }
            Err(e) => row.errors.push(format!("product: {e}")),
        }
        rows.push(row);
    }

    // Resume storm.
    if config.runs("storm") {
        rows.push(storm_row(config).await);
    }

    Report {
        machine: machine(),
        notes,
        rows,
    }
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

fn start(
    config: &Config,
    system: System,
    nats: Option<&PathBuf>,
) -> Result<servers::Server, String> {
    match system {
        System::Product => servers::start_product(&config.server_binary),
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
    let _ = writeln!(
        out,
        "\n{:<24} {:<36} {:>13} {:>13} {:>7} {:>13} {:>7}  unit",
        "scenario", "case", "product", "bare tonic", "x base", "nats", "x nats"
    );
    let number = |v: Option<f64>| match v {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
    };
    let ratio = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    for row in &report.rows {
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
    let _ = writeln!(out, "\ndetails:");
    for row in &report.rows {
        if !row.note.is_empty() || !row.errors.is_empty() {
            let _ = writeln!(out, "  {} / {}: {}", row.scenario, row.case, row.note);
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
