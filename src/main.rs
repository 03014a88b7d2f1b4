//! The `durable-iterator` command line: thin, every piece of behaviour lives in the library.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use durable_iterator::{
    clock::{Clock, SharedClock, SystemClock},
    keyring::Keyring,
    limits::Limits,
    object::proxy::ProxyConfig,
    server::{Server, ServerConfig},
    store::{EventStore, MemoryStore, RedbStore},
    token::{self, TokenClaims},
};
use rand::RngCore;

#[derive(Parser)]
#[command(
    version,
    about = "Durable event streams over gRPC: subscribe, resume, refresh, invoke."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve(ServeArgs),
    /// Mints a channel token with the signing key (for grpcurl and scripts).
    Token(TokenArgs),
    /// Subscribes to a channel and prints each event as one JSON line, reconnecting and
    /// resuming by itself.
    Subscribe(SubscribeArgs),
    /// Publishes one JSON event through the admin API and prints its id.
    Publish(PublishArgs),
}

#[derive(Args)]
struct KeyArgs {
    /// Signing keys, comma separated: tokens and session tickets are signed with the first and
    /// verified with any (list the old key after the new one while rotating).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SIGNING_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    signing_key: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (gRPC, grpc-web, reflection and health share it).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    listen: SocketAddr,
    #[command(flatten)]
    keys: KeyArgs,
    /// API key of the admin service (Publish, IssueToken), sent as `authorization: Bearer <key>`.
    /// Without one, a key is generated for this run and written to a file (see the output).
    #[arg(long, env = "DURABLE_ITERATOR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Where events are kept: `redb`, an embedded on-disk log in --data-dir that survives
    /// restarts; or `memory`, lost at exit.
    #[arg(long, env = "DURABLE_ITERATOR_STORE", value_enum, default_value_t = StoreKind::Redb)]
    store: StoreKind,
    /// Data directory of the `redb` store (created if missing; one server at a time).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_DATA_DIR",
        default_value = "durable-iterator-data"
    )]
    data_dir: PathBuf,
    /// How long events are kept for resume, in seconds (0: resume off).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_RETENTION_SECONDS",
        default_value_t = 300
    )]
    retention_seconds: u64,
    /// Heartbeat interval of idle streams, in seconds.
    #[arg(long, env = "DURABLE_ITERATOR_HEARTBEAT_SECONDS", default_value_t = 15)]
    heartbeat_seconds: u64,
    /// Events a subscriber may have queued before its stream ends as a slow consumer.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SUBSCRIBER_QUEUE",
        default_value_t = 4096
    )]
    subscriber_queue: usize,
    /// Largest event payload, in bytes (encoded).
    #[arg(long, env = "DURABLE_ITERATOR_MAX_PAYLOAD_BYTES", default_value_t = Limits::default().max_payload_bytes)]
    max_payload_bytes: usize,
    /// Most tags on a token or an event.
    #[arg(long, env = "DURABLE_ITERATOR_MAX_TAGS", default_value_t = Limits::default().max_tags)]
    max_tags: usize,
    /// Largest token, in bytes.
    #[arg(long, env = "DURABLE_ITERATOR_MAX_TOKEN_BYTES", default_value_t = Limits::default().max_token_bytes)]
    max_token_bytes: usize,
    /// Forward `Invoke` calls of every channel to this HTTP endpoint (a JSON POST per call; see
    /// the README) instead of answering them with the built-in relay object.
    #[arg(long, env = "DURABLE_ITERATOR_METHOD_PROXY")]
    method_proxy: Option<http::Uri>,
    /// How long one proxied method call may take.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_METHOD_PROXY_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    method_proxy_timeout_seconds: u64,
    /// On SIGTERM or Ctrl-C, how long open calls may take to finish before the process exits.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10
    )]
    shutdown_grace_seconds: u64,
    /// Where to write a generated admin API key when none is configured.
    #[arg(long, env = "DURABLE_ITERATOR_DEV_KEY_FILE")]
    dev_key_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    Redb,
    Memory,
}

