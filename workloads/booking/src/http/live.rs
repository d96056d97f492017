//! `GET /{cc}/v1/practitioners/{id}/slots/events`: a `text/event-stream` of `slot.taken` and
//! `slot.freed`, with heartbeats, resumable with `Last-Event-ID`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::problem::{Params, PathId};
use super::{Caller, InvalidField, Problem, Service};
use crate::live::{self, EventId, SlotChange};
use crate::practitioners;

pub fn router() -> Router<Arc<Service>> {
    Router::new()
        .route("/{cc}/v1/practitioners/{id}/slots/events", get(events))
        .route("/{cc}/v1/slots/events", get(events_where))
}

fn event(change: &SlotChange) -> Event {
    Event::default()
        .id(change.id.to_string())
        .event(change.kind)
        .json_data(change)
        .expect("a slot change serializes")
}

async fn events(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    practitioners::get(&s.pool, &caller.country.code, id).await?;
    let last_seen = last_event_id(&headers)?;
    stream_for(s, caller.country.code, vec![id], last_seen).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Where {
    specialty: String,
    city: String,
}

/// The same stream for every active practitioner of a specialty in a city (as they are
/// when the stream opens).
async fn events_where(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Params(place): Params<Where>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let found = practitioners::matching(&s.pool, &caller.country.code, &place.specialty, &place.city, 500).await?;
    let last_seen = last_event_id(&headers)?;
    stream_for(s, caller.country.code, found.iter().map(|p| p.id).collect(), last_seen).await
}

/// The `Last-Event-ID` a reconnecting client sends.
fn last_event_id(headers: &HeaderMap) -> Result<Option<EventId>, Problem> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<EventId>().ok())
        .map(Some)
        .ok_or_else(|| {
            Problem::invalid(vec![InvalidField {
                field: "Last-Event-ID".into(),
                message: "must be an event ID from this stream".into(),
            }])
        })
}

async fn stream_for(
    s: Arc<Service>,
    code: String,
    watched: Vec<Uuid>,
    last_seen: Option<EventId>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    // Subscribe before replaying, so nothing falls between the two: what the replay's
    // snapshot sees is replayed (or older than the client), the rest comes live.
    let receiver = s.live.subscribe().await?;
    let (missed, replayed) = live::since(&s.pool, &code, &watched, last_seen.as_ref()).await?;
    let replayed = Arc::new(replayed);
    let replay = stream::iter(missed.iter().map(event).map(Ok).collect::<Vec<_>>());
    let watched: HashSet<Uuid> = watched.into_iter().collect();
    let live = stream::unfold(receiver, move |mut receiver| {
        let (code, watched, replayed) = (code.clone(), watched.clone(), replayed.clone());
        async move {
            loop {
                match receiver.recv().await {
                    Ok(change)
                        if change.country_code == code
                            && watched.contains(&change.practitioner_id)
                            && !replayed.visible(change.id.xid) =>
                    {
                        return Some((Ok(event(&change)), receiver));
                    }
                    Ok(_) => continue,
                    // A client too slow for the fan-out reconnects with Last-Event-ID.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(replay.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("heartbeat")))
}
