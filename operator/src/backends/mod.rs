//! The stores a reconcile writes to.

pub mod gateway;
pub mod patient_index;
pub mod postgres;
