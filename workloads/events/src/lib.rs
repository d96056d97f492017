//! The event backbone of a Region: every change's event is written to the outbox in the
//! change's own transaction; the [`relay`] publishes the outbox to the Region's Kafka, in
//! commit order and at least once; consumers deduplicate on each event's ID.

pub mod consumer;
pub mod dlq;
pub mod kafka;
pub mod relay;
pub mod topics;
pub mod worker;
