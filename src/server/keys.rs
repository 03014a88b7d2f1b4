//! The keys calls are checked against, swappable while the server runs: a reload (SIGHUP in the
//! binary) replaces them whole, and every check after it sees the new set. Live streams hold
//! no key, so they keep going; a token signed with a removed key fails its next check
//! (refresh, invoke, resubscribe).

use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keyring::Keyring;

/// The signing keys and the admin API keys in force.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Signs with the first key, verifies with any.
    pub(crate) keyring: Keyring,
    /// Any of them opens the admin service; none: the admin service refuses every call.
    pub(crate) api_keys: Vec<String>,
    /// The digests of `api_keys`, made once: a call hashes only the key it presents.
    api_key_digests: Vec<[u8; 32]>,
}

impl Keys {
    pub(crate) fn new(keyring: Keyring, api_keys: Vec<String>) -> Self {
        let api_key_digests = api_keys
            .iter()
            .map(|key| Sha256::digest(key.as_bytes()).into())
            .collect();
        Self {
            keyring,
            api_keys,
            api_key_digests,
        }
    }

    /// Whether `presented` is one of the API keys, in time that depends on neither the keys'
    /// contents nor their lengths (digests have one length), nor on which one matched.
    pub(crate) fn admits_api_key(&self, presented: &str) -> bool {
        let presented = Sha256::digest(presented.as_bytes());
        self.api_key_digests.iter().fold(false, |found, key| {
            found | bool::from(key.ct_eq(presented.as_slice()))
        })
    }
}

/// Replaces the keys of a running server (see [`crate::Server::key_reloader`]).
#[derive(Debug, Clone)]
pub struct KeyReloader {
    keys: Arc<ArcSwap<Keys>>,
}

impl KeyReloader {
    pub(crate) fn new(keys: Arc<ArcSwap<Keys>>) -> Self {
        Self { keys }
    }

    /// From now on, tokens and session tickets are signed with the first key of `keyring` and
    /// verified with any of them, and the admin service takes any of `api_keys` (none: it
    /// refuses every call). Open streams are not touched.
    pub fn reload(&self, keyring: Keyring, api_keys: Vec<String>) {
        self.keys.store(Arc::new(Keys::new(keyring, api_keys)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_api_key_of_the_set_is_admitted_and_nothing_else() {
        let keys = |api_keys: &[&str]| {
            Keys::new(
                Keyring::new(["k"]).unwrap(),
                api_keys.iter().map(|k| k.to_string()).collect(),
            )
        };
        let two = keys(&["new", "old"]);
        assert!(two.admits_api_key("new"));
        assert!(two.admits_api_key("old"));
        assert!(!two.admits_api_key("ol"));
        assert!(!two.admits_api_key(""));
        assert!(!keys(&[]).admits_api_key(""));
    }
}
