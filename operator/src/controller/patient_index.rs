//! PatientIndex: the Master Patient Index's store in its Region's database (schema `mpi` and
//! a role of its own), its HMAC keys, and the hand-over of both to the records services of
//! the Regions holding its linked countries.

use std::collections::{BTreeMap, BTreeSet};

use meridian_crds::condition_types::{DATABASE_READY, KEYS_READY, READY};
use meridian_crds::{Country, DatabaseRole, PatientIndex, PatientIndexStatus, Region, ResourceOrigin};
use meridian_records::mpi::{self, IndexKeys, LINK_SECRET, Link};

use super::region::{Login, LoginError};
use super::{Blocked, Context, Next, Outcome, RESYNC, RETRY, abandoned};
use crate::backends::patient_index::role_name;
use crate::backends::postgres::{DbError, RegionDb};
use crate::conditions::{self, Report};
use crate::providers::{Endpoint, ProviderError};
use crate::validate;

/// What a PatientIndex's reconcile looks at besides the object.
#[derive(Clone, Copy)]
pub struct World<'a> {
    pub regions: &'a [Region],
    pub countries: &'a [Country],
    pub indexes: &'a [PatientIndex],
}

impl<'a> World<'a> {
    fn region(&self, name: &str) -> Option<&'a Region> {
        self.regions.iter().find(|r| r.metadata.name.as_deref() == Some(name))
    }
}

/// The Secret of the index role's credentials, in the index Region's home.
pub fn login_secret(index: &str) -> String {
    format!("postgres-mpi-{index}")
}

/// All three conditions false for one reason.
fn stop(reason: &'static str, message: impl Into<String>, next: Next) -> Blocked {
    let message = message.into();
    Blocked::new(
        vec![
            Report::failed(DATABASE_READY, reason, &message),
            Report::failed(KEYS_READY, reason, &message),
            Report::failed(READY, reason, message),
        ],
        next,
    )
}

/// The PatientIndex that serves: the oldest (then the first by name) not being deleted.
/// Countries look patients up in one index; a second one would split them.
fn serving(indexes: &[PatientIndex]) -> Option<&PatientIndex> {
    indexes
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .min_by_key(|i| (i.metadata.creation_timestamp.clone(), i.metadata.name.clone()))
}

/// Which countries the index links, and why the others named in its spec are left out.
pub fn linked_countries(index: &PatientIndex, countries: &[Country]) -> (Vec<String>, Vec<String>) {
    let live = || countries.iter().filter(|c| c.metadata.deletion_timestamp.is_none());
    match &index.spec.countries {
        None => {
            let mut linked: Vec<String> = live()
                .filter(|c| c.spec.regulatory.consent.record_sharing)
                .map(|c| c.spec.code.clone())
                .collect();
            linked.sort();
            linked.dedup();
            (linked, Vec::new())
        }
        Some(listed) => {
            let mut linked = Vec::new();
            let mut left_out = Vec::new();
            for code in listed.iter().collect::<BTreeSet<_>>() {
                match live().find(|c| &c.spec.code == code) {
                    Some(c) if c.spec.regulatory.consent.record_sharing => linked.push(code.clone()),
                    Some(_) => left_out.push(format!("{code} (regulatory.consent.recordSharing is false)")),
                    None => left_out.push(format!("{code} (no such Country)")),
                }
            }
            (linked, left_out)
        }
    }
}

/// Reconciles a PatientIndex: store, role, keys, hand-over, status.
pub async fn apply(index: &PatientIndex, world: World<'_>, ctx: &Context) -> Outcome<PatientIndexStatus> {
    let previous = index.status.clone().unwrap_or_default();
    let generation = index.metadata.generation;
    match reconcile(index, world, ctx, &previous).await {
        Ok((status, reports)) => Outcome {
            status: PatientIndexStatus {
                conditions: conditions::merge(&previous.conditions, &reports, generation),
                observed_generation: generation,
                ..status
            },
            next: Next::Requeue(RESYNC),
            failure: None,
        },
        Err(failed) => {
            let (blocked, status) = *failed;
            Outcome {
                status: PatientIndexStatus {
                    conditions: blocked.conditions(&previous.conditions, generation),
                    ..status
                },
                next: blocked.next,
                failure: blocked.failure(),
            }
        }
    }
}

/// Where a reconcile stopped, and the status it leaves (boxed: it is the rare path).
type Failed = Box<(Blocked, PatientIndexStatus)>;

