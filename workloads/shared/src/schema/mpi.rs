//! The Master Patient Index's store: schema `mpi` in the database of the PatientIndex's
//! Region, apart from the platform schema, with a role of its own. An entry maps a keyed hash
//! of a national ID (`HMAC-SHA-256(key, country|scheme|normalised ID)`, computed by the
//! records services, which hold the key) to where the patient's records live: home country,
//! home Region and client ID, and the key version the hash was made with. Nothing else: no
//! raw ID, no name, no clinical data, and the index's credentials never see a key.

/// The index's schema.
pub const MPI_SCHEMA: &str = "mpi";

/// Creates the index's schema and table if they are missing; safe to run again, and never
/// drops or changes what is there.
pub const MPI_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS mpi;
CREATE TABLE IF NOT EXISTS mpi.entries (
    hash          bytea       PRIMARY KEY CHECK (octet_length(hash) = 32),
    key_version   text        NOT NULL CHECK (key_version ~ '^k[0-9]+$'),
    home_country  text        NOT NULL CHECK (home_country ~ '^[A-Z]{2}$'),
    home_region   text        NOT NULL CHECK (home_region ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'),
    client_id     uuid        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- A patient's entries, for when their ID changes or a key version is retired.
CREATE INDEX IF NOT EXISTS entries_by_patient ON mpi.entries (home_country, client_id);
";

/// What the index role may do: row access on the entries and nothing else in the database.
pub const MPI_PRIVILEGES: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];

/// Creates the index's schema and table (see [`MPI_SQL`]).
pub async fn ensure(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(MPI_SQL).execute(conn).await?;
    Ok(())
}

/// Grants role `role` (quoted by the caller) what [`MPI_PRIVILEGES`] names on the entries,
/// and USAGE on the schema.
pub fn grant_sql(role: &str) -> String {
    format!(
        "GRANT USAGE ON SCHEMA mpi TO {role}; GRANT {} ON mpi.entries TO {role};",
        MPI_PRIVILEGES.join(", ")
    )
}
