//! The soak (`--only soak`, never in the default set): one product server with the redb store
//! and a short retention, under mixed load for a long time (30 minutes by default), watched for
//! memory and store growth, lost events and streams that end as they never should.
//!
//! All at once, against the one server:
//! - a writer per channel publishing at a steady rate, by `Publish`, `PublishBatch` and
//!   `Invoke` of the relay object's `publish` (`writer.rs`); each event carries its channel's
//!   counter;
//! - readers spread over the channels, a share of them dropped and resumed every second, each
//!   swapping its short-lived token on the live stream before it expires; slow consumers that
//!   stall until the server ends them, then resume (`subscriber.rs`);
//! - every subscriber checks that it received every counter of its channel once and in order,
//!   across its reconnects (`sequence.rs`).
//!
//! Every few seconds a row: server RSS and redb file size (they should be flat once the
//! retention window is full), and the counts so far; at the end a summary (`report.rs`). The
//! figures are printed, never judged; lost, repeated or reordered events and unexpected
//! statuses are correctness, printed loudly, and make the run's exit code 2.

mod report;
mod sequence;
mod subscriber;
mod tally;
mod writer;

use std::{
    path::Path,
    sync::{Arc, OnceLock, atomic::AtomicUsize, atomic::Ordering},
    time::{Duration, Instant},
};

use durable_iterator::{
    Keyring, TokenClaims,
    clock::{Clock, SystemClock},
    relay,
    store::REDB_FILE_NAME,
    token,
};
use futures::future::join_all;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use report::{Sample, SoakReport};
pub use tally::Problem;

use crate::{
    load,
    servers::{self, ProductOptions, SIGNING_KEY},
};
use subscriber::{Member, Shared, SlowPlan};
use tally::Tally;
use writer::{ChannelState, Rates};

/// The tag every soak token holds and every soak event carries: the filter runs for every
/// event and subscriber.
pub(crate) const TAG: &str = "soak";

/// HTTP/2 window of each slow consumer's stream: small, so that a stalled reader fills the
/// server's queue for it, not buffers on the way.
const SLOW_STREAM_WINDOW: u32 = 4 * 1024;

/// How long subscribers may take to receive everything once publishing stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// The size and shape of a soak.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// How long the load runs.
    pub duration: Duration,
    /// A row every this long.
    pub report_every: Duration,
    /// Memory and file size are compared from here on (the retention window has filled).
    pub warm_up: Duration,
    /// Channels (`soak:0`, `soak:1`, ...), each with its writer.
    pub channels: usize,
    /// Readers, spread over the channels and over `connections` connections.
    pub subscribers: usize,
    pub connections: usize,
    /// Share of the readers dropped and resumed every second.
    pub churn_per_second: f64,
    /// Slow consumers, each on its own connection.
    pub slow_consumers: usize,
    /// Events per second over all channels (Publish, PublishBatch and Invoke together).
    pub events_per_second: f64,
    /// Of which invokes per second over all channels.
    pub invokes_per_second: f64,
    /// The server's `--retention-seconds`: short, so expiry runs all along.
    pub retention_seconds: u64,
    /// The server's `--subscriber-queue`.
    pub subscriber_queue: usize,
    /// Readers' tokens live this long; they are swapped `refresh_before` (and up to as much
    /// again) before they expire.
    pub token_ttl_seconds: u64,
    pub refresh_before: Duration,
    /// Slow consumers read this long after each (re)connect before they stall.
    pub slow_read: Duration,
}

impl SoakPlan {
    /// The soak of `BENCHMARKS.md`: 1,000 readers (5 % resumed every second) and 5 slow
    /// consumers on 10 channels, 1,000 events/s of which 10 invokes/s, 60 s retention, 30 s
    /// tokens; for `seconds`.
    pub fn full(seconds: u64) -> Self {
        Self {
            duration: Duration::ZERO,
            report_every: Duration::ZERO,
            warm_up: Duration::ZERO,
            channels: 10,
            subscribers: 1_000,
            connections: 50,
            churn_per_second: 0.05,
            slow_consumers: 5,
            events_per_second: 1_000.0,
            invokes_per_second: 10.0,
            retention_seconds: 60,
            subscriber_queue: 256,
            token_ttl_seconds: 30,
            refresh_before: Duration::from_secs(10),
            slow_read: Duration::from_secs(5),
        }
        .with_duration(seconds)
    }

