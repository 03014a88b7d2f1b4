//! Sessions with a stream open now, by session id: what `RefreshToken` and `Invoke` act on;
//! and sessions whose stream closed, until their resume window lapses: a session has *ended*
//! only when it did not come back within the window (a dropped connection is not an end).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::Waker,
};

use futures::task::AtomicWaker;
use tokio::sync::{Notify, watch};

use crate::{clock::SharedClock, token::TokenClaims};

/// A session whose stream is open.
#[derive(Debug)]
pub(crate) struct LiveSession {
    pub session_id: String,
    pub channel: String,
    claims: watch::Sender<Arc<TokenClaims>>,
    /// Set when the same session subscribes again on another stream.
    superseded: AtomicBool,
    /// The session's stream, woken when it is superseded or its token is refreshed.
    stream: AtomicWaker,
}

impl LiveSession {
    /// The claims of the session's current token.
    pub(crate) fn claims(&self) -> Arc<TokenClaims> {
        self.claims.borrow().clone()
    }

    /// Follows token refreshes.
    pub(crate) fn watch_claims(&self) -> watch::Receiver<Arc<TokenClaims>> {
        self.claims.subscribe()
    }

    /// Whether another stream took this session over.
    pub(crate) fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Has `waker` woken when the session is superseded or its token refreshed (the last
    /// registered waker only). Look at both after registering.
    pub(crate) fn register_stream(&self, waker: &Waker) {
        self.stream.register(waker);
    }
}

/// Why a live session's token was not swapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("session is not connected: subscribe with the new token")]
    NotLive,
    #[error(
        "the new token changes the channel or tags: reconnect with it (the session ticket keeps the session)"
    )]
    ChangesSubscription,
}

/// The live sessions of this server, and the closed ones still inside their resume window.
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
    closed: Mutex<Closed>,
    /// Wakes [`Sessions::next_ended`] when a session closes.
    closed_changed: Notify,
    clock: SharedClock,
    /// How long a closed session may come back before it has ended: the resume window.
    window_ms: u64,
}

/// A session that ended: its resume window lapsed without a reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndedSession {
    pub session_id: String,
    pub channel: String,
}

/// Closed sessions by the time their window lapses.
#[derive(Default)]
struct Closed {
    by_deadline: BTreeSet<(u64, String)>,
    /// Session id → (deadline, channel).
    sessions: HashMap<String, (u64, String)>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.len())
            .field("window_ms", &self.window_ms)
            .finish()
    }
}

