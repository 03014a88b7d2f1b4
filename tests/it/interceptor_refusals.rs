//! An interceptor that refuses a call after `next.run()` leaves the session as it was: no
//! takeover of the live stream, no swapped token.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::common::*;
use durable_iterator::{Interceptor, Next, RefreshCall, ResumeOutcome, SubscribeCall};
use serde_json::json;
use tonic::{Code, Status};

/// Runs the rest of the chain, then refuses, while `refuse` is set: a check that needs the
/// call's result (or one written the wrong way round).
struct RefuseAfterRunning {
    refuse: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Interceptor for RefuseAfterRunning {
    async fn subscribe(
        &self,
        _call: &SubscribeCall,
        next: Next<'_, SubscribeCall, ResumeOutcome>,
    ) -> Result<ResumeOutcome, Status> {
        let outcome = next.run().await?;
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Status::permission_denied("refused after opening"));
        }
        Ok(outcome)
    }

    async fn refresh(
        &self,
        _call: &RefreshCall,
        next: Next<'_, RefreshCall, i64>,
    ) -> Result<i64, Status> {
        let expires_at = next.run().await?;
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Status::permission_denied("refused after swapping"));
        }
        Ok(expires_at)
    }
}

async fn server_refusing_after_running() -> (TestServer, Arc<AtomicBool>) {
    let refuse = Arc::new(AtomicBool::new(false));
    let switch = refuse.clone();
    let server = TestServer::start_with(Options {
        config: Box::new(move |config| {
            config
                .interceptors
                .push(RefuseAfterRunning { refuse: switch });
        }),
        ..Options::default()
    })
    .await;
    (server, refuse)
}

#[tokio::test]
async fn a_subscribe_refused_after_next_run_does_not_take_over_the_live_session() {
    let (server, refuse) = server_refusing_after_running().await;
    let (subscribed, mut live) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let first = server.publish("room", json!(1)).await;
    assert_eq!(next_event(&mut live).await.id, first);

    refuse.store(true, Ordering::SeqCst);
    let refused = server
        .subscribe(resume_request(
            server.token("room"),
            &first,
            &subscribed.session_ticket,
        ))
        .await;
    let message = expect_refused(refused, Code::PermissionDenied);
    assert_eq!(message, "refused after opening");

    // The refused stream never existed: the session's open stream was not superseded.
    let seen = drain_until_marker(&server, "room", &mut live).await;
    assert!(seen.is_empty(), "{seen:?}");
    // And the session is still live: a refresh reaches it.
    refuse.store(false, Ordering::SeqCst);
    server
        .refresh_token(&subscribed.session_ticket, server.token("room"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refresh_refused_after_next_run_keeps_the_old_token() {
    let (server, refuse) = server_refusing_after_running().await;
    let mut short = server.claims("room");
    short.exp = server.now_secs() + 60;
    let (subscribed, mut live) = server
        .subscribe(subscribe_request(server.sign(&short)))
        .await
        .unwrap();

    refuse.store(true, Ordering::SeqCst);
    let refused = server
        .refresh_token(&subscribed.session_ticket, server.token("room"))
        .await;
    let message = expect_refused(refused, Code::PermissionDenied);
    assert_eq!(message, "refused after swapping");

    // The refused token (an hour long) was not applied: the stream ends at the old expiry.
    server.clock.advance(Duration::from_secs(60));
    let message = expect_end(&mut live, Code::Unauthenticated).await;
    assert!(message.contains("expired"), "{message}");
}
