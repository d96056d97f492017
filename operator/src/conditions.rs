//! Status conditions: every one carries `observedGeneration`, a machine-readable `reason`
//! and a human `message`; `lastTransitionTime` moves only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconcile step reports it, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub type_: &'static str,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

/// A condition's status. `Unknown` is for a step that did not run this time because an
/// earlier one stopped: its old `True` would be a claim nobody checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl Report {
    fn new(type_: &'static str, status: Status, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn ok(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::True, reason, message)
    }

    pub fn failed(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::False, reason, message)
    }

    pub fn unknown(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::Unknown, reason, message)
    }

    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}

/// Merges `reports` into `previous`, keeping each condition's `lastTransitionTime` when its
/// status did not change, and keeping conditions no report mentions.
pub fn merge(previous: &[Condition], reports: &[Report], generation: Option<i64>) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    let mut out: Vec<Condition> = previous.to_vec();
    for report in reports {
        let status = report.status.as_str().to_string();
        let fresh = Condition {
            type_: report.type_.to_string(),
            status: status.clone(),
            reason: report.reason.to_string(),
            message: report.message.clone(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        };
        match out.iter_mut().find(|c| c.type_ == report.type_) {
            Some(existing) if existing.status == status => {
                let since = existing.last_transition_time.clone();
                *existing = Condition {
                    last_transition_time: since,
                    ..fresh
                };
            }
            Some(existing) => *existing = fresh,
            None => out.push(fresh),
        }
    }
    out
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// A change a user should hear about: a condition that appeared or changed status or reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Transition {
    /// Warnings for conditions that went `False`, normal events otherwise.
    pub fn is_warning(&self) -> bool {
        self.status == "False"
    }
}

/// Conditions of `new` whose status or reason differ from `old`.
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<Transition> {
    new.iter()
        .filter(|c| find(old, &c.type_).is_none_or(|o| o.status != c.status || o.reason != c.reason))
        .map(|c| Transition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_transition_time_but_takes_new_message_and_generation() {
        let first = merge(&[], &[Report::failed("Ready", "RegionNotReady", "waiting")], Some(1));
        let mut old = first.clone();
        old[0].last_transition_time = Time(Timestamp::UNIX_EPOCH);
        let second = merge(&old, &[Report::failed("Ready", "DatabaseUnreachable", "down")], Some(2));
        assert_eq!(second[0].last_transition_time, Time(Timestamp::UNIX_EPOCH));
        assert_eq!(second[0].reason, "DatabaseUnreachable");
        assert_eq!(second[0].observed_generation, Some(2));
        let third = merge(&second, &[Report::ok("Ready", "Reconciled", "ok")], Some(2));
        assert_ne!(third[0].last_transition_time, Time(Timestamp::UNIX_EPOCH));
    }

    #[test]
    fn transitions_report_new_and_flipped_conditions_only() {
        let old = merge(&[], &[Report::ok("DatabaseReady", "PartitionsReady", "5")], Some(1));
        let new = merge(
            &old,
            &[
                Report::ok("DatabaseReady", "PartitionsReady", "5"),
                Report::ok("Ready", "Reconciled", ""),
            ],
            Some(1),
        );
        let t = transitions(&old, &new);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].type_, "Ready");
    }
}
