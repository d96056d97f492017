//! A patient's opt-in to appointment reminders, where the Country's
//! `regulatory.consent.reminders` asks for one. It is recorded as records keeps every
//! consent: a FHIR `Consent` of the patient (`POST /{cc}/v1/fhir/Consent`), here with a
//! category coding [`REMINDERS_SYSTEM`]`|`[`REMINDERS_CATEGORY`]. The latest active such
//! Consent decides: `provision.type` `permit` within its `provision.period` is an opt-in;
//! `deny`, a period not in force, or no such Consent is none.

use chrono::Utc;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The code system of Meridian's consent categories.
pub const REMINDERS_SYSTEM: &str = "https://meridian.dev/fhir/CodeSystem/consent-category";
/// The category of a Consent to appointment reminders.
pub const REMINDERS_CATEGORY: &str = "appointment-reminders";

/// Whether patient `client_id` of `country` has opted in to reminders now.
pub async fn opted_in(conn: &mut PgConnection, country: &str, client_id: Uuid) -> Result<bool, sqlx::Error> {
    let latest: Option<Value> = sqlx::query_scalar(
        "SELECT content FROM fhir_resources
          WHERE country_code = $1 AND resource_type = 'Consent' AND patient = $2 AND deleted_at IS NULL
            AND status = 'active' AND $3 = ANY(categories)
          ORDER BY date_start DESC NULLS LAST, last_updated DESC
          LIMIT 1",
    )
    .bind(country)
    .bind(client_id)
    .bind(format!("{REMINDERS_SYSTEM}|{REMINDERS_CATEGORY}"))
    .fetch_optional(conn)
    .await?;
    Ok(latest.as_ref().is_some_and(permits_now))
}

/// A Consent's provision permits, and is in force now.
fn permits_now(consent: &Value) -> bool {
    let provision = &consent["provision"];
    if provision["type"].as_str() != Some("permit") {
        return false;
    }
    let now = Utc::now();
    let bound = |pointer: &str| {
        provision
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(meridian_records::dates::range)
    };
    let started = bound("/period/start").is_none_or(|(start, _)| start <= now);
    let not_ended = bound("/period/end").is_none_or(|(_, end)| now < end);
    started && not_ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_permit_in_force_is_an_opt_in() {
        assert!(permits_now(&json!({"provision": {"type": "permit"}})));
        assert!(!permits_now(&json!({"provision": {"type": "deny"}})));
        assert!(!permits_now(&json!({})));
        assert!(permits_now(
            &json!({"provision": {"type": "permit", "period": {"start": "2020-01-01"}}})
        ));
        assert!(!permits_now(
            &json!({"provision": {"type": "permit", "period": {"end": "2020-01-01"}}})
        ));
        assert!(!permits_now(
            &json!({"provision": {"type": "permit", "period": {"start": "2999-01-01"}}})
        ));
    }
}
