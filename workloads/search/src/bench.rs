//! `meridian bench search`: how fast the embedded search engine indexes practitioners and
//! answers a mix of queries, next to the same queries as SQL `ILIKE` over PostgreSQL (what
//! a service without a search index would do).

use std::time::Instant;

use meridian_localpg::{Cluster, Durability};
use meridian_shared::schema::prepare;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::embedded::Engine;
use crate::{Document, IndexSettings, Language, Query, alias, versioned};

/// Options of `meridian bench search`.
#[derive(clap::Args, Clone, Debug)]
pub struct SearchBench {
    /// Practitioners to index.
    #[arg(long, default_value_t = 100_000)]
    pub docs: usize,
    /// Queries to run against the engine.
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// Queries to run against PostgreSQL (each scans every row, so fewer).
    #[arg(long, default_value_t = 200)]
    pub sql_queries: usize,
}

const GIVEN: &[&str] = &[
    "Anna", "Lena", "Marie", "Sophie", "Laura", "Julia", "Sarah", "Lea", "Hannah", "Mia", "Jonas", "Lukas", "Leon",
    "Finn", "Paul", "Felix", "Max", "Elias", "Noah", "Ben", "Thomas", "Stefan", "Andreas", "Michael", "Sabine",
];
const FAMILY: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Bauer",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Krause",
    "Meier",
    "Lehmann",
    "Schmid",
];
const SPECIALTIES: &[&str] = &[
    "Kardiologie",
    "Dermatologie",
    "Allgemeinmedizin",
    "Kinderheilkunde",
    "Gynäkologie",
    "Orthopädie",
    "Neurologie",
    "Augenheilkunde",
    "Psychiatrie",
    "Urologie",
];
const CITIES: &[&str] = &[
    "Berlin",
    "Hamburg",
    "München",
    "Köln",
    "Frankfurt",
    "Stuttgart",
    "Düsseldorf",
    "Leipzig",
    "Dortmund",
    "Essen",
    "Bremen",
    "Dresden",
];

/// One query of the mix, as the engine takes it and as SQL words and filters.
struct Case {
    name: &'static str,
    text: &'static str,
    specialty: Option<&'static str>,
    city: Option<&'static str>,
    language: Option<&'static str>,
}

const MIX: &[Case] = &[
    Case {
        name: "specialty word",
        text: "Kardiologie",
        specialty: None,
        city: None,
        language: None,
    },
    Case {
        name: "name and city",
        text: "Schmidt Berlin",
        specialty: None,
        city: None,
        language: None,
    },
    Case {
        name: "two words",
        text: "Allgemeinmedizin München",
        specialty: None,
        city: None,
        language: None,
    },
    Case {
        name: "filters only",
        text: "",
        specialty: Some("Dermatologie"),
        city: Some("Hamburg"),
        language: None,
    },
    Case {
        name: "name + language",
        text: "Weber",
        specialty: None,
        city: None,
        language: Some("en"),
    },
    Case {
        name: "full name",
        text: "Anna Müller",
        specialty: None,
        city: None,
        language: None,
    },
    Case {
        name: "typo",
        text: "Kinderhielkunde",
        specialty: None,
        city: None,
        language: None,
    },
    Case {
        name: "German form",
        text: "Kardiologin",
        specialty: None,
        city: None,
        language: None,
    },
];

