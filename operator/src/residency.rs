//! `meridian residency report`: where each Country's data lives, and evidence, read from
//! the stores themselves, that no store holds rows of a country it should not. A row of
//! country X is in its place only in the database (and search engine) of X's Region; rows
//! of a country that no longer exists are reported as retained data, not as violations
//! (`deletionPolicy: Retain` keeps them where they were).

use std::collections::BTreeMap;
use std::fmt::Write;

use meridian_crds::{Country, Region, RegionProvider, Residency};
use meridian_shared::schema::{PARTITIONED_TABLES, VAULT_SCHEMA, quoted};
use serde::Serialize;
use sqlx::PgPool;

use crate::backends::postgres::RoleNames;
use crate::controller::Context;
use crate::providers::LocalClusters;

/// The whole report, as `-o json` prints it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub countries: Vec<CountryPlacement>,
    pub stores: Vec<Store>,
    /// Rows found in a store where they do not belong.
    pub violations: Vec<String>,
    /// Stores that could not be read: their part of the evidence is missing.
    pub unreachable: Vec<String>,
}

/// Where one Country's data is.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountryPlacement {
    pub country: String,
    pub code: String,
    pub residency: &'static str,
    pub region: String,
    pub cloud_region: Option<String>,
    pub isolation: Option<String>,
    pub database: Option<String>,
    pub search: Option<String>,
    /// The country's partitions found in its Region's database.
    pub partitions: Vec<String>,
    pub index: Option<String>,
    /// Rows of the country in each records table and in the vault ([`RECORDS_TABLES`]), as
    /// its Region's database counts them.
    pub records: BTreeMap<String, i64>,
}

/// The records service's tables and the PII vault's, whose rows the report counts per country.
pub const RECORDS_TABLES: &[&str] = &[
    "patients",
    "fhir_resources",
    "fhir_history",
    "vault.patients",
    "vault.patient_history",
];

/// One store, what was asked of it, and what it answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Store {
    pub region: String,
    /// `database` or `search`.
    pub kind: &'static str,
    pub endpoint: String,
    pub evidence: Vec<Evidence>,
    /// What the store shows about the PII vault and a PatientIndex store (databases only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// A claim about a store and whether the store bears it out; one that does not is a violation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub claim: String,
    pub holds: bool,
    /// What was found, for people.
    pub found: String,
}

/// One query and its answer: rows per country code.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub query: String,
    pub rows: BTreeMap<String, i64>,
}

