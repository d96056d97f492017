//! Country routes as Gateway API HTTPRoutes: the built object in full, and the calls that
//! publish and withdraw it, against kube's `tower-test` mock.

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use meridian_crds::Country;
use meridian_operator::backends::gateway::{Gateway, GatewayConfig, GatewayError, http_route};
use serde_json::{Value, json};

mod scripted;
use scripted::{ApiServer, expect, not_found};

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
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/de/v1/fhir"}}],
                    "backendRefs": [{"name": "records", "port": 8080}]
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/de/v1"}}],
                    "backendRefs": [{"name": "booking", "port": 8080}]
                }
            ]
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

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRouteList", "metadata": {}, "items": items})
}

fn stored(namespace: &str) -> Value {
    let mut route = expected_route();
    route["metadata"]["namespace"] = json!(namespace);
    route
}

const SELECTOR: &str =
    "labelSelector=platform.meridian.dev%2Fcountry%3Dde%2Capp.kubernetes.io%2Fmanaged-by%3Dmeridian-operator";

#[tokio::test]
async fn publishing_applies_the_route_and_removes_a_leftover() {
    let (gateway, mut server) = cluster();
    let de = germany();
    let scenario = async {
        let (_, body) = expect(
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
    let (published, ()) = scripted::against(gateway.publish(&de), scenario).await;
    assert_eq!(published.unwrap(), ["/de/v1"]);
}

/// Answers the listing of Germany's routes with the one in eu-central-1.
async fn germanys_route_listed(server: &mut ApiServer) {
    let routes = list(vec![stored("meridian-region-eu-central-1")]);
    expect(server, Method::GET, ROUTES, &[SELECTOR], 200, routes).await;
}

#[tokio::test]
async fn withdrawing_deletes_the_route_and_a_route_already_gone_is_fine() {
    let (gateway, mut server) = cluster();
    let de = germany();
    let scenario = async {
        germanys_route_listed(&mut server).await;
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
    let (withdrawn, ()) = scripted::against(gateway.withdraw(&de), scenario).await;
    withdrawn.unwrap();
}

/// Germany's publish, answered with the API server's 404 saying `message`.
async fn publish_refused(message: &str) -> GatewayError {
    let (gateway, mut server) = cluster();
    let de = germany();
    let scenario = expect(&mut server, Method::PATCH, DE_ROUTE, &[], 404, not_found(message));
    let (published, _) = scripted::against(gateway.publish(&de), scenario).await;
    published.unwrap_err()
}

#[tokio::test]
async fn a_cluster_without_the_gateway_api_is_told_how_to_install_it() {
    let err = publish_refused("the server could not find the requested resource").await;
    assert!(matches!(err, GatewayError::NotInstalled), "{err}");
    assert!(err.to_string().contains("standard-install.yaml"), "{err}");
    assert!(!err.is_missing_namespace());
}

#[tokio::test]
async fn withdrawing_leaves_the_route_of_another_country_with_the_same_code_alone() {
    let (gateway, mut server) = cluster();
    // `de-test`, refused because Germany holds DE, is deleted: Germany's route must stay.
    let mut dupe = germany();
    dupe.metadata.name = Some("de-test".into());
    dupe.metadata.uid = Some("5f0c6c1e-0000-4000-8000-0000000dead1".into());
    // Nothing but the listing is answered: a DELETE would hang and time the test out.
    let scenario = germanys_route_listed(&mut server);
    let (withdrawn, ()) = scripted::against(gateway.withdraw(&dupe), scenario).await;
    withdrawn.unwrap();
}

#[tokio::test]
async fn a_missing_region_namespace_is_told_apart_from_other_failures() {
    let err = publish_refused("namespaces \"meridian-region-eu-central-1\" not found").await;
    assert!(err.is_missing_namespace(), "{err}");
}
