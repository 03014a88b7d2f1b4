//! Following channels over Redis pub/sub: one subscriber connection per node, subscribed to the
//! topics of the channels this node has subscribers on, and the announcements routed to their
//! hubs.
//!
//! The connection is kept up by one task: when it drops, the task connects again, subscribes
//! to every followed topic again, and tells every follower to resync (announcements published
//! while it was down are lost to pub/sub, but their events are in the streams). Subscribing
//! and unsubscribing go through one lock, so an unsubscribe of a channel's last follower never
//! overtakes a new follower's subscribe.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak, atomic::AtomicU64},
    time::Duration,
};

use futures::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;

use super::{announcement, calls, directory::RedisCluster, unavailable};
use crate::{
    event::{Epoch, StoredEvent},
    store::{Announced, Follower, StoreError},
};

/// Longest a SUBSCRIBE may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts to connect again, doubling up to the second.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

type Senders = Vec<(u64, mpsc::UnboundedSender<Announced>)>;

/// The followed topics of one store, and the connection they are subscribed on.
pub(super) struct Topics {
    followers: Mutex<HashMap<String, Senders>>,
    /// The subscribing half of the connection, while it is up; its lock orders subscribes and
    /// unsubscribes.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    next_follower: AtomicU64,
    /// The store's epoch: announced batches carry it in their ids.
    epoch: Epoch,
    /// Where nodes say which sessions opened a stream on them: `<node> <session id>`.
    sessions_topic: String,
    /// Where calls to this node, and answers to its calls, come.
    node_topic: String,
    /// This node's directory: told of sessions that opened elsewhere, and of calls.
    cluster: Arc<RedisCluster>,
}

impl Topics {
    pub(super) fn new(epoch: Epoch, prefix: &str, cluster: Arc<RedisCluster>) -> Arc<Self> {
        use crate::cluster::Cluster;
        Arc::new(Self {
            followers: Mutex::default(),
            sink: tokio::sync::Mutex::new(None),
            next_follower: AtomicU64::new(0),
            epoch,
            sessions_topic: format!("{prefix}:sessions"),
            node_topic: calls::node_topic(prefix, cluster.node()),
            cluster,
        })
    }

    fn followers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Senders>> {
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `topic`: subscribes (if this is its first follower) once the follower is
    /// registered, so nothing announced after the subscribe is missed.
    pub(super) async fn follow(self: &Arc<Self>, topic: String) -> Result<Follower, StoreError> {
        let mut sink = self.sink.lock().await;
        let Some(connected) = sink.as_mut() else {
            return Err(StoreError::Unavailable(
                "not connected to Redis pub/sub (reconnecting)".into(),
            ));
        };
        let (sender, updates) = mpsc::unbounded_channel();
        let id = self
            .next_follower
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = {
            let mut followers = self.followers();
            let senders = followers.entry(topic.clone()).or_default();
            senders.push((id, sender));
            senders.len() == 1
        };
        if first {
            let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, connected.subscribe(&topic))
                .await
                .map_err(|_| StoreError::Unavailable("Redis: SUBSCRIBE timed out".into()))
                .and_then(|result| result.map_err(unavailable));
            if let Err(error) = subscribed {
                self.remove(&topic, id);
                return Err(error);
            }
        }
        Ok(Follower {
            updates,
            guard: Box::new(Unfollow {
                topics: Arc::downgrade(self),
                topic,
                id,
            }),
        })
    }

    /// Forgets follower `id` of `topic`; true if it was the last.
    fn remove(&self, topic: &str, id: u64) -> bool {
        let mut followers = self.followers();
        let Some(senders) = followers.get_mut(topic) else {
            return false;
        };
        senders.retain(|(other, _)| *other != id);
        if senders.is_empty() {
            followers.remove(topic);
            return true;
        }
        false
    }

