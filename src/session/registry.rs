//! Sessions with a stream open now, by session id: what `RefreshToken` and `Invoke` act on;
//! and sessions whose stream closed, until their resume window lapses: a session has *ended*
//! only when it did not come back within the window (a dropped connection is not an end).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::Waker,
};

use futures::task::AtomicWaker;
use tokio::sync::{Notify, watch};

use crate::{
    clock::SharedClock,
    cluster::Cluster,
    object::{PresentSession, SessionInfo},
    token::TokenClaims,
};

/// A session whose stream is open.
#[derive(Debug)]
pub(crate) struct LiveSession {
    pub session_id: String,
    pub channel: String,
    claims: watch::Sender<Arc<TokenClaims>>,
    /// When this stream of the session opened, Unix milliseconds.
    pub connected_at_ms: u64,
    /// How many times the session came back with its ticket while this server knew it.
    pub resumes: u64,
    /// Set when the same session subscribes again on another stream.
    superseded: AtomicBool,
    /// Set with `superseded` when that stream is on another node: closing this one does not
    /// close the session here (no resume window, no session-ended hook on this node).
    moved: AtomicBool,
    /// Set when the server API disconnects the session.
    disconnected: AtomicBool,
    /// Set with `disconnected` when the session is revoked: it ends when its stream closes,
    /// with no resume window.
    revoked: AtomicBool,
    /// The session's stream, woken when it is superseded, disconnected or its token refreshed.
    stream: AtomicWaker,
}

/// Why the server ends a live session's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The session subscribed again on another stream.
    Superseded,
    /// The server API disconnected it.
    Disconnected,
}

impl LiveSession {
    /// The claims of the session's current token.
    pub(crate) fn claims(&self) -> Arc<TokenClaims> {
        self.claims.borrow().clone()
    }

    /// The session as presence lists it.
    pub(crate) fn present(&self) -> PresentSession {
        PresentSession {
            session: SessionInfo {
                session_id: self.session_id.clone(),
                claims: self.claims(),
            },
            connected_at_ms: self.connected_at_ms,
            resumes: self.resumes,
        }
    }

    /// Follows token refreshes.
    pub(crate) fn watch_claims(&self) -> watch::Receiver<Arc<TokenClaims>> {
        self.claims.subscribe()
    }

    /// Whether the server ends this stream, and why: another stream took the session over,
    /// or the server API disconnected it.
    pub(crate) fn ended_by(&self) -> Option<StreamEnd> {
        if self.superseded.load(Ordering::Acquire) {
            Some(StreamEnd::Superseded)
        } else if self.disconnected.load(Ordering::Acquire) {
            Some(StreamEnd::Disconnected)
        } else {
            None
        }
    }

