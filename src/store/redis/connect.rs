//! Reaching Redis: the store's configuration, and the `redis::Client` it makes for a
//! `redis://` or a `rediss://` (TLS) URL.
//!
//! Every connection of the store comes from that one client (commands, appends that wait for
//! replicas, and the pub/sub connection that follows channels), so TLS covers them all.

use std::{fmt, path::Path, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{DEFAULT_KEY_PREFIX, redacted};
use crate::store::StoreError;

/// How long an append waits for replicas when none is configured.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How the Redis store reaches Redis, and when it acknowledges an append.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB`, or `rediss://` for TLS.
    pub url: String,
    /// The store's keys start with it: deployments with different prefixes share a Redis
    /// without seeing each other's channels.
    pub key_prefix: String,
    /// How long events are kept for resume, in milliseconds.
    pub retention_ms: u64,
    /// The certificates of a `rediss://` URL.
    pub tls: RedisTls,
    /// Replicas that must have an append's events before it is acknowledged (Redis `WAIT`);
    /// 0 acknowledges it once the primary ran it.
    pub wait_replicas: u32,
    /// How long an append waits for `wait_replicas` before it fails `UNAVAILABLE` (its events
    /// are then stored on the primary). Not zero: Redis reads a zero as "wait forever".
    pub wait_timeout: Duration,
}

impl RedisConfig {
    /// The store at `url` with the default key prefix, no TLS certificates of its own and no
    /// replicas to wait for.
    pub fn new(url: impl Into<String>, retention_ms: u64) -> Self {
        Self {
            url: url.into(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            retention_ms,
            tls: RedisTls::default(),
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("retention_ms", &self.retention_ms)
            .field("tls", &self.tls)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// The certificates of a `rediss://` connection. Without any, Redis's certificate must chain
/// to the system's roots and no client certificate is sent.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM certificates to trust instead of the system's roots: the CA of a private or
    /// self-signed Redis.
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM certificate chain and its private key, for a Redis that asks for client
    /// certificates (`tls-auth-clients yes`).
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Reads a PEM CA bundle to trust, and a client certificate chain with its private key.
    ///
    /// Fails, naming the file, when one cannot be read or holds no certificate (no key).
    pub fn from_pem_files(
        ca: Option<&Path>,
        client_identity: Option<(&Path, &Path)>,
    ) -> Result<Self, StoreError> {
        let ca_pem = ca.map(read_certificates).transpose()?;
        let client_identity_pem = match client_identity {
            Some((cert, key)) => {
                let chain = read_certificates(cert)?;
                let key_pem = read(key)?;
                PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| refused(key, &format!("no private key: {e}")))?;
                Some((chain, key_pem))
            }
            None => None,
        };
        Ok(Self {
            ca_pem,
            client_identity_pem,
        })
    }

    fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client_identity_pem.is_none()
    }
}

fn refused(path: &Path, reason: &str) -> StoreError {
    StoreError::Unavailable(format!("{}: {reason}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| refused(path, &e.to_string()))
}

/// The file's bytes, once it is known to hold PEM certificates (and nothing unreadable).
fn read_certificates(path: &Path) -> Result<Vec<u8>, StoreError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(path, &format!("not a PEM certificate: {e}")))?;
    if certificates.is_empty() {
        return Err(refused(path, "no PEM certificate in it"));
    }
    Ok(pem)
}

/// The client for `config`'s URL, with its certificates for a `rediss://` one.
pub(super) fn client(config: &RedisConfig) -> Result<redis::Client, StoreError> {
    let location = redacted(&config.url);
    let bad_url =
        |e: redis::RedisError| StoreError::Unavailable(format!("bad Redis URL {location}: {e}"));
    let tls = config.url.starts_with("rediss://");
    if !tls {
        if !config.tls.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "TLS certificates are for rediss:// URLs, not {location}"
            )));
        }
        return redis::Client::open(config.url.as_str()).map_err(bad_url);
    }
    let certificates = redis::TlsCertificates {
        client_tls: config
            .tls
            .client_identity_pem
            .clone()
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: config.tls.ca_pem.clone(),
    };
    redis::Client::build_with_tls(config.url.as_str(), certificates).map_err(bad_url)
}

/// A connection error, said so that the operator knows what to fix: a TLS handshake that
/// failed says which side refused which certificate.
pub(super) fn unreachable(location: &str, error: &redis::RedisError) -> StoreError {
    let detail = error.to_string();
    let hint = if detail.contains("CertificateRequired") {
        " (Redis asks for a client certificate: give --redis-cert-file and --redis-key-file)"
    } else if detail.contains("fatal alert: UnknownCA") || detail.contains("BadCertificate") {
        " (Redis refused the client certificate: it must chain to Redis's tls-ca-cert-file)"
    } else if detail.contains("invalid peer certificate") {
        " (the TLS handshake failed: Redis's certificate must chain to the CA of \
         --redis-ca-file, or without it to the system's roots, and name the URL's host)"
    } else if location.starts_with("redis://") && detail.contains("reset by peer") {
        " (a TLS port? use a rediss:// URL)"
    } else {
        ""
    };
    StoreError::Unavailable(format!("cannot reach Redis at {location}: {detail}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_need_a_rediss_url() {
        let mut config = RedisConfig::new("redis://127.0.0.1:6379/0", 0);
        assert!(client(&config).is_ok());
        config.tls.ca_pem = Some(b"pem".to_vec());
        let refused = client(&config).unwrap_err().to_string();
        assert!(refused.contains("for rediss:// URLs"), "{refused}");
    }

    #[test]
    fn files_without_certificates_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for path in [&garbage, &missing] {
            let refused = RedisTls::from_pem_files(Some(path), None)
                .unwrap_err()
                .to_string();
            assert!(refused.contains(&path.display().to_string()), "{refused}");
        }
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        let refused = RedisTls::from_pem_files(None, Some((&cert, &garbage)))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("no private key"), "{refused}");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let tls = RedisTls::from_pem_files(Some(&cert), Some((&cert, &key))).unwrap();
        assert!(format!("{tls:?}").contains("client_identity: true"));
        assert!(!format!("{tls:?}").contains("PRIVATE"), "{tls:?}");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = RedisConfig::new("rediss://:s3cret@redis.example:6380/0", 0);
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("rediss://***@redis.example:6380/0"),
            "{printed}"
        );
    }
}
