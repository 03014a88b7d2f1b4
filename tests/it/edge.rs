//! Everything the single port serves besides the two services' semantics: grpc-web (binary and
//! text) from a plain HTTP/1.1 client, CORS, reflection v1 and v1alpha, health, and graceful
//! shutdown.

use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use durable_iterator::pb::{self, subscribe_response::Kind};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prost::Message;
use serde_json::json;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SUBSCRIBE_PATH: &str = "/durable_iterator.v1.DurableIterator/Subscribe";
const ORIGIN: &str = "http://app.example";

// ---------------------------------------------------------------------------------------------
// grpc-web over HTTP/1.1
// ---------------------------------------------------------------------------------------------

/// The two grpc-web wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Frames as they are: `application/grpc-web+proto`.
    Binary,
    /// Frames in base64: `application/grpc-web-text`.
    Text,
}

impl Mode {
    fn request_content_type(self) -> &'static str {
        match self {
            Mode::Binary => "application/grpc-web+proto",
            Mode::Text => "application/grpc-web-text",
        }
    }

    fn response_content_type(self) -> &'static str {
        match self {
            Mode::Binary => "application/grpc-web+proto",
            Mode::Text => "application/grpc-web-text+proto",
        }
    }
}

/// An HTTP/1.1-only client (no HTTP/2 support is compiled into the dev-dependency), like a
/// browser's `fetch` behind an HTTP/1.1 proxy.
fn http1_client<B>() -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// One length-prefixed gRPC message: flag 0 (uncompressed), big-endian length, the message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let message = message.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// POSTs one message to `path` as grpc-web and returns the response with its body unread.
async fn grpc_web_call(
    server: &TestServer,
    mode: Mode,
    path: &str,
    message: &impl Message,
    origin: Option<&str>,
) -> Response<Incoming> {
    let frame = grpc_frame(message);
    let body = match mode {
        Mode::Binary => frame,
        Mode::Text => base64::engine::general_purpose::STANDARD
            .encode(frame)
            .into_bytes(),
    };
    grpc_web_post(server, mode, path, body, origin).await
}

/// POSTs `body` as it is to `path` as a grpc-web request.
async fn grpc_web_post(
    server: &TestServer,
    mode: Mode,
    path: &str,
    body: Vec<u8>,
    origin: Option<&str>,
) -> Response<Incoming> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{path}", server.addr))
        .header(header::CONTENT_TYPE, mode.request_content_type())
        .header("x-grpc-web", "1")
        .header(header::ACCEPT, mode.request_content_type());
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), http1_client().request(request))
        .await
        .expect("response headers within 20 s")
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    response
}

/// A grpc-web response body, parsed frame by frame as its bytes arrive.
struct GrpcWebBody {
    body: Incoming,
    mode: Mode,
    /// Base64 text not yet decoded (text mode): less than one 4-character quantum.
    text: Vec<u8>,
    /// Decoded bytes not yet parsed into a whole frame.
    bytes: BytesMut,
}

/// One grpc-web frame of a response.
#[derive(Debug)]
enum WebFrame {
    Message(Bytes),
    /// The trailer frame (flag 0x80): `name: value` lines.
    Trailers(HeaderMap),
}

impl GrpcWebBody {
    fn new(response: Response<Incoming>, mode: Mode) -> Self {
        Self {
            body: response.into_body(),
            mode,
            text: Vec::new(),
            bytes: BytesMut::new(),
        }
    }

