//! The session directory in Redis: which node holds each session, presence across nodes,
//! revocations, and the calls forwarded to a session's node (the [`Cluster`] of the Redis
//! store).
//!
//! A node records what changes in the background, in order, through one task: a session's
//! stream opened, closed, its resume window lapsed (see `directory_scripts.rs`). The same task
//! renews the node's lease every [`HEARTBEAT_EVERY`] and cleans up after nodes whose lease
//! lapsed (killed, or cut off from Redis for [`LEASE`]): their sessions leave presence. A node
//! whose changes did not reach Redis, or that others took for dead, says again what it holds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use redis::{AsyncCommands, aio::ConnectionManager};
use tokio::sync::{mpsc, oneshot};

use super::{calls::Calls, directory_scripts::DirectoryScripts, unavailable};
use crate::{
    cluster::{Cluster, ForwardedAnswer, ForwardedCall, IncomingCall, NodeId, SessionPlace},
    object::{PresentSession, SessionInfo},
    store::StoreError,
    token::TokenClaims,
};

/// How often a node renews its lease.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a node's lease lasts: a node not heard from for this long is taken for dead.
const LEASE: Duration = Duration::from_secs(10);
/// Sessions of dead nodes one heartbeat cleans up at most.
const CLEANUP_BUDGET: u64 = 1_000;
/// Changes applied in one script run at most.
const CHANGES_PER_RUN: usize = 256;
/// How much longer than its resume window a closed session is remembered, so that a node that
/// ends it late (Redis was away) still finds it.
const KEEP_MARGIN_MS: u64 = 60_000;
/// Sessions read per script run while paging presence.
const PRESENCE_CHUNK: usize = 256;

/// A change to the directory, applied in order.
enum Change {
    Open(PresentSession),
    Assert(PresentSession),
    Close {
        session_id: String,
        keep_ms: u64,
    },
    End {
        session_id: String,
        ended: oneshot::Sender<Result<bool, StoreError>>,
    },
    Prune {
        keep_ms: u64,
        live: Vec<String>,
    },
    /// Answered once the changes before it were applied (or failed).
    Settled(oneshot::Sender<()>),
}

/// The Redis store's [`Cluster`].
pub(crate) struct RedisCluster {
    node: NodeId,
    prefix: String,
    connection: ConnectionManager,
    scripts: DirectoryScripts,
    changes: mpsc::UnboundedSender<Change>,
    /// The sessions present here, as last told to the directory: what the node says again.
    here: Mutex<HashMap<String, PresentSession>>,
    /// How long a closed session of this node waits for its session to come back.
    window_ms: u64,
    pub(super) calls: Calls,
    incoming: Mutex<Option<mpsc::UnboundedReceiver<IncomingCall>>>,
    opened_elsewhere_tx: mpsc::UnboundedSender<String>,
    opened_elsewhere: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_millis() as u64)
}

impl RedisCluster {
    /// This node's directory on `connection`, with its lease taken; the task that keeps it
    /// runs until the returned handle is aborted.
    pub(super) async fn start(
        prefix: &str,
        connection: ConnectionManager,
        window_ms: u64,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), StoreError> {
        let node: NodeId = rand::random();
        let (changes, pending) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (opened_elsewhere_tx, opened_elsewhere) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            node,
            prefix: prefix.to_owned(),
            calls: Calls::new(node, prefix.to_owned(), connection.clone(), incoming_tx),
            connection,
            scripts: DirectoryScripts::default(),
            changes,
            here: Mutex::default(),
            window_ms,
            incoming: Mutex::new(Some(incoming)),
            opened_elsewhere_tx,
            opened_elsewhere: Mutex::new(Some(opened_elsewhere)),
        });
        // The lease is taken before the node serves: the others count it from its first call.
        cluster.heartbeat().await?;
        let keeper = tokio::spawn(keep(Arc::downgrade(&cluster), pending));
        Ok((cluster, keeper))
    }

    fn key(&self, what: &str, name: &str) -> String {
        format!("{}:{what}:{name}", self.prefix)
    }

    fn here(&self) -> std::sync::MutexGuard<'_, HashMap<String, PresentSession>> {
        self.here.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn change(&self, change: Change) {
        // The keeper goes only with the store.
        let _ = self.changes.send(change);
    }

    /// Another node says session `session_id` opened a stream there.
    pub(super) fn moved_away(&self, node: NodeId, session_id: &str) {
        if node == self.node {
            return;
        }
        self.here().remove(session_id);
        let _ = self.opened_elsewhere_tx.send(session_id.to_owned());
    }

    /// Renews the lease; whether the directory knew this node.
    pub(super) async fn heartbeat(&self) -> Result<bool, StoreError> {
        let now = now_ms();
        let known: i64 = self
            .scripts
            .heartbeat
            .arg(&self.prefix)
            .arg(self.node)
            .arg(now + LEASE.as_millis() as u64)
            .arg(now)
            .arg(CLEANUP_BUDGET)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(known == 1)
    }
}

