//! The Redis store against the embedded one, in the same run: durable publishes, fan-out and
//! publish-to-delivery latency on one node; the same fan-out with the subscribers spread over
//! two nodes sharing one Redis, and the same latency from a publish on one node to subscribers
//! on the other; and redis-server's own ceiling, with the store's publish rate as a share of it.
//!
//! Both stores acknowledge only what is on disk: redb fsyncs each group commit, Redis runs with
//! `appendonly yes` and `appendfsync always`.

use std::{process::Command, time::Duration};

use crate::{
    Config, Layout, Row,
    scenarios::{self, FanOut, FanOutPlan, Latency, System},
    servers::{self, ProductOptions, Server},
};

const WITHOUT: &str = "redb";
const WITH: &str = "Redis";
const ONE_NODE: &str = "one node";
const TWO_NODES: &str = "two nodes";
const ACROSS: &str = "A to B";

/// A product node on `redis` (or on redb when `None`).
fn node(config: &Config, redis: Option<&Server>) -> Result<Server, String> {
    let options = ProductOptions {
        redis_url: redis.map(|redis| format!("redis://{}/0", redis.addr)),
        ..ProductOptions::benchmark(false)
    };
    servers::start_product_with(&config.server_binary, &options)
}

/// Where a measurement runs: one node on redb, one node on Redis, or two nodes on one Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nodes {
    OneOnRedb,
    OneOnRedis,
    TwoOnRedis,
}

impl Nodes {
    const ALL: [Nodes; 3] = [Nodes::OneOnRedb, Nodes::OneOnRedis, Nodes::TwoOnRedis];

    fn describe(self) -> &'static str {
        match self {
            Nodes::OneOnRedb => "one node on redb",
            Nodes::OneOnRedis => "one node on Redis",
            Nodes::TwoOnRedis => "two nodes on one Redis",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Nodes::OneOnRedb => WITHOUT,
            Nodes::OneOnRedis => WITH,
            Nodes::TwoOnRedis => TWO_NODES,
        }
    }
}

/// The servers of one measurement, killed when dropped: node A (the publisher's), node B when
/// there are two, and the Redis they share.
struct Cluster {
    a: Server,
    b: Option<Server>,
    _redis: Option<Server>,
}

impl Cluster {
    fn start(config: &Config, nodes: Nodes) -> Result<Self, String> {
        let redis = match nodes {
            Nodes::OneOnRedb => None,
            Nodes::OneOnRedis | Nodes::TwoOnRedis => Some(servers::start_redis()?),
        };
        let a = node(config, redis.as_ref())?;
        let b = match nodes {
            Nodes::TwoOnRedis => Some(node(config, redis.as_ref())?),
            Nodes::OneOnRedb | Nodes::OneOnRedis => None,
        };
        Ok(Self {
            a,
            b,
            _redis: redis,
        })
    }

    /// Where a fan-out's subscribers go: B first, so that a single subscriber is on the other
    /// node than the publisher, and half of an even number on each.
    fn spread(&self) -> Vec<&Server> {
        match &self.b {
            Some(b) => vec![b, &self.a],
            None => vec![&self.a],
        }
    }
}

/// One run's figure, for [`Pair::record`].
struct Figure {
    value: Option<f64>,
    expected: u64,
    counted: u64,
    note: String,
}

/// A case's two rows: redb against Redis on one node, and Redis on one node against two.
struct Pair {
    stores: Row,
    nodes: Row,
}

impl Pair {
    /// Puts one run's figure (or why there is none) where it belongs: the redb run in `stores`,
    /// the one-node Redis run in both rows, the two-node run in `nodes`.
    fn record(&mut self, nodes: Nodes, figure: Result<Figure, String>) {
        let places: Vec<(&mut Row, bool)> = match nodes {
            Nodes::OneOnRedb => vec![(&mut self.stores, false)],
            Nodes::OneOnRedis => vec![(&mut self.stores, true), (&mut self.nodes, false)],
            Nodes::TwoOnRedis => vec![(&mut self.nodes, true)],
        };
        for (row, with) in places {
            match &figure {
                Ok(figure) => {
                    row.set(with, figure.value, figure.expected, figure.counted);
                    if !figure.note.is_empty() {
                        row.note(&figure.note);
                    }
                }
                Err(e) => row.errors.push(format!("{}: {e}", nodes.label())),
            }
        }
    }
}

/// The subscriber counts of the fan-out cases (`--subscribers`), each once.
fn fan_out_sizes(config: &Config) -> Vec<usize> {
    let mut sizes = Vec::new();
    for &(subscribers, _) in &config.fan_out {
        if !sizes.contains(&subscribers) {
            sizes.push(subscribers);
        }
    }
    sizes
}

