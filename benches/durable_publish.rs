//! Durable publish throughput on the embedded store: how many publishes per second are
//! acknowledged (each only once on disk) with 1 publisher, 16 publishers, and 16 publishers with
//! 64 publishes each in flight. 100-byte payloads, one channel, through the channel hub, as the
//! admin `Publish` does (no gRPC). Prints figures; never fails on them.
//!
//!     cargo bench --bench durable_publish

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use durable_iterator::{
    EventStore, Filter, RedbStore,
    bench_support::{Channels, HubLimits},
    clock::SystemClock,
};

const PAYLOAD_BYTES: usize = 100;
const RUN_FOR: Duration = Duration::from_secs(3);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("durable publish, redb store, {PAYLOAD_BYTES}-byte payloads, {RUN_FOR:?} per row");
    println!(
        "{:<34} {:>12} {:>14}",
        "publishers x in flight", "events/s", "events/commit"
    );
    for (publishers, in_flight) in [(1, 1), (16, 1), (16, 64)] {
        let (rate, per_commit) = runtime.block_on(measure(publishers, in_flight));
        println!(
            "{:<34} {:>12.0} {:>14.1}",
            format!("{publishers} x {in_flight}"),
            rate,
            per_commit
        );
    }
}

async fn measure(publishers: usize, in_flight: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(RedbStore::open(dir.path(), 3_600_000).expect("store"));
    let channels = Arc::new(Channels::new(
        store.clone() as Arc<dyn EventStore>,
        Arc::new(SystemClock),
        HubLimits {
            subscriber_queue: 4_096,
            max_batch: 1_024,
            replay: Default::default(),
        },
    ));
    // A JSON string value encoded as `Event.json`: what a 100-byte payload costs on the wire.
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let deadline = Instant::now() + RUN_FOR;
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers * in_flight)
        .map(|_| {
            let channels = channels.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut acked = 0u64;
                while Instant::now() < deadline {
                    channels
                        .publish("bench", payload.clone(), Filter::everyone())
                        .await
                        .expect("publish");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("publisher");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = store.commits().max(1);
    (total as f64 / elapsed, total as f64 / commits as f64)
}
