//! `meridian bench search` on a small corpus against a real PostgreSQL: every method's
//! recall is counted from what it returns, so the figures tell the methods apart the way
//! they must (full-text search knows word forms but no typos, trigrams know typos, ILIKE
//! knows neither). Timings are not checked.

use meridian_localpg::TempCluster;
use meridian_search::bench::{Kind, SearchBench, measure};

#[tokio::test]
async fn a_small_bench_counts_each_methods_recall_from_its_answers() {
    let pg = TempCluster::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let options = SearchBench {
        docs: 3_000,
        queries: 36,
        fts_queries: 36,
        sql_queries: 36,
    };
    let report = measure(pg.cluster(), work.path(), &options).await.unwrap();
    let figures = |name: &str| {
        report
            .method(name)
            .unwrap_or_else(|| panic!("{name} in {}", report.text))
    };
    let (embedded, fts, trgm, ilike) = (figures("embedded"), figures("fts"), figures("trgm"), figures("ilike"));
    let text = &report.text;

    // Exact words: everyone finds every expected practitioner.
    for f in [embedded, fts, trgm, ilike] {
        assert_eq!(f.recall_of(Kind::Exact), 1.0, "{} exact\n{text}", f.name);
        assert!(f.expected > 36, "{text}");
        assert_eq!(f.queries, 36, "one timed pass\n{text}");
        assert!(f.p99_ms >= f.p50_ms && f.p50_ms > 0.0, "{text}");
    }
    // Full-text search: German stems find most word forms (not `Münchner` for München), no typos.
    let forms = fts.recall_of(Kind::WordForm);
    assert!(forms > 0.3 && forms < 1.0, "fts word forms {forms}\n{text}");
    assert_eq!(fts.recall_of(Kind::Typo), 0.0, "{text}");
    // Trigrams: typos, and some word forms.
    assert!(trgm.recall_of(Kind::Typo) > 0.8, "{text}");
    assert!(trgm.recall_of(Kind::WordForm) > 0.0, "{text}");
    // ILIKE: only what is spelled as in the profile (a typo that only drops a word's last
    // letter, `Zimmerman`, is still a substring of it).
    assert_eq!(ilike.recall_of(Kind::WordForm), 0.0, "{text}");
    assert!(ilike.recall_of(Kind::Typo) < 0.2, "{text}");
    assert!(ilike.recall < 0.5, "{text}");
    // The embedded engine: stems, folded umlauts and typo allowance.
    assert!(embedded.recall_of(Kind::Typo) > 0.9, "{text}");
    assert!(embedded.recall_of(Kind::WordForm) >= forms, "{text}");

    // The last line is one line of key=value pairs with the comparison's keys.
    let last = text.lines().last().unwrap();
    let keys: Vec<(&str, &str)> = last.split(' ').map(|kv| kv.split_once('=').unwrap()).collect();
    let value = |key: &str| -> f64 {
        keys.iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} in {last}"))
            .1
            .parse()
            .unwrap()
    };
    assert_eq!(value("docs"), 3_000.0);
    assert!(value("fts_p99_ms") > 0.0 && value("speedup_vs_fts_p99") > 0.0);
    assert!((value("fts_recall") - fts.recall).abs() < 1e-3);
    assert!((value("trgm_recall_typos") - trgm.recall_of(Kind::Typo)).abs() < 1e-3);
    for key in ["embedded_recall", "ilike_recall", "query_p99_ms", "sql_p99_ms"] {
        value(key);
    }
    // One row per query with each method's found count.
    assert!(text.contains("Kölner Orthopäden"), "{text}");
}
