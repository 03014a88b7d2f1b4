//! The chat room's contract, declared once: the server example implements it, the client
//! example and the tests call it, and a call with the wrong types does not compile.

use durable_iterator::Method;
use serde::{Deserialize, Serialize};

/// What `sendMessage` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SendMessage {
    pub message: String,
}

/// What `routerClient.echo` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Echo {
    pub text: String,
}

/// The event every member of the room receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChatMessage {
    pub message: String,
    /// The sender's `userId` from the token's `att`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Publishes a message to everyone in the room but the sender.
pub(crate) const SEND_MESSAGE: Method<SendMessage, ()> = Method::new(&["sendMessage"]);
/// Answers `pong`.
pub(crate) const PING: Method<(), String> = Method::new(&["routerClient", "ping"]);
/// Answers `Echo: <text>`.
pub(crate) const ECHO: Method<Echo, String> = Method::new(&["routerClient", "echo"]);
