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
    /// The product's figure over this one (every `peers` row is a rate: above 1, the product
    /// did more).
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
    value: f64,
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

/// Runs one peer's measurement when its server is installed and puts its figure (or why there
/// is none) in a `PeerFigure`; a failure goes to the row's errors, a note to its notes.
async fn measure<Fut>(
    row: &mut Row,
    name: &str,
    installed: &Result<PathBuf, String>,
    run: impl FnOnce(PathBuf) -> Fut,
) -> PeerFigure
where
    Fut: Future<Output = Result<Figure, String>>,
{
    let binary = match installed {
        Ok(binary) => binary.clone(),
        Err(why) => {
            return PeerFigure {
                skipped: Some(why.clone()),
                ..PeerFigure::default()
            };
        }
    };
    match run(binary).await {
        Ok(figure) => {
            if let Some(note) = figure.note {
                row.note(note);
            }
            PeerFigure {
                value: Some(figure.value),
                expected: figure.expected,
                counted: figure.counted,
                ..PeerFigure::default()
            }
        }
        Err(e) => {
            row.errors.push(format!("{name}: {e}"));
            PeerFigure::default()
        }
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
        rows.push(fan_out_row(config, &installed, consumers).await);
    }
    rows.push(replay_row(config, &installed).await);
    rows
}

/// What an unbounded publish run should have counted is what it counted; a bounded one, the
/// bound.
fn publish_figure(config: &Config, publish: &DurablePublish) -> Figure {
    Figure {
        value: publish.acknowledged as f64 / publish.seconds.max(1e-9),
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
    match product {
        Ok(publish) => {
            let figure = publish_figure(config, &publish);
            row.product = Some(figure.value);
            row.expected = figure.expected;
            row.counted = figure.counted;
        }
        Err(e) => row.errors.push(format!("product: {e}")),
    }
    let jetstream = measure(&mut row, JETSTREAM, &installed.nats, |binary| async move {
        let server = servers::start_jetstream(&binary)?;
        let publish =
            jetstream::publish(&server, publishers, in_flight, batch, duration, max_events).await?;
        Ok(publish_figure(config, &publish))
    })
    .await;
    let redis = measure(&mut row, REDIS_STREAMS, &installed.redis, |_| async move {
        let server = servers::start_redis()?;
        let publish =
            redis_streams::publish(&server, publishers, in_flight, batch, duration, max_events)
                .await?;
        Ok(publish_figure(config, &publish))
    })
    .await;
    if batch > 1 {
        row.note(format!(
            "{batch}/call: the product's PublishBatch; JetStream (2.9 has no batch publish) \
             {batch} publishes sent back to back, then their {batch} acks awaited; Redis a \
             pipeline of {batch} XADDs"
        ));
    }
    with_peers(row, Some(jetstream), Some(redis))
}

fn fan_out_figure(tag: &str, outcome: &FanOut, consumers: usize) -> Figure {
    Figure {
        value: outcome.rate(),
        expected: outcome.expected(consumers),
        counted: outcome.delivered,
        note: Some(crate::fan_out_note(tag, outcome, consumers)),
    }
}

async fn fan_out_row(config: &Config, installed: &Installed, consumers: usize) -> Row {
    let layout = Layout::Shared(config.shared_connections);
    let case = format!(
        "fan-out {consumers} consumer{}, {}",
        if consumers == 1 { "" } else { "s" },
        layout.describe()
    );
    eprintln!("peers: {case}");
    let mut row = Row::new("peers: fan-out", case, "delivered events/s");
    let (duration, max_events) = (config.fan_out_duration, config.fan_out_max_events);
    let product = async {
        let server = servers::start_product(&config.server_binary, false, &config.server_args)?;
        let plan = FanOutPlan::new(consumers, layout, duration, max_events);
        scenarios::fan_out(System::Product, &server, &plan).await
    }
    .await;
    match product {
        Ok(outcome) => {
            let figure = fan_out_figure("product", &outcome, consumers);
            row.product = Some(figure.value);
            row.expected = figure.expected;
            row.counted = figure.counted;
            row.note(figure.note.unwrap_or_default());
        }
        Err(e) => row.errors.push(format!("product: {e}")),
    }
    let jetstream = measure(&mut row, JETSTREAM, &installed.nats, |binary| async move {
        let server = servers::start_jetstream(&binary)?;
        let outcome = jetstream::fan_out(&server, consumers, layout, duration, max_events).await?;
        Ok(fan_out_figure(JETSTREAM, &outcome, consumers))
    })
    .await;
    row.note(
        "product: sessions on one channel, Publish with 256 in flight; JetStream: ordered push \
         consumers of new messages, publishes with acks, 256 in flight; both at most a window \
         ahead of the average subscriber",
    );
    with_peers(row, Some(jetstream), None)
}

fn replay_figure(tag: &str, replay: &Replay) -> Figure {
    Figure {
        value: replay.rate(),
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
    match product {
        Ok(replay) => {
            let figure = replay_figure("product", &replay);
            row.product = Some(figure.value);
            row.expected = figure.expected;
            row.counted = figure.counted;
            row.note(figure.note.unwrap_or_default());
        }
        Err(e) => row.errors.push(format!("product: {e}")),
    }
    let jetstream = measure(&mut row, JETSTREAM, &installed.nats, |binary| async move {
        let server = servers::start_jetstream(&binary)?;
        let replay = jetstream::replay(&server, events).await?;
        Ok(replay_figure(JETSTREAM, &replay))
    })
    .await;
    let redis = measure(&mut row, REDIS_STREAMS, &installed.redis, |_| async move {
        let server = servers::start_redis()?;
        let replay = redis_streams::replay(&server, events).await?;
        Ok(replay_figure(REDIS_STREAMS, &replay))
    })
    .await;
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
