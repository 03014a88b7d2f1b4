//! `durable-iterator subscribe`: prints a subscription as JSON lines, the command every client
//! has (`clients/README.md`), so that one fault suite drives them all.
//!
//! Events go to stdout, one line each; connections (with the session ticket to resume with
//! later), resume reports, refreshes and the error that ended the subscription go to stderr, so
//! the events can be piped on while a person or a log still sees what happened.

use std::{io::Write, sync::Arc, time::Duration};

use clap::Args;
use durable_iterator::TokenClaims;
use durable_iterator_client::{
    ClientError, FixedToken, Keyring, SigningProvider, SubscribeOptions, Subscription,
    SubscriptionItem, SystemClock, TokenFuture, TokenProvider,
};
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};

use crate::{BoxError, KeyArgs, TlsArgs};

#[derive(Args)]
pub(crate) struct SubscribeArgs {
    /// The server's address.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// A ready token. It is used as it is: once it has expired, a reconnect fails.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["channel", "token_url"],
        required_unless_present_any = ["channel", "token_url"]
    )]
    token: Option<String>,
    /// Ask this URL for each token: an HTTP GET whose body is the token (what an app server
    /// that mints tokens offers its clients).
    #[arg(long, conflicts_with = "channel")]
    token_url: Option<http::Uri>,
    /// The channel to subscribe to, with tokens minted here with the signing key.
    #[arg(long)]
    channel: Option<String>,
    /// Tags of the minted tokens (repeat or comma separate).
    #[arg(long, value_delimiter = ',', requires = "channel")]
    tags: Vec<String>,
    /// Lifetime of the minted tokens, in seconds.
    #[arg(long, default_value_t = 3_600, requires = "channel")]
    ttl: u64,
    /// Swap the token on the live stream this many seconds before it expires. With --channel
    /// the default is a quarter of --ttl (1 s to 5 minutes); otherwise refresh is off.
    #[arg(long)]
    refresh_before_expiry: Option<u64>,
    /// Resume after this event id (events after it that are still retained come first).
    #[arg(long)]
    from: Option<String>,
    /// Keep the session of this ticket (printed on stderr by an earlier run).
    #[arg(long)]
    session_ticket: Option<String>,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

pub(crate) async fn run(args: SubscribeArgs) -> Result<(), BoxError> {
    let client = args.tls.client(&args.server)?;
    let mut options = SubscribeOptions {
        last_event_id: args.from,
        session_ticket: args.session_ticket,
        ..SubscribeOptions::default()
    };
    let provider: Box<dyn Fn() -> TokenFuture + Send + Sync> =
        match (args.token, args.token_url, args.channel) {
            (Some(token), _, _) => {
                let fixed = FixedToken(token);
                Box::new(move || fixed.token())
            }
            (None, Some(url), _) => {
                if url.scheme_str() != Some("http") {
                    return Err(format!("--token-url {url}: only http:// is supported").into());
                }
                let http = HttpClient::builder(TokioExecutor::new()).build_http();
                Box::new(move || {
                    let (http, url) = (http.clone(), url.clone());
                    Box::pin(async move { fetch_token(&http, url).await })
                })
            }
            (None, None, Some(channel)) => {
                if args.keys.signing_key.is_empty() {
                    return Err("--channel mints tokens: pass --signing-key or set \
                                DURABLE_ITERATOR_SIGNING_KEY (or give --token or --token-url)"
                        .into());
                }
                let mut template = TokenClaims::new(channel, 0, 0);
                template.tags = (!args.tags.is_empty()).then_some(args.tags);
                let ttl = args.ttl.max(2);
                options.refresh_before_expiry = Some(Duration::from_secs((ttl / 4).clamp(1, 300)));
                let minter = SigningProvider::new(
                    Keyring::new(&args.keys.signing_key)?,
                    template,
                    ttl,
                    Arc::new(SystemClock),
                );
                Box::new(move || minter.token())
            }
            (None, None, None) => return Err("give --token, --token-url or --channel".into()),
        };
    if let Some(seconds) = args.refresh_before_expiry {
        options.refresh_before_expiry = Some(Duration::from_secs(seconds));
    }
    let subscription = client.subscribe(provider, options);
    let stop = subscription.handle().cancellation_token();
    tokio::spawn(async move {
        crate::stop_signal().await;
        stop.cancel();
    });
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let printed = print_subscription(subscription, &mut stdout, &mut stderr).await;
    // The subscription is dropped: its stream's RST_STREAM is queued on the connection task
    // (and, with the client dropped, the connection's GOAWAY). The task gets a moment to write
    // them before the runtime goes with the process, so the server sees the stream closed, not
    // a bare end of the connection as after a crash.
    drop(client);
    tokio::time::sleep(Duration::from_millis(50)).await;
    match printed {
        Ok(()) => Ok(()),
        Err(Printed::Subscription(error)) => {
            let code = error.code().map(canonical_name);
            let line =
                serde_json::json!({ "error": { "code": code, "message": error.to_string() } });
            writeln!(stderr, "{line}")?;
            Err(error.into())
        }
        Err(Printed::Output(error)) => Err(format!("cannot write the output: {error}").into()),
    }
}

/// What ended the printing of a subscription, other than a stop.
enum Printed {
    /// The subscription failed.
    Subscription(ClientError),
    /// Writing failed (e.g. a closed pipe).
    Output(std::io::Error),
}

impl From<std::io::Error> for Printed {
    fn from(error: std::io::Error) -> Self {
        Printed::Output(error)
    }
}

/// Prints `subscription` until it ends: each event as `{"id", "payload", "published_at_ms"}`
/// on `events`; each new connection (`{"connected": {..}}`), each resume that lost history
/// (`{"resume": {..}}`) and each refresh in place (`{"refreshed": {..}}`) on `notices`.
async fn print_subscription(
    mut subscription: Subscription,
    events: &mut impl Write,
    notices: &mut impl Write,
) -> Result<(), Printed> {
    let handle = subscription.handle();
    let mut progress = handle.watch();
    let (mut connections, mut refreshes) = (0, 0);
    loop {
        tokio::select! {
            item = subscription.next() => match item {
                None => return Ok(()),
                Some(Err(error)) => return Err(Printed::Subscription(error)),
                Some(Ok(SubscriptionItem::Event(event))) => {
                    writeln!(events, "{}", event.to_json())?;
                    events.flush()?;
                }
                Some(Ok(SubscriptionItem::Resumed(report))) => {
                    writeln!(notices, "{}", report.to_json())?;
                }
            },
            Ok(()) = progress.changed() => {
                let now = progress.borrow_and_update().clone();
                if now.connections > connections {
                    connections = now.connections;
                    let credentials = handle.credentials();
                    let line = serde_json::json!({
                        "connected": {
                            "session_id": now.session_id,
                            "session_ticket": credentials.session_ticket,
                            "connections": now.connections,
                        }
                    });
                    writeln!(notices, "{line}")?;
                }
                if now.refreshes > refreshes {
                    refreshes = now.refreshes;
                    writeln!(notices, "{}", serde_json::json!({ "refreshed": { "refreshes": refreshes } }))?;
                }
            }
        }
    }
}

/// One token from `url`: the body of a `GET`, trimmed.
async fn fetch_token(
    http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>,
    url: http::Uri,
) -> Result<String, durable_iterator_client::ProviderError> {
    let response = http.get(url.clone()).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("{url} answered {status}").into());
    }
    Ok(String::from_utf8(body.to_vec())?.trim().to_owned())
}

/// The canonical name of a gRPC status code (`PERMISSION_DENIED`), as every client prints it.
fn canonical_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
