//! The provider interface: a [`Transport`] takes one message to one recipient and says
//! whether it went out. [`smtp`] sends e-mail, [`sms`] posts to an HTTP SMS provider, and
//! [`held::Held`] (for `meridian dev`) sends nothing and keeps what would have gone.

pub mod held;
pub mod sms;
pub mod smtp;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::plan::{Channel, Kind};

/// One message to one recipient.
#[derive(Clone)]
pub struct Outgoing {
    /// The notice's ID: what the idempotency key and `Message-ID` are made of.
    pub id: Uuid,
    pub country: String,
    pub kind: Kind,
    pub channel: Channel,
    /// The e-mail address or phone number (from the vault; never logged).
    pub to: String,
    pub subject: String,
    pub body: String,
    pub due_at: DateTime<Utc>,
}

impl std::fmt::Debug for Outgoing {
    // Never print the recipient.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("id", &self.id)
            .field("country", &self.country)
            .field("kind", &self.kind)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    /// The same for every attempt at this notice, so that a provider can drop a repeat.
    pub fn idempotency_key(&self) -> String {
        format!("meridian-notification-{}", self.id)
    }
}

/// What became of a message a transport took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Accepted by the provider.
    Sent,
    /// Kept here, sent nowhere (`meridian dev`).
    Held,
}

/// A message the provider did not take: tried again later. The reason never holds the
/// recipient.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

/// A way of sending messages.
pub trait Transport: Send + Sync {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, SendError>>;
}

/// The transport of each channel, where one is configured.
#[derive(Clone, Default)]
pub struct Transports {
    pub email: Option<Arc<dyn Transport>>,
    pub sms: Option<Arc<dyn Transport>>,
}

impl Transports {
    /// Both channels through one transport (`meridian dev`'s [`held::Held`]).
    pub fn all(transport: Arc<dyn Transport>) -> Self {
        Self {
            email: Some(transport.clone()),
            sms: Some(transport),
        }
    }

    pub fn of(&self, channel: Channel) -> Option<&Arc<dyn Transport>> {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Sms => self.sms.as_ref(),
        }
    }
}
