//! gzip and zstd: compressed requests are accepted by every call, `Subscribe` included, and a
//! client that accepts one gets compressed answers; large events are compressed, small ones
//! sent as they are (each message says which).

use durable_iterator::pb::{
    self, durable_iterator_admin_client::DurableIteratorAdminClient,
    durable_iterator_client::DurableIteratorClient, subscribe_response::Kind,
};
use serde_json::json;
use tonic::codec::CompressionEncoding::{self, Gzip, Zstd};

use crate::common::*;

#[tokio::test]
async fn every_call_accepts_gzip_and_answers_with_it() {
    every_call_accepts_and_answers_with(Gzip, "gzip").await;
}

#[tokio::test]
async fn every_call_accepts_zstd_and_answers_with_it() {
    every_call_accepts_and_answers_with(Zstd, "zstd").await;
}

async fn every_call_accepts_and_answers_with(encoding: CompressionEncoding, name: &str) {
    let server = TestServer::start().await;
    let mut client = DurableIteratorClient::new(server.channel())
        .send_compressed(encoding)
        .accept_compressed(encoding);
    let mut admin = DurableIteratorAdminClient::new(server.channel())
        .send_compressed(encoding)
        .accept_compressed(encoding);

    let response = client
        .subscribe(subscribe_request(server.token("zipped")))
        .await
        .unwrap();
    assert_eq!(
        response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some(name)
    );
    let mut stream = response.into_inner();
    let subscribed = match next(&mut stream).await.unwrap() {
        Kind::Subscribed(subscribed) => subscribed,
        other => panic!("expected Subscribed, got {other:?}"),
    };

    // Small and large events, one at a time and in one batch: all arrive, in order, intact.
    let large = "x".repeat(20_000);
    let payloads = [json!("small"), json!(large), json!({"n": 3})];
    let mut ids = Vec::new();
    for payload in &payloads[..2] {
        let published = admin
            .publish(authorized(publish_request("zipped", payload.clone())))
            .await
            .unwrap();
        ids.push(published.into_inner().id);
    }
    let batch = admin
        .publish_batch(authorized(pb::PublishBatchRequest {
            events: vec![
                publish_request("zipped", payloads[2].clone()),
                publish_request("zipped", json!(large)),
            ],
        }))
        .await
        .unwrap();
    ids.extend(batch.into_inner().ids);
    let expected = [
        payloads[0].clone(),
        payloads[1].clone(),
        payloads[2].clone(),
        json!(large),
    ];
    for (id, payload) in ids.iter().zip(&expected) {
        let event = next_event(&mut stream).await;
        assert_eq!(&event.id, id);
        assert_eq!(&crate::common::payload(&event), payload);
    }

    // Invoke and RefreshToken answer compressed calls too (the relay needs `rpc: publish`).
    let mut claims = server.claims("zipped");
    claims.rpc = Some(vec!["publish".into()]);
    let invoked = client
        .invoke(pb::InvokeRequest {
            token: server.sign(&claims),
            session_ticket: Some(subscribed.session_ticket.clone()),
            path: vec!["publish".into()],
            input: Some(durable_iterator::json::to_proto(
                &json!({"payload": "via invoke"}),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(invoked.output.is_some());
    let refreshed = client
        .refresh_token(pb::RefreshTokenRequest {
            session_ticket: subscribed.session_ticket,
            token: server.token("zipped"),
        })
        .await
        .unwrap();
    assert!(refreshed.into_inner().token_expires_at > 0);
}

#[tokio::test]
async fn a_client_that_does_not_accept_gzip_gets_no_gzip() {
    let server = TestServer::start().await;
    let mut client = DurableIteratorClient::new(server.channel()).send_compressed(Gzip);
    let response = client
        .subscribe(subscribe_request(server.token("plain")))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("grpc-encoding"), None);
    let mut stream = response.into_inner();
    assert!(matches!(next(&mut stream).await, Ok(Kind::Subscribed(_))));
    let large = "y".repeat(20_000);
    let id = server.publish("plain", json!(large)).await;
    let event = next_event(&mut stream).await;
    assert_eq!(event.id, id);
    assert_eq!(crate::common::payload(&event), json!(large));
}
