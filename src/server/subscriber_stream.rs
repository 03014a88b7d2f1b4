//! One `Subscribe` stream: the `Subscribed` message and the replay, then live events,
//! heartbeats, the expiry notice, and the end with a status that tells the client what to do.
//!
//! The stream is made of *chunks*: bytes holding one or more whole gRPC messages, written to the
//! HTTP/2 stream as they are (see `subscribe_service.rs`). Live events go out as slices of their batch's
//! shared wire buffer, a run of consecutive events per chunk.

use std::{future::Future, pin::Pin, sync::Arc, task::Poll, time::Instant};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    channel::{Batch, QueueEnd, Replay, ResumeOutcome, SubscriberQueue},
    clock::{SharedClock, Sleep},
    error::Error,
    metrics::{self, EndReason},
    pb,
    session::{LiveRegistration, StreamEnd},
    store::StoreError,
    token::{self, TokenClaims},
    wire::{self, Encoding, Frame},
};

/// A stream's chunks: each holds one or more whole gRPC messages.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// Replayed events are copied into chunks of about this size (they are not shared).
const BACKLOG_CHUNK_BYTES: usize = 32 * 1024;

/// Runs smaller than this are copied together with the runs queued behind them.
const COALESCE_BYTES: usize = 16 * 1024;

/// When to send `TokenExpiring` for `claims`: `notice_ms` before it expires, or a quarter of
/// the token's lifetime before if that is shorter, so that a short-lived token is not told at
/// once, and after every refresh, that it is about to expire.
fn notice_at_ms(claims: &TokenClaims, notice_ms: u64) -> u64 {
    let lifetime_ms = claims.exp.saturating_sub(claims.iat).saturating_mul(1000);
    let exp_ms = claims.exp.saturating_mul(1000);
    exp_ms.saturating_sub(notice_ms.min(lifetime_ms / 4))
}

/// Timing of a stream's control messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamTiming {
    /// Sent after this long without any other message.
    pub heartbeat_ms: u64,
    /// `TokenExpiring` is sent this long before the token expires.
    pub expiry_notice_ms: u64,
}

/// Everything a stream needs once the subscription is open.
pub(crate) struct SubscriberStream {
    /// `Subscribed`, until sent: the first message.
    subscribed: Option<Frame>,
    /// The replay, sent before anything live; `None` once done (its slot given back).
    replay: Option<Replay>,
    subscription: SubscriberQueue,
    batch: Option<(Batch, usize)>,
    /// An event of the current batch was sent and `last_sent_ms` says when.
    batch_stamped: bool,
    /// Live events up to here were replayed (or already sent): skipped.
    last_seq: u64,
    /// The claims the stream opened with: their tags decide which events it receives (a
    /// refresh cannot change them). Shared, not copied: idle sessions are many.
    opened_with: Arc<TokenClaims>,
    claims: watch::Receiver<Arc<TokenClaims>>,
    expires_at_ms: u64,
    /// When `TokenExpiring` is due (see [`notice_at_ms`]).
    notice_at_ms: u64,
    notice_sent: bool,
    last_sent_ms: u64,
    timing: StreamTiming,
    clock: SharedClock,
    /// A run taken while coalescing that did not fit the chunk: sent next.
    pending_run: Option<Bytes>,
    /// A timer and its deadline; kept while it is due no later than the next deadline (firing
    /// early only makes the loop look again).
    timer: Option<(u64, Sleep)>,
    registration: LiveRegistration,
    done: bool,
    /// The compression of the response, if the client accepts one.
    encoding: Option<Encoding>,
    /// What the stream's end is reported with (metrics and its log line).
    report: EndReport,
}

/// What the log line and the metrics say when a stream ends.
struct EndReport {
    /// The resume outcome it opened with, as its metrics label.
    outcome: &'static str,
    started: Instant,
    /// Events sent live and replayed.
    events_sent: u64,
    /// The end was counted and logged.
    reported: bool,
}

