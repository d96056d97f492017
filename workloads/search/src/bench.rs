//! `meridian bench search`: how fast the embedded search engine indexes practitioners and
//! answers queries, and how many of the practitioners each query is meant to find it does
//! find, next to what a team would use in PostgreSQL before adding a search engine:
//! full-text search (`tsvector` with the `german` configuration, GIN), `pg_trgm` for typos
//! (GIN), and `ILIKE` without an index. Every method gets the same documents and the same
//! queries (exact words, German word forms, typos) in the same run, against a PostgreSQL
//! the bench starts.

mod corpus;
mod postgres;

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use meridian_localpg::{Cluster, Durability};
use meridian_shared::schema::prepare;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use self::corpus::CASES;
pub use self::corpus::Kind;
use self::postgres::{Sql, TRIGRAM_THRESHOLD};
use crate::embedded::Engine;
use crate::{Document, IndexSettings, Language, Query, alias, versioned};

/// Options of `meridian bench search`.
#[derive(clap::Args, Clone, Debug)]
pub struct SearchBench {
    /// Practitioners to index.
    #[arg(long, default_value_t = 100_000)]
    pub docs: usize,
    /// Queries to run against the embedded engine (rounded up to whole passes over the
    /// query set, as are the others).
    #[arg(long, default_value_t = 2_000)]
    pub queries: usize,
    /// Queries to run against PostgreSQL full-text search.
    #[arg(long, default_value_t = 1_000)]
    pub fts_queries: usize,
    /// Queries to run against PostgreSQL trigrams and ILIKE each (ILIKE scans every row,
    /// so fewer).
    #[arg(long, default_value_t = 200)]
    pub sql_queries: usize,
}

/// The database the bench creates in its cluster.
const DATABASE: &str = "meridian_bench";
/// A search's first page, as the search API returns it.
const PAGE: usize = 20;

/// What one method measured.
#[derive(Clone, Debug)]
pub struct Figures {
    /// `embedded`, `fts`, `trgm` or `ilike`.
    pub name: &'static str,
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Share of the expected matches found, averaged over the queries.
    pub recall: f64,
    /// The same per kind of query, in [`Kind::ALL`] order.
    pub recall_by_kind: [f64; 3],
    /// Expected matches found, and expected, over all queries.
    pub found: u64,
    pub expected: u64,
    /// Share of the first pages' hits that are expected matches.
    pub first_page_precision: f64,
}

impl Figures {
    pub fn recall_of(&self, kind: Kind) -> f64 {
        self.recall_by_kind[Kind::ALL.iter().position(|k| *k == kind).expect("a kind")]
    }
}

/// A run's printed report and its figures.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub methods: Vec<Figures>,
}

impl Report {
    pub fn method(&self, name: &str) -> Option<&Figures> {
        self.methods.iter().find(|m| m.name == name)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Embedded,
    Sql(Sql),
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Embedded,
        Method::Sql(Sql::FullText),
        Method::Sql(Sql::Trigram),
        Method::Sql(Sql::Ilike),
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Embedded => "embedded",
            Method::Sql(Sql::FullText) => "fts",
            Method::Sql(Sql::Trigram) => "trgm",
            Method::Sql(Sql::Ilike) => "ilike",
        }
    }

    fn how(self) -> String {
        match self {
            Method::Embedded => "tantivy in-process, German analyzer, 1-2 typos per word".into(),
            Method::Sql(Sql::FullText) => "tsvector('german') + GIN, websearch_to_tsquery, ts_rank".into(),
            Method::Sql(Sql::Trigram) => {
                format!("pg_trgm GIN, each word <% profile (threshold {TRIGRAM_THRESHOLD})")
            }
            Method::Sql(Sql::Ilike) => "each word ILIKE '%word%' in a field, no index".into(),
        }
    }
}

/// Runs the bench in a PostgreSQL cluster of its own and returns what it prints.
pub async fn run(options: SearchBench) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new().prefix("meridian-bench-search-").tempdir()?;
    let cluster = Cluster::start(&dir.path().join("pg"), Durability::Throwaway).await?;
    let report = measure(&cluster, dir.path(), &options).await;
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    Ok(report?.text)
}

