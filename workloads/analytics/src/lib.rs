//! Appointment analytics: the analytics consumer follows a Region's `appointment-events` and
//! counts bookings, cancellations and re-assignments per country and practitioner specialty
//! in one-minute windows of event time (when the booking committed). An event that arrives
//! late updates its minute as long as it is within [`window::ALLOWED_LATENESS`] of the
//! latest event time counted; an older one is rejected to the dead-letter topic, so a minute
//! that old is final. Every count it changes is also written to the outbox, in the same
//! transaction, for the relay to publish on `analytics-results`.

pub mod handler;
pub mod minutes;
pub mod window;

pub use handler::AnalyticsHandler;
