//! The seed's `ChatRoom` as a channel object.

use std::sync::Arc;

use durable_iterator::{
    Call, ChannelHandle, ChannelObject, MethodError, PublishFilter, ResumeOutcome, Router,
    SessionInfo,
};

use super::contract::{ChatMessage, ECHO, Echo, PING, SEND_MESSAGE, SendMessage};

/// One chat room per channel (`chat:*`).
pub(crate) struct ChatRoom {
    channel: ChannelHandle,
}

impl ChatRoom {
    pub(crate) fn new(channel: ChannelHandle) -> Self {
        Self { channel }
    }

    async fn send_message(
        self: Arc<Self>,
        call: Call,
        input: SendMessage,
    ) -> Result<(), MethodError> {
        // The sender is excluded by its session id, which survives reconnects: it does not get
        // its own message back on replay either.
        let Some(sender) = call.caller.session_id.clone() else {
            return Err(MethodError::failed_precondition(
                "sendMessage needs the caller's session ticket",
            ));
        };
        let from = call
            .caller
            .att()
            .and_then(|att| att.get("userId"))
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        let event = ChatMessage {
            message: input.message,
            from,
        };
        self.channel
            .publish(&event, PublishFilter::everyone().exclude([sender]))
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ChannelObject for ChatRoom {
    fn methods(router: &mut Router<Self>) {
        router
            .method(SEND_MESSAGE, Self::send_message)
            .method(PING, |_room, _call, ()| async { Ok("pong".to_owned()) })
            .method(ECHO, |_room, _call, Echo { text }| async move {
                Ok(format!("Echo: {text}"))
            });
    }

    async fn on_subscribed(&self, session: &SessionInfo, resume: &ResumeOutcome) {
        tracing::info!(
            channel = self.channel.name(),
            session = %session.session_id,
            resumed = resume.requested,
            recovered = resume.recovered,
            "joined"
        );
    }

    async fn on_session_ended(&self, session_id: &str) {
        tracing::info!(channel = self.channel.name(), session = %session_id, "left");
    }
}
