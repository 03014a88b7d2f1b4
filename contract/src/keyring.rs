//! The HMAC-SHA256 keys the server signs and verifies with.
//!
//! Signing uses the first key; verification accepts any key, which is how keys are rotated:
//! put the new key first, keep the old one listed until every token signed with it has expired.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A signing key and the older keys still accepted for verification.
#[derive(Clone)]
pub struct Keyring {
    // Keyed HMAC states, prepared once; each use clones one.
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Keyring {
    // Never print the keys, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// A keyring needs at least one key, and no key may be empty.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// The list of keys is empty.
    #[error("no signing key given")]
    NoKey,
    /// One of the keys is the empty string.
    #[error("a signing key is empty")]
    EmptyKey,
}

impl Keyring {
    /// Signs with `keys[0]`, verifies with any of `keys`. Keys are UTF-8 strings, used as bytes,
    /// the way oRPC uses its `signingKey`.
    pub fn new<I, K>(keys: I) -> Result<Self, KeyringError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|key| {
                let key = key.as_ref().as_bytes();
                if key.is_empty() {
                    return Err(KeyringError::EmptyKey);
                }
                // HMAC takes keys of any length; this cannot fail.
                HmacSha256::new_from_slice(key).map_err(|_| KeyringError::EmptyKey)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyringError::NoKey);
        }
        Ok(Self { keys })
    }

    /// HMAC-SHA256 of the concatenated `parts` with the signing key.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.keys[0].clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `signature` is the HMAC of `parts` under any key, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], signature: &[u8]) -> bool {
        // Every key is tried even after a match, so timing does not tell which key signed.
        self.keys.iter().fold(false, |matched, key| {
            let mut mac = key.clone();
            for part in parts {
                mac.update(part);
            }
            mac.verify_slice(signature).is_ok() | matched
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_missing_and_empty_keys() {
        assert_eq!(
            Keyring::new(Vec::<String>::new()).err(),
            Some(KeyringError::NoKey)
        );
        assert_eq!(Keyring::new(["a", ""]).err(), Some(KeyringError::EmptyKey));
    }

    #[test]
    fn signs_with_the_first_key_and_verifies_with_any() {
        let old = Keyring::new(["old"]).unwrap();
        let rotated = Keyring::new(["new", "old"]).unwrap();
        let by_old = old.sign(&[b"msg"]);
        assert!(rotated.verify(&[b"msg"], &by_old));
        let by_rotated = rotated.sign(&[b"msg"]);
        assert!(!old.verify(&[b"msg"], &by_rotated));
        assert!(!rotated.verify(&[b"other"], &by_rotated));
        assert!(rotated.verify(&[b"m", b"sg"], &by_rotated));
    }
}
