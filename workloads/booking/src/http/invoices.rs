//! `GET /{cc}/v1/invoices`: the invoices the billing consumer issued, newest first. A
//! practice manager sees the country's; a patient sees their own; nobody else sees any.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meridian_billing::invoices::{self, Whose};
use meridian_shared::auth::Role;
use serde::Deserialize;
use serde_json::json;

use super::problem::Params;
use super::{Caller, InvalidField, Problem, Service};

pub fn router() -> Router<Arc<Service>> {
    Router::new().route("/{cc}/v1/invoices", get(list))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Page {
    /// Invoices numbered below this one (the previous page's `next`).
    before: Option<i64>,
    limit: Option<i64>,
}

async fn list(State(s): State<Arc<Service>>, caller: Caller, Params(page): Params<Page>) -> Result<Response, Problem> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid(vec![InvalidField {
            field: "limit".into(),
            message: "must be between 1 and 500".into(),
        }]));
    }
    let patient;
    let whose = if caller.principal.has_role(Role::PracticeManager) {
        Whose::Country
    } else if caller.principal.has_role(Role::Patient) {
        patient = caller.client_id(&s.pool).await?.to_string();
        Whose::Patient(&patient)
    } else {
        return Err(Problem::forbidden(
            "invoices are shown to practice managers and to the patient they are for",
        ));
    };
    let code = &caller.country.code;
    let mut tx = meridian_shared::pool::begin(&s.pool).await?;
    let items = invoices::list(&mut *tx, code, whose, page.before, limit).await?;
    let resource = match page.before {
        Some(before) => format!("invoices?before={before}"),
        None => "invoices".to_string(),
    };
    caller.actor().audit(&mut tx, code, "invoice.list", &resource).await?;
    tx.commit().await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.number))
        .flatten();
    Ok(Json(json!({ "items": items, "next": next })).into_response())
}
