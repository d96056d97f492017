//! Practitioners against a real PostgreSQL cluster.

use meridian_booking::practitioners::{self, Actor, PractitionerError, Profile};
use meridian_localpg::TempCluster;
use meridian_shared::schema::prepare;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

async fn database() -> (TempCluster, PgPool) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    prepare(&mut conn, &["DE", "FR"]).await.unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    (pg, pool)
}

fn actor() -> Actor<'static> {
    Actor {
        subject: "clinic-admin-1",
        correlation_id: Uuid::new_v4(),
    }
}

fn profile(external: &str, family: &str) -> Profile {
    Profile {
        external_id: Some(external.into()),
        given_name: "Anna".into(),
        family_name: family.into(),
        specialty: "Kardiologie".into(),
        city: "Berlin".into(),
        languages: vec!["de".into(), "en".into()],
    }
}

async fn events(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn create_update_deactivate_each_write_an_event_and_an_audit_record() {
    let (_pg, pool) = database().await;
    let created = practitioners::create(&pool, "DE", &profile("lanr-1", "Schmidt"), actor())
        .await
        .unwrap();
    assert_eq!((created.version, created.active), (1, true));
    assert_eq!(practitioners::get(&pool, "DE", created.id).await.unwrap(), created);
    assert!(
        matches!(
            practitioners::get(&pool, "FR", created.id).await,
            Err(PractitionerError::NotFound(_))
        ),
        "never across countries"
    );

    let renamed = practitioners::update(
        &pool,
        "DE",
        created.id,
        &profile("lanr-1", "Schmidt-Weber"),
        Some(1),
        actor(),
    )
    .await
    .unwrap();
    assert_eq!((renamed.version, renamed.family_name.as_str()), (2, "Schmidt-Weber"));
    let stale = practitioners::update(&pool, "DE", created.id, &profile("lanr-1", "X"), Some(1), actor())
        .await
        .unwrap_err();
    assert!(
        matches!(stale, PractitionerError::VersionMismatch { current: 2, .. }),
        "{stale}"
    );

    let off = practitioners::deactivate(&pool, "DE", created.id, actor())
        .await
        .unwrap();
    assert!(!off.active);
    assert_eq!(
        practitioners::deactivate(&pool, "DE", created.id, actor())
            .await
            .unwrap(),
        off,
        "repeat is a no-op"
    );

    for (event, n) in [
        ("practitioner.created", 1),
        ("practitioner.updated", 1),
        ("practitioner.deactivated", 1),
    ] {
        assert_eq!(events(&pool, event).await, n, "{event}");
    }
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(meridian_shared::audit::verify(&mut conn, "DE").await.unwrap(), Ok(3));
}

#[tokio::test]
async fn bad_profiles_name_every_field_and_write_nothing() {
    let (_pg, pool) = database().await;
    let bad = Profile {
        given_name: " ".into(),
        city: String::new(),
        languages: vec!["German".into()],
        ..profile("x", "Y")
    };
    let Err(PractitionerError::Invalid(errors)) = practitioners::create(&pool, "DE", &bad, actor()).await else {
        panic!("accepted an invalid profile")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
    assert_eq!(fields, ["givenName", "city", "languages"]);
    assert_eq!(events(&pool, "practitioner.created").await, 0);

    practitioners::create(&pool, "DE", &profile("dup", "A"), actor())
        .await
        .unwrap();
    let dup = practitioners::create(&pool, "DE", &profile("dup", "B"), actor())
        .await
        .unwrap_err();
    assert!(
        matches!(dup, PractitionerError::DuplicateExternalId(ref id) if id == "dup"),
        "{dup}"
    );
}

#[tokio::test]
async fn pages_follow_the_cursor_and_stay_in_their_country() {
    let (_pg, pool) = database().await;
    for i in 0..7 {
        practitioners::create(&pool, "DE", &profile(&format!("de-{i}"), "D"), actor())
            .await
            .unwrap();
    }
    practitioners::create(&pool, "FR", &profile("fr-0", "F"), actor())
        .await
        .unwrap();
    let first = practitioners::list(&pool, "DE", None, 5).await.unwrap();
    let second = practitioners::list(&pool, "DE", first.last().map(|p| p.id), 5)
        .await
        .unwrap();
    assert_eq!((first.len(), second.len()), (5, 2));
    assert!(first.iter().chain(&second).all(|p| p.country_code == "DE"));
    assert!(first.last().unwrap().id < second[0].id);
}

#[tokio::test]
async fn a_bulk_import_is_idempotent_by_external_id_and_reports_bad_rows() {
    let (_pg, pool) = database().await;
    let mut rows: Vec<Profile> = (0..3000)
        .map(|i| profile(&format!("lanr-{i}"), &format!("Name{i}")))
        .collect();
    rows[10].specialty.clear();
    rows[20].external_id = Some("lanr-0".into());
    let report = practitioners::import(&pool, "DE", &rows, actor()).await.unwrap();
    assert_eq!((report.created, report.updated, report.unchanged), (2998, 0, 0));
    assert_eq!(report.errors.len(), 2);
    assert_eq!((report.errors[0].row, report.errors[0].field), (10, "specialty"));
    assert_eq!((report.errors[1].row, report.errors[1].field), (20, "externalId"));
    assert_eq!(events(&pool, "practitioner.created").await, 2998);

    // The same file again changes nothing; one changed row is one update.
    rows[10].specialty = "Kardiologie".into();
    rows[20].external_id = Some("lanr-20".into());
    rows[5].city = "Hamburg".into();
    let again = practitioners::import(&pool, "DE", &rows, actor()).await.unwrap();
    assert_eq!(
        (again.created, again.updated, again.unchanged, again.errors.len()),
        (2, 1, 2997, 0)
    );
    let hamburg: (String, i64) = sqlx::query_as("SELECT city, version FROM practitioners WHERE external_id = 'lanr-5'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(hamburg, ("Hamburg".into(), 2));
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        meridian_shared::audit::verify(&mut conn, "DE").await.unwrap(),
        Ok(2),
        "one record per import"
    );
}
