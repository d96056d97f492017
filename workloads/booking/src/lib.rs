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

use std::time::Duration;

/// How long a request waits for a database connection before it is answered `503`: short,
/// so that while the Region's database is down (or restarting) requests fail at once instead
/// of hanging, and the service recovers by itself when it is back.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pool settings of the booking service (`meridian booking` and `meridian dev`): a short
/// [`ACQUIRE_TIMEOUT`], and every pooled connection checked before use, so that connections
/// broken by a database restart are dropped and replaced rather than handed to a request.
pub fn pool_options(max_connections: u32) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
}

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
