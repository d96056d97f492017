//! The workloads inside `meridian dev`: one booking and one records service per Ready
//! Region, holding only that Region's database connections, behind one entry point that
//! routes `/{cc}/v1/...` to the Region holding country `cc` (`/{cc}/v1/fhir/...` to its
//! records service). A local token issuer stands in for the OIDC provider, and for the
//! Kubernetes ServiceAccount tokens records services call each other with: a records
//! service looks a patient up abroad through this same entry point.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use meridian_booking::http::{Countries, Problem, Service, app};
use meridian_crds::condition_types::{DATABASE_READY, READY};
use meridian_crds::{Country, Region};
use meridian_search::indexer::Indexer;
use meridian_shared::auth::{DevIssuer, Role, Verifier};
use meridian_shared::pool::Pool;
use tower::ServiceExt;

use super::issuer::{TOKEN_TTL, TokenRequest};
use crate::conditions;
use crate::controller::Context;
use crate::providers::DATABASE_RESTARTING;

/// Audience of the tokens the workloads accept.
pub const AUDIENCE: &str = "meridian";
/// The search indexer's name among the outbox's consumers.
const INDEXER: &str = "search-indexer";

struct RegionService {
    url: crate::providers::ConnectionUrl,
    countries: Countries,
    router: Router,
    /// The records service, connected as the workload role and the vault role.
    records_countries: meridian_records::http::Countries,
    records: Router,
    /// The PatientIndex as the records service reaches it.
    index_link: meridian_records::crossborder::IndexLink,
    /// Keeps the Region's search indexes current from its outbox.
    indexer: tokio::task::JoinHandle<()>,
    /// Keeps the PatientIndex's entries of the Region's patients current.
    registrar: tokio::task::JoinHandle<()>,
    /// The billing consumer's terms, and the consumer (reading the outbox: no broker here).
    billing_rates: meridian_billing::Rates,
    billing: tokio::task::JoinHandle<()>,
    /// The analytics consumer, on the outbox too.
    analytics: tokio::task::JoinHandle<()>,
    /// The notifications consumer and dispatcher (on the outbox; nothing is sent: the
    /// messages are held for `/dev/outbox`).
    notification_rules: meridian_notifications::Rules,
    notifications: tokio::task::JoinHandle<()>,
    held: meridian_notifications::transport::held::Held,
}

impl Drop for RegionService {
    fn drop(&mut self) {
        self.indexer.abort();
        self.registrar.abort();
        self.billing.abort();
        self.analytics.abort();
        self.notifications.abort();
    }
}

/// The per-Region services and the issuer. Each service connects as its Region's workload
/// role (rows only, the audit trail insert-only), the records service also as its vault
/// role, never as the owner or the superuser.
pub struct Workloads {
    issuer: Arc<DevIssuer>,
    verifier: Arc<Verifier>,
    regions: RwLock<HashMap<String, RegionService>>,
    /// This entry point, which records services call each other through.
    listen: SocketAddr,
    /// Every country's national-ID rules, for lookups abroad.
    directory: meridian_records::crossborder::Directory,
    /// Checks the tokens records services call each other with.
    peer_verifier: Arc<Verifier>,
}

impl Workloads {
    pub fn new(listen: SocketAddr) -> Self {
        let issuer = DevIssuer::new(&format!("http://{listen}/auth"), AUDIENCE);
        let verifier = Arc::new(issuer.verifier());
        let peer_verifier = Arc::new(issuer.verifier_for(meridian_records::crossborder::peers::AUDIENCE));
        Self {
            issuer: Arc::new(issuer),
            verifier,
            regions: RwLock::default(),
            listen,
            directory: Default::default(),
            peer_verifier,
        }
    }

