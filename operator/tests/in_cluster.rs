//! The `inCluster` provider's calls to the Kubernetes API, against kube's `tower-test` mock:
//! the whole stack server-side applied, an orphan removed, the waits for PostgreSQL and
//! OpenSearch, and the two deletion policies.

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use meridian_crds::Region;
use meridian_operator::providers::{InClusterStacks, StackConfig};
use serde_json::{Value, json};

mod scripted;
use scripted::{ApiServer, expect, not_found};

const NS: &str = "meridian-region-eu-central-1";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/meridian-region-eu-central-1-booking";

fn frankfurt() -> Region {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn stacks() -> (InClusterStacks, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        InClusterStacks::new(Client::new(service, "default"), StackConfig::default()),
        handle,
    )
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
            &[],
            404,
            not_found("not found"),
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
            let (_, body) = expect(
                &mut server,
                Method::PATCH,
                path,
                &["fieldManager=meridian-operator", "force=true"],
                200,
                Value::Null,
            )
            .await;
            if body["kind"] == "Secret" && body["metadata"]["name"] == "postgres" {
                password = body["stringData"]["password"].as_str().unwrap().to_string();
            }
        }
        assert_eq!(password.len(), 32, "a generated password");
        // Secrets are never orphans (the roles' Secrets are published by another step).
        for (path, kind, names) in [
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
            let (query, _) = expect(&mut server, Method::GET, &path, &[], 200, list(kind, &names)).await;
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Finstance%3Deu-central-1"),
                "{query}"
            );
            if kind == "Deployment" {
                expect(
                    &mut server,
                    Method::DELETE,
                    &format!("{path}/old-worker"),
                    &[],
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
            &[],
            200,
            list("NetworkPolicy", &["booking", "postgres", "opensearch"]),
        )
        .await;
        expect(
            &mut server,
            Method::GET,
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets/postgres"),
            &[],
            200,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres", "namespace": NS}, "status": {"readyReplicas": 1}}),
        )
        .await;
        password
    };
    let (endpoint, password) = scripted::against(stacks.ensure(&region), scenario).await;
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
            expect(&mut server, Method::DELETE, &path, &[], 404, not_found("not found")).await;
        }
    };
    let recorded = meridian_crds::RegionResources {
        namespace: Some(NS.into()),
        cloud: Vec::new(),
    };
    let (released, ()) = scripted::against(stacks.release(&region, false, &recorded), scenario).await;
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
            expect(&mut server, Method::DELETE, &path, &[], 200, json!({})).await;
        }
        expect(
            &mut server,
            Method::DELETE,
            &format!("/api/v1/namespaces/{NS}"),
            &[],
            200,
            json!({}),
        )
        .await;
    };
    let (released, _) = scripted::against(stacks.release(&region, true, &recorded), scenario).await;
    released.unwrap();

    // A namespace the Region did not record as its own stays, even with Delete: the stack
    // stops as with Retain.
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
            expect(&mut server, Method::DELETE, &path, &[], 200, json!({})).await;
        }
    };
    let unrecorded = meridian_crds::RegionResources::default();
    let (released, ()) = scripted::against(stacks.release(&region, true, &unrecorded), scenario).await;
    released.unwrap();
}

#[tokio::test]
async fn search_waits_for_opensearch_then_answers_with_the_stacks_url() {
    let (stacks, mut server) = stacks();
    let region = frankfurt();
    let path = format!("/apis/apps/v1/namespaces/{NS}/statefulsets/opensearch");
    let statefulset = |ready: i64| json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "opensearch", "namespace": NS}, "status": {"readyReplicas": ready}});
    let scenario = expect(&mut server, Method::GET, &path, &[], 200, statefulset(0));
    let (starting, _) = scripted::against(stacks.search_url(&region), scenario).await;
    let starting = starting.unwrap_err();
    assert_eq!(starting.reason, "SearchStarting");
    assert!(starting.message.contains("opensearch"), "{starting}");
    let scenario = expect(&mut server, Method::GET, &path, &[], 200, statefulset(1));
    let (ready, _) = scripted::against(stacks.search_url(&region), scenario).await;
    assert_eq!(ready.unwrap(), format!("http://opensearch.{NS}.svc:9200"));
}
