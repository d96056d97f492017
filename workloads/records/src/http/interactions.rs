//! The RESTful interactions: create (plain and conditional), read, vread, update (with
//! `If-Match`), delete, instance history, search (GET and POST) and `Patient/$everything`.
//! A clinician's Patient search by another country's national ID, and `$everything` of a
//! patient holding one, reach that country too (see [`crate::crossborder::lookup`]).

use std::sync::Arc;

use axum::Form;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::caller::{Access, Caller};
use super::response::{self, bundle, full_url, lenient, read_body, store_failure, wants_minimal};
use super::{Service, connection};
use crate::crossborder::lookup::{self, Abroad};
use crate::fhir::{Issue, IssueType, ResourceType, resource_type_of};
use crate::search;
use crate::store::{self, Stored};
use crate::validate;

/// The resource type a URL names.
pub fn type_named(name: &str) -> Result<ResourceType, Issue> {
    ResourceType::parse(name).ok_or_else(|| {
        Issue::new(
            StatusCode::NOT_FOUND,
            IssueType::NotSupported,
            format!("{name} is not served here (Patient, Encounter, Observation, MedicationRequest, Consent)"),
        )
    })
}

fn id_named(resource_type: ResourceType, id: &str) -> Result<Uuid, Issue> {
    id.parse()
        .map_err(|_| Issue::not_found(format!("{resource_type}/{id} is not known here")))
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Whether a Patient caller may see `stored`: their own Patient, or a record about them.
fn is_own(stored: &Stored, own: Option<Uuid>) -> bool {
    let Some(own) = own else { return false };
    if stored.resource_type == ResourceType::Patient {
        return stored.id == own;
    }
    // Clinical resources name their patient as `subject`; a Consent as `patient`.
    let about = |element: &str| {
        stored
            .body
            .as_ref()
            .and_then(|b| b.get(element))
            .and_then(|s| s.get("reference"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let own = format!("Patient/{own}");
    about("subject").or_else(|| about("patient")).as_deref() == Some(own.as_str())
}

/// Whether resource `id` is about the patient `own`, whether or not it is deleted: a
/// Patient caller learns nothing, not even a deletion, of what is not theirs.
async fn is_theirs(
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    resource_type: ResourceType,
    id: Uuid,
    own: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let Some(own) = own else { return Ok(false) };
    if resource_type == ResourceType::Patient {
        return Ok(id == own);
    }
    let patient: Option<Option<Uuid>> = sqlx::query_scalar(
        "SELECT patient FROM fhir_resources WHERE country_code = $1 AND resource_type = $2 AND id = $3",
    )
    .bind(&caller.country.rules.code)
    .bind(resource_type.as_str())
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(patient.flatten() == Some(own))
}

/// `POST /{cc}/v1/fhir/{type}`: create, or with `If-None-Exist` a conditional create.
pub async fn create(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Issue> {
    let resource_type = type_named(&name)?;
    caller.require_clinician()?;
    let body = read_body(&headers, body)?;
    resource_type_of(&body, Some(resource_type))?;
    let checked = validate::check(resource_type, body, &caller.country.rules, today())?;
    let condition = match headers.get("if-none-exist").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(if_none_exist(v).ok_or_else(|| {
            Issue::bad_request(format!(
                "If-None-Exist {v:?}: only identifier=system|value is supported"
            ))
        })?),
        Some(Err(_)) => return Err(Issue::bad_request("If-None-Exist is not text")),
    };
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    if condition.is_none() {
        // A plain create is one write statement (the resource, its history, its outbox
        // event, its audit record and the reference check together): a transaction around
        // it would add two round trips and no guarantee (the registry's unique account
        // subject guards a Patient's account).
        let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
        let stored = store::create(&mut conn, &scope, checked, None).await.map_err(fail)?;
        return Ok(response::resource(
            &stored,
            StatusCode::CREATED,
            &caller.base,
            wants_minimal(&headers),
        ));
    }
    let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
    let mut tx = conn.begin().await.map_err(|e| fail(e.into()))?;
    if let Some(condition) = &condition {
        store::lock_condition(
            &mut tx,
            scope.country(),
            resource_type,
            &search::condition_key(&scope, resource_type, condition),
        )
        .await
        .map_err(fail)?;
        let found = search::by_identifier(&mut tx, &scope, resource_type, condition)
            .await
            .map_err(fail)?;
        match found.as_slice() {
            [] => {}
            [one] => {
                let stored = store::read(&mut tx, &scope, resource_type, *one).await.map_err(fail)?;
                tx.commit().await.map_err(|e| fail(e.into()))?;
                return Ok(response::resource(
                    &stored,
                    StatusCode::OK,
                    &caller.base,
                    wants_minimal(&headers),
                ));
            }
            _ => {
                return Err(Issue::new(
                    StatusCode::PRECONDITION_FAILED,
                    IssueType::Duplicate,
                    format!("If-None-Exist: more than one {resource_type} matches {condition}"),
                ));
            }
        }
    }
    let stored = store::create(&mut tx, &scope, checked, None).await.map_err(fail)?;
    tx.commit().await.map_err(|e| fail(e.into()))?;
    Ok(response::resource(
        &stored,
        StatusCode::CREATED,
        &caller.base,
        wants_minimal(&headers),
    ))
}

/// The `system|value` of a conditional create's `identifier=system|value` (as a URL query:
/// percent-encoded), or None when it is not one: a condition that names no identifier would
/// match any resource.
pub fn if_none_exist(value: &str) -> Option<String> {
    value
        .strip_prefix("identifier=")
        .map(percent_decode)
        .filter(|c| c.contains('|') && !c.ends_with('|'))
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// `GET /{cc}/v1/fhir/{type}/{id}`.
pub async fn read(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Issue> {
    let resource_type = type_named(&name)?;
    if resource_type == ResourceType::Patient && id == "$everything" {
        return everything_abroad(&service, &caller, &headers, &params).await;
    }
    let id = id_named(resource_type, &id)?;
    let stored = read_allowed(&service, &caller, resource_type, id, None).await?;
    Ok(response::resource(&stored, StatusCode::OK, &caller.base, false))
}

/// Reads (or with `version`, vreads) what the caller may see, audited; a Patient asking
/// for what is not theirs gets 404, as if it did not exist, and no audit record of a read
/// that did not happen.
async fn read_allowed(
    service: &Service,
    caller: &Caller,
    resource_type: ResourceType,
    id: Uuid,
    version: Option<i64>,
) -> Result<Stored, Issue> {
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    if caller.access == Access::Clinician && version.is_none() {
        // The hot path: no transaction to open and commit. The read's audit record joins
        // the read log's next batch and has committed before the resource is served; a
        // clinician's read is never taken back.
        let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
        return store::read(&mut conn, &scope, resource_type, id).await.map_err(fail);
    }
    let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
    let mut tx = conn.begin().await.map_err(|e| fail(e.into()))?;
    let own = match caller.access {
        Access::Clinician => None,
        Access::Patient => Some(caller.own_client_id(&mut tx).await.map_err(|e| fail(e.into()))?),
    };
    if let Some(own) = own
        && !is_theirs(&mut tx, caller, resource_type, id, own)
            .await
            .map_err(|e| fail(e.into()))?
    {
        return Err(Issue::not_found(format!("{resource_type}/{id} is not known here")));
    }
    let stored = match version {
        None => store::read(&mut tx, &scope, resource_type, id).await,
        Some(v) => store::history(&mut tx, &scope, resource_type, id, Some(v))
            .await
            .map(|mut versions| versions.remove(0)),
    };
    let stored = stored.map_err(fail)?;
    if let Some(own) = own
        && stored.body.is_some()
        && !is_own(&stored, own)
    {
        return Err(Issue::not_found(format!("{resource_type}/{id} is not known here")));
    }
    if stored.body.is_none() {
        tx.commit().await.map_err(|e| fail(e.into()))?;
        return Err(Issue::new(
            StatusCode::GONE,
            IssueType::Deleted,
            format!("{resource_type}/{id} version {} is a deletion", stored.version),
        ));
    }
    tx.commit().await.map_err(|e| fail(e.into()))?;
    Ok(stored)
}

/// `GET /{cc}/v1/fhir/{type}/{id}/_history/{version}`.
pub async fn vread(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name, id, version)): Path<(String, String, String, String)>,
) -> Result<Response, Issue> {
    let resource_type = type_named(&name)?;
    let id = id_named(resource_type, &id)?;
    let version: i64 = version
        .parse()
        .map_err(|_| Issue::not_found(format!("{resource_type}/{id} has no version {version:?}")))?;
    let stored = read_allowed(&service, &caller, resource_type, id, Some(version)).await?;
    Ok(response::resource(&stored, StatusCode::OK, &caller.base, false))
}

/// The version an `If-Match` header names: `W/"3"` (or `"3"`).
fn if_match(headers: &HeaderMap) -> Result<i64, Issue> {
    let Some(value) = headers.get("if-match") else {
        return Err(Issue::new(
            StatusCode::PRECONDITION_REQUIRED,
            IssueType::Required,
            "an update needs If-Match with the version it changes, e.g. If-Match: W/\"1\"",
        ));
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Issue::bad_request("If-Match must be an ETag this server gave, e.g. W/\"1\""))
}

/// `PUT /{cc}/v1/fhir/{type}/{id}` with `If-Match`.
pub async fn update(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name, id_text)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Issue> {
    let resource_type = type_named(&name)?;
    caller.require_clinician()?;
    let id = id_named(resource_type, &id_text)?;
    let expected = if_match(&headers)?;
    let body = read_body(&headers, body)?;
    resource_type_of(&body, Some(resource_type))?;
    match body.get("id").and_then(Value::as_str) {
        Some(given) if given == id_text => {}
        Some(given) => {
            return Err(Issue::new(
                StatusCode::BAD_REQUEST,
                IssueType::Invalid,
                format!("the body's id {given:?} is not the URL's {id_text:?}"),
            )
            .at(format!("{resource_type}.id")));
        }
        None => {
            return Err(Issue::new(
                StatusCode::BAD_REQUEST,
                IssueType::Required,
                "an update carries the resource's id",
            )
            .at(format!("{resource_type}.id")));
        }
    }
    let checked = validate::check(resource_type, body, &caller.country.rules, today())?;
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    // One statement whose version guard serialises concurrent updates: no transaction.
    let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
    let stored = store::update(&mut conn, &scope, checked, id, expected)
        .await
        .map_err(fail)?;
    Ok(response::resource(
        &stored,
        StatusCode::OK,
        &caller.base,
        wants_minimal(&headers),
    ))
}

/// `DELETE /{cc}/v1/fhir/{type}/{id}`: logical; the rows are kept for the retention period.
pub async fn delete(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name, id)): Path<(String, String, String)>,
) -> Result<Response, Issue> {
    let resource_type = type_named(&name)?;
    caller.require_clinician()?;
    let id = id_named(resource_type, &id)?;
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
    let mut tx = conn.begin().await.map_err(|e| fail(e.into()))?;
    store::delete(&mut tx, &scope, resource_type, id).await.map_err(fail)?;
    tx.commit().await.map_err(|e| fail(e.into()))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

/// `GET /{cc}/v1/fhir/{type}/{id}/_history` and `GET /{cc}/v1/fhir/Patient/{id}/$everything`.
pub async fn instance_operation(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name, id, operation)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Issue> {
    let resource_type = type_named(&name)?;
    let id = id_named(resource_type, &id)?;
    match operation.as_str() {
        "_history" => history(&service, &caller, resource_type, id).await,
        "$everything" if resource_type == ResourceType::Patient => everything(&service, &caller, id, &headers).await,
        other => Err(Issue::not_found(format!(
            "{other} is not an operation on {resource_type} here (see metadata)"
        ))),
    }
}

async fn history(service: &Service, caller: &Caller, resource_type: ResourceType, id: Uuid) -> Result<Response, Issue> {
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    let mut conn = connection(service.pool(resource_type), caller.correlation_id).await?;
    let mut tx = conn.begin().await.map_err(|e| fail(e.into()))?;
    if caller.access == Access::Patient {
        // A patient sees the history of what is theirs now (deleted or not).
        let own = caller.own_client_id(&mut tx).await.map_err(|e| fail(e.into()))?;
        if !is_theirs(&mut tx, caller, resource_type, id, own)
            .await
            .map_err(|e| fail(e.into()))?
        {
            return Err(Issue::not_found(format!("{resource_type}/{id} is not known here")));
        }
    }
    let versions = store::history(&mut tx, &scope, resource_type, id, None)
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(|e| fail(e.into()))?;
    let entries = versions
        .iter()
        .map(|v| {
            let url = format!("{resource_type}/{id}");
            let mut entry = json!({"fullUrl": full_url(&caller.base, v)});
            let (method, status) = match (&v.body, v.version) {
                (None, _) => ("DELETE", "204 No Content"),
                (Some(_), 1) => ("POST", "201 Created"),
                (Some(_), _) => ("PUT", "200 OK"),
            };
            if let Some(body) = &v.body {
                entry["resource"] = body.clone();
            }
            entry["request"] =
                json!({"method": method, "url": if method == "POST" { resource_type.to_string() } else { url }});
            entry["response"] =
                json!({"status": status, "etag": v.etag(), "lastModified": crate::dates::instant(v.last_updated)});
            entry
        })
        .collect();
    let self_link = format!("{}/{resource_type}/{id}/_history", caller.base);
    let mut bundle = bundle("history", vec![("self", self_link)], entries);
    bundle["total"] = json!(versions.len());
    Ok(response::fhir(StatusCode::OK, &bundle))
}

async fn everything(service: &Service, caller: &Caller, id: Uuid, headers: &HeaderMap) -> Result<Response, Issue> {
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    // The vault role reads the Patient and the clinical rows in one transaction.
    let mut conn = connection(&service.vault, caller.correlation_id).await?;
    let mut tx = conn.begin().await.map_err(|e| fail(e.into()))?;
    if caller.access == Access::Patient {
        let own = caller.own_client_id(&mut tx).await.map_err(|e| fail(e.into()))?;
        if own != Some(id) {
            return Err(Issue::not_found(format!("Patient/{id} is not known here")));
        }
    }
    let patient = store::read(&mut tx, &scope, ResourceType::Patient, id)
        .await
        .map_err(fail)?;
    let records = search::everything(&mut tx, &scope, id).await.map_err(fail)?;
    store::audit_read(&scope, "patient.everything", &format!("Patient/{id}"))
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(|e| fail(e.into()))?;
    let mut entries: Vec<Value> = std::iter::once(&patient)
        .chain(&records)
        .map(|s| json!({"fullUrl": full_url(&caller.base, s), "resource": s.body, "search": {"mode": "match"}}))
        .collect();
    // A clinician sees, in the same timeline, what other countries hold of the patient under
    // the national IDs of theirs the patient carries.
    if caller.access == Access::Clinician {
        let identifiers: Vec<(String, String)> = patient
            .body
            .as_ref()
            .and_then(|b| b["identifier"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|i| {
                Some((
                    "identifier".to_string(),
                    format!("{}|{}", i["system"].as_str()?, i["value"].as_str()?),
                ))
            })
            .collect();
        let mut asked = std::collections::BTreeSet::new();
        for param in &identifiers {
            let Some(foreign) = lookup::foreign_id(service, caller, std::slice::from_ref(param)) else {
                continue;
            };
            if !asked.insert(foreign.rules.code.clone()) {
                continue;
            }
            // The patient's own records stand whatever the other country answers: a refusal
            // there is said beside them, not instead of them.
            if let Err(refused) = merge_abroad(service, caller, headers, &foreign, "everything", &mut entries).await {
                let mut outcome = refused.outcome();
                outcome["issue"][0]["severity"] = json!("warning");
                entries.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
            }
        }
    }
    Ok(everything_bundle(
        format!("{}/Patient/{id}/$everything", caller.base),
        entries,
    ))
}

/// A `$everything` answer: a searchset whose total counts the matches (not the outcomes).
fn everything_bundle(self_link: String, entries: Vec<Value>) -> Response {
    let total = entries.iter().filter(|e| e["search"]["mode"] == "match").count();
    let mut bundle = bundle("searchset", vec![("self", self_link)], entries);
    bundle["total"] = json!(total);
    response::fhir(StatusCode::OK, &bundle)
}

/// Adds what the other country holds of the patient with national ID `foreign` to `entries`,
/// labelling every entry with its country and putting them in timeline order; when that
/// country cannot be reached, an OperationOutcome entry says the answer is partial.
async fn merge_abroad(
    service: &Service,
    caller: &Caller,
    headers: &HeaderMap,
    foreign: &lookup::ForeignId,
    scope: &str,
    entries: &mut Vec<Value>,
) -> Result<(), Issue> {
    let abroad = lookup::find(service, caller, foreign, scope, &purpose(headers)).await?;
    merge(caller, entries, abroad, scope == "everything");
    Ok(())
}

/// The purpose of use the request gives (`X-Meridian-Purpose-Of-Use`), `TREAT` by default.
fn purpose(headers: &HeaderMap) -> String {
    headers
        .get(lookup::PURPOSE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("TREAT")
        .to_ascii_uppercase()
}

/// Labels `entries` with this country and adds what came from abroad (or the outcome that
/// says it did not come); with `timeline`, sorts them into one.
fn merge(caller: &Caller, entries: &mut Vec<Value>, abroad: Abroad, timeline: bool) {
    for entry in entries.iter_mut() {
        lookup::label(&mut entry["resource"], &caller.country.rules.code);
    }
    match abroad {
        Abroad::Found(found) => entries.extend(found),
        Abroad::NoMatch => {}
        Abroad::Unreachable(outcome) => entries.push(outcome),
    }
    if timeline {
        lookup::timeline(entries);
    }
}

/// `GET /{cc}/v1/fhir/Patient/$everything?identifier=<system>|<value>`, with the national
/// ID of another country: the patients of this country holding that ID, with their
/// records, and what the other country holds, in one timeline.
async fn everything_abroad(
    service: &Service,
    caller: &Caller,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Response, Issue> {
    let Some(foreign) = lookup::foreign_id(service, caller, params) else {
        return Err(Issue::bad_request(
            "Patient/$everything takes identifier=<system>|<value>, a national ID of another country; \
             for a patient of this country, use Patient/<id>/$everything",
        )
        .at("identifier"));
    };
    let scope = caller.scope();
    let fail = |e| store_failure(e, caller.correlation_id);
    let mut entries = Vec::new();
    if caller.access == Access::Clinician {
        let wanted = vec![(
            "identifier".to_string(),
            format!("{}|{}", foreign.system, foreign.value),
        )];
        let parsed = search::parse(ResourceType::Patient, &wanted, false, &scope)?;
        let mut conn = connection(&service.vault, caller.correlation_id).await?;
        let mut tx = conn.begin().await.map_err(|e| fail(e.into()))?;
        let page = search::run(&mut tx, &scope, &parsed, None).await.map_err(fail)?;
        for patient in &page.matches {
            entries.push(json!({"fullUrl": full_url(&caller.base, patient), "resource": patient.body, "search": {"mode": "match"}}));
            for record in search::everything(&mut tx, &scope, patient.id).await.map_err(fail)? {
                entries.push(json!({"fullUrl": full_url(&caller.base, &record), "resource": record.body, "search": {"mode": "match"}}));
            }
        }
        tx.commit().await.map_err(|e| fail(e.into()))?;
    }
    merge_abroad(service, caller, headers, &foreign, "everything", &mut entries).await?;
    let query = url_query(&[("identifier".into(), format!("{}|{}", foreign.system, foreign.value))]);
    Ok(everything_bundle(
        format!("{}/Patient/$everything{query}", caller.base),
        entries,
    ))
}

/// `GET /{cc}/v1/fhir/{type}?...`.
pub async fn search_get(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, Issue> {
    search(&service, &caller, &name, &headers, params).await
}

/// `POST /{cc}/v1/fhir/{type}/_search` with form parameters (and any in the URL).
pub async fn search_post(
    State(service): State<Arc<Service>>,
    caller: Caller,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(mut params): Query<Vec<(String, String)>>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Result<Response, Issue> {
    let Form(body) = form.map_err(|e| {
        Issue::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!(
                "POST _search takes application/x-www-form-urlencoded parameters: {}",
                e.body_text()
            ),
        )
    })?;
    params.extend(body);
    search(&service, &caller, &name, &headers, params).await
}

async fn search(
    service: &Service,
    caller: &Caller,
    name: &str,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
) -> Result<Response, Issue> {
    let resource_type = type_named(name)?;
    let scope = caller.scope();
    let parsed = search::parse(resource_type, &params, lenient(headers), &scope)?;
    let fail = |e| store_failure(e, caller.correlation_id);
    let pool = if parsed.include_patients {
        &service.vault
    } else {
        service.pool(resource_type)
    };
    // No transaction: the search and its audit record are two statements, the record
    // written before anything is served.
    let mut conn = connection(pool, caller.correlation_id).await?;
    let only = match caller.access {
        Access::Clinician => None,
        // A patient without a record here has nothing to find: a client ID nobody has.
        Access::Patient => Some(
            caller
                .own_client_id(&mut conn)
                .await
                .map_err(|e| fail(e.into()))?
                .unwrap_or(Uuid::nil()),
        ),
    };
    // A clinician's Patient search by another country's national ID asks that country too,
    // while this one is searched.
    let foreign = (resource_type == ResourceType::Patient && caller.access == Access::Clinician)
        .then(|| lookup::foreign_id(service, caller, &params))
        .flatten();
    let abroad = async {
        match &foreign {
            Some(id) => Some(lookup::find(service, caller, id, "patient", &purpose(headers)).await),
            None => None,
        }
    };
    let (page, abroad) = tokio::join!(search::run(&mut conn, &scope, &parsed, only), abroad);
    let page = page.map_err(fail)?;
    let abroad = abroad.transpose()?;
    let query: String = url_query(&parsed.echo);
    let self_link = format!("{}/{resource_type}{query}", caller.base);
    let mut links = vec![("self", self_link.clone())];
    if let Some(cursor) = &page.next {
        let separator = if query.is_empty() { '?' } else { '&' };
        links.push(("next", format!("{self_link}{separator}_cursor={cursor}")));
    }
    let mut entries: Vec<Value> = page
        .matches
        .iter()
        .map(|s| json!({"fullUrl": full_url(&caller.base, s), "resource": s.body, "search": {"mode": "match"}}))
        .collect();
    entries.extend(
        page.included
            .iter()
            .filter(|p| only.is_none() || Some(p.id) == only)
            .map(|s| json!({"fullUrl": full_url(&caller.base, s), "resource": s.body, "search": {"mode": "include"}})),
    );
    if let Some(abroad) = abroad {
        merge(caller, &mut entries, abroad, false);
    }
    if !parsed.ignored.is_empty() {
        let outcome = Issue::new(
            StatusCode::OK,
            IssueType::NotSupported,
            format!("ignored under handling=lenient: {}", parsed.ignored.join(", ")),
        )
        .outcome();
        let mut outcome = outcome;
        outcome["issue"][0]["severity"] = json!("warning");
        entries.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
    }
    if !page.unreadable.is_empty() {
        // One broken record does not hide the others: it is left out and named, so that a
        // clinician can replace it (an update does not need to open it).
        let names: Vec<String> = page.unreadable.iter().map(|id| format!("Patient/{id}")).collect();
        let outcome = Issue::new(
            StatusCode::OK,
            IssueType::Exception,
            format!(
                "left out: {} cannot be opened (changed or moved in the vault); the operators have been told",
                names.join(", ")
            ),
        )
        .outcome();
        entries.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
    }
    Ok(response::fhir(StatusCode::OK, &bundle("searchset", links, entries)))
}

/// `?a=1&b=2`, encoded, or empty.
fn url_query(params: &[(String, String)]) -> String {
    if params.is_empty() {
        return String::new();
    }
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let pairs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", pairs.join("&"))
}
