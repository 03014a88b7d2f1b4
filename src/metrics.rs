//! The server's Prometheus metrics: every name, its help text and labels in one list
//! ([`METRICS`], which the README's table is held to), and the small functions the call sites
//! use.
//!
//! Nothing is recorded until [`install`] runs: the call sites find no handles and do nothing,
//! so a server without `--metrics-listen`, and every test, pays one atomic load per call site.
//! Handles are registered once, one per label value, so recording never looks a name up and
//! never allocates a label; labels are fixed sets of words (no channel, session or event ids).

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use ::metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::channel::{ResumeFailure, ResumeOutcome};

/// What kind of value a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations, exposed as Prometheus histogram buckets.
    Histogram,
}

/// One metric the server exposes.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    /// The full name, as scraped (counters end in `_total`).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The label and its values, if any, e.g. `outcome`.
    pub label: Option<(&'static str, &'static [&'static str])>,
    /// What it counts (the `# HELP` line).
    pub help: &'static str,
}

/// Live `Subscribe` streams.
pub const LIVE_SESSIONS: &str = "durable_iterator_live_sessions";
/// Streams opened, by resume outcome.
pub const SUBSCRIBES: &str = "durable_iterator_subscribes_total";
/// Streams ended, by reason.
pub const STREAMS_ENDED: &str = "durable_iterator_streams_ended_total";
/// Events stored by publishes (duplicates by idempotency key excluded).
pub const EVENTS_PUBLISHED: &str = "durable_iterator_events_published_total";
/// Events sent live to subscribers.
pub const EVENTS_DELIVERED: &str = "durable_iterator_events_delivered_total";
/// Events sent to resuming subscribers, by where the replay took them from.
pub const EVENTS_REPLAYED: &str = "durable_iterator_events_replayed_total";
/// Time from a publish to its events being durable.
pub const PUBLISH_DURABLE_SECONDS: &str = "durable_iterator_publish_durable_seconds";
/// Events per store commit.
pub const STORE_COMMIT_EVENTS: &str = "durable_iterator_store_commit_events";
/// Duration of a store commit, fsync included.
pub const STORE_COMMIT_SECONDS: &str = "durable_iterator_store_commit_seconds";
/// `RefreshToken` calls, by result.
pub const TOKEN_REFRESHES: &str = "durable_iterator_token_refreshes_total";
/// Tokens and session tickets refused, by reason.
pub const VERIFICATION_FAILURES: &str = "durable_iterator_token_verification_failures_total";
/// `Invoke` calls, by gRPC status code.
pub const INVOKES: &str = "durable_iterator_invokes_total";
/// See [`METRICS`].
pub const FORWARDED_CALLS: &str = "durable_iterator_forwarded_calls_total";
/// Channels with live subscribers, publishes in flight, or recent events kept for resumes.
pub const ACTIVE_CHANNELS: &str = "durable_iterator_active_channels";
/// Size of the on-disk store's file.
pub const STORE_FILE_BYTES: &str = "durable_iterator_store_file_bytes";
/// Time in each stage of a publish's way to its subscribers (with [`enable_stage_timings`]).
pub const PUBLISH_STAGE_SECONDS: &str = "durable_iterator_publish_stage_seconds";

/// Labels of [`SUBSCRIBES`], as [`outcome_label`] names them.
const OUTCOMES: [&str; 6] = [
    "new",
    "recovered",
    "too_old",
    "store_reset",
    "unknown_id",
    "resume_off",
];

/// Why a stream ended: the labels of [`STREAMS_ENDED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The client went away (cancelled the call, closed the connection).
    Client,
    /// The token expired without a refresh.
    Expired,
    /// The subscriber's queue overflowed.
    SlowConsumer,
    /// The session subscribed again on another stream.
    Superseded,
    /// The server is shutting down.
    Shutdown,
    /// The server API disconnected the session.
    Disconnected,
    /// The store failed while the stream replayed.
    StoreError,
}

const END_REASONS: [&str; 7] = [
    "client",
    "expired",
    "slow_consumer",
    "superseded",
    "shutdown",
    "disconnected",
    "store_error",
];

impl EndReason {
    /// The label value, as in logs and metrics.
    pub(crate) fn label(self) -> &'static str {
        END_REASONS[self as usize]
    }
}

