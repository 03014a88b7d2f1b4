//! Calls forwarded between nodes over Redis pub/sub: each node listens on a topic of its own,
//! `{prefix}:node:{node}`, for calls and for the answers to its own.
//!
//! A call: `C <call id> <calling node> <kind>\n` and the request message, protobuf-encoded.
//! An answer: `A <call id> <status code>\n`, the status message after a 4-byte big-endian
//! length, then the response message (for code 0). A call to a node that is not listening
//! (`PUBLISH` reached nobody) fails at once; one that is not answered in time fails too, and
//! a late answer is dropped.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prost::Message;
use redis::{AsyncCommands, aio::ConnectionManager};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use crate::{
    cluster::{ForwardedAnswer, ForwardedCall, IncomingCall, NodeId},
    pb,
};

/// How long a forwarded call may take, the run on the other node included.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic node `node` listens on.
pub(super) fn node_topic(prefix: &str, node: NodeId) -> String {
    format!("{prefix}:node:{node}")
}

/// The calls of one node: those it waits on, and where those that come to it go.
pub(super) struct Calls {
    node: NodeId,
    prefix: String,
    connection: ConnectionManager,
    waiting: Mutex<HashMap<u64, oneshot::Sender<ForwardedAnswer>>>,
    next_call: AtomicU64,
    incoming: mpsc::UnboundedSender<IncomingCall>,
}

