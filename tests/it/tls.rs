//! TLS on the server's port: the Rust client over https with a private CA, ALPN offering both
//! HTTP/2 and HTTP/1.1, client certificates (mTLS), and the refusals of bad files.

use std::{path::Path, sync::Arc, time::Duration};

use durable_iterator::{
    Keyring, MemoryStore, Server, ServerConfig, TlsConfig, TlsError, TokenClaims,
    clock::{Clock, SystemClock},
    token,
};
use durable_iterator_client::{
    Client, ConnectOptions, FixedToken, Publish, SubscribeOptions, SubscriptionItem,
};
use futures::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use tokio::{net::TcpStream, sync::oneshot};

const KEY: &str = "tls-signing-key";
const API_KEY: &str = "tls-api-key";

/// A server with `tls` on 127.0.0.1:0, stopped when the sender drops.
async fn serve(tls: TlsConfig) -> (String, oneshot::Sender<()>) {
    let mut config = ServerConfig::new(Keyring::new([KEY]).unwrap(), Some(API_KEY.into()));
    config.tls = Some(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new(
        config,
        Arc::new(MemoryStore::new(60_000)),
        Arc::new(SystemClock),
    );
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (format!("https://localhost:{}", addr.port()), stop)
}

fn token(channel: &str) -> String {
    let claims = TokenClaims::new(channel, SystemClock.now_secs(), 600);
    token::sign(&Keyring::new([KEY]).unwrap(), &claims)
}

/// The development certificate, made in `dir` by the same code as `serve --dev-tls`.
fn dev_certificate(dir: &Path) -> (TlsConfig, Vec<u8>) {
    let (cert, key, fingerprint) = durable_iterator::dev_certificate(dir).unwrap();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    let tls = TlsConfig::from_pem_files(&cert, &key, None).unwrap();
    (tls, std::fs::read(cert).unwrap())
}

fn trusting(ca: &[u8]) -> ConnectOptions {
    ConnectOptions {
        ca_certificate_pem: Some(ca.to_vec()),
        ..ConnectOptions::default()
    }
}

#[tokio::test]
async fn the_rust_client_subscribes_and_publishes_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = dev_certificate(dir.path());
    let (url, _stop) = serve(tls).await;
    let client = Client::with_options(&url, trusting(&ca)).unwrap();
    let mut events = client.subscribe(FixedToken(token("secure")), SubscribeOptions::default());
    let handle = events.handle();
    // Publishing waits until the subscription is live, so the event is not before it.
    let mut progress = handle.watch();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            progress.wait_for(|p| p.connections > 0).await.unwrap();
            client
                .publish(
                    API_KEY,
                    Publish {
                        channel: "secure".into(),
                        payload: json!({"over": "tls"}),
                        ..Publish::default()
                    },
                )
                .await
                .unwrap()
        })
    };
    let item = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event within 20 s")
        .expect("the subscription is open")
        .unwrap();
    let id = publisher.await.unwrap();
    match item {
        SubscriptionItem::Event(event) => {
            assert_eq!(event.id, id);
            assert_eq!(event.json(), Some(&json!({"over": "tls"})));
        }
        other => panic!("expected the event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, _ca) = dev_certificate(dir.path());
    let (url, _stop) = serve(tls).await;
    let client = Client::new(&url).unwrap();
    let error = client
        .publish(
            API_KEY,
            Publish {
                channel: "secure".into(),
                ..Publish::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unavailable), "{error}");
}

/// The ALPN protocol the server picks when the client offers `offer`.
async fn negotiated(port: u16, ca: &[u8], offer: &[&[u8]]) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test]
async fn alpn_offers_http2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = dev_certificate(dir.path());
    let (url, _stop) = serve(tls).await;
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    assert_eq!(
        negotiated(port, &ca, both).await.as_deref(),
        Some(&b"h2"[..])
    );
    let http1: &[&[u8]] = &[b"http/1.1"];
    assert_eq!(
        negotiated(port, &ca, http1).await.as_deref(),
        Some(&b"http/1.1"[..])
    );
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cert, server_key, _) = durable_iterator::dev_certificate(dir.path()).unwrap();
    // A CA of our own and a client certificate it signs.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let ca_path = dir.path().join("client-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let tls = TlsConfig::from_pem_files(&server_cert, &server_key, Some(&ca_path)).unwrap();
    let (url, _stop) = serve(tls).await;
    let server_ca = std::fs::read(&server_cert).unwrap();
    let publish = |options: ConnectOptions| {
        let url = url.clone();
        async move {
            Client::with_options(&url, options)
                .unwrap()
                .publish(
                    API_KEY,
                    Publish {
                        channel: "mtls".into(),
                        payload: json!(1),
                        ..Publish::default()
                    },
                )
                .await
        }
    };

    // Refused at the handshake: a transport failure (with TLS 1.3 the client learns it only
    // when it sends, as tonic's UNKNOWN "transport error").
    let refused = publish(trusting(&server_ca)).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Some(tonic::Code::Unavailable | tonic::Code::Unknown)
        ),
        "{refused}"
    );
    let with_identity = ConnectOptions {
        ca_certificate_pem: Some(server_ca.clone()),
        client_identity_pem: Some((
            client_cert.pem().into_bytes(),
            client_key.serialize_pem().into_bytes(),
        )),
    };
    let id = publish(with_identity).await.unwrap();
    assert!(!id.is_empty());
}

#[test]
fn files_that_do_not_load_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = durable_iterator::dev_certificate(dir.path()).unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();

    let refused = |cert: &Path, key: &Path, ca: Option<&Path>| {
        TlsConfig::from_pem_files(cert, key, ca).unwrap_err()
    };
    for (error, named) in [
        (refused(&missing, &key, None), &missing),
        (refused(&garbage, &key, None), &garbage),
        (refused(&cert, &garbage, None), &garbage),
        (refused(&cert, &key, Some(&garbage)), &garbage),
    ] {
        assert!(matches!(error, TlsError::File { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&named.display().to_string()),
            "{error}"
        );
    }
    // A key that is not the certificate's.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key, _) = durable_iterator::dev_certificate(other.path()).unwrap();
    assert!(matches!(
        refused(&cert, &other_key, None),
        TlsError::Config(_)
    ));
}

/// The certificate in the configuration file and its key in the environment go together; a
/// certificate without a key is refused, wherever it comes from.
#[test]
fn a_certificate_and_its_key_may_come_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = durable_iterator::dev_certificate(dir.path()).unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!("tls-cert = {:?}\n", cert.display().to_string()),
    )
    .unwrap();
    let serve = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_durable-iterator"));
        command
            .args(["serve", "--store", "memory", "--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config)
            .env_remove("DURABLE_ITERATOR_TLS_KEY");
        command
    };
    let printed = serve()
        .arg("--print-config")
        .env("DURABLE_ITERATOR_TLS_KEY", &key)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(printed.contains(&key.display().to_string()), "{printed}");

    let refused = serve().output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--tls-cert needs --tls-key"), "{stderr}");
}
