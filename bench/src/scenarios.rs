//! The measurements. Each one opens its subscribers, drives load, waits (bounded) for delivery,
//! and returns what it counted; none fails on a number.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use durable_iterator::{
    Keyring, TokenClaims,
    clock::{Clock, SystemClock},
    pb, token,
};
use futures::{StreamExt, stream};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;

use crate::{
    load::{self, Counters, Publisher, Target},
    servers::{SIGNING_KEY, Server},
};

/// Which server a measurement runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Product,
    Baseline,
    Nats,
}

/// How sessions share connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Sessions spread over this many connections (HTTP/2 streams; nats subscriptions).
    Shared(usize),
    /// One connection per session.
    PerSession,
}

impl Layout {
    pub fn describe(self) -> String {
        match self {
            Layout::Shared(n) => format!("over {n} conn"),
            Layout::PerSession => "1 conn/session".into(),
        }
    }

    pub(crate) fn connections(self, sessions: usize) -> usize {
        match self {
            Layout::Shared(n) => n.min(sessions).max(1),
            Layout::PerSession => sessions.max(1),
        }
    }
}

/// The channel every measurement uses, and the tag its sessions hold and its events carry (so
/// the product's filter runs for every event and subscriber).
pub const CHANNEL: &str = "bench";
const TAG: &str = "bench";

/// A token for the product's channel, valid for an hour.
pub fn product_token() -> String {
    let keyring = Keyring::new([SIGNING_KEY]).expect("key");
    let mut claims = TokenClaims::new(CHANNEL, SystemClock.now_secs(), 3_600);
    claims.tags = Some(vec![TAG.to_owned()]);
    token::sign(&keyring, &claims)
}

fn subscribe_request() -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        token: product_token(),
        last_event_id: None,
        session_ticket: None,
    }
}

/// A subscriber's receiving end.
enum Source {
    Grpc(Box<load::MessageStream>),
    Nats(async_nats::Subscriber),
}

/// Open subscribers, and what keeps their connections up.
struct Subscribers {
    sources: Vec<Source>,
    _nats_clients: Vec<async_nats::Client>,
}

/// `count` subscribers; with `accept_gzip` (gRPC servers only) they accept gzip answers.
async fn open_subscribers(
    system: System,
    target: &Target,
    count: usize,
    layout: Layout,
    accept_gzip: bool,
) -> Result<Subscribers, String> {
    let connections = layout.connections(count);
    let addr = target.addr;
    match system {
        System::Product | System::Baseline => {
            let channels = load::connect_many(target, connections).await?;
            let request = subscribe_request();
            let sources = stream::iter(0..count)
                .map(|i| {
                    load::subscribe(
                        channels[i % channels.len()].clone(),
                        request.clone(),
                        accept_gzip,
                    )
                })
                .buffered(256)
                .map(|opened| opened.map(|s| Source::Grpc(Box::new(s.stream))))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Subscribers {
                sources,
                _nats_clients: Vec::new(),
            })
        }
        System::Nats => {
            let clients = stream::iter(0..connections)
                .map(|_| {
                    async_nats::ConnectOptions::new()
                        .subscription_capacity(1 << 16)
                        .connect(addr.to_string())
                })
                .buffered(64)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("nats connect: {e}"))?;
            let mut sources = Vec::with_capacity(count);
            for i in 0..count {
                let subscriber = clients[i % clients.len()]
                    .subscribe(CHANNEL)
                    .await
                    .map_err(|e| format!("nats subscribe: {e}"))?;
                sources.push(Source::Nats(subscriber));
            }
            // The server has every subscription once each connection's flush returns.
            for client in &clients {
                client
                    .flush()
                    .await
                    .map_err(|e| format!("nats flush: {e}"))?;
            }
            Ok(Subscribers {
                sources,
                _nats_clients: clients,
            })
        }
    }
}

