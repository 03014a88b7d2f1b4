//! Where a subscription gets its tokens: in a real application, a call to the app server that
//! mints them (it holds the signing key, the client never does).

use std::{future::Future, pin::Pin};

use crate::{
    Keyring, SharedClock,
    token::{self, TokenClaims},
};

/// Why a token provider failed; whatever the application's error is.
pub type ProviderError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, ProviderError>> + Send>>;

/// Returns a fresh token each time it is asked: at the first subscribe, when a token is about
/// to expire (with `refresh_before_expiry`), and when a reconnect was refused as
/// unauthenticated.
///
/// Any `Fn() -> impl Future<Output = Result<String, E>>` is one:
///
/// ```
/// use durable_iterator_client::TokenProvider;
///
/// fn assert_provider(_: impl TokenProvider) {}
/// assert_provider(|| async { Ok::<_, std::io::Error>("token-from-the-app-server".to_owned()) });
/// ```
pub trait TokenProvider: Send + Sync + 'static {
    /// A new token.
    fn token(&self) -> TokenFuture;
}

impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<ProviderError>,
{
    fn token(&self) -> TokenFuture {
        let token = self();
        Box::pin(async move { token.await.map_err(Into::into) })
    }
}

/// Always the same token: for scripts and tokens that outlive the subscription. Once it has
/// expired, a reconnect refused as unauthenticated ends the subscription with that error.
#[derive(Debug, Clone)]
pub struct FixedToken(pub String);

impl TokenProvider for FixedToken {
    fn token(&self) -> TokenFuture {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// Mints tokens itself with the signing key: for trusted processes (the command line, tests,
/// a backend subscribing on its own behalf). Each token is issued at the clock's now.
pub struct SigningProvider {
    keyring: Keyring,
    template: TokenClaims,
    ttl_secs: u64,
    clock: SharedClock,
}

impl SigningProvider {
    /// Tokens like `template` (channel, tags, `att`, `rpc`; its `iat`/`exp` are ignored),
    /// each living `ttl_secs` from when it is minted.
    pub fn new(keyring: Keyring, template: TokenClaims, ttl_secs: u64, clock: SharedClock) -> Self {
        Self {
            keyring,
            template,
            ttl_secs,
            clock,
        }
    }

    /// A token minted now.
    pub fn mint(&self) -> String {
        let now = self.clock.now_secs();
        let claims = TokenClaims {
            iat: now,
            exp: now.saturating_add(self.ttl_secs),
            ..self.template.clone()
        };
        token::sign(&self.keyring, &claims)
    }
}

impl TokenProvider for SigningProvider {
    fn token(&self) -> TokenFuture {
        let token = self.mint();
        Box::pin(async move { Ok(token) })
    }
}

/// The claims of a token, read without verifying it (the client has no key): enough to tell
/// whether a new token names the same channel and tags as the current one.
pub fn unverified_claims(token: &str) -> Option<TokenClaims> {
    let (payload, _signature) = token.rsplit_once('.')?;
    serde_json::from_str(payload).ok()
}

/// Whether `new` can replace `current` on the live stream (`RefreshToken`), or needs a
/// reconnect: the same channel and tag set, as the server judges it. A token the client cannot
/// read reconnects, the safe choice.
pub fn refreshable_in_place(current: &str, new: &str) -> bool {
    match (unverified_claims(current), unverified_claims(new)) {
        (Some(current), Some(new)) => current.same_subscription(&new),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ManualClock;

    #[tokio::test]
    async fn signing_provider_mints_at_the_clock_and_reads_back() {
        let clock = ManualClock::new(10_000);
        let mut template = TokenClaims::new("room", 0, 0);
        template.tags = Some(vec!["a".into(), "b".into()]);
        let keyring = Keyring::new(["k"]).unwrap();
        let provider = SigningProvider::new(keyring.clone(), template, 60, Arc::new(clock.clone()));
        let first = provider.token().await.unwrap();
        let claims = token::verify(&keyring, &first, 10).unwrap();
        assert_eq!(
            (claims.iat, claims.exp, claims.chn.as_str()),
            (10, 70, "room")
        );
        assert_eq!(unverified_claims(&first), Some(claims));
        clock.advance(std::time::Duration::from_secs(5));
        let second = provider.token().await.unwrap();
        assert_ne!(first, second);
        assert!(refreshable_in_place(&first, &second));
    }

    #[test]
    fn refresh_in_place_needs_the_same_channel_and_tag_set() {
        let keyring = Keyring::new(["k"]).unwrap();
        let sign = |chn: &str, tags: &[&str]| {
            let mut claims = TokenClaims::new(chn, 0, 10);
            claims.tags = Some(tags.iter().map(|t| t.to_string()).collect());
            token::sign(&keyring, &claims)
        };
        let table = [
            (("c", &["a", "b"][..]), ("c", &["b", "a"][..]), true),
            (("c", &["a"][..]), ("c", &["a", "b"][..]), false),
            (("c", &["a"][..]), ("d", &["a"][..]), false),
        ];
        for ((c1, t1), (c2, t2), same) in table {
            assert_eq!(refreshable_in_place(&sign(c1, t1), &sign(c2, t2)), same);
        }
        assert!(!refreshable_in_place("garbage", &sign("c", &[])));
        assert!(
            unverified_claims("{\"chn\":\"x\"}.sig").is_none(),
            "no iat/exp"
        );
    }
}