    fn disconnect(&self, revoke: bool) {
        if revoke {
            // Before `disconnected`: the stream that sees it closes the session as revoked.
            self.revoked.store(true, Ordering::Release);
        }
        self.disconnected.store(true, Ordering::Release);
        self.stream.wake();
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

/// The live sessions, by id and by channel.
#[derive(Default)]
struct Live {
    by_id: HashMap<String, Arc<LiveSession>>,
    /// Channel → its live session ids, both in order: pages of presence and of channels.
    by_channel: BTreeMap<String, BTreeSet<String>>,
}

/// No session with this id is live on the channel (nor, for a revoke, inside its window).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no session {session_id:?} on channel {channel:?}")]
pub struct SessionNotFound {
    /// The channel asked about.
    pub channel: String,
    /// The session asked about.
    pub session_id: String,
}

/// Revoked session ids, and until when each one's ticket is refused (Unix ms).
#[derive(Default)]
struct Revocations {
    until: HashMap<String, u64>,
    /// Lapsed ones are dropped when there are this many: twice as many as after the last
    /// pruning, so that revoking a channel's sessions one by one costs O(1) each.
    prune_at: usize,
}

/// Revocations are kept for the resume window, and at least this long.
const MIN_REVOCATION_MS: u64 = 24 * 60 * 60 * 1000;

/// The live sessions of this server, and the closed ones still inside their resume window.
pub(crate) struct Sessions {
    sessions: Mutex<Live>,
    closed: Mutex<Closed>,
    revoked: Mutex<Revocations>,
    /// Wakes [`Sessions::next_ended`] when a session closes.
    closed_changed: Notify,
    clock: SharedClock,
    /// How long a closed session may come back before it has ended: the resume window.
    window_ms: u64,
    /// The other nodes, told of every session that opens and closes here.
    cluster: Option<Arc<dyn Cluster>>,
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
    sessions: HashMap<String, ClosedSession>,
}

struct ClosedSession {
    deadline: u64,
    channel: String,
    resumes: u64,
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
    /// Sessions that end `window_ms` after their stream closes, by `clock`; `cluster` (if
    /// any) is told of every session that opens and closes here.
    pub(crate) fn new(
        clock: SharedClock,
        window_ms: u64,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Self {
        Self {
            sessions: Mutex::default(),
            closed: Mutex::default(),
            revoked: Mutex::default(),
            closed_changed: Notify::new(),
            clock,
            window_ms,
            cluster,
        }
    }

    /// The other nodes sharing this node's channels, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.as_ref()
    }

    fn sessions(&self) -> MutexGuard<'_, Live> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn revocations(&self) -> MutexGuard<'_, Revocations> {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed(&self) -> MutexGuard<'_, Closed> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, session: &LiveSession) {
        let now = self.clock.now_ms();
        // A revoked session cannot come back: it has ended now.
        let window_ms = if session.revoked.load(Ordering::Acquire) {
            0
        } else {
            self.window_ms
        };
        let deadline = now.saturating_add(window_ms);
        if let Some(cluster) = &self.cluster {
            cluster.closed(&session.session_id, window_ms);
        }
        let closing = ClosedSession {
            deadline,
            channel: session.channel.clone(),
            resumes: session.resumes,
        };
        self.closed().insert(session.session_id.clone(), closing);
        self.closed_changed.notify_one();
    }

    /// Takes a closed session back (it subscribed again); how many times it resumed before.
    fn reopen(&self, session_id: &str) -> Option<u64> {
        let mut closed = self.closed();
        let reopened = closed.sessions.remove(session_id)?;
        closed
            .by_deadline
            .remove(&(reopened.deadline, session_id.to_owned()));
        Some(reopened.resumes)
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
                        if let Some(ended) = closed.sessions.remove(&session_id) {
                            return EndedSession {
                                session_id,
                                channel: ended.channel,
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
        // Reopened under the live map's lock, as a closing stream closes under it: a stream of
        // this session that is closing now cannot mark the session closed after this one is
        // live (its session-ended hook would fire while the session is connected).
        let mut sessions = self.sessions();
        let reopened = self.reopen(&session_id);
        let resumed = sessions
            .by_id
            .get(&session_id)
            .map(|s| s.resumes)
            .or(reopened);
        let session = Arc::new(LiveSession {
            session_id: session_id.clone(),
            channel: claims.chn.clone(),
            claims: watch::Sender::new(claims),
            connected_at_ms: self.clock.now_ms(),
            resumes: resumed.map_or(0, |resumes| resumes + 1),
            superseded: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            disconnected: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            stream: AtomicWaker::new(),
        });
        let previous = sessions.by_id.insert(session_id.clone(), session.clone());
        if let Some(previous) = &previous
            && previous.channel != session.channel
        {
            sessions.remove_from_channel(&previous.channel, &session_id);
        }
        sessions
            .by_channel
            .entry(session.channel.clone())
            .or_default()
            .insert(session_id);
        // Under the live map's lock, as a close is: the directory gets them in order.
        if let Some(cluster) = &self.cluster {
            cluster.opened(&session.present());
        }
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

    /// Another node opened a stream of session `session_id`: the stream it has here, if any,
    /// is superseded, and the session is no longer this node's to end (a closed one waiting out
    /// its resume window here is forgotten).
    pub(crate) fn opened_elsewhere(&self, session_id: &str) {
        let sessions = self.sessions();
        let live = sessions.by_id.get(session_id).cloned();
        let _ = self.reopen(session_id);
        drop(sessions);
        if let Some(live) = live {
            live.moved.store(true, Ordering::Release);
            live.superseded.store(true, Ordering::Release);
            live.stream.wake();
        }
    }

    /// The live session `session_id`, if its stream is open.
    pub(crate) fn get(&self, session_id: &str) -> Option<Arc<LiveSession>> {
        self.sessions().by_id.get(session_id).cloned()
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
        if let Some(cluster) = &self.cluster {
            cluster.refreshed(&session.present());
        }
        Ok(())
    }

    /// The sessions live on `channel` now, in session id order.
    pub(crate) fn on_channel(&self, channel: &str) -> Vec<Arc<LiveSession>> {
        self.page_on(channel, None, usize::MAX)
    }

    /// At most `limit` of the sessions live on `channel`, in session id order, after `after`.
    pub(crate) fn page_on(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Arc<LiveSession>> {
        let sessions = self.sessions();
        let Some(ids) = sessions.by_channel.get(channel) else {
            return Vec::new();
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        ids.range::<str, _>((start, Bound::Unbounded))
            .filter_map(|id| sessions.by_id.get(id).cloned())
            .take(limit)
            .collect()
    }

    /// How many sessions are live on `channel`.
    pub(crate) fn count_on(&self, channel: &str) -> usize {
        self.sessions()
            .by_channel
            .get(channel)
            .map_or(0, BTreeSet::len)
    }

    /// At most `limit` channels with live sessions, in name order: those starting with
    /// `prefix` that sort after `after`.
    pub(crate) fn channels(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.sessions()
            .by_channel
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Ends the stream of session `session_id` on `channel` (it ends with PERMISSION_DENIED);
    /// with `revoke`, refuses its ticket from then on and ends the session at once rather than
    /// after the resume window; a revoke also reaches a session inside its resume window.
    /// Returns whether a stream was open.
    pub(crate) fn disconnect(
        &self,
        channel: &str,
        session_id: &str,
        revoke: bool,
    ) -> Result<bool, SessionNotFound> {
        let live = self.get(session_id).filter(|s| s.channel == channel);
        let not_found = || SessionNotFound {
            channel: channel.to_owned(),
            session_id: session_id.to_owned(),
        };
        if !revoke {
            let live = live.ok_or_else(not_found)?;
            live.disconnect(false);
            return Ok(true);
        }
        let now = self.clock.now_ms();
        if live.is_none() && !self.end_closed_now(channel, session_id, now) {
            return Err(not_found());
        }
        let until = now.saturating_add(self.revocation_ms());
        let mut revoked = self.revocations();
        revoked.until.insert(session_id.to_owned(), until);
        if revoked.until.len() >= revoked.prune_at {
            revoked.until.retain(|_, until| *until > now);
            revoked.prune_at = (revoked.until.len() * 2).max(1_024);
        }
        drop(revoked);
        if let Some(live) = &live {
            live.disconnect(true);
        }
        Ok(live.is_some())
    }

    /// Ends every stream live on `channel` as [`Self::disconnect`] does; returns how many.
    pub(crate) fn disconnect_all(&self, channel: &str, revoke: bool) -> usize {
        self.on_channel(channel)
            .iter()
            .filter(|session| {
                self.disconnect(channel, &session.session_id, revoke)
                    .unwrap_or(false)
            })
            .count()
    }

    /// How long a revocation refuses the session's ticket: as long as the session could come
    /// back, and at least [`MIN_REVOCATION_MS`].
    pub(crate) fn revocation_ms(&self) -> u64 {
        self.window_ms.max(MIN_REVOCATION_MS)
    }

    /// Whether session `session_id` of `channel` closed here and may still come back.
    pub(crate) fn is_closed_here(&self, channel: &str, session_id: &str) -> bool {
        self.closed()
            .sessions
            .get(session_id)
            .is_some_and(|session| session.channel == channel)
    }

    /// Moves the deadline of the closed session `session_id` of `channel` to `now`, so it
    /// ends at once; whether there was one.
    fn end_closed_now(&self, channel: &str, session_id: &str, now: u64) -> bool {
        let mut closed = self.closed();
        let Some(session) = closed
            .sessions
            .remove(session_id)
            .filter(|s| s.channel == channel)
        else {
            return false;
        };
        closed
            .by_deadline
            .remove(&(session.deadline, session_id.to_owned()));
        closed.insert(
            session_id.to_owned(),
            ClosedSession {
                deadline: now,
                ..session
            },
        );
        drop(closed);
        self.closed_changed.notify_one();
        true
    }

    /// Whether the ticket of session `session_id` was revoked.
    pub(crate) fn is_revoked(&self, session_id: &str) -> bool {
        let now = self.clock.now_ms();
        self.revocations()
            .until
            .get(session_id)
            .is_some_and(|until| *until > now)
    }

    /// Sessions live now.
    pub(crate) fn len(&self) -> usize {
        self.sessions().by_id.len()
    }
}

impl Live {
    fn remove_from_channel(&mut self, channel: &str, session_id: &str) {
        if let Some(ids) = self.by_channel.get_mut(channel) {
            ids.remove(session_id);
            if ids.is_empty() {
                self.by_channel.remove(channel);
            }
        }
    }
}

impl Closed {
    fn insert(&mut self, session_id: String, session: ClosedSession) {
        if let Some(old) = self.sessions.remove(&session_id) {
            self.by_deadline.remove(&(old.deadline, session_id.clone()));
        }
        self.by_deadline
            .insert((session.deadline, session_id.clone()));
        self.sessions.insert(session_id, session);
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
            .by_id
            .get(&self.session.session_id)
            .is_some_and(|current| Arc::ptr_eq(current, &self.session))
        {
            sessions.by_id.remove(&self.session.session_id);
            sessions.remove_from_channel(&self.session.channel, &self.session.session_id);
            // Closed before the live map is released: see `register`. A session that moved
            // to another node is that node's to close.
            if !self.session.moved.load(Ordering::Acquire) {
                self.sessions.close(&self.session);
            }
        }
    }
}
