//! A Region's PostgreSQL database: schema migrations and per-country partitions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_shared::schema::{self, MigrationError};
pub use meridian_shared::tls::DbUrlError;
use meridian_shared::tls::pg_options;
use prometheus_client::metrics::counter::Counter;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

use crate::plan::{Change, Observed, PartitionState};
use crate::providers::ConnectionUrl;

/// Advisory lock key that serialises partition DDL within one database.
const PARTITION_LOCK_KEY: i64 = 0x4d45_5250_4152_5449; // "MERPARTI"

/// Connections the control plane holds to each Region's database.
pub const POOL_CONNECTIONS: u32 = 4;

/// Pools of the Regions' databases, one per connection URL and CA, created on first use.
#[derive(Default)]
pub struct Databases {
    pools: Mutex<HashMap<ConnectionUrl, PgPool>>,
    /// Counts every statement that changes a schema, a role or a privilege.
    ddl: Counter,
}

impl Databases {
    /// Pools that count their schema, role and privilege statements in `ddl`.
    pub fn counting(ddl: Counter) -> Self {
        Self {
            pools: Mutex::default(),
            ddl,
        }
    }

    /// The database behind `url`. The pool connects lazily; the first query reports an
    /// unreachable server within a few seconds. Off this machine, every connection
    /// verifies the server's certificate and host name (against the system's roots and
    /// the URL's CA); a URL asking for less is refused (see [`meridian_shared::tls`]).
    pub fn get(&self, url: &ConnectionUrl) -> Result<RegionDb, DbUrlError> {
        let mut pools = self.pools.lock().expect("pool map lock");
        if let Some(pool) = pools.get(url) {
            return Ok(RegionDb {
                pool: pool.clone(),
                ddl: self.ddl.clone(),
            });
        }
        let options = pg_options(url.as_str(), url.ca())?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.application_name("meridian-control-plane"));
        pools.insert(url.clone(), pool.clone());
        Ok(RegionDb {
            pool,
            ddl: self.ddl.clone(),
        })
    }

    /// Closes and forgets the pools for `url` (a Region that went away), whatever CA.
    pub async fn forget(&self, url: &ConnectionUrl) {
        let pools: Vec<PgPool> = {
            let mut map = self.pools.lock().expect("pool map lock");
            let gone: Vec<ConnectionUrl> = map.keys().filter(|k| k.as_str() == url.as_str()).cloned().collect();
            gone.iter().filter_map(|k| map.remove(k)).collect()
        };
        for pool in pools {
            pool.close().await;
        }
    }
}

/// Failures talking to a Region's database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach the database: {0}")]
    Unreachable(#[source] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("failed to {change}: {source}")]
    Apply { change: String, source: sqlx::Error },
}

/// One Region's database.
#[derive(Clone)]
pub struct RegionDb {
    pub(super) pool: PgPool,
    /// See [`Databases::counting`].
    pub(super) ddl: Counter,
}

