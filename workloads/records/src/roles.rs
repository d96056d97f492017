//! Login roles holding exactly what the platform schema grants the workload (clinical) and
//! vault roles, for benchmarks and tests that start a database of their own. In a Region,
//! the control plane creates these roles.

use sqlx::PgPool;

/// Creates login role `name` with password `password`, holding `privileges(table)` on every
/// platform table (`vault.<t>` for the vault's), and USAGE on schema `vault` only when it
/// holds something there.
pub async fn create_login(
    admin: &PgPool,
    name: &str,
    password: &str,
    privileges: fn(&str) -> &'static [&'static str],
) -> Result<(), sqlx::Error> {
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {} LOGIN PASSWORD {}",
        ident(name),
        literal(password)
    )))
    .execute(admin)
    .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_class c
          WHERE c.relnamespace IN ('public'::regnamespace, 'vault'::regnamespace)
            AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )
    .fetch_all(admin)
    .await?;
    for table in tables {
        let wanted = privileges(&table);
        if wanted.is_empty() {
            continue;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "GRANT {} ON {table} TO {}",
            wanted.join(", "),
            ident(name)
        )))
        .execute(admin)
        .await?;
        if table.starts_with("vault.") {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "GRANT USAGE ON SCHEMA vault TO {}",
                ident(name)
            )))
            .execute(admin)
            .await?;
        }
    }
    Ok(())
}

/// `url` (a superuser's, without a password) as login `role` with `password`.
pub fn as_login(url: &str, role: &str, password: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?.1)))
    {
        Some((scheme, host)) => format!("{scheme}://{role}:{password}@{host}"),
        None => url.to_string(),
    }
}