impl Calls {
    pub(super) fn new(
        node: NodeId,
        prefix: String,
        connection: ConnectionManager,
        incoming: mpsc::UnboundedSender<IncomingCall>,
    ) -> Self {
        Self {
            node,
            prefix,
            connection,
            waiting: Mutex::default(),
            next_call: AtomicU64::new(0),
            incoming,
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<ForwardedAnswer>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call` on `node` and waits for its answer.
    pub(super) async fn forward(&self, node: NodeId, call: &ForwardedCall) -> ForwardedAnswer {
        let answer = self.send(node, call).await;
        crate::metrics::forwarded(answer.as_ref().err().map_or(Code::Ok, Status::code));
        answer
    }

    async fn send(&self, node: NodeId, call: &ForwardedCall) -> ForwardedAnswer {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        self.waiting().insert(id, answered);
        let (kind, body) = encode_call(call);
        let mut message = format!("C {id} {} {kind}\n", self.node).into_bytes();
        message.extend_from_slice(&body);
        let published: Result<u64, _> = self
            .connection
            .clone()
            .publish(node_topic(&self.prefix, node), message)
            .await;
        let unreachable = |why: String| {
            self.waiting().remove(&id);
            Err(Status::unavailable(format!(
                "the node holding the session cannot be reached ({why}): try again"
            )))
        };
        match published {
            Ok(0) => return unreachable("it is not listening".into()),
            Ok(_) => {}
            Err(error) => return unreachable(format!("Redis: {error}")),
        }
        match tokio::time::timeout(FORWARD_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => unreachable("this node is stopping".into()),
            Err(_) => unreachable(format!("no answer in {FORWARD_TIMEOUT:?}")),
        }
    }

    /// Takes a message on this node's topic: a call to run here, or the answer to one of ours.
    pub(super) fn route(&self, message: &[u8]) {
        let Some(newline) = message.iter().position(|&b| b == b'\n') else {
            return tracing::warn!("a malformed message on this node's topic");
        };
        let (header, body) = (&message[..newline], &message[newline + 1..]);
        let header = std::str::from_utf8(header).unwrap_or("");
        let mut words = header.split(' ');
        match (
            words.next(),
            words.next().and_then(|id| id.parse::<u64>().ok()),
        ) {
            (Some("C"), Some(id)) => {
                let caller = words.next().and_then(|node| node.parse::<NodeId>().ok());
                let call = words.next().and_then(|kind| decode_call(kind, body));
                match (caller, call) {
                    (Some(caller), Some(call)) => self.run(caller, id, call),
                    _ => tracing::warn!("a malformed call from another node"),
                }
            }
            (Some("A"), Some(id)) => {
                let code = words.next().and_then(|code| code.parse::<i32>().ok());
                let answer = code.and_then(|code| decode_answer(code, body));
                let waiting = self.waiting().remove(&id);
                match (waiting, answer) {
                    (Some(waiting), Some(answer)) => {
                        let _ = waiting.send(answer);
                    }
                    (Some(waiting), None) => {
                        let _ = waiting.send(Err(Status::internal(
                            "the node holding the session answered malformed",
                        )));
                    }
                    // Answered after the caller gave up.
                    (None, _) => {}
                }
            }
            _ => tracing::warn!("a malformed message on this node's topic"),
        }
    }

    /// Hands a call to the server and sends its answer back to `caller`.
    fn run(&self, caller: NodeId, id: u64, call: ForwardedCall) {
        let (answer, answered) = oneshot::channel();
        if self.incoming.send(IncomingCall { call, answer }).is_err() {
            return;
        }
        let mut connection = self.connection.clone();
        let topic = node_topic(&self.prefix, caller);
        tokio::spawn(async move {
            let answer = answered
                .await
                .unwrap_or_else(|_| Err(Status::unavailable("the node is stopping")));
            let published: Result<u64, _> =
                connection.publish(topic, encode_answer(id, &answer)).await;
            if let Err(error) = published {
                tracing::debug!(%error, "answering a forwarded call failed");
            }
        });
    }
}

fn encode_call(call: &ForwardedCall) -> (&'static str, Vec<u8>) {
    match call {
        ForwardedCall::RefreshToken(request) => ("refresh", request.encode_to_vec()),
        ForwardedCall::Invoke(request) => ("invoke", request.encode_to_vec()),
        ForwardedCall::Disconnect(request) => ("disconnect", request.encode_to_vec()),
        ForwardedCall::DisconnectAll(request) => ("disconnect-all", request.encode_to_vec()),
    }
}

fn decode_call(kind: &str, body: &[u8]) -> Option<ForwardedCall> {
    Some(match kind {
        "refresh" => ForwardedCall::RefreshToken(pb::RefreshTokenRequest::decode(body).ok()?),
        "invoke" => ForwardedCall::Invoke(pb::InvokeRequest::decode(body).ok()?),
        "disconnect" => ForwardedCall::Disconnect(pb::DisconnectRequest::decode(body).ok()?),
        "disconnect-all" => {
            ForwardedCall::DisconnectAll(pb::DisconnectAllRequest::decode(body).ok()?)
        }
        _ => return None,
    })
}

fn encode_answer(id: u64, answer: &ForwardedAnswer) -> Vec<u8> {
    let (code, text, body): (i32, &str, &[u8]) = match answer {
        Ok(body) => (0, "", body),
        Err(status) => (status.code() as i32, status.message(), &[]),
    };
    let mut message = format!("A {id} {code}\n").into_bytes();
    message.extend_from_slice(&(text.len() as u32).to_be_bytes());
    message.extend_from_slice(text.as_bytes());
    message.extend_from_slice(body);
    message
}

fn decode_answer(code: i32, body: &[u8]) -> Option<ForwardedAnswer> {
    let (len, rest) = body.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (text, response) = rest.split_at_checked(len)?;
    let text = std::str::from_utf8(text).ok()?;
    Some(match Code::from_i32(code) {
        Code::Ok => Ok(response.to_vec()),
        code => Err(Status::new(code, text)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_answers_read_back_as_written() {
        let calls = [
            ForwardedCall::RefreshToken(pb::RefreshTokenRequest {
                token: "t".into(),
                session_ticket: "s.m".into(),
            }),
            ForwardedCall::DisconnectAll(pb::DisconnectAllRequest {
                channel: "room".into(),
                revoke: true,
            }),
        ];
        for call in calls {
            let (kind, body) = encode_call(&call);
            assert_eq!(decode_call(kind, &body), Some(call));
        }
        assert_eq!(decode_call("unknown", b""), None);
        for answer in [
            Ok(b"\x08\x01".to_vec()),
            Err(Status::failed_precondition("not live")),
        ] {
            let message = encode_answer(7, &answer);
            let newline = message.iter().position(|&b| b == b'\n').unwrap();
            let header = std::str::from_utf8(&message[..newline]).unwrap();
            let code: i32 = header.rsplit(' ').next().unwrap().parse().unwrap();
            let decoded = decode_answer(code, &message[newline + 1..]).unwrap();
            match (answer, decoded) {
                (Ok(sent), Ok(read)) => assert_eq!(sent, read),
                (Err(sent), Err(read)) => {
                    assert_eq!((sent.code(), sent.message()), (read.code(), read.message()))
                }
                other => panic!("read back differently: {other:?}"),
            }
        }
        assert!(decode_answer(0, b"\x00\x00").is_none(), "a cut length");
    }
}