    /// The next frame; `None` when the body ended cleanly after whole frames. Bounded in time
    /// like `common::next`.
    async fn next_frame(&mut self) -> Option<WebFrame> {
        loop {
            if let Some(frame) = self.parse_frame() {
                return Some(frame);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .expect("no grpc-web frame within 20 s");
            match chunk {
                None => {
                    assert!(
                        self.bytes.is_empty() && self.text.is_empty(),
                        "body ended inside a frame: {:?} {:?}",
                        self.bytes,
                        self.text
                    );
                    return None;
                }
                Some(chunk) => {
                    let chunk = chunk.expect("body chunk");
                    // Over HTTP/1.1 grpc-web has no HTTP trailers: they are the 0x80 frame.
                    let data = chunk.into_data().expect("only data frames over HTTP/1.1");
                    self.push(&data);
                }
            }
        }
    }

    /// Adds received body bytes. Text mode: tonic-web encodes every chunk on its own, padding
    /// included, so the body is a concatenation of padded base64 strings. Every 4-character
    /// quantum decodes on its own (padding only ever ends a quantum), so decoding quantum by
    /// quantum handles any chunking, on either side.
    fn push(&mut self, data: &[u8]) {
        match self.mode {
            Mode::Binary => self.bytes.extend_from_slice(data),
            Mode::Text => {
                self.text.extend_from_slice(data);
                let whole = self.text.len() / 4 * 4;
                for quantum in self.text[..whole].chunks(4) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(quantum)
                        .unwrap_or_else(|e| panic!("bad base64 quantum {quantum:?}: {e}"));
                    self.bytes.extend_from_slice(&decoded);
                }
                self.text.drain(..whole);
            }
        }
    }

    fn parse_frame(&mut self) -> Option<WebFrame> {
        if self.bytes.len() < 5 {
            return None;
        }
        let flag = self.bytes[0];
        let len = u32::from_be_bytes(self.bytes[1..5].try_into().unwrap()) as usize;
        if self.bytes.len() < 5 + len {
            return None;
        }
        self.bytes.advance(5);
        let payload = self.bytes.split_to(len).freeze();
        match flag {
            0x00 => Some(WebFrame::Message(payload)),
            0x80 => Some(WebFrame::Trailers(parse_trailers(&payload))),
            other => panic!("unexpected grpc-web frame flag {other:#04x}"),
        }
    }