    /// A few seconds of every part of the load, small (the CI smoke test).
    pub fn smoke() -> Self {
        Self {
            channels: 3,
            subscribers: 30,
            connections: 3,
            churn_per_second: 0.1,
            slow_consumers: 2,
            events_per_second: 300.0,
            invokes_per_second: 6.0,
            subscriber_queue: 16,
            token_ttl_seconds: 4,
            refresh_before: Duration::from_millis(1_500),
            slow_read: Duration::from_millis(500),
            ..Self::full(5)
        }
    }

    /// The same load for `seconds`: a row every 30 s (a sixth of the run when shorter), the
    /// warm-up until 120 s (a third of the run when shorter), on a row.
    pub fn with_duration(self, seconds: u64) -> Self {
        let seconds = seconds.max(1);
        let every = if seconds >= 180 {
            30
        } else {
            (seconds / 6).max(1)
        };
        let warm_up = (120.min(seconds / 3) / every).max(1) * every;
        Self {
            duration: Duration::from_secs(seconds),
            report_every: Duration::from_secs(every),
            warm_up: Duration::from_secs(warm_up),
            ..self
        }
    }

    /// Readers resumed every second.
    fn churn(&self) -> usize {
        let count = (self.subscribers as f64 * self.churn_per_second).round() as usize;
        count.clamp(usize::from(self.churn_per_second > 0.0), self.subscribers)
    }

    /// How far ahead a slow consumer's channel must be before the server must have ended it:
    /// its queue, a batch that may land on a full queue, the chunk on its way and the small
    /// window, with room to spare.
    fn slow_backlog(&self) -> u64 {
        2 * self.subscriber_queue as u64 + 150
    }

    fn describe(&self) -> String {
        let before = self.refresh_before.as_secs_f64();
        format!(
            "{} s; {} readers over {} connections and {} slow consumers on {} channels; {:.0} \
             events/s ({:.0} of them invokes); {} readers dropped and resumed every second; \
             readers' tokens live {} s, swapped {before}-{} s before expiry; slow consumers read \
             {} s, then stall until {} events behind; redb store, retention {} s, subscriber \
             queue {}",
            self.duration.as_secs(),
            self.subscribers,
            self.connections,
            self.slow_consumers,
            self.channels,
            self.events_per_second,
            self.invokes_per_second,
            self.churn(),
            self.token_ttl_seconds,
            2.0 * before,
            self.slow_read.as_secs_f64(),
            self.slow_backlog(),
            self.retention_seconds,
            self.subscriber_queue,
        )
    }
}

/// Mints the soak's tokens: its channel, the soak tag, and the relay's `publish` allowed.
#[derive(Debug)]
pub(crate) struct Minter {
    keyring: Keyring,
}

impl Minter {
    fn new() -> Result<Self, String> {
        Ok(Self {
            keyring: Keyring::new([SIGNING_KEY]).map_err(|e| format!("signing key: {e:?}"))?,
        })
    }

    pub(crate) fn mint(&self, channel: &str, ttl_seconds: u64) -> String {
        let mut claims = TokenClaims::new(channel, SystemClock.now_secs(), ttl_seconds);
        claims.tags = Some(vec![TAG.to_owned()]);
        claims.rpc = Some(
            relay::PUBLISH.path()[..1]
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        );
        token::sign(&self.keyring, &claims)
    }
}