impl Sessions {
    /// Sessions that end `window_ms` after their stream closes, by `clock`.
    pub(crate) fn new(clock: SharedClock, window_ms: u64) -> Self {
        Self {
            sessions: Mutex::default(),
            closed: Mutex::default(),
            closed_changed: Notify::new(),
            clock,
            window_ms,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed(&self) -> MutexGuard<'_, Closed> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, session: &LiveSession) {
        let deadline = self.clock.now_ms().saturating_add(self.window_ms);
        let mut closed = self.closed();
        if let Some((old, _)) = closed.sessions.insert(
            session.session_id.clone(),
            (deadline, session.channel.clone()),
        ) {
            closed
                .by_deadline
                .remove(&(old, session.session_id.clone()));
        }
        closed
            .by_deadline
            .insert((deadline, session.session_id.clone()));
        drop(closed);
        self.closed_changed.notify_one();
    }

    fn reopen(&self, session_id: &str) {
        let mut closed = self.closed();
        if let Some((deadline, _)) = closed.sessions.remove(session_id) {
            closed
                .by_deadline
                .remove(&(deadline, session_id.to_owned()));
        }
    }

    /// Waits for the next session whose resume window lapsed without a reconnect. One caller
    /// at a time (the server's reaper).
    pub(crate) async fn next_ended(&self) -> EndedSession {
        loop {
            // Registered before looking, so a close in between is not missed.
            let changed = self.closed_changed.notified();
            // Looked at and taken under one lock: a session that reconnected (and closed
            // again, with a later deadline) in between must not be ended by its old deadline.
            let next = {
                let mut closed = self.closed();
                match closed.by_deadline.first().cloned() {
                    Some((deadline, session_id)) if self.clock.now_ms() >= deadline => {
                        closed.by_deadline.remove(&(deadline, session_id.clone()));
                        if let Some((_, channel)) = closed.sessions.remove(&session_id) {
                            return EndedSession {
                                session_id,
                                channel,
                            };
                        }
                        continue;
                    }
                    next => next.map(|(deadline, _)| deadline),
                }
            };
            match next {
                Some(deadline) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = self.clock.sleep_until(deadline) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Registers a session's new stream; an older stream of the same session is told it was
    /// superseded. The registration lasts as long as the returned guard.
    pub(crate) fn register(
        self: &Arc<Self>,
        session_id: String,
        claims: Arc<TokenClaims>,
    ) -> LiveRegistration {
        let session = Arc::new(LiveSession {
            session_id: session_id.clone(),
            channel: claims.chn.clone(),
            claims: watch::Sender::new(claims),
            superseded: AtomicBool::new(false),
            stream: AtomicWaker::new(),
        });
        // Reopened under the live map's lock, as a closing stream closes under it: a stream of
        // this session that is closing now cannot mark the session closed after this one is
        // live (its session-ended hook would fire while the session is connected).
        let mut sessions = self.sessions();
        self.reopen(&session_id);
        let previous = sessions.insert(session_id, session.clone());
        drop(sessions);
        if let Some(previous) = previous {
            previous.superseded.store(true, Ordering::Release);
            previous.stream.wake();
        }
        LiveRegistration {
            sessions: self.clone(),
            session,
        }
    }

    /// The live session `session_id`, if its stream is open.
    pub(crate) fn get(&self, session_id: &str) -> Option<Arc<LiveSession>> {
        self.sessions().get(session_id).cloned()
    }

    /// Whether [`Self::refresh`] would swap the token now; changes nothing.
    pub(crate) fn check_refresh(
        &self,
        session_id: &str,
        claims: &TokenClaims,
    ) -> Result<Arc<LiveSession>, RefreshError> {
        let session = self.get(session_id).ok_or(RefreshError::NotLive)?;
        if !session.claims.borrow().same_subscription(claims) {
            return Err(RefreshError::ChangesSubscription);
        }
        Ok(session)
    }

    /// Swaps the token of a live session when it keeps channel and tags.
    pub(crate) fn refresh(
        &self,
        session_id: &str,
        claims: TokenClaims,
    ) -> Result<(), RefreshError> {
        let session = self.check_refresh(session_id, &claims)?;
        session.claims.send_replace(Arc::new(claims));
        session.stream.wake();
        Ok(())
    }

    /// The sessions live on `channel` now.
    pub(crate) fn on_channel(&self, channel: &str) -> Vec<Arc<LiveSession>> {
        self.sessions()
            .values()
            .filter(|session| session.channel == channel)
            .cloned()
            .collect()
    }

    /// Sessions live now.
    pub(crate) fn len(&self) -> usize {
        self.sessions().len()
    }
}

/// Keeps a session registered as live; dropping it unregisters the session unless a newer
/// stream has taken it over.
#[derive(Debug)]
pub(crate) struct LiveRegistration {
    sessions: Arc<Sessions>,
    session: Arc<LiveSession>,
}

impl LiveRegistration {
    pub(crate) fn session(&self) -> &Arc<LiveSession> {
        &self.session
    }
}

impl Drop for LiveRegistration {
    fn drop(&mut self) {
        let mut sessions = self.sessions.sessions();
        if sessions
            .get(&self.session.session_id)
            .is_some_and(|current| Arc::ptr_eq(current, &self.session))
        {
            sessions.remove(&self.session.session_id);
            // Closed before the live map is released: see `register`.
            self.sessions.close(&self.session);
        }
    }
}
