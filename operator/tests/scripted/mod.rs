//! Scripts the Kubernetes API's side of kube's `tower-test` mock, for the tests that check
//! the exact calls a backend makes.

use std::future::Future;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::Handle;

/// The API server's end of the mock.
pub type ApiServer = Handle<Request<Body>, Response<Body>>;

/// How long a scripted exchange may take before the test fails.
const LIMIT: Duration = Duration::from_secs(5);

/// Runs `call` and `scenario` together; both must finish within five seconds.
pub async fn against<C: Future, S: Future>(call: C, scenario: S) -> (C::Output, S::Output) {
    tokio::time::timeout(LIMIT, async { tokio::join!(call, scenario) })
        .await
        .expect("scenario finished in time")
}

/// Expects `method path` with each of the `query` pairs, and answers `status` with
/// `answer` (with the request's own body when `answer` is null); returns the request's
/// query string and body (null when empty).
pub async fn expect(
    server: &mut ApiServer,
    method: Method,
    path: &str,
    query: &[&str],
    status: u16,
    answer: Value,
) -> (String, Value) {
    let (request, reply) = server.next_request().await.expect("a request");
    let (parts, body) = request.into_parts();
    assert_eq!((&parts.method, parts.uri.path()), (&method, path), "unexpected request");
    let sent_query = parts.uri.query().unwrap_or_default().to_string();
    let pairs: Vec<&str> = sent_query.split('&').collect();
    for pair in query {
        assert!(pairs.contains(pair), "{pair} missing from {pairs:?}");
    }
    let bytes = body.collect_bytes().await.unwrap();
    let sent: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let answer = if answer.is_null() { sent.clone() } else { answer };
    reply.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    (sent_query, sent)
}

/// The API server's 404 with `message`.
pub fn not_found(message: &str) -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": "NotFound", "code": 404})
}