/// Runs the soak against a product server of its own; prints its rows on stderr as it goes.
pub async fn soak(server_binary: &Path, plan: &SoakPlan) -> Result<SoakReport, String> {
    let server = servers::start_product_with(
        server_binary,
        &ProductOptions {
            tls: false,
            subscriber_queue: plan.subscriber_queue,
            heartbeat_seconds: None,
            retention_seconds: Some(plan.retention_seconds),
            redis_url: None,
            extra_args: Vec::new(),
        },
    )?;
    let store_file = server.data_dir().map(|dir| dir.join(REDB_FILE_NAME));
    let target = server.target();
    let minter = Arc::new(Minter::new()?);
    let tally = Arc::new(Tally::new());
    let channels: Vec<Arc<ChannelState>> = (0..plan.channels.max(1))
        .map(|index| {
            Arc::new(ChannelState {
                index,
                name: format!("soak:{index}"),
                assigned: Default::default(),
            })
        })
        .collect();
    let shared = Arc::new(Shared {
        tally: tally.clone(),
        minter: minter.clone(),
        channels: channels.clone(),
        token_ttl_seconds: plan.token_ttl_seconds,
        refresh_before: plan.refresh_before,
        slow: SlowPlan {
            read: plan.slow_read,
            backlog: plan.slow_backlog(),
            max_stall: Duration::from_secs(30),
        },
        opened: AtomicUsize::new(0),
        drain: CancellationToken::new(),
        targets: OnceLock::new(),
        stop: CancellationToken::new(),
    });
    // Whatever way this returns, the subscribers stop with it.
    let _stop_subscribers = shared.stop.clone().drop_guard();
    eprintln!("soak: {}", plan.describe());

    // Every subscriber is open before the first event: each must then see every counter.
    let connections = load::connect_many(&target, plan.connections.max(1)).await?;
    let churns: Vec<Arc<Notify>> = (0..plan.subscribers)
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let mut subscribers = Vec::new();
    for (index, churn) in churns.iter().enumerate() {
        let member = Member {
            index,
            channel: index % channels.len(),
            connection: connections[index % connections.len()].clone(),
        };
        let task = tokio::spawn(subscriber::reader(shared.clone(), member, churn.clone()));
        subscribers.push((index % channels.len(), task));
    }
    for slow in 0..plan.slow_consumers {
        let connection = load::connect_with_stream_window(&target, SLOW_STREAM_WINDOW).await?;
        let index = plan.subscribers + slow;
        let member = Member {
            index,
            channel: slow % channels.len(),
            connection,
        };
        let task = tokio::spawn(subscriber::slow_consumer(shared.clone(), member));
        subscribers.push((slow % channels.len(), task));
    }
    let everyone = plan.subscribers + plan.slow_consumers;
    let opening = Instant::now();
    while shared.opened.load(Ordering::Relaxed) < everyone {
        if opening.elapsed() > Duration::from_secs(120) {
            shared.stop.cancel();
            return Err(format!(
                "only {} of {everyone} subscribers opened their stream within 120 s",
                shared.opened.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The load.
    let writers_stop = CancellationToken::new();
    let admin = load::connect_many(&target, 2).await?;
    let per_channel = Rates {
        events: (plan.events_per_second - plan.invokes_per_second).max(0.0) / channels.len() as f64,
        invokes: plan.invokes_per_second / channels.len() as f64,
    };
    let writers: Vec<_> = channels
        .iter()
        .map(|channel| {
            tokio::spawn(writer::write(
                channel.clone(),
                admin[channel.index % admin.len()].clone(),
                per_channel,
                minter.clone(),
                tally.clone(),
                writers_stop.clone(),
            ))
        })
        .collect();
    let churner = tokio::spawn(churn(churns, plan.churn(), writers_stop.clone()));
    let sampled = sample(&server, store_file.as_deref(), plan, &tally).await;

    // Publishing stops; every subscriber must then receive what is left of its channel.
    writers_stop.cancel();
    let _ = churner.await;
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.map_err(|e| format!("a writer failed: {e}"))?);
    }
    let drain_started = Instant::now();
    let _ = shared.targets.set(written.iter().map(|w| w.next).collect());
    shared.drain.cancel();
    let stop = shared.stop.clone();
    let limit = tokio::spawn(async move {
        tokio::time::sleep(DRAIN_LIMIT).await;
        stop.cancel();
    });
    let (channels_of, tasks): (Vec<usize>, Vec<_>) = subscribers.into_iter().unzip();
    let sequences = join_all(tasks).await;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    limit.abort();

    let unacknowledged: Vec<std::collections::BTreeSet<u64>> = written
        .iter()
        .map(|w| w.unacknowledged.iter().copied().collect())
        .collect();
    let (mut lost, mut duplicates, mut out_of_order, mut not_caught_up) = (0, 0, 0, 0);
    for (channel, sequence) in channels_of.into_iter().zip(sequences) {
        let sequence = sequence.map_err(|e| format!("a subscriber failed: {e}"))?;
        let target = written[channel].next;
        lost += sequence.lost(target, &unacknowledged[channel]);
        duplicates += sequence.duplicates;
        out_of_order += sequence.out_of_order;
        not_caught_up += u64::from(sequence.next < target);
    }
    let (problems, unlisted_problems) = tally.problems();
    let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    Ok(SoakReport {
        load: plan.describe(),
        samples: sampled.samples,
        warm_up: sampled.warm_up,
        rss_max_after_warm_up_mib: sampled.rss_max_after_warm_up,
        file_max_after_warm_up_mib: sampled.file_max_after_warm_up,
        published: get(&tally.published),
        publish_calls: get(&tally.publish_calls),
        batch_calls: get(&tally.batch_calls),
        invokes: get(&tally.invokes),
        delivered: get(&tally.delivered),
        lost,
        duplicates,
        out_of_order,
        unacknowledged: unacknowledged.iter().map(|u| u.len() as u64).sum(),
        not_caught_up,
        drain_seconds,
        reconnects: get(&tally.reconnects),
        refreshes: get(&tally.refreshes),
        slow_ends_of_stalled: get(&tally.slow_ends_of_stalled),
        slow_ends_of_readers: get(&tally.slow_ends_of_readers),
        stalls_not_ended: get(&tally.stalls_not_ended),
        problems,
        unlisted_problems,
        unexpected: get(&tally.unexpected),
    })
}

/// Every second, tells `per_second` readers picked at random to drop their stream and resume.
async fn churn(readers: Vec<Arc<Notify>>, per_second: usize, stop: CancellationToken) {
    if readers.is_empty() || per_second == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..readers.len()).collect();
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ load::now_ns());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The first `per_second` of a partial Fisher-Yates shuffle: distinct readers.
        for i in 0..per_second.min(order.len()) {
            let j = i + (random.next() % (order.len() - i) as u64) as usize;
            order.swap(i, j);
            readers[order[i]].notify_one();
        }
    }
}

