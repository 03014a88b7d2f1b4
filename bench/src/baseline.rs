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
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use durable_iterator::{
    frame::{self, Frame},
    pb,
    server::generated::{
        durable_iterator_admin_server::{DurableIteratorAdmin, DurableIteratorAdminServer},
        durable_iterator_server::{DurableIterator, DurableIteratorServer},
    },
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Hub {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Frame>>>,
    next_seq: AtomicU64,
}

#[derive(Clone, Default)]
struct Baseline {
    hub: Arc<Hub>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl DurableIterator for Baseline {
    type SubscribeStream = FrameStream;

    async fn subscribe(
        &self,
        _request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<FrameStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.hub.subscribers.lock().unwrap().push(tx);
        let subscribed = Frame::message(&pb::SubscribeResponse {
            kind: Some(pb::subscribe_response::Kind::Subscribed(pb::Subscribed {
                channel: "bench".into(),
                ..Default::default()
            })),
        });
        let stream = futures::stream::once(async move { subscribed })
            .chain(UnboundedReceiverStream::new(rx))
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
        let frame = Frame::event(&id, &frame::encode_payload(&payload), now_ms);
        self.hub
            .subscribers
            .lock()
            .unwrap()
            .retain(|tx| tx.send(frame.clone()).is_ok());
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