/// Runs the bench against `cluster`, in a database `meridian_bench` it creates there (and
/// refuses to reuse), with the embedded engine's files under `work`.
pub async fn measure(cluster: &Cluster, work: &Path, options: &SearchBench) -> anyhow::Result<Report> {
    let ctype = create_database(cluster).await?;
    let url = cluster.url(DATABASE);
    let mut conn = PgConnection::connect(&url).await?;
    prepare(&mut conn, &["DE"]).await?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut conn).await?;
    conn.close().await?;
    let pool = PgPoolOptions::new().max_connections(2).connect(&url).await?;
    let passes = |n: usize| n.div_ceil(CASES.len()).max(1);
    let kinds = Kind::ALL
        .map(|k| format!("{} {}", CASES.iter().filter(|c| c.kind == k).count(), k.label()))
        .join(", ");
    // Other work on the machine shows in every method's latency.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(|one| format!("; load average {one}")))
        .unwrap_or_default();
    let mut out = format!(
        "search benchmark: {} practitioners, {} queries ({kinds}); PostgreSQL {version} (database ctype {ctype}){load}\n",
        options.docs,
        CASES.len(),
    );

    let started = Instant::now();
    let docs = seed(&pool, options.docs).await?;
    out += &format!(
        "seeded PostgreSQL in {:.1} s (bulk insert)\n",
        started.elapsed().as_secs_f64()
    );

    let engine = Engine::open(&work.join("search"))?;
    let index = versioned("DE", 1);
    // No synonyms: PostgreSQL gets none either.
    let settings = IndexSettings {
        language: Language::German,
        synonyms: vec![],
    };
    let started = Instant::now();
    engine.create_index(&index, &settings).await?;
    for batch in docs.chunks(10_000) {
        engine.fill(&index, batch).await?;
    }
    let indexing = started.elapsed().as_secs_f64();
    let started = Instant::now();
    engine.point_alias(&alias("DE"), &index).await?;
    let live = started.elapsed().as_secs_f64();
    let index_rate = docs.len() as f64 / indexing;
    // Read-only: how many segments a search goes through (each one more term dictionary
    // and posting list per word and field).
    let segments = tantivy::Index::open_in_dir(work.join("search").join("indexes").join(&index))
        .and_then(|i| i.searchable_segment_ids())
        .map_or_else(|e| format!("unknown ({e})"), |ids| ids.len().to_string());
    out += &format!(
        "indexed {} documents into the embedded engine in {indexing:.2} s ({index_rate:.0} docs/s, in batches of 10000 as an index version is built), live in {live:.2} s more (merged to {segments} segment(s))\n",
        docs.len()
    );

    let started = Instant::now();
    postgres::prepare(&pool).await?;
    out += &format!(
        "added PostgreSQL's generated tsvector and text columns, their GIN indexes (full-text, trigram), VACUUM ANALYZE: {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    let expected: Vec<HashSet<Uuid>> = CASES
        .iter()
        .map(|case| {
            docs.iter()
                .filter(|d| d.active && case.expects(d))
                .map(|d| d.id)
                .collect()
        })
        .collect();
    out += "every method: one pass to read all matches of every query (recall), one warm-up pass, then timed passes\n";
    out += "(first page of 20 best hits and the number of matches, one query at a time)\n\n";

    let mut figures = Vec::new();
    let mut found_table: Vec<Vec<usize>> = vec![Vec::new(); CASES.len()];
    let mut median_table: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for method in Method::ALL {
        let requested = match method {
            Method::Embedded => options.queries,
            Method::Sql(Sql::FullText) => options.fts_queries,
            Method::Sql(_) => options.sql_queries,
        };
        let mut recall_sum = [0.0; 3];
        let (mut found_total, mut expected_total) = (0u64, 0u64);
        let (mut on_page, mut page_hits) = (0usize, 0usize);
        for (i, case) in CASES.iter().enumerate() {
            let ranked = all_matches(&engine, &pool, method, case.text).await?;
            let wanted = &expected[i];
            let found = ranked.iter().filter(|id| wanted.contains(id)).count();
            found_table[i].push(found);
            let kind = Kind::ALL.iter().position(|k| *k == case.kind).expect("a kind");
            recall_sum[kind] += found as f64 / wanted.len() as f64;
            found_total += found as u64;
            expected_total += wanted.len() as u64;
            let page = &ranked[..ranked.len().min(PAGE)];
            page_hits += page.len();
            on_page += page.iter().filter(|id| wanted.contains(id)).count();
        }
        for case in CASES {
            first_page(&engine, &pool, method, case.text).await?;
        }
        let mut ms = Vec::new();
        let mut by_case = vec![Vec::new(); CASES.len()];
        for _ in 0..passes(requested) {
            for (i, case) in CASES.iter().enumerate() {
                let t = Instant::now();
                first_page(&engine, &pool, method, case.text).await?;
                let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                ms.push(elapsed);
                by_case[i].push(elapsed);
            }
        }
        let p = meridian_shared::bench::percentile;
        for (i, mut times) in by_case.into_iter().enumerate() {
            times.sort_by(f64::total_cmp);
            median_table[i].push(p(&times, 50.0));
        }
        ms.sort_by(f64::total_cmp);
        let per_kind = Kind::ALL.map(|k| CASES.iter().filter(|c| c.kind == k).count() as f64);
        let recall_by_kind = [0, 1, 2].map(|k| recall_sum[k] / per_kind[k]);
        figures.push(Figures {
            name: method.name(),
            queries: ms.len(),
            p50_ms: p(&ms, 50.0),
            p99_ms: p(&ms, 99.0),
            recall: recall_sum.iter().sum::<f64>() / CASES.len() as f64,
            recall_by_kind,
            found: found_total,
            expected: expected_total,
            first_page_precision: if page_hits == 0 {
                0.0
            } else {
                on_page as f64 / page_hits as f64
            },
        });
    }

    out += "expected matches found per query, and the median time of its first page\n";
    out += &format!("{:<29} {:<10} {:>8}", "query", "kind", "expected");
    for method in Method::ALL {
        out += &format!("  {:>8} {:>8}", method.name(), "ms");
    }
    out += "\n";
    for (i, case) in CASES.iter().enumerate() {
        out += &format!("{:<29} {:<10} {:>8}", case.text, case.kind.label(), expected[i].len());
        for (found, ms) in found_table[i].iter().zip(&median_table[i]) {
            out += &format!("  {found:>8} {ms:>8.2}");
        }
        out += "\n";
    }
    out += &format!(
        "\n{:<9} {:<62} {:>7} {:>8} {:>8}  {:>6} {:>6} {:>6} {:>6}  {:>15}  {:>9}\n",
        "method",
        "how",
        "queries",
        "p50 ms",
        "p99 ms",
        "recall",
        "exact",
        "forms",
        "typos",
        "found/expected",
        "top-20 ok"
    );
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    for (method, f) in Method::ALL.iter().zip(&figures) {
        out += &format!(
            "{:<9} {:<62} {:>7} {:>8.2} {:>8.2}  {:>6} {:>6} {:>6} {:>6}  {:>15}  {:>9}\n",
            f.name,
            method.how(),
            f.queries,
            f.p50_ms,
            f.p99_ms,
            pct(f.recall),
            pct(f.recall_by_kind[0]),
            pct(f.recall_by_kind[1]),
            pct(f.recall_by_kind[2]),
            format!("{}/{}", f.found, f.expected),
            pct(f.first_page_precision),
        );
    }
    let by = |name: &str| figures.iter().find(|f| f.name == name).expect("every method measured");
    let (embedded, fts, trgm, ilike) = (by("embedded"), by("fts"), by("trgm"), by("ilike"));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let speedup_fts = ratio(fts.p99_ms, embedded.p99_ms);
    let met = speedup_fts >= 5.0 && embedded.recall >= fts.recall;
    out += &format!(
        "target: embedded p99 at least 5x lower than full-text search (measured {speedup_fts:.1}x) with at least its recall ({:.2} vs {:.2}): {}\n",
        embedded.recall,
        fts.recall,
        if met { "met" } else { "missed" }
    );
    let mut keys = format!(
        "docs={} index_docs_per_s={index_rate:.0} query_p50_ms={:.2} query_p99_ms={:.2} sql_p99_ms={:.2} speedup_p99={:.1} fts_p50_ms={:.2} fts_p99_ms={:.2} speedup_vs_fts_p99={speedup_fts:.1} trgm_p99_ms={:.2}",
        docs.len(),
        embedded.p50_ms,
        embedded.p99_ms,
        ilike.p99_ms,
        ratio(ilike.p99_ms, embedded.p99_ms),
        fts.p50_ms,
        fts.p99_ms,
        trgm.p99_ms,
    );
    for f in &figures {
        keys += &format!(" {}_recall={:.3}", f.name, f.recall);
    }
    for f in &figures {
        for (k, kind) in Kind::ALL.iter().enumerate() {
            keys += &format!(" {}_recall_{}={:.3}", f.name, kind.key(), f.recall_by_kind[k]);
        }
    }
    out += &keys;
    out += "\n";
    pool.close().await;
    drop(engine);
    Ok(Report {
        text: out,
        methods: figures,
    })
}