/// Every `redis` row; none, with a note in `notes`, when redis-server is not installed.
pub(crate) async fn redis_rows(config: &Config, notes: &mut Vec<String>) -> Vec<Row> {
    if servers::find_binary("redis-server").is_none() {
        let line = "redis rows skipped: redis-server is not installed (Debian package \
                    redis-server)";
        eprintln!("{line}");
        notes.push(line.into());
        return Vec::new();
    }
    let mut rows = Vec::new();
    // What the Redis store acknowledged per shape, for its share of redis-server's ceiling.
    let mut redis_publish = Vec::new();
    for &(publishers, in_flight, batch) in &config.publishers {
        let case = format!("publish: {publishers} x {in_flight} in flight, {batch}/call");
        eprintln!("redis: {case}");
        let mut row = Row::versus("redis", &case, "acked events/s", WITHOUT, WITH);
        for nodes in [Nodes::OneOnRedb, Nodes::OneOnRedis] {
            let result = async {
                let cluster = Cluster::start(config, nodes)?;
                scenarios::durable_publish(
                    &cluster.a,
                    publishers,
                    in_flight,
                    batch,
                    config.publish_duration,
                    config.publish_max_events,
                )
                .await
            }
            .await;
            let with_redis = nodes == Nodes::OneOnRedis;
            match result {
                Ok(publish) => {
                    let rate = publish.acknowledged as f64 / publish.seconds.max(1e-9);
                    let expected = if config.publish_max_events == u64::MAX {
                        publish.acknowledged
                    } else {
                        config.publish_max_events
                    };
                    row.set(with_redis, Some(rate), expected, publish.acknowledged);
                }
                Err(e) => row.errors.push(format!("{}: {e}", nodes.label())),
            }
        }
        redis_publish.push((case, row.product, row.expected, row.counted));
        rows.push(row.ratios());
    }

    // Fan-out: redb and Redis on one node, then Redis on one node and on two.
    let mut across = Vec::new();
    for subscribers in fan_out_sizes(config) {
        let case = format!("fan-out {subscribers} subs");
        let plan = FanOutPlan::new(
            subscribers,
            Layout::Shared(config.shared_connections),
            config.fan_out_duration,
            config.fan_out_max_events,
        );
        let pair = |suffix: &str, unit: &str| Pair {
            stores: Row::versus(
                "redis",
                format!("{case}, one node{suffix}"),
                unit,
                WITHOUT,
                WITH,
            ),
            nodes: Row::versus(
                "redis",
                format!("{case} on Redis{suffix}"),
                unit,
                ONE_NODE,
                TWO_NODES,
            ),
        };
        let mut pair_rate = pair("", "delivered events/s");
        // The steadier figure when other work shares the machine.
        let mut pair_cpu = pair(", server CPU", "server ns/delivery");
        for nodes in Nodes::ALL {
            eprintln!("redis: {case}, {}", nodes.describe());
            let result = async {
                let cluster = Cluster::start(config, nodes)?;
                let subscribe_on = cluster.spread();
                scenarios::fan_out_across(System::Product, &cluster.a, &subscribe_on, &plan).await
            }
            .await;
            let figure = |outcome: &FanOut, value: Option<f64>, note: bool| Figure {
                value,
                expected: outcome.expected(subscribers),
                counted: outcome.delivered,
                note: if note {
                    crate::fan_out_note(nodes.label(), outcome, subscribers)
                } else {
                    String::new()
                },
            };
            pair_rate.record(
                nodes,
                result
                    .as_ref()
                    .map_err(Clone::clone)
                    .map(|outcome| figure(outcome, Some(outcome.rate()), true)),
            );
            pair_cpu.record(
                nodes,
                result
                    .as_ref()
                    .map_err(Clone::clone)
                    .map(|outcome| figure(outcome, outcome.server_ns_per_delivery(), false)),
            );
        }
        pair_rate.nodes.note(format!(
            "two nodes on one Redis: the publisher on node A, the subscribers alternately on B \
             and A ({} on B), {} connections to each",
            subscribers.div_ceil(2),
            config.shared_connections
        ));
        pair_cpu
            .stores
            .note("the product server's CPU time per delivery; redis-server's not counted");
        pair_cpu
            .nodes
            .note("both nodes' CPU time per delivery; redis-server's not counted");
        rows.extend([pair_rate.stores.ratios(), pair_cpu.stores.ratios()]);
        across.extend([pair_rate.nodes.ratios(), pair_cpu.nodes.ratios()]);
    }

    // Latency at a fixed rate: redb and Redis on one node, then Redis from node A to node B.
    for &(rate, subscribers, events) in &config.latency {
        let case = format!("latency {rate} ev/s to {subscribers} subs");
        let quantiles = [("p50", 0.5), ("p99", 0.99)];
        let mut pairs = quantiles.map(|(q, _)| Pair {
            stores: Row::versus(
                "redis",
                format!("{case}, {q}, one node"),
                "ms",
                WITHOUT,
                WITH,
            ),
            nodes: Row::versus(
                "redis",
                format!("{case}, {q} on Redis"),
                "ms",
                ONE_NODE,
                ACROSS,
            ),
        });
        for nodes in Nodes::ALL {
            eprintln!("redis: {case}, {}", nodes.describe());
            let result = async {
                let cluster = Cluster::start(config, nodes)?;
                // Across nodes every subscriber is on B; on one node, on A with the publisher.
                let subscribe_on = [cluster.b.as_ref().unwrap_or(&cluster.a)];
                scenarios::latency_across(
                    System::Product,
                    &cluster.a,
                    &subscribe_on,
                    subscribers,
                    rate,
                    events,
                )
                .await
            }
            .await;
            let tag = match nodes {
                Nodes::TwoOnRedis => ACROSS,
                Nodes::OneOnRedb | Nodes::OneOnRedis => nodes.label(),
            };
            for (pair, (_, q)) in pairs.iter_mut().zip(quantiles) {
                pair.record(
                    nodes,
                    result.as_ref().map_err(Clone::clone).map(|latency| Figure {
                        value: latency.quantile_ms(q),
                        expected: events * subscribers as u64,
                        counted: latency.delivered,
                        note: latency_note(tag, latency, subscribers),
                    }),
                );
            }
        }
        for pair in pairs {
            let mut nodes_row = pair.nodes;
            nodes_row.note(
                "A to B: two nodes on one Redis, every Publish on node A, every subscriber on \
                 node B",
            );
            rows.push(pair.stores.ratios());
            across.push(nodes_row.ratios());
        }
    }
    rows.extend(across);

    let (ceiling, xadd) = ceiling_row(config);
    rows.push(ceiling);
    // The store's durable publishes as a share of what redis-server does with bare XADDs.
    for (i, (case, rate, expected, counted)) in redis_publish.into_iter().enumerate() {
        let mut row = Row::versus("redis", case, "events/s", "XADD ceiling", "Redis store");
        row.set(false, xadd, 0, 0);
        row.set(true, rate, expected, counted);
        if i == 0 {
            row.note(
                "the Redis store's acknowledged events/s over redis-benchmark's XADD requests/s \
                 on a Redis of the same settings (50 clients, 16 pipelined)",
            );
        }
        rows.push(row.ratios());
    }
    rows
}

