//! Reading invoices: a country's, or one patient's, newest first, in pages.

use chrono::{DateTime, Utc};
use meridian_shared::money::format_amount;
use serde::Serialize;
use uuid::Uuid;

/// Whose invoices.
pub enum Whose<'a> {
    Country,
    /// A patient's, by client ID.
    Patient(&'a str),
}

/// An invoice or credit note as the API shows it: amounts as decimals of the currency.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub number: i64,
    pub kind: String,
    pub appointment_id: Uuid,
    pub patient_id: String,
    pub practitioner_id: Uuid,
    pub currency: String,
    pub net: String,
    pub tax_rate: String,
    pub tax: String,
    pub total: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<i64>,
    pub issued_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    number: i64,
    kind: String,
    appointment_id: Uuid,
    patient_id: String,
    practitioner_id: Uuid,
    currency: String,
    minor_digits: i16,
    net: i64,
    tax_rate: String,
    tax: i64,
    total: i64,
    credits: Option<i64>,
    issued_at: DateTime<Utc>,
}

/// Up to `limit` invoices of `country` numbered below `before` (all when `None`), newest
/// first.
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    country: &str,
    whose: Whose<'_>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Invoice>, sqlx::Error> {
    let patient = match whose {
        Whose::Country => None,
        Whose::Patient(client_id) => Some(client_id),
    };
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT number, kind, appointment_id, patient_id, practitioner_id, currency, minor_digits,
                net, tax_rate::text, tax, total, credits, issued_at
           FROM invoices
          WHERE country_code = $1 AND ($2::text IS NULL OR patient_id = $2)
            AND ($3::bigint IS NULL OR number < $3)
          ORDER BY number DESC
          LIMIT $4",
    )
    .bind(country)
    .bind(patient)
    .bind(before)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let digits = r.minor_digits as u32;
            Invoice {
                number: r.number,
                kind: r.kind,
                appointment_id: r.appointment_id,
                patient_id: r.patient_id,
                practitioner_id: r.practitioner_id,
                currency: r.currency,
                net: format_amount(r.net, digits),
                // As numeric(7,6) prints it, without the trailing zeros.
                tax_rate: trim_rate(&r.tax_rate),
                tax: format_amount(r.tax, digits),
                total: format_amount(r.total, digits),
                credits: r.credits,
                issued_at: r.issued_at,
            }
        })
        .collect())
}

fn trim_rate(rate: &str) -> String {
    if rate.contains('.') {
        rate.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        rate.to_string()
    }
}
