//! Meridian's control plane: the Country and Region reconcilers and the two drivers that
//! run them — the Kubernetes operator ([`k8s`]) and the embedded stack ([`dev`]) — plus
//! `meridian plan` ([`plan_cmd`]).

pub mod backends;
pub mod conditions;
pub mod controller;
pub mod dev;
pub mod k8s;
pub mod metrics;
pub mod plan;
pub mod plan_cmd;
pub mod providers;
pub mod residency;
pub mod validate;