/// Why a token or ticket was refused: the labels of [`VERIFICATION_FAILURES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerificationFailure {
    /// Not a token, or its claims do not have the token's schema.
    Malformed,
    /// No key of the keyring signed it.
    BadSignature,
    /// Its `exp` has passed.
    Expired,
    /// Over a size or count limit (token bytes, channel name, tags).
    OverLimit,
    /// A session ticket that is forged, for another channel, or malformed.
    BadTicket,
}

const VERIFICATION_REASONS: [&str; 5] = [
    "malformed",
    "bad_signature",
    "expired",
    "over_limit",
    "bad_ticket",
];

const REFRESH_RESULTS: [&str; 2] = ["ok", "refused"];

/// A stage of a publish's way to its subscribers: the labels of [`PUBLISH_STAGE_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// From the publish call (its events checked) to the store's answer that they are durable:
    /// the wait for a commit and the commit, fsync included. One per publish call.
    ReceivedToCommitted,
    /// From that answer until the batch is in the queue of every subscriber of the channel.
    /// One per stored batch.
    CommittedToQueued,
    /// From that answer until a subscriber's stream hands the batch's first events to HTTP/2.
    /// One per subscriber and batch.
    CommittedToSent,
    /// One commit of the on-disk store, fsync included (what [`STORE_COMMIT_SECONDS`] times,
    /// with finer buckets: the reference the other stages are read against).
    StoreCommit,
}

const STAGES: [&str; 4] = [
    "received_to_committed",
    "committed_to_queued",
    "committed_to_sent",
    "store_commit",
];

/// Where a replay takes its events from, the labels of [`EVENTS_REPLAYED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplaySource {
    /// The channel's recent batches, kept in memory.
    Memory,
    /// The store, read in pages.
    Store,
}

const REPLAY_SOURCES: [&str; 2] = ["memory", "store"];

/// gRPC status codes by number, the labels of [`INVOKES`].
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Every metric, in the order the README lists them.
pub const METRICS: &[MetricInfo] = &[
    MetricInfo {
        name: LIVE_SESSIONS,
        kind: MetricKind::Gauge,
        label: None,
        help: "Subscribe streams open now.",
    },
    MetricInfo {
        name: SUBSCRIBES,
        kind: MetricKind::Counter,
        label: Some(("outcome", &OUTCOMES)),
        help: "Subscribe streams opened, by resume outcome.",
    },
    MetricInfo {
        name: STREAMS_ENDED,
        kind: MetricKind::Counter,
        label: Some(("reason", &END_REASONS)),
        help: "Subscribe streams ended, by reason.",
    },
    MetricInfo {
        name: EVENTS_PUBLISHED,
        kind: MetricKind::Counter,
        label: None,
        help: "Events stored by publishes.",
    },
    MetricInfo {
        name: EVENTS_DELIVERED,
        kind: MetricKind::Counter,
        label: None,
        help: "Events sent live to subscribers (one per subscriber that receives it).",
    },
    MetricInfo {
        name: EVENTS_REPLAYED,
        kind: MetricKind::Counter,
        label: Some(("from", &REPLAY_SOURCES)),
        help: "Events sent to resuming subscribers, by where the replay took them from (the \
               channel's recent events in memory, or the store).",
    },
    MetricInfo {
        name: PUBLISH_DURABLE_SECONDS,
        kind: MetricKind::Histogram,
        label: None,
        help: "Time from a publish call to its events being durable, in seconds.",
    },
    MetricInfo {
        name: STORE_COMMIT_EVENTS,
        kind: MetricKind::Histogram,
        label: None,
        help: "Events written by one commit of the store (an on-disk commit, or a Redis append).",
    },
    MetricInfo {
        name: STORE_COMMIT_SECONDS,
        kind: MetricKind::Histogram,
        label: None,
        help: "Duration of one commit of the store (an on-disk commit with its fsync, or a Redis append script), in seconds.",
    },
    MetricInfo {
        name: TOKEN_REFRESHES,
        kind: MetricKind::Counter,
        label: Some(("result", &REFRESH_RESULTS)),
        help: "RefreshToken calls, by result.",
    },
    MetricInfo {
        name: VERIFICATION_FAILURES,
        kind: MetricKind::Counter,
        label: Some(("reason", &VERIFICATION_REASONS)),
        help: "Tokens and session tickets refused, by reason.",
    },
    MetricInfo {
        name: INVOKES,
        kind: MetricKind::Counter,
        label: Some(("code", &CODES)),
        help: "Invoke calls, by gRPC status code.",
    },
    MetricInfo {
        name: FORWARDED_CALLS,
        kind: MetricKind::Counter,
        label: Some(("code", &CODES)),
        help: "Calls this node forwarded to the node holding a session, by the answer's gRPC status code.",
    },
    MetricInfo {
        name: ACTIVE_CHANNELS,
        kind: MetricKind::Gauge,
        label: None,
        help: "Channels with live subscribers, publishes in flight, or recent events kept for resumes.",
    },
    MetricInfo {
        name: STORE_FILE_BYTES,
        kind: MetricKind::Gauge,
        label: None,
        help: "Size of the on-disk store's file, in bytes.",
    },
    MetricInfo {
        name: PUBLISH_STAGE_SECONDS,
        kind: MetricKind::Histogram,
        label: Some(("stage", &STAGES)),
        help: "Time in each stage from a publish to its subscribers' streams, in seconds \
               (with --stage-timings).",
    },
];

