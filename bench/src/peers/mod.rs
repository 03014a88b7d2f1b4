//! Durable peers side by side (`--only peers`; part of the default run): the product on its
//! default redb store, NATS JetStream and Redis Streams, each acknowledging only after its own
//! write, the same shapes in the same run: acknowledged publishes, fan-out to consumers of new
//! events, and the replay of retained events to one reader. What each acknowledgement promises
//! (JetStream 2.9 cannot be made to fsync before it acknowledges): BENCHMARKS.md, "Durable
//! peers".
//!
//! A peer whose server is not installed is left out of the run with a note, never an error.

mod jetstream;
mod redis_streams;

use std::path::PathBuf;

use serde::Serialize;

use crate::{
    Config, Row,
    scenarios::{self, DurablePublish, FanOut, FanOutPlan, Layout, System},
    servers,
};

/// The name of the NATS JetStream column.
pub const JETSTREAM: &str = "JetStream";
/// The name of the Redis Streams column.
pub const REDIS_STREAMS: &str = "Redis Streams";

/// One peer's figure in a `peers` row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerFigure {
    /// In the row's unit; `None` when it was skipped or failed.
    pub value: Option<f64>,
    /// The product's figure over this one: above 1, the product did more (rates) or spent more
    /// (server CPU per delivery).
    pub ratio: Option<f64>,
    /// What the peer's run should have counted and what it counted.
    pub expected: u64,
    pub counted: u64,
    /// Why the peer was not measured (its server is not installed), when it was not.
    pub skipped: Option<String>,
}

/// The peers' figures of one `peers` row; `None`: the peer has no such measurement here (Redis
/// Streams has no fan-out rows).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Peers {
    pub jetstream: Option<PeerFigure>,
    pub redis_streams: Option<PeerFigure>,
}

impl Peers {
    /// Each peer's ratio, from the product's figure.
    pub(crate) fn set_ratios(&mut self, product: Option<f64>) {
        for figure in [&mut self.jetstream, &mut self.redis_streams]
            .into_iter()
            .flatten()
        {
            figure.ratio = match (product, figure.value) {
                (Some(product), Some(peer)) if peer > 0.0 => Some(product / peer),
                _ => None,
            };
        }
    }
}

/// A replay of retained events to one reader.
pub(crate) struct Replay {
    pub(crate) events: u64,
    pub(crate) received: u64,
    pub(crate) seconds: f64,
}

impl Replay {
    fn rate(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }
}

/// A finished run's figure, with what it should have counted and what it counted.
struct Figure {
    value: Option<f64>,
    expected: u64,
    counted: u64,
    note: Option<String>,
}

/// The servers of the peers: found, or why they are not.
struct Installed {
    nats: Result<PathBuf, String>,
    redis: Result<PathBuf, String>,
}

impl Installed {
    fn look() -> Self {
        let find = |name: &str, package: &str| {
            servers::find_binary(name).ok_or_else(|| {
                format!("{name} is not installed (the Debian package `{package}` provides it)")
            })
        };
        Self {
            nats: find("nats-server", "nats-server"),
            redis: find("redis-server", "redis-server"),
        }
    }
}

/// A peer's run: skipped (its server is not installed), failed, or done.
enum PeerRun<T> {
    Skipped(String),
    Failed(String),
    Done(T),
}

impl<T> PeerRun<T> {
    /// Runs `run` with the peer's server binary when it is installed.
    async fn start<Fut>(
        installed: &Result<PathBuf, String>,
        run: impl FnOnce(PathBuf) -> Fut,
    ) -> Self
    where
        Fut: Future<Output = Result<T, String>>,
    {
        match installed {
            Err(why) => PeerRun::Skipped(why.clone()),
            Ok(binary) => match run(binary.clone()).await {
                Ok(done) => PeerRun::Done(done),
                Err(e) => PeerRun::Failed(e),
            },
        }
    }

    /// The peer's figure in `row`, made by `figure` of what the run returned; a failure goes
    /// to the row's errors (named `name`), the figure's note to its notes.
    fn figure(&self, row: &mut Row, name: &str, figure: impl FnOnce(&T) -> Figure) -> PeerFigure {
        match self {
            PeerRun::Skipped(why) => PeerFigure {
                skipped: Some(why.clone()),
                ..PeerFigure::default()
            },
            PeerRun::Failed(e) => {
                row.errors.push(format!("{name}: {e}"));
                PeerFigure::default()
            }
            PeerRun::Done(done) => {
                let figure = figure(done);
                if let Some(note) = figure.note {
                    row.note(note);
                }
                PeerFigure {
                    value: figure.value,
                    expected: figure.expected,
                    counted: figure.counted,
                    ..PeerFigure::default()
                }
            }
        }
    }
}

