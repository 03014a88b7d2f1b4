//! The type-erased channel object that the registry holds and the method proxy stands in for.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Call, ChannelObject, MethodError, Router, SessionInfo};
use crate::channel::ResumeOutcome;

/// An object instance with its methods, its type erased.
#[async_trait::async_trait]
pub(crate) trait BoundObject: Send + Sync {
    /// Runs the method at `path`, or `None` when there is none.
    fn invoke(
        &self,
        path: &[String],
        call: Call,
        input: serde_json::Value,
    ) -> Option<BoxFuture<'static, Result<serde_json::Value, MethodError>>>;

    async fn on_subscribed(&self, session: &SessionInfo, resume: &ResumeOutcome);

    async fn on_session_ended(&self, session_id: &str);
}

/// A channel object with the router of its methods.
pub(crate) struct Bound<T> {
    pub(crate) object: Arc<T>,
    pub(crate) router: Arc<Router<T>>,
}

#[async_trait::async_trait]
impl<T: ChannelObject> BoundObject for Bound<T> {
    fn invoke(
        &self,
        path: &[String],
        call: Call,
        input: serde_json::Value,
    ) -> Option<BoxFuture<'static, Result<serde_json::Value, MethodError>>> {
        let handler = self.router.get(path)?;
        Some(handler(self.object.clone(), call, input))
    }

    async fn on_subscribed(&self, session: &SessionInfo, resume: &ResumeOutcome) {
        self.object.on_subscribed(session, resume).await;
    }

    async fn on_session_ended(&self, session_id: &str) {
        self.object.on_session_ended(session_id).await;
    }
}
