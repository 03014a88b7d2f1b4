//! Background upkeep, once a second: expired events dropped (and their space given back by the
//! store), idle channels forgotten, freed memory handed back to the operating system, and the
//! health service told whether the store can serve; and, whenever the channels' recent events
//! fill their budget, the least recent trimmed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tonic_health::{ServingStatus, server::HealthReporter};

use super::{AdminServer, ClientServer, Shared};

/// Freed memory is handed back at least this often, busy or not.
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(30);

pub(super) async fn maintain(shared: Arc<Shared>, health: HealthReporter) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut memory = FreedMemory::default();
    let mut store_serves = true;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = shared.channels.recent_exceeded() => {
                shared.channels.trim_recent();
                continue;
            }
        }
        let serves = match shared.channels.store().check().await {
            Ok(()) => true,
            Err(error) => {
                if store_serves {
                    tracing::error!(%error, "the event store cannot serve: health is NOT_SERVING");
                }
                false
            }
        };
        // A drain sets NOT_SERVING for good: this leaves it alone once it began.
        if serves != store_serves && !shared.draining.is_cancelled() {
            store_serves = serves;
            if serves {
                tracing::warn!("the event store serves again: health is SERVING");
            } else if shared.channels.sessions().cluster().is_some() {
                // Events reach this node's streams through the store: they end, and their
                // clients resume, on another node if this one stays cut off.
                shared.channels.lose_subscribers();
            }
            set_health(&health, serves).await;
        }
        let purged = match shared.channels.store().expire(shared.clock.now_ms()).await {
            Ok(purged) => purged,
            Err(error) => {
                tracing::warn!(%error, "expiring events failed");
                0
            }
        };
        let active_channels = shared.channels.sweep_idle();
        let store_file_bytes = match &shared.config.store_file {
            // One stat a second: not worth a blocking task.
            Some(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            None => None,
        };
        crate::metrics::upkeep_gauges(active_channels, store_file_bytes);
        let replaying = shared.channels.replays_in_progress() > 0;
        if memory.is_due(replaying, purged > 0) {
            tokio::task::spawn_blocking(release_freed_memory);
        }
    }
}

async fn set_health(health: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    if serving {
        health.set_serving::<ClientServer>().await;
        health.set_serving::<AdminServer>().await;
    } else {
        health.set_not_serving::<ClientServer>().await;
        health.set_not_serving::<AdminServer>().await;
    }
}

/// When to hand freed memory back. glibc keeps what a burst freed (the pages of 20 replays, a
/// purge's records) in its arenas for reuse, so the server's RSS stays at its peak: 125 MB
/// after 20 sessions resumed 300,000 events (BENCHMARKS.md). Trimming walks the arenas under
/// their locks, so it is done after such a burst ends and now and then, not on every tick.
#[derive(Debug)]
struct FreedMemory {
    last_release: Instant,
    was_replaying: bool,
}

impl Default for FreedMemory {
    fn default() -> Self {
        Self {
            last_release: Instant::now(),
            was_replaying: false,
        }
    }
}

impl FreedMemory {
    /// Whether to release now: replays just ended, events were purged, or it is time.
    fn is_due(&mut self, replaying: bool, purged: bool) -> bool {
        let replays_ended = self.was_replaying && !replaying;
        self.was_replaying = replaying;
        let due = replays_ended || purged || self.last_release.elapsed() >= RELEASE_MEMORY_EVERY;
        if due {
            self.last_release = Instant::now();
        }
        due
    }
}

/// Hands the free memory at the top of each glibc arena back to the system.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = Instant::now();
        // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the
        // system; it touches no memory in use and is safe to call from any thread.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            micros = started.elapsed().as_micros() as u64,
            "freed memory handed back"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_released_when_replays_end_or_events_were_purged() {
        let mut memory = FreedMemory::default();
        assert!(!memory.is_due(false, false), "nothing happened");
        assert!(!memory.is_due(true, false), "replays running");
        assert!(!memory.is_due(true, false), "still running");
        assert!(memory.is_due(false, false), "the replays ended");
        assert!(!memory.is_due(false, false), "released already");
        assert!(memory.is_due(false, true), "a purge freed records");
        memory.last_release -= RELEASE_MEMORY_EVERY;
        assert!(memory.is_due(false, false), "time for the periodic release");
    }
}
