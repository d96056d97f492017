//! Leader election against kube's `tower-test` mock, on tokio's paused clock: scripted Lease
//! answers (and a small in-memory Lease server for two replicas) check client-go's timing
//! (lease 15 s, renew deadline 10 s, retry 2 s) and that nothing runs under a leadership
//! that has ended.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::ObjectMeta;
use kube::client::Body;
use meridian_operator::k8s::{Fence, LEASE_DURATION, LeaderElection, RENEW_DEADLINE, RETRY_PERIOD};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_test::mock::{Handle, SendResponse};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/meridian-system/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/meridian-system/leases/meridian-operator";
/// Virtual time a scripted scenario may take.
const LIMIT: Duration = Duration::from_secs(600);

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// One request, with the means to answer it.
struct Call {
    method: Method,
    path: String,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Call {
    fn respond(self, status: StatusCode, body: &Value) {
        self.reply.send_response(
            Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }
}

/// The next request, or `None` once the replica has dropped its client.
async fn next(api: &mut ApiServer) -> Option<Call> {
    let (request, reply) = api.next_request().await?;
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    Some(Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
        reply,
    })
}

async fn expect(api: &mut ApiServer, method: Method, path: &str) -> Call {
    let call = next(api)
        .await
        .unwrap_or_else(|| panic!("expected {method} {path}, but the replica sent nothing more"));
    assert_eq!(
        (&call.method, call.path.as_str()),
        (&method, path),
        "unexpected request"
    );
    call
}

fn mock() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn election(client: Client, identity: &str) -> LeaderElection {
    LeaderElection::new(client, "meridian-system", "meridian-operator", identity)
}

/// A `metav1.Status` failure, as the API server answers errors.
fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": code})
}

fn unavailable() -> Value {
    failure(
        503,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
    )
}

fn lease(holder: &str, renewed: Timestamp, version: u64) -> Value {
    serde_json::to_value(Lease {
        metadata: ObjectMeta {
            name: Some("meridian-operator".into()),
            namespace: Some("meridian-system".into()),
            resource_version: Some(version.to_string()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..Default::default()
        }),
    })
    .unwrap()
}

