//! Notifications: what a patient is told about their appointments, and how.
//!
//! The consumer ([`handler`]) follows a Region's `appointment-events` and schedules notices
//! in the `notifications` table, in the transaction that records the event in the inbox:
//! - `appointment.booked`: a reminder due a day before the appointment (none when the
//!   appointment is less than a day away when it is booked);
//! - `appointment.rescheduled`: the pending reminder is cancelled and one for the new time
//!   scheduled;
//! - `appointment.reassigned`: a notice that the appointment moved to another practitioner,
//!   due at once (the reminder stays: same slot);
//! - `appointment.needs_rebooking`: a notice that the appointment must be rebooked, due at
//!   once, and the pending reminder cancelled;
//! - `appointment.cancelled`: the pending reminder cancelled.
//!
//! Which notices a country allows ([`plan`], pure): where the Country's
//! `regulatory.consent.reminders` is true, reminders need the patient's explicit opt-in: their
//! latest active FHIR `Consent` in category [`consent::REMINDERS_CATEGORY`] must be a `permit`
//! in force ([`consent`]). It is checked when the reminder is scheduled and again when it is
//! sent (a withdrawal cancels it). Re-assignment and needs-rebooking notices are about an
//! appointment the patient holds and must act on: they are service messages, sent without
//! that opt-in.
//!
//! The dispatcher ([`dispatch`]) sends what is due: it takes one pending notice at a time with
//! `FOR UPDATE SKIP LOCKED` (replicas never take the same one), reads the patient's contact
//! from the PII vault at that moment ([`contact`], through the records service's own vault
//! code, the read audited), and sends by SMS where the Country's `features.smsReminders` is
//! true and the patient has a phone, else by e-mail ([`transport`]: SMTP, an HTTP SMS
//! provider, or [`transport::held::Held`] in `meridian dev`, which sends nothing and keeps
//! the messages for the local outbox page). The table names the patient by client ID only:
//! no name, address or phone is ever written to it, and messages carry no reason or
//! diagnosis ([`message`]).
//!
//! Delivery is at least once: a dispatcher that dies after the provider accepted a message
//! and before its row says `sent` sends it again. Every message carries a key derived from
//! the notice's ID (the e-mail's `Message-ID`, the SMS request's `idempotencyKey`) for
//! providers that drop duplicates.
//!
//! [`serve`] is the entry point `meridian notifications`.

pub mod consent;
pub mod contact;
pub mod dispatch;
pub mod handler;
pub mod message;
pub mod outbox_page;
pub mod plan;
pub mod rules;
pub mod serve;
pub mod transport;

pub use dispatch::Dispatcher;
pub use handler::NotificationsHandler;
pub use rules::{CountryRules, Rules};

/// What can go wrong in setting the notifications up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SMTP settings: {0}")]
    Smtp(String),
    #[error("SMS provider settings: {0}")]
    Sms(String),
    #[error("Country {country}: {why}")]
    Country { country: String, why: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
