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
pub mod slots;

/// Who reads or changes personal data, for the audit trail.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    /// The token's subject.
    pub subject: &'a str,
    /// The request's correlation ID.
    pub correlation_id: uuid::Uuid,
}
