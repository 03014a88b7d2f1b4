//! What a soak reports: a row every few seconds while it runs, then a summary; both as
//! markdown tables, ready for `BENCHMARKS.md`.

use std::fmt::Write as _;

use serde::Serialize;

use super::tally::Problem;

/// The state of the soak at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since publishing started.
    pub elapsed_seconds: u64,
    /// Server resident memory (`VmRSS`), MiB.
    pub rss_mib: Option<f64>,
    /// Size of the redb file, MiB.
    pub file_mib: Option<f64>,
    /// Events acknowledged so far (Publish, PublishBatch, Invoke).
    pub published: u64,
    /// Events received by subscribers so far (replays included).
    pub delivered: u64,
    /// Streams dropped on purpose and resumed so far.
    pub reconnects: u64,
    /// Tokens swapped on live streams so far.
    pub refreshes: u64,
    /// Relay `publish` invokes so far.
    pub invokes: u64,
    /// Streams the server ended as slow consumers so far.
    pub slow_ends: u64,
    /// Problems so far (see [`Problem`]).
    pub unexpected: u64,
    /// Server CPU since the previous row, in cores.
    pub server_cores: Option<f64>,
    /// This process's CPU since the previous row, in cores.
    pub load_cores: f64,
}

/// What the soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The load, in words.
    pub load: String,
    /// A row every `report_every` seconds; the last is the end of publishing.
    pub samples: Vec<Sample>,
    /// The row at the end of the warm-up, and its time.
    pub warm_up: Option<Sample>,
    /// Largest RSS and file size sampled (every second) after the warm-up, MiB.
    pub rss_max_after_warm_up_mib: Option<f64>,
    pub file_max_after_warm_up_mib: Option<f64>,
    /// Events acknowledged, and by which call.
    pub published: u64,
    pub publish_calls: u64,
    pub batch_calls: u64,
    pub invokes: u64,
    /// Events received by subscribers.
    pub delivered: u64,
    /// Acknowledged events some subscriber never received.
    pub lost: u64,
    /// Events a subscriber received twice, and out of order.
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Events whose publish call failed (not counted as lost if missing).
    pub unacknowledged: u64,
    /// Subscribers that had not received everything when the wait for them ended.
    pub not_caught_up: u64,
    /// Seconds from the end of publishing until every subscriber had everything.
    pub drain_seconds: f64,
    pub reconnects: u64,
    pub refreshes: u64,
    /// Streams of stalled slow consumers ended as slow consumers (expected).
    pub slow_ends_of_stalled: u64,
    /// Streams of readers ended as slow consumers: allowed (they resume), but a reader that
    /// reads at full speed should not fall this far behind.
    pub slow_ends_of_readers: u64,
    /// Stalls the server did not end (the slow consumer caught up).
    pub stalls_not_ended: u64,
    /// Everything that must not happen, with the status code and message.
    pub problems: Vec<Problem>,
    /// Problems counted but not listed (too many distinct ones).
    pub unlisted_problems: u64,
    pub unexpected: u64,
}

impl SoakReport {
    /// Whether the soak found a correctness failure: lost, repeated or reordered events, or a
    /// stream or call that ended as it never should.
    pub fn failed(&self) -> bool {
        self.lost > 0 || self.duplicates > 0 || self.out_of_order > 0 || self.unexpected > 0
    }

    /// The rows over time and the summary, as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "soak: {}\n", self.load);
        out.push_str(&rows_header());
        for sample in &self.samples {
            out.push_str(&row(sample));
        }
        let mib = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let end = self.samples.last();
        let warm_up_label = self.warm_up.as_ref().map_or_else(
            || "warm-up end".to_owned(),
            |s| format!("warm-up end ({} s)", s.elapsed_seconds),
        );
        let _ = writeln!(
            out,
            "\n| | {warm_up_label} | max after warm-up | end |\n|---|---:|---:|---:|"
        );
        let _ = writeln!(
            out,
            "| server RSS, MiB | {} | {} | {} |",
            mib(self.warm_up.as_ref().and_then(|s| s.rss_mib)),
            mib(self.rss_max_after_warm_up_mib),
            mib(end.and_then(|s| s.rss_mib)),
        );
        let _ = writeln!(
            out,
            "| redb file, MiB | {} | {} | {} |",
            mib(self.warm_up.as_ref().and_then(|s| s.file_mib)),
            mib(self.file_max_after_warm_up_mib),
            mib(end.and_then(|s| s.file_mib)),
        );
        let _ = writeln!(
            out,
            "\n| events published | delivered | lost | repeated | out of order | unexpected ends and errors | slow-consumer ends | reconnects | refreshes | invokes |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.published,
            self.delivered,
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.unexpected,
            self.slow_ends_of_stalled + self.slow_ends_of_readers,
            self.reconnects,
            self.refreshes,
            self.invokes,
        );
        let _ = writeln!(
            out,
            "\npublished by {} Publish and {} PublishBatch calls and {} invokes; every subscriber \
             had every event {:.1} s after publishing stopped{}; slow-consumer ends: {} of \
             stalled slow consumers, {} of readers; {} stalls not ended by the server",
            self.publish_calls,
            self.batch_calls,
            self.invokes,
            self.drain_seconds,
            if self.not_caught_up > 0 {
                format!(" (but {} never caught up)", self.not_caught_up)
            } else {
                String::new()
            },
            self.slow_ends_of_stalled,
            self.slow_ends_of_readers,
            self.stalls_not_ended,
        );
        if self.unacknowledged > 0 {
            let _ = writeln!(
                out,
                "{} events were not acknowledged (their calls failed; see below): not counted \
                 as lost when missing",
                self.unacknowledged
            );
        }
        if !self.problems.is_empty() {
            let _ = writeln!(
                out,
                "\n| who | what | code | message | count | first at |\n|---|---|---|---|---:|---:|"
            );
            for p in &self.problems {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.1} s |",
                    p.who,
                    p.what,
                    p.code,
                    p.message.replace('|', "\\|"),
                    p.count,
                    p.first_at_seconds
                );
            }
            if self.unlisted_problems > 0 {
                let _ = writeln!(out, "and {} more not listed", self.unlisted_problems);
            }
        }
        if self.failed() {
            let _ = writeln!(
                out,
                "\n!!! SOAK FAILED: {} events lost, {} repeated, {} out of order, {} unexpected \
                 ends and errors !!!",
                self.lost, self.duplicates, self.out_of_order, self.unexpected
            );
        } else {
            let _ = writeln!(
                out,
                "\nno event lost, repeated or out of order; no unexpected status"
            );
        }
        out
    }
}

/// The header of the rows over time.
pub(crate) fn rows_header() -> String {
    "| s | RSS MiB | file MiB | published | delivered | reconnects | refreshes | invokes | slow ends | unexpected | server cores | load cores |\n\
     |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        .to_owned()
}

/// One row over time.
pub(crate) fn row(sample: &Sample) -> String {
    let one = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let two = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        sample.elapsed_seconds,
        one(sample.rss_mib),
        one(sample.file_mib),
        sample.published,
        sample.delivered,
        sample.reconnects,
        sample.refreshes,
        sample.invokes,
        sample.slow_ends,
        sample.unexpected,
        two(sample.server_cores),
        two(Some(sample.load_cores)),
    )
}
