//! The operator's Kubernetes calls, against kube's `tower-test` mock: each test plays the
//! API server's side of one scenario and checks every request the operator sends.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use meridian_crds::{Country, Region};
use meridian_operator::controller::Context;
use meridian_operator::k8s::{KubeContext, LeaderElection, reconcile};
use meridian_operator::providers::{Providers, StaticSecrets};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

/// One request as the API server sees it.
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
    reply: Reply,
}

impl Seen {
    fn answer(self, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.reply.send_response(response);
    }

    /// Answers with the request's own body, as the API server does for a create or patch of `object`.
    fn echo(self, object: Value) {
        self.answer(StatusCode::OK, &object);
    }
}

struct ApiServer {
    handle: Handle,
    /// Reasons of the Events published so far.
    events: Vec<(String, String)>,
}

impl ApiServer {
    /// The next request that is not an Event; Events are recorded and acknowledged.
    async fn next(&mut self) -> Seen {
        loop {
            let (request, reply) = self
                .handle
                .next_request()
                .await
                .expect("the operator sent another request");
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body,
                reply,
            };
            if seen.path == "/apis/events.k8s.io/v1/namespaces/default/events" {
                assert_eq!(seen.method, "POST");
                let (kind, reason) = (
                    seen.body["type"].as_str().unwrap().to_string(),
                    seen.body["reason"].as_str().unwrap().to_string(),
                );
                assert_eq!(seen.body["reportingController"], "meridian-operator");
                self.events.push((kind, reason));
                let body = seen.body.clone();
                seen.echo(body);
                continue;
            }
            return seen;
        }
    }

    async fn expect(&mut self, method: &str, path: &str) -> Seen {
        let seen = self.next().await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (method, path),
            "unexpected request"
        );
        seen
    }

    /// Expects a server-side-apply status patch and returns the status it carries.
    async fn expect_status_patch(&mut self, plural: &str, name: &str, object: &Value) -> Value {
        let seen = self
            .expect(
                "PATCH",
                &format!("/apis/platform.meridian.dev/v1alpha1/{plural}/{name}/status"),
            )
            .await;
        assert!(
            seen.query.contains("fieldManager=meridian-operator") && seen.query.contains("force=true"),
            "{}",
            seen.query
        );
        let status = seen.body["status"].clone();
        let mut merged = object.clone();
        merged["status"] = status.clone();
        seen.echo(merged);
        status
    }
}

fn setup() -> (Arc<KubeContext>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let core = Context::new(Providers::new(None, Arc::new(StaticSecrets::default())));
    (
        Arc::new(KubeContext::new(client, core, "test-replica")),
        ApiServer {
            handle,
            events: Vec::new(),
        },
    )
}

/// Runs the operator side and the API server side together; a missing call fails, not hangs.
async fn scenario<T, F>(operator: impl Future<Output = T>, server: F) -> T
where
    F: Future<Output = ()> + Send + 'static,
{
    let server = tokio::spawn(server);
    let result = tokio::time::timeout(Duration::from_secs(10), operator)
        .await
        .expect("the operator finished in time");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the scenario finished in time")
        .expect("scenario passed");
    result
}

fn country_json(extra_meta: Value) -> Value {
    let mut metadata = json!({"name": "de", "uid": "c-1", "generation": 1, "resourceVersion": "7", "finalizers": ["platform.meridian.dev/cleanup"]});
    metadata
        .as_object_mut()
        .unwrap()
        .extend(extra_meta.as_object().unwrap().clone());
    json!({
        "apiVersion": "platform.meridian.dev/v1alpha1",
        "kind": "Country",
        "metadata": metadata,
        "spec": {
            "code": "DE", "displayName": "Germany", "timezone": "Europe/Berlin", "locale": "de-DE",
            "languages": ["de"], "currency": "EUR", "region": "eu-central-1", "residency": "strict",
            "allowedCloudRegions": ["eu-central-1"],
            "regulatory": {"retentionYears": 10, "minimumAge": 16}
        }
    })
}

