//! `GET /{cc}/v1/analytics/appointments?from=&to=`: the analytics consumer's counts of
//! bookings, cancellations and re-assignments per minute and specialty, for practice
//! managers. Counts only (no patient, no practitioner): not personal data, not audited.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeDelta, Utc};
use meridian_analytics::minutes::{self, MAX_RANGE};
use meridian_shared::auth::Role;
use serde::Deserialize;
use serde_json::json;

use super::problem::Params;
use super::{Caller, InvalidField, Problem, Service};

pub fn router() -> Router<Arc<Service>> {
    Router::new().route("/{cc}/v1/analytics/appointments", get(appointments))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    /// First minute (default: an hour before `to`).
    from: Option<DateTime<Utc>>,
    /// End of the range, exclusive (default: now).
    to: Option<DateTime<Utc>>,
}

async fn appointments(
    State(s): State<Arc<Service>>,
    caller: Caller,
    Params(range): Params<Range>,
) -> Result<Response, Problem> {
    if !caller.principal.has_role(Role::PracticeManager) {
        return Err(Problem::forbidden(
            "appointment analytics are shown to practice managers",
        ));
    }
    let to = range.to.unwrap_or_else(Utc::now);
    let from = range.from.unwrap_or(to - TimeDelta::hours(1));
    let invalid = |message: String| {
        Problem::invalid(vec![InvalidField {
            field: "from".into(),
            message,
        }])
    };
    if from >= to {
        return Err(invalid("must be before `to`".into()));
    }
    if to - from > MAX_RANGE {
        return Err(invalid(format!("at most {} days before `to`", MAX_RANGE.num_days())));
    }
    let code = &caller.country.code;
    let report = minutes::report(&s.pool, code, from, to).await?;
    Ok(Json(json!({
        "country": code,
        "from": from,
        "to": to,
        "finalBefore": report.final_before,
        "minutes": report.minutes,
    }))
    .into_response())
}
