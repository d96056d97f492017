//! Country routes as Gateway API HTTPRoutes: the built object in full, and the calls that
//! publish and withdraw it, against kube's `tower-test` mock.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use meridian_crds::Country;
use meridian_operator::backends::gateway::{Gateway, GatewayConfig, GatewayError, http_route};
use serde_json::{Value, json};
use tower_test::mock::Handle;

const LIMIT: Duration = Duration::from_secs(5);
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const DE_ROUTE: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/meridian-region-eu-central-1/httproutes/country-de";

fn germany() -> Country {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/countries/de.yaml");
    let mut de: Country = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    de.metadata.uid = Some("5f0c6c1e-0000-4000-8000-00000000de01".into());
    de
}

fn expected_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "country-de",
            "namespace": "meridian-region-eu-central-1",
            "labels": {
                "app.kubernetes.io/name": "meridian-booking",
                "app.kubernetes.io/instance": "de",
                "app.kubernetes.io/managed-by": "meridian-operator",
                "platform.meridian.dev/country": "de"
            },
            "ownerReferences": [{
                "apiVersion": "platform.meridian.dev/v1alpha1",
                "kind": "Country",
                "name": "de",
                "uid": "5f0c6c1e-0000-4000-8000-00000000de01",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "parentRefs": [{
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "meridian",
                "namespace": "meridian-system"
            }],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/de/v1"}}],
                "backendRefs": [{"name": "booking", "port": 8080}]
            }]
        }
    })
}

#[test]
fn the_route_of_germany_in_full() {
    let route = http_route(&germany(), &GatewayConfig::default()).unwrap();
    assert_eq!(serde_json::to_value(&route).unwrap(), expected_route());
    let mut unsaved = germany();
    unsaved.metadata.uid = None;
    assert!(matches!(
        http_route(&unsaved, &GatewayConfig::default()),
        Err(GatewayError::NotStored(_))
    ));
}

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn cluster() -> (Gateway, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    (
        Gateway::Cluster {
            client,
            config: GatewayConfig::default(),
        },
        handle,
    )
}

/// Expects `method path`, checks its query holds `query` pairs, answers `status` `answer`;
/// returns the request body.
async fn expect(
    server: &mut ApiServer,
    method: Method,
    path: &str,
    query: &[&str],
    status: u16,
    answer: Value,
) -> Value {
    let (request, reply) = server.next_request().await.expect("a request");
    let (parts, body) = request.into_parts();
    assert_eq!((&parts.method, parts.uri.path()), (&method, path), "unexpected request");
    let pairs: Vec<&str> = parts.uri.query().unwrap_or_default().split('&').collect();
    for pair in query {
        assert!(pairs.contains(pair), "{pair} missing from {pairs:?}");
    }
    let bytes = body.collect_bytes().await.unwrap();
    reply.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRouteList", "metadata": {}, "items": items})
}

fn stored(namespace: &str) -> Value {
    let mut route = expected_route();
    route["metadata"]["namespace"] = json!(namespace);
    route
}

fn not_found(message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": "NotFound", "code": 404})
}

const SELECTOR: &str =
    "labelSelector=platform.meridian.dev%2Fcountry%3Dde%2Capp.kubernetes.io%2Fmanaged-by%3Dmeridian-operator";

#[tokio::test]
async fn publishing_applies_the_route_and_removes_a_leftover() {
    let (gateway, mut server) = cluster();
    let de = germany();
    let scenario = async {
        let body = expect(
            &mut server,
            Method::PATCH,
            DE_ROUTE,
            &["fieldManager=meridian-operator", "force=true"],
            200,
            expected_route(),
        )
        .await;
        assert_eq!(body, expected_route(), "server-side apply of the whole route");
        expect(
            &mut server,
            Method::GET,
            ROUTES,
            &[SELECTOR],
            200,
            list(vec![
                stored("meridian-region-eu-central-1"),
                stored("meridian-region-old"),
            ]),
        )
        .await;
        expect(
            &mut server,
            Method::DELETE,
            "/apis/gateway.networking.k8s.io/v1/namespaces/meridian-region-old/httproutes/country-de",
            &[],
            200,
            stored("meridian-region-old"),
        )
        .await;
    };
    let (published, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(gateway.publish(&de), scenario) })
        .await
        .expect("scenario finished in time");
    assert_eq!(published.unwrap(), ["/de/v1"]);
}

#[tokio::test]
async fn withdrawing_deletes_the_route_and_a_route_already_gone_is_fine() {
    let (gateway, mut server) = cluster();
    let de = germany();
    let scenario = async {
        expect(
            &mut server,
            Method::GET,
            ROUTES,
            &[SELECTOR],
            200,
            list(vec![stored("meridian-region-eu-central-1")]),
        )
        .await;
        expect(
            &mut server,
            Method::DELETE,
            DE_ROUTE,
            &[],
            404,
            not_found("httproutes.gateway.networking.k8s.io \"country-de\" not found"),
        )
        .await;
    };
    let (withdrawn, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(gateway.withdraw(&de), scenario) })
        .await
        .expect("scenario finished in time");
    withdrawn.unwrap();
}

#[tokio::test]
async fn a_cluster_without_the_gateway_api_is_told_how_to_install_it() {
    let (gateway, mut server) = cluster();
    let de = germany();
    let scenario = expect(
        &mut server,
        Method::PATCH,
        DE_ROUTE,
        &[],
        404,
        not_found("the server could not find the requested resource"),
    );
    let (published, _) = tokio::time::timeout(LIMIT, async { tokio::join!(gateway.publish(&de), scenario) })
        .await
        .expect("scenario finished in time");
    let err = published.unwrap_err();
    assert!(matches!(err, GatewayError::NotInstalled), "{err}");
    assert!(err.to_string().contains("standard-install.yaml"), "{err}");
}