    /// Brings the services in line with the reconciled state: a service for every Ready
    /// Region (connected to its database only), each serving the countries bound to it.
    pub async fn sync(&self, regions: &[Region], countries: &[Country], ctx: &Context) {
        let mut wanted: HashMap<String, Wanted> = HashMap::new();
        // Each Region's data keys, read at every sync: a rotation or a new country reaches
        // the records service without a restart.
        let mut keys: HashMap<String, crate::providers::SecretData> = HashMap::new();
        // What each Region's records service was handed of the PatientIndex.
        let mut links: HashMap<String, crate::providers::SecretData> = HashMap::new();
        // Regions whose database is being restarted: their services stay (answering 503
        // until it is back) rather than vanish (404).
        let mut kept: HashSet<String> = HashSet::new();
        for region in regions {
            if region.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = region.metadata.name.clone().unwrap_or_default();
            let conds = region
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let ready = conditions::is_true(conds, READY);
            let restarting = conditions::find(conds, DATABASE_READY).is_some_and(|c| c.reason == DATABASE_RESTARTING);
            if !ready && !restarting {
                continue;
            }
            if let Ok(store) = ctx.providers.region_secrets(region) {
                match store.read(&name, meridian_records::keys::VAULT_KEYS_SECRET).await {
                    Ok(data) => {
                        keys.insert(name.clone(), data);
                    }
                    Err(e) => tracing::warn!(region = %name, error = %e.message, "cannot read the vault keys"),
                }
                match store.read(&name, meridian_records::mpi::LINK_SECRET).await {
                    Ok(data) => {
                        links.insert(name.clone(), data);
                    }
                    Err(e) => tracing::warn!(region = %name, error = %e.message, "cannot read the PatientIndex link"),
                }
            }
            match ctx.providers.workload(region).await {
                Ok(endpoint) if ready => {
                    let search = ctx.providers.search(region).await.ok();
                    let vault = ctx.providers.vault(region).await.ok().map(|e| e.url);
                    wanted.insert(
                        name,
                        Wanted {
                            url: endpoint.url,
                            vault,
                            search,
                        },
                    );
                }
                Err(e) if e.reason != DATABASE_RESTARTING => {}
                // Down, or back but its Region not reconciled yet.
                _ => {
                    kept.insert(name);
                }
            }
        }
        let mut services = self.regions.write().expect("workloads lock");
        services.retain(|name, service| kept.contains(name) || wanted.get(name).is_some_and(|w| w.url == service.url));
        for (name, Wanted { url, vault, search }) in wanted {
            if services.contains_key(&name) {
                continue;
            }
            // The same TLS rules as the operator's own connections.
            let Ok(options) = meridian_shared::tls::pg_options(url.as_str(), url.ca()) else {
                continue;
            };
            let pool = meridian_booking::pool_options(16).connect_lazy_with(options.clone());
            // Without its vault role (a Region reconciled by an older Meridian) the records
            // service still answers, and says the store is out of reach.
            let vault_options = vault
                .and_then(|v| meridian_shared::tls::pg_options(v.as_str(), v.ca()).ok())
                .unwrap_or(options);
            let vault_pool = meridian_records::pool_options(8).connect_lazy_with(vault_options);
            let records_countries = meridian_records::http::Countries::default();
            let crossborder = self.crossborder(&name);
            let index_link = crossborder.link.clone();
            let registrar = tokio::spawn(
                meridian_records::crossborder::registrar::Registrar::new(
                    pool.clone(),
                    vault_pool.clone(),
                    records_countries.clone(),
                    index_link.clone(),
                    &name,
                )
                .run(),
            );
            let notification_rules = meridian_notifications::Rules::default();
            let held = meridian_notifications::transport::held::Held::default();
            let notifications = tokio::spawn(follow_notifications(
                pool.clone(),
                vault_pool.clone(),
                notification_rules.clone(),
                held.clone(),
            ));
            // The records service's requests have pools of their own, which hand connections
            // back without a round trip (`meridian_shared::pool`).
            let records = meridian_records::http::Service::new(
                Pool::like(&pool),
                Pool::like(&vault_pool),
                self.verifier.clone(),
                records_countries.clone(),
            )
            .with_crossborder(crossborder);
            let billing_rates = meridian_billing::Rates::default();
            let billing = tokio::spawn(follow_consumer(
                pool.clone(),
                meridian_billing::BillingHandler {
                    rates: billing_rates.clone(),
                },
            ));
            let analytics = tokio::spawn(follow_consumer(pool.clone(), meridian_analytics::AnalyticsHandler));
            let countries = Countries::default();
            let mut service = Service::new(pool.clone(), self.verifier.clone(), countries.clone());
            let indexer = match search {
                Some(backend) => {
                    service = service.with_search(backend.clone());
                    tokio::spawn(follow_outbox(pool, backend))
                }
                None => tokio::spawn(async {}),
            };
            services.insert(
                name,
                RegionService {
                    url,
                    countries,
                    router: app(Arc::new(service)),
                    records_countries,
                    records: meridian_records::http::app(Arc::new(records)),
                    index_link,
                    indexer,
                    registrar,
                    billing_rates,
                    billing,
                    analytics,
                    notification_rules,
                    notifications,
                    held,
                },
            );
        }
        self.directory.set(countries);
        let none = crate::providers::SecretData::new();
        for (name, service) in services.iter() {
            if let Err(e) = service.index_link.set(links.get(name).unwrap_or(&none)) {
                tracing::warn!(region = %name, error = %e, "the PatientIndex link cannot be used");
            }
            service
                .countries
                .set(meridian_booking::served::entries(countries, name));
            service
                .billing_rates
                .set(meridian_billing::rates::region_rates(countries, name));
            let keys = keys.get(name).unwrap_or(&none);
            service
                .records_countries
                .set(meridian_records::served::entries(countries, name, keys));
            service
                .notification_rules
                .set(meridian_notifications::rules::region_rules(countries, name, keys));
        }
    }

