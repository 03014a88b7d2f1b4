//! The soak's subscribers, on raw tonic so that every end of every stream is seen with its
//! status: the product's clients would reconnect quietly, and a soak must count what ended a
//! stream, not only that it came back.
//!
//! Each reconnects as the clients do: at once, with the last event id it received and its
//! session ticket (or, before its first event, the stream's `position`), and checks that the
//! resume recovered everything. Two kinds:
//!
//! - **readers** read at full speed; the churn drops their stream now and then (they resume at
//!   once), and they swap their short-lived token on the live stream (`RefreshToken`) before it
//!   expires. The server must never end their stream.
//! - **slow consumers**, on connections with a small HTTP/2 window, read for a while, then stop
//!   reading until their channel is far enough ahead that the server's queue for them must
//!   have overflowed, then read on: the stream must end with `RESOURCE_EXHAUSTED` ("slow
//!   consumer"), and they resume from the store.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use durable_iterator::{
    clock::{Clock, SystemClock},
    pb::{self, durable_iterator_client::DurableIteratorClient, subscribe_response::Kind},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming, transport::Channel};

use super::{
    Minter,
    sequence::{self, Observed, Sequence},
    tally::Tally,
    writer::ChannelState,
};

/// Longest wait for `Subscribed`, and for a `RefreshToken` answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Slow consumers live this long on one token: they do not refresh (a stalled stream is ended
/// as a slow consumer, not as expired).
const SLOW_TOKEN_TTL_SECONDS: u64 = 3_600;

/// A slow consumer that reads again counts as caught up (the server did not end it) when it
/// is this close to what its channel's writer has sent: the writer's calls in flight.
const CAUGHT_UP_SLACK: u64 = 20;

/// What every subscriber shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tally: Arc<Tally>,
    pub(crate) minter: Arc<Minter>,
    pub(crate) channels: Vec<Arc<ChannelState>>,
    /// Readers' tokens live this long and are swapped this long before they expire (plus a
    /// random part of as much again, so that refreshes spread out).
    pub(crate) token_ttl_seconds: u64,
    pub(crate) refresh_before: Duration,
    pub(crate) slow: SlowPlan,
    /// Subscribers whose first stream is open.
    pub(crate) opened: AtomicUsize,
    /// Publishing has stopped and `targets` holds each channel's final counter: read until
    /// there, then end.
    pub(crate) drain: CancellationToken,
    pub(crate) targets: OnceLock<Vec<u64>>,
    /// End now, wherever you are.
    pub(crate) stop: CancellationToken,
}

/// How slow consumers behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowPlan {
    /// Read at full speed this long after each (re)connect or catch-up.
    pub(crate) read: Duration,
    /// Then stall until the channel is this many events ahead...
    pub(crate) backlog: u64,
    /// ...or this long has passed.
    pub(crate) max_stall: Duration,
}

/// One subscriber.
pub(crate) struct Member {
    pub(crate) index: usize,
    pub(crate) channel: usize,
    pub(crate) connection: Channel,
}

/// A session across its streams: what it needs to resume, and its check of the counters.
struct Session {
    who: &'static str,
    channel: Arc<ChannelState>,
    grpc: DurableIteratorClient<Channel>,
    shared: Arc<Shared>,
    token_ttl_seconds: u64,
    token: String,
    token_expires_at_ms: u64,
    ticket: Option<String>,
    last_event_id: Option<String>,
    heartbeat: Duration,
    sequence: Sequence,
    opened: bool,
    /// Spreads this session's refreshes (a fraction of `refresh_before`).
    jitter: f64,
}

impl Session {
    fn new(who: &'static str, shared: Arc<Shared>, member: Member, token_ttl: u64) -> Self {
        let channel = shared.channels[member.channel].clone();
        let token = shared.minter.mint(&channel.name, token_ttl);
        // Golden-ratio steps spread the sessions' jitter evenly over [0, 1).
        let jitter = (member.index as f64 * 0.618_033_988_75).fract();
        Self {
            who,
            grpc: DurableIteratorClient::new(member.connection),
            token_expires_at_ms: (SystemClock.now_secs() + token_ttl) * 1000,
            token,
            channel,
            shared,
            token_ttl_seconds: token_ttl,
            ticket: None,
            last_event_id: None,
            heartbeat: Duration::from_secs(15),
            sequence: Sequence::default(),
            opened: false,
            jitter,
        }
    }

