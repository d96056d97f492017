//! `meridian`: one binary for the control plane and (as later issues land) the workloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use meridian_shared::telemetry::{LogFormat, Telemetry};

// The services allocate for every request (JSON, HTTP buffers); under load glibc's malloc
// took about a sixth of the records service's CPU, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Meridian: a Kubernetes control plane for multi-country healthcare platforms.
#[derive(Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    /// How log lines (stderr) are written: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, env = "MERIDIAN_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine: PostgreSQL per Region, the reconcilers driven by a
    /// folder of manifests, and one HTTP entry point.
    Dev {
        /// Folder of Country, Region (and Secret) manifests, watched for changes.
        #[arg(long, default_value = "examples")]
        manifests: PathBuf,
        /// Where the PostgreSQL clusters keep their data across restarts.
        #[arg(long, default_value = ".meridian")]
        data_dir: PathBuf,
        /// Address of the HTTP entry point.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Development only: a token issuer for a cluster without an identity provider (the kind
    /// walkthrough); it signs a token for anyone who asks.
    DevIssuer(meridian_operator::dev::issuer::DevIssuerOptions),
    /// Run the Kubernetes operator (in a cluster, or against the current kubeconfig).
    Operator(meridian_operator::k8s::OperatorOptions),
    /// Run the booking workload for one Region: its database, its countries.
    Booking(meridian_booking::serve::BookingOptions),
    /// Run the records workload (FHIR R4, the PII vault) for one Region.
    Records(meridian_records::serve::RecordsOptions),
    /// Publish a Region's outbox to its Kafka (one relay publishes at a time per Region).
    Relay(meridian_events::worker::WorkerOptions),
    /// Issue a Region's invoices and credit notes from its `appointment-events`.
    Billing(meridian_billing::serve::BillingOptions),
    /// Count a Region's appointments per minute from its `appointment-events`.
    Analytics(meridian_events::worker::WorkerOptions),
    /// Keep a Region's search indexes current from its `practitioner-events`.
    Indexer(meridian_search::indexer::IndexerOptions),
    /// Notify patients of a Region (re-assignments, rebooking, reminders) by e-mail or SMS,
    /// from its appointment events.
    Notifications(Box<meridian_notifications::serve::NotificationsOptions>),
    /// The Region's event backbone.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Measure a hot path and print its figures; the last line is `key=value` pairs.
    #[command(subcommand)]
    Bench(Bench),
    /// Print the CustomResourceDefinitions: `meridian crds | kubectl apply -f -`.
    Crds,
    /// Data residency: where each country's data is, proven from the stores.
    #[command(subcommand)]
    Residency(ResidencyCommand),
    /// The audit trail of personal data.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The PII vault's data keys.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// The PatientIndex's HMAC keys.
    #[command(subcommand)]
    Mpi(MpiCommand),
    /// Print the changes the reconcilers would make for a folder of manifests, changing nothing.
    /// Exits 1 on invalid manifests, 2 when a store cannot be read.
    Plan {
        /// Folder of Country and Region manifests.
        #[arg(long, default_value = "examples")]
        manifests: PathBuf,
        /// Data directory of `meridian dev`, for `local` Regions.
        #[arg(long, default_value = ".meridian")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ResidencyCommand {
    /// Where each Country's data lives, with evidence read from every store; exits 1 when a
    /// store holds rows of a country it should not, 2 when a store could not be read.
    Report(meridian_operator::residency::ReportOptions),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chains of every country in a Region's database: one line per
    /// country; exits 1 when a chain is broken, 2 when the database cannot be read.
    Verify(meridian_operator::audit_cmd::VerifyOptions),
}

#[derive(Subcommand)]
enum MpiCommand {
    /// Add the PatientIndex's next key version, make it active, hand it to the linked
    /// Regions' records services, register every patient again under it from their home
    /// Regions, and retire the older versions; exits 1 when entries are left under an older
    /// key, 2 when the index, a Region or a database cannot be reached.
    Rotate(meridian_operator::mpi_cmd::MpiOptions),
    /// Register every patient again under the active key and retire the older versions
    /// (finishes an interrupted rotation); exit codes as `rotate`.
    Rekey(meridian_operator::mpi_cmd::MpiOptions),
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Add a country's next data key to its Region's `vault-keys` Secret, make it active, and
    /// re-encrypt the country's vault rows under it; exits 1 when rows could not be moved,
    /// 2 when the Region, its keys or its database cannot be reached.
    Rotate(meridian_operator::vault_cmd::VaultOptions),
    /// Re-encrypt a country's vault rows still under an older key onto the active key
    /// (finishes an interrupted rotation); exit codes as `rotate`.
    Rekey(meridian_operator::vault_cmd::VaultOptions),
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Events the consumers gave up on (`<topic>.dlq`).
    #[command(subcommand)]
    Dlq(meridian_events::dlq::DlqCommand),
}

#[derive(Subcommand)]
enum Bench {
    /// Booking throughput over HTTP and against the bare database, and a double-booking check.
    Booking(meridian_booking::bench::BookingBench),
    /// FHIR create/read/update/search over HTTP against bare SQL on the same tables, and a
    /// 100-entry transaction Bundle.
    Records(meridian_records::bench::RecordsBench),
    /// French clinicians looking German patients up through the PatientIndex, Germany's
    /// records service over HTTP, beside the same lookup as bare SQL.
    Crossborder(meridian_records::crossborder::bench::CrossborderBench),
    /// The event backbone against tansu: relay throughput beside a bare producer, and a
    /// booking's commit to its invoice through Kafka beside the same on the outbox.
    Events(meridian_billing::bench::EventsBench),
    /// Query speed and recall of the embedded search engine, against PostgreSQL full-text search, trigrams and ILIKE.
    Search(meridian_search::bench::SearchBench),
    /// `meridian dev` holding every country (examples/world): seconds to all Ready, peak
    /// memory, and the writes of a resync with nothing changed.
    World(meridian_operator::bench_world::WorldBench),
}

fn main() -> ExitCode {
    // The kube client's TLS takes rustls's process-wide provider; with the AWS SDK's
    // aws-lc-rs compiled in beside ring, it has to be named.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = Cli::command().get_matches();
    // Traces name their service after the command: meridian-records, meridian-operator, ...
    let service = format!("meridian-{}", matches.subcommand_name().unwrap_or("cli"));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let telemetry = Telemetry::init(cli.log_format, &service, runtime.handle().clone());
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev {
                manifests,
                data_dir,
                listen,
            } => {
                meridian_operator::dev::run(meridian_operator::dev::DevOptions {
                    manifests,
                    data_dir,
                    listen,
                })
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::DevIssuer(options) => {
                meridian_operator::dev::issuer::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Operator(options) => {
                meridian_operator::k8s::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Booking(options) => {
                meridian_booking::serve::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Records(options) => {
                meridian_records::serve::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Relay(options) => {
                meridian_events::relay::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Notifications(options) => {
                meridian_notifications::serve::run(*options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Billing(options) => {
                meridian_billing::serve::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Indexer(options) => {
                meridian_search::indexer::run(options).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Analytics(options) => {
                meridian_events::worker::consume(&options, meridian_analytics::AnalyticsHandler).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Events(EventsCommand::Dlq(command)) => {
                print!("{}", meridian_events::dlq::run(command).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::Booking(options)) => {
                print!("{}", meridian_booking::bench::run(options).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::Records(options)) => {
                print!("{}", meridian_records::bench::run(options).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::Events(options)) => {
                print!("{}", meridian_billing::bench::run(options).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::Crossborder(options)) => {
                print!("{}", meridian_records::crossborder::bench::run(options).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::Search(options)) => {
                print!("{}", meridian_search::bench::run(options).await?);
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::World(options)) => {
                print!("{}", meridian_operator::bench_world::run(options).await?.text());
                Ok(ExitCode::SUCCESS)
            }
            Command::Residency(ResidencyCommand::Report(options)) => {
                let report = meridian_operator::residency::run(&options).await?;
                if options.output == meridian_operator::residency::Output::Json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.text());
                }
                Ok(ExitCode::from(report.exit_code()))
            }
            Command::Audit(AuditCommand::Verify(options)) => {
                let verification = meridian_operator::audit_cmd::run(&options).await;
                print!("{}", verification.text());
                if let Some(why) = &verification.unreadable {
                    eprintln!("error: {why}");
                }
                Ok(ExitCode::from(verification.exit_code()))
            }
            Command::Vault(command) => {
                let (options, rotate) = match command {
                    VaultCommand::Rotate(options) => (options, true),
                    VaultCommand::Rekey(options) => (options, false),
                };
                let outcome = meridian_operator::vault_cmd::run(&options, rotate).await;
                print!("{}", outcome.text);
                if let Some(why) = &outcome.error {
                    eprintln!("error: {why}");
                }
                Ok(ExitCode::from(outcome.exit_code()))
            }
            Command::Mpi(command) => {
                let (options, rotate) = match command {
                    MpiCommand::Rotate(options) => (options, true),
                    MpiCommand::Rekey(options) => (options, false),
                };
                let outcome = meridian_operator::mpi_cmd::run(&options, rotate).await;
                print!("{}", outcome.text);
                if let Some(why) = &outcome.error {
                    eprintln!("error: {why}");
                }
                Ok(ExitCode::from(outcome.exit_code()))
            }
            Command::Crds => {
                print!("{}", meridian_crds::crds_yaml());
                Ok(ExitCode::SUCCESS)
            }
            Command::Plan { manifests, data_dir } => {
                let report = meridian_operator::plan_cmd::run(&manifests, &data_dir).await?;
                print!("{}", report.text);
                Ok(ExitCode::from(report.exit_code()))
            }
        }
    });
    // The spans not yet exported go out while the runtime (which sends them) still runs.
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            let e: anyhow::Error = e;
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
