//! The booking domain. So far: free-slot computation over weekly availability in a
//! country's time zone, correct across daylight-saving changes, and booking an appointment
//! that the database guarantees is never double booked. The HTTP service, practitioners,
//! availability storage and live slots follow (issue "Booking service").

pub mod appointments;
pub mod availability;
pub mod http;
pub mod live;
pub mod practitioners;
pub mod reassign;
pub mod schedules;
pub mod slots;

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