impl RegionDb {
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i64>, DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        let applied = schema::migrate(&mut conn).await?;
        self.ddl.inc_by(applied.len() as u64);
        Ok(applied)
    }

    /// Versions of the migrations already applied.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        let applied = schema::applied_versions(&mut conn).await?;
        schema::check_applied(&applied)?;
        Ok(applied.into_iter().map(|(v, _)| v).collect())
    }

    /// What the database holds of country `code`: its partitions and their constraints.
    pub async fn observe(&self, code: &str) -> Result<Observed, DbError> {
        let names = crate::plan::partition_names(code);
        // Names as the schema module spells them: bare in `public`, `vault.name` in the vault.
        let rows: Vec<(String, bool, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {QUALIFIED_NAME}, c.relispartition, k.conname::text
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_constraint k ON k.conrelid = c.oid
              WHERE n.nspname IN ('public', 'vault')
                AND c.relkind IN ('r', 'p')
                AND {QUALIFIED_NAME} = ANY($1)"
        )))
        .bind(&names)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::Unreachable)?;
        let mut observed = Observed::default();
        for (name, attached, constraint) in rows {
            let state = if attached {
                PartitionState::Attached
            } else {
                PartitionState::Detached
            };
            observed.partitions.insert(name, state);
            observed.constraints.extend(constraint);
        }
        Ok(observed)
    }

    /// Applies `changes` in one transaction: all of them or none. Migrations in the list are
    /// applied first through the migration runner, which records them.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), DbError> {
        if changes.iter().any(|c| matches!(c, Change::ApplyMigration { .. })) {
            self.migrate().await?;
        }
        let ddl: Vec<&Change> = changes
            .iter()
            .filter(|c| !matches!(c, Change::ApplyMigration { .. }))
            .collect();
        if ddl.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(DbError::Unreachable)?;
        // One partition change at a time per database: a Country being created and another
        // being detached take the parent tables' locks in opposite orders.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(DbError::Unreachable)?;
        let statements = ddl.len() as u64;
        for change in ddl {
            sqlx::raw_sql(AssertSqlSafe(change.sql()))
                .execute(&mut *tx)
                .await
                .map_err(|source| DbError::Apply {
                    change: describe(change),
                    source,
                })?;
        }
        tx.commit().await.map_err(DbError::Unreachable)?;
        self.ddl.inc_by(statements);
        Ok(())
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::ApplyMigration { version, name } => format!("apply migration {version} ({name})"),
        Change::CreatePartition { partition, .. } => format!("create partition {partition}"),
        Change::AttachPartition { partition, .. } => format!("attach partition {partition}"),
        Change::DetachPartition { partition, .. } => format!("detach partition {partition}"),
        Change::DropPartition { partition } => format!("drop partition {partition}"),
        Change::AddConstraint { constraint, .. } => format!("add constraint {constraint}"),
    }
}

/// The login roles of a Region's database: `owner` owns the platform schema (migrations and
/// partitions, used by the operator only); `workload` reads and writes rows, nothing else;
/// `vault` reads and writes the PII vault and the records tables, nothing of booking.
/// Roles belong to the whole PostgreSQL server, not to one database, so their names carry
/// the Region's: two Regions sharing a server never share a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleNames {
    pub owner: String,
    pub workload: String,
    pub vault: String,
}

/// `meridian_<object>_<suffix>` for a login role of a Region's (or a PatientIndex's) object,
/// dashes as underscores; a name too long for PostgreSQL (63 bytes) keeps its start and a
/// hash of the whole.
pub fn role_name(object: &str, suffix: &str) -> String {
    let base: String = object
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("meridian_{base}_{suffix}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: short, and the same on every build (the names must never change).
    let hash = object
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let hash = format!("{hash:08x}");
    let keep = 63 - suffix.len() - hash.len() - "meridian__".len() - 1;
    format!("meridian_{}_{hash}_{suffix}", &base[..keep])
}

impl RoleNames {
    /// `meridian_<region>_owner`, `meridian_<region>_workload` and `meridian_<region>_vault`
    /// (see [`role_name`]).
    pub fn of(region: &str) -> Self {
        let name = |suffix: &str| role_name(region, suffix);
        Self {
            owner: name("owner"),
            workload: name("workload"),
            vault: name("vault"),
        }
    }
}

/// What [`RegionDb::ensure_login`] did to a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginChange {
    Unchanged,
    Created,
    /// It existed; its password (and any attribute or membership it should not have) was set.
    Updated,
}

/// Relation kinds the platform schema may hold, with the keyword that alters them.
const RELATION_KINDS: &[(&str, &str)] = &[
    ("r", "TABLE"),
    ("p", "TABLE"),
    ("v", "VIEW"),
    ("m", "MATERIALIZED VIEW"),
    ("S", "SEQUENCE"),
    ("f", "FOREIGN TABLE"),
];

