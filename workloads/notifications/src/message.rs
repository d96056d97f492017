//! What a notice says: a subject and a short body, telling the appointment's date and time
//! in the country's time zone. Never the reason for the visit, a diagnosis or the patient's
//! name: a message may be read on a lock screen or by whoever shares the mailbox.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::plan::{Channel, Kind};

/// A notice as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// The text of a `kind` notice about appointment `appointment` at `starts_at`, told in `tz`.
/// SMS gets the body only, so it stands alone.
pub fn render(kind: Kind, appointment: Uuid, starts_at: DateTime<Utc>, tz: Tz) -> Rendered {
    let when = starts_at.with_timezone(&tz).format("%A %-d %B %Y at %H:%M (%Z)");
    let (subject, body) = match kind {
        Kind::Reminder => (
            "Appointment reminder",
            format!("Reminder: you have an appointment on {when}."),
        ),
        Kind::Reassigned => (
            "Your appointment has a new practitioner",
            format!(
                "Your appointment on {when} is now with another practitioner of the same specialty. \
                 The time is unchanged."
            ),
        ),
        Kind::NeedsRebooking => (
            "Please rebook your appointment",
            format!(
                "Your appointment on {when} cannot take place and no other practitioner was free \
                 then. Please book a new appointment."
            ),
        ),
    };
    Rendered {
        subject: subject.to_string(),
        body: format!("{body} Reference: {appointment}."),
    }
}

/// An address shown without giving it away: `a***@example.org`, `+49******78`.
pub fn mask(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => match address.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".into(),
        },
        Channel::Sms => {
            let chars: Vec<char> = address.chars().filter(|c| !c.is_whitespace()).collect();
            if chars.len() <= 6 {
                return "***".into();
            }
            let hidden = chars.len() - 5;
            chars[..3]
                .iter()
                .chain(std::iter::repeat_n(&'*', hidden))
                .chain(&chars[chars.len() - 2..])
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_told_in_the_countrys_zone_without_the_reason() {
        let starts = "2026-12-03T08:30:00Z".parse().unwrap();
        let id = Uuid::nil();
        let berlin = render(Kind::Reminder, id, starts, chrono_tz::Europe::Berlin);
        assert_eq!(berlin.subject, "Appointment reminder");
        assert_eq!(
            berlin.body,
            "Reminder: you have an appointment on Thursday 3 December 2026 at 09:30 (CET). \
             Reference: 00000000-0000-0000-0000-000000000000."
        );
        let tokyo = render(Kind::NeedsRebooking, id, starts, chrono_tz::Asia::Tokyo);
        assert!(
            tokyo.body.contains("Thursday 3 December 2026 at 17:30 (JST)"),
            "{}",
            tokyo.body
        );
    }

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask(Channel::Email, "anna.schmidt@example.org"), "a***@example.org");
        assert_eq!(mask(Channel::Email, "not-an-address"), "***");
        assert_eq!(mask(Channel::Sms, "+49 151 2345678"), "+49********78");
        assert_eq!(mask(Channel::Sms, "112"), "***");
    }
}