async fn reconcile(
    index: &PatientIndex,
    world: World<'_>,
    ctx: &Context,
    previous: &PatientIndexStatus,
) -> Result<(PatientIndexStatus, Vec<Report>), Failed> {
    let keep = |blocked: Blocked| Box::new((blocked, previous.clone()));
    let name = index.metadata.name.clone().unwrap_or_default();
    let errors = validate::patient_index(index);
    if !errors.is_empty() {
        return Err(keep(stop(
            "InvalidSpec",
            validate::describe(&errors),
            Next::AwaitChange,
        )));
    }
    if let Some(first) = serving(world.indexes).filter(|i| i.metadata.name != index.metadata.name) {
        let message = format!(
            "PatientIndex {} is the index of every country; a second one would split the lookups. Delete one of them",
            first.metadata.name.as_deref().unwrap_or_default()
        );
        return Err(keep(stop("AnotherIndexServes", message, Next::Requeue(RESYNC))));
    }
    let region_name = &index.spec.region;
    let Some(region) = world.region(region_name) else {
        return Err(keep(stop(
            "RegionNotFound",
            format!("Region {region_name} does not exist"),
            Next::Requeue(RETRY),
        )));
    };
    let region_ready = region
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, READY));
    if !region_ready || region.metadata.deletion_timestamp.is_some() {
        return Err(keep(stop(
            "RegionNotReady",
            format!("Region {region_name} is not Ready"),
            Next::Requeue(RETRY),
        )));
    }

    // The store: the index role (published in the Region's home), its way in, the schema.
    let retry = |reason: &'static str| move |message: String| keep(stop(reason, message, Next::Requeue(RETRY)));
    let provider = |e: ProviderError| keep(stop(e.reason, e.message, Next::Requeue(RETRY)));
    let db = |e: DbError| {
        let reason = if matches!(e, DbError::Unreachable(_)) {
            "DatabaseUnreachable"
        } else {
            "IndexStoreFailed"
        };
        keep(stop(reason, format!("Region {region_name}: {e}"), Next::Requeue(RETRY)))
    };
    let admin = ctx.providers.admin(region).await.map_err(provider)?;
    let owner = ctx.providers.locate(region).await.map_err(provider)?;
    let store = ctx.providers.region_secrets(region).map_err(provider)?;
    let open = |endpoint: &Endpoint| {
        ctx.databases
            .get(&endpoint.url)
            .map_err(|e| retry("DatabaseUnreachable")(format!("Region {region_name}: {e}")))
    };
    let (admin_db, owner_db): (RegionDb, RegionDb) = (open(&admin)?, open(&owner)?);
    let role = role_name(&name);
    let secret = login_secret(&name);
    let login = Login {
        region: region_name,
        role: &role,
        secret: &secret,
    }
    .ensure(store.as_ref(), &admin_db, &admin)
    .await
    .map_err(|e| match e {
        LoginError::Secret(e) => provider(e),
        LoginError::Database(e) => db(e),
    })?;
    admin_db.grant_connect(&role).await.map_err(db)?;
    ctx.providers
        .admit_index_clients(region, &name)
        .await
        .map_err(provider)?;
    let created = owner_db.ensure_index(&role).await.map_err(db)?;
    let mut status = PatientIndexStatus {
        database_role: Some(DatabaseRole {
            name: role.clone(),
            purpose: "index".into(),
            secret: login.secret.clone().unwrap_or_default(),
        }),
        schema: previous.schema.or(Some(if created {
            ResourceOrigin::Created
        } else {
            ResourceOrigin::Adopted
        })),
        ..previous.clone()
    };
    // Not the number of entries: it changes with every registration, and a status that
    // changes with it would be written on every resync.
    let database = Report::ok(
        DATABASE_READY,
        "IndexStoreReady",
        format!("schema mpi in Region {region_name}, role {role}"),
    );

    // The keys: made once, never replaced.
    let keys_failed = |reason: &'static str, message: String, status: &PatientIndexStatus| {
        let blocked = Blocked::new(
            vec![
                database.clone(),
                Report::failed(KEYS_READY, reason, &message),
                Report::failed(READY, reason, message),
            ],
            Next::Requeue(RETRY),
        );
        Box::new((blocked, status.clone()))
    };
    let key_secret = &index.spec.key_secret_ref.name;
    let data = store
        .update(region_name, key_secret, &|data| mpi::ensure_first_key(data))
        .await
        .map_err(|e| keys_failed(e.reason, e.message, &status))?;
    let keys = IndexKeys::from_secret(&data).map_err(|e| {
        keys_failed(
            "InvalidKeySecret",
            format!("{}: {e}", store.location(region_name, key_secret)),
            &status,
        )
    })?;
    status.active_key_version = Some(keys.active_version().to_string());
    status.key_versions = keys.versions().into_iter().map(String::from).collect();

    // The hand-over: every Region holding a linked country gets the keys and the index's
    // connection; a Region that held one before and holds none now gets an empty link.
    let (mut linked, mut left_out) = linked_countries(index, world.countries);
    // A country whose Region does not exist waits for it (its own status says so); the index
    // serves the rest.
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    linked.retain(|code| {
        let Some(c) = world.countries.iter().find(|c| &c.spec.code == code) else {
            return false;
        };
        if world.region(&c.spec.region).is_none() {
            left_out.push(format!("{code} (Region {} does not exist)", c.spec.region));
            return false;
        }
        by_region.entry(c.spec.region.clone()).or_default().push(code.clone());
        true
    });
    for gone in previous.linked_regions.iter().filter(|r| world.region(r).is_some()) {
        by_region.entry(gone.clone()).or_default();
    }
    let mut handed = Vec::new();
    let mut waiting = Vec::new();
    // Where a link was written, or may have been: a deletion or the next attempt goes by it.
    let mut linked_regions = Vec::new();
    for (holder, codes) in &by_region {
        let holder_region = world.region(holder).expect("kept above only if it exists");
        let wanted = if codes.is_empty() {
            Link::unlinked()
        } else {
            // Every linked country: the records service checks both ends of a lookup.
            Link::secret_data(&data, login.url.as_str(), login.url.ca(), region_name, &linked)
        };
        let written = put_link(ctx, holder_region, &wanted).await;
        match written {
            Ok(_) if codes.is_empty() => {}
            Ok(_) => {
                handed.push(holder.clone());
                linked_regions.push(holder.clone());
            }
            Err(e) => {
                waiting.push(format!("Region {holder}: {}", e.message));
                linked_regions.push(holder.clone());
            }
        }
    }
    status.linked_countries = linked.clone();
    status.linked_regions = linked_regions;
    if !waiting.is_empty() {
        let message = format!("the keys could not be handed over: {}", waiting.join("; "));
        return Err(keys_failed("KeysNotHandedOver", message, &status));
    }
    let mut message = format!(
        "key {} of {} in {}; handed to the records services of {}",
        keys.active_version(),
        status.key_versions.join(", "),
        store.location(region_name, key_secret),
        if handed.is_empty() {
            "no Region".to_string()
        } else {
            handed.join(", ")
        }
    );
    if !left_out.is_empty() {
        message.push_str(&format!("; not linked: {}", left_out.join(", ")));
    }
    let ready = format!(
        "{} countries linked: {}",
        linked.len(),
        if linked.is_empty() {
            "none".to_string()
        } else {
            linked.join(", ")
        }
    );
    Ok((
        status,
        vec![
            database,
            Report::ok(KEYS_READY, "KeysHandedOver", message),
            Report::ok(READY, "Reconciled", ready),
        ],
    ))
}

