//! Interceptors: code that runs around every `Subscribe`, `Invoke` and `RefreshToken` once the
//! caller is authenticated, for logging, metrics or extra checks.
//!
//! Each hook gets the call (read-only) and the rest of the chain as [`Next`]; it may act before
//! and after `next.run()`, or refuse by returning a status without running it. Interceptors
//! compose in the order they are added: the first added is the outermost.
//!
//! ```
//! use durable_iterator::{Interceptor, InvokeCall, Next};
//!
//! struct OnlyWeekdays;
//!
//! #[async_trait::async_trait]
//! impl Interceptor for OnlyWeekdays {
//!     async fn invoke(
//!         &self,
//!         call: &InvokeCall,
//!         next: Next<'_, InvokeCall, serde_json::Value>,
//!     ) -> Result<serde_json::Value, tonic::Status> {
//!         tracing::info!(path = ?call.path, "invoke");
//!         next.run().await
//!     }
//! }
//! ```

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;
use tonic::Status;

use crate::{channel::ResumeOutcome, object::Caller, token::TokenClaims};

/// A `Subscribe` about to open its stream.
#[derive(Debug, Clone)]
pub struct SubscribeCall {
    /// The token's channel.
    pub channel: String,
    /// The session's id: new, or kept from the presented ticket.
    pub session_id: String,
    /// The verified token.
    pub claims: Arc<TokenClaims>,
    /// The id to resume after, if any.
    pub last_event_id: Option<String>,
}

/// An `Invoke` of a method the caller's token allows.
#[derive(Debug, Clone)]
pub struct InvokeCall {
    /// The caller's channel.
    pub channel: String,
    /// Who calls.
    pub caller: Caller,
    /// The method's path.
    pub path: Vec<String>,
    /// The method's input.
    pub input: serde_json::Value,
}

/// A `RefreshToken` of a live session.
#[derive(Debug, Clone)]
pub struct RefreshCall {
    /// The session's channel.
    pub channel: String,
    /// The live session.
    pub session_id: String,
    /// The claims of the new token.
    pub claims: Arc<TokenClaims>,
}

/// Code around the client calls. Every hook defaults to running the rest of the chain.
#[async_trait::async_trait]
pub trait Interceptor: Send + Sync + 'static {
    /// Around opening a stream; the result is the resume outcome the stream starts with.
    async fn subscribe(
        &self,
        _call: &SubscribeCall,
        next: Next<'_, SubscribeCall, ResumeOutcome>,
    ) -> Result<ResumeOutcome, Status> {
        next.run().await
    }

    /// Around a method call; the result is the method's output.
    async fn invoke(
        &self,
        _call: &InvokeCall,
        next: Next<'_, InvokeCall, serde_json::Value>,
    ) -> Result<serde_json::Value, Status> {
        next.run().await
    }

    /// Around a token refresh; the result is the new expiry (Unix seconds).
    async fn refresh(
        &self,
        _call: &RefreshCall,
        next: Next<'_, RefreshCall, i64>,
    ) -> Result<i64, Status> {
        next.run().await
    }
}

type Step<'a, C, R> =
    fn(&'a dyn Interceptor, &'a C, Next<'a, C, R>) -> BoxFuture<'a, Result<R, Status>>;
type Last<'a, R> = Box<dyn FnOnce() -> BoxFuture<'a, Result<R, Status>> + Send + 'a>;

/// The rest of an interceptor chain: the later interceptors, then the call itself.
pub struct Next<'a, C, R> {
    rest: &'a [Arc<dyn Interceptor>],
    call: &'a C,
    step: Step<'a, C, R>,
    last: Last<'a, R>,
}

impl<'a, C: Sync, R: Send + 'a> Next<'a, C, R> {
    /// Runs the rest of the chain.
    pub async fn run(self) -> Result<R, Status> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = Next { rest, ..self };
                (self.step)(first.as_ref(), self.call, next).await
            }
            None => (self.last)().await,
        }
    }
}