impl SubscriberStream {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        subscribed: Option<Frame>,
        replay: Replay,
        subscription: SubscriberQueue,
        head: u64,
        registration: LiveRegistration,
        timing: StreamTiming,
        clock: SharedClock,
        shutdown: &CancellationToken,
        outcome: &ResumeOutcome,
    ) -> Self {
        // Paired with `stream_ended` in `Drop`: from here on the stream counts as live.
        metrics::stream_started(outcome);
        // Shutdown closes the queues of the streams open then (`Channels::close_subscribers`);
        // one that registered afterwards sees the cancelled token here and closes its own, so
        // it too sends what is queued and ends. No stream watches the server-wide token, which
        // every stream would poll, under one lock, each time it goes idle.
        if shutdown.is_cancelled() {
            subscription.close();
        }
        let session = registration.session().clone();
        let claims = session.watch_claims();
        let current = claims.borrow().clone();
        Self {
            subscribed,
            replay: Some(replay),
            subscription,
            batch: None,
            batch_stamped: false,
            last_seq: head,
            expires_at_ms: current.exp.saturating_mul(1000),
            notice_at_ms: notice_at_ms(&current, timing.expiry_notice_ms),
            opened_with: current,
            claims,
            notice_sent: false,
            last_sent_ms: clock.now_ms(),
            timing,
            clock,
            pending_run: None,
            timer: None,
            registration,
            done: false,
            encoding: None,
            report: EndReport {
                outcome: metrics::outcome_label(outcome),
                started: Instant::now(),
                events_sent: 0,
                reported: false,
            },
        }
    }

    /// The same stream, its events compressed with `encoding` (see [`wire::put_message_with`]).
    pub(crate) fn compressed_with(mut self, encoding: Option<Encoding>) -> Self {
        self.encoding = encoding;
        self
    }

    /// Turns the state into the chunks of the response body.
    pub(crate) fn into_chunks(self) -> ChunkStream {
        Box::pin(futures::stream::unfold(self, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        }))
    }

    fn sent(&mut self, chunk: Bytes) -> Option<Result<Bytes, Status>> {
        self.last_sent_ms = self.clock.now_ms();
        Some(Ok(chunk))
    }

    fn end(&mut self, error: Error) -> Option<Result<Bytes, Status>> {
        self.done = true;
        self.report_end(match &error {
            Error::Token(_) => EndReason::Expired,
            Error::SlowConsumer => EndReason::SlowConsumer,
            Error::Superseded => EndReason::Superseded,
            Error::Disconnected => EndReason::Disconnected,
            Error::ShuttingDown => EndReason::Shutdown,
            _ => EndReason::StoreError,
        });
        Some(Err(error.into()))
    }

    /// Counts the end and logs it, once: before the status goes out when the server ends the
    /// stream (a client that sees it can rely on the metrics having moved), on drop when the
    /// client went away.
    fn report_end(&mut self, reason: EndReason) {
        if self.report.reported {
            return;
        }
        self.report.reported = true;
        metrics::stream_ended(reason);
        let session = self.registration.session();
        tracing::info!(
            channel = %session.channel,
            session_id = %session.session_id,
            resume = self.report.outcome,
            reason = reason.label(),
            events_sent = self.report.events_sent,
            duration_ms = self.report.started.elapsed().as_millis() as u64,
            "stream ended"
        );
    }

    /// Counts a run of `events` live events about to be sent.
    fn counted_run(&mut self, events: usize, run: Bytes) -> Bytes {
        self.report.events_sent += events as u64;
        metrics::delivered(events as u64);
        run
    }

    fn take(&mut self, batch: Batch) {
        // Taken when its first run is about to go out (in this same poll of the stream).
        if let Some(committed) = batch.committed() {
            metrics::stage_took(metrics::Stage::CommittedToSent, committed);
        }
        self.batch = Some((batch, 0));
        self.batch_stamped = false;
    }

    /// The next run of consecutive events of the current batch that this session receives,
    /// as one chunk.
    fn next_run(&mut self) -> Option<Bytes> {
        let (batch, index) = self.batch.as_mut()?;
        let mut start = None;
        while let Some(event) = batch.get(*index) {
            let admitted = event.seq > self.last_seq
                && (event.filter.is_everyone()
                    || event.filter.admits(
                        &self.registration.session().session_id,
                        self.opened_with.tags(),
                    ));
            self.last_seq = self.last_seq.max(event.seq);
            match start {
                None if admitted => start = Some(*index),
                Some(first) if !admitted => {
                    let run = batch.wire_with(first..*index, self.encoding);
                    let events = *index - first;
                    *index += 1;
                    return Some(self.counted_run(events, run));
                }
                _ => {}
            }
            *index += 1;
        }
        let run = start.map(|first| {
            (
                *index - first,
                batch.wire_with(first..*index, self.encoding),
            )
        });
        self.batch = None;
        run.map(|(events, run)| self.counted_run(events, run))
    }

    /// `first`, and when it is small, the runs queued behind it copied after it into one chunk,
    /// up to [`COALESCE_BYTES`]. Events that come one per batch (publishes faster than a
    /// commit, or no commit at all) would otherwise go out one HTTP/2 DATA frame each, and each
    /// frame costs both ends more than copying its bytes. Large runs stay shared slices.
    fn with_queued_runs(&mut self, first: Bytes) -> Bytes {
        if first.len() >= COALESCE_BYTES {
            return first;
        }
        let Some(second) = self.next_queued_run() else {
            return first;
        };
        if first.len() + second.len() > COALESCE_BYTES {
            self.pending_run = Some(second);
            return first;
        }
        let mut chunk = BytesMut::with_capacity(first.len() + second.len());
        chunk.extend_from_slice(&first);
        chunk.extend_from_slice(&second);
        while chunk.len() < COALESCE_BYTES {
            let Some(run) = self.next_queued_run() else {
                break;
            };
            if chunk.len() + run.len() > COALESCE_BYTES {
                // Sent next, as the shared slice it is.
                self.pending_run = Some(run);
                break;
            }
            chunk.extend_from_slice(&run);
        }
        chunk.freeze()
    }

    /// The next run of the current batch, else of the batches queued now (without waiting);
    /// none once the session is superseded, which the loop then reports.
    fn next_queued_run(&mut self) -> Option<Bytes> {
        loop {
            if let Some(run) = self.next_run() {
                return Some(run);
            }
            if self.registration.session().ended_by().is_some() {
                return None;
            }
            // An ended queue is seen again, and reported, by the loop.
            let batch = self.subscription.try_next().ok().flatten()?;
            self.take(batch);
        }
    }

    /// `Subscribed`, then the replay's events read so far, as many as fit a chunk, copied into
    /// it with their headers.
    fn next_backlog_chunk(&mut self) -> Option<Bytes> {
        let mut chunk = BytesMut::new();
        if let Some(subscribed) = self.subscribed.take() {
            wire::put_message_with(&mut chunk, subscribed.bytes(), self.encoding);
        }
        if let Some(replay) = &mut self.replay {
            let mut replayed = 0;
            while let Some(len) = replay.peek_ready_len() {
                if !chunk.is_empty() && chunk.len() + wire::message_len(len) > BACKLOG_CHUNK_BYTES {
                    break;
                }
                let Some(event) = replay.take_ready() else {
                    break;
                };
                wire::put_message_with(&mut chunk, event.frame.bytes(), self.encoding);
                replayed += 1;
            }
            replay.progressed();
            if replayed > 0 {
                self.report.events_sent += replayed;
                metrics::replayed(replayed, replay.source());
            }
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }

    async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(chunk) = self.next_backlog_chunk() {
                return self.sent(chunk);
            }
            // The replay's next page, read once the last is sent; done, it gives back its slot.
            let Some(replay) = &mut self.replay else {
                break;
            };
            if replay.is_done() {
                self.replay = None;
                break;
            }
            if let Err(error) = replay.load().await {
                return self.end(Error::Store(error));
            }
        }
        loop {
            // The clock is read for the first run of a batch only: the rest go out in the
            // same moment (a clock read per event and subscriber was a measurable share of
            // fan-out; see BENCHMARKS.md).
            if let Some(run) = self.pending_run.take().or_else(|| self.next_run()) {
                let run = self.with_queued_runs(run);
                if !self.batch_stamped {
                    self.batch_stamped = true;
                    return self.sent(run);
                }
                return Some(Ok(run));
            }
            // Between batches the session's state is judged, busy or idle alike: the wait
            // below is reached only when the queue is empty, which a busy stream never is.
            match self.registration.session().ended_by() {
                Some(StreamEnd::Superseded) => return self.end(Error::Superseded),
                Some(StreamEnd::Disconnected) => return self.end(Error::Disconnected),
                None => {}
            }
            if self.claims.has_changed().unwrap_or(false) {
                self.apply_refreshed_claims();
            }
            let now = self.clock.now_ms();
            if now >= self.expires_at_ms {
                return self.end(token::TokenError::Expired.into());
            }
            let notice_at = self.notice_at_ms;
            if !self.notice_sent && now >= notice_at {
                self.notice_sent = true;
                let notice = pb::SubscribeResponse {
                    kind: Some(pb::subscribe_response::Kind::TokenExpiring(
                        pb::TokenExpiring {
                            token_expires_at: (self.expires_at_ms / 1000) as i64,
                        },
                    )),
                };
                return self.sent(wire::control_message(&notice));
            }
            // Queued events first: a busy stream needs no timers.
            match self.subscription.try_next() {
                Ok(Some(batch)) => {
                    self.take(batch);
                    continue;
                }
                Ok(None) => {}
                Err(end) => return self.queue_ended(end),
            }
            let heartbeat_at = self.last_sent_ms.saturating_add(self.timing.heartbeat_ms);
            if now >= heartbeat_at {
                let heartbeat = pb::SubscribeResponse {
                    kind: Some(pb::subscribe_response::Kind::Heartbeat(pb::Heartbeat {
                        server_time_ms: now as i64,
                    })),
                };
                return self.sent(wire::control_message(&heartbeat));
            }
            let mut wake_at = heartbeat_at.min(self.expires_at_ms);
            if !self.notice_sent {
                wake_at = wake_at.min(notice_at);
            }
            if self.timer.as_ref().is_none_or(|(at, _)| *at > wake_at) {
                self.timer = Some((wake_at, self.clock.sleep_until(wake_at)));
            }
            // Idle: one waker, registered with the queue and the session (a few atomic
            // operations), wakes the loop for a batch, a closed queue, a refreshed token or
            // being superseded; the timer for heartbeats and expiry. Everything is judged
            // again at the top of the loop. (A select over a future per source registered and
            // dropped a waiter under a lock for each, once per event at low rates.)
            let session = self.registration.session();
            let (subscription, claims) = (&self.subscription, &self.claims);
            let (_, timer) = self.timer.as_mut().expect("set above");
            let timed_out = std::future::poll_fn(|cx| {
                subscription.register(cx.waker());
                session.register_stream(cx.waker());
                if subscription.is_ready()
                    || session.ended_by().is_some()
                    || claims.has_changed().unwrap_or(false)
                {
                    return Poll::Ready(false);
                }
                Pin::new(&mut *timer).poll(cx).map(|()| true)
            })
            .await;
            if timed_out {
                self.timer = None;
            }
        }
    }

    /// Takes the expiry of the session's refreshed token; a later one earns a new notice.
    fn apply_refreshed_claims(&mut self) {
        let claims = self.claims.borrow_and_update().clone();
        let expires_at_ms = claims.exp.saturating_mul(1000);
        if expires_at_ms > self.expires_at_ms {
            self.notice_sent = false;
        }
        self.expires_at_ms = expires_at_ms;
        self.notice_at_ms = notice_at_ms(&claims, self.timing.expiry_notice_ms);
    }

    fn queue_ended(&mut self, end: QueueEnd) -> Option<Result<Bytes, Status>> {
        match end {
            QueueEnd::Overflowed => self.end(Error::SlowConsumer),
            QueueEnd::Closed => self.end(Error::ShuttingDown),
            QueueEnd::StoreLost => self.end(Error::Store(StoreError::Unavailable(
                "this node lost the event store: reconnect and resume from the last id".into(),
            ))),
        }
    }
}

