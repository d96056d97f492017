//! Which notices an appointment event causes: pure, from the event and the country's rules.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// How long before an appointment its reminder is due.
pub const REMINDER_LEAD: Duration = Duration::hours(24);

/// What a notice tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The appointment moved to another practitioner (same time).
    Reassigned,
    /// The practitioner cannot see the patient and nobody could take over: rebook.
    NeedsRebooking,
    /// The appointment is tomorrow.
    Reminder,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reassigned => "reassigned",
            Kind::NeedsRebooking => "needs_rebooking",
            Kind::Reminder => "reminder",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Kind::Reassigned, Kind::NeedsRebooking, Kind::Reminder]
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

/// How a notice goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// The fields of an appointment event's payload the notices need (camelCase, as booking
/// writes them). Its reason is never read.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: Uuid,
    /// The patient's client ID.
    pub patient_id: String,
    pub starts_at: DateTime<Utc>,
}

/// A notice to schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: Kind,
    pub due_at: DateTime<Utc>,
}

/// What an event does to an appointment's notices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The appointment's pending reminders are cancelled (before anything is scheduled).
    pub cancel_reminders: bool,
    pub schedule: Vec<Notice>,
}

/// Whether a reminder may be scheduled: the country asks no opt-in, or the patient gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reminders {
    Allowed,
    /// The country asks for an opt-in the patient has not given.
    NotOptedIn,
}

/// The event types that may schedule a reminder (whose consent the caller must look up).
pub fn may_remind(event_type: &str) -> bool {
    matches!(event_type, "appointment.booked" | "appointment.rescheduled")
}

/// The notices `event_type` causes for an appointment starting at `starts_at`, the event
/// having happened at `occurred_at`. Due times come from the event alone, so the same event
/// plans the same notices however late or often it is handled.
pub fn plan(event_type: &str, starts_at: DateTime<Utc>, occurred_at: DateTime<Utc>, reminders: Reminders) -> Plan {
    let reminder = || {
        let due_at = starts_at - REMINDER_LEAD;
        // Booked less than a day ahead: no reminder.
        (reminders == Reminders::Allowed && due_at > occurred_at).then_some(Notice {
            kind: Kind::Reminder,
            due_at,
        })
    };
    let now = |kind| Notice {
        kind,
        due_at: occurred_at,
    };
    match event_type {
        "appointment.booked" => Plan {
            cancel_reminders: false,
            schedule: reminder().into_iter().collect(),
        },
        "appointment.rescheduled" => Plan {
            cancel_reminders: true,
            schedule: reminder().into_iter().collect(),
        },
        "appointment.reassigned" => Plan {
            cancel_reminders: false,
            schedule: vec![now(Kind::Reassigned)],
        },
        "appointment.needs_rebooking" => Plan {
            cancel_reminders: true,
            schedule: vec![now(Kind::NeedsRebooking)],
        },
        "appointment.cancelled" => Plan {
            cancel_reminders: true,
            schedule: Vec::new(),
        },
        _ => Plan::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_booking_is_reminded_a_day_before_unless_that_has_passed() {
        let starts = at("2026-12-03T09:00:00Z");
        assert_eq!(
            plan(
                "appointment.booked",
                starts,
                at("2026-11-30T10:00:00Z"),
                Reminders::Allowed
            ),
            Plan {
                cancel_reminders: false,
                schedule: vec![Notice {
                    kind: Kind::Reminder,
                    due_at: at("2026-12-02T09:00:00Z")
                }]
            }
        );
        // Booked 23 hours ahead, or without the opt-in the country asks for: no reminder.
        assert_eq!(
            plan(
                "appointment.booked",
                starts,
                at("2026-12-02T10:00:00Z"),
                Reminders::Allowed
            ),
            Plan::default()
        );
        assert_eq!(
            plan(
                "appointment.booked",
                starts,
                at("2026-11-30T10:00:00Z"),
                Reminders::NotOptedIn
            ),
            Plan::default()
        );
    }

    #[test]
    fn service_notices_are_due_when_the_event_happened_and_need_no_opt_in() {
        let (starts, occurred) = (at("2026-12-03T09:00:00Z"), at("2026-12-01T08:00:00Z"));
        let moved = plan("appointment.reassigned", starts, occurred, Reminders::NotOptedIn);
        assert_eq!(
            moved,
            Plan {
                cancel_reminders: false,
                schedule: vec![Notice {
                    kind: Kind::Reassigned,
                    due_at: occurred
                }]
            }
        );
        let rebook = plan("appointment.needs_rebooking", starts, occurred, Reminders::NotOptedIn);
        assert!(rebook.cancel_reminders);
        assert_eq!(rebook.schedule[0].kind, Kind::NeedsRebooking);
    }

    #[test]
    fn a_cancellation_cancels_and_a_move_reschedules_the_reminder() {
        let occurred = at("2026-11-30T10:00:00Z");
        let cancelled = plan(
            "appointment.cancelled",
            at("2026-12-03T09:00:00Z"),
            occurred,
            Reminders::Allowed,
        );
        assert_eq!(
            cancelled,
            Plan {
                cancel_reminders: true,
                schedule: vec![]
            }
        );
        let moved = plan(
            "appointment.rescheduled",
            at("2026-12-05T09:00:00Z"),
            occurred,
            Reminders::Allowed,
        );
        assert!(moved.cancel_reminders);
        assert_eq!(moved.schedule[0].due_at, at("2026-12-04T09:00:00Z"));
        assert_eq!(
            plan(
                "practitioner.updated",
                at("2026-12-05T09:00:00Z"),
                occurred,
                Reminders::Allowed
            ),
            Plan::default()
        );
    }

    #[test]
    fn kinds_read_back_as_written() {
        for kind in [Kind::Reassigned, Kind::NeedsRebooking, Kind::Reminder] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("marketing"), None);
    }
}
