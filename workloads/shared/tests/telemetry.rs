//! The request spans of `meridian_shared::telemetry` reach an OTLP/HTTP collector: one
//! server span per request, named after the route template, in the caller's trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use meridian_shared::telemetry::{LogFormat, Telemetry};
use tower::ServiceExt;

#[test]
fn request_spans_are_exported_in_the_callers_trace() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let kept = received.clone();
    let collector = runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body);
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    // SAFETY: this test is the only one of its binary; nothing else reads the environment.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"));
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    let telemetry = Telemetry::init(LogFormat::Json, "meridian-test", runtime.handle().clone());
    assert!(telemetry.exporting());

    let app = axum::Router::new()
        .route("/{cc}/v1/things/{id}", get(|| async { "thing" }))
        .layer(axum::middleware::from_fn(meridian_shared::telemetry::http_server_span));
    for traceparent in [Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None] {
        let mut request = http::Request::get("/de/v1/things/Zwetschgenbaum");
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = runtime
            .block_on(app.clone().oneshot(request.body(Body::empty()).unwrap()))
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    telemetry.shutdown();

    let bodies = received.lock().unwrap().clone();
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("GET /{cc}/v1/things/{id}").count(), 2, "{text:?}");
    let trace_id = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
    ];
    assert!(all.windows(16).any(|w| w == trace_id), "the caller's trace");
    assert!(!text.contains("Zwetschgenbaum"), "paths stay out of spans");
}