/// Schemas of the platform: `public` and the PII vault ([`schema::VAULT_SCHEMA`]).
const SCHEMAS: &str = "(SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'vault'))";

/// Relations of the platform's schemas that are not part of an extension and do not follow
/// a table (identity and serial sequences, whose owner and privileges are the table's).
const OWN_RELATIONS: &str = "c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'vault'))
   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))";

/// A relation's name as the schema module names tables: bare in `public`,
/// `schema.name` elsewhere.
const QUALIFIED_NAME: &str = "CASE WHEN n.nspname = 'public' THEN c.relname::text
                                  ELSE n.nspname || '.' || c.relname END";

fn role_error(what: String) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Apply { change: what, source }
}

/// Runs `sql` built by the server from `template` (`format()` quoting, `%I` identifiers and
/// `%L` literals) with `args`.
pub(super) async fn run_formatted(
    ddl: &Counter,
    conn: &mut sqlx::PgConnection,
    template: &str,
    args: &[&str],
    what: &str,
) -> Result<(), DbError> {
    let select = (1..=args.len()).fold("SELECT format($1".to_string(), |sql, i| format!("{sql}, ${}", i + 1)) + ")";
    let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(select)).bind(template);
    for arg in args {
        query = query.bind(*arg);
    }
    let sql = query
        .fetch_one(&mut *conn)
        .await
        .map_err(role_error(what.to_string()))?;
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map_err(role_error(what.to_string()))?;
    ddl.inc();
    Ok(())
}

