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
use uuid::Uuid;

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
        .route("/{cc}/v1/slots", get(free_where))
}

async fn add(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
    Body(entry): Body<Entry>,
) -> Result<(StatusCode, Json<Stored>), Problem> {
    caller.require(SCHEDULERS)?;
    let stored = availability::add(&s.pool, &caller.country.code, id, &entry, caller.actor()).await?;
    s.schedules.forget(&caller.country.code, id);
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
    range.check()?;
    let practitioner = practitioners::get(&s.pool, &caller.country.code, id).await?;
    let slots = if practitioner.active {
        free_of(&s, &caller, id, &range).await?
    } else {
        Vec::new()
    };
    Ok(Json(
        json!({ "timezone": caller.country.timezone.name(), "slots": slots }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Place {
    specialty: String,
    city: String,
    from: NaiveDate,
    to: NaiveDate,
}

/// Free slots of every active practitioner of a specialty in a city (at most 50).
async fn free_where(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Params(place): Params<Place>,
) -> Result<Json<Value>, Problem> {
    let range = Range {
        from: place.from,
        to: place.to,
    };
    range.check()?;
    let found = practitioners::matching(&s.pool, &caller.country.code, &place.specialty, &place.city, 50).await?;
    let mut practitioners = Vec::new();
    for p in found {
        let slots = free_of(&s, &caller, p.id, &range).await?;
        practitioners.push(json!({
            "practitionerId": p.id, "givenName": p.given_name, "familyName": p.family_name, "slots": slots,
        }));
    }
    Ok(Json(
        json!({ "timezone": caller.country.timezone.name(), "practitioners": practitioners }),
    ))
}

impl Range {
    fn check(&self) -> Result<(), Problem> {
        let days = (self.to - self.from).num_days();
        if (0..MAX_RANGE_DAYS).contains(&days) {
            return Ok(());
        }
        Err(Problem::invalid(vec![InvalidField {
            field: "to".into(),
            message: format!("must be on or after from, and at most {MAX_RANGE_DAYS} days later"),
        }]))
    }
}

/// A practitioner's future free slots over `range`, in UTC and in the country's time.
async fn free_of(s: &Service, caller: &Caller, id: Uuid, range: &Range) -> Result<Vec<Value>, Problem> {
    let code = &caller.country.code;
    let tz = caller.country.timezone;
    let entries = availability::list(&s.pool, code, id).await?;
    // Booked time over the local dates, widened by a day on each side: no offset is wider.
    let start = range.from.and_time(NaiveTime::MIN).and_utc() - Duration::days(1);
    let end = range.to.and_time(NaiveTime::MIN).and_utc() + Duration::days(2);
    let booked = appointments::booked(&s.pool, code, id, start, end).await?;
    let free = slots::free_slots(tz, &availability::for_slots(&entries), &booked, range.from, range.to);
    let now = chrono::Utc::now();
    Ok(free
        .iter()
        .filter(|slot| slot.start > now)
        .map(|slot| {
            json!({
                "start": slot.start, "end": slot.end,
                "localStart": slot.local_start.to_rfc3339(), "localEnd": slot.local_end.to_rfc3339(),
            })
        })
        .collect())
}