/// A latency run's `details`: how much was counted, and any loss.
fn latency_note(tag: &str, latency: &Latency, subscribers: usize) -> String {
    let expected = latency.published * subscribers as u64;
    let mut note = format!(
        "{tag}: {} events published, {} samples after the warm-up",
        latency.published,
        latency.samples.len(),
    );
    if latency.failed > 0 {
        let first = latency.first_failure.as_deref().unwrap_or("?");
        note.push_str(&format!(
            ", {} publishes FAILED (first: {first})",
            latency.failed
        ));
    }
    if latency.delivered < expected {
        note.push_str(&format!(
            ", LOST {} of {expected}",
            expected - latency.delivered
        ));
    }
    note
}

/// redis-server's own rates on this machine (`redis-benchmark`, 50 clients, 16 commands
/// pipelined): XADD with `appendfsync always`, and PUBLISH to one subscriber-less channel.
/// Also returns the XADD rate.
fn ceiling_row(config: &Config) -> (Row, Option<f64>) {
    let mut row = Row::new(
        "redis",
        "redis-benchmark ceiling (XADD, PUBLISH)",
        "requests/s",
    );
    let Some(benchmark) = servers::find_binary("redis-benchmark") else {
        row.note("skipped: redis-benchmark is not installed (Debian package redis-tools)");
        return (row, None);
    };
    let requests = config.ceiling_requests.to_string();
    let result = (|| {
        let redis = servers::start_redis()?;
        let port = redis.addr.port().to_string();
        let run = |command: &[&str]| -> Result<f64, String> {
            let output = Command::new(&benchmark)
                .args(["-p", &port, "-c", "50", "-P", "16", "-n", &requests, "-q"])
                .args(command)
                .output()
                .map_err(|e| format!("redis-benchmark: {e}"))?;
            let text = String::from_utf8_lossy(&output.stdout);
            // "XADD s * f v: 123456.79 requests per second, p50=..." (the last line it prints).
            text.split(['\r', '\n'])
                .rev()
                .find_map(|line| {
                    let (_, rest) = line.split_once(": ")?;
                    rest.split_whitespace().next()?.parse::<f64>().ok()
                })
                .ok_or_else(|| format!("redis-benchmark said: {text}"))
        };
        let xadd = run(&["XADD", "bench-stream", "*", "f", "v"])?;
        let publish = run(&["PUBLISH", "bench-topic", "v"])?;
        std::thread::sleep(Duration::from_millis(10));
        Ok::<_, String>((xadd, publish))
    })();
    match result {
        Ok((xadd, publish)) => {
            row.product = Some(xadd);
            row.expected = config.ceiling_requests;
            row.counted = config.ceiling_requests;
            row.note(format!(
                "XADD {xadd:.0}/s (appendfsync always), PUBLISH {publish:.0}/s"
            ));
            (row, Some(xadd))
        }
        Err(e) => {
            row.errors.push(e);
            (row, None)
        }
    }
}