/// Makes Region `region`'s [`LINK_SECRET`] hold `wanted`, writing only when it differs.
async fn put_link(ctx: &Context, region: &Region, wanted: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    let name = region.metadata.name.as_deref().unwrap_or_default();
    let change = |current: &mut BTreeMap<String, String>| {
        if current == wanted {
            return false;
        }
        *current = wanted.clone();
        true
    };
    ctx.providers
        .region_secrets(region)?
        .update(name, LINK_SECRET, &change)
        .await
        .map(|_| ())
}

/// Lets go of a deleted PatientIndex: the records services' links are emptied (lookups and
/// registrations stop); with `deletionPolicy: Delete`, the schema it created (with its
/// entries) and its role are dropped. `Retain` keeps schema, entries, role and keys for a
/// PatientIndex created again later.
pub async fn cleanup(index: &PatientIndex, world: World<'_>, ctx: &Context) -> Result<(), Blocked> {
    if abandoned(&index.metadata) {
        return Ok(());
    }
    let name = index.metadata.name.clone().unwrap_or_default();
    let failed = |message: String| {
        Blocked::new(
            vec![Report::failed(READY, "CleanupFailed", message)],
            Next::Requeue(RETRY),
        )
    };
    let status = index.status.clone().unwrap_or_default();
    for holder in &status.linked_regions {
        let Some(region) = world.region(holder) else { continue };
        put_link(ctx, region, &Link::unlinked())
            .await
            .map_err(|e| failed(format!("Region {holder}: {}", e.message)))?;
    }
    let region_name = &index.spec.region;
    if let Some(region) = world.region(region_name).filter(|_| status.database_role.is_some()) {
        ctx.providers
            .remove_index_clients(region, &name)
            .await
            .map_err(|e| failed(e.message))?;
    }
    if index.spec.deletion_policy != meridian_crds::DeletionPolicy::Delete || status.database_role.is_none() {
        return Ok(());
    }
    let Some(region) = world.region(region_name) else {
        return Err(failed(format!(
            "Region {region_name} does not exist: the index's schema and role cannot be removed; annotate {}=true to leave them",
            meridian_crds::ABANDON_ANNOTATION
        )));
    };
    let db_failed = |e: DbError| failed(format!("Region {region_name}: {e}"));
    let admin = ctx.providers.admin(region).await.map_err(|e| failed(e.message))?;
    let owner = ctx.providers.locate(region).await.map_err(|e| failed(e.message))?;
    let open = |endpoint: &Endpoint| ctx.databases.get(&endpoint.url).map_err(|e| failed(e.to_string()));
    let (admin_db, owner_db) = (open(&admin)?, open(&owner)?);
    let role = role_name(&name);
    if status.schema == Some(ResourceOrigin::Created) {
        owner_db.drop_index().await.map_err(db_failed)?;
    } else {
        owner_db.revoke_index(&role).await.map_err(db_failed)?;
    }
    admin_db.drop_login(&role).await.map_err(db_failed)
}
