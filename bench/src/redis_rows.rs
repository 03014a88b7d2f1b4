//! The Redis store against the embedded one, in the same run: durable publishes and fan-out on
//! one node, fan-out with the subscribers on a second node, and redis-server's own ceiling.
//!
//! Both stores acknowledge only what is on disk: redb fsyncs each group commit, Redis runs with
//! `appendonly yes` and `appendfsync always`.

use std::{process::Command, time::Duration};

use crate::{
    Config, Layout, Row,
    scenarios::{self, FanOutPlan, System},
    servers::{self, ProductOptions, Server},
};

const WITHOUT: &str = "redb";
const WITH: &str = "Redis";

/// A product node on `redis` (or on redb when `None`).
fn node(config: &Config, redis: Option<&Server>) -> Result<Server, String> {
    let options = ProductOptions {
        redis_url: redis.map(|redis| format!("redis://{}/0", redis.addr)),
        ..ProductOptions::benchmark(false)
    };
    servers::start_product_with(&config.server_binary, &options)
}

pub(crate) async fn redis_rows(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    for &(publishers, in_flight, batch) in &config.publishers {
        let case = format!("publish: {publishers} x {in_flight} in flight, {batch}/call");
        eprintln!("redis: {case}");
        let mut row = Row::versus("redis", &case, "acked events/s", WITHOUT, WITH);
        for with_redis in [false, true] {
            let result = async {
                let redis = with_redis.then(servers::start_redis).transpose()?;
                let node = node(config, redis.as_ref())?;
                scenarios::durable_publish(
                    &node,
                    publishers,
                    in_flight,
                    batch,
                    config.publish_duration,
                    config.publish_max_events,
                )
                .await
            }
            .await;
            match result {
                Ok(publish) => {
                    let rate = publish.acknowledged as f64 / publish.seconds.max(1e-9);
                    row.set(
                        with_redis,
                        Some(rate),
                        publish.acknowledged,
                        publish.acknowledged,
                    );
                }
                Err(e) => row.errors.push(format!("{}: {e}", label(with_redis))),
            }
        }
        rows.push(row.ratios());
    }
    for &subscribers in &config.tls_fan_out {
        let case = format!("fan-out {subscribers} subs, one node");
        eprintln!("redis: {case}");
        let plan = FanOutPlan::new(
            subscribers,
            Layout::Shared(config.shared_connections),
            config.fan_out_duration,
            config.fan_out_max_events,
        );
        let mut row = Row::versus("redis", &case, "delivered events/s", WITHOUT, WITH);
        for with_redis in [false, true] {
            let result = async {
                let redis = with_redis.then(servers::start_redis).transpose()?;
                let node = node(config, redis.as_ref())?;
                scenarios::fan_out(System::Product, &node, &plan).await
            }
            .await;
            match result {
                Ok(outcome) => {
                    let expected = outcome.expected(subscribers);
                    row.set(
                        with_redis,
                        Some(outcome.rate()),
                        expected,
                        outcome.delivered,
                    );
                }
                Err(e) => row.errors.push(format!("{}: {e}", label(with_redis))),
            }
        }
        rows.push(row.ratios());
    }
    rows.push(ceiling_row());
    rows
}

fn label(with_redis: bool) -> &'static str {
    if with_redis { WITH } else { WITHOUT }
}

/// redis-server's own rates on this machine (`redis-benchmark`, 50 clients, 16 commands
/// pipelined): XADD with `appendfsync always`, and PUBLISH to one subscriber-less channel.
fn ceiling_row() -> Row {
    let mut row = Row::new(
        "redis",
        "redis-benchmark ceiling (XADD, PUBLISH)",
        "requests/s",
    );
    let result = (|| {
        let redis = servers::start_redis()?;
        let port = redis.addr.port().to_string();
        let run = |command: &[&str]| -> Result<f64, String> {
            let output = Command::new("redis-benchmark")
                .args(["-p", &port, "-c", "50", "-P", "16", "-n", "200000", "-q"])
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
            row.note(format!(
                "XADD {xadd:.0}/s (appendfsync always), PUBLISH {publish:.0}/s"
            ));
        }
        Err(e) => row.errors.push(e),
    }
    row
}