/// The interceptors of a server, in order.
#[derive(Clone, Default)]
pub struct Interceptors(Vec<Arc<dyn Interceptor>>);

impl fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interceptors({})", self.0.len())
    }
}

impl Interceptors {
    /// Adds `interceptor` inside the ones added before it.
    pub fn push(&mut self, interceptor: impl Interceptor) -> &mut Self {
        self.0.push(Arc::new(interceptor));
        self
    }

    fn chain<'a, C: Sync, R: Send + 'a>(
        &'a self,
        call: &'a C,
        step: Step<'a, C, R>,
        last: impl FnOnce() -> BoxFuture<'a, Result<R, Status>> + Send + 'a,
    ) -> Next<'a, C, R> {
        Next {
            rest: &self.0,
            call,
            step,
            last: Box::new(last),
        }
    }

    pub(crate) async fn subscribe<'a>(
        &'a self,
        call: &'a SubscribeCall,
        open: impl FnOnce() -> BoxFuture<'a, Result<ResumeOutcome, Status>> + Send + 'a,
    ) -> Result<ResumeOutcome, Status> {
        self.chain(call, |i, call, next| i.subscribe(call, next), open)
            .run()
            .await
    }

    pub(crate) async fn invoke<'a>(
        &'a self,
        call: &'a InvokeCall,
        run: impl FnOnce() -> BoxFuture<'a, Result<serde_json::Value, Status>> + Send + 'a,
    ) -> Result<serde_json::Value, Status> {
        self.chain(call, |i, call, next| i.invoke(call, next), run)
            .run()
            .await
    }

    pub(crate) async fn refresh<'a>(
        &'a self,
        call: &'a RefreshCall,
        swap: impl FnOnce() -> BoxFuture<'a, Result<i64, Status>> + Send + 'a,
    ) -> Result<i64, Status> {
        self.chain(call, |i, call, next| i.refresh(call, next), swap)
            .run()
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Logs before and after, and refuses paths named "refused".
    struct Logging {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Interceptor for Logging {
        async fn invoke(
            &self,
            call: &InvokeCall,
            next: Next<'_, InvokeCall, serde_json::Value>,
        ) -> Result<serde_json::Value, Status> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} before", self.name));
            if call.path == ["refused"] && self.name == "inner" {
                return Err(Status::permission_denied("refused by inner"));
            }
            let result = next.run().await;
            self.log
                .lock()
                .unwrap()
                .push(format!("{} after", self.name));
            result
        }
    }

    fn call(path: &str) -> InvokeCall {
        InvokeCall {
            channel: "c".into(),
            caller: Caller {
                session_id: None,
                claims: Arc::new(TokenClaims::new("c", 0, 1)),
            },
            path: vec![path.into()],
            input: serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn interceptors_wrap_in_order_and_may_refuse() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut interceptors = Interceptors::default();
        for name in ["outer", "inner"] {
            interceptors.push(Logging {
                name,
                log: log.clone(),
            });
        }
        let ran = Arc::new(Mutex::new(0));
        fn run<'a>(
            ran: Arc<Mutex<i32>>,
        ) -> impl FnOnce() -> BoxFuture<'a, Result<serde_json::Value, Status>> + Send + 'a {
            move || {
                Box::pin(async move {
                    *ran.lock().unwrap() += 1;
                    Ok(serde_json::json!("output"))
                })
            }
        }
        let call_ok = call("ok");
        let output = interceptors.invoke(&call_ok, run(ran.clone())).await;
        assert_eq!(output.unwrap(), "output");
        assert_eq!(
            *log.lock().unwrap(),
            ["outer before", "inner before", "inner after", "outer after"]
        );
        log.lock().unwrap().clear();
        let call_refused = call("refused");
        let refused = interceptors.invoke(&call_refused, run(ran.clone())).await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(
            *log.lock().unwrap(),
            ["outer before", "inner before", "outer after"]
        );
        assert_eq!(*ran.lock().unwrap(), 1, "the refused call never ran");
    }
}
