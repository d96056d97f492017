//! Patients as a records service leaves them in a Region's vault, written straight to the
//! database for the vault commands' tests: each sealed under the active key of `ring`, with
//! its search hashes and its history row.

use meridian_records::keys::Keyring;
use meridian_records::vault;
use sqlx::PgConnection;
use uuid::Uuid;

/// Seals `count` patients of `ring`'s country (`Kranich0`, `Kranich1`, ...), version 1 each;
/// answers their client IDs.
pub async fn seal_patients(conn: &mut PgConnection, ring: &Keyring, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let id = Uuid::new_v4();
        let body = serde_json::json!({
            "resourceType": "Patient", "id": id.to_string(), "meta": {"versionId": "1"},
            "name": [{"family": format!("Kranich{n}")}],
        });
        let (key_id, sealed) = vault::seal(ring, id, &serde_json::to_vec(&body).unwrap());
        let terms = meridian_records::validate::stored_patient_terms(&body).unwrap();
        sqlx::query(
            "WITH p AS (INSERT INTO vault.patients (country_code, client_id, version, last_updated, key_id, sealed, search)
                        VALUES ($1, $2, 1, now(), $3, $4, $5))
             INSERT INTO vault.patient_history (country_code, client_id, version, last_updated, method, key_id, sealed)
             VALUES ($1, $2, 1, now(), 'POST', $3, $4)",
        )
        .bind(&ring.country)
        .bind(id)
        .bind(&key_id)
        .bind(&sealed)
        .bind(vault::index(ring, &terms))
        .execute(&mut *conn)
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}
