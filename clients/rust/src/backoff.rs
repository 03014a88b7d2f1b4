//! The reconnect schedule: first retry at once, then exponential backoff with full jitter,
//! capped. Pure: the random draw is passed in, so the schedule is tested as a table.

use std::time::Duration;

/// How long to wait between reconnect attempts, and how many to make.
///
/// Retry `n` (1-based, counted since the stream last worked) waits a random time in
/// `[0, ceiling(n)]`, where `ceiling(1) = 0` (the first retry goes at once: most breaks are a
/// server restart or a dropped connection, gone by the time we retry) and
/// `ceiling(n) = min(cap, base * 2^(n-2))` after that. Full jitter spreads the clients of a
/// restarted server over the whole window instead of letting them arrive in waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the second retry; each later one doubles it. Default 1 s.
    pub base: Duration,
    /// No wait is longer than this. Default 10 s.
    pub cap: Duration,
    /// Retries in a row before giving up; `None` (the default) retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The longest wait before retry `retry` (1-based); 0 for the first.
    pub fn ceiling(&self, retry: u32) -> Duration {
        if retry <= 1 {
            return Duration::ZERO;
        }
        // 2^(retry-2), saturating: beyond 2^31 the cap has long been reached.
        let factor = 1u32.checked_shl(retry - 2).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry `retry`, given a uniform draw `unit` in `[0, 1)` (full jitter).
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`Backoff::delay`] with a fresh random draw.
    pub fn random_delay(&self, retry: u32) -> Duration {
        self.delay(retry, rand::random::<f64>())
    }

    /// A wait of at least half the ceiling of retry `retry` (the other half jittered): for
    /// retrying a token provider, which must never be called again at once.
    pub fn patient_delay(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry.max(2));
        ceiling / 2 + (ceiling / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`Backoff::patient_delay`] with a fresh random draw.
    pub fn random_patient_delay(&self, retry: u32) -> Duration {
        self.patient_delay(retry, rand::random::<f64>())
    }

    /// Whether retry `retry` (1-based) is beyond the attempt limit.
    pub fn exhausted(&self, retry: u32) -> bool {
        self.max_attempts.is_some_and(|max| retry > max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn schedule_table() {
        let backoff = Backoff::default();
        // (retry, ceiling): at once, then 1 s doubling, capped at 10 s.
        let table = [
            (0, 0),
            (1, 0),
            (2, 1_000),
            (3, 2_000),
            (4, 4_000),
            (5, 8_000),
            (6, 10_000),
            (7, 10_000),
            (40, 10_000),
            (u32::MAX, 10_000),
        ];
        for (retry, ceiling) in table {
            assert_eq!(backoff.ceiling(retry), MS(ceiling), "retry {retry}");
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let backoff = Backoff {
            base: MS(100),
            cap: MS(1_000),
            max_attempts: None,
        };
        // (retry, unit draw, delay)
        let table = [
            (1, 0.99, 0),
            (2, 0.0, 0),
            (2, 0.5, 50),
            (3, 0.25, 50),
            (4, 0.999, 399),
            (9, 0.5, 500),
            (9, 7.0, 1_000),
            (9, -1.0, 0),
        ];
        for (retry, unit, delay) in table {
            let got = backoff.delay(retry, unit);
            assert_eq!(got.as_millis(), delay, "retry {retry}, draw {unit}");
        }
        for retry in 0..20 {
            assert!(backoff.random_delay(retry) <= backoff.ceiling(retry));
        }
    }

    #[test]
    fn patient_delays_never_go_at_once() {
        let backoff = Backoff::default();
        // (retry, unit draw, delay): at least half the ceiling, the first retry included.
        let table = [
            (0, 0.0, 500),
            (1, 0.0, 500),
            (2, 0.0, 500),
            (2, 1.0, 1_000),
            (4, 0.5, 3_000),
            (9, 0.0, 5_000),
        ];
        for (retry, unit, delay) in table {
            let got = backoff.patient_delay(retry, unit);
            assert_eq!(got.as_millis(), delay, "retry {retry}, draw {unit}");
        }
    }

    #[test]
    fn attempt_limit() {
        let unlimited = Backoff::default();
        assert!(!unlimited.exhausted(u32::MAX));
        let three = Backoff {
            max_attempts: Some(3),
            ..Backoff::default()
        };
        let table = [(1, false), (3, false), (4, true), (100, true)];
        for (retry, exhausted) in table {
            assert_eq!(three.exhausted(retry), exhausted, "retry {retry}");
        }
    }
}
