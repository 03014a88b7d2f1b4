//! What other nodes sharing this node's channels ask of it: to supersede a stream of a
//! session that opened on them, and to run calls for the sessions it holds.

use std::sync::Arc;

use prost::Message;
use tonic::Status;

use super::{Shared, client_api::ClientApi};
use crate::{
    cluster::{ForwardedAnswer, ForwardedCall},
    error::Error,
    pb,
};

/// Supersedes the streams of sessions that another node took over.
pub(super) async fn supersede_moved_sessions(shared: Arc<Shared>) {
    let sessions = shared.channels.sessions().clone();
    let Some(mut opened_elsewhere) = sessions.cluster().and_then(|c| c.opened_elsewhere()) else {
        return;
    };
    loop {
        let session_id = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            opened = opened_elsewhere.recv() => match opened {
                Some(session_id) => session_id,
                None => return,
            },
        };
        sessions.opened_elsewhere(&session_id);
    }
}

/// Runs the calls other nodes forward here, each as if it had come here (interceptors
/// included), never forwarding them again.
pub(super) async fn serve_forwarded_calls(shared: Arc<Shared>) {
    let Some(mut incoming) = shared
        .channels
        .sessions()
        .cluster()
        .and_then(|cluster| cluster.incoming())
    else {
        return;
    };
    let client = Arc::new(ClientApi::new(shared.clone()));
    loop {
        let incoming = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            call = incoming.recv() => match call {
                Some(call) => call,
                None => return,
            },
        };
        let (client, shared) = (client.clone(), shared.clone());
        tokio::spawn(async move {
            let answer = run(&client, &shared, incoming.call).await;
            let _ = incoming.answer.send(answer);
        });
    }
}

async fn run(client: &ClientApi, shared: &Shared, call: ForwardedCall) -> ForwardedAnswer {
    let sessions = shared.channels.sessions();
    match call {
        ForwardedCall::RefreshToken(request) => client
            .refresh_here(request)
            .await
            .map(|response| response.encode_to_vec()),
        ForwardedCall::Invoke(request) => client
            .invoke_here(request)
            .await
            .map(|response| response.encode_to_vec()),
        ForwardedCall::Disconnect(request) => sessions
            .disconnect(&request.channel, &request.session_id, request.revoke)
            .map(|was_live| pb::DisconnectResponse { was_live }.encode_to_vec())
            .map_err(|not_found| Status::from(Error::from(not_found))),
        ForwardedCall::DisconnectAll(request) => {
            let disconnected = sessions.disconnect_all(&request.channel, request.revoke) as u64;
            Ok(pb::DisconnectAllResponse { disconnected }.encode_to_vec())
        }
    }
}