impl RegionDb {
    /// As an administrator: makes `name` a login role with no other attribute and no
    /// membership in any role, and gives it `password` when it is created or when
    /// `set_password` says the password it has is not the one published.
    pub async fn ensure_login(&self, name: &str, password: &str, set_password: bool) -> Result<LoginChange, DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        let found: Option<(bool, Vec<String>)> = sqlx::query_as(
            "SELECT rolcanlogin AND NOT (rolsuper OR rolinherit OR rolcreaterole OR rolcreatedb
                                         OR rolreplication OR rolbypassrls),
                    ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                           WHERE m.member = r.oid)
               FROM pg_roles r WHERE rolname = $1",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(DbError::Unreachable)?;
        let Some((plain, memberships)) = found else {
            run_formatted(
                &self.ddl,
                &mut conn,
                "CREATE ROLE %I LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L",
                &[name, password],
                &format!("create role {name}"),
            )
            .await?;
            return Ok(LoginChange::Created);
        };
        let mut change = LoginChange::Unchanged;
        if !plain {
            run_formatted(
                &self.ddl,
                &mut conn,
                "ALTER ROLE %I LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                &[name],
                &format!("reset the attributes of role {name}"),
            )
            .await?;
            change = LoginChange::Updated;
        }
        for group in &memberships {
            run_formatted(
                &self.ddl,
                &mut conn,
                "REVOKE %I FROM %I",
                &[group, name],
                &format!("revoke role {group} from {name}"),
            )
            .await?;
            change = LoginChange::Updated;
        }
        if set_password {
            run_formatted(
                &self.ddl,
                &mut conn,
                "ALTER ROLE %I PASSWORD %L",
                &[name, password],
                &format!("set the password of role {name}"),
            )
            .await?;
            change = LoginChange::Updated;
        }
        Ok(change)
    }

    /// As an administrator: lets only `roles` connect to this database (no one through
    /// PUBLIC), lets the owner create in it and in schema `public` (nobody else may), and
    /// makes the owner the owner of schema `vault` and of every table, sequence, view and
    /// function already in `public` or `vault` (created before the roles existed),
    /// partitions included. Repeating it changes nothing.
    pub async fn hand_over(&self, roles: &RoleNames) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(DbError::Unreachable)?;
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(DbError::Unreachable)?;
        let (owner, workload, vault) = (roles.owner.as_str(), roles.workload.as_str(), roles.vault.as_str());
        // Each statement only when the privileges held differ from what it makes them: a
        // GRANT that changes nothing still rewrites the catalog row.
        let on_database = "SELECT COALESCE(d.datacl, acldefault('d', d.datdba)) FROM pg_database d
                            WHERE d.datname = current_database()";
        let on_schema = "SELECT COALESCE(n.nspacl, acldefault('n', n.nspowner)) FROM pg_namespace n
                          WHERE n.nspname = 'public'";
        let statements = [
            (
                "REVOKE ALL ON DATABASE %I FROM PUBLIC",
                vec![database.as_str()],
                on_database,
                "",
                &["CONNECT", "CREATE", "TEMPORARY"][..],
                false,
            ),
            (
                "GRANT CONNECT, CREATE ON DATABASE %I TO %I",
                vec![&database, owner],
                on_database,
                owner,
                &["CONNECT", "CREATE"][..],
                true,
            ),
            (
                "GRANT CONNECT ON DATABASE %I TO %I",
                vec![&database, workload],
                on_database,
                workload,
                &["CONNECT"][..],
                true,
            ),
            (
                "GRANT CONNECT ON DATABASE %I TO %I",
                vec![&database, vault],
                on_database,
                vault,
                &["CONNECT"][..],
                true,
            ),
            (
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                vec![],
                on_schema,
                "",
                &["CREATE"][..],
                false,
            ),
            (
                "GRANT USAGE, CREATE ON SCHEMA public TO %I",
                vec![owner],
                on_schema,
                owner,
                &["USAGE", "CREATE"][..],
                true,
            ),
            (
                "GRANT USAGE ON SCHEMA public TO %I",
                vec![workload],
                on_schema,
                workload,
                &["USAGE"][..],
                true,
            ),
            (
                "GRANT USAGE ON SCHEMA public TO %I",
                vec![vault],
                on_schema,
                vault,
                &["USAGE"][..],
                true,
            ),
        ];
        for (template, args, acl, grantee, privileges, grant) in statements {
            // The privileges `grantee` (PUBLIC when empty) holds directly.
            let held: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT a.privilege_type::text FROM ({acl}) o(acl), aclexplode(o.acl) a
                  WHERE a.grantee = CASE WHEN $1 = '' THEN 0::oid
                                         ELSE (SELECT oid FROM pg_roles WHERE rolname = $1) END"
            )))
            .bind(grantee)
            .fetch_all(&mut *tx)
            .await
            .map_err(DbError::Unreachable)?;
            let needed = if grant {
                privileges.iter().any(|p| !held.iter().any(|h| h == p))
            } else {
                privileges.iter().any(|p| held.iter().any(|h| h == p))
            };
            if needed {
                run_formatted(&self.ddl, &mut tx, template, &args, "grant the database to its roles").await?;
            }
        }
        // Handing objects to the owner takes membership in it, unless one is a superuser
        // (an RDS master user, or an external Region's administrator, is not).
        let member: bool = sqlx::query_scalar(
            "SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles WHERE rolname = current_user",
        )
        .bind(owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(DbError::Unreachable)?;
        if !member {
            run_formatted(
                &self.ddl,
                &mut tx,
                "GRANT %I TO CURRENT_USER",
                &[owner],
                "join the owner role",
            )
            .await?;
        }
        // The vault's schema, made by a migration that ran before the owner existed.
        let vault_schema_owned: Option<bool> = sqlx::query_scalar(
            "SELECT nspowner = (SELECT oid FROM pg_roles WHERE rolname = $1) FROM pg_namespace WHERE nspname = $2",
        )
        .bind(owner)
        .bind(schema::VAULT_SCHEMA)
        .fetch_optional(&mut *tx)
        .await
        .map_err(DbError::Unreachable)?;
        if vault_schema_owned == Some(false) {
            run_formatted(
                &self.ddl,
                &mut tx,
                "ALTER SCHEMA %I OWNER TO %I",
                &[schema::VAULT_SCHEMA, owner],
                &format!("give schema {} to {owner}", schema::VAULT_SCHEMA),
            )
            .await?;
        }
        let relations: Vec<(String, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT c.relkind::text, n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE {OWN_RELATIONS}
                AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
              ORDER BY c.relispartition, n.nspname, c.relname"
        )))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::Unreachable)?;
        for (kind, namespace, relation) in &relations {
            let keyword = RELATION_KINDS
                .iter()
                .find(|(k, _)| k == kind)
                .map_or("TABLE", |(_, keyword)| keyword);
            run_formatted(
                &self.ddl,
                &mut tx,
                &format!("ALTER {keyword} %I.%I OWNER TO %I"),
                &[namespace, relation, owner],
                &format!("give {namespace}.{relation} to {owner}"),
            )
            .await?;
        }
        let routines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace IN {SCHEMAS}
                AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')"
        )))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::Unreachable)?;
        for routine in &routines {
            // regprocedure's text is the routine's quoted name and argument types.
            sqlx::raw_sql(AssertSqlSafe(format!("ALTER ROUTINE {routine} OWNER TO \"{owner}\"")))
                .execute(&mut *tx)
                .await
                .map_err(role_error(format!("give {routine} to {owner}")))?;
            self.ddl.inc();
        }
        tx.commit().await.map_err(DbError::Unreachable)?;
        Ok(())
    }

    /// As the owner: gives the workload role exactly the privileges the schema says on each
    /// table ([`schema::workload_privileges`]) and the vault role its own
    /// ([`schema::vault_privileges`]), over the tables of `public` and of the vault, and none
    /// on anything else: not on the partitions (queries through a partitioned table are
    /// checked against it alone), not on sequences (identity columns need none). Of schema
    /// `vault`, only the vault role gets `USAGE`: the workload role, and PUBLIC, hold nothing
    /// there. Privileges held beyond those are revoked. Repeating it changes nothing.
    pub async fn grant_roles(&self, roles: &RoleNames) -> Result<(), DbError> {
        type Privileges = fn(&str) -> &'static [&'static str];
        let mut tx = self.pool.begin().await.map_err(DbError::Unreachable)?;
        let grantees: [(&str, Privileges, &[&str]); 2] = [
            (&roles.workload, schema::workload_privileges, &[]),
            (&roles.vault, schema::vault_privileges, &["USAGE"]),
        ];
        for (role, privileges, on_vault) in grantees {
            let relations: Vec<(String, String, String, String, bool, Vec<String>)> =
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT n.nspname::text, c.relname::text, {QUALIFIED_NAME}, c.relkind::text, c.relispartition,
                            ARRAY(SELECT a.privilege_type::text FROM aclexplode(c.relacl) a
                                   WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1))
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE {OWN_RELATIONS}
                      ORDER BY n.nspname, c.relname"
                )))
                .bind(role)
                .fetch_all(&mut *tx)
                .await
                .map_err(DbError::Unreachable)?;
            for (namespace, relation, qualified, kind, partition, held) in relations {
                let wanted: &[&str] = if (kind == "r" || kind == "p") && !partition {
                    privileges(&qualified)
                } else {
                    &[]
                };
                let keyword = if kind == "S" { "SEQUENCE" } else { "TABLE" };
                let (extra, missing) = difference(&held, wanted);
                // Privilege names come from the catalog or the schema's constant lists.
                if !extra.is_empty() {
                    run_formatted(
                        &self.ddl,
                        &mut tx,
                        &format!("REVOKE {} ON {keyword} %I.%I FROM %I", extra.join(", ")),
                        &[&namespace, &relation, role],
                        &format!("revoke {} on {qualified} from {role}", extra.join(", ")),
                    )
                    .await?;
                }
                if !missing.is_empty() {
                    run_formatted(
                        &self.ddl,
                        &mut tx,
                        &format!("GRANT {} ON {keyword} %I.%I TO %I", missing.join(", ")),
                        &[&namespace, &relation, role],
                        &format!("grant {} on {qualified} to {role}", missing.join(", ")),
                    )
                    .await?;
                }
            }
            self.grant_on_vault_schema(&mut tx, role, on_vault).await?;
        }
        // Nobody else reaches the vault's schema through PUBLIC.
        self.grant_on_vault_schema(&mut tx, "", &[]).await?;
        tx.commit().await.map_err(DbError::Unreachable)?;
        Ok(())
    }

    /// Brings what `role` (PUBLIC when empty) holds on schema `vault` to exactly `wanted`;
    /// nothing when the schema does not exist (yet).
    async fn grant_on_vault_schema(
        &self,
        conn: &mut sqlx::PgConnection,
        role: &str,
        wanted: &[&str],
    ) -> Result<(), DbError> {
        let held: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT ARRAY(SELECT a.privilege_type::text
                            FROM aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a
                           WHERE a.grantee = CASE WHEN $1 = '' THEN 0::oid
                                                  ELSE (SELECT oid FROM pg_roles WHERE rolname = $1) END)
               FROM pg_namespace n WHERE n.nspname = $2",
        )
        .bind(role)
        .bind(schema::VAULT_SCHEMA)
        .fetch_optional(&mut *conn)
        .await
        .map_err(DbError::Unreachable)?;
        let Some(held) = held else {
            return Ok(());
        };
        let (extra, missing) = difference(&held, wanted);
        let grantee = if role.is_empty() { "PUBLIC" } else { "%I" };
        let args: Vec<&str> = std::iter::once(schema::VAULT_SCHEMA)
            .chain((!role.is_empty()).then_some(role))
            .collect();
        let shown = if role.is_empty() { "PUBLIC" } else { role };
        if !extra.is_empty() {
            run_formatted(
                &self.ddl,
                conn,
                &format!("REVOKE {} ON SCHEMA %I FROM {grantee}", extra.join(", ")),
                &args,
                &format!("revoke {} on schema vault from {shown}", extra.join(", ")),
            )
            .await?;
        }
        if !missing.is_empty() {
            run_formatted(
                &self.ddl,
                conn,
                &format!("GRANT {} ON SCHEMA %I TO {grantee}", missing.join(", ")),
                &args,
                &format!("grant {} on schema vault to {shown}", missing.join(", ")),
            )
            .await?;
        }
        Ok(())
    }
}

