//! Region: provision or adopt the stack, bring its database to the current schema.

use meridian_crds::condition_types::{DATABASE_READY, READY, SEARCH_READY};
use meridian_crds::{Country, Region, RegionStatus};
use meridian_shared::schema::MIGRATIONS;

use super::{Blocked, Context, Next, Outcome, RESYNC, RETRY, abandoned};
use crate::backends::postgres::DbUrlError;
use crate::conditions::{self, Report};
use crate::plan::{self, Change};
use crate::providers::Endpoint;
use crate::validate;

/// The Region's endpoint and the changes its database needs.
pub struct Planned {
    pub endpoint: Endpoint,
    pub changes: Vec<Change>,
}

/// Plans without provisioning: for `meridian plan`, and as the first half of [`apply`].
pub async fn plan(region: &Region, ctx: &Context, provision: bool) -> Result<Planned, Blocked> {
    let errors = validate::region(region);
    if !errors.is_empty() {
        let message = validate::describe(&errors);
        return Err(Blocked::new(
            vec![
                Report::failed(DATABASE_READY, "InvalidSpec", &message),
                Report::failed(READY, "InvalidSpec", message),
            ],
            Next::AwaitChange,
        ));
    }
    let endpoint = if provision {
        ctx.providers.ensure(region).await
    } else {
        ctx.providers.locate(region).await
    };
    let endpoint = endpoint.map_err(|e| {
        Blocked::new(
            vec![
                Report::failed(DATABASE_READY, e.reason, &e.message),
                Report::failed(READY, e.reason, e.message),
            ],
            Next::Requeue(RETRY),
        )
    })?;
    let unreachable = |message: String| {
        Blocked::new(
            vec![
                Report::failed(DATABASE_READY, "DatabaseUnreachable", &message),
                Report::failed(READY, "DatabaseUnreachable", message),
            ],
            Next::Requeue(RETRY),
        )
    };
    let db = ctx.databases.get(&endpoint.url).map_err(|e| match e {
        DbUrlError::Insecure(message) => Blocked::new(
            vec![
                Report::failed(DATABASE_READY, "InsecureDatabaseUrl", &message),
                Report::failed(READY, "InsecureDatabaseUrl", message),
            ],
            Next::Requeue(RETRY),
        ),
        invalid => unreachable(invalid.to_string()),
    })?;
    let applied = db
        .applied_migrations()
        .await
        .map_err(|e| unreachable(format!("{} ({})", e, endpoint.display)))?;
    Ok(Planned {
        changes: plan::migrations(&applied),
        endpoint,
    })
}

/// Reconciles a Region: provision, migrate, report.
pub async fn apply(region: &Region, ctx: &Context) -> Outcome<RegionStatus> {
    let previous = region.status.clone().unwrap_or_default();
    let generation = region.metadata.generation;
    let planned = match plan(region, ctx, true).await {
        Ok(planned) => planned,
        Err(blocked) => return blocked_outcome(previous, generation, blocked),
    };
    let db = ctx
        .databases
        .get(&planned.endpoint.url)
        .expect("URL parsed during planning");
    if let Err(e) = db.apply(&planned.changes).await {
        let message = format!("{e} ({})", planned.endpoint.display);
        let reason = if matches!(e, crate::backends::postgres::DbError::Unreachable(_)) {
            "DatabaseUnreachable"
        } else {
            "MigrationFailed"
        };
        let blocked = Blocked::new(
            vec![
                Report::failed(DATABASE_READY, reason, &message),
                Report::failed(READY, reason, message),
            ],
            Next::Requeue(RETRY),
        );
        return blocked_outcome(previous, generation, blocked);
    }
    let version = MIGRATIONS.last().map_or(0, |m| m.version);
    // Search is reported, not required: the Region's database serves without it, and each
    // Country's SearchIndexReady says whether its index could be built.
    let (search, search_endpoint) = match ctx.providers.search_store(region).await {
        Ok((_, display)) => (
            Report::ok(SEARCH_READY, "SearchConfigured", format!("search on {display}")),
            Some(display),
        ),
        Err(e) => (Report::failed(SEARCH_READY, e.reason, e.message), None),
    };
    let reports = [
        Report::ok(
            DATABASE_READY,
            "SchemaCurrent",
            format!("schema at version {version} on {}", planned.endpoint.display),
        ),
        search,
        Report::ok(READY, "Reconciled", "the Region's database is ready"),
    ];
    let status = RegionStatus {
        conditions: conditions::merge(&previous.conditions, &reports, generation),
        observed_generation: generation,
        connection_secret: planned.endpoint.secret,
        database_endpoint: Some(planned.endpoint.display),
        schema_version: Some(version),
        search_endpoint,
    };
    Outcome {
        status,
        next: Next::Requeue(RESYNC),
        failure: None,
    }
}

fn blocked_outcome(previous: RegionStatus, generation: Option<i64>, blocked: Blocked) -> Outcome<RegionStatus> {
    let status = RegionStatus {
        conditions: conditions::merge(&previous.conditions, &blocked.reports, generation),
        ..previous
    };
    Outcome {
        status,
        next: blocked.next,
        failure: blocked.failure(),
    }
}

/// Lets go of a deleted Region. Refuses while Countries are still bound to it: their
/// partitions live in its database.
pub async fn cleanup(region: &Region, countries: &[Country], ctx: &Context) -> Result<(), Blocked> {
    let name = region.metadata.name.as_deref().unwrap_or_default();
    if abandoned(&region.metadata) {
        return Ok(());
    }
    let bound: Vec<&str> = countries
        .iter()
        .filter(|c| c.spec.region == name)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    if !bound.is_empty() {
        let message = format!(
            "Region {name} still holds countries {}; delete them first, or annotate {}=true to leave the stack untouched",
            bound.join(", "),
            meridian_crds::ABANDON_ANNOTATION
        );
        return Err(Blocked::new(
            vec![Report::failed(READY, "CountriesStillBound", message)],
            Next::Requeue(RETRY),
        ));
    }
    if let Ok(endpoint) = ctx.providers.locate(region).await {
        ctx.databases.forget(&endpoint.url).await;
    }
    ctx.providers
        .release(region)
        .await
        .map_err(|e| Blocked::new(vec![Report::failed(READY, e.reason, e.message)], Next::Requeue(RETRY)))
}