fn session_args(invocation: &mut redis::ScriptInvocation<'_>, op: &str, session: &PresentSession) {
    let claims = serde_json::to_string(&*session.session.claims).unwrap_or_default();
    invocation
        .arg(op)
        .arg(&session.session.session_id)
        .arg(&session.session.claims.chn)
        .arg(claims)
        .arg(session.connected_at_ms)
        .arg(session.resumes);
}

/// Applies the node's changes in order and renews its lease, until the cluster goes.
async fn keep(cluster: Weak<RedisCluster>, mut pending: mpsc::UnboundedReceiver<Change>) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set when changes may not have reached Redis: the node says again what it holds.
    let mut lost = false;
    loop {
        let first = tokio::select! {
            change = pending.recv() => match change {
                Some(change) => Some(change),
                None => return,
            },
            _ = heartbeat.tick() => None,
        };
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        match first {
            Some(first) => {
                let mut changes = vec![first];
                while changes.len() < CHANGES_PER_RUN {
                    match pending.try_recv() {
                        Ok(change) => changes.push(change),
                        Err(_) => break,
                    }
                }
                if let Err(error) = cluster.run(changes).await {
                    tracing::warn!(%error, "the session directory missed changes: saying again what this node holds once Redis answers");
                    lost = true;
                }
            }
            None => match cluster.heartbeat().await {
                Ok(known) if known && !lost => {}
                Ok(_) => {
                    lost = cluster.say_again().await.is_err();
                }
                Err(error) => {
                    tracing::debug!(%error, "renewing this node's lease failed");
                    lost = true;
                }
            },
        }
    }
}

impl RedisCluster {
    /// Applies `changes` in one script run; the `end`s are answered either way.
    async fn run(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let mut invocation = self.scripts.apply.prepare_invoke();
        invocation.arg(&self.prefix).arg(self.node);
        // Where each `end`'s answer goes, by its place among the changes.
        let mut ends = Vec::new();
        let mut settled = Vec::new();
        let mut place = 0;
        for change in changes {
            if let Change::Settled(waiting) = change {
                settled.push(waiting);
                continue;
            }
            place += 1;
            match change {
                Change::Settled(_) => {}
                Change::Open(session) => session_args(&mut invocation, "open", &session),
                Change::Assert(session) => session_args(&mut invocation, "assert", &session),
                Change::Close {
                    session_id,
                    keep_ms,
                } => {
                    invocation.arg("close").arg(session_id).arg(keep_ms);
                }
                Change::End { session_id, ended } => {
                    invocation.arg("end").arg(session_id);
                    ends.push((place - 1, ended));
                }
                Change::Prune { keep_ms, live } => {
                    invocation.arg("prune").arg(keep_ms).arg(live);
                }
            }
        }
        if place == 0 {
            return Ok(());
        }
        let done: Result<Vec<i64>, StoreError> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable);
        for (place, ended) in ends {
            let answer = match &done {
                Ok(done) => Ok(done.get(place) == Some(&1)),
                Err(error) => Err(error.clone()),
            };
            let _ = ended.send(answer);
        }
        for waiting in settled {
            let _ = waiting.send(());
        }
        done.map(drop)
    }

    /// Says again which sessions this node holds, and closes any it is listed with but no
    /// longer holds.
    async fn say_again(&self) -> Result<(), StoreError> {
        let sessions: Vec<PresentSession> = self.here().values().cloned().collect();
        let live = sessions
            .iter()
            .map(|session| session.session.session_id.clone())
            .collect();
        let mut changes: Vec<Change> = sessions.into_iter().map(Change::Assert).collect();
        changes.push(Change::Prune {
            keep_ms: self.window_ms + KEEP_MARGIN_MS,
            live,
        });
        self.run(changes).await
    }
}

#[async_trait]
impl Cluster for RedisCluster {
    fn node(&self) -> NodeId {
        self.node
    }

    fn opened(&self, session: &PresentSession) {
        self.here()
            .insert(session.session.session_id.clone(), session.clone());
        self.change(Change::Open(session.clone()));
    }

    fn refreshed(&self, session: &PresentSession) {
        let mut here = self.here();
        if let Some(held) = here.get_mut(&session.session.session_id) {
            *held = session.clone();
            drop(here);
            self.change(Change::Assert(session.clone()));
        }
    }