    fn problem(&self, what: &'static str, code: Option<Code>, message: impl Into<String>) {
        self.shared.tally.problem(self.who, what, code, message);
    }

    /// Opens a stream, retrying (every 200 ms) until it opens; `None` once told to stop.
    async fn open(&mut self) -> Option<Streaming<pb::SubscribeResponse>> {
        loop {
            if self.shared.stop.is_cancelled() {
                return None;
            }
            // A token that would expire before its refresh is due is replaced first.
            let left_ms = self
                .token_expires_at_ms
                .saturating_sub(SystemClock.now_ms());
            if left_ms < self.shared.refresh_before.as_millis() as u64 + 2_000 {
                self.token = self
                    .shared
                    .minter
                    .mint(&self.channel.name, self.token_ttl_seconds);
                self.token_expires_at_ms = (SystemClock.now_secs() + self.token_ttl_seconds) * 1000;
            }
            let request = pb::SubscribeRequest {
                token: self.token.clone(),
                last_event_id: self.last_event_id.clone(),
                session_ticket: self.ticket.clone(),
            };
            let mut grpc = self.grpc.clone();
            let opening = async move {
                let mut stream = grpc.subscribe(request).await?.into_inner();
                let first = stream.message().await?;
                Ok::<_, Status>((stream, first))
            };
            let opened = tokio::select! {
                _ = self.shared.stop.cancelled() => return None,
                opened = tokio::time::timeout(CALL_TIMEOUT, opening) => opened,
            };
            match opened {
                Ok(Ok((
                    stream,
                    Some(pb::SubscribeResponse {
                        kind: Some(Kind::Subscribed(subscribed)),
                    }),
                ))) => {
                    self.went_live(subscribed);
                    return Some(stream);
                }
                Ok(Ok((_, other))) => self.problem(
                    "subscribe",
                    None,
                    format!("the first message was not Subscribed: {other:?}"),
                ),
                Ok(Err(status)) => self.problem(
                    "subscribe refused",
                    Some(status.code()),
                    status.message().to_owned(),
                ),
                Err(_) => self.problem("subscribe", None, "no Subscribed within 30 s"),
            }
            tokio::select! {
                _ = self.shared.stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn went_live(&mut self, subscribed: pb::Subscribed) {
        if let Some(resume) = &subscribed.resume
            && resume.requested
            && !resume.recovered
        {
            self.problem(
                "resume not recovered",
                None,
                format!(
                    "{:?}, {} replayed, oldest retained {:?}",
                    resume.failure(),
                    resume.replayed,
                    resume.oldest_retained_id
                ),
            );
        }
        if subscribed.channel != self.channel.name {
            self.problem(
                "subscribe",
                None,
                format!("Subscribed names channel {:?}", subscribed.channel),
            );
        }
        if self.last_event_id.is_none() && !subscribed.position.is_empty() {
            self.last_event_id = Some(subscribed.position);
        }
        self.ticket = Some(subscribed.session_ticket);
        self.token_expires_at_ms = (subscribed.token_expires_at.max(0) as u64) * 1000;
        if subscribed.heartbeat_interval_ms > 0 {
            self.heartbeat = Duration::from_millis(u64::from(subscribed.heartbeat_interval_ms));
        }
        if !self.opened {
            self.opened = true;
            self.shared.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes in one message of the stream.
    fn receive(&mut self, message: pb::SubscribeResponse) {
        let Some(Kind::Event(event)) = message.kind else {
            return;
        };
        self.shared.tally.delivered.fetch_add(1, Ordering::Relaxed);
        let text = match &event.payload {
            Some(pb::event::Payload::Json(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(text)),
            })) => Some(text.as_str()),
            _ => None,
        };
        match text.and_then(sequence::parse) {
            Some((channel, _)) if channel != self.channel.index => self.problem(
                "event of another channel",
                None,
                format!("channel {channel} on {}", self.channel.name),
            ),
            Some((_, counter)) => match self.sequence.observe(counter) {
                Observed::InOrder => {}
                Observed::Gap(_) => self.problem("counters skipped", None, "a gap in the events"),
                Observed::OutOfOrder => self.problem("counter out of order", None, ""),
                Observed::Duplicate => self.problem("counter repeated", None, ""),
            },
            None => self.problem("event without a soak counter", None, event.id.clone()),
        }
        self.last_event_id = Some(event.id);
    }

    /// Whether publishing has stopped and this session has every event of its channel.
    fn done(&self) -> bool {
        self.shared
            .targets
            .get()
            .is_some_and(|targets| self.sequence.next >= targets[self.channel.index])
    }

    /// When to refresh the token: `refresh_before` (and this session's share of as much again)
    /// before it expires.
    fn refresh_at(&self) -> tokio::time::Instant {
        let before = self.shared.refresh_before.mul_f64(1.0 + self.jitter);
        let at_ms = self
            .token_expires_at_ms
            .saturating_sub(before.as_millis() as u64);
        let wait = at_ms.saturating_sub(SystemClock.now_ms());
        tokio::time::Instant::now() + Duration::from_millis(wait)
    }

    /// Swaps a new token on the live stream; false if refused (then try again soon).
    async fn refresh(&mut self) -> bool {
        let token = self
            .shared
            .minter
            .mint(&self.channel.name, self.token_ttl_seconds);
        let request = pb::RefreshTokenRequest {
            session_ticket: self.ticket.clone().unwrap_or_default(),
            token: token.clone(),
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT, self.grpc.refresh_token(request)).await;
        match answer {
            Ok(Ok(response)) => {
                self.shared.tally.refreshes.fetch_add(1, Ordering::Relaxed);
                self.token = token;
                self.token_expires_at_ms =
                    (response.into_inner().token_expires_at.max(0) as u64) * 1000;
                true
            }
            Ok(Err(status)) => {
                self.problem(
                    "refresh refused",
                    Some(status.code()),
                    status.message().to_owned(),
                );
                false
            }
            Err(_) => {
                self.problem("refresh refused", None, "no answer within 30 s");
                false
            }
        }
    }

    /// The stream ended with `status` (or cleanly, `None`): counts it; the caller reconnects.
    fn ended(&self, status: Option<Status>, stalled: bool) {
        match status {
            Some(status) if is_slow_consumer_end(&status) => {
                let tally = &self.shared.tally;
                let counter = if stalled {
                    &tally.slow_ends_of_stalled
                } else {
                    &tally.slow_ends_of_readers
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Some(status) => self.problem(
                "stream ended",
                Some(status.code()),
                status.message().to_owned(),
            ),
            None => self.problem("stream ended", Some(Code::Ok), "without a status"),
        }
    }
}

/// The status the server ends a slow consumer's stream with (the clients resume on it).
fn is_slow_consumer_end(status: &Status) -> bool {
    status.code() == Code::ResourceExhausted && status.message().contains("slow consumer")
}

/// A reader: reads at full speed, is dropped and resumes when `churn` says so, refreshes its
/// token on the live stream. Returns its check of the counters.
pub(crate) async fn reader(shared: Arc<Shared>, member: Member, churn: Arc<Notify>) -> Sequence {
    let ttl = shared.token_ttl_seconds;
    let mut session = Session::new("subscriber", shared.clone(), member, ttl);
    let mut draining = false;
    'connect: loop {
        let Some(mut stream) = session.open().await else {
            break;
        };
        // One of each wake-up per stream, not per message: the readers are many.
        let refresh = tokio::time::sleep_until(session.refresh_at());
        let liveness = tokio::time::sleep(session.heartbeat.mul_f64(2.5));
        let churned = churn.notified();
        let stopped = shared.stop.cancelled();
        let drained = shared.drain.cancelled();
        tokio::pin!(refresh, liveness, churned, stopped, drained);
        let mut heard = false;
        loop {
            if draining && session.done() {
                break 'connect;
            }
            let message = tokio::select! {
                biased;
                _ = &mut stopped => break 'connect,
                _ = &mut drained, if !draining => {
                    draining = true;
                    continue;
                }
                _ = &mut churned, if !draining => {
                    shared.tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
                _ = &mut refresh => {
                    let next = if session.refresh().await {
                        session.refresh_at()
                    } else {
                        tokio::time::Instant::now() + Duration::from_secs(1)
                    };
                    refresh.as_mut().reset(next);
                    continue;
                }
                _ = &mut liveness => {
                    // The clients' rule: nothing (event or heartbeat) for 2.5 intervals.
                    if !heard {
                        session.problem(
                            "stream silent",
                            None,
                            "no event or heartbeat within 2.5 heartbeat intervals",
                        );
                        continue 'connect;
                    }
                    heard = false;
                    liveness.as_mut().reset(tokio::time::Instant::now() + session.heartbeat.mul_f64(2.5));
                    continue;
                }
                message = stream.message() => message,
            };
            match message {
                Ok(Some(message)) => {
                    heard = true;
                    session.receive(message);
                }
                Ok(None) => {
                    session.ended(None, false);
                    continue 'connect;
                }
                Err(status) => {
                    session.ended(Some(status), false);
                    continue 'connect;
                }
            }
        }
    }
    session.sequence
}

/// Where a slow consumer is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Reading at full speed until then.
    Reading(Instant),
    /// Not reading since then.
    Stalled(Instant),
    /// Reading at full speed after a stall: the server has ended the stream (its end is on
    /// the way) or the reader catches up.
    CatchingUp,
}

/// A slow consumer: reads, stalls until the server must have ended it, reads what is left
/// and the end, resumes. Returns its check of the counters.
pub(crate) async fn slow_consumer(shared: Arc<Shared>, member: Member) -> Sequence {
    let plan = shared.slow;
    let mut session = Session::new(
        "slow consumer",
        shared.clone(),
        member,
        SLOW_TOKEN_TTL_SECONDS,
    );
    let mut draining = false;
    'connect: loop {
        let Some(mut stream) = session.open().await else {
            break;
        };
        let mut phase = if draining {
            Phase::CatchingUp
        } else {
            Phase::Reading(Instant::now() + plan.read)
        };
        loop {
            if draining && session.done() {
                break 'connect;
            }
            if let Phase::Stalled(since) = phase {
                tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => break 'connect,
                    _ = shared.drain.cancelled(), if !draining => draining = true,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                let sent = session.channel.assigned.load(Ordering::Relaxed);
                let behind = sent.saturating_sub(session.sequence.next);
                if draining || behind >= plan.backlog || since.elapsed() >= plan.max_stall {
                    phase = Phase::CatchingUp;
                }
                continue;
            }
            let read_until = match phase {
                Phase::Reading(until) => Some(until),
                _ => None,
            };
            let message = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break 'connect,
                _ = shared.drain.cancelled(), if !draining => {
                    draining = true;
                    phase = Phase::CatchingUp;
                    continue;
                }
                _ = sleep_until(read_until) => {
                    phase = Phase::Stalled(Instant::now());
                    continue;
                }
                message = stream.message() => message,
            };
            match message {
                Ok(Some(message)) => {
                    session.receive(message);
                    let sent = session.channel.assigned.load(Ordering::Relaxed);
                    if phase == Phase::CatchingUp
                        && !draining
                        && session.sequence.next + CAUGHT_UP_SLACK >= sent
                    {
                        shared
                            .tally
                            .stalls_not_ended
                            .fetch_add(1, Ordering::Relaxed);
                        phase = Phase::Reading(Instant::now() + plan.read);
                    }
                }
                Ok(None) => {
                    session.ended(None, true);
                    continue 'connect;
                }
                Err(status) => {
                    session.ended(Some(status), phase == Phase::CatchingUp);
                    continue 'connect;
                }
            }
        }
    }
    session.sequence
}

/// Completes at `at`, never if `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
