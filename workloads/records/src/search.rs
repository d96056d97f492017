//! FHIR search over the stored resources: the parameters each type supports (listed in the
//! CapabilityStatement from the same table), prefixes on dates and quantities, tokens with
//! and without a system, `_count`, `_sort`, `_include`, and pages that follow each other by
//! key (the last sort key and id seen), so that a next link stays correct while resources
//! are added or removed. Patients are searched through the vault's keyed hashes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::dates;
use crate::fhir::{Issue, IssueType, ResourceType};
use crate::store::{self, Scope, Stored};
use crate::vault;

/// Entries per page unless `_count` says otherwise, and the most it may say.
pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 200;

/// A search parameter: its name, FHIR type and what it matches.
pub struct Param {
    pub name: &'static str,
    pub kind: &'static str,
    pub documentation: &'static str,
}

const fn param(name: &'static str, kind: &'static str, documentation: &'static str) -> Param {
    Param {
        name,
        kind,
        documentation,
    }
}

const PATIENT_PARAMS: &[Param] = &[
    param(
        "identifier",
        "token",
        "An identifier: system|value or value (national IDs normalised)",
    ),
    param("family", "string", "Start of a family name (case and accents ignored)"),
    param("given", "string", "Start of a given name (case and accents ignored)"),
    param("name", "string", "Start of any part of a name"),
    param(
        "birthdate",
        "date",
        "Birth date at year, month or day precision (eq only: it is encrypted)",
    ),
    param("gender", "token", "male | female | other | unknown"),
];

const ENCOUNTER_PARAMS: &[Param] = &[
    param("patient", "reference", "The patient: Patient/<id> or <id>"),
    param("subject", "reference", "The patient: Patient/<id> or <id>"),
    param(
        "date",
        "date",
        "The period, with prefixes eq, ne, lt, gt, le, ge, sa, eb",
    ),
    param("status", "token", "The encounter's status"),
    param("class", "token", "The class: code or system|code"),
    param("identifier", "token", "An identifier: system|value or value"),
];

const OBSERVATION_PARAMS: &[Param] = &[
    param("patient", "reference", "The patient: Patient/<id> or <id>"),
    param("subject", "reference", "The patient: Patient/<id> or <id>"),
    param("code", "token", "The code: system|code, |code or code"),
    param("category", "token", "A category: system|code or code"),
    param(
        "date",
        "date",
        "The effective time, with prefixes eq, ne, lt, gt, le, ge, sa, eb",
    ),
    param("value-quantity", "quantity", "[prefix]number[|system|code]"),
    param("status", "token", "The observation's status"),
    param("identifier", "token", "An identifier: system|value or value"),
];

const MEDICATION_REQUEST_PARAMS: &[Param] = &[
    param("patient", "reference", "The patient: Patient/<id> or <id>"),
    param("subject", "reference", "The patient: Patient/<id> or <id>"),
    param("status", "token", "The prescription's status"),
    param("intent", "token", "The prescription's intent"),
    param("authoredon", "date", "When it was written, with prefixes"),
    param("code", "token", "The medication's code"),
    param("identifier", "token", "An identifier: system|value or value"),
];

const CONSENT_PARAMS: &[Param] = &[
    param("patient", "reference", "The patient: Patient/<id> or <id>"),
    param("status", "token", "The consent's status"),
    param(
        "scope",
        "token",
        "The scope: system|code or code (e.g. patient-privacy)",
    ),
    param("category", "token", "A category: system|code or code"),
    param("date", "date", "When it was given, with prefixes"),
    param("identifier", "token", "An identifier: system|value or value"),
];

/// The parameters of each resource type, besides `_id`, `_count`, `_sort` and `_include`.
pub fn params(resource_type: ResourceType) -> &'static [Param] {
    match resource_type {
        ResourceType::Patient => PATIENT_PARAMS,
        ResourceType::Encounter => ENCOUNTER_PARAMS,
        ResourceType::Observation => OBSERVATION_PARAMS,
        ResourceType::MedicationRequest => MEDICATION_REQUEST_PARAMS,
        ResourceType::Consent => CONSENT_PARAMS,
    }
}

/// `_include` values each type supports.
pub fn includes(resource_type: ResourceType) -> &'static [&'static str] {
    match resource_type {
        ResourceType::Patient => &[],
        ResourceType::Encounter => &["Encounter:patient", "Encounter:subject"],
        ResourceType::Observation => &["Observation:patient", "Observation:subject"],
        ResourceType::MedicationRequest => &["MedicationRequest:patient", "MedicationRequest:subject"],
        ResourceType::Consent => &["Consent:patient"],
    }
}