/// Bucket bounds of the latency histograms, in seconds: a commit's fsync is 0.1–20 ms.
const SECONDS_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
    0.512, 1.024,
];

/// Bucket bounds of [`PUBLISH_STAGE_SECONDS`], in seconds: fine enough to read a p50 and a
/// p99 off from 25 µs to 1 s (within a quarter of the value).
const STAGE_BUCKETS: [f64; 37] = [
    0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_6,
    0.000_8, 0.001, 0.001_25, 0.001_5, 0.002, 0.002_5, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010,
    0.012_5, 0.015, 0.020, 0.025, 0.030, 0.040, 0.050, 0.075, 0.100, 0.150, 0.200, 0.300, 0.500,
    0.750, 1.000,
];

/// Bucket bounds of [`STORE_COMMIT_EVENTS`].
const EVENTS_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1_024.0, 4_096.0,
];

/// The registered handles, one per label value.
struct Handles {
    live_sessions: Gauge,
    subscribes: [Counter; OUTCOMES.len()],
    streams_ended: [Counter; END_REASONS.len()],
    events_published: Counter,
    events_delivered: Counter,
    events_replayed: [Counter; REPLAY_SOURCES.len()],
    publish_durable: Histogram,
    commit_events: Histogram,
    commit_seconds: Histogram,
    refreshes: [Counter; REFRESH_RESULTS.len()],
    verification_failures: [Counter; VERIFICATION_REASONS.len()],
    invokes: [Counter; CODES.len()],
    forwarded_calls: [Counter; CODES.len()],
    active_channels: Gauge,
    store_file_bytes: Gauge,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// The stage histograms, once [`enable_stage_timings`] ran.
static STAGE_HANDLES: OnceLock<[Histogram; STAGES.len()]> = OnceLock::new();

fn handles() -> Option<&'static Handles> {
    HANDLES.get()
}

fn counters<const N: usize>(
    name: &'static str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    values.map(|value| ::metrics::counter!(name, label => value))
}

impl Handles {
    fn register() -> Self {
        for metric in METRICS {
            let (name, help) = (metric.name, metric.help);
            match metric.kind {
                MetricKind::Counter => ::metrics::describe_counter!(name, help),
                MetricKind::Gauge if name == STORE_FILE_BYTES => {
                    ::metrics::describe_gauge!(name, Unit::Bytes, help)
                }
                MetricKind::Gauge => ::metrics::describe_gauge!(name, help),
                MetricKind::Histogram if name.ends_with("_seconds") => {
                    ::metrics::describe_histogram!(name, Unit::Seconds, help)
                }
                MetricKind::Histogram => ::metrics::describe_histogram!(name, help),
            }
        }
        Self {
            live_sessions: ::metrics::gauge!(LIVE_SESSIONS),
            subscribes: counters(SUBSCRIBES, "outcome", OUTCOMES),
            streams_ended: counters(STREAMS_ENDED, "reason", END_REASONS),
            events_published: ::metrics::counter!(EVENTS_PUBLISHED),
            events_delivered: ::metrics::counter!(EVENTS_DELIVERED),
            events_replayed: counters(EVENTS_REPLAYED, "from", REPLAY_SOURCES),
            publish_durable: ::metrics::histogram!(PUBLISH_DURABLE_SECONDS),
            commit_events: ::metrics::histogram!(STORE_COMMIT_EVENTS),
            commit_seconds: ::metrics::histogram!(STORE_COMMIT_SECONDS),
            refreshes: counters(TOKEN_REFRESHES, "result", REFRESH_RESULTS),
            verification_failures: counters(VERIFICATION_FAILURES, "reason", VERIFICATION_REASONS),
            invokes: counters(INVOKES, "code", CODES),
            forwarded_calls: counters(FORWARDED_CALLS, "code", CODES),
            active_channels: ::metrics::gauge!(ACTIVE_CHANNELS),
            store_file_bytes: ::metrics::gauge!(STORE_FILE_BYTES),
        }
    }
}

