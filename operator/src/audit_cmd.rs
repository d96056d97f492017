//! `meridian audit verify`: recomputes the hash chains of every country's audit trail in one
//! Region's database and says where one breaks. The Region is found as `meridian dev` runs
//! it (its manifests and data directory, like `meridian plan` and `meridian residency
//! report`), or given as a connection URL.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;

use meridian_crds::RegionProvider;
use meridian_shared::audit;
use sqlx::PgConnection;

use crate::controller::Context;
use crate::providers::{ConnectionUrl, Providers};

/// Options of `meridian audit verify`.
#[derive(clap::Args, Clone, Debug)]
pub struct VerifyOptions {
    /// The Region whose database is checked (one of `meridian dev`'s, from the manifests).
    #[arg(long, required_unless_present = "database_url", conflicts_with = "database_url")]
    pub region: Option<String>,
    /// Folder of Region (and Secret) manifests, for `--region`.
    #[arg(long, default_value = "examples")]
    pub manifests: PathBuf,
    /// Data directory of `meridian dev`, for `--region`.
    #[arg(long, default_value = ".meridian")]
    pub data_dir: PathBuf,
    /// Check the database at this URL instead (any Region; a role that may read `audit`
    /// and `audit_heads`, e.g. the owner's from the Region's `postgres-owner` Secret).
    #[arg(long, env = "MERIDIAN_AUDIT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// What one country's chains came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { records: u64, chains: i64 },
    Broken { chain: i16, record: i64 },
}

/// The result of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// Country code to its verdict, in code order.
    pub countries: Vec<(String, Verdict)>,
    /// Why the database could not be read, when it could not.
    pub unreadable: Option<String>,
}

impl Verification {
    /// 0: every chain intact; 1: a chain is broken; 2: the database could not be read.
    pub fn exit_code(&self) -> u8 {
        if self.unreadable.is_some() {
            2
        } else if self.countries.iter().any(|(_, v)| matches!(v, Verdict::Broken { .. })) {
            1
        } else {
            0
        }
    }

    /// One line per country.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (code, verdict) in &self.countries {
            let _ = match verdict {
                Verdict::Intact { records, chains } => {
                    writeln!(out, "{code}: {records} records in {chains} chains, intact")
                }
                Verdict::Broken { chain, record } => {
                    writeln!(out, "{code}: chain {chain} is broken at record {record}")
                }
            };
        }
        if self.countries.is_empty() && self.unreadable.is_none() {
            out += "no country partition of the audit trail in this database\n";
        }
        out
    }
}

/// Verifies as the options say; never fails: what could not be read is in `unreadable`.
pub async fn run(options: &VerifyOptions) -> Verification {
    match &options.database_url {
        Some(url) => verify_url(&ConnectionUrl::new(url.clone(), None)).await,
        None => match verify_dev_region(options).await {
            Ok(verification) => verification,
            Err(e) => Verification {
                countries: Vec::new(),
                unreadable: Some(format!("{e:#}")),
            },
        },
    }
}

/// A Region of `meridian dev`: its database reached as `meridian plan` and the residency
/// report reach it ([`crate::plan_cmd::reading_endpoint`]), the cluster started for the
/// check (and stopped after) when no `meridian dev` runs.
async fn verify_dev_region(options: &VerifyOptions) -> anyhow::Result<Verification> {
    let name = options.region.clone().unwrap_or_default();
    let loaded = crate::dev::manifests::load(&options.manifests)?;
    let region = loaded
        .regions
        .get(&name)
        .map(|l| l.object.clone())
        .ok_or_else(|| anyhow::anyhow!("no Region {name} in {}", options.manifests.display()))?;
    let (local, _lock) = crate::plan_cmd::local_clusters(&options.data_dir)?;
    let local = Arc::new(local);
    if region.spec.provider == RegionProvider::Local {
        if !local.exists(&name) {
            anyhow::bail!(
                "Region {name} has no database in {} yet (has `meridian dev` run there?)",
                options.data_dir.display()
            );
        }
        if local.locate(&name).is_err() {
            local.ensure(&name).await?;
        }
    }
    let ctx = Context::new(Providers::new(Some(local.clone()), Arc::new(loaded.secrets.clone())));
    let verification = match crate::plan_cmd::reading_endpoint(&ctx, &region).await {
        Ok(endpoint) => verify_url(&endpoint.url).await,
        Err(e) => Verification {
            countries: Vec::new(),
            unreadable: Some(format!("Region {name}: {e}")),
        },
    };
    let stop = local.clone();
    tokio::task::spawn_blocking(move || stop.stop_all()).await?;
    Ok(verification)
}

/// Verifies every country of the database at `url`.
pub async fn verify_url(url: &ConnectionUrl) -> Verification {
    let unreadable = |e: String| Verification {
        countries: Vec::new(),
        unreadable: Some(e),
    };
    let options = match meridian_shared::tls::pg_options(url.as_str(), url.ca()) {
        Ok(options) => options.application_name("meridian-audit-verify"),
        Err(e) => return unreadable(format!("the database URL: {e}")),
    };
    let mut conn = match sqlx::ConnectOptions::connect(&options).await {
        Ok(conn) => conn,
        Err(e) => return unreadable(format!("cannot connect to the database: {e}")),
    };
    match verify(&mut conn).await {
        Ok(countries) => Verification {
            countries,
            unreadable: None,
        },
        Err(e) => unreadable(format!("cannot read the audit trail: {e}")),
    }
}

/// Every country with a partition attached to `audit`, and what its chains come to.
pub async fn verify(conn: &mut PgConnection) -> Result<Vec<(String, Verdict)>, sqlx::Error> {
    let codes: Vec<String> = sqlx::query_scalar(
        "SELECT upper(substring(c.relname from '^audit_([a-z]{2})$'))
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'public.audit'::regclass AND c.relname ~ '^audit_[a-z]{2}$'
          ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut verdicts = Vec::new();
    for code in codes {
        let verdict = match audit::verify(conn, &code).await? {
            Ok(records) => {
                let chains: i64 = sqlx::query_scalar("SELECT count(DISTINCT chain) FROM audit WHERE country_code = $1")
                    .bind(&code)
                    .fetch_one(&mut *conn)
                    .await?;
                Verdict::Intact { records, chains }
            }
            Err(broken) => Verdict::Broken {
                chain: broken.chain,
                record: broken.seq,
            },
        };
        verdicts.push((code, verdict));
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_country_and_the_exit_code_says_the_worst() {
        let mut v = Verification {
            countries: vec![
                (
                    "DE".into(),
                    Verdict::Intact {
                        records: 1234,
                        chains: 8,
                    },
                ),
                ("FR".into(), Verdict::Broken { chain: 3, record: 77 }),
            ],
            unreadable: None,
        };
        assert_eq!(
            v.text(),
            "DE: 1234 records in 8 chains, intact\nFR: chain 3 is broken at record 77\n"
        );
        assert_eq!(v.exit_code(), 1);
        v.countries.pop();
        assert_eq!(v.exit_code(), 0);
        v.unreadable = Some("cannot connect".into());
        assert_eq!(v.exit_code(), 2);
    }
}
