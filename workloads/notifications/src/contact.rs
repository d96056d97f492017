//! Where a patient is reached: their e-mail address and mobile number, read from the PII
//! vault when a notice is sent (never stored elsewhere), through the records service's own
//! vault code ([`meridian_records::store::read`]): the sealed Patient is opened with the
//! country's keyring, and the read leaves an audit record (`patient.read` by
//! `notifications`, with the correlation ID of the event that caused the notice).

use meridian_records::fhir::ResourceType;
use meridian_records::store::{self, Scope, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::rules::CountryRules;

/// Who reads the vault, in the audit trail.
pub const ACTOR: &str = "notifications";

/// A patient's usable contact points (from `Patient.telecom`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// The first e-mail address (by `rank`) not marked `old`.
    pub email: Option<String>,
    /// The first number that takes SMS: system `sms`, or `phone` with use `mobile`.
    pub mobile: Option<String>,
}

impl std::fmt::Debug for Contact {
    // Never print a contact.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("email", &self.email.as_ref().map(|_| "…"))
            .field("mobile", &self.mobile.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Why a contact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    /// The patient is not there, or was deleted: trying again will not help.
    #[error("{0}")]
    Gone(String),
    /// The vault, its keys or the audit trail: may work later.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads the contact of patient `client_id` under `rules`, from the vault (`vault` connects
/// as the vault role) and audits the read through `reads`.
pub async fn read(
    vault: &sqlx::PgPool,
    reads: &meridian_shared::audit::ReadLog,
    rules: &CountryRules,
    client_id: Uuid,
    correlation_id: Uuid,
) -> Result<Contact, ContactError> {
    let ring = rules
        .keys
        .as_ref()
        .map_err(|e| ContactError::Unavailable(format!("vault keys: {e}")))?;
    let scope = Scope {
        rules: &rules.records,
        ring,
        actor: ACTOR,
        correlation_id,
        reads,
    };
    let mut conn = vault
        .acquire()
        .await
        .map_err(|e| ContactError::Unavailable(format!("vault: {e}")))?;
    match store::read(&mut conn, &scope, ResourceType::Patient, client_id).await {
        Ok(stored) => Ok(stored.body.as_ref().map(of_patient).unwrap_or_default()),
        Err(StoreError::Refused(issue)) if issue.status.is_client_error() => Err(ContactError::Gone(issue.diagnostics)),
        Err(StoreError::Refused(issue)) => Err(ContactError::Unavailable(issue.diagnostics)),
        Err(StoreError::Database(e)) => Err(ContactError::Unavailable(format!("vault: {e}"))),
    }
}

/// The contact points of a FHIR Patient.
pub fn of_patient(patient: &Value) -> Contact {
    let mut telecom: Vec<&Value> = patient["telecom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["use"].as_str() != Some("old"))
        .filter(|t| t["value"].as_str().is_some_and(|v| !v.trim().is_empty()))
        .collect();
    // Rank 1 first; unranked last, in their order.
    telecom.sort_by_key(|t| t["rank"].as_u64().unwrap_or(u64::MAX));
    let first = |wanted: &dyn Fn(&Value) -> bool| {
        telecom
            .iter()
            .find(|t| wanted(t))
            .and_then(|t| t["value"].as_str())
            .map(|v| v.trim().to_string())
    };
    Contact {
        email: first(&|t| t["system"] == "email"),
        mobile: first(&|t| t["system"] == "sms").or_else(|| first(&|t| t["system"] == "phone" && t["use"] == "mobile")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_best_ranked_current_address_and_a_number_that_takes_sms() {
        let patient = json!({"telecom": [
            {"system": "email", "value": "old@example.org", "use": "old"},
            {"system": "email", "value": "second@example.org", "rank": 2},
            {"system": "email", "value": "first@example.org", "rank": 1},
            {"system": "phone", "value": "+49 30 1234567", "use": "home"},
            {"system": "phone", "value": "+49 151 2345678", "use": "mobile"},
        ]});
        let contact = of_patient(&patient);
        assert_eq!(contact.email.as_deref(), Some("first@example.org"));
        assert_eq!(contact.mobile.as_deref(), Some("+49 151 2345678"));
        assert_eq!(of_patient(&json!({"name": [{"family": "X"}]})), Contact::default());
        let shown = format!("{contact:?}");
        assert!(!shown.contains("example.org") && !shown.contains("151"), "{shown}");
    }
}