/// `count` subscribers spread over `servers`: subscriber `i` on `servers[i % servers.len()]`
/// (a single one on the first), each server's share over connections of its own as `layout`
/// says.
async fn open_spread(
    system: System,
    servers: &[&Server],
    count: usize,
    layout: Layout,
    accept_gzip: bool,
) -> Result<Subscribers, String> {
    let mut all = Subscribers {
        sources: Vec::with_capacity(count),
        _nats_clients: Vec::new(),
    };
    for (k, server) in servers.iter().enumerate() {
        let share = (count + servers.len() - 1 - k) / servers.len();
        if share == 0 {
            continue;
        }
        let target = server.target();
        let mut opened = open_subscribers(system, &target, share, layout, accept_gzip).await?;
        all.sources.append(&mut opened.sources);
        all._nats_clients.append(&mut opened._nats_clients);
    }
    Ok(all)
}

/// The distinct servers of a run (the publisher's and the subscribers'), for their CPU time.
fn distinct<'a>(publish_on: &'a Server, subscribe_on: &[&'a Server]) -> Vec<&'a Server> {
    let mut nodes = vec![publish_on];
    for &server in subscribe_on {
        if nodes.iter().all(|node| node.pid() != server.pid()) {
            nodes.push(server);
        }
    }
    nodes
}

/// CPU time used so far by all of `servers` together; `None` if one cannot be read.
fn cpu_seconds(servers: &[&Server]) -> Option<f64> {
    servers.iter().map(|server| server.cpu_seconds()).sum()
}

/// What a subscriber's reader returns: latency samples (ns), and the gRPC bytes it received.
type ReadOutcome = (Vec<u64>, u64);

/// Reads a subscriber until told to stop, counting events; with `latency_after`, also returns
/// the publish-to-delivery latency (ns) of every event published after that time.
async fn read(
    mut source: Source,
    index: usize,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    latency_after: Option<u64>,
) -> ReadOutcome {
    let mut samples = Vec::new();
    // One `changed` future for the whole run: making one per message costs the load client
    // more than the message does.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let mut events = 0;
        let received = tokio::select! {
            biased;
            _ = &mut stopped => break,
            received = next_messages(&mut source, |message| {
                events += 1;
                if let Some(after) = latency_after
                    && let Some(ts) = load::parse_ts(message)
                    && ts >= after
                {
                    samples.push(load::now_ns().saturating_sub(ts));
                }
            }) => received,
        };
        if !received {
            break;
        }
        if events > 0 {
            counters.add(index, events);
        }
    }
    let bytes = match &source {
        Source::Grpc(stream) => stream.received_bytes(),
        Source::Nats(_) => 0,
    };
    (samples, bytes)
}

/// Waits for what arrives next and calls `each` with every event in it; false once the
/// subscriber has ended. gRPC heartbeats and other non-event messages are skipped; a
/// compressed event is handed over compressed (counted, never parsed).
async fn next_messages(source: &mut Source, mut each: impl FnMut(&[u8])) -> bool {
    match source {
        Source::Grpc(stream) => stream
            .next_messages(|message| {
                if message.is_event() {
                    each(message.bytes);
                }
            })
            .await
            .is_ok(),
        Source::Nats(subscriber) => match subscriber.next().await {
            Some(message) => {
                each(&message.payload);
                true
            }
            None => false,
        },
    }
}

struct Readers {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<ReadOutcome>>,
}

impl Readers {
    fn spawn(subscribers: Vec<Source>, latency_after: Option<u64>) -> Self {
        let counters = Arc::new(Counters::new(subscribers.len()));
        let (stop, stopped) = watch::channel(false);
        let tasks = subscribers
            .into_iter()
            .enumerate()
            .map(|(i, source)| {
                tokio::spawn(read(
                    source,
                    i,
                    counters.clone(),
                    stopped.clone(),
                    latency_after,
                ))
            })
            .collect();
        Self {
            counters,
            stop,
            tasks,
        }
    }

    /// Waits until `target` events are counted, or nothing arrived for `idle`; returns the time
    /// the last counted event arrived.
    async fn wait_for(&self, target: u64, idle: Duration, limit: Duration) -> Instant {
        wait_for(&self.counters, target, idle, limit).await
    }

    /// Stops every reader; returns their latency samples and the gRPC bytes they received.
    async fn stop(self) -> ReadOutcome {
        let _ = self.stop.send(true);
        let mut samples = Vec::new();
        let mut bytes = 0;
        for task in self.tasks {
            if let Ok((mut part, received)) = task.await {
                samples.append(&mut part);
                bytes += received;
            }
        }
        (samples, bytes)
    }
}