    fn closed(&self, session_id: &str, window_ms: u64) {
        self.here().remove(session_id);
        self.change(Change::Close {
            session_id: session_id.to_owned(),
            keep_ms: window_ms + KEEP_MARGIN_MS,
        });
    }

    async fn settled(&self) {
        let (settled, answer) = oneshot::channel();
        self.change(Change::Settled(settled));
        // Bounded by the script's own timeout; a lost change is said again later.
        let _ = answer.await;
    }

    async fn ended_here(&self, session_id: &str) -> Result<bool, StoreError> {
        let (ended, answer) = oneshot::channel();
        self.change(Change::End {
            session_id: session_id.to_owned(),
            ended,
        });
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the store is closing".into())))
    }

    async fn revoke(&self, session_ids: &[String], for_ms: u64) -> Result<(), StoreError> {
        // One round trip for a whole channel's sessions.
        let mut pipeline = redis::pipe();
        for session_id in session_ids {
            pipeline
                .pset_ex(self.key("revoked", session_id), 1, for_ms.max(1))
                .ignore();
        }
        let _: () = pipeline
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn is_revoked(&self, session_id: &str) -> Result<bool, StoreError> {
        self.connection
            .clone()
            .exists(self.key("revoked", session_id))
            .await
            .map_err(unavailable)
    }

    async fn place(&self, session_id: &str) -> Result<Option<SessionPlace>, StoreError> {
        let mut connection = self.connection.clone();
        let (node, channel): (Option<NodeId>, Option<String>) = connection
            .hmget(self.key("session", session_id), &["node", "channel"])
            .await
            .map_err(unavailable)?;
        let (Some(node), Some(channel)) = (node, channel) else {
            return Ok(None);
        };
        let lease: Option<u64> = connection
            .zscore(format!("{}:nodes", self.prefix), node)
            .await
            .map_err(unavailable)?;
        Ok(lease
            .filter(|lease| *lease >= now_ms())
            .map(|_| SessionPlace { node, channel }))
    }

    async fn presence(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PresentSession>, StoreError> {
        let mut start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        let mut sessions = Vec::new();
        while sessions.len() < limit {
            let wanted = (limit - sessions.len()).min(PRESENCE_CHUNK);
            let page: Vec<String> = self
                .scripts
                .presence
                .arg(&self.prefix)
                .arg(channel)
                .arg(&start)
                .arg(wanted)
                .arg(now_ms())
                .invoke_async(&mut self.connection.clone())
                .await
                .map_err(unavailable)?;
            let [last, looked_at, found @ ..] = page.as_slice() else {
                return Err(StoreError::Corrupt(
                    "the presence script answered malformed".into(),
                ));
            };
            for session in found.chunks_exact(4) {
                sessions.push(present_session(session)?);
            }
            // Fewer looked at than asked for: that was the end of the channel's sessions.
            if looked_at
                .parse::<usize>()
                .map_or(true, |looked_at| looked_at < wanted)
            {
                break;
            }
            start = format!("({last}");
        }
        Ok(sessions)
    }

    async fn presence_count(&self, channel: &str) -> Result<usize, StoreError> {
        self.connection
            .clone()
            .zcard(self.key("presence", channel))
            .await
            .map_err(unavailable)
    }

    async fn present_channels(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let start = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ => format!("[{prefix}"),
        };
        let names: Vec<String> = self
            .connection
            .clone()
            .zrangebylex_limit(
                format!("{}:present-channels", self.prefix),
                start,
                "+",
                0,
                limit as isize,
            )
            .await
            .map_err(unavailable)?;
        Ok(names
            .into_iter()
            .take_while(|name| name.starts_with(prefix))
            .collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        self.connection
            .clone()
            .zrangebyscore(format!("{}:nodes", self.prefix), now_ms(), "+inf")
            .await
            .map_err(unavailable)
    }

    async fn forward(&self, node: NodeId, call: ForwardedCall) -> ForwardedAnswer {
        self.calls.forward(node, &call).await
    }

    fn incoming(&self) -> Option<mpsc::UnboundedReceiver<IncomingCall>> {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn opened_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.opened_elsewhere
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A present session from the presence script's `id, claims, at, resumes`.
fn present_session(fields: &[String]) -> Result<PresentSession, StoreError> {
    let corrupt = || {
        StoreError::Corrupt(format!(
            "the directory entry of session {:?} is malformed",
            fields[0]
        ))
    };
    let claims: TokenClaims = serde_json::from_str(&fields[1]).map_err(|_| corrupt())?;
    Ok(PresentSession {
        session: SessionInfo {
            session_id: fields[0].clone(),
            claims: Arc::new(claims),
        },
        connected_at_ms: fields[2].parse().map_err(|_| corrupt())?,
        resumes: fields[3].parse().map_err(|_| corrupt())?,
    })
}
