//! `POST /{cc}/v1/fhir` with a `transaction` Bundle: every entry is checked first, then all
//! are written in one database transaction, or none is. `urn:uuid:` full URLs of created
//! entries are replaced by the ids the server assigns wherever the Bundle refers to them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Service;
use super::caller::Caller;
use super::interactions::{if_none_exist, type_named};
use super::response::{self, read_body, store_failure};
use crate::fhir::{Issue, IssueType, ResourceType, resource_type_of};
use crate::search;
use crate::store::{self, Stored};
use crate::validate::{self, Checked};

/// Most entries a transaction may hold.
pub const MAX_ENTRIES: usize = 1000;

/// One entry's planned work.
enum Work {
    Create {
        checked: Checked,
        id: Uuid,
        condition: Option<String>,
    },
    Update {
        checked: Checked,
        id: Uuid,
        if_match: Option<i64>,
    },
    Delete {
        resource_type: ResourceType,
        id: Uuid,
    },
}

/// Replaces references to the Bundle's own full URLs with what the server assigned.
fn resolve_references(value: &mut Value, assigned: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                if key == "reference"
                    && let Some(target) = inner.as_str().and_then(|r| assigned.get(r))
                {
                    *inner = Value::String(target.clone());
                } else {
                    resolve_references(inner, assigned);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| resolve_references(i, assigned)),
        _ => {}
    }
}

/// Points what the Bundle still has to write at `found` instead of `planned`: a conditional
/// create matched an existing resource, so the references to its entry's full URL (already
/// replaced by the id planned for it) name the resource it matched.
fn retarget(work: &mut [Option<Work>], resource_type: ResourceType, planned: Uuid, found: Uuid) {
    let moved = HashMap::from([(format!("{resource_type}/{planned}"), format!("{resource_type}/{found}"))]);
    for item in work.iter_mut().flatten() {
        let (Work::Create { checked, .. } | Work::Update { checked, .. }) = item else {
            continue;
        };
        resolve_references(&mut checked.body, &moved);
        for target in &mut checked.references {
            if target.resource_type == resource_type && target.id == planned {
                target.id = found;
            }
        }
        if resource_type == ResourceType::Patient && checked.indexed.patient == Some(planned) {
            checked.indexed.patient = Some(found);
        }
    }
}

fn entry_issue(i: usize, issue: Issue) -> Issue {
    issue.within(&format!("Bundle.entry[{i}]"))
}

/// An issue with entry `i`'s resource: `Observation.code` becomes
/// `Bundle.entry[i].resource.code`; an issue naming no element names the entry.
fn resource_issue(i: usize, mut issue: Issue) -> Issue {
    let Some(expression) = issue.expression.take() else {
        return entry_issue(i, issue);
    };
    let inner = match expression.split_once('.') {
        Some((head, rest)) if ResourceType::parse(head).is_some() => Some(rest.to_string()),
        None if ResourceType::parse(&expression).is_some() => None,
        _ => Some(expression),
    };
    issue.expression = Some(match inner {
        Some(inner) => format!("Bundle.entry[{i}].resource.{inner}"),
        None => format!("Bundle.entry[{i}].resource"),
    });
    issue
}

fn bad_entry(i: usize, what: &str, message: String) -> Issue {
    Issue::invalid(IssueType::Invalid, message, None).within(&format!("Bundle.entry[{i}].{what}"))
}

