//! `meridian residency report`: where each Country's data lives, and evidence, read from
//! the stores themselves, that no store holds rows of a country it should not. A row of
//! country X is in its place only in the database (and search engine) of X's Region; rows
//! of a country that no longer exists are reported as retained data, not as violations
//! (`deletionPolicy: Retain` keeps them where they were).

use std::collections::BTreeMap;
use std::fmt::Write;

use meridian_crds::{Country, Region, RegionProvider, Residency};
use meridian_shared::schema::PARTITIONED_TABLES;
use serde::Serialize;
use sqlx::PgPool;

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
}

/// One store, what was asked of it, and what it answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Store {
    pub region: String,
    /// `database` or `search`.
    pub kind: &'static str,
    pub endpoint: String,
    pub evidence: Vec<Evidence>,
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
    for region in regions {
        let name = region.metadata.name.clone().unwrap_or_default();
        let endpoint = match ctx.providers.locate(region).await {
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
        match database_evidence(db.pool()).await {
            Ok((evidence, found)) => {
                check(&mut report, &name, "database", &evidence, &home);
                for (code, names) in found {
                    if home.get(&code) == Some(&name) {
                        partitions.entry(code).or_default().extend(names);
                    }
                }
                report.stores.push(Store {
                    region: name.clone(),
                    kind: "database",
                    endpoint: endpoint.display.clone(),
                    evidence,
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

/// Rows per country code in every partitioned table (attached partitions, through the
/// parent) and in every detached partition; and the partitions by country code.
async fn database_evidence(pool: &PgPool) -> Result<(Vec<Evidence>, BTreeMap<String, Vec<String>>), sqlx::Error> {
    let mut evidence = Vec::new();
    for table in PARTITIONED_TABLES {
        let query = format!("SELECT country_code, count(*) FROM {table} GROUP BY country_code");
        evidence.push(counted(pool, query).await?);
    }
    // Every table named like a partition, attached or not (a detached one is invisible
    // through its parent, yet holds data).
    let relations: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ '^[a-z_]+_[a-z]{2}$'
          ORDER BY c.relname",
    )
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
            let query = format!("SELECT country_code, count(*) FROM \"{relation}\" GROUP BY country_code");
            evidence.push(counted(pool, query).await?);
        }
    }
    Ok((evidence, partitions))
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
        let namespace = client.default_namespace().to_string();
        let secrets = std::sync::Arc::new(crate::k8s::KubeSecrets::new(client.clone(), namespace));
        // Only the providers' reading side is used: published Secrets and readiness.
        use crate::providers::{AwsStacks, InClusterStacks, StackConfig};
        let providers = crate::providers::Providers::new(None, secrets)
            .with_in_cluster(InClusterStacks::new(client.clone(), StackConfig::default()))
            .with_aws(AwsStacks::new(client, StackConfig::default(), None));
        let ctx = Context::new(providers);
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