/// A small deterministic generator: which readers the churn picks needs no better.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What the sampler saw.
struct Sampled {
    samples: Vec<Sample>,
    warm_up: Option<Sample>,
    rss_max_after_warm_up: Option<f64>,
    file_max_after_warm_up: Option<f64>,
}

/// Reads the server's RSS and the file size every second for the plan's duration, and takes
/// a row every `report_every` (printed on stderr at once).
async fn sample(
    server: &servers::Server,
    store_file: Option<&Path>,
    plan: &SoakPlan,
    tally: &Tally,
) -> Sampled {
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let file_mib = || {
        store_file
            .and_then(|path| std::fs::metadata(path).ok())
            .map(|m| mib(m.len()))
    };
    let seconds = plan.duration.as_secs().max(1);
    let every = plan.report_every.as_secs().max(1);
    let warm_up = plan.warm_up.as_secs();
    let mut sampled = Sampled {
        samples: Vec::new(),
        warm_up: None,
        rss_max_after_warm_up: None,
        file_max_after_warm_up: None,
    };
    eprint!("{}", report::rows_header());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let started = Instant::now();
    let (mut cpu_before, mut load_before, mut at_before) = (
        server.cpu_seconds(),
        crate::load_cpu_seconds(),
        Instant::now(),
    );
    for second in 1..=seconds {
        tick.tick().await;
        let rss = server.rss_bytes().map(mib);
        let file = file_mib();
        if second >= warm_up {
            let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            sampled.rss_max_after_warm_up = max(sampled.rss_max_after_warm_up, rss);
            sampled.file_max_after_warm_up = max(sampled.file_max_after_warm_up, file);
        }
        if second % every != 0 && second != seconds {
            continue;
        }
        let wall = at_before.elapsed().as_secs_f64().max(1e-9);
        let cpu = server.cpu_seconds();
        let load_cpu = crate::load_cpu_seconds();
        let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let row = Sample {
            elapsed_seconds: started.elapsed().as_secs_f64().round() as u64,
            rss_mib: rss,
            file_mib: file,
            published: get(&tally.published),
            delivered: get(&tally.delivered),
            reconnects: get(&tally.reconnects),
            refreshes: get(&tally.refreshes),
            invokes: get(&tally.invokes),
            slow_ends: get(&tally.slow_ends_of_stalled) + get(&tally.slow_ends_of_readers),
            unexpected: get(&tally.unexpected),
            server_cores: match (cpu, cpu_before) {
                (Some(now), Some(before)) => Some((now - before) / wall),
                _ => None,
            },
            load_cores: (load_cpu - load_before) / wall,
        };
        (cpu_before, load_before, at_before) = (cpu, load_cpu, Instant::now());
        eprint!("{}", report::row(&row));
        if second == warm_up {
            sampled.warm_up = Some(row.clone());
        }
        sampled.samples.push(row);
    }
    sampled
}
