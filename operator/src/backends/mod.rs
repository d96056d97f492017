//! The stores a reconcile writes to.

pub mod gateway;
pub mod postgres;
