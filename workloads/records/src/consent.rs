//! Reading patients' FHIR `Consent`s: the one that decides (the latest active one of a
//! scope or category) and whether its provision is in force now. Disclosures abroad read
//! the `patient-privacy` scope; the notifications consumer reads the reminders category.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// Which Consents count.
#[derive(Clone, Copy, Debug)]
pub enum Matching<'a> {
    /// Of this scope (`code` or `system|code`).
    Scope(&'a str),
    /// With this category (`code` or `system|code`).
    Category(&'a str),
}

/// The latest active Consent of patient `patient` in `country` that `matching` names (by
/// `dateTime`, then last update), as stored.
pub async fn latest_active(
    conn: &mut PgConnection,
    country: &str,
    patient: Uuid,
    matching: Matching<'_>,
) -> Result<Option<Value>, sqlx::Error> {
    let (column, token) = match matching {
        Matching::Scope(token) => ("codes", token),
        Matching::Category(token) => ("categories", token),
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT content FROM fhir_resources
          WHERE country_code = $1 AND resource_type = 'Consent' AND patient = $2 AND deleted_at IS NULL
            AND status = 'active' AND $3 = ANY({column})
          ORDER BY date_start DESC NULLS LAST, last_updated DESC
          LIMIT 1"
    )))
    .bind(country)
    .bind(patient)
    .bind(token)
    .fetch_optional(conn)
    .await
}

/// Whether `provision`'s period holds `now` (none: always). Bounds are FHIR dates, checked
/// when the Consent was written; one that is not is no bound.
pub fn in_force(provision: &Value, now: DateTime<Utc>) -> bool {
    let bound = |pointer: &str| {
        provision
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(crate::dates::range)
    };
    let before = bound("/period/start").is_some_and(|(start, _)| now < start);
    let after = bound("/period/end").is_some_and(|(_, end)| now >= end);
    !(before || after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_provision_is_in_force_within_its_period() {
        let now = "2026-06-01T12:00:00Z".parse().unwrap();
        assert!(in_force(&json!({"type": "permit"}), now));
        assert!(in_force(
            &json!({"period": {"start": "2026-01-01", "end": "2027"}}),
            now
        ));
        assert!(!in_force(&json!({"period": {"start": "2026-06-02"}}), now));
        assert!(!in_force(&json!({"period": {"end": "2026-05-31"}}), now));
        assert!(in_force(&json!({"period": {"start": "soon"}}), now));
    }
}