#[derive(Args)]
struct TokenArgs {
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => mint(args),
        Command::Subscribe(args) => subscribe(args).await,
        Command::Publish(args) => publish(args).await,
    }
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    let generated_signing_key = args.keys.signing_key.is_empty();
    let keyring = if generated_signing_key {
        tracing::warn!(
            "no signing key configured (--signing-key / DURABLE_ITERATOR_SIGNING_KEY): using a \
             key generated for this run; tokens and session tickets stop working at restart"
        );
        Keyring::new([random_key()])?
    } else {
        Keyring::new(&args.keys.signing_key)?
    };
    let (api_key, dev_key_file) = match args.api_key {
        Some(key) if key.is_empty() => return Err("--api-key is empty".into()),
        Some(key) => (key, None),
        None => {
            // Written to a file readable by this user only, never to the log.
            let key = random_key();
            let path = args
                .dev_key_file
                .unwrap_or_else(|| std::env::temp_dir().join("durable-iterator-api-key"));
            write_private(&path, &key)?;
            tracing::warn!(
                path = %path.display(),
                "no admin API key configured (--api-key / DURABLE_ITERATOR_API_KEY): generated one for this run"
            );
            (key, Some(path))
        }
    };

    let mut config = ServerConfig::new(keyring.clone(), Some(api_key));
    config.heartbeat = Duration::from_secs(args.heartbeat_seconds.max(1));
    config.subscriber_queue = args.subscriber_queue.max(1);
    config.limits.max_payload_bytes = args.max_payload_bytes;
    config.limits.max_tags = args.max_tags;
    config.limits.max_token_bytes = args.max_token_bytes;
    if let Some(url) = args.method_proxy {
        if url.scheme_str() != Some("http") {
            return Err(
                format!("--method-proxy {url}: only http:// endpoints are supported").into(),
            );
        }
        config.objects.proxy_unregistered(ProxyConfig {
            url,
            timeout: Duration::from_secs(args.method_proxy_timeout_seconds.max(1)),
        });
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let retention_ms = args.retention_seconds.saturating_mul(1000);
    let (store, store_name): (Arc<dyn EventStore>, String) = match args.store {
        StoreKind::Memory => (Arc::new(MemoryStore::new(retention_ms)), "memory".into()),
        StoreKind::Redb => {
            let store = RedbStore::open(&args.data_dir, retention_ms)
                .map_err(|e| format!("cannot open the event store: {e}"))?;
            let name = format!("redb at {}", store.location());
            (Arc::new(store), name)
        }
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, retention_seconds = args.retention_seconds, store = %store_name, "serving");
    // A plain line on stdout for scripts and supervisors that wait for the port.
    println!("durable-iterator listening on {addr}");
    if generated_signing_key || dev_key_file.is_some() {
        print_walkthrough(addr, &keyring, clock.as_ref(), dev_key_file.as_deref());
    }
    let stopping = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stopping = stopping.clone();
        async move {
            shutdown_signal().await;
            stopping.cancel();
        }
    });
    let serving =
        Server::new(config, store, clock).serve(listener, stopping.clone().cancelled_owned());
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    tokio::select! {
        result = serving => result?,
        // Streams are told to reconnect at once; a client that keeps a call open past the
        // grace period does not hold the process. Acknowledged events are already durable.
        _ = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "calls still open after the grace period: exiting");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tells a first-time user how to try the running server: a ready token and grpcurl commands.
