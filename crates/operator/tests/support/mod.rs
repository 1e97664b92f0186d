//! What the tower-test verifier tests share: a real `kube::Client` over a
//! `tower_test` mock service, reading each request and answering it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use sluice_operator::controller::{Context, Metrics};
use tower_test::mock::{Handle, SendResponse};

/// The API server's side of the mock.
pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A client whose every request arrives at the returned handle.
pub fn mock() -> (Client, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// The next request, with its body as JSON (`Null` when empty).
pub async fn next(handle: &mut ApiHandle) -> (Method, String, Value, SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("an API call within 5 s")
        .expect("the client is alive");
    read(request, send).await
}

/// A request's method, URI and JSON body (`Null` when empty).
pub async fn read(
    request: Request<Body>,
    send: SendResponse<Response<Body>>,
) -> (Method, String, Value, SendResponse<Response<Body>>) {
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, body, send)
}

/// Answers with `status` and `body`.
pub fn answer(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

/// The API server's `Status` body for `code`.
pub fn failure(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "reason": reason, "code": code, "message": reason})
}

/// A 404 body.
pub fn not_found() -> Value {
    failure(404, "NotFound")
}

/// The reconciler's context over `client`.
pub fn context(client: Client) -> Arc<Context> {
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".into(),
                instance: Some("test".into()),
            },
        ),
        client,
        metrics: Metrics::default(),
    })
}