impl Report {
    /// 0: every row where it belongs; 1: violations; 2: a store could not be read.
    pub fn exit_code(&self) -> u8 {
        if !self.violations.is_empty() {
            1
        } else if !self.unreachable.is_empty() {
            2
        } else {
            0
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut rows = vec![
            [
                "COUNTRY",
                "RESIDENCY",
                "REGION",
                "CLOUD",
                "DATABASE",
                "SEARCH",
                "PARTITIONS",
                "INDEX",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for c in &self.countries {
            rows.push(vec![
                c.code.clone(),
                c.residency.into(),
                c.region.clone(),
                c.cloud_region.clone().unwrap_or_default(),
                c.database.clone().unwrap_or_else(|| "-".into()),
                c.search.clone().unwrap_or_else(|| "-".into()),
                c.partitions.len().to_string(),
                c.index.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out += &crate::dev::table::align(&rows);
        out += "\nRecords and the PII vault (rows per country, in its Region's database):\n";
        let mut records = vec![
            std::iter::once("COUNTRY")
                .chain(RECORDS_TABLES.iter().copied())
                .map(String::from)
                .collect::<Vec<_>>(),
        ];
        for c in &self.countries {
            records.push(
                std::iter::once(c.code.clone())
                    .chain(
                        RECORDS_TABLES
                            .iter()
                            .map(|t| c.records.get(*t).map_or("-".into(), i64::to_string)),
                    )
                    .collect(),
            );
        }
        out += &crate::dev::table::align(&records);
        out += "\nEvidence (rows per country code, read from each store):\n";
        for store in &self.stores {
            let _ = writeln!(out, "  {} {} ({}):", store.region, store.kind, store.endpoint);
            for e in &store.evidence {
                let counts: Vec<String> = e.rows.iter().map(|(cc, n)| format!("{cc}={n}")).collect();
                let shown = if counts.is_empty() {
                    "none".into()
                } else {
                    counts.join(" ")
                };
                let _ = writeln!(out, "    {:<60} {shown}", e.query);
            }
            for c in &store.checks {
                let verdict = if c.holds { "yes" } else { "NO" };
                let _ = writeln!(out, "    {}: {verdict} ({})", c.claim, c.found);
            }
        }
        for u in &self.unreachable {
            let _ = writeln!(out, "UNREACHABLE {u}");
        }
        if self.violations.is_empty() {
            out += "\nNo store holds rows of a country it should not.\n";
        } else {
            for v in &self.violations {
                let _ = writeln!(out, "VIOLATION {v}");
            }
        }
        out
    }
}

/// Reads every Region's stores and checks each row's country against where it belongs.
/// `local` gives the search directories of `local` Regions (read without locks).
pub async fn report(regions: &[Region], countries: &[Country], ctx: &Context, local: Option<&LocalClusters>) -> Report {
    let mut report = Report::default();
    // A code's home is the Region of the Country that holds it: a refused duplicate names
    // a Region that must not hold that code's rows.
    let home: BTreeMap<String, String> = countries
        .iter()
        .filter(|c| std::ptr::eq(meridian_crds::code_holder(c, countries), *c))
        .map(|c| (c.spec.code.to_ascii_uppercase(), c.spec.region.clone()))
        .collect();
    let mut endpoints: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut partitions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut indexes: BTreeMap<String, String> = BTreeMap::new();
    let mut records: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for region in regions {
        let name = region.metadata.name.clone().unwrap_or_default();
        let endpoint = match crate::plan_cmd::reading_endpoint(ctx, region).await {
            Ok(endpoint) => endpoint,
            Err(e) => {
                report.unreachable.push(format!("Region {name} database: {e}"));
                continue;
            }
        };
        let db = match ctx.databases.get(&endpoint.url) {
            Ok(db) => db,
            Err(e) => {
                report.unreachable.push(format!("Region {name} database: {e}"));
                continue;
            }
        };
        let mut vault = match vault_checks(db.pool(), &RoleNames::of(&name)).await {
            Ok(checks) => checks,
            Err(e) => {
                report
                    .unreachable
                    .push(format!("Region {name} database {} (the vault): {e}", endpoint.display));
                Vec::new()
            }
        };
        match index_checks(db.pool(), countries).await {
            Ok(checks) => vault.extend(checks),
            Err(e) => report.unreachable.push(format!(
                "Region {name} database {} (the PatientIndex): {e}",
                endpoint.display
            )),
        }
        match database_evidence(db.pool()).await {
            Ok((evidence, found)) => {
                check(&mut report, &name, "database", &evidence, &home);
                for (code, names) in found {
                    if home.get(&code) == Some(&name) {
                        partitions.entry(code).or_default().extend(names);
                    }
                }
                for e in &evidence {
                    let Some(table) = RECORDS_TABLES.iter().find(|t| e.query == count_query(t)) else {
                        continue;
                    };
                    for (code, rows) in &e.rows {
                        if home.get(code) == Some(&name) {
                            records
                                .entry(code.clone())
                                .or_default()
                                .insert(table.to_string(), *rows);
                        }
                    }
                }
                for c in vault.iter().filter(|c| !c.holds) {
                    report.violations.push(format!(
                        "Region {name} database: {} does not hold: {}",
                        c.claim, c.found
                    ));
                }
                report.stores.push(Store {
                    region: name.clone(),
                    kind: "database",
                    endpoint: endpoint.display.clone(),
                    evidence,
                    checks: vault,
                });
            }
            Err(e) => report
                .unreachable
                .push(format!("Region {name} database {}: {e}", endpoint.display)),
        }
        let search = match (region.spec.provider, local) {
            (RegionProvider::Local, Some(local)) => {
                let dir = local.dir(&name).join("search");
                match search_evidence(&dir) {
                    Ok((evidence, aliases)) => {
                        check(&mut report, &name, "search", &evidence, &home);
                        for (alias, index) in aliases {
                            indexes.insert(alias, index);
                        }
                        report.stores.push(Store {
                            region: name.clone(),
                            kind: "search",
                            endpoint: dir.display().to_string(),
                            evidence,
                            checks: Vec::new(),
                        });
                    }
                    Err(e) => report.unreachable.push(format!("Region {name} search: {e}")),
                }
                Some(format!("embedded engine {}", dir.display()))
            }
            _ => match ctx.providers.search_store(region).await {
                Ok((backend, display)) => {
                    if let meridian_search::Backend::OpenSearch(client) = &backend {
                        match client.census().await {
                            Ok(census) => {
                                let evidence = census_evidence(census);
                                check(&mut report, &name, "search", &evidence, &home);
                                report.stores.push(Store {
                                    region: name.clone(),
                                    kind: "search",
                                    endpoint: display.clone(),
                                    evidence,
                                    checks: Vec::new(),
                                });
                            }
                            Err(e) => report.unreachable.push(format!("Region {name} search {display}: {e}")),
                        }
                    }
                    // Which index each of the Region's countries searches, as the store says.
                    for code in home.iter().filter(|(_, r)| **r == name).map(|(code, _)| code) {
                        let alias = meridian_search::alias(code);
                        match backend.resolve(&alias).await {
                            Ok(Some(resolved)) => {
                                indexes.insert(alias, resolved.index);
                            }
                            Ok(None) => {}
                            Err(e) => report.unreachable.push(format!("Region {name} search {display}: {e}")),
                        }
                    }
                    Some(display)
                }
                Err(_) => None,
            },
        };
        endpoints.insert(name, (Some(endpoint.display), search));
    }
    let regions_by_name: BTreeMap<String, &Region> = regions
        .iter()
        .map(|r| (r.metadata.name.clone().unwrap_or_default(), r))
        .collect();
    // Refused duplicates (another Country holds their code) place nothing.
    for c in countries
        .iter()
        .filter(|c| std::ptr::eq(meridian_crds::code_holder(c, countries), *c))
    {
        let code = c.spec.code.to_ascii_uppercase();
        let region = regions_by_name.get(&c.spec.region);
        let (database, search) = endpoints.get(&c.spec.region).cloned().unwrap_or_default();
        let mut found = partitions.remove(&code).unwrap_or_default();
        found.sort();
        // A table without the country's rows counts none, once its Region's database answered.
        let mut counted = records.remove(&code).unwrap_or_default();
        if !found.is_empty() {
            for table in RECORDS_TABLES {
                counted.entry(table.to_string()).or_insert(0);
            }
        }
        report.countries.push(CountryPlacement {
            country: c.metadata.name.clone().unwrap_or_default(),
            code: code.clone(),
            residency: match c.spec.residency {
                Residency::Strict => "strict",
                Residency::Shared => "shared",
            },
            region: c.spec.region.clone(),
            cloud_region: region.map(|r| r.spec.cloud_region.clone()),
            isolation: region.map(|r| format!("{:?}", r.spec.isolation).to_lowercase()),
            database,
            search,
            partitions: found,
            index: indexes.get(&meridian_search::alias(&code)).cloned(),
            records: counted,
        });
    }
    report
}

/// Flags rows of a country whose Region is another one.
fn check(report: &mut Report, region: &str, kind: &str, evidence: &[Evidence], home: &BTreeMap<String, String>) {
    for e in evidence {
        for (code, rows) in &e.rows {
            match home.get(code) {
                Some(home) if home != region => report.violations.push(format!(
                    "Region {region} {kind} holds {rows} row(s) of {code} ({}), whose Region is {home}",
                    e.query
                )),
                _ => {}
            }
        }
    }
}

/// The query counting `table`'s rows per country code.
fn count_query(table: &str) -> String {
    format!("SELECT country_code, count(*) FROM {table} GROUP BY country_code")
}

/// Rows per country code in every partitioned table (attached partitions, through the
/// parent) and in every detached partition; and the partitions by country code.
async fn database_evidence(pool: &PgPool) -> Result<(Vec<Evidence>, BTreeMap<String, Vec<String>>), sqlx::Error> {
    let mut evidence = Vec::new();
    for table in PARTITIONED_TABLES {
        evidence.push(counted(pool, count_query(table)).await?);
    }
    // Every table named like a partition, attached or not (a detached one is invisible
    // through its parent, yet holds data), in the platform's schema and in the vault's.
    let relations: Vec<(String, bool)> = sqlx::query_as(
        "SELECT CASE WHEN n.nspname = current_schema() THEN c.relname::text
                     ELSE n.nspname || '.' || c.relname END,
                c.relispartition
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN (current_schema(), $1) AND c.relkind = 'r' AND c.relname ~ '^[a-z_]+_[a-z]{2}$'
          ORDER BY 1",
    )
    .bind(VAULT_SCHEMA)
    .fetch_all(pool)
    .await?;
    let mut partitions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (relation, attached) in relations {
        let Some((table, code)) = relation.rsplit_once('_') else {
            continue;
        };
        if !PARTITIONED_TABLES.contains(&table) {
            continue;
        }
        partitions
            .entry(code.to_ascii_uppercase())
            .or_default()
            .push(relation.clone());
        if !attached {
            let query = format!(
                "SELECT country_code, count(*) FROM {} GROUP BY country_code",
                quoted(&relation)
            );
            evidence.push(counted(pool, query).await?);
        }
    }
    Ok((evidence, partitions))
}

/// A `sealed` value that reads as plaintext JSON: it begins with `{` or `[` and ends with
/// `}` or `]`, and every byte between is printable text (ASCII from space, tab, line feed,
/// carriage return, or a byte of a multi-byte UTF-8 sequence). Checked on the hex form, so
/// that no binary value can make the query fail; AES-GCM output (a random nonce, then
/// ciphertext and tag) almost never passes: 200 random bytes all printable is about 1 in 10^11.
const PLAINTEXT_JSON: &str = "encode(sealed, 'hex') ~ '^(7b|5b)([2-7][0-9a-f]|0[9ad]|[89a-f][0-9a-f])*(7d|5d)$'";

/// What the database shows about the PII vault: the workload (clinical) role holds no
/// privilege on schema `vault` or on anything in it, and no `sealed` value in the vault
/// reads as plaintext JSON. Empty when the database has no vault yet.
async fn vault_checks(pool: &PgPool, roles: &RoleNames) -> Result<Vec<Check>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL")
        .bind(VAULT_SCHEMA)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut checks = Vec::new();
    let workload = &roles.workload;
    let role_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(workload)
        .fetch_one(pool)
        .await?;
    let (on_schema, on_relations) = if role_exists {
        let on_schema: bool = sqlx::query_scalar(
            "SELECT has_schema_privilege($1, $2, 'USAGE') OR has_schema_privilege($1, $2, 'CREATE')",
        )
        .bind(workload)
        .bind(VAULT_SCHEMA)
        .fetch_one(pool)
        .await?;
        let on_relations: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.relnamespace = to_regnamespace($2)
                AND has_table_privilege($1, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
              ORDER BY 1",
        )
        .bind(workload)
        .bind(VAULT_SCHEMA)
        .fetch_all(pool)
        .await?;
        (on_schema, on_relations)
    } else {
        (false, Vec::new())
    };
    checks.push(Check {
        claim: format!("the workload role {workload} holds no privilege on schema {VAULT_SCHEMA}"),
        holds: !on_schema,
        found: if on_schema {
            format!("has_schema_privilege({workload}, {VAULT_SCHEMA}) is true")
        } else if role_exists {
            format!("has_schema_privilege({workload}, {VAULT_SCHEMA}) is false for USAGE and CREATE")
        } else {
            format!("no role {workload} in this database")
        },
    });
    checks.push(Check {
        claim: format!("the workload role {workload} holds no privilege on a table of schema {VAULT_SCHEMA}"),
        holds: on_relations.is_empty(),
        found: if on_relations.is_empty() {
            "none".into()
        } else {
            on_relations.join(", ")
        },
    });
    for table in ["vault.patients", "vault.patient_history"] {
        let query =
            format!("SELECT country_code, count(*) FILTER (WHERE {PLAINTEXT_JSON}) FROM {table} GROUP BY country_code");
        let plain = counted(pool, query).await?;
        let total: i64 = plain.rows.values().sum();
        let per_country: Vec<String> = plain.rows.iter().map(|(cc, n)| format!("{cc}={n}")).collect();
        checks.push(Check {
            claim: format!("no sealed value of {table} reads as plaintext JSON"),
            holds: total == 0,
            found: if per_country.is_empty() {
                "no rows".into()
            } else {
                format!("rows reading as plaintext JSON: {}", per_country.join(" "))
            },
        });
    }
    Ok(checks)
}

/// The columns `mpi.entries` has, and nothing else may be added to it unnoticed.
const INDEX_COLUMNS: &[&str] = &[
    "hash",
    "key_version",
    "home_country",
    "home_region",
    "client_id",
    "updated_at",
];

/// What the database shows about a PatientIndex store it holds (schema `mpi`): how many
/// entries, per home country; that the schema holds the entries table only (no clinical
/// table), with its known columns only; and that no value of any column, as text (the hash
/// as hex and as raw bytes), matches any Country's `nationalIdPattern`. Empty without one.
async fn index_checks(pool: &PgPool, countries: &[Country]) -> Result<Vec<Check>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('mpi.entries') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut checks = Vec::new();
    let per_country = counted(
        pool,
        "SELECT home_country, count(*) FROM mpi.entries GROUP BY home_country".into(),
    )
    .await?;
    let total: i64 = per_country.rows.values().sum();
    let spread: Vec<String> = per_country.rows.iter().map(|(cc, n)| format!("{cc}={n}")).collect();
    checks.push(Check {
        claim: "the PatientIndex store (mpi.entries) holds keyed hashes and pointers only".into(),
        holds: true,
        found: format!(
            "{total} entries{}",
            if spread.is_empty() {
                String::new()
            } else {
                format!(" ({})", spread.join(" "))
            }
        ),
    });
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
          WHERE c.relnamespace = 'mpi'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    checks.push(Check {
        claim: "schema mpi holds no table but entries (no clinical data)".into(),
        holds: tables == ["entries"],
        found: tables.join(", "),
    });
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute
          WHERE attrelid = 'mpi.entries'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(pool)
    .await?;
    checks.push(Check {
        claim: format!("mpi.entries has the columns {} only", INDEX_COLUMNS.join(", ")),
        holds: columns.iter().map(String::as_str).eq(INDEX_COLUMNS.iter().copied()),
        found: columns.join(", "),
    });
    let mut matching = Vec::new();
    for country in countries {
        let Some(pattern) = &country.spec.regulatory.national_id_pattern else {
            continue;
        };
        // Anchored, as the workloads read the pattern: a whole value that is an ID.
        let anchored = format!("^({})$", pattern.trim_start_matches('^').trim_end_matches('$'));
        let found: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT count(*) FROM mpi.entries e
              WHERE e.key_version ~ $1 OR e.home_country ~ $1 OR e.home_region ~ $1 OR e.client_id::text ~ $1
                 OR encode(e.hash, 'hex') ~ $1 OR encode(e.hash, 'escape') ~ $1 OR e.updated_at::text ~ $1",
        )
        .bind(&anchored)
        .fetch_one(pool)
        .await;
        match found {
            Ok(0) => {}
            Ok(n) => matching.push(format!("{n} entries match {}'s pattern", country.spec.code)),
            // A pattern PostgreSQL reads differently: said, not hidden.
            Err(e) => matching.push(format!("{}'s pattern could not be checked: {e}", country.spec.code)),
        }
    }
    checks.push(Check {
        claim: "no value in mpi.entries matches any Country's nationalIdPattern".into(),
        holds: matching.is_empty(),
        found: if matching.is_empty() {
            format!(
                "checked against {} patterns",
                countries
                    .iter()
                    .filter(|c| c.spec.regulatory.national_id_pattern.is_some())
                    .count()
            )
        } else {
            matching.join("; ")
        },
    });
    Ok(checks)
}

async fn counted(pool: &PgPool, query: String) -> Result<Evidence, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(query.clone()))
        .fetch_all(pool)
        .await?;
    Ok(Evidence {
        query,
        rows: rows.into_iter().collect(),
    })
}

/// Documents per country code in each index of an embedded engine, and its aliases.
fn search_evidence(dir: &std::path::Path) -> Result<(Vec<Evidence>, BTreeMap<String, String>), String> {
    let census = meridian_search::embedded::census(dir).map_err(|e| e.to_string())?;
    let evidence = census_evidence(census);
    let aliases = std::fs::read(dir.join("aliases.json"))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default();
    Ok((evidence, aliases))
}

/// Options of `meridian residency report`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReportOptions {
    /// Folder of Country and Region manifests (for `meridian dev`).
    #[arg(long, default_value = "examples")]
    pub manifests: std::path::PathBuf,
    /// Data directory of `meridian dev`, for `local` Regions.
    #[arg(long, default_value = ".meridian")]
    pub data_dir: std::path::PathBuf,
    /// Read Countries, Regions and Secrets from the cluster of the current kubeconfig
    /// instead of the manifests.
    #[arg(long)]
    pub cluster: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How the report is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// The providers of a command run against the cluster of `client` (the current kubeconfig):
/// Regions' published Secrets in their namespaces, their stacks' readiness. Commands use
/// only this reading side (and writing the Region's own Secrets), never a stack's creation.
pub fn cluster_context(client: kube::Client) -> Context {
    let namespace = client.default_namespace().to_string();
    let secrets = std::sync::Arc::new(crate::k8s::KubeSecrets::new(client.clone(), namespace));
    use crate::providers::{AwsStacks, InClusterStacks, StackConfig};
    let providers = crate::providers::Providers::new(None, secrets)
        .with_in_cluster(InClusterStacks::new(client.clone(), StackConfig::default()))
        .with_aws(AwsStacks::new(client, StackConfig::default(), None));
    Context::new(providers)
}

/// Runs the report as the options say.
pub async fn run(options: &ReportOptions) -> anyhow::Result<Report> {
    if options.cluster {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))?;
        let regions = kube::Api::<Region>::all(client.clone())
            .list(&Default::default())
            .await?
            .items;
        let countries = kube::Api::<Country>::all(client.clone())
            .list(&Default::default())
            .await?
            .items;
        let ctx = cluster_context(client);
        return Ok(report(&regions, &countries, &ctx, None).await);
    }
    let loaded = crate::dev::manifests::load(&options.manifests)?;
    let (local, _lock) = crate::plan_cmd::local_clusters(&options.data_dir)?;
    let local = std::sync::Arc::new(local);
    let ctx = Context::new(crate::providers::Providers::new(
        Some(local.clone()),
        std::sync::Arc::new(loaded.secrets.clone()),
    ));
    let regions: Vec<Region> = loaded.regions.values().map(|l| l.object.clone()).collect();
    let countries: Vec<Country> = loaded.countries.values().map(|l| l.object.clone()).collect();
    // A stopped `meridian dev`: its clusters are started for reading, then stopped.
    for region in regions.iter().filter(|r| r.spec.provider == RegionProvider::Local) {
        let name = region.metadata.name.clone().unwrap_or_default();
        if local.exists(&name) && local.locate(&name).is_err() {
            local.ensure(&name).await?;
        }
    }
    let report = report(&regions, &countries, &ctx, Some(&local)).await;
    local.stop_all();
    Ok(report)
}

fn census_evidence(census: Vec<meridian_search::model::Census>) -> Vec<Evidence> {
    census
        .into_iter()
        .map(|c| Evidence {
            query: format!("documents per countryCode in index {}", c.index),
            rows: c.countries.into_iter().map(|(code, n)| (code, n as i64)).collect(),
        })
        .collect()
}