impl Drop for SubscriberStream {
    /// A stream the server did not end was dropped: the client went away.
    fn drop(&mut self) {
        self.report_end(EndReason::Client);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn the_expiry_notice_comes_at_most_a_quarter_of_the_lifetime_early() {
        let token = |iat: u64, exp: u64| TokenClaims::new("c", iat, exp - iat);
        // A long token: the configured 30 s.
        assert_eq!(notice_at_ms(&token(1_000, 4_600), 30_000), 4_570_000);
        // A 20 s token: 5 s before it expires, not at once.
        assert_eq!(notice_at_ms(&token(1_000, 1_020), 30_000), 1_015_000);
        // A token that expires as it is issued: no earlier than its expiry.
        assert_eq!(notice_at_ms(&token(1_000, 1_000), 30_000), 1_000_000);
    }
    use crate::{
        channel::{Channels, HubLimits},
        clock::ManualClock,
        filter::Filter,
        store::MemoryStore,
    };

    const NOW_MS: u64 = 1_000_000;

    fn channels(clock: &SharedClock) -> Arc<Channels> {
        let limits = HubLimits {
            subscriber_queue: 100_000,
            max_batch: 1_024,
            replay: crate::channel::ReplayLimits::default(),
        };
        Arc::new(Channels::new(
            Arc::new(MemoryStore::new(3_600_000)),
            clock.clone(),
            limits,
        ))
    }

    /// A live stream on channel `c` for session `session`, opened under `shutdown`.
    async fn stream(
        channels: &Channels,
        clock: &SharedClock,
        session: &str,
        shutdown: &CancellationToken,
    ) -> ChunkStream {
        let everyone: crate::channel::Admits = Arc::new(|_: &Filter| true);
        let opened = channels.open("c", None, everyone).await.ok().unwrap();
        let claims = Arc::new(TokenClaims::new("c", NOW_MS / 1000, 3_600));
        let registration = channels.sessions().register(session.into(), claims);
        let timing = StreamTiming {
            heartbeat_ms: 3_600_000,
            expiry_notice_ms: 1,
        };
        SubscriberStream::new(
            None,
            opened.replay,
            opened.subscription,
            opened.head,
            registration,
            timing,
            clock.clone(),
            shutdown,
            &ResumeOutcome::default(),
        )
        .into_chunks()
    }

    async fn publish(channels: &Channels, payloads: impl IntoIterator<Item = Vec<u8>>) {
        let events = payloads
            .into_iter()
            .map(|p| crate::channel::Publication::new(Bytes::from(p), Filter::everyone()))
            .collect();
        channels.publish_many("c", events).await.ok().unwrap();
    }

    #[tokio::test]
    async fn coalescing_stops_at_its_limit_and_a_large_run_stays_a_slice_of_its_batch() {
        let clock: SharedClock = Arc::new(ManualClock::new(NOW_MS));
        let channels = channels(&clock);
        let mut chunks = stream(&channels, &clock, "s", &CancellationToken::new()).await;
        publish(&channels, [b"x".to_vec()]).await;
        publish(&channels, (0..1_000).map(|_| vec![b'y'; 1_024])).await;

        let first = chunks.next().await.unwrap().unwrap();
        assert!(first.len() <= COALESCE_BYTES, "{} bytes", first.len());
        assert_eq!(wire::messages(&first).count(), 1);
        let second = chunks.next().await.unwrap().unwrap();
        assert_eq!(wire::messages(&second).count(), 1_000);
    }

    #[tokio::test]
    async fn a_stream_opened_after_shutdown_ends_at_once_whatever_is_published() {
        let clock: SharedClock = Arc::new(ManualClock::new(NOW_MS));
        let channels = channels(&clock);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        channels.close_subscribers();
        let mut chunks = stream(&channels, &clock, "late", &shutdown).await;
        // Publishers that go on during the shutdown do not keep it open.
        for n in 0..50u8 {
            publish(&channels, [vec![n]]).await;
        }
        let end = chunks.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        assert!(chunks.next().await.is_none());
    }
}
