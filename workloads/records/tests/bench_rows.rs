//! `meridian bench records` compares the service with bare SQL that writes the same rows the
//! same way: for each operation of its mix (create, read, update, search of an Observation),
//! the bare SQL with `Trail::Same` adds the rows the service adds to every table, its audit
//! records on the same kind of chain (a write's with the write, on the write chains; a
//! read's through the batched read log, on the reads chains), a write's event and audit
//! record under one correlation ID, the chains intact; with `Trail::None` only the
//! resource's own rows.

mod support;

use meridian_records::bench::bare::{self, Trail};
use serde_json::json;
use support::{Harness, resources};
use uuid::Uuid;

/// Rows of one country's: in each table, audit records by the kind of chain they are on,
/// and the events whose correlation ID no audit record shares.
async fn rows(h: &Harness, country: &str) -> Vec<(&'static str, i64)> {
    let reads = meridian_shared::audit::READS_CHAIN;
    let mut counts = Vec::new();
    for (name, sql) in [
        (
            "fhir_resources",
            "SELECT count(*) FROM fhir_resources WHERE country_code = $1".to_string(),
        ),
        (
            "fhir_history",
            "SELECT count(*) FROM fhir_history WHERE country_code = $1".into(),
        ),
        ("outbox", "SELECT count(*) FROM outbox WHERE country_code = $1".into()),
        (
            "audit on write chains",
            format!("SELECT count(*) FROM audit WHERE country_code = $1 AND chain < {reads}"),
        ),
        (
            "audit on reads chains",
            format!("SELECT count(*) FROM audit WHERE country_code = $1 AND chain >= {reads}"),
        ),
        (
            "events without their audit record",
            format!(
                "SELECT count(*) FROM outbox o WHERE country_code = $1 AND NOT EXISTS
                    (SELECT 1 FROM audit a WHERE a.country_code = o.country_code
                        AND a.correlation_id = o.correlation_id AND a.chain < {reads})"
            ),
        ),
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(country)
            .fetch_one(&h.admin)
            .await
            .unwrap();
        counts.push((name, n));
    }
    counts
}

/// What each table gained between two counts.
fn gained(before: &[(&'static str, i64)], after: &[(&'static str, i64)]) -> Vec<(&'static str, i64)> {
    before.iter().zip(after).map(|((t, b), (_, a))| (*t, a - b)).collect()
}

#[tokio::test]
async fn bare_sql_writes_the_rows_the_service_writes_for_each_operation() {
    let h = Harness::start(&["de"]).await;
    meridian_shared::schema::prepare(&mut h.admin.acquire().await.unwrap(), &["AT"])
        .await
        .unwrap();
    let token = h.clinician("DE");

    // The service, in DE: a patient, then each operation of the mix, counting what it adds.
    let patient = h
        .post(
            "/de/v1/fhir/Patient",
            &token,
            &resources::patient("A123456780", "Muster"),
        )
        .await
        .id();
    let observation = |value| resources::observation(&patient, "8867-4", value, "/min", "2026-11-02T09:10:00+01:00");
    let mut service = Vec::new();
    let before = rows(&h, "DE").await;
    let created = h.post("/de/v1/fhir/Observation", &token, &observation(70.0)).await;
    assert_eq!(created.status, 201);
    let id = created.id();
    let after = rows(&h, "DE").await;
    service.push(("create", gained(&before, &after)));

    let before = after;
    assert_eq!(
        h.get(&format!("/de/v1/fhir/Observation/{id}"), &token).await.status,
        200
    );
    let after = rows(&h, "DE").await;
    service.push(("read", gained(&before, &after)));

    let before = after;
    let mut changed = observation(72.0);
    changed["id"] = json!(id);
    let updated = h
        .put(&format!("/de/v1/fhir/Observation/{id}"), &token, "W/\"1\"", &changed)
        .await;
    assert_eq!(updated.status, 200, "{:#}", updated.body);
    let after = rows(&h, "DE").await;
    service.push(("update", gained(&before, &after)));

    let before = after;
    let search = format!("/de/v1/fhir/Observation?patient={patient}&code=http://loinc.org%7C8867-4&_count=10");
    let found = h.get(&search, &token).await;
    assert_eq!(found.entries().len(), 1, "{:#}", found.body);
    let after = rows(&h, "DE").await;
    service.push(("search", gained(&before, &after)));

    // Bare SQL, in AT, as the service's database role, once with the trail and once without.
    let mut conn = h.clinical.acquire().await.unwrap();
    let body = observation(70.0);
    let reads = meridian_shared::audit::ReadLog::start(&h.clinical.connect_options());
    for trail in [Trail::Same(reads), Trail::None] {
        let (id, patient) = (Uuid::new_v4(), Uuid::new_v4());
        let mut bare = Vec::new();
        let before = rows(&h, "AT").await;
        bare::create(&mut conn, &trail, id, patient, &body).await.unwrap();
        let after = rows(&h, "AT").await;
        bare.push(("create", gained(&before, &after)));

        let before = after;
        assert_eq!(bare::read(&mut conn, &trail, id).await.unwrap(), Some(body.clone()));
        let after = rows(&h, "AT").await;
        bare.push(("read", gained(&before, &after)));

        let before = after;
        assert_eq!(
            bare::update(&mut conn, &trail, id, patient, 1, &body).await.unwrap(),
            Some(2)
        );
        // A stale version writes nothing, as a stale If-Match.
        assert_eq!(
            bare::update(&mut conn, &trail, id, patient, 1, &body).await.unwrap(),
            None
        );
        let after = rows(&h, "AT").await;
        bare.push(("update", gained(&before, &after)));
        let before = after;
        assert_eq!(bare::version(&mut conn, &trail, id).await.unwrap(), Some(2));
        let after = rows(&h, "AT").await;
        let audited = i64::from(matches!(trail, Trail::Same(_)));
        let reread = gained(&before, &after);
        assert_eq!(
            reread.iter().map(|(_, n)| n).sum::<i64>(),
            audited,
            "the re-read of a version is audited as a read, and writes nothing else: {reread:?}"
        );
        assert!(
            reread.contains(&("audit on reads chains", audited)),
            "on a reads chain: {reread:?}"
        );

        let before = after;
        assert_eq!(bare::search(&mut conn, &trail, patient).await.unwrap().len(), 1);
        let after = rows(&h, "AT").await;
        bare.push(("search", gained(&before, &after)));

        match trail {
            Trail::Same(_) => assert_eq!(bare, service, "bare SQL with its trail adds what the service adds"),
            Trail::None => {
                let resource_rows_only: Vec<_> = service
                    .iter()
                    .map(|(op, gains)| {
                        let gains = gains
                            .iter()
                            .map(|(t, n)| (*t, if t.starts_with("fhir_") { *n } else { 0 }))
                            .collect::<Vec<_>>();
                        (*op, gains)
                    })
                    .collect();
                assert_eq!(bare, resource_rows_only, "without its trail, only the resource's rows");
            }
        }
    }
    for country in ["DE", "AT"] {
        let checked = meridian_shared::audit::verify(&mut h.admin.acquire().await.unwrap(), country)
            .await
            .unwrap()
            .unwrap_or_else(|broken| panic!("{country}: {broken}"));
        assert!(checked > 0, "{country} has audit records");
    }
}
