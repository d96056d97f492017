//! `meridian plan --manifests DIR`: every change the reconcilers would make for these
//! manifests against the current stores, without making any.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use meridian_crds::{Country, Region, RegionProvider};
use meridian_localpg::Durability;

use crate::controller::{Context, country, region};
use crate::dev::{DataDirLock, manifests};
use crate::providers::{LocalClusters, Providers};

/// What the plan found.
#[derive(Debug, Default)]
pub struct PlanReport {
    pub text: String,
    pub changes: usize,
    /// Manifests that are invalid or that residency refuses.
    pub invalid: usize,
    /// Stores that could not be read.
    pub unreachable: usize,
}

impl PlanReport {
    /// 0: the plan is complete; 1: invalid manifests; 2: some store could not be read.
    pub fn exit_code(&self) -> u8 {
        if self.invalid > 0 {
            1
        } else if self.unreachable > 0 {
            2
        } else {
            0
        }
    }
}

/// The `local` Regions of `data_dir`, for reading: those of the `meridian dev` running
/// there, or, when none runs, their clusters on disk (started on demand, under the data
/// directory's lock, which the caller holds while it reads).
pub fn local_clusters(data_dir: &Path) -> anyhow::Result<(LocalClusters, Option<DataDirLock>)> {
    Ok(match DataDirLock::running(data_dir) {
        Some(state) => (
            LocalClusters::adopt(data_dir.to_path_buf(), state.regions.into_iter().collect()),
            None,
        ),
        None if data_dir.is_dir() => (
            LocalClusters::new(data_dir.to_path_buf(), Durability::Durable),
            Some(DataDirLock::acquire(data_dir)?),
        ),
        None => (LocalClusters::new(data_dir.to_path_buf(), Durability::Durable), None),
    })
}

/// Where a command that only reads reaches `region`'s database: a `local` Region's own
/// cluster as its administrator (the roles' Secrets name the port the cluster had when
/// `meridian dev` last reconciled it, and a cluster started for reading gets a new one);
/// any other Region as the owner role it published.
pub async fn reading_endpoint(
    ctx: &Context,
    region: &Region,
) -> Result<crate::providers::Endpoint, crate::providers::ProviderError> {
    match region.spec.provider {
        RegionProvider::Local => ctx.providers.admin(region).await,
        _ => ctx.providers.locate(region).await,
    }
}

/// Plans `manifests_dir` against the stores. Local Regions are read from the `meridian dev`
/// running on `data_dir`, or, when none runs, from their clusters on disk, started for
/// the duration of the plan.
pub async fn run(manifests_dir: &Path, data_dir: &Path) -> anyhow::Result<PlanReport> {
    let loaded = manifests::load(manifests_dir)?;
    let mut report = PlanReport::default();
    for error in &loaded.errors {
        writeln!(report.text, "! {error}")?;
        report.invalid += 1;
    }
    let (local, _lock) = local_clusters(data_dir)?;
    let local = Arc::new(local);
    let ctx = Context::new(Providers::new(Some(local.clone()), Arc::new(loaded.secrets.clone())));

    let regions: BTreeMap<String, Region> = loaded
        .regions
        .iter()
        .map(|(n, l)| (n.clone(), l.object.clone()))
        .collect();
    let countries: Vec<Country> = loaded.countries.values().map(|l| l.object.clone()).collect();
    let mut fresh = Vec::new();
    for (name, r) in &regions {
        let is_fresh_local = r.spec.provider == RegionProvider::Local && !local.exists(name);
        if is_fresh_local {
            fresh.push(name.clone());
            report.text += &format!("Region {name} (local, not created yet):\n");
            let changes = crate::plan::migrations(&[]);
            report.add_changes(&changes);
            continue;
        }
        match region::plan(r, &ctx, r.spec.provider == RegionProvider::Local).await {
            Ok(planned) => {
                report.text += &format!("Region {name} ({}):\n", planned.endpoint.display);
                report.add_changes(&planned.changes);
            }
            Err(blocked) => {
                report.text += &format!("Region {name}:\n  ! {}\n", blocked.message());
                if blocked.reason == "InvalidSpec" {
                    report.invalid += 1;
                } else {
                    report.unreachable += 1;
                }
            }
        }
    }
    for c in &countries {
        let name = c.metadata.name.as_deref().unwrap_or_default();
        let world = country::World {
            region: regions.get(&c.spec.region),
            countries: &countries,
        };
        let planned = if fresh.contains(&c.spec.region) {
            country::plan_fresh(c, world)
        } else {
            country::plan(c, world, &ctx).await
        };
        match planned {
            Ok((planned, _)) => {
                report.text += &format!("Country {name} ({}) -> Region {}:\n", c.spec.code, planned.region);
                report.add_changes(&planned.changes);
            }
            Err(blocked) => {
                report.text += &format!("Country {name}:\n  ! {}\n", blocked.message());
                match blocked.reason {
                    "DatabaseUnreachable" | "RegionNotReady" => report.unreachable += 1,
                    _ => report.invalid += 1,
                }
            }
        }
    }
    writeln!(
        report.text,
        "\n{} change(s), {} invalid manifest(s), {} unreachable store(s)",
        report.changes, report.invalid, report.unreachable
    )?;
    let local_for_stop = local.clone();
    tokio::task::spawn_blocking(move || local_for_stop.stop_all()).await?;
    Ok(report)
}

impl PlanReport {
    fn add_changes(&mut self, changes: &[crate::plan::Change]) {
        if changes.is_empty() {
            self.text += "  (no changes)\n";
        }
        for change in changes {
            self.text += &format!("  {change}\n");
        }
        self.changes += changes.len();
    }
}
