//! Region: provision or adopt the stack, bring its database to the current schema.

use meridian_crds::condition_types::{DATABASE_READY, EVENTS_READY, READY, SEARCH_READY};
use meridian_crds::{Country, DatabaseRole, Region, RegionResources, RegionStatus};
use meridian_shared::schema::MIGRATIONS;

use super::{Blocked, Context, Next, Outcome, RESYNC, RETRY, abandoned};
use crate::backends::postgres::{DbError, DbUrlError, RoleNames};
use crate::conditions::{self, Report};
use crate::plan::{self, Change};
use crate::providers::{
    Endpoint, OWNER_SECRET, PASSWORD_SET, ProviderError, SecretData, VAULT_SECRET, WORKLOAD_SECRET, with_login,
};
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
        ctx.providers.admin(region).await
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
    let mut previous = region.status.clone().unwrap_or_default();
    let generation = region.metadata.generation;
    // The Region's home first, whatever state its stores are in: in a cluster its namespace
    // `meridian-region-<name>`, where its roles' Secrets and its Countries' routes go.
    let namespace = if validate::region(region).is_empty() {
        match home(region, ctx).await {
            Ok(namespace) => namespace,
            Err(blocked) => return blocked_outcome(previous, generation, blocked),
        }
    } else {
        None
    };
    let planned = plan(region, ctx, true).await;
    // What the Region made or took over, as the providers recorded it, whatever came of
    // this attempt: a deletion goes by it.
    // The topics it created are recorded by the events step, not by the providers.
    let topics = previous
        .resources
        .as_ref()
        .map(|r| r.topics.clone())
        .unwrap_or_default();
    match ctx.providers.recorded(region, namespace).await {
        Ok(resources) => {
            previous.resources =
                Some(RegionResources { topics, ..resources }).filter(|r| r != &RegionResources::default())
        }
        Err(e) => tracing::warn!(error = %e, "cannot read what the Region recorded; keeping the last record"),
    }
    let planned = match planned {
        Ok(planned) => planned,
        Err(blocked) => return blocked_outcome(previous, generation, blocked),
    };
    let logins = match roles(region, &planned.endpoint, ctx).await {
        Ok(logins) => logins,
        Err(blocked) => return blocked_outcome(previous, generation, blocked),
    };
    // Migrations run as the owner, who owns what they create; then the workload and vault
    // roles get what the schema says on every table, the new ones included.
    let db = match ctx.databases.get(&logins.owner.url) {
        Ok(db) => db,
        Err(e) => {
            let message = format!("the owner role's URL: {e}");
            let blocked = Blocked::new(
                vec![
                    Report::failed(DATABASE_READY, "RolesFailed", &message),
                    Report::failed(READY, "RolesFailed", message),
                ],
                Next::Requeue(RETRY),
            );
            return blocked_outcome(previous, generation, blocked);
        }
    };
    let migrated = match db.apply(&planned.changes).await {
        Ok(()) => db.grant_roles(&logins.names).await,
        Err(e) => Err(e),
    };
    if let Err(e) = migrated {
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
    let (search, search_endpoint) = search_ready(region, ctx).await;
    let (events, created) = events_ready(region, ctx).await;
    if !created.is_empty() {
        let topics = &mut previous.resources.get_or_insert_default().topics;
        topics.extend(created);
        topics.sort();
        topics.dedup();
    }
    let mut database = format!("schema at version {version} on {}", planned.endpoint.display);
    if let Some(restart) = ctx.providers.last_restart(region) {
        database.push_str(&format!("; the server was {restart}"));
    }
    let reports = [
        Report::ok(DATABASE_READY, "SchemaCurrent", database),
        search,
        events,
        Report::ok(READY, "Reconciled", "the Region's database is ready"),
    ];
    let status = RegionStatus {
        conditions: conditions::merge(&previous.conditions, &reports, generation),
        observed_generation: generation,
        connection_secret: logins.workload.secret.clone(),
        owner_secret: logins.owner.secret.clone(),
        database_roles: vec![
            DatabaseRole {
                name: logins.names.owner.clone(),
                purpose: "owner".into(),
                secret: logins.owner.secret.clone().unwrap_or_default(),
            },
            DatabaseRole {
                name: logins.names.workload.clone(),
                purpose: "workload".into(),
                secret: logins.workload.secret.clone().unwrap_or_default(),
            },
            DatabaseRole {
                name: logins.names.vault.clone(),
                purpose: "vault".into(),
                secret: logins.vault.secret.clone().unwrap_or_default(),
            },
        ],
        database_endpoint: Some(planned.endpoint.display),
        schema_version: Some(version),
        search_endpoint,
        resources: previous.resources.clone(),
    };
    Outcome {
        status,
        next: Next::Requeue(RESYNC),
        failure: None,
    }
}