/// `_sort` keys each type supports (each also descending with `-`).
pub fn sorts(resource_type: ResourceType) -> &'static [&'static str] {
    match resource_type {
        ResourceType::Patient => &["_id"],
        ResourceType::MedicationRequest => &["_id", "_lastUpdated", "authoredon"],
        _ => &["_id", "_lastUpdated", "date"],
    }
}

/// What to order by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortKey {
    Id,
    LastUpdated,
    Date,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::Id => "id::text",
            SortKey::LastUpdated => "to_char(last_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')",
            SortKey::Date => "COALESCE(to_char(date_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '')",
        }
    }
}

/// A parsed search.
#[derive(Debug)]
pub struct Search {
    pub resource_type: ResourceType,
    conditions: Vec<Condition>,
    pub count: i64,
    sort: SortKey,
    descending: bool,
    pub include_patients: bool,
    after: Option<(String, Uuid)>,
    /// The parameters as given, without the cursor: for self and next links.
    pub echo: Vec<(String, String)>,
    /// Parameters ignored under `Prefer: handling=lenient`.
    pub ignored: Vec<String>,
}

#[derive(Debug)]
enum Condition {
    Ids(Vec<Uuid>),
    Patient(Vec<Uuid>),
    /// Column `=` one of.
    Equals(&'static str, Vec<String>),
    /// Array column overlaps.
    Tokens(&'static str, Vec<String>),
    /// Vault hashes: any of them.
    Hashes(Vec<String>),
    Date(Vec<(String, DateTime<Utc>, DateTime<Utc>)>),
    Quantity(Vec<(String, f64, f64)>),
    /// Matches nothing (a reference that cannot be a patient here).
    Nothing,
}

fn bad(message: String, parameter: &str) -> Issue {
    Issue::new(http::StatusCode::BAD_REQUEST, IssueType::Invalid, message).at(parameter.to_string())
}

/// Splits `ge2024-01-01` into its prefix and value.
fn prefixed(value: &str) -> (&str, &str) {
    for prefix in ["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"] {
        if let Some(rest) = value.strip_prefix(prefix)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        {
            return (prefix, rest);
        }
    }
    ("eq", value)
}

fn reference_ids(values: &[&str]) -> Condition {
    let ids: Vec<Uuid> = values
        .iter()
        .filter_map(|v| v.strip_prefix("Patient/").unwrap_or(v).parse().ok())
        .collect();
    if ids.is_empty() {
        Condition::Nothing
    } else {
        Condition::Patient(ids)
    }
}

/// Parses the parameters of a search of `resource_type` for `scope`'s country.
pub fn parse(
    resource_type: ResourceType,
    given: &[(String, String)],
    lenient: bool,
    scope: &Scope<'_>,
) -> Result<Search, Issue> {
    let mut search = Search {
        resource_type,
        conditions: Vec::new(),
        count: DEFAULT_COUNT,
        sort: SortKey::Id,
        descending: false,
        include_patients: false,
        after: None,
        echo: Vec::new(),
        ignored: Vec::new(),
    };
    for (name, value) in given {
        if name == "_cursor" {
            let decoded = URL_SAFE_NO_PAD
                .decode(value)
                .ok()
                .and_then(|b| serde_json::from_slice::<(String, Uuid)>(&b).ok())
                .ok_or_else(|| bad("the paging cursor is not one this server gave".into(), "_cursor"))?;
            search.after = Some(decoded);
            continue;
        }
        if name == "_format" && value.contains("json") {
            continue;
        }
        search.echo.push((name.clone(), value.clone()));
        let values: Vec<&str> = value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            continue;
        }
        let known = params(resource_type).iter().find(|p| p.name == name);
        let condition = match (name.as_str(), known) {
            ("_count", _) => {
                let count: i64 = value
                    .parse()
                    .ok()
                    .filter(|c| *c >= 0)
                    .ok_or_else(|| bad(format!("_count {value:?} is not a whole number"), "_count"))?;
                search.count = count.min(MAX_COUNT);
                continue;
            }
            ("_sort", _) => {
                let (descending, key) = value.strip_prefix('-').map_or((false, value.as_str()), |k| (true, k));
                if !sorts(resource_type).contains(&key) {
                    return Err(bad(
                        format!(
                            "{resource_type} sorts by {} (each also descending with -)",
                            sorts(resource_type).join(", ")
                        ),
                        "_sort",
                    ));
                }
                search.sort = match key {
                    "_lastUpdated" => SortKey::LastUpdated,
                    "date" | "authoredon" => SortKey::Date,
                    _ => SortKey::Id,
                };
                search.descending = descending;
                continue;
            }
            ("_include", _) => {
                if !includes(resource_type).contains(&value.as_str()) {
                    if lenient {
                        // The self link names only what was applied.
                        search.echo.pop();
                        search.ignored.push(format!("_include={value}"));
                        continue;
                    }
                    return Err(bad(
                        format!("_include={value} is not supported for {resource_type}"),
                        "_include",
                    ));
                }
                search.include_patients = true;
                continue;
            }
            ("_id", _) => Condition::Ids(values.iter().filter_map(|v| v.parse().ok()).collect()),
            (_, None) => {
                if lenient {
                    search.echo.pop();
                    search.ignored.push(name.clone());
                    continue;
                }
                let names: Vec<&str> = params(resource_type).iter().map(|p| p.name).collect();
                return Err(bad(
                    format!(
                        "unknown search parameter {name:?} for {resource_type}; known: _id, _count, _sort, _include, {} \
                         (send Prefer: handling=lenient to have unknown parameters ignored)",
                        names.join(", ")
                    ),
                    name,
                ));
            }
            (_, Some(p)) if resource_type == ResourceType::Patient => patient_condition(p.name, &values, scope)?,
            ("patient" | "subject", _) => reference_ids(&values),
            ("status", _) => Condition::Equals("status", values.iter().map(|v| v.to_string()).collect()),
            ("intent", _) => Condition::Equals("intent", values.iter().map(|v| v.to_string()).collect()),
            ("class", _) => Condition::Equals(
                "class",
                values
                    .iter()
                    .map(|v| v.rsplit('|').next().unwrap_or(v).to_string())
                    .collect(),
            ),
            ("code" | "scope", _) | ("category", _) | ("identifier", _) => {
                let column = match name.as_str() {
                    "code" | "scope" => "codes",
                    "category" => "categories",
                    _ => "identifiers",
                };
                for v in &values {
                    if v.ends_with('|') {
                        return Err(bad(
                            format!("{name}={v}: a system without a code is not supported"),
                            name,
                        ));
                    }
                }
                Condition::Tokens(column, values.iter().map(|v| v.to_string()).collect())
            }
            ("date" | "authoredon", _) => {
                let mut ranges = Vec::new();
                for v in &values {
                    let (prefix, date) = prefixed(v);
                    let (lo, hi) = dates::range(date)
                        .ok_or_else(|| bad(format!("{name}={v}: {date:?} is not a FHIR date or dateTime"), name))?;
                    if prefix == "ap" {
                        return Err(bad(format!("{name}={v}: the prefix ap is not supported"), name));
                    }
                    ranges.push((prefix.to_string(), lo, hi));
                }
                Condition::Date(ranges)
            }
            ("value-quantity", _) => {
                let mut ranges = Vec::new();
                for v in &values {
                    let number_part = v.split('|').next().unwrap_or_default();
                    let (prefix, number) = prefixed(number_part);
                    let parsed: f64 = number
                        .parse()
                        .ok()
                        .filter(|n: &f64| n.is_finite())
                        .ok_or_else(|| bad(format!("value-quantity={v}: {number:?} is not a number"), name))?;
                    if prefix == "ap" || prefix == "sa" || prefix == "eb" {
                        return Err(bad(
                            format!("value-quantity={v}: the prefix {prefix} is not supported"),
                            name,
                        ));
                    }
                    // eq matches within the precision given: 72 is [71.5, 72.5), 72.0 is [71.95, 72.05).
                    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
                    let half = 0.5 * 10f64.powi(-decimals);
                    ranges.push((prefix.to_string(), parsed - half, parsed + half));
                }
                Condition::Quantity(ranges)
            }
            (other, Some(_)) => {
                return Err(Issue::new(
                    http::StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!("{other} is not searchable here"),
                ));
            }
        };
        search.conditions.push(condition);
    }
    Ok(search)
}

/// A Patient parameter as the vault hashes to look for.
fn patient_condition(name: &str, values: &[&str], scope: &Scope<'_>) -> Result<Condition, Issue> {
    let mut hashes = Vec::new();
    for value in values {
        match name {
            "family" | "given" | "name" => {
                let folded = vault::fold(value);
                let prefix: String = folded.chars().take(40).collect();
                hashes.extend(vault::lookup(scope.ring, name, &prefix));
            }
            "birthdate" => {
                let (prefix, date) = prefixed(value);
                if prefix != "eq" {
                    return Err(bad(
                        format!("birthdate={value}: only eq is supported, birth dates are kept encrypted"),
                        "birthdate",
                    ));
                }
                if !dates::is_date(date) {
                    return Err(bad(
                        format!("birthdate={value}: {date:?} is not a FHIR date"),
                        "birthdate",
                    ));
                }
                hashes.extend(vault::lookup(scope.ring, "birthdate", date));
            }
            "gender" => hashes.extend(vault::lookup(scope.ring, "gender", value)),
            "identifier" => {
                let (system, id) = match value.split_once('|') {
                    Some((system, id)) => (Some(system), id),
                    None => (None, *value),
                };
                let national = system.is_some() && system == scope.rules.national_id_system.as_deref();
                let id = if national || system.is_none() {
                    crate::national_id::normalise(id)
                } else {
                    id.to_string()
                };
                let term = match system {
                    Some(system) => format!("{system}|{id}"),
                    None => id.clone(),
                };
                hashes.extend(vault::lookup(scope.ring, "identifier", &term));
                if system.is_none() && id != *value {
                    hashes.extend(vault::lookup(scope.ring, "identifier", value));
                }
            }
            _ => unreachable!("the Patient table lists its parameters"),
        }
    }
    Ok(Condition::Hashes(hashes))
}

/// One page of results.
pub struct Page {
    pub matches: Vec<Stored>,
    pub included: Vec<Stored>,
    /// Patients that matched (or were to be included) whose vault rows do not open: left
    /// out, and named in the Bundle's outcome.
    pub unreadable: Vec<Uuid>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// `column` equal to one of `values`: `= $n` for one value, `= ANY($n)` for more. With an
/// array parameter PostgreSQL cannot tell how many values it holds, costs a plan for it
/// once for all values as if it held many, and so plans the search again on every execution;
/// the common search for one patient keeps its plan.
fn push_any<T>(q: &mut QueryBuilder<Postgres>, column: &str, values: &[T])
where
    T: Clone + for<'t> sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
    Vec<T>: for<'t> sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
{
    match values {
        [one] => q.push(column).push(" = ").push_bind(one.clone()),
        _ => q.push(column).push(" = ANY(").push_bind(values.to_vec()).push(")"),
    };
}

fn push_conditions(q: &mut QueryBuilder<Postgres>, search: &Search) {
    for condition in &search.conditions {
        q.push(" AND ");
        match condition {
            Condition::Ids(ids) => {
                let column = if search.resource_type == ResourceType::Patient {
                    "client_id"
                } else {
                    "id"
                };
                push_any(q, column, ids);
            }
            Condition::Patient(ids) => push_any(q, "patient", ids),
            Condition::Equals(column, values) => push_any(q, column, values),
            Condition::Tokens(column, values) => {
                q.push(*column).push(" && ").push_bind(values.clone());
            }
            Condition::Hashes(hashes) => {
                q.push("search && ").push_bind(hashes.clone());
            }
            Condition::Nothing => {
                q.push("false");
            }
            Condition::Date(ranges) => {
                q.push("(date_start IS NOT NULL OR date_end IS NOT NULL) AND (");
                for (i, (prefix, lo, hi)) in ranges.iter().enumerate() {
                    if i > 0 {
                        q.push(" OR ");
                    }
                    let start = "COALESCE(date_start, '-infinity')";
                    let end = "COALESCE(date_end, 'infinity')";
                    match prefix.as_str() {
                        "ne" => q
                            .push(format!("NOT ({start} >= "))
                            .push_bind(*lo)
                            .push(format!(" AND {end} <= "))
                            .push_bind(*hi)
                            .push(")"),
                        "lt" => q.push(format!("{start} < ")).push_bind(*lo),
                        "gt" => q.push(format!("{end} > ")).push_bind(*hi),
                        "le" => q.push(format!("{start} < ")).push_bind(*hi),
                        "ge" => q.push(format!("{end} > ")).push_bind(*lo),
                        "sa" => q.push(format!("{start} >= ")).push_bind(*hi),
                        "eb" => q.push(format!("{end} <= ")).push_bind(*lo),
                        _ => q
                            .push(format!("({start} >= "))
                            .push_bind(*lo)
                            .push(format!(" AND {end} <= "))
                            .push_bind(*hi)
                            .push(")"),
                    };
                }
                q.push(")");
            }
            Condition::Quantity(ranges) => {
                q.push("quantity IS NOT NULL AND (");
                for (i, (prefix, lo, hi)) in ranges.iter().enumerate() {
                    if i > 0 {
                        q.push(" OR ");
                    }
                    let mid = (lo + hi) / 2.0;
                    match prefix.as_str() {
                        "ne" => q
                            .push("NOT (quantity >= ")
                            .push_bind(*lo)
                            .push("::float8 AND quantity < ")
                            .push_bind(*hi)
                            .push("::float8)"),
                        "lt" => q.push("quantity < ").push_bind(mid).push("::float8"),
                        "gt" => q.push("quantity > ").push_bind(mid).push("::float8"),
                        "le" => q.push("quantity <= ").push_bind(mid).push("::float8"),
                        "ge" => q.push("quantity >= ").push_bind(mid).push("::float8"),
                        _ => q
                            .push("(quantity >= ")
                            .push_bind(*lo)
                            .push("::float8 AND quantity < ")
                            .push_bind(*hi)
                            .push("::float8)"),
                    };
                }
                q.push(")");
            }
        }
    }
}

/// Runs `search` in `scope`'s country; `only_patient` limits it to one patient's records
/// (a Patient reading their own). Audited: one record naming what was returned.
pub async fn run(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    search: &Search,
    only_patient: Option<Uuid>,
) -> store::Result<Page> {
    let patient_table = search.resource_type == ResourceType::Patient;
    let (key, id_column) = if patient_table {
        ("client_id::text".to_string(), "client_id")
    } else {
        (search.sort.column().to_string(), "id")
    };
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    if patient_table {
        q.push(format!(
            "{key}, client_id, version, last_updated, NULL::jsonb, key_id, sealed FROM vault.patients \
             WHERE country_code = "
        ));
        q.push(scope.country_sql()?);
    } else {
        q.push(format!(
            "{key}, id, version, last_updated, content, NULL::text, NULL::bytea FROM fhir_resources \
             WHERE country_code = "
        ));
        q.push(scope.country_sql()?);
        q.push(" AND resource_type = ").push_bind(search.resource_type.as_str());
    }
    q.push(" AND deleted_at IS NULL");
    if let Some(own) = only_patient {
        q.push(if patient_table {
            " AND client_id = "
        } else {
            " AND patient = "
        })
        .push_bind(own);
    }
    push_conditions(&mut q, search);
    let (cmp, order) = if search.descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some((after_key, after_id)) = &search.after {
        q.push(format!(" AND ({key}, {id_column}) {cmp} ("))
            .push_bind(after_key.clone())
            .push(", ")
            .push_bind(*after_id)
            .push(")");
    }
    // By position: the sort key's expression and the id column share a name.
    q.push(format!(" ORDER BY 1 {order}, 2 {order} LIMIT "))
        .push_bind(search.count + 1);
    type Row = (
        String,
        Uuid,
        i64,
        DateTime<Utc>,
        Option<Value>,
        Option<String>,
        Option<Vec<u8>>,
    );
    let mut rows: Vec<Row> = q.build_query_as().fetch_all(&mut *conn).await?;
    let next = if rows.len() as i64 > search.count {
        rows.truncate(search.count as usize);
        rows.last()
            .map(|(k, id, ..)| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(k, id)).expect("serializes")))
    } else {
        None
    };
    let mut matches = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for (_, id, version, last_updated, content, key_id, sealed) in rows {
        let body = match (content, key_id, sealed) {
            (Some(content), _, _) => content,
            (None, Some(key_id), Some(sealed)) => match store::open_row(scope.ring, id, version, &key_id, &sealed) {
                Ok((_, body)) => body,
                Err(e) => {
                    tracing::error!(error = %e, correlation_id = %scope.correlation_id, "a vault row does not open: left out of a search");
                    unreadable.push(id);
                    continue;
                }
            },
            _ => continue,
        };
        matches.push(Stored {
            resource_type: search.resource_type,
            id,
            version,
            last_updated,
            body: Some(body),
        });
    }
    let mut included = Vec::new();
    if search.include_patients {
        let mut ids: Vec<Uuid> = matches
            .iter()
            .filter_map(|m| m.body.as_ref())
            .filter_map(|b| {
                b.get("subject")
                    .and_then(|s| s.get("reference"))
                    .and_then(Value::as_str)
            })
            .filter_map(|r| r.strip_prefix("Patient/").and_then(|id| id.parse().ok()))
            .collect();
        ids.sort();
        ids.dedup();
        let (opened, not_opened) = patients(conn, scope, &ids).await?;
        included = opened;
        unreadable.extend(not_opened);
    }
    let returned: Vec<String> = matches
        .iter()
        .chain(&included)
        .map(|m| format!("{}/{}", m.resource_type, m.id))
        .collect();
    let action = format!("{}.search", search.resource_type.as_str().to_ascii_lowercase());
    store::audit_read(scope, &action, &returned.join(",")).await?;
    Ok(Page {
        matches,
        included,
        unreadable,
        next,
    })
}

