//! A patient's opt-in to appointment reminders, where the Country's
//! `regulatory.consent.reminders` asks for one. It is recorded as records keeps every
//! consent: a FHIR `Consent` of the patient (`POST /{cc}/v1/fhir/Consent`), here with a
//! category coding [`REMINDERS_SYSTEM`]`|`[`REMINDERS_CATEGORY`]. The latest active such
//! Consent decides: `provision.type` `permit` within its `provision.period` is an opt-in;
//! `deny`, a period not in force, or no such Consent is none.

use chrono::Utc;
use meridian_records::consent;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The code system of Meridian's consent categories.
pub const REMINDERS_SYSTEM: &str = "https://meridian.dev/fhir/CodeSystem/consent-category";
/// The category of a Consent to appointment reminders.
pub const REMINDERS_CATEGORY: &str = "appointment-reminders";

/// Whether patient `client_id` of `country` has opted in to reminders now.
pub async fn opted_in(conn: &mut PgConnection, country: &str, client_id: Uuid) -> Result<bool, sqlx::Error> {
    let category = format!("{REMINDERS_SYSTEM}|{REMINDERS_CATEGORY}");
    let latest = consent::latest_active(conn, country, client_id, consent::Matching::Category(&category)).await?;
    Ok(latest.as_ref().is_some_and(permits_now))
}

/// A Consent's provision permits, and is in force now.
fn permits_now(consent: &Value) -> bool {
    let provision = &consent["provision"];
    provision["type"].as_str() == Some("permit") && consent::in_force(provision, Utc::now())
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