/// Runs the replica against the scripted server; the server's assertions win over
/// whatever the replica saw. The replica must own the only client.
async fn scenario<T>(replica: impl Future<Output = T>, script: impl Future<Output = ApiServer> + Send + 'static) -> T {
    let server = tokio::spawn(async move {
        let mut api = script.await;
        if let Some(call) = next(&mut api).await {
            panic!("unexpected request {} {}: {}", call.method, call.path, call.body);
        }
    });
    let result = tokio::time::timeout(LIMIT, replica)
        .await
        .expect("the replica finished");
    match tokio::time::timeout(LIMIT, server).await.expect("the script finished") {
        Ok(()) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A spawned task aborted when dropped, as kube-runtime runs each reconcile.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---- one replica, scripted ----

#[tokio::test(start_paused = true)]
async fn the_first_replica_creates_the_lease() {
    let (client, mut api) = mock();
    let won = scenario(
        async move { election(client, "replica-a").try_acquire_or_renew().await },
        async move {
            let missing = failure(
                404,
                "NotFound",
                "leases.coordination.k8s.io \"meridian-operator\" not found",
            );
            expect(&mut api, Method::GET, LEASE)
                .await
                .respond(StatusCode::NOT_FOUND, &missing);
            let call = expect(&mut api, Method::POST, LEASES).await;
            let created = call.body.clone();
            assert_eq!(created["metadata"]["name"], "meridian-operator");
            assert_eq!(created["spec"]["holderIdentity"], "replica-a");
            assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
            call.respond(StatusCode::CREATED, &created);
            api
        },
    )
    .await;
    assert!(won.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_lease_renewed_by_another_replica_is_left_alone() {
    let (client, mut api) = mock();
    let won = scenario(
        async move { election(client, "replica-a").try_acquire_or_renew().await },
        async move {
            let held = lease("replica-b", Timestamp::now(), 42);
            expect(&mut api, Method::GET, LEASE)
                .await
                .respond(StatusCode::OK, &held);
            // `scenario` fails the test on any write that follows.
            api
        },
    )
    .await;
    assert!(!won.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_every_reconcile_at_the_renew_deadline() {
    let (client, mut api) = mock();
    let t0 = Instant::now();
    let acted = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let dropped = Arc::new(AtomicBool::new(false));
    let (acting, gone) = (acted.clone(), dropped.clone());
    // `meridian_leader`: 1 while it acts, 0 once it stopped.
    let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    let (leading, said) = (gauge.clone(), gauge.clone());
    let leader = async move {
        let mut election = election(client, "replica-a").with_gauge(leading);
        let result = election
            .lead(
                move |fence: Fence| async move {
                    // A reconcile as kube-runtime runs one: spawned, aborted with the controller.
                    let reconcile = fence.guard(async move {
                        let _flag = DropFlag(gone);
                        loop {
                            assert_eq!(said.get(), 1, "meridian_leader while leading");
                            acting.lock().unwrap().push(t0.elapsed());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    });
                    let _task = AbortOnDrop(tokio::spawn(reconcile));
                    std::future::pending::<()>().await
                },
                std::future::pending(),
            )
            .await;
        (result, t0.elapsed())
    };
    let (result, stopped_at) = scenario(leader, async move {
        let missing = failure(404, "NotFound", "not found");
        expect(&mut api, Method::GET, LEASE)
            .await
            .respond(StatusCode::NOT_FOUND, &missing);
        let call = expect(&mut api, Method::POST, LEASES).await;
        let mut stored = call.body.clone();
        stored["metadata"]["resourceVersion"] = json!("1");
        call.respond(StatusCode::CREATED, &stored);

        // One renewal at 2 s: the last that succeeds.
        let call = expect(&mut api, Method::GET, LEASE).await;
        assert_eq!(t0.elapsed(), RETRY_PERIOD);
        call.respond(StatusCode::OK, &stored);
        let call = expect(&mut api, Method::PUT, LEASE).await;
        assert_eq!(
            call.body["metadata"]["resourceVersion"], "1",
            "the write is conditional"
        );
        let mut stored = call.body.clone();
        stored["metadata"]["resourceVersion"] = json!("2");
        call.respond(StatusCode::OK, &stored);

        // Then the API server fails every 2 s, and at 10 s does not answer at all.
        for at in [4, 6, 8] {
            let call = expect(&mut api, Method::GET, LEASE).await;
            assert_eq!(t0.elapsed(), Duration::from_secs(at));
            call.respond(StatusCode::SERVICE_UNAVAILABLE, &unavailable());
        }
        let hanging = expect(&mut api, Method::GET, LEASE).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        // The release after stopping, at the deadline: still failing.
        let release = expect(&mut api, Method::GET, LEASE).await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(12),
            "stopped at 2 s + the renew deadline"
        );
        release.respond(StatusCode::SERVICE_UNAVAILABLE, &unavailable());
        drop(hanging);
        api
    })
    .await;

    let lost = result.unwrap_err();
    assert!(lost.contains("could not renew the Lease within 10s"), "{lost}");
    assert_eq!(gauge.get(), 0, "meridian_leader once it stopped");
    // It returned at its deadline, the start of the last renewal plus 10 s, long before a
    // standby that saw that renewal could see it expire (2 s + 15 s).
    assert_eq!(stopped_at, RETRY_PERIOD + RENEW_DEADLINE);
    assert!(stopped_at < RETRY_PERIOD + LEASE_DURATION);
    let last = *acted.lock().unwrap().last().unwrap();
    assert!(
        last < RETRY_PERIOD + RENEW_DEADLINE && last >= Duration::from_millis(11_900),
        "the reconcile acted until just before the deadline, not after: {last:?}"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the reconcile was dropped before lead returned"
    );
    let count = acted.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        acted.lock().unwrap().len(),
        count,
        "nothing acts after leadership ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_an_expired_lease_and_not_a_fresh_one() {
    let (client, mut api) = mock();
    let t0 = Instant::now();
    let standby = async move {
        let mut election = election(client, "replica-a");
        let fence = election.acquire().await;
        (t0.elapsed(), fence.is_leading())
    };
    let (acquired_at, leading) = scenario(standby, async move {
        // 0-38 s: replica-b renews; each look shows a new record. Its renewTime, written by
        // another machine's clock, is an hour old all along and says nothing.
        let an_hour_ago = Timestamp::now() - SignedDuration::from_hours(1);
        let mut last = Value::Null;
        for look in 0..20u64 {
            let call = expect(&mut api, Method::GET, LEASE).await;
            assert_eq!(t0.elapsed(), RETRY_PERIOD * look as u32, "a look every retry period");
            last = lease(
                "replica-b",
                an_hour_ago + SignedDuration::from_secs(look as i64),
                10 + look,
            );
            call.respond(StatusCode::OK, &last);
        }
        let version = 29;
        // Then replica-b is gone: the record stays as it was last seen (at 38 s) ...
        let frozen = last;
        loop {
            let call = next(&mut api).await.expect("the standby keeps looking");
            if call.method == Method::PUT {
                // ... and is taken over once it has not changed for 15 s on the standby's clock.
                assert_eq!(call.path, LEASE);
                assert_eq!(
                    t0.elapsed(),
                    Duration::from_secs(38) + LEASE_DURATION + Duration::from_secs(1)
                );
                assert_eq!(
                    call.body["metadata"]["resourceVersion"],
                    version.to_string(),
                    "conditional"
                );
                assert_eq!(call.body["spec"]["holderIdentity"], "replica-a");
                assert_eq!(call.body["spec"]["leaseTransitions"], 4);
                let answer = call.body.clone();
                call.respond(StatusCode::OK, &answer);
                break;
            }
            assert_eq!((call.method.clone(), call.path.as_str()), (Method::GET, LEASE));
            // Every look reads the Lease first: the one at 54 s is followed by the takeover.
            assert!(t0.elapsed() <= Duration::from_secs(38) + LEASE_DURATION + Duration::from_secs(1));
            call.respond(StatusCode::OK, &frozen);
        }
        api
    })
    .await;
    // Seen unchanged at 38 s; looked at 40, 42, ... 52 (14 s: not yet), 54 (16 s: expired).
    assert_eq!(acquired_at, Duration::from_secs(54));
    assert!(leading);
}

#[tokio::test(start_paused = true)]
async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
    let (client, mut api) = mock();
    let won = scenario(
        async move {
            let mut election = election(client, "replica-a");
            assert!(!election.try_acquire_or_renew().await.unwrap(), "fresh to this replica");
            tokio::time::sleep(LEASE_DURATION).await;
            election.try_acquire_or_renew().await
        },
        async move {
            let held = lease("replica-b", Timestamp::now(), 42);
            expect(&mut api, Method::GET, LEASE).await.respond(StatusCode::OK, &held);
            expect(&mut api, Method::GET, LEASE).await.respond(StatusCode::OK, &held);
            let conflict = failure(
                409,
                "Conflict",
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"meridian-operator\": the object has been modified",
            );
            expect(&mut api, Method::PUT, LEASE)
                .await
                .respond(StatusCode::CONFLICT, &conflict);
            api
        },
    )
    .await;
    assert!(!won.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_finds_another_holder_stops_at_once_and_leaves_the_lease_alone() {
    let (client, mut api) = mock();
    let t0 = Instant::now();
    let result = scenario(
        async move {
            let mut election = election(client, "replica-a");
            election
                .lead(|_fence| std::future::pending::<()>(), std::future::pending())
                .await
                .map_err(|lost| (lost, t0.elapsed()))
        },
        async move {
            let mine = lease("replica-a", Timestamp::now(), 5);
            expect(&mut api, Method::GET, LEASE)
                .await
                .respond(StatusCode::OK, &mine);
            let call = expect(&mut api, Method::PUT, LEASE).await;
            let answer = call.body.clone();
            call.respond(StatusCode::OK, &answer);
            // Someone else wrote it meanwhile (e.g. after this replica was paused).
            let theirs = lease("replica-b", Timestamp::now(), 7);
            expect(&mut api, Method::GET, LEASE)
                .await
                .respond(StatusCode::OK, &theirs);
            // The release looks, and does not touch another holder's Lease.
            expect(&mut api, Method::GET, LEASE)
                .await
                .respond(StatusCode::OK, &theirs);
            api
        },
    )
    .await;
    let (lost, at) = result.unwrap_err();
    assert!(lost.contains("another replica holds the Lease"), "{lost}");
    assert_eq!(at, RETRY_PERIOD);
}

// ---- two replicas, one in-memory Lease ----

/// The API server's Lease: optimistic concurrency on resourceVersion, as the real one.
#[derive(Default)]
struct LeaseStore {
    lease: Option<Value>,
    version: u64,
    /// Windows during which the replica holding the Lease when the window opens cannot
    /// reach the API server (`Some(holder)` once chosen).
    partitions: Vec<(Range<Duration>, Option<String>)>,
}

impl LeaseStore {
    fn holder(&self) -> Option<String> {
        self.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
    }

    fn cut_off(&mut self, who: &str, at: Duration) -> bool {
        let holder = self.holder();
        self.partitions.iter_mut().any(|(window, victim)| {
            window.contains(&at)
                && victim
                    .get_or_insert_with(|| holder.clone().unwrap_or_default())
                    .as_str()
                    == who
        })
    }

    fn apply(&mut self, call: &Call) -> (StatusCode, Value) {
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        let write = match (&call.method, call.path.as_str()) {
            (m, LEASE) if *m == get => {
                return match &self.lease {
                    Some(lease) => (StatusCode::OK, lease.clone()),
                    None => (StatusCode::NOT_FOUND, failure(404, "NotFound", "not found")),
                };
            }
            (m, LEASES) if *m == post && self.lease.is_some() => {
                return (StatusCode::CONFLICT, failure(409, "AlreadyExists", "already exists"));
            }
            (m, LEASES) if *m == post => StatusCode::CREATED,
            (m, LEASE) if *m == put => {
                let current = self.lease.as_ref().map(|l| &l["metadata"]["resourceVersion"]);
                if current != Some(&call.body["metadata"]["resourceVersion"]) {
                    return (
                        StatusCode::CONFLICT,
                        failure(409, "Conflict", "the object has been modified"),
                    );
                }
                StatusCode::OK
            }
            (method, path) => panic!("unexpected request {method} {path}"),
        };
        self.version += 1;
        let mut stored = call.body.clone();
        stored["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.lease = Some(stored.clone());
        (write, stored)
    }
}

/// Serves one replica's requests from the shared store. From 95 s to 110 s every answer
/// arrives 3 s after the store has applied the request.
async fn serve(mut api: ApiServer, who: &'static str, store: Arc<Mutex<LeaseStore>>, t0: Instant) {
    while let Some(call) = next(&mut api).await {
        let at = t0.elapsed();
        let (status, body) = {
            let mut store = store.lock().unwrap();
            if store.cut_off(who, at) {
                (StatusCode::SERVICE_UNAVAILABLE, unavailable())
            } else {
                store.apply(&call)
            }
        };
        if (Duration::from_secs(95)..Duration::from_secs(110)).contains(&at) {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                call.respond(status, &body);
            });
        } else {
            call.respond(status, &body);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn two_replicas_never_both_believe_they_lead() {
    let t0 = Instant::now();
    let store = Arc::new(Mutex::new(LeaseStore {
        partitions: vec![
            (Duration::from_secs(20)..Duration::from_secs(45), None),
            (Duration::from_secs(60)..Duration::from_secs(85), None),
        ],
        ..Default::default()
    }));
    // Every leadership each replica held, as the fence its controllers ran under.
    let fences = Arc::new(Mutex::new(Vec::<(&str, Duration, Fence)>::new()));
    let mut replicas = Vec::new();
    for who in ["replica-a", "replica-b"] {
        let (client, api) = mock();
        tokio::spawn(serve(api, who, store.clone(), t0));
        let fences = fences.clone();
        replicas.push(AbortOnDrop(tokio::spawn(async move {
            // A replica that lost leadership exits and is restarted as a standby.
            loop {
                let fences = fences.clone();
                let _ = election(client.clone(), who)
                    .lead(
                        move |fence| {
                            fences.lock().unwrap().push((who, t0.elapsed(), fence));
                            std::future::pending::<()>()
                        },
                        std::future::pending(),
                    )
                    .await;
            }
        })));
    }

    let mut both = Vec::new();
    while t0.elapsed() < Duration::from_secs(150) {
        let leading: Vec<&str> = fences
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, fence)| fence.is_leading())
            .map(|(who, _, _)| *who)
            .collect();
        if leading.len() > 1 {
            both.push((t0.elapsed(), leading));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(both.is_empty(), "two leaders at once: {both:?}");

    // Not vacuous: each partition moved leadership to the other replica, and someone leads.
    let terms: Vec<(&str, Duration)> = fences.lock().unwrap().iter().map(|(w, at, _)| (*w, *at)).collect();
    let mut holders: Vec<&str> = terms.iter().map(|(w, _)| *w).collect();
    holders.dedup();
    assert!(holders.len() >= 3, "leadership changed hands twice: {terms:?}");
    assert!(
        fences.lock().unwrap().iter().any(|(_, _, f)| f.is_leading()),
        "someone leads at the end: {terms:?}"
    );
    drop(replicas);
}
