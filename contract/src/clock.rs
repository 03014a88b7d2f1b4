//! Time, injected: everything that depends on wall-clock time (token expiry, heartbeats,
//! retention) asks a [`Clock`], so tests move time by hand instead of sleeping.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;

/// A future that completes at a point in time of its clock.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wall-clock time in Unix milliseconds, and waiting for a point of it.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> u64;

    /// Completes once `now_ms() >= deadline_ms`.
    fn sleep_until(&self, deadline_ms: u64) -> Sleep;

    /// Now, in whole Unix seconds (what token `iat`/`exp` count in).
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The shared handle the server keeps.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock: `SystemTime` for now, tokio timers for waiting.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn sleep_until(&self, deadline_ms: u64) -> Sleep {
        let wait = deadline_ms.saturating_sub(self.now_ms());
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to: for tests of expiry, heartbeats and retention.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<u64>>,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(now_ms)),
        }
    }

    /// Moves the clock forward, waking every sleep whose deadline has come.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|now| *now = now.saturating_add(by.as_millis() as u64));
    }

    /// Sets the clock to `now_ms` (forward or back).
    pub fn set_ms(&self, now_ms: u64) {
        self.now.send_replace(now_ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline_ms: u64) -> Sleep {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, time stops for good.
            let _ = now.wait_for(|now| *now >= deadline_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_only_at_its_deadline() {
        let clock = ManualClock::new(1_000);
        let mut sleep = clock.sleep_until(1_500);
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_millis(499));
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_millis(1));
        assert!(futures::poll!(&mut sleep).is_ready());
    }
}