/// `SearchReady`: True only when the search endpoint answered a request (OpenSearch's
/// cluster health); `SearchUnreachable` with what went wrong when it did not; `NotConfigured`
/// for a Region without search. Search is reported, not required: the Region's database
/// serves without it, and each Country's SearchIndexReady says whether its index could be
/// built. Answers the endpoint too, for status (never credentials).
pub async fn search_ready(region: &Region, ctx: &Context) -> (Report, Option<String>) {
    match ctx.providers.search_store(region).await {
        Ok((backend, display)) => match backend.health().await {
            Ok(health) => (
                Report::ok(
                    SEARCH_READY,
                    "SearchReachable",
                    format!("search on {display} answered: {health}"),
                ),
                Some(display),
            ),
            Err(e) => (
                Report::failed(SEARCH_READY, "SearchUnreachable", format!("search on {display}: {e}")),
                Some(display),
            ),
        },
        // Not an error: search is optional.
        Err(e) if e.reason == "SearchNotConfigured" => (Report::failed(SEARCH_READY, "NotConfigured", e.message), None),
        Err(e) => (Report::failed(SEARCH_READY, e.reason, e.message), None),
    }
}

/// `EventsReady`: True once the Region's Kafka answered and holds the Region's topics (the
/// missing ones created, existing ones left as they are); `BrokerUnreachable` or the
/// Secret's problem otherwise. `meridian dev`'s local Regions need no broker: their
/// consumers read the outbox. Like search, events are reported, not required: the database
/// serves without them, and what the relay has not published waits in the outbox. Answers
/// too the topics this reconcile created on an `external` or `aws` broker, for the record a
/// `Delete` goes by.
pub async fn events_ready(region: &Region, ctx: &Context) -> (Report, Vec<String>) {
    match ctx.providers.events(region).await {
        Ok(None) if region.spec.provider == meridian_crds::RegionProvider::Local => (
            Report::ok(
                EVENTS_READY,
                "Outbox",
                "meridian dev: the Region's consumers read its outbox directly, without a broker",
            ),
            Vec::new(),
        ),
        Ok(None) => (
            Report::failed(
                EVENTS_READY,
                "NotConfigured",
                "spec.events is not set: no Kafka publishes this Region's outbox",
            ),
            Vec::new(),
        ),
        Ok(Some((connection, settings))) => {
            // Host and port only: status never shows a credential.
            let display = &connection.bootstrap;
            if let Err(e) = publish_kafka(region, &connection, ctx).await {
                return (Report::failed(EVENTS_READY, e.reason, e.message), Vec::new());
            }
            if let Err(e) = publish_notification_credentials(region, ctx).await {
                return (Report::failed(EVENTS_READY, e.reason, e.message), Vec::new());
            }
            let config = match connection.client_config() {
                Ok(config) => config,
                Err(e) => {
                    let report = Report::failed(EVENTS_READY, "EventsMisconfigured", format!("spec.events: {e}"));
                    return (report, Vec::new());
                }
            };
            match meridian_events::topics::ensure(&config, &settings).await {
                Ok(topics) => {
                    let created: Vec<String> = topics
                        .iter()
                        .filter(|(_, o)| *o == meridian_events::topics::Outcome::Created)
                        .map(|(name, _)| name.clone())
                        .collect();
                    let report = Report::ok(
                        EVENTS_READY,
                        "TopicsReady",
                        format!(
                            "{} topics on {display} ({} created by this reconcile)",
                            topics.len(),
                            created.len()
                        ),
                    );
                    // An inCluster broker's topics go with its volume.
                    let own_broker = region
                        .spec
                        .events
                        .as_ref()
                        .is_some_and(|e| e.broker == meridian_crds::EventsBroker::InCluster);
                    (report, if own_broker { Vec::new() } else { created })
                }
                Err(e) => (
                    Report::failed(EVENTS_READY, "BrokerUnreachable", format!("Kafka on {display}: {e}")),
                    Vec::new(),
                ),
            }
        }
        Err(e) => (Report::failed(EVENTS_READY, e.reason, e.message), Vec::new()),
    }
}

