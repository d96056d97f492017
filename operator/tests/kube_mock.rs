//! The operator's Kubernetes API calls, checked against kube's `tower-test` mock: each test
//! scripts the API server's side of one scenario, asserts every request the operator sends
//! and answers it. No database is involved: each scenario stops before a store is touched.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::finalizer;
use meridian_crds::{ABANDON_ANNOTATION, Country, FINALIZER, Region};
use meridian_operator::controller::Context;
use meridian_operator::k8s::{Error, KubeContext, reconcile};
use meridian_operator::providers::{Providers, StaticSecrets};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

const LIMIT: Duration = Duration::from_secs(5);
const COUNTRY: &str = "/apis/platform.meridian.dev/v1alpha1/countries/de";
const COUNTRY_STATUS: &str = "/apis/platform.meridian.dev/v1alpha1/countries/de/status";
const COUNTRIES: &str = "/apis/platform.meridian.dev/v1alpha1/countries";
const REGION: &str = "/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1";
const REGION_STATUS: &str = "/apis/platform.meridian.dev/v1alpha1/regions/eu-central-1/status";
// Countries and Regions are cluster-scoped, so the recorder files their Events in `default`.
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

// ---- the API server's side ----

/// One request the operator sent, with the means to answer it.
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Call {
    fn has_query(&self, pair: &str) -> bool {
        self.query.split('&').any(|p| p == pair)
    }

    fn respond(self, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.reply.send_response(response);
    }
}

struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    /// Every Event published so far, in order.
    events: Vec<Value>,
}

impl ApiServer {
    /// The next request that is not an Event, or `None` once the operator has dropped its
    /// client. Events are recorded and acknowledged as they come: how many the recorder
    /// sends, and whether it creates or patches a series, is its business, not the test's.
    async fn next(&mut self) -> Option<Call> {
        loop {
            let (request, reply) = self.handle.next_request().await?;
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let call = Call {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                },
                reply,
            };
            if !call.path.starts_with(EVENTS) {
                return Some(call);
            }
            self.record_event(call);
        }
    }

    fn record_event(&mut self, call: Call) {
        let event = &call.body;
        assert_eq!(event["apiVersion"], "events.k8s.io/v1", "{event}");
        assert_eq!(event["reportingController"], "meridian-operator", "{event}");
        assert_eq!(event["reportingInstance"], "test-replica", "{event}");
        let mut stored = event.clone();
        stored["metadata"]["uid"] = json!(format!("event-{}", self.events.len()));
        stored["metadata"]["resourceVersion"] = json!("100");
        self.events.push(event.clone());
        let status = if call.method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        call.respond(status, &stored);
    }

    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self
            .next()
            .await
            .unwrap_or_else(|| panic!("expected {method} {path}, but the operator sent nothing more"));
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request"
        );
        call
    }

    /// Expects the list of every Country (who holds a code is read fresh) and answers `items`.
    async fn expect_countries(&mut self, items: &[&Value]) {
        let list = json!({
            "apiVersion": "platform.meridian.dev/v1alpha1", "kind": "CountryList",
            "metadata": {"resourceVersion": "9"}, "items": items
        });
        self.expect(Method::GET, COUNTRIES).await.respond(StatusCode::OK, &list);
    }

    /// Expects a JSON patch of `path` (how kube-runtime edits finalizers) and returns its operations.
    async fn expect_json_patch(&mut self, path: &str, answer: &Value) -> Value {
        let call = self.expect(Method::PATCH, path).await;
        assert_eq!(call.content_type, "application/json-patch+json");
        let ops = call.body.clone();
        call.respond(StatusCode::OK, answer);
        ops
    }

    /// Expects a forced server-side apply of `object`'s status and returns the status it applies.
    async fn expect_status_apply(&mut self, path: &str, object: &Value) -> Value {
        let call = self.expect(Method::PATCH, path).await;
        assert_eq!(call.content_type, "application/apply-patch+yaml");
        assert!(
            call.has_query("fieldManager=meridian-operator") && call.has_query("force=true"),
            "not a forced apply by meridian-operator: {}",
            call.query
        );
        assert_eq!(
            (&call.body["apiVersion"], &call.body["kind"]),
            (&object["apiVersion"], &object["kind"])
        );
        let status = call.body["status"].clone();
        let mut applied = object.clone();
        applied["status"] = status.clone();
        call.respond(StatusCode::OK, &applied);
        status
    }

    /// The Event of `type_` and `reason` published so far.
    fn event(&self, type_: &str, reason: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["type"] == type_ && e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {type_} Event {reason} among {:#?}", self.events))
    }

    /// Fails on any request beyond the script; returns once the operator has dropped its client.
    async fn finish(mut self) {
        if let Some(call) = self.next().await {
            panic!(
                "unexpected request {} {}?{}: {}",
                call.method, call.path, call.query, call.body
            );
        }
    }
}

fn mock() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = ApiServer {
        handle,
        events: Vec::new(),
    };
    (Client::new(service, "default"), server)
}