/// The live Patients among `ids`, opened, and those whose vault rows do not open.
pub async fn patients(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    ids: &[Uuid],
) -> store::Result<(Vec<Stored>, Vec<Uuid>)> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    type Row = (Uuid, i64, DateTime<Utc>, String, Vec<u8>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT client_id, version, last_updated, key_id, sealed FROM vault.patients
          WHERE country_code = $1 AND client_id = ANY($2) AND deleted_at IS NULL ORDER BY client_id",
    )
    .bind(scope.country())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let (mut opened, mut unreadable) = (Vec::new(), Vec::new());
    for (id, version, last_updated, key_id, sealed) in rows {
        match store::open_row(scope.ring, id, version, &key_id, &sealed) {
            Ok((_, body)) => opened.push(Stored {
                resource_type: ResourceType::Patient,
                id,
                version,
                last_updated,
                body: Some(body),
            }),
            Err(e) => {
                tracing::error!(error = %e, correlation_id = %scope.correlation_id, "a vault row does not open: left out of a search");
                unreadable.push(id);
            }
        }
    }
    Ok((opened, unreadable))
}

/// Every live clinical resource of patient `id`, oldest first by date.
pub async fn everything(conn: &mut PgConnection, scope: &Scope<'_>, id: Uuid) -> store::Result<Vec<Stored>> {
    let rows: Vec<(String, Uuid, i64, DateTime<Utc>, Value)> = sqlx::query_as(
        "SELECT resource_type, id, version, last_updated, content FROM fhir_resources
          WHERE country_code = $1 AND patient = $2 AND deleted_at IS NULL
          ORDER BY date_start NULLS LAST, resource_type, id",
    )
    .bind(scope.country())
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, id, version, last_updated, body)| {
            Some(Stored {
                resource_type: ResourceType::parse(&t)?,
                id,
                version,
                last_updated,
                body: Some(body),
            })
        })
        .collect())
}

