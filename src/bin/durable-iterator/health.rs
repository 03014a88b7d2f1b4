//! `durable-iterator health`: asks a server's `grpc.health.v1.Health` whether it serves; exits
//! 0 if it does, 1 if not (draining, store down) or unreachable. For container health checks
//! and scripts.

use std::time::Duration;

use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{BoxError, TlsArgs};

#[derive(Args)]
pub(crate) struct HealthArgs {
    /// The server's address.
    #[arg(
        long,
        env = "DURABLE_ITERATOR_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The service to ask about (empty: the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 5)]
    timeout_seconds: u64,
    #[command(flatten)]
    tls: TlsArgs,
}

pub(crate) async fn run(args: HealthArgs) -> Result<(), BoxError> {
    let client = args.tls.client(&args.server)?;
    let mut health = HealthClient::new(client.channel().clone());
    let request = HealthCheckRequest {
        service: args.service,
    };
    let timeout = Duration::from_secs(args.timeout_seconds.max(1));
    let answer = tokio::time::timeout(timeout, health.check(request))
        .await
        .map_err(|_| format!("{}: no answer within {}s", args.server, timeout.as_secs()))?
        .map_err(|status| format!("{}: {}", args.server, status.message()))?;
    let status =
        ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    if status != ServingStatus::Serving {
        return Err(format!("{} is not serving", args.server).into());
    }
    Ok(())
}
