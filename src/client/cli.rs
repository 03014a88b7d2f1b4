//! What `durable-iterator subscribe` does with a subscription: one JSON line per event on one
//! writer (stdout), connections and resume reports as JSON lines on another (stderr), so the
//! events can be piped on while a person or a log still sees what happened.

use std::io::Write;

use futures::StreamExt;

use super::{ClientError, Subscription, SubscriptionItem};

/// Prints `subscription` until it ends: each event as `{"id", "payload", "published_at_ms"}`
/// on `events`; each new connection (`{"connected": {..}}`, with the session ticket to resume
/// with later) and each resume that lost history (`{"resume": {..}}`) on `notices`.
///
/// Returns `Ok` when the subscription was cancelled, the error that ended it otherwise.
pub async fn print_subscription(
    mut subscription: Subscription,
    events: &mut impl Write,
    notices: &mut impl Write,
) -> Result<(), ClientError> {
    let handle = subscription.handle();
    let mut progress = handle.watch();
    let mut connections = 0;
    loop {
        tokio::select! {
            item = subscription.next() => match item {
                None => return Ok(()),
                Some(Err(error)) => return Err(error),
                Some(Ok(SubscriptionItem::Event(event))) => {
                    writeln!(events, "{}", event.to_json())?;
                    events.flush()?;
                }
                Some(Ok(SubscriptionItem::Resumed(report))) => {
                    writeln!(notices, "{}", report.to_json())?;
                }
            },
            Ok(()) = progress.changed() => {
                let now = progress.borrow_and_update().clone();
                if now.connections > connections {
                    connections = now.connections;
                    let credentials = handle.credentials();
                    let line = serde_json::json!({
                        "connected": {
                            "session_id": now.session_id,
                            "session_ticket": credentials.session_ticket,
                            "connections": now.connections,
                        }
                    });
                    writeln!(notices, "{line}")?;
                }
            }
        }
    }
}
