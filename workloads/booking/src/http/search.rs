//! `GET /{cc}/v1/practitioners/search`: practitioners of the country found through its own
//! search index (free text with typos and the country's language, specialty, city,
//! language spoken), optionally only those with a free slot in a time window. The index
//! belongs to the country, so another country's practitioners can never show up.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use meridian_search::{Hit, Query, SearchError, alias};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::problem::Params;
use super::{Caller, InvalidField, Problem, Service};
use crate::{appointments, slots};

/// Candidates looked at, at most, to fill a page of practitioners with a free slot.
const SCAN_LIMIT: usize = 500;
/// The widest "available between" window.
const MAX_WINDOW_DAYS: i64 = 31;

pub fn router() -> Router<Arc<Service>> {
    Router::new().route("/{cc}/v1/practitioners/search", get(search))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SearchParams {
    q: Option<String>,
    specialty: Option<String>,
    city: Option<String>,
    language: Option<String>,
    available_from: Option<DateTime<Utc>>,
    available_to: Option<DateTime<Utc>>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn invalid(field: &str, message: &str) -> Problem {
    Problem::invalid(vec![InvalidField {
        field: field.into(),
        message: message.into(),
    }])
}

async fn search(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Params(p): Params<SearchParams>,
) -> Result<Json<Value>, Problem> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 100"));
    }
    let offset = p.offset.unwrap_or(0);
    if offset > 10_000 {
        return Err(invalid("offset", "must be at most 10000; narrow the search instead"));
    }
    if p.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(invalid("q", "must be at most 200 characters"));
    }
    let window = match (p.available_from, p.available_to) {
        (None, None) => None,
        (Some(from), Some(to)) if from < to && to - from <= Duration::days(MAX_WINDOW_DAYS) => Some((from, to)),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "availableTo",
                &format!("must be after availableFrom, at most {MAX_WINDOW_DAYS} days later"),
            ));
        }
        (Some(_), None) => return Err(invalid("availableTo", "is required with availableFrom")),
        (None, Some(_)) => return Err(invalid("availableFrom", "is required with availableTo")),
    };
    let backend = s.search.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Search unavailable",
            "this service has no search backend configured",
        )
    })?;
    let code = &caller.country.code;
    let blank = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let query = Query {
        text: blank(p.q),
        specialty: blank(p.specialty),
        city: blank(p.city),
        language: blank(p.language),
        offset,
        limit,
    };
    let unavailable = |e: SearchError| match e {
        SearchError::NoSuchIndex(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Search unavailable",
            format!("the search index of {code} is not built yet"),
        ),
        other => {
            tracing::error!(error = %other, "practitioner search failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Search unavailable",
                "the search backend did not answer; try again",
            )
        }
    };
    let Some((from, to)) = window else {
        let hits = backend.search(&alias(code), &query).await.map_err(unavailable)?;
        return Ok(Json(json!({
            "items": hits.hits.iter().map(item).collect::<Vec<_>>(),
            "total": hits.total, "offset": offset, "limit": limit,
        })));
    };
    // Availability is not in the index (it changes with every booking): walk the matches
    // in rank order and keep those with a free slot in the window.
    let mut kept: Vec<Value> = Vec::new();
    let mut skipped = 0;
    let mut page = Query {
        offset: 0,
        limit: 50,
        ..query
    };
    'pages: while page.offset < SCAN_LIMIT {
        let hits = backend.search(&alias(code), &page).await.map_err(unavailable)?;
        let done = hits.hits.len() < page.limit;
        for hit in &hits.hits {
            if !free_between(&s, &caller, hit.document.id, from, to).await? {
                continue;
            }
            if skipped < offset {
                skipped += 1;
            } else {
                kept.push(item(hit));
                if kept.len() == limit {
                    break 'pages;
                }
            }
        }
        if done {
            break;
        }
        page.offset += page.limit;
    }
    Ok(Json(json!({
        "items": kept, "offset": offset, "limit": limit,
    })))
}

fn item(hit: &Hit) -> Value {
    let d = &hit.document;
    json!({
        "id": d.id, "givenName": d.given_name, "familyName": d.family_name, "specialty": d.specialty,
        "city": d.city, "languages": d.languages, "score": hit.score,
    })
}

/// Whether the practitioner has a free slot starting and ending inside `from..to`.
async fn free_between(
    s: &Service,
    caller: &Caller,
    id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<bool, Problem> {
    let code = &caller.country.code;
    let tz = caller.country.timezone;
    let Some(schedule) = s.schedules.get(&s.pool, code, id).await? else {
        return Ok(false);
    };
    let booked = appointments::booked(&s.pool, code, id, from, to).await?;
    let (first, last) = (from.with_timezone(&tz).date_naive(), to.with_timezone(&tz).date_naive());
    let now = Utc::now();
    Ok(slots::free_slots(tz, &schedule.availability, &booked, first, last)
        .iter()
        .any(|slot| slot.start >= from && slot.end <= to && slot.start > now))
}
