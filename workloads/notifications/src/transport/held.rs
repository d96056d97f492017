//! `meridian dev`'s transport: nothing leaves the machine. Messages are kept in memory (the
//! latest [`KEPT`], recipients masked) for the local outbox page, and their notices are
//! marked `held`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;

use super::{Delivered, Outgoing, SendError, Transport};
use crate::message::mask;
use crate::plan::{Channel, Kind};

/// Messages kept, the oldest dropped first.
pub const KEPT: usize = 500;

/// A message as the outbox page shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldMessage {
    pub id: uuid::Uuid,
    pub country: String,
    pub kind: Kind,
    pub channel: Channel,
    /// Masked: `a***@example.org`.
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub due_at: DateTime<Utc>,
    pub held_at: DateTime<Utc>,
}

/// Keeps messages instead of sending them.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<VecDeque<HeldMessage>>>);

impl Held {
    /// The messages kept, newest first.
    pub fn messages(&self) -> Vec<HeldMessage> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .cloned()
            .collect()
    }
}

impl Transport for Held {
    fn send<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, SendError>> {
        let held = HeldMessage {
            id: message.id,
            country: message.country.clone(),
            kind: message.kind,
            channel: message.channel,
            recipient: mask(message.channel, &message.to),
            subject: message.subject.clone(),
            body: message.body.clone(),
            due_at: message.due_at,
            held_at: Utc::now(),
        };
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The same notice again (sent again after a crash) replaces its first copy.
        kept.retain(|m| m.id != held.id);
        kept.push_back(held);
        while kept.len() > KEPT {
            kept.pop_front();
        }
        Box::pin(async { Ok(Delivered::Held) })
    }
}
