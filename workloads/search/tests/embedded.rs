//! The embedded engine, for real: German analysis, typos, synonyms, filters, idempotent
//! versioned writes, aliases that survive a restart.

use meridian_search::embedded::Engine;
use meridian_search::{Document, IndexSettings, Language, Query, SearchError, alias, versioned};
use uuid::Uuid;

fn german() -> IndexSettings {
    IndexSettings {
        language: Language::German,
        synonyms: vec!["Hausarzt, Allgemeinarzt => Allgemeinmedizin".into()],
    }
}

fn doc(given: &str, family: &str, specialty: &str, city: &str, languages: &[&str]) -> Document {
    Document {
        id: Uuid::new_v4(),
        country_code: "DE".into(),
        given_name: given.into(),
        family_name: family.into(),
        specialty: specialty.into(),
        city: city.into(),
        languages: languages.iter().map(|l| l.to_string()).collect(),
        active: true,
        version: 1,
    }
}

fn text(t: &str) -> Query {
    Query {
        text: Some(t.into()),
        limit: 10,
        ..Default::default()
    }
}

async fn names(engine: &Engine, query: &Query) -> Vec<String> {
    let hits = engine.search(&alias("DE"), query).await.unwrap();
    hits.hits.iter().map(|h| h.document.family_name.clone()).collect()
}

async fn german_index(dir: &std::path::Path) -> (Engine, Vec<Document>) {
    let engine = Engine::open(dir).unwrap();
    let index = versioned("DE", 1);
    engine.create_index(&index, &german()).await.unwrap();
    engine.point_alias(&alias("DE"), &index).await.unwrap();
    let mut inactive = doc("Marie", "Krüger", "Dermatologie", "München", &["de"]);
    inactive.active = false;
    let docs = vec![
        doc("Anna", "Schmidt", "Kardiologie", "Berlin", &["de"]),
        doc("Jonas", "Weber", "Allgemeinmedizin", "Hamburg", &["de", "en"]),
        doc("Lena", "Fischer", "Kinderheilkunde", "Berlin", &["de", "tr"]),
        inactive,
    ];
    engine.upsert(&alias("DE"), &docs).await.unwrap();
    (engine, docs)
}

#[tokio::test]
async fn german_words_typos_and_synonyms_find_the_right_practitioners() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = german_index(dir.path()).await;
    // Language-aware: the feminine form finds the specialty.
    assert_eq!(names(&engine, &text("Kardiologin")).await, ["Schmidt"]);
    // Typos.
    assert_eq!(names(&engine, &text("Kardiolgie")).await, ["Schmidt"]);
    assert_eq!(names(&engine, &text("Schmitt Berlin")).await, ["Schmidt"]);
    // Synonyms from the Country spec.
    assert_eq!(names(&engine, &text("Hausarzt")).await, ["Weber"]);
    // Every word must match.
    assert!(names(&engine, &text("Kardiologie Hamburg")).await.is_empty());
    // Stop words do not get in the way.
    assert_eq!(
        names(&engine, &text("Ärztin für Kinderheilkunde")).await.len(),
        0,
        "Ärztin is not in any profile"
    );
    assert_eq!(names(&engine, &text("Kinderheilkunde in Berlin")).await, ["Fischer"]);
    // Deactivated practitioners are never found.
    assert!(names(&engine, &text("Dermatologie")).await.is_empty());
}

#[tokio::test]
async fn filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = german_index(dir.path()).await;
    let berlin = Query {
        city: Some("BERLIN".into()),
        limit: 1,
        ..Default::default()
    };
    let first = engine.search(&alias("DE"), &berlin).await.unwrap();
    assert_eq!((first.total, first.hits.len()), (2, 1));
    let second = engine
        .search(
            &alias("DE"),
            &Query {
                offset: 1,
                ..berlin.clone()
            },
        )
        .await
        .unwrap();
    assert_ne!(first.hits[0].document.id, second.hits[0].document.id);
    let q = |specialty: Option<&str>, language: Option<&str>| Query {
        specialty: specialty.map(String::from),
        language: language.map(String::from),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(names(&engine, &q(Some("kardiologie"), None)).await, ["Schmidt"]);
    assert_eq!(names(&engine, &q(None, Some("en"))).await, ["Weber"]);
    assert!(
        names(&engine, &q(Some("Kardio"), None)).await.is_empty(),
        "the specialty filter is exact"
    );
}

#[tokio::test]
async fn writes_are_idempotent_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, docs) = german_index(dir.path()).await;
    let mut moved = docs[0].clone();
    moved.city = "Potsdam".into();
    moved.version = 2;
    engine.upsert(&alias("DE"), std::slice::from_ref(&moved)).await.unwrap();
    // A replayed older event, and the same event twice, change nothing.
    engine.upsert(&alias("DE"), &docs[..1]).await.unwrap();
    engine
        .upsert(&alias("DE"), &[moved.clone(), moved.clone()])
        .await
        .unwrap();
    let hits = engine.search(&alias("DE"), &text("Schmidt")).await.unwrap();
    assert_eq!(hits.total, 1);
    assert_eq!(hits.hits[0].document, moved);
}

#[tokio::test]
async fn aliases_and_versions_survive_a_restart_and_a_missing_alias_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, _) = german_index(dir.path()).await;
        engine.create_index(&versioned("DE", 2), &german()).await.unwrap();
        engine.create_index(&versioned("FR", 1), &german()).await.unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    let resolved = engine.resolve(&alias("DE")).await.unwrap().unwrap();
    assert_eq!(resolved.index, "practitioners_de_v1");
    assert_eq!(resolved.fingerprint, german().fingerprint());
    assert_eq!(
        engine.versions(&alias("DE")).await.unwrap(),
        ["practitioners_de_v1", "practitioners_de_v2"]
    );
    assert_eq!(names(&engine, &text("Kardiologie")).await, ["Schmidt"]);
    // Writing through an alias that does not exist never creates an index.
    let err = engine.upsert(&alias("FR"), &[]).await.unwrap_err();
    assert!(matches!(err, SearchError::NoSuchIndex(_)), "{err}");
    engine.delete_index("practitioners_de_v1").await.unwrap();
    engine.delete_index("practitioners_de_v1").await.unwrap();
    assert_eq!(engine.resolve(&alias("DE")).await.unwrap(), None);
}
