//! `durable-iterator serve`: the server, configured from flags and the environment.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, ValueEnum};
use durable_iterator::{
    EventStore, Keyring, Limits, MemoryStore, ProxyConfig, RedbStore, RedisConfig, RedisStore,
    RedisTls, Server, ServerConfig, TlsConfig, TokenClaims,
    clock::{Clock, SharedClock, SystemClock},
    defaults, token,
};
use rand::RngCore;

use crate::{BoxError, KeyArgs, LogFormat, config, reload};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML file: serve's flags as keys (`retention-seconds = 60`).
    /// Flags and environment variables win over it; an unknown key or a bad value refuses to
    /// start. SIGHUP, or a change of the file, re-reads its keys.
    #[arg(long, env = "DURABLE_ITERATOR_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted, each value with its source) and
    /// exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Address to listen on (gRPC, grpc-web, reflection and health share it).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_LISTEN",
        default_value = defaults::LISTEN
    )]
    listen: SocketAddr,
    #[command(flatten)]
    keys: KeyArgs,
    /// Signing keys from this file, one per line (the first signs; blank lines and `#`
    /// comments are skipped), instead of --signing-key. Re-read on SIGHUP or when it changes.
    #[arg(long, env = "DURABLE_ITERATOR_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// API key of the admin service (Publish, IssueToken), sent as `authorization: Bearer <key>`.
    /// Without one, a key is generated for this run and written to a file (see the output).
    #[arg(long, env = "DURABLE_ITERATOR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// API keys from this file, one per line (any of them opens the admin service; blank lines
    /// and `#` comments are skipped), instead of --api-key. Re-read on SIGHUP or when it changes.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_API_KEY_FILE",
        conflicts_with = "api_key"
    )]
    api_key_file: Option<PathBuf>,
    /// Where events are kept: `redb`, an embedded on-disk log in --data-dir that survives
    /// restarts; `redis`, Redis Streams at --redis-url; or `memory`, lost at exit.
    #[arg(long, env = "DURABLE_ITERATOR_STORE", value_enum, default_value_t = StoreKind::Redb)]
    store: StoreKind,
    /// The Redis of the `redis` store: `redis://[:PASSWORD@]HOST:PORT/DB`, or `rediss://...`
    /// for TLS.
    #[arg(long, env = "DURABLE_ITERATOR_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of the `redis` store's keys: deployments with different prefixes share a Redis
    /// without seeing each other's channels.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_REDIS_KEY_PREFIX",
        default_value = durable_iterator::store::REDIS_DEFAULT_KEY_PREFIX
    )]
    redis_key_prefix: String,
    /// PEM CA certificates that a `rediss://` Redis's certificate must chain to, instead of the
    /// system's roots (a private CA, a self-signed Redis).
    #[arg(long, env = "DURABLE_ITERATOR_REDIS_CA_FILE")]
    redis_ca_file: Option<PathBuf>,
    /// PEM client certificate chain sent to a `rediss://` Redis that asks for one
    /// (`tls-auth-clients yes`). Needs --redis-key-file.
    // Checked in `serve`, not with clap's `requires`: the two may come from different places
    // (a file and the environment), and the first parse sees no file.
    #[arg(long, env = "DURABLE_ITERATOR_REDIS_CERT_FILE")]
    redis_cert_file: Option<PathBuf>,
    /// The PEM private key of --redis-cert-file.
    #[arg(long, env = "DURABLE_ITERATOR_REDIS_KEY_FILE")]
    redis_key_file: Option<PathBuf>,
    /// Acknowledge a publish only once this many Redis replicas have its events (Redis
    /// `WAIT`); 0: once the primary has them. See the README for what each setting promises.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_REDIS_WAIT_REPLICAS",
        default_value_t = 0
    )]
    redis_wait_replicas: u32,
    /// How long a publish waits for --redis-wait-replicas before it fails UNAVAILABLE (its
    /// events are then stored on the primary: retry with the same idempotency key).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_REDIS_WAIT_TIMEOUT_MS",
        default_value_t = durable_iterator::store::REDIS_DEFAULT_WAIT_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    redis_wait_timeout_ms: u64,
    /// Data directory of the `redb` store (created if missing; one server at a time).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_DATA_DIR",
        default_value = defaults::DATA_DIR
    )]
    data_dir: PathBuf,
    /// How long events are kept for resume, in seconds (0: resume off).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_RETENTION_SECONDS",
        default_value_t = defaults::RETENTION_SECONDS
    )]
    retention_seconds: u64,
    /// Heartbeat interval of idle streams, in seconds.
    #[arg(long, env = "DURABLE_ITERATOR_HEARTBEAT_SECONDS", default_value_t = defaults::HEARTBEAT.as_secs())]
    heartbeat_seconds: u64,
    /// Events a subscriber may have queued before its stream ends as a slow consumer.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SUBSCRIBER_QUEUE",
        default_value_t = defaults::SUBSCRIBER_QUEUE
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
        default_value_t = defaults::METHOD_PROXY_TIMEOUT.as_secs()
    )]
    method_proxy_timeout_seconds: u64,
    /// On SIGTERM or Ctrl-C, how long to keep serving with health NOT_SERVING (so load
    /// balancers move clients away) before new streams are refused and open ones end; a
    /// second signal ends the wait.
    #[arg(long, env = "DURABLE_ITERATOR_DRAIN_SECONDS", default_value_t = 0)]
    drain_seconds: u64,
    /// Once streams are told to reconnect, how long open calls may take to finish before the
    /// process exits.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SHUTDOWN_GRACE_SECONDS",
        default_value_t = defaults::SHUTDOWN_GRACE.as_secs()
    )]
    shutdown_grace_seconds: u64,
    /// Serve TLS with this PEM certificate chain (HTTP/2 and HTTP/1.1 by ALPN, so browsers
    /// multiplex every stream of a page on one connection). Needs --tls-key.
    // Paired in `serve` (see --redis-cert-file): a file and the environment may give one each.
    #[arg(long, env = "DURABLE_ITERATOR_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "DURABLE_ITERATOR_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Require client certificates that chain to this PEM CA bundle (mTLS).
    #[arg(long, env = "DURABLE_ITERATOR_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate for localhost, made once in --data-dir (for
    /// local development; its path and fingerprint are printed).
    #[arg(long, env = "DURABLE_ITERATOR_DEV_TLS", conflicts_with_all = ["tls_cert", "tls_key"])]
    dev_tls: bool,
    /// Origins browsers may call from (CORS; repeat or comma separate). Default: any origin.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    cors_allow_origin: Vec<http::HeaderValue>,
    /// Where to write a generated admin API key when none is configured (readable by this user
    /// only). Default: `dev-api-key` in --data-dir.
    #[arg(long, env = "DURABLE_ITERATOR_DEV_KEY_FILE")]
    dev_key_file: Option<PathBuf>,
    /// Serve Prometheus metrics at `GET /metrics` on this address (off without it).
    #[arg(long, env = "DURABLE_ITERATOR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Also time each stage of every publish's way to its subscribers
    /// (`durable_iterator_publish_stage_seconds`): a clock read per publish, per stored batch
    /// and per subscriber and batch. For finding where latency goes.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_STAGE_TIMINGS",
        requires = "metrics_listen"
    )]
    stage_timings: bool,
    /// Log lines as `text` or `json` (one object per line), on stderr; `RUST_LOG` filters.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

