//! Channel tokens, byte-compatible with oRPC's durable iterator tokens:
//!
//! ```text
//! token = JSON(payload) + "." + base64url_nopad(HMAC-SHA256(key = signing key, msg = JSON(payload)))
//! ```
//!
//! Pure: no I/O, time is passed in.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::keyring::Keyring;

/// Default lifetime of a minted token, in seconds (one day), as in oRPC.
pub const DEFAULT_TTL_SECS: u64 = 86_400;

/// The signed payload of a token. Field order is the wire order; absent fields are omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The channel the token lets its holder subscribe to.
    pub chn: String,
    /// The session's tags: events published with tags reach it when the sets intersect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Attachment: any JSON, readable by the client. Never put secrets here. `Some(Null)` is
    /// the attachment `null`, which a token carries as `"att":null`; `None` is no attachment.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub att: Option<serde_json::Value>,
    /// Methods of the channel object the holder may call (`path[0]` of an invoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<Vec<String>>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds: the token is expired once `now >= exp`.
    pub exp: u64,
}

/// A field that is there, whatever its value: serde reads `null` in an `Option` as `None`, which
/// would verify `"att":null` as no attachment, unlike oRPC and unlike what was signed.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl TokenClaims {
    /// Claims for `channel`, issued at `now_secs`, living `ttl_secs`.
    pub fn new(channel: impl Into<String>, now_secs: u64, ttl_secs: u64) -> Self {
        Self {
            chn: channel.into(),
            tags: None,
            att: None,
            rpc: None,
            iat: now_secs,
            exp: now_secs.saturating_add(ttl_secs),
        }
    }

    /// The token's tags as a slice (none given reads as no tags).
    pub fn tags(&self) -> &[String] {
        self.tags.as_deref().unwrap_or_default()
    }

    /// Whether the token lets its holder call methods under `name` (`path[0]`).
    pub fn allows_method(&self, name: &str) -> bool {
        self.rpc
            .as_deref()
            .is_some_and(|rpc| rpc.iter().any(|m| m == name))
    }

    /// Whether `other` names the same channel and the same set of tags (order and repeats
    /// aside): the condition for refreshing a live stream in place.
    pub fn same_subscription(&self, other: &TokenClaims) -> bool {
        use std::collections::BTreeSet;
        let set = |c: &TokenClaims| c.tags().iter().cloned().collect::<BTreeSet<_>>();
        self.chn == other.chn && set(self) == set(other)
    }
}

/// Why a token was refused. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `JSON.signature`, or the JSON is not a token payload; says what is wrong.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No key of the keyring signed it.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
}