    /// What Region `region`'s records service needs to look patients up abroad and to answer
    /// other Regions: it calls them through this entry point as
    /// `system:serviceaccount:meridian-region-<region>:records`, with a token from the dev
    /// issuer, as it would with its ServiceAccount token in a cluster.
    fn crossborder(&self, region: &str) -> meridian_records::crossborder::CrossBorder {
        meridian_records::crossborder::CrossBorder::with_dev_issuer(
            self.issuer.clone(),
            region,
            &format!("http://{}", loopback(self.listen)),
            meridian_records::crossborder::peers::DEFAULT_TIMEOUT,
            self.peer_verifier.clone(),
            self.directory.clone(),
        )
    }

    /// Tokens for demo users of each role, valid for a day.
    pub fn demo_tokens(&self, codes: &[String]) -> BTreeMap<&'static str, String> {
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        BTreeMap::from([
            (
                "patient",
                self.issuer.token("demo-patient", &[Role::Patient], &codes, TOKEN_TTL),
            ),
            (
                "clinic-admin",
                self.issuer
                    .token("demo-clinic-admin", &[Role::ClinicAdmin], &codes, TOKEN_TTL),
            ),
            (
                "practice-manager",
                self.issuer
                    .token("demo-practice-manager", &[Role::PracticeManager], &codes, TOKEN_TTL),
            ),
            (
                "system-admin",
                self.issuer
                    .token("demo-system-admin", &[Role::SystemAdmin], &["*"], TOKEN_TTL),
            ),
        ])
    }

    /// `/auth/...`, `/dev/outbox` and `/{cc}/v1/...`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/auth/jwks.json",
                get(|State(w): State<Arc<Self>>| async move { w.issuer.jwks().to_string() }),
            )
            .route("/auth/token", get(token))
            .route("/dev/outbox", get(outbox_page))
            .route("/dev/outbox.json", get(outbox_json))
            .route("/{cc}/v1/{*rest}", any(dispatch))
            .with_state(self)
    }
}