/// Creates the bench's database with a UTF-8 character classification, as a German
/// deployment's database has (with the cluster's `C` ctype, PostgreSQL would neither
/// lower-case `Ä` nor count `ü` as a letter in trigrams); returns the ctype used.
async fn create_database(cluster: &Cluster) -> anyhow::Result<String> {
    let mut conn = PgConnection::connect(&cluster.url("postgres")).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(DATABASE)
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        !exists,
        "database {DATABASE} exists already: the bench wants a fresh one"
    );
    let ctype = "C.UTF-8";
    let create =
        format!("CREATE DATABASE {DATABASE} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE '{ctype}'");
    let ctype = match sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut conn).await {
        Ok(_) => ctype.to_string(),
        Err(e) => {
            tracing::warn!("no {ctype} locale ({e}); the bench database classifies only ASCII letters");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
                .execute(&mut conn)
                .await?;
            "C (no UTF-8 locale found)".to_string()
        }
    };
    conn.close().await?;
    Ok(ctype)
}

/// The first page of `text` with `method`, as a search API would answer.
async fn first_page(engine: &Engine, pool: &PgPool, method: Method, text: &str) -> anyhow::Result<u64> {
    Ok(match method {
        Method::Embedded => engine.search(&alias("DE"), &query(text, 0, PAGE)).await?.total,
        Method::Sql(sql) => postgres::search(pool, sql, text, Some(PAGE)).await?.1 as u64,
    })
}

