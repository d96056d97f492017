//! `GET /{cc}/v1/practitioners/{id}/slots/events`: a `text/event-stream` of `slot.taken` and
//! `slot.freed`, with heartbeats, resumable with `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::{Stream, StreamExt, stream};
use tokio::sync::broadcast::error::RecvError;

use super::problem::PathId;
use super::{Caller, InvalidField, Problem, Service};
use crate::live::{self, SlotChange};
use crate::practitioners;

pub fn router() -> Router<Arc<Service>> {
    Router::new().route("/{cc}/v1/practitioners/{id}/slots/events", get(events))
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
    let code = caller.country.code.clone();
    practitioners::get(&s.pool, &code, id).await?;
    let last_seen = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| {
            Problem::invalid(vec![InvalidField {
                field: "Last-Event-ID".into(),
                message: "must be an event ID from this stream".into(),
            }])
        })?),
    };
    // Subscribe before replaying, so nothing falls between the two.
    let receiver = s.live.subscribe().await?;
    let after = match last_seen {
        Some(id) => id,
        None => live::head(&s.pool).await?,
    };
    let missed = live::since(&s.pool, &code, id, after).await?;
    let replayed_up_to = missed.last().map_or(after, |c| c.id);
    let replay = stream::iter(missed.iter().map(event).map(Ok).collect::<Vec<_>>());
    let live = stream::unfold(receiver, move |mut receiver| {
        let code = code.clone();
        async move {
            loop {
                match receiver.recv().await {
                    Ok(change)
                        if change.country_code == code
                            && change.practitioner_id == id
                            && change.id > replayed_up_to =>
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