/// Hands the Region's relay and consumers what `spec.events` names: Secret `kafka` beside
/// the Region's role Secrets (in its namespace, in a cluster), which the workers the
/// operator deploys (`inCluster`, `aws`) mount, and those deployed by hand (`external`) can.
async fn publish_kafka(
    region: &Region,
    connection: &meridian_events::kafka::Connection,
    ctx: &Context,
) -> Result<(), crate::providers::ProviderError> {
    let data = crate::providers::event_backbone::kafka_secret(connection);
    publish_region_secret(region, crate::providers::event_backbone::KAFKA_SECRET, &data, ctx).await
}

/// Hands the Region's notifications consumer the credentials of its channels: Secret
/// `notifications` beside Secret `kafka` (nothing while `spec.notifications` names none).
async fn publish_notification_credentials(
    region: &Region,
    ctx: &Context,
) -> Result<(), crate::providers::ProviderError> {
    let data = ctx.providers.notification_credentials(region).await?;
    if data.is_empty() {
        return Ok(());
    }
    publish_region_secret(
        region,
        crate::providers::event_backbone::NOTIFICATIONS_SECRET,
        &data,
        ctx,
    )
    .await
}

/// Writes the Region's Secret `secret` as `data` unless it holds that already.
async fn publish_region_secret(
    region: &Region,
    secret: &str,
    data: &crate::providers::SecretData,
    ctx: &Context,
) -> Result<(), crate::providers::ProviderError> {
    let name = region.metadata.name.clone().unwrap_or_default();
    let store = ctx.providers.region_secrets(region)?;
    if &store.read(&name, secret).await? != data {
        store.write(&name, secret, data).await?;
    }
    Ok(())
}

/// Makes the Region's home exist (its namespace, in a cluster); answers the namespace when
/// the Region owns it.
async fn home(region: &Region, ctx: &Context) -> Result<Option<String>, Blocked> {
    let failed = |e: ProviderError| {
        Blocked::new(
            vec![
                Report::failed(DATABASE_READY, e.reason, &e.message),
                Report::failed(READY, e.reason, e.message),
            ],
            Next::Requeue(RETRY),
        )
    };
    // Nowhere to put it: the provider's own step says why the Region cannot be built here.
    let Ok(store) = ctx.providers.region_secrets(region) else {
        return Ok(None);
    };
    store
        .prepare(region.metadata.name.as_deref().unwrap_or_default())
        .await
        .map_err(failed)
}

/// The Region's three database roles, and their endpoints.
pub struct Logins {
    pub names: RoleNames,
    pub owner: Endpoint,
    pub workload: Endpoint,
    /// What the records service reaches the PII vault with.
    pub vault: Endpoint,
}

