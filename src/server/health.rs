//! `grpc.health.v1.Health`, whose `Watch` streams end when the server shuts down.
//!
//! tonic-health's watch streams never end on their own, and a graceful shutdown waits for every
//! open stream: one load balancer watching health would keep the server from ever stopping.
//! Here a watch first delivers the status set in the shutdown path (NOT_SERVING, set before the
//! shutdown token is cancelled), then ends with UNAVAILABLE.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

/// The health service of `reporter`, with watches that end on `shutdown`.
pub(super) fn server(
    reporter: HealthReporter,
    shutdown: CancellationToken,
) -> HealthServer<ShutdownAwareHealth> {
    HealthServer::new(ShutdownAwareHealth {
        inner: HealthService::from_health_reporter(reporter),
        shutdown,
    })
}

pub(super) struct ShutdownAwareHealth {
    inner: HealthService,
    shutdown: CancellationToken,
}

type Updates = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for ShutdownAwareHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Updates;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let updates = self.inner.watch(request).await?.into_inner();
        let shutdown = self.shutdown.clone();
        let updates = futures::stream::unfold(Some((updates, shutdown)), |state| async move {
            let (mut updates, shutdown) = state?;
            tokio::select! {
                // A status changed before the cancellation is delivered first.
                biased;
                update = updates.next() => {
                    update.map(|update| (update, Some((updates, shutdown))))
                }
                _ = shutdown.cancelled() => Some((
                    Err(Status::unavailable("server shutting down")),
                    None,
                )),
            }
        });
        Ok(Response::new(Box::pin(updates)))
    }
}
