//! The booking domain, served per Region by `meridian booking` (and inside `meridian dev`):
//! practitioners and their availability in the country's time zone, free slots correct
//! across daylight-saving changes, appointments the database never lets be double booked,
//! re-assignment when a practitioner becomes unavailable, and live slot changes tailed from
//! the outbox. `http` is its API under `/{cc}/v1`; [`serve`] is its entry point (`meridian
//! booking`), [`served`] which countries a Region's deployment serves, and [`bench`] its
//! benchmark (`meridian bench booking`).

pub mod appointments;
pub mod availability;
pub mod bench;
pub mod http;
pub mod live;
pub mod practitioners;
pub mod reassign;
pub mod schedules;
pub mod serve;
pub mod served;
pub mod slots;

pub use meridian_shared::serve::{ACQUIRE_TIMEOUT, pool_options};

/// Who reads or changes personal data, for the audit trail.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    /// The token's subject.
    pub subject: &'a str,
    /// The request's correlation ID.
    pub correlation_id: uuid::Uuid,
}

impl Actor<'_> {
    /// Appends the audit record of `action` on `resource` by this actor, inside the caller's
    /// transaction.
    pub async fn audit(
        &self,
        conn: &mut sqlx::PgConnection,
        country: &str,
        action: &str,
        resource: &str,
    ) -> Result<(), sqlx::Error> {
        let record = meridian_shared::audit::Record {
            country_code: country,
            actor: self.subject,
            action,
            resource,
            correlation_id: self.correlation_id,
        };
        meridian_shared::audit::append(conn, &record).await
    }
}
