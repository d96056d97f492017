//! Two Regions on this machine, as a cluster would run them, for `meridian bench
//! crossborder` and the cross-border tests: Frankfurt (`eu-central-1`, Germany, holding the
//! PatientIndex) and Paris (`eu-west-3`, France), each its own PostgreSQL server with the
//! platform schema and the Region's clinical and vault roles, each its own records service
//! with its registrar, both behind one HTTP entry point that routes `/{cc}/...` to the
//! country's Region. Records services call each other through that entry point as their
//! Region's service account, with tokens of a local issuer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use meridian_crds::Country;
use meridian_crds::serving::Serving;
use meridian_localpg::TempCluster;
use meridian_shared::auth::{DevIssuer, Role};
use meridian_shared::pool::Pool;
use sqlx::PgPool;
use tower::ServiceExt;

use super::peers;
use super::registrar::Registrar;
use super::{CrossBorder, Directory, IndexLink};
use crate::http::{Countries, CountryEntry, Service, app};
use crate::keys::{self, Keyring};
use crate::roles::{as_login, create_login};
use crate::validate::Rules;

/// The index role's name and password in the home Region's database.
const INDEX_ROLE: &str = "mpi_index";
const PASSWORD: &str = "two-regions";

/// The example Countries the two Regions hold.
pub fn examples() -> Vec<Country> {
    [
        include_str!("../../../../examples/countries/de.yaml"),
        include_str!("../../../../examples/countries/fr.yaml"),
        include_str!("../../../../examples/countries/jp.yaml"),
    ]
    .iter()
    .map(|yaml| serde_yaml_ng::from_str(yaml).expect("the examples are Countries"))
    .collect()
}

/// One Region: its database, roles, records service and PatientIndex link.
pub struct RegionUnderTest {
    pub name: &'static str,
    pub code: &'static str,
    pub pg: TempCluster,
    /// As the superuser, for looking into the tables.
    pub admin: PgPool,
    pub service: Arc<Service>,
    pub link: IndexLink,
    pub countries: Countries,
    registrar: tokio::task::JoinHandle<()>,
}

impl Drop for RegionUnderTest {
    fn drop(&mut self) {
        self.registrar.abort();
    }
}

/// How the two Regions are set up.
pub struct Options {
    /// How long a records service waits for the other Region.
    pub timeout: Duration,
    /// Where Paris's records service reaches other Regions, instead of the entry point (a
    /// dead address, for the failure tests).
    pub peer_url: Option<String>,
    /// Connections each records service holds to its database.
    pub connections: u32,
    /// Lookups abroad one clinician may make per minute.
    pub lookups_per_minute: u32,
    /// Whether the databases sync their commits to disk, as production does (benchmarks);
    /// throwaway otherwise (tests).
    pub durable: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: peers::DEFAULT_TIMEOUT,
            peer_url: None,
            connections: 8,
            lookups_per_minute: super::LOOKUPS_PER_WINDOW,
            durable: false,
        }
    }
}

