//! Reading the counts: a country's minutes in a time range, and how far they are final.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::window;

/// The longest range one request reads (a week of minutes, per specialty).
pub const MAX_RANGE: TimeDelta = TimeDelta::days(7);

/// One minute's counts of one specialty.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub specialty: String,
    pub booked: i32,
    pub cancelled: i32,
    pub reassigned: i32,
}

/// A country's counts between two instants.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The minutes before this no event can change any more (none counted yet: `None`).
    pub final_before: Option<DateTime<Utc>>,
    /// Minutes with at least one count, oldest first, then by specialty.
    pub minutes: Vec<Minute>,
}

/// The counts of `country` in the minutes starting in `[from, to)`.
pub async fn report(
    pool: &sqlx::PgPool,
    country: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    let minutes = sqlx::query_as(
        "SELECT minute, specialty, booked, cancelled, reassigned FROM appointment_minutes
          WHERE country_code = $1 AND minute >= $2 AND minute < $3
          ORDER BY minute, specialty",
    )
    .bind(country)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let watermark: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT watermark FROM analytics_watermarks WHERE country_code = $1")
            .bind(country)
            .fetch_optional(pool)
            .await?;
    Ok(Report {
        final_before: watermark.map(window::final_before),
        minutes,
    })
}