fn region_json(isolation: &str, provider: &str) -> Value {
    json!({
        "apiVersion": "platform.meridian.dev/v1alpha1",
        "kind": "Region",
        "metadata": {"name": "eu-central-1", "uid": "r-1", "generation": 1, "resourceVersion": "3", "finalizers": ["platform.meridian.dev/cleanup"]},
        "spec": {"provider": provider, "cloudRegion": "eu-central-1", "isolation": isolation},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    })
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("{kind} \"{name}\" not found")})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status}"))
}

#[tokio::test]
async fn a_new_country_gets_the_finalizer_first() {
    let (ctx, mut api) = setup();
    let mut object = country_json(json!({}));
    object["metadata"].as_object_mut().unwrap().remove("finalizers");
    let country: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(country), ctx), async move {
        let seen = api
            .expect("PATCH", "/apis/platform.meridian.dev/v1alpha1/countries/de")
            .await;
        assert_eq!(
            seen.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["platform.meridian.dev/cleanup"]}
            ])
        );
        seen.echo(object);
    })
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_residency_violation_is_reported_and_touches_no_store() {
    let (ctx, mut api) = setup();
    let object = country_json(json!({}));
    let country: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(country), ctx), async move {
        let seen = api
            .expect("GET", "/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1")
            .await;
        seen.answer(StatusCode::OK, &region_json("shared", "external"));
        let status = api.expect_status_patch("countries", "de", &object).await;
        let residency = condition(&status, "ResidencyCompliant");
        assert_eq!(
            (&residency["status"], &residency["reason"]),
            (&json!("False"), &json!("RegionNotDedicated"))
        );
        assert!(
            residency["message"].as_str().unwrap().contains("spec.residency"),
            "{residency}"
        );
        assert_eq!(residency["observedGeneration"], 1);
        assert_eq!(condition(&status, "Ready")["status"], "False");
        assert!(
            status.get("observedGeneration").is_none(),
            "observedGeneration moves only on success"
        );
        assert!(
            api.events.contains(&("Warning".into(), "RegionNotDedicated".into())),
            "{:?}",
            api.events
        );
    })
    .await;
    assert_eq!(
        action.unwrap(),
        Action::await_change(),
        "an invalid binding waits for a change"
    );
}

#[tokio::test]
async fn a_missing_region_is_named_and_retried() {
    let (ctx, mut api) = setup();
    let object = country_json(json!({}));
    let country: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(country), ctx), async move {
        let seen = api
            .expect("GET", "/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1")
            .await;
        seen.answer(
            StatusCode::NOT_FOUND,
            &not_found("regions.platform.meridian.dev", "eu-central-1"),
        );
        let status = api.expect_status_patch("countries", "de", &object).await;
        let ready = condition(&status, "Ready");
        assert_eq!(ready["reason"], "RegionNotFound");
        assert!(ready["message"].as_str().unwrap().contains("spec.region"), "{ready}");
    })
    .await;
    assert!(matches!(action.unwrap(), a if a != Action::await_change()), "retried");
}

#[tokio::test]
async fn an_abandoned_deletion_removes_the_finalizer_without_touching_stores() {
    let (ctx, mut api) = setup();
    let object = country_json(json!({
        "deletionTimestamp": "2026-11-23T00:00:00Z",
        "annotations": {"platform.meridian.dev/abandon": "true"}
    }));
    let country: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(country), ctx), async move {
        let seen = api
            .expect("GET", "/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1")
            .await;
        seen.answer(
            StatusCode::NOT_FOUND,
            &not_found("regions.platform.meridian.dev", "eu-central-1"),
        );
        let seen = api
            .expect("PATCH", "/apis/platform.meridian.dev/v1alpha1/countries/de")
            .await;
        assert_eq!(
            seen.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "platform.meridian.dev/cleanup"},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])
        );
        assert!(
            api.events.contains(&("Normal".into(), "CleanedUp".into())),
            "{:?}",
            api.events
        );
        seen.echo(object);
    })
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_deletion_that_cannot_reach_its_stores_says_how_to_finish_it() {
    let (ctx, mut api) = setup();
    let object = country_json(json!({"deletionTimestamp": "2026-11-23T00:00:00Z"}));
    let country: Country = serde_json::from_value(object.clone()).unwrap();
    let result = scenario(reconcile(Arc::new(country), ctx), async move {
        let seen = api
            .expect("GET", "/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1")
            .await;
        seen.answer(
            StatusCode::NOT_FOUND,
            &not_found("regions.platform.meridian.dev", "eu-central-1"),
        );
        let status = api.expect_status_patch("countries", "de", &object).await;
        let ready = condition(&status, "Ready");
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("False"), &json!("RegionNotFound"))
        );
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("platform.meridian.dev/abandon"),
            "{ready}"
        );
        assert!(
            api.events.contains(&("Warning".into(), "RegionNotFound".into())),
            "{:?}",
            api.events
        );
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("cleanup blocked"),
        "the finalizer stays: {err}"
    );
}

