//! Appends acknowledged once replicas have them: the append script, then `WAIT`, on a
//! connection of their own.
//!
//! `WAIT n timeout` answers how many replicas acknowledged the replication offset of the
//! connection's last write (so every write sent on that connection before it), once `n` did or
//! the timeout passed; meanwhile Redis reads nothing more from that connection. Hence:
//!
//! - **A connection for these appends alone.** Reads, health checks and session announcements
//!   stay on the store's shared connection and never queue behind a `WAIT`.
//! - **Scripts and their `WAIT` in one pipeline.** A pipeline is written to one connection, so
//!   the connection manager cannot reconnect between a script and its `WAIT` (a `WAIT` on a new
//!   connection counts none of our writes and answers at once, acknowledging nothing).
//! - **One `WAIT` per round.** Appends that come while a round is out go together in the next
//!   one: a round costs one replica round trip however many appends it carries, and while
//!   replicas lag an append waits for the round in flight and its own, not for every append
//!   queued before it.
//! - **A write in every round.** An append whose events are all duplicates (a retry with the
//!   same idempotency key) writes nothing, and `WAIT` is documented to cover the connection's
//!   earlier *writes* only: not the first attempt, which another node (or an earlier
//!   connection) may have made. Each round also sets `{prefix}:replicated`, so its `WAIT`
//!   covers everything the primary held when the round ran. (Redis 7.0 happens to count from
//!   the offset after any command of the connection, a read included; this does not rely on
//!   it.)

use std::{sync::Arc, time::Duration};

use redis::{Cmd, FromRedisValue, RedisError, Value, aio::ConnectionManager};
use tokio::sync::{mpsc, oneshot};

use super::scripts::Scripts;

/// Appends in one round at most, so that one pipeline stays a bounded write.
const ROUND_MAX: usize = 128;

/// How many replicas an acknowledged append waits for, and how long.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wait {
    pub(super) replicas: u32,
    pub(super) timeout: Duration,
}

/// Why a replicated append is not acknowledged.
#[derive(Debug)]
pub(super) enum Refused {
    /// Redis refused the script or could not be reached: as for an append without replicas.
    Redis(RedisError),
    /// The script ran, so the events are stored on the primary, but not enough replicas are
    /// known to have them: what to tell the publisher.
    NotReplicated(String),
}

/// The task that sends appends and their `WAIT`s, in rounds.
pub(super) struct ReplicatedAppends {
    queue: mpsc::UnboundedSender<Pending>,
    rounds: tokio::task::JoinHandle<()>,
}

impl Drop for ReplicatedAppends {
    fn drop(&mut self) {
        self.rounds.abort();
    }
}

struct Pending {
    script: Cmd,
    answer: oneshot::Sender<Result<Value, Refused>>,
    /// Sent again once already, after Redis had lost the script (`NOSCRIPT`).
    reloaded: bool,
}

impl ReplicatedAppends {
    /// Starts the rounds on `connection`, which nothing else may use; `marker` is the key each
    /// round writes.
    pub(super) async fn start(
        mut connection: ConnectionManager,
        scripts: Arc<Scripts>,
        marker: String,
        wait: Wait,
    ) -> Self {
        warn_if_too_few_replicas(&mut connection, wait.replicas).await;
        // Now, so that the first round is not spent on NOSCRIPT (it would still work).
        let _ = scripts.append.load_async(&mut connection).await;
        let (queue, pending) = mpsc::unbounded_channel();
        let rounds = tokio::spawn(rounds(connection, scripts, marker, wait, pending));
        Self { queue, rounds }
    }

    /// Runs `script` (an invocation of the append script) and answers once `WAIT` says enough
    /// replicas have what it stored.
    pub(super) async fn append<T: FromRedisValue>(&self, script: Cmd) -> Result<T, Refused> {
        let stopped = || {
            Refused::Redis(RedisError::from((
                redis::ErrorKind::Client,
                "the replicated appends stopped",
            )))
        };
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Pending {
                script,
                answer,
                reloaded: false,
            })
            .map_err(|_| stopped())?;
        let value = answered.await.map_err(|_| stopped())??;
        T::from_redis_value(value).map_err(|e| Refused::Redis(e.into()))
    }
}