/// Signs `claims`: the JSON is written in field order, compact, as `JSON.stringify` does.
pub fn sign(keyring: &Keyring, claims: &TokenClaims) -> String {
    // Serializing plain strings, numbers and a JSON value cannot fail.
    let payload = serde_json::to_string(claims).unwrap_or_default();
    let signature = keyring.sign(&[payload.as_bytes()]);
    let mut token = payload;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// Verifies the signature (constant time, any key of the ring), the payload's schema, and
/// that the token has not expired at `now_secs`.
pub fn verify(keyring: &Keyring, token: &str, now_secs: u64) -> Result<TokenClaims, TokenError> {
    let (payload, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| TokenError::Malformed("no signature part".into()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed("signature is not base64url".into()))?;
    if !keyring.verify(&[payload.as_bytes()], &signature) {
        return Err(TokenError::BadSignature);
    }
    let claims: TokenClaims = serde_json::from_str(payload)
        .map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
    if now_secs >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_FULL: &str = r#"{"chn":"some-room","tags":["tag1","tag2"],"att":{"userId":"user-123"},"rpc":["singleClient","routerClient"],"iat":1764000000,"exp":1764086400}.Ix1V4qm5c6clo80AHQLzdan8rDwa6WEirtl7jvF0vPQ"#;
    const VECTOR_LOBBY: &str = r#"{"chn":"lobby","iat":1764000000,"exp":1764000600}.jikHfH4J3KyQjzKow1J0F7M6loaxo-4U2yJ6yY8X408"#;

    fn ring() -> Keyring {
        Keyring::new(["secret-key"]).unwrap()
    }

    #[test]
    fn orpc_vectors_verify_and_sign_byte_identically() {
        for vector in [VECTOR_FULL, VECTOR_LOBBY] {
            let claims = verify(&ring(), vector, 1_764_000_000).unwrap();
            assert_eq!(sign(&ring(), &claims), vector);
        }
        let claims = verify(&ring(), VECTOR_FULL, 1_764_000_000).unwrap();
        assert_eq!(claims.chn, "some-room");
        assert_eq!(claims.tags(), ["tag1", "tag2"]);
        assert_eq!(claims.att, Some(serde_json::json!({"userId": "user-123"})));
        assert!(claims.allows_method("routerClient"));
        assert!(!claims.allows_method("other"));
    }

    #[test]
    fn attachment_keys_keep_their_order() {
        let mut claims = TokenClaims::new("c", 10, 5);
        claims.att = Some(serde_json::from_str(r#"{"z":1,"a":{"y":2,"b":3}}"#).unwrap());
        let token = sign(&ring(), &claims);
        assert!(token.starts_with(r#"{"chn":"c","att":{"z":1,"a":{"y":2,"b":3}},"iat":10"#));
    }

    #[test]
    fn expired_exactly_at_exp() {
        assert_eq!(
            verify(&ring(), VECTOR_LOBBY, 1_764_000_600),
            Err(TokenError::Expired)
        );
        assert!(verify(&ring(), VECTOR_LOBBY, 1_764_000_599).is_ok());
    }

    #[test]
    fn refusals_say_why() {
        let wrong_key = Keyring::new(["other-key"]).unwrap();
        assert_eq!(
            verify(&wrong_key, VECTOR_LOBBY, 0),
            Err(TokenError::BadSignature)
        );
        let tampered = VECTOR_LOBBY.replace("lobby", "lobbz");
        assert_eq!(verify(&ring(), &tampered, 0), Err(TokenError::BadSignature));
        for garbage in ["", "no-dot", "x.!!!", "{}.", "abc.def"] {
            let err = verify(&ring(), garbage, 0).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_) | TokenError::BadSignature),
                "{garbage}: {err:?}"
            );
        }
        // Validly signed but of the wrong shape.
        for payload in [r#"{"chn":1,"iat":0,"exp":9}"#, r#"{"iat":0,"exp":9}"#, "[]"] {
            let signature = URL_SAFE_NO_PAD.encode(ring().sign(&[payload.as_bytes()]));
            let err = verify(&ring(), &format!("{payload}.{signature}"), 0).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_)),
                "{payload}: {err:?}"
            );
        }
    }

    #[test]
    fn numbers_in_the_attachment_verify_as_signed() {
        // Found by fuzzing: the default float parser read this back one unit in the last
        // place off (1.1111111111111111e24).
        let mut claims = TokenClaims::new("c", 0, 100);
        claims.att = Some(serde_json::json!({"n": 1.1111111111111112e24, "m": [0.1, 2.5e-308]}));
        let token = sign(&ring(), &claims);
        assert_eq!(verify(&ring(), &token, 1).unwrap(), claims);
    }

    #[test]
    fn a_null_attachment_verifies_as_null_not_as_none() {
        // Found by fuzzing: `"att":null` verified as no attachment.
        let mut claims = TokenClaims::new("c", 0, 100);
        claims.att = Some(serde_json::Value::Null);
        let token = sign(&ring(), &claims);
        assert!(token.starts_with(r#"{"chn":"c","att":null,"iat":0"#));
        assert_eq!(verify(&ring(), &token, 1).unwrap(), claims);
        claims.att = None;
        assert_eq!(verify(&ring(), &sign(&ring(), &claims), 1).unwrap(), claims);
    }

    #[test]
    fn splits_at_the_last_dot() {
        let mut claims = TokenClaims::new("a.b.c", 0, 100);
        claims.att = Some(serde_json::json!("x.y"));
        let token = sign(&ring(), &claims);
        assert_eq!(verify(&ring(), &token, 1).unwrap(), claims);
    }

    #[test]
    fn same_subscription_ignores_tag_order_only() {
        let mut a = TokenClaims::new("c", 0, 1);
        a.tags = Some(vec!["x".into(), "y".into()]);
        let mut b = a.clone();
        b.tags = Some(vec!["y".into(), "x".into(), "x".into()]);
        b.att = Some(serde_json::json!(1));
        assert!(a.same_subscription(&b));
        b.tags = Some(vec!["y".into()]);
        assert!(!a.same_subscription(&b));
        let mut c = a.clone();
        c.chn = "d".into();
        assert!(!a.same_subscription(&c));
    }
}
