//! `/{cc}/v1/appointments`: book (with an `Idempotency-Key`), read, list mine, cancel.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use meridian_shared::auth::Role;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::problem::{Body, Params, PathId};
use super::{Caller, InvalidField, Problem, Service};
use crate::appointments::{self, BookRequest, BookingError, NewSlot, Scope};
use crate::schedules::Schedule;

/// Staff who book on a patient's behalf.
const STAFF: &[Role] = &[Role::PracticeManager, Role::ClinicAdmin, Role::SystemAdmin];

pub fn router() -> Router<Arc<Service>> {
    Router::new()
        .route("/{cc}/v1/appointments", post(book).get(mine))
        .route("/{cc}/v1/appointments/{id}", get(read))
        .route("/{cc}/v1/appointments/{id}/cancel", post(cancel))
        .route("/{cc}/v1/appointments/{id}/reschedule", post(reschedule))
}

fn invalid(field: &str, message: impl Into<String>) -> Problem {
    Problem::invalid(vec![InvalidField {
        field: field.into(),
        message: message.into(),
    }])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewAppointment {
    practitioner_id: Uuid,
    /// Start of a free slot, as `/slots` lists it.
    start: DateTime<Utc>,
    #[serde(default)]
    reason: Option<String>,
    /// Only staff book for someone else, naming the patient's client ID (the id of their
    /// Patient resource in the records service); a patient books for themselves.
    #[serde(default)]
    patient_id: Option<String>,
}

async fn book(
    State(s): State<Arc<Service>>,
    caller: Caller,
    headers: HeaderMap,
    Body(new): Body<NewAppointment>,
) -> Result<Response, Problem> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=200).contains(&k.len()))
        .ok_or_else(|| {
            invalid(
                "Idempotency-Key",
                "the header is required (1 to 200 characters) on every booking",
            )
        })?;
    if new.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(invalid(
            "reason",
            "must be at most 500 characters (reason for visit only)",
        ));
    }
    if new.start <= Utc::now() {
        return Err(invalid("start", "must be in the future"));
    }
    let (patient_id, by_patient) = match (&new.patient_id, caller.principal.has_role(Role::Patient)) {
        (Some(patient), _) => {
            caller
                .require(STAFF)
                .map_err(|_| invalid("patientId", "only staff book for another patient"))?;
            let client_id = patient
                .parse::<Uuid>()
                .map_err(|_| invalid("patientId", "must be the patient's client ID (a UUID)"))?;
            (client_id, false)
        }
        (None, true) => (caller.client_id(&s.pool).await?, true),
        (None, false) => return Err(invalid("patientId", "staff must name the patient")),
    };
    let code = &caller.country.code;
    // The slot is checked against the cached schedule; if the database says that schedule
    // is no longer current, check again against a fresh one, once.
    let mut fresh = false;
    let booked = loop {
        let schedule = schedule(&s, code, new.practitioner_id).await?;
        let request = BookRequest {
            country_code: code.clone(),
            practitioner_id: new.practitioner_id,
            patient_id,
            by_patient,
            starts_at: new.start,
            ends_at: slot_end(&schedule, &caller, new.start)?,
            reason: new.reason.clone(),
            idempotency_key: key.to_string(),
            schedule_version: schedule.version,
            actor: caller.principal.subject.clone(),
            correlation_id: caller.correlation_id,
        };
        match appointments::book(&s.pool, &request).await {
            Err(BookingError::NotBookable(_)) if !fresh => {
                s.schedules.forget(code, new.practitioner_id);
                fresh = true;
            }
            result => break result?,
        }
    };
    let status = if booked.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(booked.appointment)).into_response();
    if booked.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The practitioner's schedule, if they take appointments in this country.
async fn schedule(s: &Service, code: &str, practitioner: Uuid) -> Result<Arc<Schedule>, Problem> {
    s.schedules.get(&s.pool, code, practitioner).await?.ok_or_else(|| {
        invalid(
            "practitionerId",
            "no such practitioner takes appointments in this country",
        )
    })
}

/// The end of the slot of `schedule` that starts at `start`.
fn slot_end(schedule: &Schedule, caller: &Caller, start: DateTime<Utc>) -> Result<DateTime<Utc>, Problem> {
    schedule.slot_end(caller.country.timezone, start).ok_or_else(|| {
        invalid(
            "start",
            "is not the start of one of the practitioner's slots (see /slots)",
        )
    })
}

async fn read(State(s): State<Arc<Service>>, caller: Caller, PathId(id): PathId) -> Result<Response, Problem> {
    let scope = caller.scope(&s.pool).await?;
    Ok(Json(appointments::get(&s.pool, &caller.country.code, id, &scope, caller.actor()).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    from: Option<DateTime<Utc>>,
    limit: Option<u32>,
}

async fn mine(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Params(window): Params<Window>,
) -> Result<Response, Problem> {
    let scope = caller.scope(&s.pool).await?;
    let limit = window.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 500"));
    }
    let from = window.from.unwrap_or_else(Utc::now);
    let items = appointments::list(&s.pool, &caller.country.code, &scope, from, limit, caller.actor()).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn cancel(State(s): State<Arc<Service>>, caller: Caller, PathId(id): PathId) -> Result<Response, Problem> {
    let scope = caller.scope(&s.pool).await?;
    if matches!(scope, Scope::Practitioner(_)) {
        return Err(Problem::forbidden(
            "practitioners do not cancel appointments here; mark time off instead",
        ));
    }
    Ok(Json(appointments::cancel(&s.pool, &caller.country.code, id, &scope, caller.actor()).await?).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewTime {
    /// Start of another free slot of the same practitioner.
    start: DateTime<Utc>,
}

async fn reschedule(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
    Body(new): Body<NewTime>,
) -> Result<Response, Problem> {
    let scope = caller.scope(&s.pool).await?;
    if matches!(scope, Scope::Practitioner(_)) {
        return Err(Problem::forbidden(
            "practitioners do not move appointments here; mark time off instead",
        ));
    }
    if new.start <= Utc::now() {
        return Err(invalid("start", "must be in the future"));
    }
    let code = caller.country.code.clone();
    let current = appointments::get(&s.pool, &code, id, &scope, caller.actor()).await?;
    // As for a booking: the slot is checked against the cached schedule, and if the database
    // says that schedule is no longer current, against a fresh one, once.
    let mut fresh = false;
    let moved = loop {
        let schedule = schedule(&s, &code, current.practitioner_id).await?;
        let to = NewSlot {
            starts_at: new.start,
            ends_at: slot_end(&schedule, &caller, new.start)?,
            schedule_version: schedule.version,
        };
        match appointments::reschedule(&s.pool, &code, id, &scope, to, caller.actor()).await {
            Err(BookingError::NotBookable(_)) if !fresh => {
                s.schedules.forget(&code, current.practitioner_id);
                fresh = true;
            }
            result => break result?,
        }
    };
    Ok(Json(moved).into_response())
}