fn print_walkthrough(
    addr: SocketAddr,
    keyring: &Keyring,
    clock: &dyn Clock,
    key_file: Option<&std::path::Path>,
) {
    let claims = TokenClaims::new("lobby", clock.now_secs(), token::DEFAULT_TTL_SECS);
    let request = serde_json::json!({ "token": token::sign(keyring, &claims) });
    let auth = match key_file {
        Some(path) => format!("\"authorization: Bearer $(cat {})\"", path.display()),
        None => "\"authorization: Bearer $DURABLE_ITERATOR_API_KEY\"".to_owned(),
    };
    println!(
        "\nTry it (channel \"lobby\", token valid for 24 h):\n\n\
         # subscribe\n\
         grpcurl -plaintext -d '{request}' {addr} durable_iterator.v1.DurableIterator/Subscribe\n\n\
         # publish (another terminal)\n\
         grpcurl -plaintext -H {auth} -d '{{\"channel\":\"lobby\",\"json\":{{\"text\":\"hello\"}}}}' {addr} durable_iterator.v1.DurableIteratorAdmin/Publish\n"
    );
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
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

fn mint(args: TokenArgs) -> Result<(), BoxError> {
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: streams are told to reconnect");
}

// ---- `subscribe` and `publish`: the client's command line --------------------------------

#[derive(Args)]
struct SubscribeArgs {
    /// The server's address.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// A ready token. It is used as it is: once it has expired, a reconnect fails. Without
    /// it, tokens for --channel are minted (and refreshed) with the signing key.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_TOKEN",
        hide_env_values = true,
        conflicts_with = "channel",
        required_unless_present = "channel"
    )]
    token: Option<String>,
    /// The channel to subscribe to (tokens minted with --signing-key).
    #[arg(long)]
    channel: Option<String>,
    /// Tags of the minted tokens (repeat or comma separate).
    #[arg(long, value_delimiter = ',', requires = "channel")]
    tags: Vec<String>,
    /// Lifetime of the minted tokens, in seconds; each is replaced on the live stream
    /// before it expires.
    #[arg(long, default_value_t = 3_600, requires = "channel")]
    ttl: u64,
    /// Resume after this event id (events after it that are still retained come first).
    #[arg(long)]
    from: Option<String>,
    /// Keep the session of this ticket (printed on stderr by an earlier run).
    #[arg(long)]
    session_ticket: Option<String>,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(Args)]
struct PublishArgs {
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
}

async fn subscribe(args: SubscribeArgs) -> Result<(), BoxError> {
    use durable_iterator::client::{
        Client, FixedToken, SigningProvider, SubscribeOptions, TokenProvider,
    };
    let client = Client::new(&args.server)?;
    let mut options = SubscribeOptions {
        last_event_id: args.from,
        session_ticket: args.session_ticket,
        ..SubscribeOptions::default()
    };
    let provider: Box<dyn Fn() -> durable_iterator::client::TokenFuture + Send + Sync> =
        match (args.token, args.channel) {
            (Some(token), _) => {
                let fixed = FixedToken(token);
                Box::new(move || fixed.token())
            }
            (None, Some(channel)) => {
                if args.keys.signing_key.is_empty() {
                    return Err("--channel mints tokens: pass --signing-key or set \
                                DURABLE_ITERATOR_SIGNING_KEY (or give --token)"
                        .into());
                }
                let mut template = TokenClaims::new(channel, 0, 0);
                template.tags = (!args.tags.is_empty()).then_some(args.tags);
                let ttl = args.ttl.max(2);
                // Refreshed a quarter of its life (at most five minutes) before it expires.
                options.refresh_before_expiry = Some(Duration::from_secs((ttl / 4).clamp(1, 300)));
                let minter = SigningProvider::new(
                    Keyring::new(&args.keys.signing_key)?,
                    template,
                    ttl,
                    Arc::new(SystemClock),
                );
                Box::new(move || minter.token())
            }
            (None, None) => return Err("give --token or --channel".into()),
        };
    let subscription = client.subscribe(provider, options);
    let stop = subscription.handle().cancellation_token();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    durable_iterator::client::cli::print_subscription(subscription, &mut stdout, &mut stderr)
        .await?;
    Ok(())
}

async fn publish(args: PublishArgs) -> Result<(), BoxError> {
    let payload: serde_json::Value =
        serde_json::from_str(&args.json).map_err(|e| format!("--json is not JSON: {e}"))?;
    // `--tags ''` is an empty list (nobody), not a list of one empty tag.
    let list = |values: Option<Vec<String>>| {
        values.map(|values| values.into_iter().filter(|v| !v.is_empty()).collect())
    };
    let client = durable_iterator::client::Client::new(&args.server)?;
    let id = client
        .publish(
            &args.api_key,
            durable_iterator::client::Publish {
                channel: args.channel,
                payload,
                tags: list(args.tags),
                targets: list(args.targets),
                exclude: args.exclude,
            },
        )
        .await?;
    println!("{id}");
    Ok(())
}