    /// Hands a message on `topic` to its followers.
    fn route(&self, topic: &str, message: &[u8]) {
        if topic == self.sessions_topic {
            let opened = std::str::from_utf8(message)
                .ok()
                .and_then(|message| message.split_once(' '));
            if let Some((node, session_id)) = opened
                && let Ok(node) = node.parse()
            {
                self.cluster.moved_away(node, session_id);
            }
            return;
        }
        if topic == self.node_topic {
            return self.cluster.calls.route(message);
        }
        let followers = self.followers();
        let Some(senders) = followers.get(topic) else {
            return;
        };
        let batch = announcement::parse(message).and_then(|announced| {
            let events = announced.new_events()?;
            Some(Arc::new(StoredEvent::batch(
                self.epoch,
                announced.first_seq,
                &events,
            )))
        });
        let Some(batch) = batch else {
            // The followers read the store instead of trusting it.
            tracing::warn!(topic, "a malformed announcement: resyncing its followers");
            for (_, sender) in senders {
                let _ = sender.send(Announced::Resync);
            }
            return;
        };
        for (_, sender) in senders {
            let _ = sender.send(Announced::Batch(batch.clone()));
        }
    }

    fn resync_all(&self) {
        for senders in self.followers().values() {
            for (_, sender) in senders {
                let _ = sender.send(Announced::Resync);
            }
        }
    }
}

/// Unsubscribes a follower when dropped (the topic, when it was its last).
struct Unfollow {
    topics: Weak<Topics>,
    topic: String,
    id: u64,
}

impl Drop for Unfollow {
    fn drop(&mut self) {
        let Some(topics) = self.topics.upgrade() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (topic, id) = (std::mem::take(&mut self.topic), self.id);
        runtime.spawn(async move {
            // Under the sink's lock: a follower of the topic that came meanwhile keeps it.
            let mut sink = topics.sink.lock().await;
            if topics.remove(&topic, id)
                && let Some(connected) = sink.as_mut()
            {
                let _ =
                    tokio::time::timeout(SUBSCRIBE_TIMEOUT, connected.unsubscribe(&topic)).await;
            }
        });
    }
}

/// Keeps the subscriber connection up and routes its messages, until the store goes;
/// `connected` is the connection made at open.
pub(super) async fn run(
    client: redis::Client,
    topics: Weak<Topics>,
    mut connected: Option<redis::aio::PubSubStream>,
) {
    let mut wait = RECONNECT_FIRST;
    loop {
        let Some(live) = topics.upgrade() else {
            return;
        };
        let (connection, reconnected) = match connected.take() {
            Some(messages) => (Ok(messages), false),
            None => (connect(&client, &live).await, true),
        };
        match connection {
            Ok(mut messages) => {
                wait = RECONNECT_FIRST;
                if reconnected {
                    // Announcements made while the connection was down are in the streams.
                    live.resync_all();
                }
                drop(live);
                while let Some(message) = messages.next().await {
                    let Some(live) = topics.upgrade() else {
                        return;
                    };
                    let topic = message.get_channel_name().to_owned();
                    live.route(&topic, message.get_payload_bytes());
                }
                if let Some(live) = topics.upgrade() {
                    *live.sink.lock().await = None;
                    tracing::warn!("the Redis pub/sub connection dropped: reconnecting");
                }
            }
            Err(error) => {
                drop(live);
                tracing::debug!(%error, "connecting to Redis pub/sub failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Connects, subscribes to every followed topic and makes the connection the one followers
/// subscribe on.
pub(super) async fn connect(
    client: &redis::Client,
    topics: &Topics,
) -> Result<redis::aio::PubSubStream, StoreError> {
    let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| StoreError::Unavailable("Redis: connecting timed out".into()))?
        .map_err(unavailable)?;
    let (mut sink, messages) = pubsub.split();
    let mut current = topics.sink.lock().await;
    let mut followed: Vec<String> = topics.followers().keys().cloned().collect();
    followed.push(topics.sessions_topic.clone());
    followed.push(topics.node_topic.clone());
    for topic in followed {
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&topic))
            .await
            .map_err(|_| StoreError::Unavailable("Redis: SUBSCRIBE timed out".into()))?
            .map_err(unavailable)?;
    }
    *current = Some(sink);
    Ok(messages)
}
