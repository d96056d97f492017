//! The PatientIndex's store in its Region's database: schema `mpi` (see
//! [`meridian_shared::schema::mpi`]) owned by the Region's owner role, and a login role of
//! its own that may connect and work the entries, and nothing else.

use meridian_shared::schema::mpi::{MPI_PRIVILEGES, MPI_SCHEMA};
use sqlx::AssertSqlSafe;

use super::postgres::{DbError, RegionDb, run_formatted};

/// The index role of PatientIndex `index`: `meridian_<index>_mpi`.
pub fn role_name(index: &str) -> String {
    super::postgres::role_name(index, "mpi")
}

/// The name of the database `conn` is connected to.
async fn database_name(conn: &mut sqlx::PgConnection) -> Result<String, DbError> {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(conn)
        .await
        .map_err(DbError::Unreachable)
}

/// Whether login role `role` exists.
async fn role_exists(conn: &mut sqlx::PgConnection, role: &str) -> Result<bool, DbError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(conn)
        .await
        .map_err(DbError::Unreachable)
}

impl RegionDb {
    /// As the owner: creates the index's schema and table when missing and grants `role`
    /// exactly what [`MPI_PRIVILEGES`] names on them. Answers whether the schema was created
    /// now (rather than found). Repeating it changes nothing.
    pub async fn ensure_index(&self, role: &str) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await.map_err(DbError::Unreachable)?;
        let existed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(MPI_SCHEMA)
            .fetch_one(&mut *tx)
            .await
            .map_err(DbError::Unreachable)?;
        if !existed {
            meridian_shared::schema::mpi::ensure(&mut tx)
                .await
                .map_err(|source| DbError::Apply {
                    change: "create schema mpi".into(),
                    source,
                })?;
            self.ddl.inc();
        }
        let usage: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, $2, 'USAGE')")
            .bind(role)
            .bind(MPI_SCHEMA)
            .fetch_one(&mut *tx)
            .await
            .map_err(DbError::Unreachable)?;
        if !usage {
            run_formatted(
                &self.ddl,
                &mut tx,
                "GRANT USAGE ON SCHEMA mpi TO %I",
                &[role],
                &format!("grant usage on schema mpi to {role}"),
            )
            .await?;
        }
        let held: Vec<String> = sqlx::query_scalar(
            "SELECT a.privilege_type::text FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.oid = 'mpi.entries'::regclass AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        )
        .bind(role)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::Unreachable)?;
        let extra: Vec<&str> = held
            .iter()
            .map(String::as_str)
            .filter(|p| !MPI_PRIVILEGES.contains(p))
            .collect();
        let missing: Vec<&str> = MPI_PRIVILEGES
            .iter()
            .copied()
            .filter(|p| !held.iter().any(|h| h == p))
            .collect();
        // Privilege names come from the catalog or the schema's constant list.
        if !extra.is_empty() {
            run_formatted(
                &self.ddl,
                &mut tx,
                &format!("REVOKE {} ON TABLE mpi.entries FROM %I", extra.join(", ")),
                &[role],
                &format!("revoke {} on mpi.entries from {role}", extra.join(", ")),
            )
            .await?;
        }
        if !missing.is_empty() {
            run_formatted(
                &self.ddl,
                &mut tx,
                &format!("GRANT {} ON TABLE mpi.entries TO %I", missing.join(", ")),
                &[role],
                &format!("grant {} on mpi.entries to {role}", missing.join(", ")),
            )
            .await?;
        }
        tx.commit().await.map_err(DbError::Unreachable)?;
        Ok(!existed)
    }

    /// As an administrator: lets `role` connect to this database (the Region's hand-over
    /// lets no one in through PUBLIC).
    pub async fn grant_connect(&self, role: &str) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a
                     WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'
                       AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1))",
        )
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .map_err(DbError::Unreachable)?;
        if held {
            return Ok(());
        }
        let database = database_name(&mut conn).await?;
        run_formatted(
            &self.ddl,
            &mut conn,
            "GRANT CONNECT ON DATABASE %I TO %I",
            &[&database, role],
            &format!("grant connect to {role}"),
        )
        .await
    }

    /// As the owner: drops schema `mpi` with its entries. Only for a PatientIndex whose
    /// manifest says `deletionPolicy: Delete` and whose status records the schema as created
    /// by it.
    pub async fn drop_index(&self) -> Result<(), DbError> {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {MPI_SCHEMA} CASCADE")))
            .execute(&self.pool)
            .await
            .map_err(|source| DbError::Apply {
                change: "drop schema mpi".into(),
                source,
            })?;
        self.ddl.inc();
        Ok(())
    }

    /// As the owner: takes back what [`RegionDb::ensure_index`] granted `role`, on a schema
    /// this PatientIndex found and keeps.
    pub async fn revoke_index(&self, role: &str) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        let schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'mpi')")
            .fetch_one(&mut *conn)
            .await
            .map_err(DbError::Unreachable)?;
        if !schema || !role_exists(&mut conn, role).await? {
            return Ok(());
        }
        run_formatted(
            &self.ddl,
            &mut conn,
            "REVOKE ALL ON ALL TABLES IN SCHEMA mpi FROM %I; REVOKE ALL ON SCHEMA mpi FROM %I",
            &[role, role],
            &format!("revoke the index from {role}"),
        )
        .await
    }

    /// As an administrator: removes login role `role` (its grants on this database first).
    pub async fn drop_login(&self, role: &str) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::Unreachable)?;
        if !role_exists(&mut conn, role).await? {
            return Ok(());
        }
        let database = database_name(&mut conn).await?;
        run_formatted(
            &self.ddl,
            &mut conn,
            "REVOKE ALL ON DATABASE %I FROM %I",
            &[&database, role],
            &format!("revoke connect from {role}"),
        )
        .await?;
        run_formatted(
            &self.ddl,
            &mut conn,
            "DROP ROLE %I",
            &[role],
            &format!("drop role {role}"),
        )
        .await
    }
}