pub async fn run(options: SearchBench) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new().prefix("meridian-bench-search-").tempdir()?;
    let cluster = Cluster::start(&dir.path().join("pg"), Durability::Throwaway).await?;
    cluster.ensure_database("meridian").await?;
    let url = cluster.url("meridian");
    let mut conn = PgConnection::connect(&url).await?;
    prepare(&mut conn, &["DE"]).await?;
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await?;
    let mut out = format!(
        "search benchmark: {} practitioners, {} queries against the embedded engine, {} against PostgreSQL ILIKE\n",
        options.docs, options.queries, options.sql_queries
    );

    let started = Instant::now();
    let docs = seed(&pool, options.docs).await?;
    out += &format!(
        "seeded PostgreSQL in {:.1} s (bulk insert)\n",
        started.elapsed().as_secs_f64()
    );

    let engine = Engine::open(&dir.path().join("search"))?;
    let index = versioned("DE", 1);
    let settings = IndexSettings {
        language: Language::German,
        synonyms: vec!["Hausarzt, Allgemeinarzt => Allgemeinmedizin".into()],
    };
    let started = Instant::now();
    engine.create_index(&index, &settings).await?;
    for batch in docs.chunks(10_000) {
        engine.fill(&index, batch).await?;
    }
    let indexing = started.elapsed().as_secs_f64();
    engine.point_alias(&alias("DE"), &index).await?;
    let index_rate = docs.len() as f64 / indexing;
    out += &format!(
        "indexed {} documents in {indexing:.2} s ({index_rate:.0} docs/s)\n",
        docs.len()
    );

    let mut engine_ms = Vec::with_capacity(options.queries);
    let mut sql_ms = Vec::with_capacity(options.queries);
    let mut found = vec![(0u64, 0i64); MIX.len()];
    for i in 0..options.queries {
        let case = &MIX[i % MIX.len()];
        let query = Query {
            text: (!case.text.is_empty()).then(|| case.text.to_string()),
            specialty: case.specialty.map(String::from),
            city: case.city.map(String::from),
            language: case.language.map(String::from),
            offset: 0,
            limit: 20,
        };
        let t = Instant::now();
        let hits = engine.search(&alias("DE"), &query).await?;
        engine_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        found[i % MIX.len()].0 = hits.total;
        if i < options.sql_queries {
            let t = Instant::now();
            found[i % MIX.len()].1 = ilike(&pool, case).await?;
            sql_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    engine_ms.sort_by(f64::total_cmp);
    sql_ms.sort_by(f64::total_cmp);
    out += "query                     engine matches   ILIKE matches\n";
    for (case, (engine_total, sql_total)) in MIX.iter().zip(&found) {
        out += &format!("{:<24} {engine_total:>15} {sql_total:>15}\n", case.name);
    }
    let p = meridian_shared::bench::percentile;
    out += &format!(
        "engine   p50 {:>7.2} ms  p99 {:>7.2} ms\nILIKE    p50 {:>7.2} ms  p99 {:>7.2} ms\n",
        p(&engine_ms, 50.0),
        p(&engine_ms, 99.0),
        p(&sql_ms, 50.0),
        p(&sql_ms, 99.0)
    );
    let (query_p99, sql_p99) = (p(&engine_ms, 99.0), p(&sql_ms, 99.0));
    out += &format!(
        "docs={} index_docs_per_s={index_rate:.0} query_p50_ms={:.2} query_p99_ms={query_p99:.2} sql_p99_ms={sql_p99:.2} speedup_p99={:.1}\n",
        docs.len(),
        p(&engine_ms, 50.0),
        if query_p99 > 0.0 { sql_p99 / query_p99 } else { 0.0 }
    );
    pool.close().await;
    drop(engine);
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    Ok(out)
}

/// Inserts `count` practitioners with made-up German profiles, in batches of one statement
/// each; returns them as documents. (The search crate cannot use the booking domain's import,
/// which depends on it: the rows are written directly, without the import's outbox and audit
/// records, which nothing measured here reads.)
async fn seed(pool: &PgPool, count: usize) -> anyhow::Result<Vec<Document>> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut docs = Vec::with_capacity(count);
    for start in (0..count).step_by(5_000) {
        let mut columns: [Vec<String>; 6] = Default::default();
        for i in start..count.min(start + 5_000) {
            let mut languages = vec!["de"];
            if rng.random_bool(0.4) {
                languages.push("en");
            }
            let row = [
                format!("bench-{i}"),
                GIVEN[rng.random_range(0..GIVEN.len())].into(),
                FAMILY[rng.random_range(0..FAMILY.len())].into(),
                SPECIALTIES[rng.random_range(0..SPECIALTIES.len())].into(),
                CITIES[rng.random_range(0..CITIES.len())].into(),
                languages.join(","),
            ];
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        let [external_id, given, family, specialty, city, languages] = columns;
        sqlx::query(
            "INSERT INTO practitioners (country_code, id, external_id, given_name, family_name, specialty, city, languages)
             SELECT 'DE', gen_random_uuid(), external_id, given_name, family_name, specialty, city, string_to_array(languages, ',')
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                 AS r(external_id, given_name, family_name, specialty, city, languages)",
        )
        .bind(external_id)
        .bind(given)
        .bind(family)
        .bind(specialty)
        .bind(city)
        .bind(languages)
        .execute(pool)
        .await?;
    }
    let mut after = Uuid::nil();
    loop {
        let page = crate::versions::practitioners(pool, "DE", after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        docs.extend(page);
    }
    Ok(docs)
}

/// The same query without an index: every word somewhere in the profile, exact filters,
/// the first page and the number of matches.
async fn ilike(pool: &PgPool, case: &Case) -> anyhow::Result<i64> {
    let words: Vec<String> = case.text.split_whitespace().map(|w| format!("%{w}%")).collect();
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, count(*) OVER () FROM practitioners
          WHERE country_code = 'DE' AND active
            AND (SELECT bool_and(given_name ILIKE w OR family_name ILIKE w OR specialty ILIKE w OR city ILIKE w)
                   FROM unnest($1::text[]) AS w) IS NOT FALSE
            AND ($2::text IS NULL OR lower(specialty) = lower($2))
            AND ($3::text IS NULL OR lower(city) = lower($3))
            AND ($4::text IS NULL OR $4 = ANY(languages))
          ORDER BY family_name, id LIMIT 20",
    )
    .bind(&words)
    .bind(case.specialty)
    .bind(case.city)
    .bind(case.language)
    .fetch_all(pool)
    .await?;
    Ok(rows.first().map_or(0, |r| r.1))
}