/// The product's figure in `row`, or why there is none.
fn set_product(row: &mut Row, result: Result<Figure, &String>) {
    match result {
        Ok(figure) => {
            row.product = figure.value;
            row.expected = figure.expected;
            row.counted = figure.counted;
            if let Some(note) = figure.note {
                row.note(note);
            }
        }
        Err(e) => row.errors.push(format!("product: {e}")),
    }
}

/// Every `peers` row; a note in `notes` for each peer left out.
pub(crate) async fn peer_rows(config: &Config, notes: &mut Vec<String>) -> Vec<Row> {
    let installed = Installed::look();
    for (name, found) in [
        (JETSTREAM, &installed.nats),
        (REDIS_STREAMS, &installed.redis),
    ] {
        if let Err(why) = found {
            let line = format!("{name} column skipped: {why}");
            eprintln!("{line}");
            notes.push(line);
        }
    }
    let mut rows = Vec::new();
    for &(publishers, in_flight, batch) in &config.publishers {
        rows.push(publish_row(config, &installed, publishers, in_flight, batch).await);
    }
    for &consumers in &config.peers_fan_out {
        rows.extend(fan_out_rows(config, &installed, consumers).await);
    }
    rows.push(replay_row(config, &installed).await);
    rows
}

/// What an unbounded publish run should have counted is what it counted; a bounded one, the
/// bound.
fn publish_figure(config: &Config, publish: &DurablePublish) -> Figure {
    Figure {
        value: Some(publish.acknowledged as f64 / publish.seconds.max(1e-9)),
        expected: if config.publish_max_events == u64::MAX {
            publish.acknowledged
        } else {
            config.publish_max_events
        },
        counted: publish.acknowledged,
        note: None,
    }
}

async fn publish_row(
    config: &Config,
    installed: &Installed,
    publishers: usize,
    in_flight: usize,
    batch: usize,
) -> Row {
    let case = crate::publish_case(publishers, in_flight, batch);
    eprintln!("peers: durable publish, {case}");
    let mut row = Row::new("peers: durable publish", case, "acked events/s");
    let (duration, max_events) = (config.publish_duration, config.publish_max_events);
    let product = async {
        let server = servers::start_product(&config.server_binary, false, &config.server_args)?;
        scenarios::durable_publish(&server, publishers, in_flight, batch, duration, max_events)
            .await
    }
    .await;
    set_product(
        &mut row,
        product.as_ref().map(|p| publish_figure(config, p)),
    );
    let jetstream = PeerRun::start(&installed.nats, |binary| async move {
        let server = servers::start_jetstream(&binary)?;
        jetstream::publish(&server, publishers, in_flight, batch, duration, max_events).await
    })
    .await
    .figure(&mut row, JETSTREAM, |p| publish_figure(config, p));
    let redis = PeerRun::start(&installed.redis, |_| async move {
        let server = servers::start_redis()?;
        redis_streams::publish(&server, publishers, in_flight, batch, duration, max_events).await
    })
    .await
    .figure(&mut row, REDIS_STREAMS, |p| publish_figure(config, p));
    if batch > 1 {
        row.note(format!(
            "{batch}/call: the product's PublishBatch; JetStream (2.9 has no batch publish) \
             {batch} publishes sent back to back, then their {batch} acks awaited; Redis a \
             pipeline of {batch} XADDs"
        ));
    }
    with_peers(row, Some(jetstream), Some(redis))
}

/// A fan-out's delivered events/s (with its `details` note), or its server's CPU time per
/// delivery.
fn fan_out_figure(tag: Option<&str>, outcome: &FanOut, consumers: usize) -> Figure {
    Figure {
        value: match tag {
            Some(_) => Some(outcome.rate()),
            None => outcome.server_ns_per_delivery(),
        },
        expected: outcome.expected(consumers),
        counted: outcome.delivered,
        note: tag.map(|tag| crate::fan_out_note(tag, outcome, consumers)),
    }
}