/// What a conditional create on `condition` locks ([`store::lock_condition`]): a Patient's
/// national ID (or an identifier without a system) normalised as [`by_identifier`] matches
/// it, so that requests spelling one ID differently wait for each other too.
pub fn condition_key(scope: &Scope<'_>, resource_type: ResourceType, condition: &str) -> String {
    if resource_type != ResourceType::Patient {
        return condition.to_string();
    }
    match condition.split_once('|') {
        Some((system, value)) if Some(system) == scope.rules.national_id_system.as_deref() => {
            format!("{system}|{}", crate::national_id::normalise(value))
        }
        Some(_) => condition.to_string(),
        None => crate::national_id::normalise(condition),
    }
}

/// Resources of `resource_type` whose identifier is `condition` (`system|value`), for a
/// conditional create.
pub async fn by_identifier(
    conn: &mut PgConnection,
    scope: &Scope<'_>,
    resource_type: ResourceType,
    condition: &str,
) -> store::Result<Vec<Uuid>> {
    let given = [("identifier".to_string(), condition.to_string())];
    let search = parse(resource_type, &given, false, scope)?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("");
    if resource_type == ResourceType::Patient {
        q.push("SELECT client_id FROM vault.patients WHERE country_code = ");
        q.push(scope.country_sql()?);
    } else {
        q.push("SELECT id FROM fhir_resources WHERE country_code = ");
        q.push(scope.country_sql()?);
        q.push(" AND resource_type = ").push_bind(resource_type.as_str());
    }
    q.push(" AND deleted_at IS NULL");
    push_conditions(&mut q, &search);
    q.push(" LIMIT 2");
    Ok(q.build_query_scalar().fetch_all(&mut *conn).await?)
}
