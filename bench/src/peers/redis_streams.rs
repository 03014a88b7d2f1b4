//! Redis Streams as a durable peer, through the `redis` crate: `XADD` to one stream on a fresh
//! redis-server with `appendonly yes` and `appendfsync always` (`servers::start_redis`), and
//! `XREAD` pages for replay.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use redis::{AsyncConnectionConfig, Value, aio::MultiplexedConnection};

use super::Replay;
use crate::{load, scenarios::DurablePublish, servers::Server};

/// The stream every measurement appends to.
const KEY: &str = "bench";
/// Entries per `XREAD` of a replay, and per pipeline when the events to replay are added.
const PAGE: usize = 1_000;

/// One multiplexed connection: concurrent commands share it, pipelined. Replies may wait for
/// an fsync queued behind thousands of others on a loaded machine, so the crate's 500 ms
/// response timeout is raised.
async fn connect(server: &Server) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://{}/0", server.addr))
        .map_err(|e| format!("redis client: {e}"))?;
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("redis connect: {e}"))
}

/// `XADD bench * payload BODY`: answered once the entry is in the append-only file on disk.
fn xadd(body: &[u8]) -> redis::Cmd {
    let mut command = redis::cmd("XADD");
    command.arg(KEY).arg("*").arg("payload").arg(body);
    command
}

/// `count` entries: one `XADD`, or a pipeline of `count` (not a transaction: Redis Streams has
/// no batch of its own; a pipeline is one round trip, and one fsync covers what a single read
/// of the socket brought).
async fn append(
    connection: &mut MultiplexedConnection,
    body: &[u8],
    count: usize,
) -> Result<(), String> {
    let result = if count == 1 {
        xadd(body).query_async::<Value>(connection).await
    } else {
        let mut pipeline = redis::pipe();
        for _ in 0..count {
            pipeline.add_command(xadd(body));
        }
        pipeline.query_async::<Value>(connection).await
    };
    result.map(drop).map_err(|e| format!("XADD: {e}"))
}

/// `publishers` publishers (over at most 4 connections), each with `in_flight` tasks that
/// append `batch` entries and wait for the answer, for `duration` or `max_events` in all: the
/// shapes of `scenarios::durable_publish`.
pub(crate) async fn publish(
    server: &Server,
    publishers: usize,
    in_flight: usize,
    batch: usize,
    duration: Duration,
    max_events: u64,
) -> Result<DurablePublish, String> {
    let connections: Vec<MultiplexedConnection> = stream::iter(0..publishers.clamp(1, 4))
        .map(|_| connect(server))
        .buffered(4)
        .try_collect()
        .await?;
    let body = load::payload(0).into_bytes();
    let claimed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..publishers * in_flight)
        .map(|i| {
            let mut connection = connections[(i / in_flight) % connections.len()].clone();
            let (claimed, body) = (claimed.clone(), body.clone());
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                loop {
                    let n = claimed.fetch_add(batch as u64, Ordering::Relaxed);
                    if n >= max_events || Instant::now() >= deadline {
                        return Ok::<u64, String>(acknowledged);
                    }
                    let count = (batch as u64).min(max_events - n);
                    append(&mut connection, &body, count as usize).await?;
                    acknowledged += count;
                }
            })
        })
        .collect();
    DurablePublish::total(tasks, started).await
}

/// `events` entries appended (pipelines of `PAGE`), then read back from the start by one
/// reader, `XREAD COUNT PAGE` after the last id it has, timed until it has every one.
pub(crate) async fn replay(server: &Server, events: u64) -> Result<Replay, String> {
    let mut connection = connect(server).await?;
    let body = load::payload(0).into_bytes();
    let mut added = 0;
    while added < events {
        let count = (events - added).min(PAGE as u64);
        append(&mut connection, &body, count as usize).await?;
        added += count;
    }
    let started = Instant::now();
    let mut after = "0-0".to_owned();
    let mut received = 0;
    while received < events {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(PAGE)
            .arg("STREAMS")
            .arg(KEY)
            .arg(&after)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("XREAD: {e}"))?;
        let Some((count, last)) = page(&reply)? else {
            break;
        };
        received += count;
        after = last;
    }
    Ok(Replay {
        events,
        received,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How many entries an `XREAD` of one stream returned, and the id of the last; `None` when it
/// returned none. Only the ids are looked at: the reader spends as little as it can, as the
/// product's does.
fn page(reply: &Value) -> Result<Option<(u64, String)>, String> {
    let odd = || format!("XREAD answered {reply:?}");
    let streams = match reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams.first().ok_or_else(odd)?,
        // RESP3 answers a map of stream to entries.
        Value::Map(streams) => return page_entries(&streams.first().ok_or_else(odd)?.1, reply),
        _ => return Err(odd()),
    };
    match streams {
        // [key, entries]
        Value::Array(pair) => page_entries(pair.get(1).ok_or_else(odd)?, reply),
        _ => Err(odd()),
    }
}

/// `entries`: `[[id, [field, value, ...]], ...]`.
fn page_entries(entries: &Value, reply: &Value) -> Result<Option<(u64, String)>, String> {
    let odd = || format!("XREAD answered {reply:?}");
    let Value::Array(entries) = entries else {
        return Err(odd());
    };
    let Some(last) = entries.last() else {
        return Ok(None);
    };
    let id = match last {
        Value::Array(entry) => match entry.first() {
            Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
            Some(Value::SimpleString(id)) => id.clone(),
            _ => return Err(odd()),
        },
        _ => return Err(odd()),
    };
    Ok(Some((entries.len() as u64, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("payload"), bulk("x")]),
        ])
    }

    #[test]
    fn a_page_counts_its_entries_and_ends_at_the_last_id() {
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk(KEY),
            Value::Array(vec![entry("1-0"), entry("1-1"), entry("2-0")]),
        ])]);
        assert_eq!(page(&resp2), Ok(Some((3, "2-0".to_owned()))));
        let resp3 = Value::Map(vec![(bulk(KEY), Value::Array(vec![entry("5-3")]))]);
        assert_eq!(page(&resp3), Ok(Some((1, "5-3".to_owned()))));
    }

    #[test]
    fn nothing_more_to_read_is_no_page_and_an_odd_answer_an_error() {
        assert_eq!(page(&Value::Nil), Ok(None));
        let empty = Value::Array(vec![Value::Array(vec![bulk(KEY), Value::Array(vec![])])]);
        assert_eq!(page(&empty), Ok(None));
        assert!(page(&Value::Okay).is_err());
        assert!(page(&Value::Array(vec![Value::Array(vec![bulk(KEY)])])).is_err());
    }
}