/// Creates (or brings back in line) the Region's owner, workload and vault roles through the
/// administrator's `admin` endpoint, each with a password published in its own Secret
/// before the role gets it (a crash in between leaves the Secret, and the next reconcile
/// sets it), and hands the schema to the owner. A Secret that was lost gets a new password,
/// set on the role. Repeating it changes nothing.
pub async fn roles(region: &Region, admin: &Endpoint, ctx: &Context) -> Result<Logins, Blocked> {
    let name = region.metadata.name.clone().unwrap_or_default();
    let failed = |reason: &'static str, message: String| {
        Blocked::new(
            vec![
                Report::failed(DATABASE_READY, reason, &message),
                Report::failed(READY, reason, message),
            ],
            Next::Requeue(RETRY),
        )
    };
    let provider_failed = |e: ProviderError| failed(e.reason, e.message);
    let db_failed = |e: DbError| {
        let reason = if matches!(e, DbError::Unreachable(_)) {
            "DatabaseUnreachable"
        } else {
            "RolesFailed"
        };
        failed(reason, format!("{e} ({})", admin.display))
    };
    let store = ctx.providers.region_secrets(region).map_err(provider_failed)?;
    let admin_db = ctx
        .databases
        .get(&admin.url)
        .map_err(|e| failed("DatabaseUnreachable", format!("invalid connection URL: {e}")))?;
    let names = RoleNames::of(&name);
    let mut endpoints = Vec::new();
    for (role, secret) in [
        (&names.owner, OWNER_SECRET),
        (&names.workload, WORKLOAD_SECRET),
        (&names.vault, VAULT_SECRET),
    ] {
        let login = Login {
            region: &name,
            role,
            secret,
        };
        endpoints.push(
            login
                .ensure(store.as_ref(), &admin_db, admin)
                .await
                .map_err(|e| match e {
                    LoginError::Secret(e) => provider_failed(e),
                    LoginError::Database(e) => db_failed(e),
                })?,
        );
    }
    admin_db.hand_over(&names).await.map_err(db_failed)?;
    let vault = endpoints.pop().expect("three roles");
    let workload = endpoints.pop().expect("three roles");
    let owner = endpoints.pop().expect("three roles");
    Ok(Logins {
        names,
        owner,
        workload,
        vault,
    })
}

/// A login role of a Region's database and the Secret of the Region that publishes it.
pub struct Login<'a> {
    pub region: &'a str,
    pub role: &'a str,
    pub secret: &'a str,
}

/// Why a [`Login`] could not be made.
pub enum LoginError {
    Secret(ProviderError),
    Database(DbError),
}

impl Login<'_> {
    /// Makes the role a plain login with the password its Secret publishes: a password is
    /// published before the role gets it (a crash in between leaves the Secret, and the next
    /// reconcile sets it); a Secret that was lost gets a new password, set on the role.
    /// Answers the role's endpoint (the administrator's server, as the role).
    pub async fn ensure(
        &self,
        store: &dyn crate::providers::RegionSecrets,
        admin_db: &crate::backends::postgres::RegionDb,
        admin: &Endpoint,
    ) -> Result<Endpoint, LoginError> {
        let (region, role, secret) = (self.region, self.role, self.secret);
        let mut stored = store.read(region, secret).await.map_err(LoginError::Secret)?;
        if stored.get("username").map(String::as_str) != Some(role) || !stored.contains_key("password") {
            stored = SecretData::from([
                ("username".to_string(), role.to_string()),
                ("password".to_string(), crate::providers::generate_password()),
            ]);
            store.write(region, secret, &stored).await.map_err(LoginError::Secret)?;
        }
        let password = stored["password"].clone();
        let set = !stored.contains_key(PASSWORD_SET);
        admin_db
            .ensure_login(role, &password, set)
            .await
            .map_err(LoginError::Database)?;
        let url = with_login(admin.url.as_str(), role, &password);
        if set || stored.get("url") != Some(&url) {
            stored.insert("url".into(), url.clone());
            stored.insert(PASSWORD_SET.into(), "true".into());
            store.write(region, secret, &stored).await.map_err(LoginError::Secret)?;
        }
        Ok(Endpoint {
            secret: Some(store.location(region, secret)),
            ..Endpoint::from_url(url)
        }
        .with_ca(admin.url.ca().map(String::from)))
    }
}

