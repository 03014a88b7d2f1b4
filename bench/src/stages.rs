//! Where a publish's latency goes inside the product: the server times each stage when started
//! with `--stage-timings` (`durable_iterator_publish_stage_seconds`, a Prometheus histogram
//! per stage on its metrics endpoint), and this reads the quantiles back after a latency run.
//!
//! Stages, as the server names them: `received_to_committed` (the publish call to the
//! commit's answer, fsync included; per call), `committed_to_queued` (to every subscriber's
//! queue; per batch), `committed_to_sent` (to a subscriber's stream handing the events to
//! HTTP/2; per subscriber and batch), and `store_commit` (one commit of the store, fsync
//! included). The rest of the latency a client measures is the request's way in and the
//! response's way out (HTTP/2 on both ends, loopback).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stages, as labelled by the server, and as the table names them: from the publish call
/// to the commit; from the commit to the subscribers' queues; from the commit to HTTP/2; and
/// the store's commit itself (fsync included), what the others are read against.
pub const STAGES: [(&str, &str); 4] = [
    ("received_to_committed", "to commit"),
    ("committed_to_queued", "commit to queues"),
    ("committed_to_sent", "commit to HTTP/2"),
    ("store_commit", "store commit"),
];

const METRIC: &str = "durable_iterator_publish_stage_seconds_bucket";

/// The arguments that make the product time its stages, with metrics on `port`.
pub fn server_args(port: u16) -> Vec<String> {
    vec![
        format!("--metrics-listen=127.0.0.1:{port}"),
        "--stage-timings".to_owned(),
    ]
}

/// A stage's histogram: (upper bound in seconds, observations at or below it), ascending.
pub type Buckets = Vec<(f64, f64)>;

/// Scrapes `GET /metrics` on `port` and returns each stage's buckets, in [`STAGES`] order.
pub async fn scrape(port: u16) -> Result<Vec<Buckets>, String> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "metrics scrape timed out".to_owned())?
        .map_err(|e| format!("metrics scrape: {e}"))?;
    Ok(parse(&response))
}

/// The stage buckets in an exposition text.
pub fn parse(text: &str) -> Vec<Buckets> {
    STAGES
        .iter()
        .map(|(stage, _)| {
            let labels = format!("{METRIC}{{stage=\"{stage}\",le=\"");
            let mut buckets: Buckets = text
                .lines()
                .filter_map(|line| {
                    let rest = line.strip_prefix(&labels)?;
                    let (le, count) = rest.split_once("\"} ")?;
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((le, count.trim().parse().ok()?))
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            buckets
        })
        .collect()
}

/// The `q` quantile of `buckets`, in milliseconds, as Prometheus' `histogram_quantile` has
/// it: linear within the bucket it falls in (the last finite bound if it falls above them).
pub fn quantile_ms(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(below.0 * 1e3);
            }
            let within = count - below.1;
            let share = if within > 0.0 {
                (rank - below.1) / within
            } else {
                1.0
            };
            return Some((below.0 + (le - below.0) * share) * 1e3);
        }
        below = (le, count);
    }
    None
}

/// How many observations `buckets` hold.
pub fn count(buckets: &Buckets) -> u64 {
    buckets.last().map_or(0, |(_, count)| *count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE durable_iterator_publish_stage_seconds histogram
durable_iterator_publish_stage_seconds_bucket{stage="received_to_committed",le="0.001"} 0
durable_iterator_publish_stage_seconds_bucket{stage="received_to_committed",le="0.002"} 50
durable_iterator_publish_stage_seconds_bucket{stage="received_to_committed",le="0.004"} 100
durable_iterator_publish_stage_seconds_bucket{stage="received_to_committed",le="+Inf"} 100
durable_iterator_publish_stage_seconds_sum{stage="received_to_committed"} 0.2
durable_iterator_publish_stage_seconds_bucket{stage="committed_to_sent",le="0.0001"} 10
durable_iterator_publish_stage_seconds_bucket{stage="committed_to_sent",le="+Inf"} 20
"#;

    #[test]
    fn quantiles_are_read_off_the_buckets_as_prometheus_does() {
        let stages = parse(TEXT);
        assert_eq!(stages.len(), 4);
        let committed = &stages[0];
        assert_eq!(count(committed), 100);
        // The 50th observation is the last of the (1, 2] ms bucket.
        assert_eq!(quantile_ms(committed, 0.5), Some(2.0));
        // The 99th is 98% into the (2, 4] ms bucket.
        let p99 = quantile_ms(committed, 0.99).unwrap();
        assert!((p99 - 3.96).abs() < 1e-9, "{p99}");
        assert_eq!(quantile_ms(&stages[1], 0.5), None, "no observations");
        // Above the last finite bound: that bound.
        assert_eq!(quantile_ms(&stages[2], 0.99), Some(0.1));
    }
}
