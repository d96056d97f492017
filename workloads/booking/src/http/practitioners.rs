//! `/{cc}/v1/practitioners`: browse (any caller of the country), manage (ClinicAdmin,
//! SystemAdmin).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_shared::auth::Role;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::problem::{Body, Params, PathId};
use super::{Caller, InvalidField, Problem, Service};
use crate::practitioners::{self, Practitioner, Profile};

const MANAGERS: &[Role] = &[Role::ClinicAdmin, Role::SystemAdmin];
/// Rows one import may carry.
const IMPORT_LIMIT: usize = 20_000;

pub fn router() -> Router<Arc<Service>> {
    Router::new()
        .route("/{cc}/v1/practitioners", get(list).post(create))
        .route(
            "/{cc}/v1/practitioners/import",
            post(import).layer(DefaultBodyLimit::max(32 * 1024 * 1024)),
        )
        .route("/{cc}/v1/practitioners/{id}", get(read).put(update))
        .route("/{cc}/v1/practitioners/{id}/deactivate", post(deactivate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    after: Option<Uuid>,
    limit: Option<u32>,
}

async fn list(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Params(page): Params<Page>,
) -> Result<Json<Value>, Problem> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid(vec![InvalidField {
            field: "limit".into(),
            message: "must be between 1 and 500".into(),
        }]));
    }
    let items = practitioners::list(&s.pool, &caller.country.code, page.after, limit).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|p| p.id))
        .flatten();
    Ok(Json(json!({ "items": items, "next": next })))
}

async fn create(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Body(profile): Body<Profile>,
) -> Result<(StatusCode, Json<Practitioner>), Problem> {
    caller.require(MANAGERS)?;
    let created = practitioners::create(&s.pool, &caller.country.code, &profile, caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn read(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<Practitioner>, Problem> {
    Ok(Json(practitioners::get(&s.pool, &caller.country.code, id).await?))
}

/// `If-Match: <version>` makes the update conditional.
async fn update(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
    headers: HeaderMap,
    Body(profile): Body<Profile>,
) -> Result<Json<Practitioner>, Problem> {
    caller.require(MANAGERS)?;
    let expected = match headers.get(axum::http::header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|v| v.trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    Problem::invalid(vec![InvalidField {
                        field: "If-Match".into(),
                        message: "must be the version number".into(),
                    }])
                })?,
        ),
    };
    Ok(Json(
        practitioners::update(&s.pool, &caller.country.code, id, &profile, expected, caller.actor()).await?,
    ))
}

async fn deactivate(
    State(s): State<Arc<Service>>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<Practitioner>, Problem> {
    caller.require(MANAGERS)?;
    let practitioner = practitioners::deactivate(&s.pool, &caller.country.code, id, caller.actor()).await?;
    s.schedules.forget(&caller.country.code, id);
    let country = &caller.country;
    crate::reassign::run(
        &s.pool,
        &country.code,
        country.timezone,
        id,
        None,
        country.reassignment,
        caller.actor(),
    )
    .await?;
    Ok(Json(practitioner))
}

async fn import(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Body(rows): Body<Vec<Profile>>,
) -> Result<Json<practitioners::ImportReport>, Problem> {
    caller.require(MANAGERS)?;
    if rows.len() > IMPORT_LIMIT {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            format!(
                "an import takes at most {IMPORT_LIMIT} rows; send {} in several",
                rows.len()
            ),
        ));
    }
    Ok(Json(
        practitioners::import(&s.pool, &caller.country.code, &rows, caller.actor()).await?,
    ))
}
