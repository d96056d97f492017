//! What every process of a Region's event backbone is started with — the Region's database
//! and its Kafka — and the loop of a consumer deployed on its own (`meridian billing`,
//! `meridian analytics`): it follows its topic in its consumer group until Ctrl-C or SIGTERM.
//!
//! Every worker (the relay, billing, analytics, the indexer, notifications) also serves a
//! small ops listener ([`OpsOptions`], `--listen`, port 9090): `GET /healthz` (the process
//! answers), `GET /readyz` (its database and its Kafka have answered once) and
//! `GET /metrics` (the workload metrics of [`meridian_shared::metrics`]), for the kubelet's
//! probes and for Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use sqlx::PgPool;

use crate::consumer::{self, Handler};
use crate::kafka::KafkaOptions;

/// Options of `meridian relay` and of each consumer.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerOptions {
    /// The Region's database (the `url` of its connection Secret). Off this machine the
    /// connection is `sslmode=verify-full`; a URL asking for less is refused.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// CA certificates (a PEM file) the database's certificate is verified against.
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaOptions,
    #[command(flatten)]
    pub ops: OpsOptions,
}

/// The ops listener of an event worker.
#[derive(clap::Args, Clone, Debug)]
pub struct OpsOptions {
    /// Address for `/healthz`, `/readyz` and `/metrics` (not reachable through the gateway;
    /// the Region's NetworkPolicy admits no one by default).
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
}

impl Default for OpsOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

impl OpsOptions {
    /// Binds the listener (a port in use fails the start) and serves it in the background:
    /// not ready until [`Readiness::ready`].
    pub async fn start(&self) -> anyhow::Result<Readiness> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| anyhow::anyhow!("--listen {}: {e}", self.listen))?;
        let readiness = Readiness::default();
        let app = ops_router(readiness.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the ops listener stopped");
            }
        });
        Ok(readiness)
    }
}

/// Whether a worker has reached its stores; `/readyz` answers from it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Marks it ready once the database has answered a query and the Kafka of `kafka` its
    /// metadata request (for `topic`, when the worker follows one); tried again every
    /// couple of seconds until both have. Runs beside the worker's loop, which waits for
    /// its stores on its own.
    pub fn when_connected(&self, pool: PgPool, kafka: ClientConfig, topic: Option<&'static str>) {
        let readiness = self.clone();
        tokio::spawn(async move {
            loop {
                match connected(&pool, &kafka, topic).await {
                    Ok(()) => {
                        readiness.ready();
                        tracing::info!("ready: the database and Kafka answered");
                        return;
                    }
                    Err(why) => tracing::info!(%why, "not ready yet"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
}

/// Whether the database and the Kafka answer.
async fn connected(pool: &PgPool, kafka: &ClientConfig, topic: Option<&'static str>) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = kafka.create().map_err(|e| format!("Kafka: {e}"))?;
        client
            .fetch_metadata(topic, Duration::from_secs(5))
            .map(drop)
            .map_err(|e| format!("Kafka: {e}"))
    })
    .await
    .map_err(|e| format!("Kafka: {e}"))?
}

/// `/healthz`, `/readyz` and `/metrics` of a worker.
pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || ready_answer(readiness.clone())))
        .route("/metrics", get(meridian_shared::metrics::serve_metrics))
}

async fn ready_answer(readiness: Readiness) -> Response {
    if readiness.is_ready() {
        return (StatusCode::OK, "ready").into_response();
    }
    let problem = serde_json::json!({
        "type": "about:blank",
        "title": "Not ready",
        "status": 503,
        "detail": "the worker has not reached its database and Kafka yet",
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/problem+json")],
        problem.to_string(),
    )
        .into_response()
}

impl WorkerOptions {
    /// The database, connected on first use (a worker started before its database waits
    /// for it instead of failing).
    pub fn pool(&self, connections: u32) -> anyhow::Result<PgPool> {
        let ca = meridian_shared::serve::read_ca(self.database_ca_file.as_deref(), "--database-ca-file")
            .map_err(anyhow::Error::msg)?;
        let connect = meridian_shared::tls::pg_options(&self.database_url, ca.as_deref())
            .map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
        Ok(meridian_shared::serve::pool_options(connections).connect_lazy_with(connect))
    }
}

/// Runs `handler` on the Region's Kafka until Ctrl-C or SIGTERM.
pub async fn consume<H: Handler>(options: &WorkerOptions, handler: H) -> anyhow::Result<()> {
    let readiness = options.ops.start().await?;
    let pool = options.pool(4)?;
    let kafka = options.kafka.client_config()?;
    readiness.when_connected(pool.clone(), kafka.clone(), Some(handler.topic()));
    tracing::info!(
        consumer = handler.name(),
        topic = handler.topic(),
        "following the Region's Kafka"
    );
    consumer::run_kafka(pool, kafka, handler, meridian_shared::shutdown::signal()).await
}