/// The signing keys `args` configure: from --signing-key-file, else --signing-key (empty:
/// none configured).
pub(crate) fn signing_keys(args: &ServeArgs) -> Result<Vec<String>, String> {
    match &args.signing_key_file {
        Some(_) if !args.keys.signing_key.is_empty() => {
            Err("give --signing-key or --signing-key-file, not both".into())
        }
        Some(path) => crate::config::read_key_file(path),
        None => Ok(args.keys.signing_key.clone()),
    }
}

/// The API keys `args` configure: from --api-key-file, else --api-key (empty: none
/// configured).
pub(crate) fn api_keys(args: &ServeArgs) -> Result<Vec<String>, String> {
    match (&args.api_key_file, &args.api_key) {
        (Some(path), _) => crate::config::read_key_file(path),
        (None, Some(key)) if key.is_empty() => Err("--api-key is empty".into()),
        (None, key) => Ok(key.iter().cloned().collect()),
    }
}

/// Refuses settings that do not go together, which clap cannot tell while a file may hold
/// some of them.
fn check_args(args: &ServeArgs) -> Result<(), String> {
    check_redis_args(args)?;
    pair((&args.tls_cert, "--tls-cert"), (&args.tls_key, "--tls-key"))
}

/// Refuses Redis settings without the Redis store, and half a client identity.
fn check_redis_args(args: &ServeArgs) -> Result<(), String> {
    if !matches!(args.store, StoreKind::Redis) {
        let redis_only = [
            ("--redis-url", args.redis_url.is_some()),
            ("--redis-ca-file", args.redis_ca_file.is_some()),
            ("--redis-cert-file", args.redis_cert_file.is_some()),
            ("--redis-key-file", args.redis_key_file.is_some()),
            ("--redis-wait-replicas", args.redis_wait_replicas > 0),
        ];
        if let Some((flag, _)) = redis_only.iter().find(|(_, set)| *set) {
            return Err(format!("{flag} is for --store redis"));
        }
    }
    pair(
        (&args.redis_cert_file, "--redis-cert-file"),
        (&args.redis_key_file, "--redis-key-file"),
    )
}