#[tokio::test]
async fn a_local_region_in_a_cluster_names_the_provider_field() {
    let (ctx, mut api) = setup();
    let mut object = region_json("dedicated", "local");
    object.as_object_mut().unwrap().remove("status");
    let region: Region = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(region), ctx), async move {
        let status = api.expect_status_patch("regions", "eu-central-1", &object).await;
        let db = condition(&status, "DatabaseReady");
        assert_eq!(
            (&db["status"], &db["reason"]),
            (&json!("False"), &json!("ProviderUnavailable"))
        );
        assert!(db["message"].as_str().unwrap().contains("spec.provider"), "{db}");
        assert!(
            api.events
                .iter()
                .any(|(kind, reason)| kind == "Warning" && reason == "ProviderUnavailable")
        );
    })
    .await;
    assert_ne!(action.unwrap(), Action::await_change(), "retried with backoff");
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "meridian-operator", "namespace": "meridian-system", "resourceVersion": "42"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 3}
    })
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/meridian-system/leases/meridian-operator";

fn election(ctx: &KubeContext) -> LeaderElection {
    LeaderElection::new(ctx.client.clone(), "meridian-system", "meridian-operator", "replica-a")
}

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let (ctx, mut api) = setup();
    let won = scenario(async { election(&ctx).try_acquire_or_renew().await }, async move {
        api.expect("GET", LEASE).await.answer(
            StatusCode::NOT_FOUND,
            &not_found("leases.coordination.k8s.io", "meridian-operator"),
        );
        let seen = api
            .expect("POST", "/apis/coordination.k8s.io/v1/namespaces/meridian-system/leases")
            .await;
        assert_eq!(seen.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
        let body = seen.body.clone();
        seen.echo(body);
    })
    .await;
    assert!(won.unwrap());
}

#[tokio::test]
async fn a_lease_held_by_a_live_replica_is_left_alone() {
    let (ctx, mut api) = setup();
    let renewed = format!("{}", k8s_openapi::jiff::Timestamp::now());
    let won = scenario(async { election(&ctx).try_acquire_or_renew().await }, async move {
        api.expect("GET", LEASE)
            .await
            .answer(StatusCode::OK, &lease("replica-b", &renewed));
        // No write follows: the scenario ends, and the mock would fail on an extra request.
    })
    .await;
    assert!(!won.unwrap());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_optimistic_concurrency() {
    let (ctx, mut api) = setup();
    let won = scenario(async { election(&ctx).try_acquire_or_renew().await }, async move {
        api.expect("GET", LEASE)
            .await
            .answer(StatusCode::OK, &lease("replica-b", "2026-01-01T00:00:00.000000Z"));
        let seen = api.expect("PUT", LEASE).await;
        assert_eq!(
            seen.body["metadata"]["resourceVersion"], "42",
            "the write is conditional on what was read"
        );
        assert_eq!(seen.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 4);
        let body = seen.body.clone();
        seen.echo(body);
    })
    .await;
    assert!(won.unwrap());
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
    let (ctx, mut api) = setup();
    let won = scenario(async { election(&ctx).try_acquire_or_renew().await }, async move {
        api.expect("GET", LEASE).await.answer(StatusCode::OK, &lease("replica-b", "2026-01-01T00:00:00.000000Z"));
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                              "message": "Operation cannot be fulfilled on leases.coordination.k8s.io \"meridian-operator\": the object has been modified"});
        api.expect("PUT", LEASE).await.answer(StatusCode::CONFLICT, &conflict);
    })
    .await;
    assert!(!won.unwrap());
}