/// Plans every entry, refusing the whole Bundle at the first entry that is wrong.
fn plan(bundle: &Value, caller: &Caller) -> Result<Vec<Work>, Issue> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(Issue::invalid(
            IssueType::Invalid,
            "POST to the base takes a Bundle",
            Some("Bundle.resourceType".into()),
        ));
    }
    match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => {}
        other => {
            return Err(Issue::invalid(
                IssueType::NotSupported,
                format!("only transaction Bundles are processed here, not {other:?}"),
                Some("Bundle.type".into()),
            ));
        }
    }
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.len() > MAX_ENTRIES {
        return Err(Issue::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            format!(
                "a transaction holds at most {MAX_ENTRIES} entries; this one has {}",
                entries.len()
            ),
        )
        .at("Bundle.entry"));
    }
    // Ids for created entries first, so that every entry can refer to every other.
    let mut assigned = HashMap::new();
    let mut ids = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let method = entry
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = Uuid::new_v4();
        if method == "POST"
            && let (Some(full_url), Some(kind)) = (
                entry.get("fullUrl").and_then(Value::as_str),
                entry.pointer("/resource/resourceType").and_then(Value::as_str),
            )
        {
            if !full_url.starts_with("urn:uuid:") {
                return Err(bad_entry(
                    i,
                    "fullUrl",
                    format!("a created entry's fullUrl is urn:uuid:..., not {full_url:?}"),
                ));
            }
            if assigned.insert(full_url.to_string(), format!("{kind}/{id}")).is_some() {
                return Err(bad_entry(i, "fullUrl", format!("{full_url} is used by two entries")));
            }
        }
        ids.push(id);
    }
    let today = chrono::Utc::now().date_naive();
    let mut work = Vec::with_capacity(entries.len());
    for (i, (mut entry, id)) in entries.into_iter().zip(ids).enumerate() {
        let method = entry
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let url = entry
            .pointer("/request/url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (type_part, id_part) = match url.split_once('/') {
            Some((t, rest)) => (t.to_string(), Some(rest.to_string())),
            None => (url.split('?').next().unwrap_or_default().to_string(), None),
        };
        let resource_type = type_named(&type_part).map_err(|e| bad_entry(i, "request.url", e.diagnostics))?;
        let mut body = entry.get_mut("resource").map(Value::take);
        if let Some(body) = body.as_mut() {
            resolve_references(body, &assigned);
        }
        let checked = |body: Option<Value>| -> Result<Checked, Issue> {
            let body = body.ok_or_else(|| bad_entry(i, "resource", "this entry needs its resource".into()))?;
            resource_type_of(&body, Some(resource_type)).map_err(|e| resource_issue(i, e))?;
            validate::check(resource_type, body, &caller.country.rules, today).map_err(|e| resource_issue(i, e))
        };
        let existing_id = |part: Option<String>| -> Result<Uuid, Issue> {
            part.and_then(|p| p.parse().ok()).ok_or_else(|| {
                bad_entry(
                    i,
                    "request.url",
                    format!("{url:?} does not name a {resource_type} by id"),
                )
            })
        };
        work.push(match method.as_str() {
            "POST" => {
                let condition = entry
                    .pointer("/request/ifNoneExist")
                    .and_then(Value::as_str)
                    .map(|c| {
                        if_none_exist(c).ok_or_else(|| {
                            bad_entry(
                                i,
                                "request.ifNoneExist",
                                format!("{c:?}: only identifier=system|value is supported"),
                            )
                        })
                    })
                    .transpose()?;
                Work::Create {
                    checked: checked(body)?,
                    id,
                    condition,
                }
            }
            "PUT" => {
                let id = existing_id(id_part)?;
                let body_id = body.as_ref().and_then(|b| b.get("id")).and_then(Value::as_str);
                if body_id != Some(id.to_string().as_str()) {
                    return Err(bad_entry(
                        i,
                        "resource.id",
                        "the resource's id must be the one request.url names".into(),
                    ));
                }
                let if_match = entry
                    .pointer("/request/ifMatch")
                    .and_then(Value::as_str)
                    .map(|v| v.trim_start_matches("W/").trim_matches('"').parse::<i64>())
                    .transpose()
                    .map_err(|_| bad_entry(i, "request.ifMatch", "ifMatch must be an ETag such as W/\"1\"".into()))?;
                Work::Update {
                    checked: checked(body)?,
                    id,
                    if_match,
                }
            }
            "DELETE" => Work::Delete {
                resource_type,
                id: existing_id(id_part)?,
            },
            other => {
                return Err(bad_entry(
                    i,
                    "request.method",
                    format!("{other:?}: a transaction entry is POST, PUT or DELETE"),
                ));
            }
        });
    }
    Ok(work)
}

/// FHIR's processing order: deletes, creates (Patients before what refers to them), updates;
/// answers keep the Bundle's order.
fn order(work: &[Work]) -> Vec<usize> {
    let rank = |w: &Work| match w {
        Work::Delete { .. } => (0, 0),
        Work::Create { checked, .. } => (1, checked.resource_type as u8),
        Work::Update { .. } => (2, 0),
    };
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|&i| rank(&work[i]));
    order
}

