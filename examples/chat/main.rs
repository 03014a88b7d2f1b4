//! The chat room server: the seed's `ChatRoom` on every `chat:*` channel.
//!
//!     DURABLE_ITERATOR_SIGNING_KEY=dev-signing-key DURABLE_ITERATOR_API_KEY=dev-api-key \
//!         cargo run --example chat
//!
//! Then join with `cargo run --example chat_client` (see the README), or with grpcurl.

mod contract;
mod room;

use std::{net::SocketAddr, sync::Arc};

use durable_iterator::{Keyring, MemoryStore, Server, ServerConfig, clock::SystemClock};

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

    let mut config = ServerConfig::new(Keyring::new([signing_key])?, api_key);
    config.objects.register("chat:*", room::ChatRoom::new);
    // Two minutes of history for reconnecting members.
    let store = Arc::new(MemoryStore::new(120_000));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("chat server listening on {}", listener.local_addr()?);
    Server::new(config, store, Arc::new(SystemClock))
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