/// Frankfurt and Paris (see the module's documentation).
pub struct TwoRegions {
    pub frankfurt: RegionUnderTest,
    pub paris: RegionUnderTest,
    pub issuer: Arc<DevIssuer>,
    /// The entry point.
    pub addr: SocketAddr,
    /// The index's database as the superuser, for looking into it.
    pub index: PgPool,
    /// The PatientIndex's key Secret.
    pub index_keys: BTreeMap<String, String>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TwoRegions {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TwoRegions {
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let issuer = Arc::new(DevIssuer::new("http://two-regions", "meridian"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let countries = examples();
        let directory = Directory::default();
        directory.set(&countries);
        let durability = meridian_localpg::Durability::fsync(options.durable);
        let (frankfurt_pg, paris_pg) =
            tokio::join!(TempCluster::start_with(durability), TempCluster::start_with(durability));
        let (frankfurt_pg, paris_pg) = (frankfurt_pg?, paris_pg?);
        // The index lives in Frankfurt, with its own role.
        let index = PgPool::connect(&frankfurt_pg.url()).await?;
        {
            let mut conn = index.acquire().await?;
            meridian_shared::schema::mpi::ensure(&mut conn).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE ROLE {INDEX_ROLE} LOGIN PASSWORD '{PASSWORD}'; {}",
                meridian_shared::schema::mpi::grant_sql(INDEX_ROLE)
            )))
            .execute(&mut *conn)
            .await?;
        }
        let mut index_keys = BTreeMap::new();
        super::super::mpi::ensure_first_key(&mut index_keys);
        let linked: Vec<String> = countries
            .iter()
            .filter(|c| c.spec.regulatory.consent.record_sharing)
            .map(|c| c.spec.code.clone())
            .collect();
        let link = super::super::mpi::Link::secret_data(
            &index_keys,
            &as_login(&frankfurt_pg.url(), INDEX_ROLE, PASSWORD),
            None,
            "eu-central-1",
            &linked,
        );
        let accept = Arc::new(issuer.verifier_for(peers::AUDIENCE));
        let peer = |region: &str, url: &str| CrossBorder {
            limiter: Arc::new(super::Limiter::new(options.lookups_per_minute)),
            ..CrossBorder::with_dev_issuer(
                issuer.clone(),
                region,
                url,
                options.timeout,
                accept.clone(),
                directory.clone(),
            )
        };
        let entry_point = format!("http://{addr}");
        let frankfurt = region(
            "eu-central-1",
            "DE",
            frankfurt_pg,
            &countries,
            peer("eu-central-1", &entry_point),
            &link,
            &issuer,
            options.connections,
        )
        .await?;
        let paris = region(
            "eu-west-3",
            "FR",
            paris_pg,
            &countries,
            peer("eu-west-3", options.peer_url.as_deref().unwrap_or(&entry_point)),
            &link,
            &issuer,
            options.connections,
        )
        .await?;
        let (de, fr) = (app(frankfurt.service.clone()), app(paris.service.clone()));
        let entry = Router::new().fallback(move |request: Request| {
            let router = if request.uri().path().starts_with("/fr/") {
                fr.clone()
            } else {
                de.clone()
            };
            async move { router.oneshot(request).await.into_response() }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, entry).await;
        });
        Ok(Self {
            frankfurt,
            paris,
            issuer,
            addr,
            index,
            index_keys,
            server,
        })
    }

    /// A clinician of `country` named `subject`.
    pub fn clinician(&self, subject: &str, country: &str) -> String {
        self.issuer
            .token(subject, &[Role::Practitioner], &[country], Duration::from_secs(3600))
    }
}

/// Region `name` holding country `code` in the database of `pg`, its records service using
/// `crossborder` and the PatientIndex `link`.
#[allow(clippy::too_many_arguments)]
async fn region(
    name: &'static str,
    code: &'static str,
    pg: TempCluster,
    countries: &[Country],
    crossborder: CrossBorder,
    link: &BTreeMap<String, String>,
    issuer: &DevIssuer,
    connections: u32,
) -> anyhow::Result<RegionUnderTest> {
    let admin = PgPool::connect(&pg.url()).await?;
    {
        let mut conn = admin.acquire().await?;
        meridian_shared::schema::prepare(&mut conn, &[code]).await?;
    }
    // Not named after a schema: a role's own-name schema comes first on its search path.
    create_login(
        &admin,
        "records_clinical",
        PASSWORD,
        meridian_shared::schema::workload_privileges,
    )
    .await?;
    create_login(
        &admin,
        "records_vault",
        PASSWORD,
        meridian_shared::schema::vault_privileges,
    )
    .await?;
    let clinical = crate::pool_options(connections)
        .connect(&as_login(&pg.url(), "records_clinical", PASSWORD))
        .await?;
    let vault = crate::pool_options(connections)
        .connect(&as_login(&pg.url(), "records_vault", PASSWORD))
        .await?;
    let mut data_keys = BTreeMap::new();
    keys::ensure_country(&mut data_keys, code);
    let country = countries
        .iter()
        .find(|c| c.spec.code == code)
        .expect("an example country");
    let served = Countries::default();
    served.set([CountryEntry {
        rules: Rules::of(&country.spec),
        serving: Serving::Ready,
        keys: Keyring::from_secret(&data_keys, code).map_err(|e| e.to_string()),
    }]);
    crossborder.link.set(link)?;
    let index_link = crossborder.link.clone();
    let registrar = tokio::spawn(
        Registrar::new(
            clinical.clone(),
            vault.clone(),
            served.clone(),
            index_link.clone(),
            name,
        )
        .run(),
    );
    let service = Service::new(
        Pool::like(&clinical),
        Pool::like(&vault),
        Arc::new(issuer.verifier()),
        served.clone(),
    )
    .with_crossborder(crossborder);
    Ok(RegionUnderTest {
        name,
        code,
        pg,
        admin,
        service: Arc::new(service),
        link: index_link,
        countries: served,
        registrar,
    })
}