/// Tells the operator when Redis has fewer replicas than appends wait for: every append then
/// fails until enough connect.
async fn warn_if_too_few_replicas(connection: &mut ConnectionManager, replicas: u32) {
    let info: Result<String, _> = redis::cmd("INFO")
        .arg("replication")
        .query_async(connection)
        .await;
    let connected = info.ok().and_then(|info| {
        info.lines()
            .find_map(|line| line.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
    });
    if let Some(connected) = connected
        && connected < replicas
    {
        tracing::warn!(
            connected,
            wait_replicas = replicas,
            "Redis has fewer replicas than publishes wait for: publishes fail UNAVAILABLE until \
             enough replicas are connected"
        );
    }
}

async fn rounds(
    mut connection: ConnectionManager,
    scripts: Arc<Scripts>,
    marker: String,
    wait: Wait,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let mut again = Vec::new();
    loop {
        let mut round: Vec<Pending> = std::mem::take(&mut again);
        if round.is_empty() {
            match queue.recv().await {
                Some(pending) => round.push(pending),
                None => return,
            }
        }
        while round.len() < ROUND_MAX {
            match queue.try_recv() {
                Ok(pending) => round.push(pending),
                Err(_) => break,
            }
        }
        again = run_round(&mut connection, &marker, wait, round).await;
        if !again.is_empty() {
            // Redis lost its scripts (restarted, or SCRIPT FLUSH): load it for the retry. If
            // that fails, the retry fails with the script's error.
            let _ = scripts.append.load_async(&mut connection).await;
        }
    }
}

/// Sends one round and answers its appends; what must be sent again after a script load.
async fn run_round(
    connection: &mut ConnectionManager,
    marker: &str,
    wait: Wait,
    round: Vec<Pending>,
) -> Vec<Pending> {
    let mut pipe = redis::pipe();
    let mut answers = Vec::with_capacity(round.len());
    for pending in round {
        pipe.add_command(pending.script);
        answers.push((pending.answer, pending.reloaded));
    }
    pipe.cmd("SET").arg(marker).arg(1);
    let timeout_ms = wait.timeout.as_millis().clamp(1, u64::MAX as u128) as u64;
    pipe.cmd("WAIT").arg(wait.replicas).arg(timeout_ms);
    let results: Vec<Result<Value, RedisError>> =
        match pipe.ignore_errors().query_async(&mut *connection).await {
            Ok(results) => results,
            Err(error) => {
                for (answer, _) in answers {
                    let _ = answer.send(Err(Refused::Redis(error.clone())));
                }
                return Vec::new();
            }
        };
    let mut results = results.into_iter();
    let mut scripts: Vec<Result<Value, RedisError>> =
        results.by_ref().take(answers.len()).collect();
    let marked = results.next();
    let waited = results.next();
    let replicated = match (marked, waited) {
        (Some(Ok(_)), Some(Ok(Value::Int(acknowledged))))
            if acknowledged >= wait.replicas.into() =>
        {
            Ok(())
        }
        (Some(Ok(_)), Some(Ok(Value::Int(acknowledged)))) => Err(format!(
            "the events are stored on the Redis primary, but only {acknowledged} of the {} \
             replicas an acknowledged publish waits for (--redis-wait-replicas) had them within \
             {timeout_ms} ms: retry with the same idempotency key, which answers the stored \
             events instead of storing them again (without a key, a retry stores them twice)",
            wait.replicas
        )),
        (marked, waited) => {
            let error = [marked, waited]
                .into_iter()
                .find_map(|result| match result {
                    Some(Err(error)) => Some(error.to_string()),
                    Some(Ok(_)) => None,
                    None => Some("no answer".to_owned()),
                })
                .unwrap_or_else(|| "an unexpected answer".to_owned());
            Err(format!(
                "the events are stored on the Redis primary, but whether its replicas have them \
                 is unknown (WAIT: {error}): retry with the same idempotency key, which answers \
                 the stored events instead of storing them again"
            ))
        }
    };
    scripts.resize_with(answers.len(), || {
        Err(RedisError::from((
            redis::ErrorKind::Client,
            "Redis answered fewer commands than the pipeline held",
        )))
    });
    let mut again = Vec::new();
    for (place, ((answer, reloaded), result)) in answers.into_iter().zip(scripts).enumerate() {
        let outcome = match result {
            Err(error) if error.code() == Some("NOSCRIPT") && !reloaded => {
                if let Some(script) = pipe.cmd_iter().nth(place) {
                    again.push(Pending {
                        script: script.clone(),
                        answer,
                        reloaded: true,
                    });
                    continue;
                }
                Err(Refused::Redis(error))
            }
            Err(error) => Err(Refused::Redis(error)),
            Ok(value) => match &replicated {
                Ok(()) => Ok(value),
                Err(message) => Err(Refused::NotReplicated(message.clone())),
            },
        };
        let _ = answer.send(outcome);
    }
    again
}