/// Refuses one of a certificate and its key without the other.
fn pair<T>(cert: (&Option<T>, &str), key: (&Option<T>, &str)) -> Result<(), String> {
    match (cert.0, key.0) {
        (Some(_), None) => Err(format!("{} needs {}", cert.1, key.1)),
        (None, Some(_)) => Err(format!("{} needs {}", key.1, cert.1)),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    Redb,
    Redis,
    Memory,
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `serve`: the command line (and its file) resolved again, so that the file sits between the
/// environment and the defaults (`_parsed` is what clap made without the file).
pub(crate) async fn run(_parsed: Box<ServeArgs>) -> Result<(), BoxError> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let resolved = config::resolve(argv.clone())?;
    if resolved.args.print_config {
        print!("{}", config::print(&resolved));
        return Ok(());
    }
    crate::init_logging(resolved.args.log_format);
    serve(resolved.args, argv).await
}

async fn serve(args: ServeArgs, argv: Vec<std::ffi::OsString>) -> Result<(), BoxError> {
    check_args(&args)?;
    let signing_keys = signing_keys(&args)?;
    let generated_signing_key = signing_keys.is_empty();
    let keyring = if generated_signing_key {
        tracing::warn!(
            "no signing key configured (--signing-key / DURABLE_ITERATOR_SIGNING_KEY): using a \
             key generated for this run; tokens and session tickets stop working at restart"
        );
        Keyring::new([random_key()])?
    } else {
        Keyring::new(&signing_keys)?
    };
    let mut api_keys = api_keys(&args)?;
    let (api_key, dev_key_file) = match api_keys.first() {
        Some(key) => (key.clone(), None),
        None => {
            // Written to a file readable by this user only, never to the log.
            let key = random_key();
            // In the data directory, this server's own (a fixed path in /tmp would be shared
            // by every server on the host).
            let path = match args.dev_key_file {
                Some(path) => path,
                None => {
                    std::fs::create_dir_all(&args.data_dir)
                        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
                    args.data_dir.join("dev-api-key")
                }
            };
            durable_iterator::write_private_file(&path, &key).map_err(|e| {
                format!(
                    "cannot write the generated API key to {}: {e}",
                    path.display()
                )
            })?;
            tracing::warn!(
                path = %path.display(),
                "no admin API key configured (--api-key / DURABLE_ITERATOR_API_KEY): generated one for this run"
            );
            api_keys.push(key.clone());
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
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(format!("--method-proxy {url}: give an http:// or https:// URL").into());
        }
        config.objects.proxy_unregistered(ProxyConfig {
            url,
            timeout: Duration::from_secs(args.method_proxy_timeout_seconds.max(1)),
        });
    }
    config.cors_allowed_origins = args.cors_allow_origin;
    let mut dev_certificate = None;
    if args.dev_tls {
        let (cert, key, fingerprint) = durable_iterator::dev_certificate(&args.data_dir)?;
        config.tls = Some(TlsConfig::from_pem_files(
            &cert,
            &key,
            args.tls_client_ca.as_deref(),
        )?);
        dev_certificate = Some((cert, fingerprint));
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig::from_pem_files(
            cert,
            key,
            args.tls_client_ca.as_deref(),
        )?);
    } else if args.tls_client_ca.is_some() {
        return Err(
            "--tls-client-ca needs TLS: give --tls-cert and --tls-key, or --dev-tls".into(),
        );
    }
    let tls = config.tls.is_some();
    let clock: SharedClock = Arc::new(SystemClock);
    let retention_ms = args.retention_seconds.saturating_mul(1000);
    let (store, store_name): (Arc<dyn EventStore>, String) = match args.store {
        StoreKind::Memory => (Arc::new(MemoryStore::new(retention_ms)), "memory".into()),
        StoreKind::Redb => {
            let store = RedbStore::open(&args.data_dir, retention_ms)
                .map_err(|e| format!("cannot open the event store: {e}"))?;
            config.store_file = Some(args.data_dir.join(durable_iterator::store::REDB_FILE_NAME));
            let name = format!("redb at {}", store.location());
            (Arc::new(store), name)
        }
        StoreKind::Redis => {
            let url = args
                .redis_url
                .as_deref()
                .ok_or("--store redis needs --redis-url (or DURABLE_ITERATOR_REDIS_URL)")?;
            let identity = args
                .redis_cert_file
                .as_deref()
                .zip(args.redis_key_file.as_deref());
            let tls = RedisTls::from_pem_files(args.redis_ca_file.as_deref(), identity)
                .map_err(|e| format!("cannot open the event store: {e}"))?;
            let mut redis = RedisConfig::new(url, retention_ms);
            redis.key_prefix = args.redis_key_prefix.clone();
            redis.tls = tls;
            redis.wait_replicas = args.redis_wait_replicas;
            redis.wait_timeout = Duration::from_millis(args.redis_wait_timeout_ms);
            let store = RedisStore::open_with(redis)
                .await
                .map_err(|e| format!("cannot open the event store: {e}"))?;
            let replicas = match args.redis_wait_replicas {
                0 => String::new(),
                n => format!(", publishes wait for {n} replicas"),
            };
            let name = format!(
                "redis at {} (keys {}:*{replicas})",
                store.location(),
                args.redis_key_prefix
            );
            (Arc::new(store), name)
        }
    };

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let metrics_addr = match args.metrics_listen {
        Some(listen) => {
            let addr = durable_iterator::metrics::install(listen).await?;
            if args.stage_timings {
                durable_iterator::metrics::enable_stage_timings();
            }
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%addr, tls, retention_seconds = args.retention_seconds, store = %store_name, "serving");
    // A plain line on stdout for scripts and supervisors that wait for the port.
    println!("durable-iterator listening on {addr}");
    // After it: scripts read the first line for the port.
    if let Some(metrics_addr) = metrics_addr {
        tracing::info!(addr = %metrics_addr, "metrics at GET /metrics");
        println!("durable-iterator metrics on http://{metrics_addr}/metrics");
    }
    if let Some((cert, fingerprint)) = &dev_certificate {
        println!(
            "TLS with a self-signed development certificate: {}\n  SHA-256 fingerprint {fingerprint}\n  \
             clients trust it with --ca-cert {} (grpcurl: -cacert {}); browsers: open \
             https://localhost:{} once and accept it",
            cert.display(),
            cert.display(),
            cert.display(),
            addr.port()
        );
    }
    if generated_signing_key || dev_key_file.is_some() {
        let transport = match (&dev_certificate, &args.tls_cert) {
            (Some((cert, _)), _) => format!("-cacert {}", cert.display()),
            (None, Some(cert)) => format!("-cacert {}", cert.display()),
            (None, None) => "-plaintext".to_owned(),
        };
        print_walkthrough(
            addr,
            &keyring,
            clock.as_ref(),
            dev_key_file.as_deref(),
            &transport,
        );
    }
    let draining = tokio_util::sync::CancellationToken::new();
    let stopping = tokio_util::sync::CancellationToken::new();
    let drain = Duration::from_secs(args.drain_seconds);
    tokio::spawn({
        let (draining, stopping) = (draining.clone(), stopping.clone());
        async move {
            crate::stop_signal().await;
            if !drain.is_zero() {
                tracing::info!(
                    drain_seconds = drain.as_secs(),
                    "draining: health is NOT_SERVING, streams go on until the drain ends (or a \
                     second signal)"
                );
                draining.cancel();
                tokio::select! {
                    _ = tokio::time::sleep(drain) => {}
                    _ = crate::stop_signal() => {}
                }
            }
            tracing::info!("shutting down: streams are told to reconnect");
            draining.cancel();
            stopping.cancel();
        }
    });
    let server = Server::new(config, store, clock);
    // Every API key of the file, not only the first that the configuration holds.
    server
        .key_reloader()
        .reload(keyring.clone(), api_keys.clone());
    let generated = reload::Generated {
        keyring: generated_signing_key.then(|| keyring.clone()),
        api_keys: dev_key_file.is_some().then_some(api_keys),
    };
    let watched = [&args.config, &args.signing_key_file, &args.api_key_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    reload::reload_keys_on_change(server.key_reloader(), argv, generated, watched);
    let serving = server.serve_draining(
        listener,
        draining.cancelled_owned(),
        stopping.clone().cancelled_owned(),
    );
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
    transport: &str,
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
         grpcurl {transport} -d '{request}' {addr} durable_iterator.v1.DurableIterator/Subscribe\n\n\
         # publish (another terminal)\n\
         grpcurl {transport} -H {auth} -d '{{\"channel\":\"lobby\",\"json\":{{\"text\":\"hello\"}}}}' {addr} durable_iterator.v1.DurableIteratorAdmin/Publish\n"
    );
}
