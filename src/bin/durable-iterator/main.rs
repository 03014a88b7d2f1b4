//! The `durable-iterator` command line: thin, every piece of behaviour lives in the library
//! (the server) or the client crate. One file per command.

mod config;
mod health;
mod publish;
mod reload;
mod serve;
mod subscribe;
mod token;

use clap::{Args, Parser, Subcommand};

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
    Serve(Box<serve::ServeArgs>),
    /// Mints a channel token with the signing key (for grpcurl and scripts).
    Token(token::TokenArgs),
    /// Subscribes to a channel and prints each event as one JSON line, reconnecting and
    /// resuming by itself.
    Subscribe(subscribe::SubscribeArgs),
    /// Publishes one JSON event through the admin API and prints its id.
    Publish(publish::PublishArgs),
    /// Asks a server whether it serves (gRPC health): exit status 0 if it does.
    Health(health::HealthArgs),
}

#[derive(Args)]
pub(crate) struct KeyArgs {
    /// Signing keys, comma separated: tokens and session tickets are signed with the first and
    /// verified with any (list the old key after the new one while rotating).
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SIGNING_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) signing_key: Vec<String>,
}

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
    match cli.command {
        // `serve` starts its log once its configuration (which may choose JSON) is resolved.
        Command::Serve(args) => serve::run(args).await,
        Command::Token(args) => {
            init_logging(LogFormat::Text);
            token::run(args)
        }
        Command::Subscribe(args) => {
            init_logging(LogFormat::Text);
            subscribe::run(args).await
        }
        Command::Publish(args) => {
            init_logging(LogFormat::Text);
            publish::run(args).await
        }
        Command::Health(args) => {
            init_logging(LogFormat::Text);
            health::run(args).await
        }
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LogFormat {
    /// For people: one line per event, colored on a terminal.
    Text,
    /// For log collectors: one JSON object per line (`timestamp`, `level`, `target`,
    /// `fields`).
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub(crate) fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// The TLS options of the client commands.
#[derive(Args)]
pub(crate) struct TlsArgs {
    /// Trust this PEM CA certificate for an https:// server, besides the system's roots (e.g.
    /// the certificate `serve --dev-tls` made).
    #[arg(long, env = "DURABLE_ITERATOR_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// A client of `server` with these options.
    pub(crate) fn client(&self, server: &str) -> Result<durable_iterator_client::Client, BoxError> {
        let mut options = durable_iterator_client::ConnectOptions::default();
        if let Some(path) = &self.ca_cert {
            let pem =
                std::fs::read(path).map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
            options.ca_certificate_pem = Some(pem);
        }
        Ok(durable_iterator_client::Client::with_options(
            server, options,
        )?)
    }
}

/// Completes on Ctrl-C or SIGTERM: `serve` then shuts down gracefully, `subscribe` closes its
/// stream; both exit 0.
pub(crate) async fn stop_signal() {
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
}

/// The error of a command: printed as `error: ...`, exit status 1.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