/// Why metrics could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another recorder is installed in this process already.
    #[error("metrics are installed already")]
    AlreadyInstalled,
    /// The bucket configuration was refused.
    #[error("cannot configure the metrics: {0}")]
    Build(String),
    /// The listen address could not be bound.
    #[error("cannot listen for metrics on {addr}: {error}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

/// Installs the Prometheus recorder for this process and serves `GET /metrics` on `listen`
/// (port 0: any free port). Returns the address it listens on. Needs a Tokio runtime.
pub async fn install(listen: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| MetricsError::Listen {
            addr: listen,
            error,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|error| MetricsError::Listen {
            addr: listen,
            error,
        })?;
    let build = |e: metrics_exporter_prometheus::BuildError| MetricsError::Build(e.to_string());
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .map_err(build)?
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT_EVENTS.into()), &EVENTS_BUCKETS)
        .map_err(build)?
        .set_buckets_for_metric(Matcher::Full(PUBLISH_STAGE_SECONDS.into()), &STAGE_BUCKETS)
        .map_err(build)?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    // The values set before the scrape endpoint exists are the handles' starting points.
    let _ = HANDLES.set(Handles::register());
    tokio::spawn(upkeep(handle.clone()));
    tokio::spawn(serve_scrapes(listener, handle));
    Ok(addr)
}

/// Times the stages of every publish ([`PUBLISH_STAGE_SECONDS`]) from now on: a clock read per
/// publish call, per stored batch, and per subscriber and batch, which is why it is asked for
/// apart from the other metrics. False (and nothing timed) if metrics are not installed.
pub fn enable_stage_timings() -> bool {
    if handles().is_none() {
        return false;
    }
    STAGE_HANDLES.get_or_init(|| {
        STAGES.map(|stage| ::metrics::histogram!(PUBLISH_STAGE_SECONDS, "stage" => stage))
    });
    true
}

