//! TLS on the server's port: rustls, ALPN `h2` and `http/1.1` (the server tells the two apart by
//! the connection preface), optionally requiring client certificates (mTLS).
//!
//! Browsers open one HTTP/2 connection per origin over TLS and multiplex every stream of a page
//! on it; over plaintext they fall back to HTTP/1.1 and hold at most six streams at a time.
//! tonic's own TLS offers `h2` alone, which would turn away HTTP/1.1 grpc-web clients, so the
//! handshake is done here and tonic serves the decrypted streams.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::Stream;
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// A handshake that does not finish in this time is dropped (a client that connects and says
/// nothing must not hold a task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate and key (e.g. a key that does not match).
    #[error("the TLS certificate and key do not make a configuration: {0}")]
    Config(String),
}

/// The server's certificate chain and key, and the CA its clients' certificates must chain to
/// (mTLS), if any.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads a PEM certificate chain and private key, and a PEM CA bundle that client
    /// certificates must chain to (`None`: no client certificates asked for).
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let chain = read_certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
            path: key.to_owned(),
            reason: format!("no private key: {e}"),
        })?;
        let client_ca = client_ca
            .map(|path| Ok::<_, TlsError>((path, read_certificates(path)?)))
            .transpose()?;
        Self::new(chain, key, client_ca)
    }

    /// A configuration from DER certificates and key; `client_ca` names the file it came from
    /// in errors.
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<(&Path, Vec<CertificateDer<'static>>)>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some((path, certificates)) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates {
                    roots.add(certificate).map_err(|e| TlsError::File {
                        path: path.to_owned(),
                        reason: format!("not a CA certificate: {e}"),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::File {
                            path: path.to_owned(),
                            reason: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The connections of `listener`, each once its handshake is done. Handshakes run
    /// concurrently, bounded in time; one that fails is logged at `debug` and dropped.
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + use<> {
        let acceptor = TlsAcceptor::from(self.config.clone());
        let (sender, receiver) = tokio::sync::mpsc::channel(128);
        tokio::spawn(async move {
            loop {
                // The server stopped reading connections: let go of the port at once, so that
                // a restarted server can bind it.
                let accepted = tokio::select! {
                    _ = sender.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid("holds no certificate".into()));
    }
    Ok(certificates)
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, for local development:
/// written to `dev-tls-cert.pem` and `dev-tls-key.pem` in `dir` unless both are there already. Returns the
/// paths and the certificate's SHA-256 fingerprint (hex, colon separated).
pub fn dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf, String), TlsError> {
    let cert_path = dir.join("dev-tls-cert.pem");
    let key_path = dir.join("dev-tls-key.pem");
    let file_error = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if !(cert_path.exists() && key_path.exists()) {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, &e))?;
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        std::fs::write(&cert_path, certified.cert.pem()).map_err(|e| file_error(&cert_path, &e))?;
        write_private_file(&key_path, &certified.signing_key.serialize_pem())
            .map_err(|e| file_error(&key_path, &e))?;
    }
    let der = read_certificates(&cert_path)?.remove(0);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(der.as_ref());
    let fingerprint = digest
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok((cert_path, key_path, fingerprint))
}

/// Writes `contents` to `path`, readable by this user only (mode 600, also when the file was
/// there already): generated keys and development secrets.
pub fn write_private_file(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())
}
