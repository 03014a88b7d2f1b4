//! `durable-iterator publish`: one JSON event through the admin API; prints its id.

use clap::Args;
use durable_iterator_client::Publish;

use crate::{BoxError, TlsArgs};

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// The server's address.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The admin API key.
    #[arg(long, env = "DURABLE_ITERATOR_API_KEY", hide_env_values = true)]
    api_key: String,
    /// The channel to publish to.
    #[arg(long)]
    channel: String,
    /// The payload, as JSON.
    #[arg(long)]
    json: String,
    /// Deliver only to sessions with one of these tags (comma separated; `--tags ''`:
    /// nobody).
    #[arg(long, value_delimiter = ',')]
    tags: Option<Vec<String>>,
    /// Deliver only to these session ids (comma separated; `--targets ''`: nobody).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Never deliver to these session ids.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Publishing again with this key while the first event is retained stores nothing and
    /// prints the first event's id (at most 128 bytes).
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

pub(crate) async fn run(args: PublishArgs) -> Result<(), BoxError> {
    let payload: serde_json::Value =
        serde_json::from_str(&args.json).map_err(|e| format!("--json is not JSON: {e}"))?;
    // `--tags ''` is an empty list (nobody), not a list of one empty tag.
    let list = |values: Option<Vec<String>>| {
        values.map(|values| values.into_iter().filter(|v| !v.is_empty()).collect())
    };
    let client = args.tls.client(&args.server)?;
    let id = client
        .publish(
            &args.api_key,
            Publish {
                channel: args.channel,
                payload,
                tags: list(args.tags),
                targets: list(args.targets),
                exclude: args.exclude,
                idempotency_key: args.idempotency_key,
            },
        )
        .await?;
    println!("{id}");
    Ok(())
}
