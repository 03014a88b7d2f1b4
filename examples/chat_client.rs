//! A chat room member: joins a `chat:*` channel of the `chat` example, prints every message,
//! and sends each line typed on stdin with the typed `sendMessage` method. It reconnects and
//! resumes by itself, and refreshes its token before it expires.
//!
//!     DURABLE_ITERATOR_API_KEY=dev-api-key cargo run --example chat_client -- --user bob
//!
//! Tokens come from the admin API's `IssueToken`, standing in for the application server that
//! would hand them out in a real deployment.

#[path = "chat/contract.rs"]
mod contract;

use std::time::Duration;

use clap::Parser;
use durable_iterator_client::{
    Client, Credentials, InvokeOptions, IssueToken, SubscribeOptions, SubscriptionItem,
};
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
struct Args {
    /// Who you are (the token's `att.userId`).
    #[arg(long)]
    user: String,
    /// The room's channel.
    #[arg(long, default_value = "chat:lobby")]
    room: String,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Admin API key of the server (stands in for the application server).
    #[arg(long, env = "DURABLE_ITERATOR_API_KEY", hide_env_values = true)]
    api_key: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A token for `user` in `room`, allowed to send and to use the router, from `IssueToken`.
async fn issue_token(
    client: &Client,
    api_key: &str,
    room: &str,
    user: &str,
) -> Result<String, BoxError> {
    let issued = client
        .issue_token(
            api_key,
            IssueToken {
                channel: room.to_owned(),
                att: Some(serde_json::json!({ "userId": user })),
                rpc: vec!["sendMessage".into(), "routerClient".into()],
                ttl_seconds: 600,
                ..IssueToken::default()
            },
        )
        .await?;
    Ok(issued.token)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let client = Client::new(&args.server)?;

    // The router answers any member; no session needed.
    let token = issue_token(&client, &args.api_key, &args.room, &args.user).await?;
    let credentials = Credentials {
        token,
        session_ticket: None,
    };
    let pong = client
        .call(&credentials, &contract::PING, &(), InvokeOptions::default())
        .await?;
    let echo = contract::Echo {
        text: format!("{} joined", args.user),
    };
    let echoed = client
        .call(
            &credentials,
            &contract::ECHO,
            &echo,
            InvokeOptions::default(),
        )
        .await?;
    println!("[ping: {pong}] [{echoed}]");

    let provider = {
        let (client, api_key, room, user) = (
            client.clone(),
            args.api_key.clone(),
            args.room.clone(),
            args.user.clone(),
        );
        move || {
            let (client, api_key, room, user) =
                (client.clone(), api_key.clone(), room.clone(), user.clone());
            async move { issue_token(&client, &api_key, &room, &user).await }
        }
    };
    let options = SubscribeOptions {
        refresh_before_expiry: Some(Duration::from_secs(60)),
        ..SubscribeOptions::default()
    };
    let mut messages = client.subscribe(provider, options);
    let session = messages.handle();

    // Each line typed is sent as this session, so the room excludes us from our own message.
    // The subscription connects as the loop below reads it; lines wait for the session.
    tokio::spawn(async move {
        let mut progress = session.watch();
        if progress.wait_for(|p| p.session_id.is_some()).await.is_err() {
            return;
        }
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let input = contract::SendMessage { message: line };
            if let Err(error) = session
                .call(&contract::SEND_MESSAGE, &input, InvokeOptions::default())
                .await
            {
                eprintln!("not sent: {error}");
            }
        }
    });

    while let Some(item) = messages.next().await {
        match item? {
            SubscriptionItem::Event(event) => {
                let message: contract::ChatMessage = match event.json() {
                    Some(value) => serde_json::from_value(value.clone())?,
                    None => continue,
                };
                let from = message.from.as_deref().unwrap_or("someone");
                println!("{from}: {}", message.message);
            }
            SubscriptionItem::Resumed(report) => {
                eprintln!("some messages could not be recovered: {report:?}");
            }
        }
    }
    Ok(())
}