/// The privileges of `held` not in `wanted`, and those of `wanted` not held.
fn difference<'a>(held: &'a [String], wanted: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let extra = held
        .iter()
        .map(String::as_str)
        .filter(|p| !wanted.contains(p))
        .collect();
    let missing = wanted
        .iter()
        .copied()
        .filter(|p| !held.iter().any(|h| h == p))
        .collect();
    (extra, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_region_has_three_roles_whose_names_fit_postgres_and_never_collide() {
        let roles = RoleNames::of("eu-central-1");
        assert_eq!(
            (roles.owner.as_str(), roles.workload.as_str(), roles.vault.as_str()),
            (
                "meridian_eu_central_1_owner",
                "meridian_eu_central_1_workload",
                "meridian_eu_central_1_vault"
            )
        );
        let long = "a-region-whose-name-is-far-too-long-for-a-postgresql-role-name-of-its-own";
        let roles = RoleNames::of(long);
        for name in [&roles.owner, &roles.workload, &roles.vault] {
            assert!(name.len() <= 63, "{name}");
        }
        assert!(roles.vault.ends_with("_vault") && roles.workload.ends_with("_workload"));
        assert_eq!(roles.vault.len(), 63, "{}", roles.vault);
        let other = RoleNames::of(&format!("{long}-2"));
        assert_ne!(roles.vault, other.vault, "the hash of the whole name tells them apart");
    }
}
