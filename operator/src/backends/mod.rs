//! The stores a reconcile writes to.

pub mod postgres;
