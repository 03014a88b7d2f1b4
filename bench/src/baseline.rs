//! The ceiling of the stack: a bare tonic server with the product's contract and nothing else.
//!
//! `Subscribe` sends one `Subscribed` and then every published event; `Publish` encodes the
//! event once (the same bytes as the product's) and hands it to every open stream. No tokens,
//! filters, store, sessions or resume: what tonic and HTTP/2 cost on this machine, measured by
//! the same load client as the product.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use durable_iterator::pb;

use crate::frame::Frame;
use generated::{
    durable_iterator_admin_server::{DurableIteratorAdmin, DurableIteratorAdminServer},
    durable_iterator_server::{DurableIterator, DurableIteratorServer},
};

/// The services generated for the baseline (see `build.rs`).
#[allow(clippy::all, missing_docs, unreachable_pub)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/durable_iterator.v1.rs"));
}
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

/// Published frames, in a ring every stream reads at its own pace: one store and one wake-up per
/// event for all streams, and a stream that is behind takes what is waiting without waiting
/// again, so the stack, not the hand-over, sets the pace.
struct Hub {
    events: broadcast::Sender<Frame>,
    next_seq: AtomicU64,
}

/// Events a stream may fall behind by; the benchmark's publisher stays far closer than this.
const RING: usize = 1 << 20;

#[derive(Clone)]
struct Baseline {
    hub: Arc<Hub>,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            hub: Arc::new(Hub {
                events: broadcast::channel(RING).0,
                next_seq: AtomicU64::new(0),
            }),
        }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl DurableIterator for Baseline {
    type SubscribeStream = FrameStream;

    async fn subscribe(
        &self,
        _request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<FrameStream>, Status> {
        let events = self.hub.events.subscribe();
        let subscribed = Frame::message(&pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Subscribed(pb::Subscribed {
                channel: "bench".into(),
                ..Default::default()
            })),
        });
        let stream = futures::stream::once(async move { subscribed })
            .chain(BroadcastStream::new(events).filter_map(|event| async move { event.ok() }))
            .map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn invoke(
        &self,
        _request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn refresh_token(
        &self,
        _request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

impl Baseline {
    /// Encodes one event once and hands it to every open stream; returns its id.
    fn publish_one(&self, request: pb::PublishRequest) -> Result<String, Status> {
        let payload = match request.payload {
            Some(pb::publish_request::Payload::Json(value)) => pb::event::Payload::Json(value),
            Some(pb::publish_request::Payload::Typed(any)) => pb::event::Payload::Typed(any),
            None => return Err(Status::invalid_argument("no payload")),
        };
        let seq = self.hub.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("00000001-{seq:016x}");
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let frame = Frame::message(&pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Event(pb::Event {
                id: id.clone(),
                payload: Some(payload),
                published_at_ms: now_ms,
            })),
        });
        // No stream open is not an error here.
        let _ = self.hub.events.send(frame);
        Ok(id)
    }
}

#[tonic::async_trait]
impl DurableIteratorAdmin for Baseline {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let id = self.publish_one(request.into_inner())?;
        Ok(Response::new(pb::PublishResponse { id }))
    }

    async fn publish_batch(
        &self,
        request: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
        let ids = request
            .into_inner()
            .events
            .into_iter()
            .map(|event| self.publish_one(event))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::PublishBatchResponse { ids }))
    }

    async fn issue_token(
        &self,
        _request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn history(
        &self,
        _request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn channel_info(
        &self,
        _request: Request<pb::ChannelInfoRequest>,
    ) -> Result<Response<pb::ChannelInfoResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn list_channels(
        &self,
        _request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn presence(
        &self,
        _request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn presence_stats(
        &self,
        _request: Request<pb::PresenceStatsRequest>,
    ) -> Result<Response<pb::PresenceStatsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn disconnect(
        &self,
        _request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn disconnect_all(
        &self,
        _request: Request<pb::DisconnectAllRequest>,
    ) -> Result<Response<pb::DisconnectAllResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

/// Serves the baseline on `listen` until the process is killed; prints
/// `baseline listening on ADDR` once bound.
pub async fn serve(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("baseline listening on {}", listener.local_addr()?);
    let service = Baseline::default();
    tonic::transport::Server::builder()
        .max_concurrent_streams(10_000)
        .add_service(DurableIteratorServer::new(service.clone()))
        .add_service(DurableIteratorAdminServer::new(service))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}
