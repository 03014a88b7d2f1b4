//! `durable-iterator token`: mints a channel token with the signing key, bare or as a ready
//! `SubscribeRequest` / `InvokeRequest` for grpcurl.

use clap::Args;
use durable_iterator::{
    Keyring, Limits, TokenClaims,
    clock::{Clock, SystemClock},
    token,
};

use crate::{BoxError, KeyArgs};

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The channel the token grants.
    #[arg(long)]
    channel: String,
    /// The session's tags (repeat or comma separate).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Methods the holder may call (`path[0]`; repeat or comma separate).
    #[arg(long, value_delimiter = ',')]
    rpc: Vec<String>,
    /// Attachment, as JSON (readable by clients: no secrets).
    #[arg(long)]
    att: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = token::DEFAULT_TTL_SECS)]
    ttl: u64,
    /// Print a ready `SubscribeRequest` as JSON (for `grpcurl -d @`) instead of the bare token.
    #[arg(long)]
    request: bool,
    /// With --request: resume after this event id.
    #[arg(long, requires = "request")]
    last_event_id: Option<String>,
    /// With --request or --invoke: act as the session of this ticket.
    #[arg(long)]
    session_ticket: Option<String>,
    /// Print a ready `InvokeRequest` as JSON instead, calling this method (dotted path, e.g.
    /// `routerClient.echo`; allow it with --rpc).
    #[arg(long, conflicts_with_all = ["request", "last_event_id"])]
    invoke: Option<String>,
    /// With --invoke: the method's input, as JSON.
    #[arg(long, requires = "invoke")]
    input: Option<String>,
    #[command(flatten)]
    keys: KeyArgs,
}

pub(crate) fn run(args: TokenArgs) -> Result<(), BoxError> {
    if args.keys.signing_key.is_empty() {
        return Err(
            "no signing key: pass --signing-key or set DURABLE_ITERATOR_SIGNING_KEY".into(),
        );
    }
    let keyring = Keyring::new(&args.keys.signing_key)?;
    let limits = Limits::default();
    limits.check_channel(&args.channel)?;
    limits.check_tags(&args.tags)?;
    limits.check_token_ttl(args.ttl)?;
    let mut claims = TokenClaims::new(args.channel, SystemClock.now_secs(), args.ttl);
    claims.tags = (!args.tags.is_empty()).then_some(args.tags);
    claims.att = args
        .att
        .map(|att| serde_json::from_str(&att))
        .transpose()
        .map_err(|e| format!("--att is not JSON: {e}"))?;
    claims.rpc = (!args.rpc.is_empty()).then_some(args.rpc);
    let token = token::sign(&keyring, &claims);
    if let Some(path) = args.invoke {
        let input: serde_json::Value = match args.input {
            Some(input) => {
                serde_json::from_str(&input).map_err(|e| format!("--input is not JSON: {e}"))?
            }
            None => serde_json::Value::Null,
        };
        let mut request = serde_json::json!({
            "token": token,
            "path": path.split('.').collect::<Vec<_>>(),
            "input": input,
        });
        if let Some(ticket) = args.session_ticket {
            request["session_ticket"] = ticket.into();
        }
        println!("{request}");
    } else if args.request {
        let mut request = serde_json::json!({ "token": token });
        if let Some(id) = args.last_event_id {
            request["last_event_id"] = id.into();
        }
        if let Some(ticket) = args.session_ticket {
            request["session_ticket"] = ticket.into();
        }
        println!("{request}");
    } else {
        println!("{token}");
    }
    Ok(())
}