/// Every match of `text` with `method`, best first.
async fn all_matches(engine: &Engine, pool: &PgPool, method: Method, text: &str) -> anyhow::Result<Vec<Uuid>> {
    let Method::Sql(sql) = method else {
        let mut ids = Vec::new();
        loop {
            let hits = engine.search(&alias("DE"), &query(text, ids.len(), 1000)).await?;
            let before = ids.len();
            ids.extend(hits.hits.iter().map(|h| h.document.id));
            if ids.len() as u64 >= hits.total || ids.len() == before {
                anyhow::ensure!(
                    ids.len() as u64 == hits.total,
                    "the engine counted {} matches of {text:?} but returned {}",
                    hits.total,
                    ids.len()
                );
                return Ok(ids);
            }
        }
    };
    let (ids, total) = postgres::search(pool, sql, text, None).await?;
    anyhow::ensure!(
        ids.len() as i64 == total,
        "{total} matches counted, {} returned",
        ids.len()
    );
    Ok(ids)
}

fn query(text: &str, offset: usize, limit: usize) -> Query {
    Query {
        text: Some(text.to_string()),
        offset,
        limit,
        ..Default::default()
    }
}

/// Inserts `count` practitioners with made-up German profiles (the first ones are the
/// queries' own, so that each query has a match), in batches of one statement each;
/// returns them as documents. (The search crate cannot use the booking domain's import,
/// which depends on it: the rows are written directly, without the import's outbox and
/// audit records, which nothing measured here reads.)
async fn seed(pool: &PgPool, count: usize) -> anyhow::Result<Vec<Document>> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut docs = Vec::with_capacity(count);
    for start in (0..count).step_by(5_000) {
        let mut columns: [Vec<String>; 6] = Default::default();
        for i in start..count.min(start + 5_000) {
            let [given, family, specialty, city] = corpus::profile(i, &mut |n| rng.random_range(0..n));
            let mut languages = vec!["de"];
            if rng.random_bool(0.4) {
                languages.push("en");
            }
            let row = [
                format!("bench-{i}"),
                given.into(),
                family.into(),
                specialty.into(),
                city.into(),
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