fn kube_context(client: Client) -> Arc<KubeContext> {
    let core = Context::new(Providers::new(None, Arc::new(StaticSecrets::default())));
    Arc::new(KubeContext::new(client, core, "test-replica"))
}

/// Runs the operator against the scripted API server. The operator must own the only client,
/// so that the server sees the end of its requests when `operator` completes.
async fn scenario<T>(operator: impl Future<Output = T>, script: impl Future<Output = ApiServer> + Send + 'static) -> T {
    let server = tokio::spawn(async move { script.await.finish().await });
    let result = tokio::time::timeout(LIMIT, operator)
        .await
        .expect("the operator finished within 5s");
    match tokio::time::timeout(LIMIT, server)
        .await
        .expect("the API server saw every request it expects within 5s")
    {
        Ok(()) => result,
        // The server's failed assertion says more than whatever error the operator got from it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

// ---- objects ----

/// Country `de` at generation 1: strict residency, allowed only in eu-central-1, bound to the
/// Region of that name. `metadata` is merged over the defaults.
fn country(finalizers: &[&str], metadata: Value) -> Value {
    let mut object = json!({
        "apiVersion": "platform.meridian.dev/v1alpha1",
        "kind": "Country",
        "metadata": {"name": "de", "uid": "country-de", "generation": 1, "resourceVersion": "7"},
        "spec": {
            "code": "DE", "displayName": "Germany", "timezone": "Europe/Berlin", "locale": "de-DE",
            "languages": ["de"], "currency": "EUR", "region": "eu-central-1",
            "residency": "strict", "allowedCloudRegions": ["eu-central-1"],
            "regulatory": {"retentionYears": 10, "minimumAge": 16}
        }
    });
    let meta = object["metadata"].as_object_mut().unwrap();
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), json!(finalizers));
    }
    meta.extend(metadata.as_object().unwrap().clone());
    object
}

fn deleting(annotations: Value) -> Value {
    json!({"deletionTimestamp": "2026-01-02T00:00:00Z", "annotations": annotations})
}

/// Region `eu-central-1`, with the finalizer and reporting Ready.
fn region(provider: &str, isolation: &str) -> Value {
    json!({
        "apiVersion": "platform.meridian.dev/v1alpha1",
        "kind": "Region",
        "metadata": {
            "name": "eu-central-1", "uid": "region-eu-central-1", "generation": 1, "resourceVersion": "3",
            "finalizers": [FINALIZER]
        },
        "spec": {"provider": provider, "cloudRegion": "eu-central-1", "isolation": isolation},
        "status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "Reconciled", "message": "the Region's database is ready",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}
    })
}

/// A `metav1.Status` failure, as the API server answers errors.
fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

fn region_not_found() -> Value {
    failure(
        404,
        "NotFound",
        "regions.platform.meridian.dev \"eu-central-1\" not found",
    )
}

/// The condition of `type_`, asserted to have `expected` status and reason.
fn condition<'a>(status: &'a Value, type_: &str, expected: (&str, &str)) -> &'a Value {
    let found = status["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#}"));
    assert_eq!(
        (found["status"].as_str(), found["reason"].as_str()),
        (Some(expected.0), Some(expected.1)),
        "{found}"
    );
    found
}

fn message(condition: &Value) -> &str {
    condition["message"].as_str().unwrap()
}

// ---- Country and Region reconciles ----

#[tokio::test]
async fn a_new_country_gets_the_finalizer_before_anything_else() {
    let (client, mut api) = mock();
    let object = country(&[], json!({}));
    let de: Country = serde_json::from_value(object).unwrap();
    let action = scenario(reconcile(Arc::new(de), kube_context(client)), async move {
        let ops = api.expect_json_patch(COUNTRY, &country(&[FINALIZER], json!({}))).await;
        // The `test` op makes the patch fail if someone else set finalizers in the meantime.
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
            ])
        );
        api
    })
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_strict_country_on_a_shared_region_is_refused_before_any_store_is_touched() {
    let (client, mut api) = mock();
    let object = country(&[FINALIZER], json!({}));
    let de: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(de), kube_context(client)), async move {
        api.expect(Method::GET, REGION)
            .await
            .respond(StatusCode::OK, &region("external", "shared"));
        api.expect_countries(&[&object]).await;
        let status = api.expect_status_apply(COUNTRY_STATUS, &object).await;
        let residency = condition(&status, "ResidencyCompliant", ("False", "RegionNotDedicated"));
        assert!(message(residency).contains("spec.residency"), "{residency}");
        assert_eq!(residency["observedGeneration"], 1);
        condition(&status, "Ready", ("False", "RegionNotDedicated"));
        let event = api.event("Warning", "RegionNotDedicated");
        assert_eq!(
            (&event["regarding"]["kind"], &event["regarding"]["name"]),
            (&json!("Country"), &json!("de"))
        );
        api
    })
    .await;
    assert_eq!(
        action.unwrap(),
        Action::await_change(),
        "only a change can fix the binding"
    );
}

