//! The counters every task of the soak adds to, and the record of everything that went wrong,
//! read by the sampler while the soak runs and by the report at the end.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::Serialize;

/// Distinct problems kept with their message; more are counted, not kept.
const MAX_DISTINCT_PROBLEMS: usize = 200;

/// What the soak's tasks count.
#[derive(Debug)]
pub(crate) struct Tally {
    started: Instant,
    /// Events acknowledged by Publish, PublishBatch and Invoke (relay `publish`).
    pub(crate) published: AtomicU64,
    pub(crate) publish_calls: AtomicU64,
    pub(crate) batch_calls: AtomicU64,
    pub(crate) invokes: AtomicU64,
    /// Events received by subscribers, replays and repeats included.
    pub(crate) delivered: AtomicU64,
    /// Streams dropped on purpose and resumed (the churn).
    pub(crate) reconnects: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    /// Streams the server ended as slow consumers (`RESOURCE_EXHAUSTED`), by who they were.
    pub(crate) slow_ends_of_stalled: AtomicU64,
    pub(crate) slow_ends_of_readers: AtomicU64,
    /// Stalls of a slow consumer that the server did not end (the reader caught up).
    pub(crate) stalls_not_ended: AtomicU64,
    /// Everything in `problems`, counted.
    pub(crate) unexpected: AtomicU64,
    problems: Mutex<Problems>,
}

#[derive(Debug, Default)]
struct Problems {
    distinct: BTreeMap<ProblemKey, Problem>,
    /// Problems that did not fit in `distinct`.
    unlisted: u64,
}

type ProblemKey = (&'static str, &'static str, String, String);

/// Something that must not happen, with how often it did.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Who met it: `subscriber`, `slow consumer`, `publisher`, `invoker`.
    pub who: &'static str,
    /// What happened: `stream ended`, `subscribe refused`, `refresh refused`, ...
    pub what: &'static str,
    /// The gRPC status code, or `-` when there was none.
    pub code: String,
    /// The status message, or what was wrong.
    pub message: String,
    pub count: u64,
    /// Seconds into the soak of the first one.
    pub first_at_seconds: f64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            published: AtomicU64::new(0),
            publish_calls: AtomicU64::new(0),
            batch_calls: AtomicU64::new(0),
            invokes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            slow_ends_of_stalled: AtomicU64::new(0),
            slow_ends_of_readers: AtomicU64::new(0),
            stalls_not_ended: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            problems: Mutex::default(),
        }
    }

    /// Records a problem; the first of each kind is printed at once on stderr.
    pub(crate) fn problem(
        &self,
        who: &'static str,
        what: &'static str,
        code: Option<tonic::Code>,
        message: impl Into<String>,
    ) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let code = code.map_or_else(|| "-".to_owned(), |code| format!("{code:?}"));
        let message = message.into();
        let at = self.started.elapsed().as_secs_f64();
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        let key = (who, what, code.clone(), message.clone());
        let full = problems.distinct.len() >= MAX_DISTINCT_PROBLEMS;
        match problems.distinct.get_mut(&key) {
            Some(problem) => problem.count += 1,
            None if full => problems.unlisted += 1,
            None => {
                eprintln!("soak: UNEXPECTED at {at:.1} s: {who}: {what}: {code} {message:?}");
                problems.distinct.insert(
                    key,
                    Problem {
                        who,
                        what,
                        code,
                        message,
                        count: 1,
                        first_at_seconds: at,
                    },
                );
            }
        }
    }

    /// Every distinct problem, and how many more were not kept.
    pub(crate) fn problems(&self) -> (Vec<Problem>, u64) {
        let problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        (
            problems.distinct.values().cloned().collect(),
            problems.unlisted,
        )
    }
}
