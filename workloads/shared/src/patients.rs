//! The registry of pseudonymous client IDs (table `patients`, migration 7).
//!
//! A token's subject is the identity provider's opaque user ID: it says who signed in, and it
//! is the same string in every system that trusts that provider. Rows about a patient's care
//! (appointments, clinical resources, their events) must not carry it: they refer to the
//! patient by a random client ID of the country instead, which means nothing outside the
//! platform and is also the Patient's FHIR id in the records service. The registry is the one
//! place that ties the two together, one row per patient and country, with no identifying
//! element of the person.

use sqlx::PgConnection;
use uuid::Uuid;

/// Looks the subject up, or registers it under a fresh random client ID in one statement:
/// the hot path (a known subject) reads one row and writes nothing. When many requests of a
/// new subject arrive at once, every one of them answers the same client ID and one row is
/// written: the insert of a concurrent loser meets the winner's row (`ON CONFLICT`, after the
/// winner commits) and returns its client ID through the no-op update, which unlike `DO
/// NOTHING` returns a row that the statement's snapshot does not see.
const CLIENT_ID_FOR_SUBJECT: &str = "WITH known AS (
         SELECT client_id FROM patients WHERE country_code = $1 AND subject = $2
     ),
     registered AS (
         INSERT INTO patients (country_code, client_id, subject)
         SELECT $1, $3, $2 WHERE NOT EXISTS (SELECT 1 FROM known)
         ON CONFLICT (country_code, subject) DO UPDATE SET subject = EXCLUDED.subject
         RETURNING client_id
     )
     SELECT client_id FROM known UNION ALL SELECT client_id FROM registered";

/// The client ID of the patient whose token subject is `subject` in country `country`,
/// registering the subject under a fresh random (v4) client ID the first time it is seen.
/// Race-free: concurrent calls for the same new subject all return one client ID.
///
/// The subject stays in the registry only: whatever the caller writes about the patient
/// (an appointment, a clinical resource, an event, an audit record's resource) names the
/// client ID. A patient whose Patient resource was deleted keeps their client ID (their
/// account still signs in as the same person); see [`is_registered`] for naming patients
/// on someone else's behalf.
pub async fn client_id_for_subject(conn: &mut PgConnection, country: &str, subject: &str) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(CLIENT_ID_FOR_SUBJECT)
        .bind(country)
        .bind(subject)
        .bind(Uuid::new_v4())
        .fetch_one(conn)
        .await
}

/// Whether `client_id` names a patient of country `country` who is not deleted: what staff
/// acting on a patient's behalf (booking for them) must name, since they know the patient by
/// client ID only and never by their sign-in subject.
pub async fn is_registered(conn: &mut PgConnection, country: &str, client_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM patients
                         WHERE country_code = $1 AND client_id = $2 AND deleted_at IS NULL)",
    )
    .bind(country)
    .bind(client_id)
    .fetch_one(conn)
    .await
}