pub async fn transaction(
    State(service): State<Arc<Service>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Issue> {
    caller.require_clinician()?;
    let bundle = read_body(&headers, body)?;
    let work = plan(&bundle, &caller)?;
    let scope = caller.scope();
    let fail = |i: usize| {
        let correlation_id = caller.correlation_id;
        move |e| resource_issue(i, store_failure(e, correlation_id))
    };
    // The vault role: a transaction may create a Patient and what refers to it.
    let mut conn = super::connection(&service.vault, caller.correlation_id).await?;
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| store_failure(e.into(), caller.correlation_id))?;
    let mut results: Vec<Option<(Stored, &'static str)>> = vec![None; work.len()];
    let sequence = order(&work);
    let mut work: Vec<Option<Work>> = work.into_iter().map(Some).collect();
    for i in sequence {
        let result = match work[i].take().expect("each entry once") {
            Work::Create { checked, id, condition } => {
                let resource_type = checked.resource_type;
                let mut existing = None;
                if let Some(condition) = &condition {
                    store::lock_condition(
                        &mut tx,
                        scope.country(),
                        resource_type,
                        &search::condition_key(&scope, resource_type, condition),
                    )
                    .await
                    .map_err(fail(i))?;
                    let found = search::by_identifier(&mut tx, &scope, resource_type, condition)
                        .await
                        .map_err(fail(i))?;
                    if found.len() > 1 {
                        return Err(entry_issue(
                            i,
                            Issue::new(
                                StatusCode::PRECONDITION_FAILED,
                                IssueType::Duplicate,
                                "ifNoneExist matches more than one resource",
                            ),
                        ));
                    }
                    existing = found.first().copied();
                    if let Some(found) = existing {
                        retarget(&mut work, resource_type, id, found);
                    }
                }
                match existing {
                    Some(found) => (
                        store::read(&mut tx, &scope, resource_type, found)
                            .await
                            .map_err(fail(i))?,
                        "200 OK",
                    ),
                    None => (
                        store::create(&mut tx, &scope, checked, Some(id))
                            .await
                            .map_err(fail(i))?,
                        "201 Created",
                    ),
                }
            }
            Work::Update { checked, id, if_match } => {
                let expected = match if_match {
                    Some(v) => v,
                    None => current(&mut tx, &scope, checked.resource_type, id)
                        .await
                        .map_err(fail(i))?,
                };
                (
                    store::update(&mut tx, &scope, checked, id, expected)
                        .await
                        .map_err(fail(i))?,
                    "200 OK",
                )
            }
            Work::Delete { resource_type, id } => {
                store::delete(&mut tx, &scope, resource_type, id)
                    .await
                    .map_err(fail(i))?;
                let stored = Stored {
                    resource_type,
                    id,
                    version: 0,
                    last_updated: chrono::Utc::now(),
                    body: None,
                };
                (stored, "204 No Content")
            }
        };
        results[i] = Some(result);
    }
    tx.commit()
        .await
        .map_err(|e| store_failure(e.into(), caller.correlation_id))?;
    let entries = results
        .into_iter()
        .map(|r| {
            let (stored, status) = r.expect("every entry processed");
            let mut response = json!({"status": status});
            if stored.body.is_some() {
                response["location"] = json!(stored.location());
                response["etag"] = json!(stored.etag());
                response["lastModified"] = json!(crate::dates::instant(stored.last_updated));
            }
            let mut entry = json!({"response": response});
            if let Some(body) = stored.body {
                entry["fullUrl"] = json!(format!("{}/{}/{}", caller.base, stored.resource_type, stored.id));
                entry["resource"] = body;
            }
            entry
        })
        .collect();
    Ok(response::fhir(
        StatusCode::OK,
        &response::bundle("transaction-response", Vec::new(), entries),
    ))
}

/// The current version of a resource, for a transaction's PUT without ifMatch.
async fn current(
    tx: &mut sqlx::PgConnection,
    scope: &store::Scope<'_>,
    resource_type: ResourceType,
    id: Uuid,
) -> store::Result<i64> {
    let table = if resource_type == ResourceType::Patient {
        "SELECT version FROM vault.patients WHERE country_code = $1 AND client_id = $2"
    } else {
        "SELECT version FROM fhir_resources WHERE country_code = $1 AND id = $2 AND resource_type = $3"
    };
    let version: Option<i64> = sqlx::query_scalar(table)
        .bind(scope.country())
        .bind(id)
        .bind(resource_type.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    version.ok_or_else(|| Issue::not_found(format!("{resource_type}/{id} is not known here")).into())
}