#[tokio::test]
async fn a_missing_region_is_named_and_retried() {
    let (client, mut api) = mock();
    let object = country(&[FINALIZER], json!({}));
    let de: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(de), kube_context(client)), async move {
        api.expect(Method::GET, REGION)
            .await
            .respond(StatusCode::NOT_FOUND, &region_not_found());
        api.expect_countries(&[&object]).await;
        let status = api.expect_status_apply(COUNTRY_STATUS, &object).await;
        let ready = condition(&status, "Ready", ("False", "RegionNotFound"));
        assert!(message(ready).contains("spec.region"), "{ready}");
        api
    })
    .await;
    assert_ne!(action.unwrap(), Action::await_change(), "the Region may appear later");
}

#[tokio::test]
async fn an_abandoned_deletion_announces_itself_and_removes_the_finalizer() {
    let (client, mut api) = mock();
    let object = country(&[FINALIZER], deleting(json!({ ABANDON_ANNOTATION: "true" })));
    let de: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(de), kube_context(client)), async move {
        api.expect(Method::GET, REGION)
            .await
            .respond(StatusCode::NOT_FOUND, &region_not_found());
        api.expect_countries(&[&object]).await;
        let ops = api.expect_json_patch(COUNTRY, &object).await;
        // Recorded before the patch arrived: the Event goes out while the object still exists.
        api.event("Normal", "CleanedUp");
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])
        );
        api
    })
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_deletion_that_cannot_reach_its_stores_keeps_the_finalizer_and_says_how_to_finish() {
    let (client, mut api) = mock();
    let mut object = country(&[FINALIZER], deleting(json!({})));
    // What an earlier, successful reconcile wrote: it must survive the blocked cleanup's
    // status apply, which would otherwise drop every field it leaves out.
    object["status"] = json!({"observedGeneration": 1, "region": "eu-central-1", "partitions": ["practitioners_de"]});
    let de: Country = serde_json::from_value(object.clone()).unwrap();
    let result = scenario(reconcile(Arc::new(de), kube_context(client)), async move {
        api.expect(Method::GET, REGION)
            .await
            .respond(StatusCode::NOT_FOUND, &region_not_found());
        api.expect_countries(&[&object]).await;
        let status = api.expect_status_apply(COUNTRY_STATUS, &object).await;
        let ready = condition(&status, "Ready", ("False", "RegionNotFound"));
        assert!(message(ready).contains(ABANDON_ANNOTATION), "{ready}");
        assert_eq!(
            (&status["observedGeneration"], &status["region"], &status["partitions"]),
            (&json!(1), &json!("eu-central-1"), &json!(["practitioners_de"]))
        );
        api
    })
    .await;
    match result {
        Err(Error::Finalizer(e)) if matches!(*e, finalizer::Error::CleanupFailed(Error::CleanupBlocked { .. })) => {}
        other => panic!("expected the cleanup to be blocked, got {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_refused_duplicate_touches_no_store_and_lets_it_go() {
    let (client, mut api) = mock();
    // `de-test` claims Germany's code (and, as one written before code conflicts were
    // refused, Germany's partitions in its status); `de`, created earlier, holds DE.
    let holder = country(
        &[FINALIZER],
        json!({"creationTimestamp": "2026-01-01T00:00:00Z", "uid": "country-de"}),
    );
    let mut object = country(
        &[FINALIZER],
        json!({"name": "de-test", "uid": "country-de-test", "creationTimestamp": "2026-06-01T00:00:00Z"}),
    );
    object["metadata"]["deletionTimestamp"] = json!("2026-06-02T00:00:00Z");
    object["spec"]["deletionPolicy"] = json!("Delete");
    object["status"] = json!({"region": "eu-central-1", "partitions": ["practitioners_de", "appointments_de"],
                              "index": "practitioners_de_v1"});
    let dupe: Country = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(dupe), kube_context(client)), async move {
        // The Region exists, but its (external) database is never asked for: the duplicate
        // owns nothing there. Any store call would need a Secret this context does not have.
        api.expect(Method::GET, REGION)
            .await
            .respond(StatusCode::OK, &region("external", "dedicated"));
        api.expect_countries(&[&holder, &object]).await;
        let ops = api
            .expect_json_patch("/apis/platform.meridian.dev/v1alpha1/countries/de-test", &object)
            .await;
        assert_eq!(ops[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
        let done = api.event("Normal", "CleanedUp");
        assert!(message_of(done).contains("stores left untouched"), "{done}");
        api
    })
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

fn message_of(event: &Value) -> &str {
    event["note"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_local_region_in_a_cluster_names_the_provider_field() {
    let (client, mut api) = mock();
    let object = region("local", "dedicated");
    let eu: Region = serde_json::from_value(object.clone()).unwrap();
    let action = scenario(reconcile(Arc::new(eu), kube_context(client)), async move {
        let status = api.expect_status_apply(REGION_STATUS, &object).await;
        let database = condition(&status, "DatabaseReady", ("False", "ProviderUnavailable"));
        assert!(message(database).contains("spec.provider"), "{database}");
        api.event("Warning", "ProviderUnavailable");
        api
    })
    .await;
    assert_ne!(action.unwrap(), Action::await_change(), "retried with backoff");
}