/// Two rows: delivered events/s, and the server's CPU time per delivery (the steadier figure
/// on a machine that other work shares).
async fn fan_out_rows(config: &Config, installed: &Installed, consumers: usize) -> [Row; 2] {
    let layout = Layout::Shared(config.shared_connections);
    let case = format!(
        "fan-out {consumers} consumer{}, {}",
        if consumers == 1 { "" } else { "s" },
        layout.describe()
    );
    eprintln!("peers: {case}");
    let mut rate = Row::new("peers: fan-out", &case, "delivered events/s");
    let mut cpu = Row::new(
        "peers: fan-out",
        format!("{case}, server CPU"),
        "server ns/delivery",
    );
    let (duration, max_events) = (config.fan_out_duration, config.fan_out_max_events);
    let product = async {
        let server = servers::start_product(&config.server_binary, false, &config.server_args)?;
        let plan = FanOutPlan::new(consumers, layout, duration, max_events);
        scenarios::fan_out(System::Product, &server, &plan).await
    }
    .await;
    set_product(
        &mut rate,
        product
            .as_ref()
            .map(|o| fan_out_figure(Some("product"), o, consumers)),
    );
    set_product(
        &mut cpu,
        product.as_ref().map(|o| fan_out_figure(None, o, consumers)),
    );
    let jetstream = PeerRun::start(&installed.nats, |binary| async move {
        let server = servers::start_jetstream(&binary)?;
        jetstream::fan_out(&server, consumers, layout, duration, max_events).await
    })
    .await;
    let rate_figure = jetstream.figure(&mut rate, JETSTREAM, |o| {
        fan_out_figure(Some(JETSTREAM), o, consumers)
    });
    let cpu_figure = jetstream.figure(&mut cpu, JETSTREAM, |o| fan_out_figure(None, o, consumers));
    rate.note(
        "product: sessions on one channel, Publish with 256 in flight; JetStream: ordered push \
         consumers of new messages, publishes with acks, 256 in flight; both at most a window \
         ahead of the average subscriber",
    );
    cpu.note("the server's CPU time (user + system) over the run, per delivered event");
    [
        with_peers(rate, Some(rate_figure), None),
        with_peers(cpu, Some(cpu_figure), None),
    ]
}

fn replay_figure(tag: &str, replay: &Replay) -> Figure {
    Figure {
        value: Some(replay.rate()),
        expected: replay.events,
        counted: replay.received,
        note: Some(format!(
            "{tag}: {} of {} events in {:.3} s",
            replay.received, replay.events, replay.seconds
        )),
    }
}

async fn replay_row(config: &Config, installed: &Installed) -> Row {
    let events = config.replay_events;
    let case = format!("replay {events} retained events to 1 reader");
    eprintln!("peers: {case}");
    let mut row = Row::new("peers: replay", case, "replayed events/s");
    let product = async {
        let server = servers::start_product(&config.server_binary, false, &config.server_args)?;
        let resumed = scenarios::resume_memory(&server, 1, events).await?;
        Ok::<_, String>(Replay {
            events,
            received: resumed.delivered,
            seconds: resumed.seconds,
        })
    }
    .await;
    set_product(
        &mut row,
        product.as_ref().map(|r| replay_figure("product", r)),
    );
    let jetstream = PeerRun::start(&installed.nats, |binary| async move {
        let server = servers::start_jetstream(&binary)?;
        jetstream::replay(&server, events).await
    })
    .await
    .figure(&mut row, JETSTREAM, |r| replay_figure(JETSTREAM, r));
    let redis = PeerRun::start(&installed.redis, |_| async move {
        let server = servers::start_redis()?;
        redis_streams::replay(&server, events).await
    })
    .await
    .figure(&mut row, REDIS_STREAMS, |r| replay_figure(REDIS_STREAMS, r));
    row.note(
        "product: one session resumes from before them all (Subscribe with last_event_id); \
         JetStream: an ordered push consumer of all messages, timed from its creation; Redis: \
         XREAD COUNT 1000 after the last id read, from 0-0",
    );
    with_peers(row, Some(jetstream), Some(redis))
}

fn with_peers(mut row: Row, jetstream: Option<PeerFigure>, redis: Option<PeerFigure>) -> Row {
    row.peers = Some(Peers {
        jetstream,
        redis_streams: redis,
    });
    row.ratios()
}
