//! The billing consumer against a real PostgreSQL: invoices and credit notes at the
//! country's terms, each once however often its event arrives, numbered per country without
//! gaps while several consumers write at once.

use chrono::Utc;
use meridian_billing::invoices::{self, Whose};
use meridian_billing::{BillingHandler, CountryRates, Rates};
use meridian_events::consumer::{self, Incoming, Outcome};
use meridian_localpg::TempCluster;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

async fn database() -> (TempCluster, PgPool) {
    let pg = TempCluster::start().await.expect("start PostgreSQL");
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    meridian_shared::schema::prepare(&mut conn, &["DE", "JP", "FR"])
        .await
        .unwrap();
    let pool = PgPool::connect(&pg.url()).await.unwrap();
    (pg, pool)
}

fn handler() -> BillingHandler {
    let rates = Rates::default();
    let terms = |currency: &str, fee: &str, rate: &str| {
        let yaml = format!(
            "{{code: XX, displayName: X, timezone: UTC, locale: en, languages: [en], currency: {currency},
              region: r, residency: shared, regulatory: {{retentionYears: 10, minimumAge: 16, consent: {{}}}},
              billing: {{appointmentFee: \"{fee}\", taxRate: \"{rate}\"}}}}"
        );
        let spec: meridian_crds::CountrySpec = serde_yaml_ng::from_str(&yaml).unwrap();
        CountryRates::of(&spec).unwrap().unwrap()
    };
    // France has no billing terms.
    rates.set([
        ("DE".to_string(), terms("EUR", "60.00", "0.19")),
        ("JP".to_string(), terms("JPY", "8000", "0.1")),
    ]);
    BillingHandler { rates }
}

fn event(kind: &str, country: &str, appointment: Uuid, patient: &str) -> Incoming {
    Incoming {
        topic: "appointment-events".into(),
        event_id: Uuid::new_v4(),
        event_type: format!("appointment.{kind}"),
        country_code: country.into(),
        key: None,
        correlation_id: Some(Uuid::new_v4()),
        occurred_at: Utc::now(),
        payload: json!({
            "id": appointment, "countryCode": country, "practitionerId": Uuid::nil(),
            "patientId": patient, "status": kind,
        }),
        replayed: false,
    }
}

#[tokio::test]
async fn an_invoice_per_booking_a_credit_note_per_cancellation_each_once() {
    let (_pg, pool) = database().await;
    let billing = handler();
    let appointment = Uuid::new_v4();
    let booked = event("booked", "DE", appointment, "client-1");
    assert_eq!(consumer::apply(&pool, &billing, &booked).await, Outcome::Applied);
    // Delivered again: the inbox has it.
    assert_eq!(consumer::apply(&pool, &billing, &booked).await, Outcome::Duplicate);
    // Moved: nothing to bill.
    let moved = event("rescheduled", "DE", appointment, "client-1");
    assert_eq!(consumer::apply(&pool, &billing, &moved).await, Outcome::Applied);
    let cancelled = event("cancelled", "DE", appointment, "client-1");
    assert_eq!(consumer::apply(&pool, &billing, &cancelled).await, Outcome::Applied);
    // A second cancellation event of the same appointment (a different event): credited once.
    let again = event("cancelled", "DE", appointment, "client-1");
    assert_eq!(consumer::apply(&pool, &billing, &again).await, Outcome::Applied);

    let all = invoices::list(&pool, "DE", Whose::Country, None, 50).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let (credit, invoice) = (&all[0], &all[1]);
    assert_eq!(
        (invoice.number, invoice.kind.as_str(), invoice.currency.as_str()),
        (1, "invoice", "EUR")
    );
    assert_eq!(
        (
            invoice.net.as_str(),
            invoice.tax_rate.as_str(),
            invoice.tax.as_str(),
            invoice.total.as_str()
        ),
        ("60.00", "0.19", "11.40", "71.40")
    );
    assert_eq!(
        (credit.number, credit.kind.as_str(), credit.credits),
        (2, "credit_note", Some(1))
    );
    assert_eq!((credit.net.as_str(), credit.total.as_str()), ("-60.00", "-71.40"));

    // Japan numbers its own, in yen; France has no terms and issues nothing.
    let jp = event("booked", "JP", Uuid::new_v4(), "client-2");
    assert_eq!(consumer::apply(&pool, &billing, &jp).await, Outcome::Applied);
    let yen = invoices::list(&pool, "JP", Whose::Country, None, 50).await.unwrap();
    assert_eq!(
        (
            yen[0].number,
            yen[0].net.as_str(),
            yen[0].tax.as_str(),
            yen[0].total.as_str()
        ),
        (1, "8000", "800", "8800")
    );
    let fr = event("booked", "FR", Uuid::new_v4(), "client-3");
    assert_eq!(consumer::apply(&pool, &billing, &fr).await, Outcome::Applied);
    assert!(
        invoices::list(&pool, "FR", Whose::Country, None, 50)
            .await
            .unwrap()
            .is_empty()
    );

    // A patient's own, and pages below a number.
    let other = event("booked", "DE", Uuid::new_v4(), "client-9");
    consumer::apply(&pool, &billing, &other).await;
    let mine = invoices::list(&pool, "DE", Whose::Patient("client-1"), None, 50)
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|i| i.number).collect::<Vec<_>>(), [2, 1]);
    let page = invoices::list(&pool, "DE", Whose::Country, Some(3), 1).await.unwrap();
    assert_eq!(page.iter().map(|i| i.number).collect::<Vec<_>>(), [2]);
}

#[tokio::test]
async fn numbers_have_no_gaps_while_four_consumers_write_at_once() {
    let (_pg, pool) = database().await;
    let billing = handler();
    let events: Vec<Incoming> = (0..200)
        .map(|i| event("booked", "DE", Uuid::new_v4(), &format!("client-{i}")))
        .collect();
    // Four replicas, each given every event (at least once delivery at its worst).
    let replicas = (0..4).map(|r| {
        let (pool, billing) = (pool.clone(), billing.clone());
        let mut mine = events.clone();
        mine.rotate_left(r * 50);
        tokio::spawn(async move {
            for e in &mine {
                consumer::apply(&pool, &billing, e).await;
            }
        })
    });
    futures::future::join_all(replicas).await;
    let numbers: Vec<i64> = sqlx::query_scalar("SELECT number FROM invoices WHERE country_code = 'DE' ORDER BY number")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
    let appointments: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT appointment_id) FROM invoices WHERE country_code = 'DE'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(appointments, 200);
}
