//! Sessions with a stream open now, by session id: what `RefreshToken` and `Invoke` act on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::token::TokenClaims;

/// A session whose stream is open.
#[derive(Debug)]
pub struct LiveSession {
    pub session_id: String,
    pub channel: String,
    claims: watch::Sender<Arc<TokenClaims>>,
    /// Cancelled when the same session subscribes again on another stream.
    superseded: CancellationToken,
}

impl LiveSession {
    /// The claims of the session's current token.
    pub fn claims(&self) -> Arc<TokenClaims> {
        self.claims.borrow().clone()
    }

    /// Follows token refreshes.
    pub fn watch_claims(&self) -> watch::Receiver<Arc<TokenClaims>> {
        self.claims.subscribe()
    }

    /// Resolves when another stream took this session over.
    pub fn superseded(&self) -> &CancellationToken {
        &self.superseded
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

/// The live sessions of this server.
#[derive(Debug, Default)]
pub struct LiveSessions {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
}

impl LiveSessions {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session's new stream; an older stream of the same session is told it was
    /// superseded. The registration lasts as long as the returned guard.
    pub fn register(self: &Arc<Self>, session_id: String, claims: TokenClaims) -> LiveRegistration {
        let session = Arc::new(LiveSession {
            session_id: session_id.clone(),
            channel: claims.chn.clone(),
            claims: watch::Sender::new(Arc::new(claims)),
            superseded: CancellationToken::new(),
        });
        if let Some(previous) = self.sessions().insert(session_id, session.clone()) {
            previous.superseded.cancel();
        }
        LiveRegistration {
            sessions: self.clone(),
            session,
        }
    }

    /// The live session `session_id`, if its stream is open.
    pub fn get(&self, session_id: &str) -> Option<Arc<LiveSession>> {
        self.sessions().get(session_id).cloned()
    }

    /// Swaps the token of a live session when it keeps channel and tags.
    pub fn refresh(&self, session_id: &str, claims: TokenClaims) -> Result<(), RefreshError> {
        let session = self.get(session_id).ok_or(RefreshError::NotLive)?;
        if !session.claims.borrow().same_subscription(&claims) {
            return Err(RefreshError::ChangesSubscription);
        }
        session.claims.send_replace(Arc::new(claims));
        Ok(())
    }

    /// Sessions live now.
    pub fn len(&self) -> usize {
        self.sessions().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions().is_empty()
    }
}

/// Keeps a session registered as live; dropping it unregisters the session unless a newer
/// stream has taken it over.
#[derive(Debug)]
pub struct LiveRegistration {
    sessions: Arc<LiveSessions>,
    session: Arc<LiveSession>,
}

impl LiveRegistration {
    pub fn session(&self) -> &Arc<LiveSession> {
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
        }
    }
}