/// Histograms keep their observations until upkeep folds them into buckets; a scrape does it
/// too, this bounds the memory between scrapes.
async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// Answers `GET /metrics` with the exposition text, anything else with 404.
async fn serve_scrapes(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let handle = handle.clone();
                    async move { Ok::<_, std::convert::Infallible>(scrape(&request, &handle)) }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn scrape<B>(
    request: &http::Request<B>,
    handle: &PrometheusHandle,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) =
        if request.method() == http::Method::GET && request.uri().path() == "/metrics" {
            handle.run_upkeep();
            (
                http::StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        } else {
            (
                http::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "metrics are at GET /metrics\n".to_owned(),
            )
        };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// The label of a resume outcome in [`SUBSCRIBES`] and in the stream's log lines.
pub(crate) fn outcome_label(outcome: &ResumeOutcome) -> &'static str {
    OUTCOMES[outcome_index(outcome)]
}

fn outcome_index(outcome: &ResumeOutcome) -> usize {
    match (outcome.requested, outcome.failure) {
        (false, _) => 0,
        (true, None) => 1,
        (true, Some(ResumeFailure::TooOld)) => 2,
        (true, Some(ResumeFailure::StoreReset)) => 3,
        (true, Some(ResumeFailure::UnknownId)) => 4,
        (true, Some(ResumeFailure::ResumeOff)) => 5,
    }
}

/// A stream opened with `outcome`.
pub(crate) fn stream_started(outcome: &ResumeOutcome) {
    if let Some(h) = handles() {
        h.subscribes[outcome_index(outcome)].increment(1);
        h.live_sessions.increment(1.0);
    }
}

/// A stream ended for `reason`.
pub(crate) fn stream_ended(reason: EndReason) {
    if let Some(h) = handles() {
        h.streams_ended[reason as usize].increment(1);
        h.live_sessions.decrement(1.0);
    }
}

/// `count` events sent live to one subscriber.
pub(crate) fn delivered(count: u64) {
    if let Some(h) = handles() {
        h.events_delivered.increment(count);
    }
}

/// `count` events sent to a resuming subscriber, taken from `source`.
pub(crate) fn replayed(count: u64, source: ReplaySource) {
    if let Some(h) = handles() {
        h.events_replayed[source as usize].increment(count);
    }
}

/// `count` new events were stored (and are handed to subscribers).
pub(crate) fn published(count: usize) {
    if let Some(h) = handles() {
        h.events_published.increment(count as u64);
    }
}

/// A publish call made at `started` (see [`publish_started`]) is durable now.
pub(crate) fn publish_durable(started: Option<Instant>) {
    if let (Some(h), Some(started)) = (handles(), started) {
        h.publish_durable.record(started.elapsed());
    }
}

/// When a publish started, if metrics are on (no clock read otherwise).
pub(crate) fn publish_started() -> Option<Instant> {
    handles().map(|_| Instant::now())
}

/// A store commit of `events` events, started at `started` (see [`commit_started`]), is done.
pub(crate) fn committed(events: usize, started: Option<Instant>) {
    if let (Some(h), Some(started)) = (handles(), started) {
        h.commit_events.record(events as f64);
        h.commit_seconds.record(started.elapsed());
        stage_took(Stage::StoreCommit, started);
    }
}

/// Now, if stages are timed (no clock read otherwise).
pub(crate) fn stage_clock() -> Option<Instant> {
    STAGE_HANDLES.get().map(|_| Instant::now())
}

/// The time since `since` (a [`stage_clock`] reading) spent in `stage`.
pub(crate) fn stage_took(stage: Stage, since: Instant) {
    if let Some(stages) = STAGE_HANDLES.get() {
        stages[stage as usize].record(since.elapsed());
    }
}

/// When a commit started, if metrics are on.
pub(crate) fn commit_started() -> Option<Instant> {
    handles().map(|_| Instant::now())
}

/// A `RefreshToken` answered `ok`.
pub(crate) fn refreshed(ok: bool) {
    if let Some(h) = handles() {
        h.refreshes[usize::from(!ok)].increment(1);
    }
}

/// A token or ticket refused for `reason`.
pub(crate) fn verification_failed(reason: VerificationFailure) {
    if let Some(h) = handles() {
        h.verification_failures[reason as usize].increment(1);
    }
}

/// An `Invoke` answered `code`.
pub(crate) fn invoked(code: tonic::Code) {
    if let Some(counter) = handles().and_then(|h| h.invokes.get(code as usize)) {
        counter.increment(1);
    }
}

/// A call forwarded to another node was answered `code`.
pub(crate) fn forwarded(code: tonic::Code) {
    if let Some(counter) = handles().and_then(|h| h.forwarded_calls.get(code as usize)) {
        counter.increment(1);
    }
}

/// Channels active now, and the store file's size if there is one.
pub(crate) fn upkeep_gauges(active_channels: usize, store_file_bytes: Option<u64>) {
    if let Some(h) = handles() {
        h.active_channels.set(active_channels as f64);
        if let Some(bytes) = store_file_bytes {
            h.store_file_bytes.set(bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_documents_every_metric_and_its_labels() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        for metric in METRICS {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}`", metric.name)))
                .unwrap_or_else(|| panic!("README has no table row for {}", metric.name));
            if let Some((label, values)) = metric.label {
                assert!(row.contains(&format!("`{label}`")), "{row}");
                // Status codes: the README names the common ones only.
                if label != "code" {
                    for value in values {
                        assert!(row.contains(&format!("`{value}`")), "{row}: {value}");
                    }
                }
            }
        }
    }

    #[test]
    fn outcomes_have_their_labels() {
        let outcome = |requested, failure| ResumeOutcome {
            requested,
            failure,
            ..ResumeOutcome::default()
        };
        assert_eq!(outcome_label(&outcome(false, None)), "new");
        assert_eq!(outcome_label(&outcome(true, None)), "recovered");
        let failures = [
            (ResumeFailure::TooOld, "too_old"),
            (ResumeFailure::StoreReset, "store_reset"),
            (ResumeFailure::UnknownId, "unknown_id"),
            (ResumeFailure::ResumeOff, "resume_off"),
        ];
        for (failure, label) in failures {
            assert_eq!(outcome_label(&outcome(true, Some(failure))), label);
        }
    }

    #[test]
    fn codes_are_in_the_order_of_their_numbers() {
        assert_eq!(
            CODES[tonic::Code::Unauthenticated as usize],
            "UNAUTHENTICATED"
        );
        assert_eq!(CODES[tonic::Code::Unavailable as usize], "UNAVAILABLE");
        assert_eq!(CODES[tonic::Code::NotFound as usize], "NOT_FOUND");
    }
}
