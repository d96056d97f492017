//! What every process of a Region's event backbone is started with — the Region's database
//! and its Kafka — and the loop of a consumer deployed on its own (`meridian billing`,
//! `meridian analytics`): it follows its topic in its consumer group until Ctrl-C or SIGTERM.

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
    let pool = options.pool(4)?;
    let kafka = options.kafka.client_config()?;
    tracing::info!(
        consumer = handler.name(),
        topic = handler.topic(),
        "following the Region's Kafka"
    );
    consumer::run_kafka(pool, kafka, handler, meridian_shared::shutdown::signal()).await
}