/// Waits until `counters` add up to `target`, or nothing arrived for `idle`, or `limit` has
/// passed; returns the time the last counted event arrived.
pub(crate) async fn wait_for(
    counters: &Counters,
    target: u64,
    idle: Duration,
    limit: Duration,
) -> Instant {
    let started = Instant::now();
    let mut last = counters.sum();
    let mut last_progress = Instant::now();
    loop {
        let now = counters.sum();
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
        if now >= target || last_progress.elapsed() > idle || started.elapsed() > limit {
            return last_progress;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How far a fan-out's publisher may run ahead of its subscribers: events up to `allowed` may
/// be published, at most a window past the average subscriber (2,000,000 / subscribers, between
/// 500 and 20,000), refreshed every millisecond. Nothing is dropped by anyone that way, and
/// the rate is the highest the subscribers take.
pub(crate) struct Window {
    /// Events up to this count may be published.
    pub(crate) allowed: Arc<AtomicU64>,
    monitor: JoinHandle<()>,
}

impl Window {
    /// Follows the average of `counters` over `subscribers`.
    pub(crate) fn follow(counters: Arc<Counters>, subscribers: usize) -> Self {
        let window = (2_000_000 / subscribers.max(1) as u64).clamp(500, 20_000);
        let allowed = Arc::new(AtomicU64::new(window));
        let monitor = {
            let allowed = allowed.clone();
            tokio::spawn(async move {
                loop {
                    let average = counters.sum() / subscribers.max(1) as u64;
                    allowed.store(average + window, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        Self { allowed, monitor }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

/// What a fan-out run counted.
#[derive(Debug, Clone, Default)]
pub struct FanOut {
    pub published: u64,
    pub delivered: u64,
    pub seconds: f64,
    pub server_cpu_seconds: Option<f64>,
    pub load_cpu_seconds: f64,
    /// gRPC bytes the subscribers received (DATA frame payloads; 0 for nats).
    pub received_bytes: u64,
}

impl FanOut {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-9)
    }
    pub fn expected(&self, subscribers: usize) -> u64 {
        self.published * subscribers as u64
    }
    /// Server CPU time per delivered event, in nanoseconds.
    pub fn server_ns_per_delivery(&self) -> Option<f64> {
        self.server_cpu_seconds
            .map(|cpu| cpu * 1e9 / self.delivered.max(1) as f64)
    }
    /// gRPC bytes received per delivered event (message headers included).
    pub fn bytes_per_delivery(&self) -> f64 {
        self.received_bytes as f64 / self.delivered.max(1) as f64
    }
}

/// What a fan-out run does.
#[derive(Debug, Clone)]
pub struct FanOutPlan {
    /// Sessions on the channel.
    pub subscribers: usize,
    /// How they share connections.
    pub layout: Layout,
    /// How long events are published for (delivery is then waited for).
    pub duration: Duration,
    /// At most this many events are published.
    pub max_events: u64,
    /// Events per publish call: 1 is `Publish`, more is `PublishBatch` (nats: always 1).
    pub batch: usize,
    /// What every event carries (a JSON string for gRPC servers, raw bytes for nats).
    pub payload: String,
    /// Subscribers send `grpc-accept-encoding: gzip` (gRPC servers only).
    pub accept_gzip: bool,
}

impl FanOutPlan {
    /// `subscribers` over `layout`, `load::payload`'s 100 bytes, one event per call, no gzip.
    pub fn new(subscribers: usize, layout: Layout, duration: Duration, max_events: u64) -> Self {
        Self {
            subscribers,
            layout,
            duration,
            max_events,
            batch: 1,
            payload: load::payload(0),
            accept_gzip: false,
        }
    }
}

/// Publishes as fast as the subscribers take the events (the publisher stays at most a window
/// of events ahead of the average subscriber: the highest rate without loss), for `duration` or
/// `max_events`, then waits for delivery. The product and the baseline take `batch` events per
/// call (`PublishBatch` when more than 1); nats is always published to one message at a time.
pub async fn fan_out(system: System, server: &Server, plan: &FanOutPlan) -> Result<FanOut, String> {
    fan_out_across(system, server, &[server], plan).await
}

/// [`fan_out`] with the publisher on `publish_on` and the subscribers spread over
/// `subscribe_on` (see `open_spread`): several product nodes sharing one store. The server CPU
/// counted is that of all of them.
pub async fn fan_out_across(
    system: System,
    publish_on: &Server,
    subscribe_on: &[&Server],
    plan: &FanOutPlan,
) -> Result<FanOut, String> {
    let FanOutPlan {
        subscribers,
        layout,
        duration,
        max_events,
        batch,
        ..
    } = *plan;
    let target = publish_on.target();
    let nodes = distinct(publish_on, subscribe_on);
    let opened = open_spread(system, subscribe_on, subscribers, layout, plan.accept_gzip).await?;
    let readers = Readers::spawn(opened.sources, None);
    let window = Window::follow(readers.counters.clone(), subscribers);
    let allowed = window.allowed.clone();
    let published = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(&nodes);
    let load_before = crate::load_cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let body = plan.payload.clone();
    match system {
        System::Product | System::Baseline => {
            let tags = (system == System::Product).then(|| vec![TAG.to_owned()]);
            let connections = load::connect_publishers(&target, 2).await?;
            let claimed = Arc::new(AtomicU64::new(0));
            // Unary: 256 calls in flight. Batched: about 2,048 events in flight, so that one
            // commit's round trip does not bound the rate.
            let in_flight = if batch == 1 {
                256
            } else {
                (2_048 / batch).max(4)
            };
            let tasks: Vec<_> = (0..in_flight)
                .map(|i| {
                    let mut publisher =
                        Publisher::new(connections[i % 2].clone(), CHANNEL, tags.clone());
                    let (claimed, allowed, published, body) = (
                        claimed.clone(),
                        allowed.clone(),
                        published.clone(),
                        body.clone(),
                    );
                    tokio::spawn(async move {
                        let batch = batch as u64;
                        loop {
                            let n = claimed.fetch_add(batch, Ordering::Relaxed);
                            if n >= max_events || Instant::now() >= deadline {
                                return Ok::<(), String>(());
                            }
                            let count = batch.min(max_events - n);
                            while n + count > allowed.load(Ordering::Relaxed) {
                                if Instant::now() >= deadline {
                                    return Ok(());
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            publisher
                                .publish_many(body.clone(), count as usize)
                                .await
                                .map_err(|e| format!("publish: {e}"))?;
                            published.fetch_add(count, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.map_err(|e| e.to_string())??;
            }
        }
        System::Nats => {
            let client = async_nats::connect(publish_on.addr.to_string())
                .await
                .map_err(|e| format!("nats connect: {e}"))?;
            let body = Bytes::from(body);
            let mut n = 0;
            while n < max_events && Instant::now() < deadline {
                if n >= allowed.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                client
                    .publish(CHANNEL, body.clone())
                    .await
                    .map_err(|e| format!("nats publish: {e}"))?;
                n += 1;
            }
            client
                .flush()
                .await
                .map_err(|e| format!("nats flush: {e}"))?;
            published.store(n, Ordering::Relaxed);
        }
    }
    let published = published.load(Ordering::Relaxed);
    let target = published * subscribers as u64;
    let last = readers
        .wait_for(target, Duration::from_secs(5), Duration::from_secs(120))
        .await;
    drop(window);
    let delivered = readers.counters.sum();
    let outcome = FanOut {
        published,
        delivered,
        seconds: last.duration_since(started).as_secs_f64(),
        server_cpu_seconds: cpu_seconds(&nodes)
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        load_cpu_seconds: crate::load_cpu_seconds() - load_before,
        received_bytes: 0,
    };
    let (_, received_bytes) = readers.stop().await;
    Ok(FanOut {
        received_bytes,
        ..outcome
    })
}

/// What a latency run measured.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub published: u64,
    pub delivered: u64,
    /// `Publish` calls that failed (not counted in `published`), and the first one's status.
    pub failed: u64,
    pub first_failure: Option<String>,
    /// Nanoseconds, sorted; events of the first tenth of the run are left out (warm-up).
    pub samples: Vec<u64>,
}

impl Latency {
    /// The `q` quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let index =
            ((self.samples.len() as f64 * q).ceil() as usize).clamp(1, self.samples.len()) - 1;
        Some(self.samples[index] as f64 / 1e6)
    }
}

/// Publishes `events` at `rate` per second (each stamped with this process's clock when sent)
/// and measures when each subscriber receives it.
pub async fn latency(
    system: System,
    server: &Server,
    subscribers: usize,
    rate: u64,
    events: u64,
) -> Result<Latency, String> {
    latency_across(system, server, &[server], subscribers, rate, events).await
}

/// [`latency`] with the publisher on `publish_on` and the subscribers spread over
/// `subscribe_on` (see `open_spread`): from a publish on one node to delivery on another.
pub async fn latency_across(
    system: System,
    publish_on: &Server,
    subscribe_on: &[&Server],
    subscribers: usize,
    rate: u64,
    events: u64,
) -> Result<Latency, String> {
    let target = publish_on.target();
    let opened = open_spread(system, subscribe_on, subscribers, Layout::Shared(4), false).await?;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let warm_up = load::now_ns() + (period * (events / 10) as u32).as_nanos() as u64;
    let readers = Readers::spawn(opened.sources, Some(warm_up));
    let published = Arc::new(AtomicU64::new(0));
    let (mut failed, mut first_failure) = (0, None);
    match system {
        System::Product | System::Baseline => {
            let tags = (system == System::Product).then(|| vec![TAG.to_owned()]);
            let connections = load::connect_publishers(&target, 2).await?;
            let mut sends = Vec::with_capacity(events as usize);
            for n in 0..events {
                tokio::time::sleep_until((started + period * n as u32).into()).await;
                let mut publisher =
                    Publisher::new(connections[n as usize % 2].clone(), CHANNEL, tags.clone());
                let published = published.clone();
                let body = load::payload(load::now_ns());
                sends.push(tokio::spawn(async move {
                    let sent = publisher.publish(body).await;
                    if sent.is_ok() {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.err()
                }));
            }
            for send in sends {
                if let Ok(Some(status)) = send.await {
                    failed += 1;
                    first_failure.get_or_insert_with(|| {
                        format!("{:?}: {}", status.code(), status.message())
                    });
                }
            }
        }
        System::Nats => {
            let client = async_nats::connect(publish_on.addr.to_string())
                .await
                .map_err(|e| format!("nats connect: {e}"))?;
            for n in 0..events {
                tokio::time::sleep_until((started + period * n as u32).into()).await;
                let body = Bytes::from(load::payload(load::now_ns()));
                client
                    .publish(CHANNEL, body)
                    .await
                    .map_err(|e| format!("nats publish: {e}"))?;
                // Sent now, not when a buffer fills: the latency is the server's.
                client
                    .flush()
                    .await
                    .map_err(|e| format!("nats flush: {e}"))?;
                published.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let published = published.load(Ordering::Relaxed);
    readers
        .wait_for(
            published * subscribers as u64,
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .await;
    let delivered = readers.counters.sum();
    let (mut samples, _) = readers.stop().await;
    samples.sort_unstable();
    Ok(Latency {
        published,
        delivered,
        failed,
        first_failure,
        samples,
    })
}

/// Server memory taken by idle sessions.
#[derive(Debug, Clone, Default)]
pub struct IdleMemory {
    pub sessions: u64,
    pub opened: u64,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl IdleMemory {
    pub fn per_session_bytes(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.opened.max(1) as f64
    }
}

/// Opens `sessions` idle sessions and reads the server's RSS growth.
pub async fn idle_memory(
    system: System,
    server: &Server,
    sessions: usize,
    layout: Layout,
) -> Result<IdleMemory, String> {
    // Warm up: one session and one event, so first-use allocations are not counted.
    let target = server.target();
    {
        let warm = open_subscribers(system, &target, 1, Layout::Shared(1), false).await?;
        let connection = load::connect_publisher(&target).await?;
        let tags = (system == System::Product).then(|| vec![TAG.to_owned()]);
        Publisher::new(connection, CHANNEL, tags)
            .publish(load::payload(0))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        drop(warm);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_bytes().unwrap_or(0);
    let opened = open_subscribers(system, &target, sessions, layout, false).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = server.rss_bytes().unwrap_or(0);
    let result = IdleMemory {
        sessions: sessions as u64,
        opened: opened.sources.len() as u64,
        rss_before,
        rss_after,
    };
    drop(opened);
    Ok(result)
}

/// Acknowledged publishes per second through the admin API.
#[derive(Debug, Clone, Default)]
pub struct DurablePublish {
    pub acknowledged: u64,
    pub seconds: f64,
    /// CPU time the server used during the run; `None` if it could not be read, or the run
    /// does not measure it (the peers' publish runs).
    pub server_cpu_seconds: Option<f64>,
    /// CPU time this process (the load) used during the run; `None` if the run does not
    /// measure it.
    pub load_cpu_seconds: Option<f64>,
}

impl DurablePublish {
    /// What publisher tasks started at `started` acknowledged in all, once every one is done.
    pub(crate) async fn total(
        tasks: Vec<tokio::task::JoinHandle<Result<u64, String>>>,
        started: std::time::Instant,
    ) -> Result<Self, String> {
        let mut acknowledged = 0;
        for task in tasks {
            acknowledged += task.await.map_err(|e| e.to_string())??;
        }
        Ok(Self {
            acknowledged,
            seconds: started.elapsed().as_secs_f64(),
            server_cpu_seconds: None,
            load_cpu_seconds: None,
        })
    }

    pub fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.seconds.max(1e-9)
    }

    /// Server CPU time per acknowledged event, in nanoseconds.
    pub fn server_ns_per_event(&self) -> Option<f64> {
        self.server_cpu_seconds
            .map(|cpu| cpu * 1e9 / self.acknowledged.max(1) as f64)
    }
}

/// `publishers` concurrent publishers, each with `in_flight` calls outstanding of `batch` events
/// each, for `duration` or `max_events` in all; with the CPU time the server and this process
/// used from the first call to the last acknowledgement.
pub async fn durable_publish(
    server: &Server,
    publishers: usize,
    in_flight: usize,
    batch: usize,
    duration: Duration,
    max_events: u64,
) -> Result<DurablePublish, String> {
    let connections = load::connect_publishers(&server.target(), publishers.min(4)).await?;
    let claimed = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu_seconds();
    let load_before = crate::load_cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..publishers * in_flight)
        .map(|i| {
            let mut publisher = Publisher::new(
                connections[(i / in_flight) % connections.len()].clone(),
                CHANNEL,
                None,
            );
            let claimed = claimed.clone();
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                loop {
                    let n = claimed.fetch_add(batch as u64, Ordering::Relaxed);
                    if n >= max_events || Instant::now() >= deadline {
                        return Ok::<u64, String>(acknowledged);
                    }
                    let count = (batch as u64).min(max_events - n);
                    publisher
                        .publish_many(load::payload(0), count as usize)
                        .await
                        .map_err(|e| format!("publish: {e}"))?;
                    acknowledged += count;
                }
            })
        })
        .collect();
    let publish = DurablePublish::total(tasks, started).await?;
    Ok(DurablePublish {
        server_cpu_seconds: server
            .cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        load_cpu_seconds: Some(crate::load_cpu_seconds() - load_before),
        ..publish
    })
}

/// A resume storm: how long until every session has caught up.
#[derive(Debug, Clone, Default)]
pub struct ResumeStorm {
    pub sessions: u64,
    pub missed: u64,
    pub caught_up: u64,
    pub delivered: u64,
    pub seconds: f64,
}

/// `sessions` sessions subscribe and go away; `missed` events are published; then all of them
/// reconnect at once with their last event id and session ticket.
pub async fn resume_storm(
    server: &Server,
    sessions: usize,
    missed: u64,
) -> Result<ResumeStorm, String> {
    let target = server.target();
    let connection = load::connect_publisher(&target).await?;
    let mut publisher = Publisher::new(connection, CHANNEL, Some(vec![TAG.to_owned()]));
    let last_seen = publisher
        .publish(load::payload(0))
        .await
        .map_err(|e| format!("publish: {e}"))?;
    // The sessions, with their tickets; then they all disconnect.
    let channels = load::connect_many(&target, 4).await?;
    let request = subscribe_request();
    let tickets = stream::iter(0..sessions)
        .map(|i| load::subscribe(channels[i % channels.len()].clone(), request.clone(), false))
        .buffered(256)
        .map(|opened| {
            opened.and_then(|s| match s.first.kind {
                Some(pb::subscribe_response::Kind::Subscribed(subscribed)) => {
                    Ok(subscribed.session_ticket)
                }
                other => Err(format!("first message was {other:?}")),
            })
        })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    drop(channels);
    // What they miss.
    let connections = load::connect_publishers(&target, 2).await?;
    stream::iter(0..missed)
        .map(|n| {
            let mut publisher = Publisher::new(
                connections[n as usize % 2].clone(),
                CHANNEL,
                Some(vec![TAG.to_owned()]),
            );
            async move { publisher.publish(load::payload(0)).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("publish: {e}"))?;
    // Everyone back at once.
    let channels = load::connect_many(&target, 4).await?;
    let token = product_token();
    let started = Instant::now();
    let tasks: Vec<_> = tickets
        .into_iter()
        .enumerate()
        .map(|(i, ticket)| {
            let request = pb::SubscribeRequest {
                token: token.clone(),
                last_event_id: Some(last_seen.clone()),
                session_ticket: Some(ticket),
            };
            let channel: Channel = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let mut opened = load::subscribe(channel, request, false).await?;
                let mut received = 0;
                while received < missed {
                    let events = opened.stream.next_messages(|message| {
                        received += u64::from(message.is_event());
                    });
                    match tokio::time::timeout(Duration::from_secs(60), events).await {
                        Ok(Ok(_)) => {}
                        // Ended or silent: reported as not caught up.
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                Ok::<_, String>((received, opened))
            })
        })
        .collect();
    let mut caught_up = 0;
    let mut delivered = 0;
    let mut keep = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (received, opened) = task.await.map_err(|e| e.to_string())??;
        delivered += received;
        caught_up += u64::from(received == missed);
        keep.push(opened);
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(keep);
    Ok(ResumeStorm {
        sessions: sessions as u64,
        missed,
        caught_up,
        delivered,
        seconds,
    })
}

/// Server memory while `sessions` sessions resume a gap of `gap` events at once.
#[derive(Debug, Clone)]
pub struct ResumeMemory {
    pub sessions: u64,
    pub gap: u64,
    /// Server RSS before the resumes, at their peak (sampled every 50 ms), and a second after
    /// the streams closed.
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    pub delivered: u64,
    pub seconds: f64,
}

/// `gap` events are published (in batches of 1,000); then `sessions` sessions resume from
/// before the first of them, all at once, and read until each has all of them.
pub async fn resume_memory(
    server: &Server,
    sessions: usize,
    gap: u64,
) -> Result<ResumeMemory, String> {
    let target = server.target();
    let connection = load::connect_publisher(&target).await?;
    let mut publisher = Publisher::new(connection, CHANNEL, Some(vec![TAG.to_owned()]));
    let before_gap = publisher
        .publish(load::payload(0))
        .await
        .map_err(|e| format!("publish: {e}"))?;
    let mut published = 0;
    while published < gap {
        let count = (gap - published).min(1_000);
        publisher
            .publish_many(load::payload(0), count as usize)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        published += count;
    }
    let rss = || server.rss_bytes().unwrap_or(0);
    let rss_before = rss();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), server.pid());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(now) = crate::servers::process_rss_bytes(pid) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let channels = load::connect_many(&target, 4).await?;
    let token = product_token();
    let started = Instant::now();
    let tasks: Vec<_> = (0..sessions)
        .map(|i| {
            let request = pb::SubscribeRequest {
                token: token.clone(),
                last_event_id: Some(before_gap.clone()),
                session_ticket: None,
            };
            let channel: Channel = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let mut opened = load::subscribe(channel, request, false).await?;
                let mut received = 0;
                while received < gap {
                    let events = opened.stream.next_messages(|message| {
                        received += u64::from(message.is_event());
                    });
                    match tokio::time::timeout(Duration::from_secs(60), events).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) | Err(_) => break,
                    }
                }
                Ok::<_, String>(received)
            })
        })
        .collect();
    let mut delivered = 0;
    for task in tasks {
        delivered += task.await.map_err(|e| e.to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(channels);
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    Ok(ResumeMemory {
        sessions: sessions as u64,
        gap,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
        rss_after: rss(),
        delivered,
        seconds,
    })
}
