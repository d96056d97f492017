//! What a team would do in PostgreSQL before adding a search engine, on the same
//! `practitioners` table: full-text search (a generated `tsvector` with the `german`
//! configuration and a GIN index, `websearch_to_tsquery`, ranked by `ts_rank`), `pg_trgm`
//! for typos (a generated text column with a GIN `gin_trgm_ops` index; every query word
//! must be word-similar, `<%`, to it), and `ILIKE '%word%'` without any index.

use sqlx::{PgPool, Postgres};
use uuid::Uuid;

/// The word similarity a query word needs to the profile (pg_trgm's default, which a
/// team keeps unless it has reasons to move it).
pub(crate) const TRIGRAM_THRESHOLD: f64 = 0.6;

/// The PostgreSQL methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sql {
    FullText,
    Trigram,
    Ilike,
}

/// Adds the columns and indexes each method needs (after the bulk load, as a migration
/// on an existing table would), then vacuums and analyses the table.
pub(crate) async fn prepare(pool: &PgPool) -> anyhow::Result<()> {
    for statement in [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm".to_string(),
        // Specialty weighs most, then the family name, as in the embedded engine.
        "ALTER TABLE practitioners
           ADD COLUMN search_fts tsvector GENERATED ALWAYS AS (
                 setweight(to_tsvector('german', specialty), 'A')
              || setweight(to_tsvector('german', family_name), 'B')
              || setweight(to_tsvector('german', given_name || ' ' || city), 'C')) STORED,
           ADD COLUMN search_text text GENERATED ALWAYS AS (
                 given_name || ' ' || family_name || ' ' || specialty || ' ' || city) STORED"
            .to_string(),
        "CREATE INDEX practitioners_search_fts ON practitioners USING gin (search_fts)".to_string(),
        "CREATE INDEX practitioners_search_trgm ON practitioners USING gin (search_text gin_trgm_ops)".to_string(),
        "VACUUM (ANALYZE) practitioners".to_string(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(pool).await?;
    }
    Ok(())
}

/// The statement of `method` for a query of `words` words: the ids of the matching active
/// practitioners of `DE`, best first, each with the number of matches; the first page only
/// when `page` is set. Query words are bound parameters (`$1`...).
fn statement(method: Sql, words: usize, page: Option<usize>) -> String {
    let (from, filter, order) = match method {
        Sql::FullText => (
            ", websearch_to_tsquery('german', $1) AS q".to_string(),
            "search_fts @@ q".to_string(),
            "ts_rank(search_fts, q) DESC, id".to_string(),
        ),
        Sql::Trigram => {
            let each = |f: &dyn Fn(usize) -> String, join: &str| (1..=words).map(f).collect::<Vec<_>>().join(join);
            (
                String::new(),
                each(&|i| format!("${i} <% search_text"), " AND "),
                format!(
                    "{} DESC, id",
                    each(&|i| format!("word_similarity(${i}, search_text)"), " + ")
                ),
            )
        }
        Sql::Ilike => (
            String::new(),
            (1..=words)
                .map(|i| {
                    format!(
                        "(given_name ILIKE ${i} OR family_name ILIKE ${i} OR specialty ILIKE ${i} OR city ILIKE ${i})"
                    )
                })
                .collect::<Vec<_>>()
                .join(" AND "),
            "family_name, id".to_string(),
        ),
    };
    let filter = if filter.is_empty() { "true".to_string() } else { filter };
    let limit = page.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    format!(
        "SELECT id, count(*) OVER () FROM practitioners{from}
          WHERE country_code = 'DE' AND active AND {filter}
          ORDER BY {order}{limit}"
    )
}

/// The parameters of `text` for `method`.
fn parameters(method: Sql, text: &str) -> Vec<String> {
    match method {
        Sql::FullText => vec![text.to_string()],
        Sql::Trigram => text.split_whitespace().map(str::to_string).collect(),
        Sql::Ilike => text
            .split_whitespace()
            .map(|w| format!("%{}%", w.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
            .collect(),
    }
}

/// Runs `text` with `method`: the matching ids, best first (the first `page` only, if
/// set), and the number of matches.
pub(crate) async fn search(
    pool: &PgPool,
    method: Sql,
    text: &str,
    page: Option<usize>,
) -> anyhow::Result<(Vec<Uuid>, i64)> {
    let params = parameters(method, text);
    let sql = statement(method, params.len(), page);
    let mut query = sqlx::query_as::<Postgres, (Uuid, i64)>(sqlx::AssertSqlSafe(sql));
    for param in params {
        query = query.bind(param);
    }
    let rows = query.fetch_all(pool).await?;
    let total = rows.first().map_or(0, |r| r.1);
    Ok((rows.into_iter().map(|r| r.0).collect(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_bind_one_parameter_per_word() {
        let trigram = statement(Sql::Trigram, 2, Some(20));
        assert!(trigram.contains("$1 <% search_text AND $2 <% search_text"), "{trigram}");
        assert!(trigram.ends_with("LIMIT 20"), "{trigram}");
        let ilike = statement(Sql::Ilike, 2, None);
        assert!(ilike.contains("city ILIKE $2)"), "{ilike}");
        assert!(!ilike.contains("LIMIT"));
        assert_eq!(parameters(Sql::Ilike, "a_b 50%"), ["%a\\_b%", "%50\\%%"]);
        assert_eq!(parameters(Sql::FullText, "Kölner Hautärzte"), ["Kölner Hautärzte"]);
    }
}
