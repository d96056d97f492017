//! The objects `meridian dev` holds, served in the shape of `kubectl get -o json`, plus
//! `/healthz` and `/metrics`.

use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_crds::{GROUP, VERSION};
use serde_json::json;

use super::store::{Managed, Objects, Store};
use crate::controller::Context;

#[derive(Clone)]
struct AppState {
    store: Arc<RwLock<Store>>,
    ctx: Arc<Context>,
    resync: Arc<super::Resync>,
}

/// Routes for the dev entry point.
pub fn router(store: Arc<RwLock<Store>>, ctx: Arc<Context>, resync: Arc<super::Resync>) -> Router {
    let base = format!("/apis/{GROUP}/{VERSION}");
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        // Every object reconciled once more, now; answers what that pass did (`meridian
        // bench world` checks that a resync with nothing changed writes nothing).
        .route(
            "/dev/resync",
            post(|State(s): State<AppState>| async move { Json(s.resync.run().await) }),
        )
        .route(
            &format!("{base}/countries"),
            get(|State(s): State<AppState>| async move { list(&read(&s).countries, "CountryList") }),
        )
        .route(
            &format!("{base}/countries/{{name}}"),
            get(|State(s): State<AppState>, Path(name): Path<String>| async move { one(&read(&s).countries, &name) }),
        )
        .route(
            &format!("{base}/regions"),
            get(|State(s): State<AppState>| async move { list(&read(&s).regions, "RegionList") }),
        )
        .route(
            &format!("{base}/regions/{{name}}"),
            get(|State(s): State<AppState>, Path(name): Path<String>| async move { one(&read(&s).regions, &name) }),
        )
        .route(
            &format!("{base}/patientindexes"),
            get(|State(s): State<AppState>| async move { list(&read(&s).indexes, "PatientIndexList") }),
        )
        .route(
            &format!("{base}/patientindexes/{{name}}"),
            get(|State(s): State<AppState>, Path(name): Path<String>| async move { one(&read(&s).indexes, &name) }),
        )
        .with_state(AppState { store, ctx, resync })
}

fn read(state: &AppState) -> std::sync::RwLockReadGuard<'_, Store> {
    state.store.read().expect("store lock")
}

/// The reconcilers' metrics and the workloads' (they run in this process), as one exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    meridian_shared::metrics::response(state.ctx.metrics.render_with_workloads())
}

fn list<K: Managed>(objects: &Objects<K>, kind: &str) -> Response {
    let items: Vec<&K> = objects.entries.values().map(|e| &e.object).collect();
    Json(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": kind,
        "metadata": {},
        "items": items,
    }))
    .into_response()
}

fn one<K: Managed>(objects: &Objects<K>, name: &str) -> Response {
    match objects.entries.get(name) {
        Some(entry) => Json(&entry.object).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("{}.{GROUP} \"{name}\" not found", K::PLURAL),
                "reason": "NotFound",
                "details": {"name": name, "group": GROUP, "kind": K::PLURAL},
                "code": 404,
            })),
        )
            .into_response(),
    }
}