/// Runs the Region's search indexer, starting it once its database answers.
async fn follow_outbox(pool: sqlx::PgPool, backend: meridian_search::Backend) {
    loop {
        match Indexer::start(pool.clone(), backend.clone(), INDEXER).await {
            Ok(indexer) => return indexer.run().await,
            Err(e) => tracing::debug!(error = %e, "search indexer waits for its database"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs one of the Region's event consumers on its outbox, starting it once its database
/// answers.
async fn follow_consumer<H: meridian_events::consumer::Handler + Clone>(pool: sqlx::PgPool, handler: H) {
    loop {
        match meridian_events::consumer::run_outbox(pool.clone(), handler.clone(), std::future::pending()).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(consumer = handler.name(), error = %e, "the consumer waits for its database"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the Region's notifications consumer on its outbox and its dispatcher, which holds
/// the messages (`/dev/outbox`) instead of sending them.
async fn follow_notifications(
    pool: sqlx::PgPool,
    vault: sqlx::PgPool,
    rules: meridian_notifications::Rules,
    held: meridian_notifications::transport::held::Held,
) {
    use meridian_notifications::dispatch::{Dispatcher, Settings};
    let transports = meridian_notifications::transport::Transports::all(Arc::new(held));
    let dispatcher = Dispatcher::new(pool.clone(), vault, rules.clone(), transports, Settings::default());
    let sending = tokio::spawn(dispatcher.run(std::future::pending()));
    follow_consumer(pool, meridian_notifications::NotificationsHandler { rules }).await;
    sending.abort();
}

/// Every Region's held messages, newest first.
fn held_messages(w: &Workloads) -> Vec<meridian_notifications::transport::held::HeldMessage> {
    let services = w.regions.read().expect("workloads lock");
    let mut all: Vec<_> = services.values().flat_map(|s| s.held.messages()).collect();
    all.sort_by_key(|m| std::cmp::Reverse(m.held_at));
    all
}

/// `GET /dev/outbox`: the messages `meridian dev` held instead of sending.
async fn outbox_page(State(w): State<Arc<Workloads>>) -> axum::response::Html<String> {
    axum::response::Html(meridian_notifications::outbox_page::html(&held_messages(&w)))
}

/// `GET /dev/outbox.json`: the same, as JSON.
async fn outbox_json(
    State(w): State<Arc<Workloads>>,
) -> axum::Json<Vec<meridian_notifications::transport::held::HeldMessage>> {
    axum::Json(held_messages(&w))
}

/// `listen` as an address to call: an unspecified address (`0.0.0.0`) is this machine.
fn loopback(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    }
}

/// What a Ready Region's services connect to.
struct Wanted {
    url: crate::providers::ConnectionUrl,
    vault: Option<crate::providers::ConnectionUrl>,
    search: Option<meridian_search::Backend>,
}

async fn dispatch(
    State(w): State<Arc<Workloads>>,
    Path((cc, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    let records = rest == "fhir" || rest.starts_with("fhir/");
    let router = {
        let services = w.regions.read().expect("workloads lock");
        services
            .values()
            .find(|s| s.countries.get(&cc).is_some())
            .map(|s| if records { s.records.clone() } else { s.router.clone() })
    };
    match router {
        Some(router) => {
            // A fresh request: the entry point's own path parameters, kept in the request's
            // extensions, would otherwise reach the Region's router as well.
            let (mut parts, body) = request.into_parts();
            parts.extensions = Default::default();
            router
                .oneshot(Request::from_parts(parts, body))
                .await
                .unwrap_or_else(|never| match never {})
        }
        // As the services do: the token first, then whether the country is served here.
        None => match w.verifier.verify_header(
            request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        ) {
            Err(e) => Problem::from(e).into_response(),
            Ok(_) => Problem::not_found(format!("no country {cc:?} is served here")).into_response(),
        },
    }
}

/// Development only: a token for any subject, roles and countries, e.g.
/// `/auth/token?sub=<practitioner-id>&roles=Practitioner&countries=DE`.
async fn token(State(w): State<Arc<Workloads>>, Query(q): Query<TokenRequest>) -> Response {
    super::issuer::token(&w.issuer, &q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn a_prefix_nobody_serves_asks_for_the_token_first() {
        let workloads = Arc::new(Workloads::new("127.0.0.1:8080".parse().unwrap()));
        let token = workloads.demo_tokens(&["DE".into()])["patient"].clone();
        let app = workloads.router();
        let call = |authorization: Option<&str>| {
            let mut request = Request::get("/xx/v1/practitioners");
            if let Some(value) = authorization {
                request = request.header(axum::http::header::AUTHORIZATION, value);
            }
            app.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        for refused in [None, Some("Bearer not-a-jwt")] {
            let response = call(refused).await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{refused:?}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains("xx"),
                "nothing said of the country"
            );
        }
        let response = call(Some(&format!("Bearer {token}"))).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
