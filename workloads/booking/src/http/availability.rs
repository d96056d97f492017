//! `/{cc}/v1/practitioners/{id}/availability` and `/slots`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration, NaiveDate, NaiveTime};
use meridian_shared::auth::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use super::problem::{Body, Params, PathId};
use super::{Caller, InvalidField, Problem, Service};
use crate::availability::{self, Entry, Stored};
use crate::{appointments, practitioners, reassign, slots};

const SCHEDULERS: &[Role] = &[Role::ClinicAdmin, Role::PracticeManager, Role::SystemAdmin];
/// The widest slot query, in days.
const MAX_RANGE_DAYS: i64 = 62;

pub fn router() -> Router<Arc<Service>> {
    Router::new()
        .route("/{cc}/v1/practitioners/{id}/availability", get(list).post(add))
        .route("/{cc}/v1/practitioners/{id}/slots", get(free))
}

async fn add(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
    Body(entry): Body<Entry>,
) -> Result<(StatusCode, Json<Stored>), Problem> {
    caller.require(SCHEDULERS)?;
    let stored = availability::add(&s.pool, &caller.country.code, id, &entry, caller.actor()).await?;
    if let Entry::TimeOff { starts_at, ends_at } = &entry {
        let window = slots::Interval {
            start: *starts_at,
            end: *ends_at,
        };
        let country = &caller.country;
        reassign::run(
            &s.pool,
            &country.code,
            country.timezone,
            id,
            Some(window),
            country.reassignment,
            caller.actor(),
        )
        .await?;
    }
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn list(State(s): State<Arc<Service>>, caller: Caller, PathId(id): PathId) -> Result<Json<Vec<Stored>>, Problem> {
    practitioners::get(&s.pool, &caller.country.code, id).await?;
    Ok(Json(availability::list(&s.pool, &caller.country.code, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    from: NaiveDate,
    to: NaiveDate,
}

/// Free slots between two local dates (inclusive), in UTC and in the country's time.
async fn free(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
    Params(range): Params<Range>,
) -> Result<Json<Value>, Problem> {
    let days = (range.to - range.from).num_days();
    if !(0..MAX_RANGE_DAYS).contains(&days) {
        return Err(Problem::invalid(vec![InvalidField {
            field: "to".into(),
            message: format!("must be on or after from, and at most {MAX_RANGE_DAYS} days later"),
        }]));
    }
    let code = &caller.country.code;
    let tz = caller.country.timezone;
    let practitioner = practitioners::get(&s.pool, code, id).await?;
    if !practitioner.active {
        return Ok(Json(json!({ "timezone": tz.name(), "slots": [] })));
    }
    let entries = availability::list(&s.pool, code, id).await?;
    // Booked time over the local dates, widened by a day on each side: no offset is wider.
    let start = range.from.and_time(NaiveTime::MIN).and_utc() - Duration::days(1);
    let end = range.to.and_time(NaiveTime::MIN).and_utc() + Duration::days(2);
    let booked = appointments::booked(&s.pool, code, id, start, end).await?;
    let free = slots::free_slots(tz, &availability::for_slots(&entries), &booked, range.from, range.to);
    let now = chrono::Utc::now();
    let slots: Vec<Value> = free
        .iter()
        .filter(|slot| slot.start > now)
        .map(|slot| {
            json!({
                "start": slot.start, "end": slot.end,
                "localStart": slot.local_start.to_rfc3339(), "localEnd": slot.local_end.to_rfc3339(),
            })
        })
        .collect();
    Ok(Json(json!({ "timezone": tz.name(), "slots": slots })))
}
