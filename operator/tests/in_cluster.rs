//! The `inCluster` provider's calls to the Kubernetes API, against kube's `tower-test` mock:
//! the whole stack server-side applied, an orphan removed, the waits for PostgreSQL and
//! OpenSearch, and the two deletion policies.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use meridian_crds::Region;
use meridian_operator::providers::{InClusterStacks, StackConfig};
use serde_json::{Value, json};
use tower_test::mock::Handle;

const LIMIT: Duration = Duration::from_secs(5);
const NS: &str = "meridian-region-eu-central-1";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/meridian-region-eu-central-1-booking";

fn frankfurt() -> Region {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn stacks() -> (InClusterStacks, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        InClusterStacks::new(Client::new(service, "default"), StackConfig::default()),
        handle,
    )
}

/// Expects `method path`, answers `status` with `answer` (or the request body when
/// `answer` is null); returns the request's query and body.
async fn expect(server: &mut ApiServer, method: Method, path: &str, status: u16, answer: Value) -> (String, Value) {
    let (request, reply) = server.next_request().await.expect("a request");
    let (parts, body) = request.into_parts();
    assert_eq!((&parts.method, parts.uri.path()), (&method, path), "unexpected request");
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
    (parts.uri.query().unwrap_or_default().to_string(), sent)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "not found", "reason": "NotFound", "code": 404})
}

fn list(kind: &str, names: &[&str]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|n| json!({"metadata": {"name": n, "namespace": NS}}))
        .collect();
    json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {}, "items": items})
}

#[tokio::test]
async fn the_stack_is_applied_an_orphan_removed_and_postgres_awaited() {
    let (stacks, mut server) = stacks();
    let region = frankfurt();
    let scenario = async {
        expect(
            &mut server,
            Method::GET,
            &format!("/api/v1/namespaces/{NS}/secrets/postgres"),
            404,
            not_found(),
        )
        .await;
        let applied = [
            "/api/v1/namespaces/meridian-region-eu-central-1".to_string(),
            format!("/api/v1/namespaces/{NS}/secrets/postgres"),
            format!("/api/v1/namespaces/{NS}/services/postgres"),
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
            format!("/api/v1/namespaces/{NS}/secrets/search"),
            format!("/api/v1/namespaces/{NS}/services/opensearch"),
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch"),
            format!("/api/v1/namespaces/{NS}/serviceaccounts/booking"),
            BINDING.to_string(),
            format!("/apis/apps/v1/namespaces/{NS}/deployments/booking"),
            format!("/api/v1/namespaces/{NS}/services/booking"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/booking"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/postgres"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/opensearch"),
        ];
        let mut password = String::new();
        for path in &applied {
            let (query, body) = expect(&mut server, Method::PATCH, path, 200, Value::Null).await;
            assert!(
                query.contains("fieldManager=meridian-operator") && query.contains("force=true"),
                "{query}"
            );
            if body["kind"] == "Secret" && body["metadata"]["name"] == "postgres" {
                password = body["stringData"]["password"].as_str().unwrap().to_string();
            }
        }
        assert_eq!(password.len(), 32, "a generated password");
        for (path, kind, names) in [
            (
                format!("/api/v1/namespaces/{NS}/secrets"),
                "Secret",
                vec!["postgres", "search"],
            ),
            (
                format!("/api/v1/namespaces/{NS}/services"),
                "Service",
                vec!["postgres", "opensearch", "booking"],
            ),
            (
                format!("/apis/apps/v1/namespaces/{NS}/statefulsets"),
                "StatefulSet",
                vec!["postgres", "opensearch"],
            ),
            (
                format!("/api/v1/namespaces/{NS}/serviceaccounts"),
                "ServiceAccount",
                vec!["booking"],
            ),
            (
                format!("/apis/apps/v1/namespaces/{NS}/deployments"),
                "Deployment",
                vec!["booking", "old-worker"],
            ),
        ] {
            let (query, _) = expect(&mut server, Method::GET, &path, 200, list(kind, &names)).await;
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Finstance%3Deu-central-1"),
                "{query}"
            );
            if kind == "Deployment" {
                expect(
                    &mut server,
                    Method::DELETE,
                    &format!("{path}/old-worker"),
                    200,
                    json!({}),
                )
                .await;
            }
        }
        expect(
            &mut server,
            Method::GET,
            &format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"),
            200,
            list("NetworkPolicy", &["booking", "postgres", "opensearch"]),
        )
        .await;
        expect(
            &mut server,
            Method::GET,
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
            200,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres", "namespace": NS}, "status": {"readyReplicas": 1}}),
        )
        .await;
        password
    };
    let (endpoint, password) = tokio::time::timeout(LIMIT, async { tokio::join!(stacks.ensure(&region), scenario) })
        .await
        .expect("scenario finished in time");
    let endpoint = endpoint.unwrap();
    assert_eq!(
        endpoint.url,
        format!("postgres://meridian:{password}@postgres.{NS}.svc:5432/meridian")
    );
    assert_eq!(endpoint.display, format!("postgres.{NS}.svc:5432/meridian"));
    assert_eq!(
        endpoint.secret.as_deref(),
        Some("meridian-region-eu-central-1/postgres")
    );
}

