//! The soak's publishers: one writer per channel, at a steady rate, through all three ways in:
//! unary `Publish` and `PublishBatch` on the admin API, and `Invoke` of the relay object's
//! `publish` method (what the standalone binary serves on every channel) on the client API.
//!
//! A writer sends one call at a time and waits for its acknowledgement, so its counters are in
//! id order (see `sequence.rs`). Every 100 ms it publishes what the rate says is due: one event
//! by `Publish`, the rest in one `PublishBatch` (a writer that fell behind catches up in the
//! batch), then the invokes that are due.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use durable_iterator::{
    json,
    pb::{
        self, durable_iterator_admin_client::DurableIteratorAdminClient,
        durable_iterator_client::DurableIteratorClient,
    },
    relay,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Channel};

use super::{
    Minter, TAG,
    sequence::{self, Via},
    tally::Tally,
};
use crate::servers::API_KEY;

/// A call that has not answered in this long counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One channel of the soak, shared by its writer and its subscribers.
#[derive(Debug)]
pub(crate) struct ChannelState {
    pub(crate) index: usize,
    pub(crate) name: String,
    /// Counters handed out so far: the next event's counter.
    pub(crate) assigned: AtomicU64,
}

/// What a writer sends per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) events: f64,
    pub(crate) invokes: f64,
}

/// What a writer did, for the loss count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    /// The counter after the last one sent: every subscriber of the channel must reach it.
    pub(crate) next: u64,
    /// Counters of calls that failed: maybe stored, maybe not.
    pub(crate) unacknowledged: Vec<u64>,
}

/// Writes to `channel` at `rates` until `stop`.
pub(crate) async fn write(
    channel: Arc<ChannelState>,
    connection: Channel,
    rates: Rates,
    minter: Arc<Minter>,
    tally: Arc<Tally>,
    stop: CancellationToken,
) -> Written {
    let mut writer = Writer {
        admin: DurableIteratorAdminClient::new(connection.clone()),
        client: DurableIteratorClient::new(connection),
        channel,
        minter,
        tally,
        written: Written::default(),
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut events_sent, mut invokes_sent) = (0u64, 0u64);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let seconds = started.elapsed().as_secs_f64();
        let events_due = (rates.events * seconds) as u64 - events_sent;
        if events_due > 0 {
            writer.publish().await;
            if events_due > 1 {
                writer.publish_batch(events_due - 1).await;
            }
            events_sent += events_due;
        }
        let invokes_due = (rates.invokes * seconds) as u64 - invokes_sent;
        for _ in 0..invokes_due {
            writer.invoke().await;
        }
        invokes_sent += invokes_due;
    }
    writer.written
}

struct Writer {
    admin: DurableIteratorAdminClient<Channel>,
    client: DurableIteratorClient<Channel>,
    channel: Arc<ChannelState>,
    minter: Arc<Minter>,
    tally: Arc<Tally>,
    written: Written,
}

impl Writer {
    /// The next `count` counters.
    fn take(&mut self, count: u64) -> std::ops::Range<u64> {
        let first = self.written.next;
        self.written.next += count;
        self.channel
            .assigned
            .store(self.written.next, Ordering::Relaxed);
        first..self.written.next
    }

    fn event(&self, counter: u64, via: Via) -> pb::PublishRequest {
        let text = sequence::payload(self.channel.index, counter, via);
        pb::PublishRequest {
            channel: self.channel.name.clone(),
            payload: Some(pb::publish_request::Payload::Json(json::to_proto(
                &serde_json::Value::String(text),
            ))),
            tags: Some(pb::StringList {
                values: vec![TAG.to_owned()],
            }),
            targets: None,
            exclude: Vec::new(),
            idempotency_key: None,
        }
    }

    fn acknowledged(&self, events: u64) {
        self.tally.published.fetch_add(events, Ordering::Relaxed);
    }

    fn failed(&mut self, who: &'static str, counters: std::ops::Range<u64>, status: Status) {
        self.tally.problem(
            who,
            "call failed",
            Some(status.code()),
            status.message().to_owned(),
        );
        self.written.unacknowledged.extend(counters);
    }

    async fn publish(&mut self) {
        let counters = self.take(1);
        let request = authorized(self.event(counters.start, Via::Publish));
        let mut admin = self.admin.clone();
        match timed(admin.publish(request)).await {
            Ok(_) => {
                self.acknowledged(1);
                self.tally.publish_calls.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => self.failed("publisher (Publish)", counters, status),
        }
    }

    async fn publish_batch(&mut self, count: u64) {
        let counters = self.take(count);
        let events = counters
            .clone()
            .map(|counter| self.event(counter, Via::PublishBatch))
            .collect();
        let request = authorized(pb::PublishBatchRequest { events });
        let mut admin = self.admin.clone();
        match timed(admin.publish_batch(request)).await {
            Ok(_) => {
                self.acknowledged(count);
                self.tally.batch_calls.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => self.failed("publisher (PublishBatch)", counters, status),
        }
    }

    async fn invoke(&mut self) {
        let counters = self.take(1);
        let input = relay::RelayPublish {
            payload: serde_json::Value::String(sequence::payload(
                self.channel.index,
                counters.start,
                Via::Invoke,
            )),
            tags: Some(vec![TAG.to_owned()]),
            exclude_self: false,
        };
        let input = match serde_json::to_value(&input) {
            Ok(input) => input,
            Err(e) => return self.failed("invoker", counters, Status::internal(e.to_string())),
        };
        let request = pb::InvokeRequest {
            token: self.minter.mint(&self.channel.name, 60),
            session_ticket: None,
            path: relay::PUBLISH
                .path()
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            input: Some(json::to_proto(&input)),
        };
        let mut client = self.client.clone();
        match timed(client.invoke(request)).await {
            Ok(_) => {
                self.acknowledged(1);
                self.tally.invokes.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => self.failed("invoker", counters, status),
        }
    }
}

/// `message` with the benchmark's API key.
fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {API_KEY}").parse().expect("ascii"),
    );
    request
}

async fn timed<T>(call: impl std::future::Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within 30 s")))
}
