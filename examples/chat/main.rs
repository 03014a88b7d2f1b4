//! The chat room server: the seed's `ChatRoom` on every `chat:*` channel.
//!
//!     DURABLE_ITERATOR_SIGNING_KEY=dev-signing-key DURABLE_ITERATOR_API_KEY=dev-api-key \
//!         cargo run --example chat
//!
//! (`DURABLE_ITERATOR_LISTEN` sets the address; `DURABLE_ITERATOR_DATA_DIR` keeps the history on
//! disk, so a restart loses nothing; `DURABLE_ITERATOR_DEV_TLS=1` serves TLS with the
//! development certificate of `serve --dev-tls`, made in that directory.)
//!
//! Then join with `cargo run --example chat_client` (see the README), or with grpcurl.

mod contract;
mod room;

use std::{net::SocketAddr, sync::Arc};

use durable_iterator::{
    EventStore, Keyring, MemoryStore, RedbStore, Server, ServerConfig, clock::SystemClock,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let signing_key = std::env::var("DURABLE_ITERATOR_SIGNING_KEY")
        .map_err(|_| "set DURABLE_ITERATOR_SIGNING_KEY (any secret string)")?;
    let api_key = std::env::var("DURABLE_ITERATOR_API_KEY").ok();
    let addr: SocketAddr = std::env::var("DURABLE_ITERATOR_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:50051".into())
        .parse()?;

    let data_dir = std::env::var_os("DURABLE_ITERATOR_DATA_DIR").map(std::path::PathBuf::from);
    let mut config = ServerConfig::new(Keyring::new([signing_key])?, api_key);
    config.objects.register("chat:*", room::ChatRoom::new);
    // DURABLE_ITERATOR_DEV_TLS=1: TLS with the development certificate of `serve --dev-tls`, so
    // that a browser page multiplexes its streams over HTTP/2.
    if std::env::var("DURABLE_ITERATOR_DEV_TLS").is_ok_and(|v| v == "1" || v == "true") {
        let dir = data_dir
            .clone()
            .unwrap_or_else(|| durable_iterator::defaults::DATA_DIR.into());
        let (cert, key, fingerprint) = durable_iterator::dev_certificate(&dir)?;
        config.tls = Some(durable_iterator::TlsConfig::from_pem_files(
            &cert, &key, None,
        )?);
        println!(
            "TLS with a self-signed development certificate: {} (SHA-256 {fingerprint})",
            cert.display()
        );
    }
    // Two minutes of history for reconnecting members: in memory, or on disk (surviving a
    // restart) in DURABLE_ITERATOR_DATA_DIR.
    let store: Arc<dyn EventStore> = match &data_dir {
        Some(dir) => Arc::new(RedbStore::open(dir, 120_000)?),
        None => Arc::new(MemoryStore::new(120_000)),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("chat server listening on {}", listener.local_addr()?);
    Server::new(config, store, Arc::new(SystemClock))
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