#[tokio::test]
async fn retain_stops_the_stack_but_keeps_its_data_and_delete_removes_the_namespace() {
    let (stacks, mut server) = stacks();
    let mut region = frankfurt();
    let scenario = async {
        for path in [
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/opensearch"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/postgres"),
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/booking"),
            format!("/api/v1/namespaces/{NS}/services/booking"),
            format!("/apis/apps/v1/namespaces/{NS}/deployments/booking"),
            BINDING.to_string(),
            format!("/api/v1/namespaces/{NS}/serviceaccounts/booking"),
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch"),
            format!("/api/v1/namespaces/{NS}/services/opensearch"),
            format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
            format!("/api/v1/namespaces/{NS}/services/postgres"),
        ] {
            // Already gone is fine.
            expect(&mut server, Method::DELETE, &path, 404, not_found()).await;
        }
    };
    let (released, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(stacks.release(&region, false), scenario) })
        .await
        .expect("scenario finished in time");
    released.unwrap();

    region.spec.deletion_policy = meridian_crds::DeletionPolicy::Delete;
    let scenario = async {
        // The workload first: its ClusterRoleBinding is not inside the namespace.
        for path in [
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/booking"),
            format!("/api/v1/namespaces/{NS}/services/booking"),
            format!("/apis/apps/v1/namespaces/{NS}/deployments/booking"),
            BINDING.to_string(),
            format!("/api/v1/namespaces/{NS}/serviceaccounts/booking"),
        ] {
            expect(&mut server, Method::DELETE, &path, 200, json!({})).await;
        }
        expect(
            &mut server,
            Method::DELETE,
            &format!("/api/v1/namespaces/{NS}"),
            200,
            json!({}),
        )
        .await;
    };
    let (released, _) = tokio::time::timeout(LIMIT, async { tokio::join!(stacks.release(&region, true), scenario) })
        .await
        .expect("scenario finished in time");
    released.unwrap();
}

#[tokio::test]
async fn search_waits_for_opensearch_then_answers_with_the_stacks_url() {
    let (stacks, mut server) = stacks();
    let region = frankfurt();
    let path = format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch");
    let statefulset = |ready: i64| json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "opensearch", "namespace": NS}, "status": {"readyReplicas": ready}});
    let scenario = expect(&mut server, Method::GET, &path, 200, statefulset(0));
    let (starting, _) = tokio::time::timeout(LIMIT, async { tokio::join!(stacks.search_url(&region), scenario) })
        .await
        .expect("scenario finished in time");
    let starting = starting.unwrap_err();
    assert_eq!(starting.reason, "SearchStarting");
    assert!(starting.message.contains("opensearch"), "{starting}");
    let scenario = expect(&mut server, Method::GET, &path, 200, statefulset(1));
    let (ready, _) = tokio::time::timeout(LIMIT, async { tokio::join!(stacks.search_url(&region), scenario) })
        .await
        .expect("scenario finished in time");
    assert_eq!(ready.unwrap(), format!("http://opensearch.{NS}.svc:9200"));
}
