//! NATS JetStream as a durable peer, through async-nats: one stream with file storage on a
//! fresh `nats-server -js` (`servers::start_jetstream`), acknowledged publishes, and ordered
//! push consumers (ephemeral, no acks, flow control) for fan-out and replay.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self, Context,
    consumer::{DeliverPolicy, push},
    stream::{Config as StreamConfig, StorageType, Stream},
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};

use super::Replay;
use crate::{
    load::{self, Counters},
    scenarios::{self, CHANNEL, DurablePublish, FanOut, Layout, Window},
    servers::Server,
};

/// The stream of every measurement; it takes the benchmark's one subject.
const STREAM: &str = "bench";

async fn connect(server: &Server) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .connect(server.addr.to_string())
        .await
        .map_err(|e| format!("nats connect: {e}"))
}

async fn connect_many(server: &Server, count: usize) -> Result<Vec<async_nats::Client>, String> {
    stream::iter(0..count)
        .map(|_| connect(server))
        .buffered(64)
        .try_collect()
        .await
}

/// The stream on file storage, one replica, limits retention (nothing is removed). nats-server
/// may accept connections a moment before JetStream answers: asked again for up to 5 s.
async fn create_stream(client: &async_nats::Client) -> Result<Stream, String> {
    let context = jetstream::new(client.clone());
    let config = StreamConfig {
        name: STREAM.into(),
        subjects: vec![CHANNEL.into()],
        storage: StorageType::File,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match context.create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("create stream: {e}")),
        }
    }
}

/// Publishes `count` messages back to back, then waits for every acknowledgement (the stream
/// stored each). JetStream 2.9 has no batch publish: this is the closest to one.
async fn publish_acked(context: &Context, body: &Bytes, count: u64) -> Result<(), String> {
    let mut acks = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let ack = context
            .publish(CHANNEL, body.clone())
            .await
            .map_err(|e| format!("jetstream publish: {e}"))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| format!("jetstream ack: {e}"))?;
    }
    Ok(())
}

/// An ordered push consumer from `deliver`: its messages as they arrive.
async fn ordered(
    client: &async_nats::Client,
    stream: &Stream,
    deliver: DeliverPolicy,
) -> Result<push::Ordered, String> {
    stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("create consumer: {e}"))?
        .messages()
        .await
        .map_err(|e| format!("consumer messages: {e}"))
}

/// `publishers` publishers (over at most 4 connections), each with `in_flight` tasks that
/// publish `batch` messages and wait for their acknowledgements, for `duration` or
/// `max_events` in all: the shapes of `scenarios::durable_publish`.
pub(crate) async fn publish(
    server: &Server,
    publishers: usize,
    in_flight: usize,
    batch: usize,
    duration: Duration,
    max_events: u64,
) -> Result<DurablePublish, String> {
    let clients = connect_many(server, publishers.clamp(1, 4)).await?;
    create_stream(&clients[0]).await?;
    let body = Bytes::from(load::payload(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..publishers * in_flight)
        .map(|i| {
            let context = jetstream::new(clients[(i / in_flight) % clients.len()].clone());
            let (claimed, body) = (claimed.clone(), body.clone());
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                loop {
                    let n = claimed.fetch_add(batch as u64, Ordering::Relaxed);
                    if n >= max_events || Instant::now() >= deadline {
                        return Ok::<u64, String>(acknowledged);
                    }
                    let count = (batch as u64).min(max_events - n);
                    publish_acked(&context, &body, count).await?;
                    acknowledged += count;
                }
            })
        })
        .collect();
    DurablePublish::total(tasks, started).await
}

/// `consumers` ordered consumers of new messages, spread over connections as `layout` says;
/// messages published with acknowledgements (256 in flight, on a connection of their own) as
/// fast as the consumers take them (`scenarios::Window`), for `duration` or `max_events`;
/// then delivery is waited for. The same measurement as `scenarios::fan_out`.
pub(crate) async fn fan_out(
    server: &Server,
    consumers: usize,
    layout: Layout,
    duration: Duration,
    max_events: u64,
) -> Result<FanOut, String> {
    let clients = connect_many(server, layout.connections(consumers)).await?;
    let stream = create_stream(&clients[0]).await?;
    let opened: Vec<push::Ordered> = stream::iter(0..consumers)
        .map(|i| ordered(&clients[i % clients.len()], &stream, DeliverPolicy::New))
        .buffered(64)
        .try_collect()
        .await?;
    // The server has every delivery subscription once each connection's flush returns.
    for client in &clients {
        client
            .flush()
            .await
            .map_err(|e| format!("nats flush: {e}"))?;
    }
    let counters = Arc::new(Counters::new(consumers));
    let readers: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, mut messages)| {
            let counters = counters.clone();
            tokio::spawn(async move {
                // An error (a missed heartbeat, a consumer recreated) is not a message: what
                // it cost shows as events not delivered.
                while let Some(message) = messages.next().await {
                    if message.is_ok() {
                        counters.add(i, 1);
                    }
                }
            })
        })
        .collect();
    let window = Window::follow(counters.clone(), consumers);
    let publisher = jetstream::new(connect(server).await?);
    let body = Bytes::from(load::payload(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu_seconds();
    let load_before = crate::load_cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..256)
        .map(|_| {
            let (context, body) = (publisher.clone(), body.clone());
            let (claimed, allowed, published) =
                (claimed.clone(), window.allowed.clone(), published.clone());
            tokio::spawn(async move {
                loop {
                    let n = claimed.fetch_add(1, Ordering::Relaxed);
                    if n >= max_events || Instant::now() >= deadline {
                        return Ok::<(), String>(());
                    }
                    while n + 1 > allowed.load(Ordering::Relaxed) {
                        if Instant::now() >= deadline {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    publish_acked(&context, &body, 1).await?;
                    published.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut failed = None;
    for task in tasks {
        if let Err(e) = task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            failed.get_or_insert(e);
        }
    }
    let published = published.load(Ordering::Relaxed);
    let last = scenarios::wait_for(
        &counters,
        published * consumers as u64,
        Duration::from_secs(5),
        Duration::from_secs(120),
    )
    .await;
    drop(window);
    let outcome = FanOut {
        published,
        delivered: counters.sum(),
        seconds: last.duration_since(started).as_secs_f64(),
        server_cpu_seconds: server
            .cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        load_cpu_seconds: crate::load_cpu_seconds() - load_before,
        received_bytes: 0,
    };
    for reader in readers {
        reader.abort();
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

/// `events` messages published and acknowledged (1,024 in flight), then one ordered consumer
/// of all of them, timed from its creation until it has every one.
pub(crate) async fn replay(server: &Server, events: u64) -> Result<Replay, String> {
    let client = connect(server).await?;
    let stream = create_stream(&client).await?;
    let context = jetstream::new(client.clone());
    let body = Bytes::from(load::payload(0));
    stream::iter(0..events)
        .map(|_| publish_acked(&context, &body, 1))
        .buffer_unordered(1_024)
        .try_collect::<()>()
        .await?;
    let started = Instant::now();
    let mut messages = ordered(&client, &stream, DeliverPolicy::All).await?;
    let give_up = started + Duration::from_secs(300);
    let mut received = 0;
    while received < events && Instant::now() < give_up {
        match tokio::time::timeout(Duration::from_secs(60), messages.next()).await {
            Ok(Some(Ok(_))) => received += 1,
            // What an error (a missed heartbeat, a consumer recreated) cost shows as events
            // not replayed.
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Replay {
        events,
        received,
        seconds: started.elapsed().as_secs_f64(),
    })
}