    /// The next message, decoded as a `SubscribeResponse`; panics on trailers or the end.
    async fn next_message(&mut self) -> Kind {
        match self.next_frame().await {
            Some(WebFrame::Message(bytes)) => pb::SubscribeResponse::decode(bytes)
                .expect("a SubscribeResponse")
                .kind
                .expect("message has a kind"),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The trailer frame, which must come next and be the last frame of the body.
    async fn trailers(&mut self) -> HeaderMap {
        let trailers = match self.next_frame().await {
            Some(WebFrame::Trailers(trailers)) => trailers,
            other => panic!("expected the trailer frame, got {other:?}"),
        };
        assert!(self.next_frame().await.is_none(), "frames after trailers");
        trailers
    }
}

/// The trailer frame's payload: HTTP/1-style header lines.
fn parse_trailers(payload: &[u8]) -> HeaderMap {
    let text = std::str::from_utf8(payload).expect("trailers are text");
    let mut trailers = HeaderMap::new();
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad trailer line {line:?}"));
        trailers.append(
            header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    trailers
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decode(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' && tail.len() >= 2 {
            let hex = std::str::from_utf8(&tail[..2]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).expect("percent escape"));
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).expect("grpc-message is UTF-8")
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

/// Subscribes over grpc-web, reads `Subscribed`, then publishes over normal gRPC while the
/// HTTP/1.1 response is still open and reads the event from it: the response streams, it is
/// not buffered until the call ends.
async fn grpc_web_subscribe_streams_live_events(mode: Mode) {
    let server = TestServer::start().await;
    let response = grpc_web_call(
        &server,
        mode,
        SUBSCRIBE_PATH,
        &subscribe_request(server.token("web")),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(response.headers(), "content-type"),
        Some(mode.response_content_type())
    );
    let mut body = GrpcWebBody::new(response, mode);
    let subscribed = match body.next_message().await {
        Kind::Subscribed(subscribed) => subscribed,
        other => panic!("first message is not Subscribed: {other:?}"),
    };
    assert_eq!(subscribed.channel, "web");
    assert_eq!(subscribed.session_id.len(), 22);

    for n in 0..2 {
        let id = server.publish("web", json!({ "n": n })).await;
        match body.next_message().await {
            Kind::Event(event) => {
                assert_eq!(event.id, id);
                assert_eq!(payload(&event), json!({ "n": n }));
            }
            other => panic!("expected event {n}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn grpc_web_binary_over_http1_streams_subscribed_then_live_events() {
    grpc_web_subscribe_streams_live_events(Mode::Binary).await;
}

#[tokio::test]
async fn grpc_web_text_over_http1_streams_subscribed_then_live_events() {
    grpc_web_subscribe_streams_live_events(Mode::Text).await;
}

/// A grpc-web call that fails before streaming is a trailers-only response: grpc-status may be
/// in the response headers or in a trailer frame; either way it must be UNAUTHENTICATED.
async fn grpc_web_status(response: Response<Incoming>, mode: Mode) -> (Code, String) {
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "grpc-web errors are HTTP 200"
    );
    let headers = response.headers().clone();
    let status_from = |map: &HeaderMap| {
        header_str(map, "grpc-status").map(|code| {
            (
                Code::from_i32(code.parse().unwrap()),
                percent_decode(header_str(map, "grpc-message").unwrap_or_default()),
            )
        })
    };
    if let Some(status) = status_from(&headers) {
        return status;
    }
    let trailers = GrpcWebBody::new(response, mode).trailers().await;
    status_from(&trailers).unwrap_or_else(|| panic!("no grpc-status in {trailers:?}"))
}

#[tokio::test]
async fn grpc_web_subscribe_with_a_garbage_token_is_unauthenticated() {
    let server = TestServer::start().await;
    for mode in [Mode::Binary, Mode::Text] {
        let response = grpc_web_call(
            &server,
            mode,
            SUBSCRIBE_PATH,
            &subscribe_request("garbage".into()),
            None,
        )
        .await;
        let (code, message) = grpc_web_status(response, mode).await;
        assert_eq!(code, Code::Unauthenticated, "{mode:?}: {message}");
        assert_eq!(message, "malformed token: no signature part", "{mode:?}");
    }
}

#[tokio::test]
async fn grpc_web_text_that_does_not_decode_gets_the_same_status_from_every_call() {
    let server = TestServer::start().await;
    let garbage = b"!!!!not base64".to_vec();
    let subscribe = grpc_web_post(&server, Mode::Text, SUBSCRIBE_PATH, garbage.clone(), None);
    let (code, message) = grpc_web_status(subscribe.await, Mode::Text).await;
    let refresh = grpc_web_post(
        &server,
        Mode::Text,
        "/durable_iterator.v1.DurableIterator/RefreshToken",
        garbage,
        None,
    );
    // `Subscribe` is served apart from the generated handlers (server/subscribe_service.rs): it reports a
    // body it cannot read as they do.
    assert_eq!(
        (code, message),
        grpc_web_status(refresh.await, Mode::Text).await
    );
    assert_ne!(code, Code::Ok);
}

/// One gRPC message of raw bytes (which need not be valid protobuf).
fn raw_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// A request that does not decode is the caller's fault, on every call alike: INVALID_ARGUMENT
/// naming the message and field, never INTERNAL (which tells a client to retry).
#[tokio::test]
async fn requests_that_do_not_decode_are_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    // PublishRequest.tags (field 4, a StringList) holding one value (field 1) that is not UTF-8.
    let bad_tag = [0x22, 0x03, 0x0a, 0x01, 0xff];
    // PublishRequest.json (field 2): a google.protobuf.Value of 10,000 nested lists.
    let mut nested = vec![0x1a, 0x00]; // Value.list_value, empty
    for _ in 0..10_000 {
        // ListValue.values (field 1) holding the Value so far, wrapped as Value.list_value.
        let mut list = vec![0x0a];
        prost::encoding::encode_varint(nested.len() as u64, &mut list);
        list.extend_from_slice(&nested);
        let mut value = vec![0x32];
        prost::encoding::encode_varint(list.len() as u64, &mut value);
        value.extend_from_slice(&list);
        nested = value;
    }
    let mut deep = vec![0x12];
    prost::encoding::encode_varint(nested.len() as u64, &mut deep);
    deep.extend_from_slice(&nested);
    let truncated = [0x0a, 0x10, b'x'];
    let publish = "/durable_iterator.v1.DurableIteratorAdmin/Publish";
    let cases: [(&str, &[u8], &str); 4] = [
        (publish, &bad_tag, "tags"),
        (publish, &deep, "recursion limit"),
        (SUBSCRIBE_PATH, &truncated, "SubscribeRequest"),
        (
            "/durable_iterator.v1.DurableIterator/Invoke",
            &truncated,
            "InvokeRequest",
        ),
    ];
    for (path, body, names) in cases {
        let response = grpc_web_post(&server, Mode::Binary, path, raw_frame(body), None).await;
        let (code, message) = grpc_web_status(response, Mode::Binary).await;
        assert_eq!(code, Code::InvalidArgument, "{path}: {message}");
        assert!(message.contains("does not decode"), "{path}: {message}");
        assert!(message.contains(names), "{path}: {message}");
    }
}

/// A browser opening the port (to accept a development certificate, say) gets a line of text,
/// not an empty download of an `application/grpc` answer.
#[tokio::test]
async fn a_get_of_the_port_answers_in_plain_text() {
    let server = TestServer::start().await;
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{}/", server.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), http1_client().request(request))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_str(response.headers(), "content-type"),
        Some("text/plain; charset=utf-8")
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("durable-iterator"));
}

// ---------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cors_preflight_allows_the_origin_and_grpc_web_headers() {
    let server = TestServer::start().await;
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{}{SUBSCRIBE_PATH}", server.addr))
        .header(header::ORIGIN, ORIGIN)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,x-grpc-web,authorization",
        )
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = http1_client().request(request).await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
    let headers = response.headers();
    assert_eq!(
        header_str(headers, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let allowed_methods = header_str(headers, "access-control-allow-methods").unwrap();
    assert!(allowed_methods.contains("POST"), "{allowed_methods}");
    let allowed_headers = header_str(headers, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    let allowed_headers: Vec<&str> = allowed_headers.split(',').map(str::trim).collect();
    for wanted in ["content-type", "x-grpc-web", "authorization"] {
        assert!(allowed_headers.contains(&wanted), "{allowed_headers:?}");
    }
}

#[tokio::test]
async fn cors_grpc_web_response_exposes_the_grpc_status_headers() {
    let server = TestServer::start().await;
    let response = grpc_web_call(
        &server,
        Mode::Binary,
        SUBSCRIBE_PATH,
        &subscribe_request(server.token("web")),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        header_str(headers, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let exposed = header_str(headers, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    let exposed: Vec<&str> = exposed.split(',').map(str::trim).collect();
    for wanted in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(&wanted), "{exposed:?}");
    }
    // And the stream itself works for the cross-origin caller.
    let mut body = GrpcWebBody::new(response, Mode::Binary);
    assert!(matches!(body.next_message().await, Kind::Subscribed(_)));
}

// ---------------------------------------------------------------------------------------------
// Reflection
// ---------------------------------------------------------------------------------------------

/// The same checks for both reflection versions, whose generated types are distinct but alike.
macro_rules! reflection_test {
    ($name:ident, $version:ident) => {
        #[tokio::test]
        async fn $name() {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };

            let server = TestServer::start().await;
            let mut client = ServerReflectionClient::new(server.channel());
            let mut ask = async |request: MessageRequest| {
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                };
                let mut responses = client
                    .server_reflection_info(futures::stream::iter([request]))
                    .await
                    .unwrap()
                    .into_inner();
                tokio::time::timeout(Duration::from_secs(20), responses.message())
                    .await
                    .expect("a reflection answer within 20 s")
                    .unwrap()
                    .expect("one response")
                    .message_response
                    .expect("a message response")
            };

            let services = match ask(MessageRequest::ListServices(String::new())).await {
                MessageResponse::ListServicesResponse(list) => list
                    .service
                    .into_iter()
                    .map(|service| service.name)
                    .collect::<Vec<_>>(),
                other => panic!("expected ListServicesResponse, got {other:?}"),
            };
            for wanted in [
                "durable_iterator.v1.DurableIterator",
                "durable_iterator.v1.DurableIteratorAdmin",
                "grpc.health.v1.Health",
            ] {
                assert!(services.iter().any(|s| s == wanted), "{services:?}");
            }

            let files = match ask(MessageRequest::FileContainingSymbol(
                "durable_iterator.v1.DurableIterator".into(),
            ))
            .await
            {
                MessageResponse::FileDescriptorResponse(files) => files.file_descriptor_proto,
                other => panic!("expected FileDescriptorResponse, got {other:?}"),
            };
            let files: Vec<prost_types::FileDescriptorProto> = files
                .iter()
                .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
                .collect();
            let contract = files
                .iter()
                .find(|file| file.package() == "durable_iterator.v1")
                .unwrap_or_else(|| panic!("no durable_iterator.v1 file in {files:?}"));
            assert_eq!(
                contract.name(),
                "durable_iterator/v1/durable_iterator.proto"
            );
            let service = contract
                .service
                .iter()
                .find(|service| service.name() == "DurableIterator")
                .expect("the file names the DurableIterator service");
            let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
            assert_eq!(methods, ["Subscribe", "Invoke", "RefreshToken"]);
        }
    };
}

reflection_test!(reflection_v1_lists_services_and_serves_the_contract, v1);
reflection_test!(
    reflection_v1alpha_lists_services_and_serves_the_contract,
    v1alpha
);

// ---------------------------------------------------------------------------------------------
// Health and graceful shutdown
// ---------------------------------------------------------------------------------------------

const CLIENT_SERVICE: &str = "durable_iterator.v1.DurableIterator";
const ADMIN_SERVICE: &str = "durable_iterator.v1.DurableIteratorAdmin";

fn health_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn health_reports_the_server_and_both_services_serving() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    for service in ["", CLIENT_SERVICE, ADMIN_SERVICE] {
        let status = health
            .check(health_request(service))
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn health_watch_sees_not_serving_when_the_server_stops() {
    let mut server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    let mut watch = health
        .watch(health_request(CLIENT_SERVICE))
        .await
        .unwrap()
        .into_inner();
    let mut next_status = async || {
        tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("a health update within 20 s")
    };
    assert_eq!(
        next_status().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    // The watch is still open while the server stops: stopping must not wait for it forever,
    // and it must see NOT_SERVING before it ends.
    let ((), seen) = tokio::join!(server.stop(), async {
        let mut seen = Vec::new();
        loop {
            match next_status().await {
                Ok(Some(update)) => seen.push(update.status()),
                Ok(None) => return (seen, None),
                Err(status) => return (seen, Some(status)),
            }
        }
    });
    let (statuses, end) = seen;
    assert_eq!(statuses, [ServingStatus::NotServing], "ended with {end:?}");
    let end = end.expect("the watch ends with a status");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
}

#[tokio::test]
async fn stopping_ends_open_streams_with_unavailable_after_delivering_what_was_published() {
    let mut server = TestServer::start().await;
    let (_, mut stream) = server
        .subscribe(subscribe_request(server.token("room")))
        .await
        .unwrap();
    let published = server.publish("room", json!("before stop")).await;
    // `stop` returns (the stream does not hold the server open) while the stream is read
    // concurrently, as a real client would.
    let ((), (event, message)) = tokio::join!(server.stop(), async {
        let event = next_event(&mut stream).await;
        (event, expect_end(&mut stream, Code::Unavailable).await)
    });
    assert_eq!(event.id, published);
    assert_eq!(payload(&event), json!("before stop"));
    assert!(message.contains("reconnect"), "{message}");
    assert!(message.contains("resume from last id"), "{message}");
}

#[tokio::test]
async fn stopping_ends_grpc_web_streams_with_an_unavailable_trailer_frame() {
    let mut server = TestServer::start().await;
    let response = grpc_web_call(
        &server,
        Mode::Binary,
        SUBSCRIBE_PATH,
        &subscribe_request(server.token("web")),
        None,
    )
    .await;
    let mut body = GrpcWebBody::new(response, Mode::Binary);
    assert!(matches!(body.next_message().await, Kind::Subscribed(_)));
    // Over HTTP/1.1 the end of the stream is the trailer frame, then the end of the body.
    let ((), trailers) = tokio::join!(server.stop(), body.trailers());
    assert_eq!(
        header_str(&trailers, "grpc-status"),
        Some("14"),
        "{trailers:?}"
    );
    let message = percent_decode(header_str(&trailers, "grpc-message").unwrap());
    assert_eq!(
        message,
        "server shutting down, reconnect and resume from last id"
    );
}