/// The Region's status when the reconcile stopped early. `SearchReady` was not checked this
/// time: it turns Unknown rather than keep a True nobody verified.
fn blocked_outcome(previous: RegionStatus, generation: Option<i64>, mut blocked: Blocked) -> Outcome<RegionStatus> {
    // Search and events are checked after the database: when it stopped the reconcile, an
    // old True of theirs would be a claim nobody made this time.
    if let Some(stop) = blocked.reports.iter().find(|r| r.type_ == DATABASE_READY) {
        let message = format!("not checked: {DATABASE_READY} is {}", stop.reason);
        for later in [SEARCH_READY, EVENTS_READY] {
            if !blocked.reports.iter().any(|r| r.type_ == later) {
                blocked.reports.push(Report::unknown(later, "Blocked", message.clone()));
            }
        }
    }
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

/// Lets go of a deleted Region. Refuses while Countries are still bound to it (their
/// partitions live in its database) or a PatientIndex keeps its entries there.
pub async fn cleanup(
    region: &Region,
    countries: &[Country],
    indexes: &[meridian_crds::PatientIndex],
    ctx: &Context,
) -> Result<(), Blocked> {
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
    let index: Vec<&str> = indexes
        .iter()
        .filter(|i| i.spec.region == name)
        .filter_map(|i| i.metadata.name.as_deref())
        .collect();
    if !index.is_empty() {
        let message = format!(
            "Region {name} holds PatientIndex {}; delete it first, or annotate {}=true to leave the stack untouched",
            index.join(", "),
            meridian_crds::ABANDON_ANNOTATION
        );
        return Err(Blocked::new(
            vec![Report::failed(READY, "PatientIndexStillHere", message)],
            Next::Requeue(RETRY),
        ));
    }
    for endpoint in [
        ctx.providers.locate(region).await,
        ctx.providers.workload(region).await,
        ctx.providers.vault(region).await,
        ctx.providers.admin(region).await,
    ]
    .into_iter()
    .flatten()
    {
        ctx.databases.forget(&endpoint.url).await;
    }
    let recorded = region
        .status
        .as_ref()
        .and_then(|s| s.resources.clone())
        .unwrap_or_default();
    if region.spec.deletion_policy == meridian_crds::DeletionPolicy::Delete && !recorded.topics.is_empty() {
        delete_topics(region, &recorded.topics, ctx).await?;
    }
    ctx.providers
        .release(region, &recorded)
        .await
        .map_err(|e| Blocked::new(vec![Report::failed(READY, e.reason, e.message)], Next::Requeue(RETRY)))
}

/// Deletes the topics a Region going with `Delete` created on its broker; until the broker
/// answers, the Region stays (annotate it abandoned to leave them).
async fn delete_topics(region: &Region, topics: &[String], ctx: &Context) -> Result<(), Blocked> {
    let deleted = match ctx.providers.events(region).await {
        Ok(Some((connection, _))) => match connection.client_config() {
            Ok(config) => meridian_events::topics::delete(&config, topics)
                .await
                .map_err(|e| format!("Kafka on {}: {e}", connection.bootstrap)),
            Err(e) => Err(format!("spec.events: {e}")),
        },
        // Its events gone from the spec: where its topics are is no longer known.
        Ok(None) => return Ok(()),
        Err(e) => Err(e.message),
    };
    deleted.map_err(|e| {
        let message = format!(
            "deletionPolicy Delete: the topics this Region created are still there ({e}); annotate {}=true to leave them",
            meridian_crds::ABANDON_ANNOTATION
        );
        Blocked::new(
            vec![Report::failed(READY, "TopicsNotDeleted", message)],
            Next::Requeue(RETRY),
        )
    })
}
