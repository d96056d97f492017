//! Deny by default: every interaction of the records API tried by every role, each answer
//! asserted. A Practitioner of the country reads and writes everything; a Patient reads,
//! searches and reads the history of their own records only (another's answers 404 as if it
//! did not exist, writes 403); ClinicAdmin, PracticeManager and SystemAdmin see no clinical
//! data (403); without a token 401 with `WWW-Authenticate`; a Practitioner of another
//! country 403. Only the CapabilityStatement is open to all. `$disclose`, for other Regions'
//! records services, refuses every user's token (401: not one for that audience). Refusals
//! write nothing.

mod support;

use axum::http::{Method, StatusCode};
use meridian_shared::auth::Role;
use serde_json::{Value, json};
use support::{Harness, Reply, resources};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Practitioner,
    PatientOwn,
    PatientOther,
    ClinicAdmin,
    PracticeManager,
    SystemAdmin,
    NoToken,
    PractitionerFr,
}

const WHO: [Who; 8] = [
    Who::Practitioner,
    Who::PatientOwn,
    Who::PatientOther,
    Who::ClinicAdmin,
    Who::PracticeManager,
    Who::SystemAdmin,
    Who::NoToken,
    Who::PractitionerFr,
];

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Practitioner => "Practitioner (DE)",
            Who::PatientOwn => "Patient (own)",
            Who::PatientOther => "Patient (another's)",
            Who::ClinicAdmin => "ClinicAdmin",
            Who::PracticeManager => "PracticeManager",
            Who::SystemAdmin => "SystemAdmin",
            Who::NoToken => "no token",
            Who::PractitionerFr => "Practitioner (FR only)",
        }
    }

    fn token(self, h: &Harness) -> Option<String> {
        let patient = || h.token("patient-anna", &[Role::Patient], &["DE"]);
        match self {
            Who::Practitioner => Some(h.clinician("DE")),
            Who::PatientOwn | Who::PatientOther => Some(patient()),
            Who::ClinicAdmin => Some(h.token("admin-1", &[Role::ClinicAdmin], &["DE"])),
            Who::PracticeManager => Some(h.token("manager-1", &[Role::PracticeManager], &["DE"])),
            Who::SystemAdmin => Some(h.token("ops-1", &[Role::SystemAdmin], &["*"])),
            Who::NoToken => None,
            Who::PractitionerFr => Some(h.token("dr-dubois", &[Role::Practitioner], &["FR"])),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interaction {
    Metadata,
    Create,
    ConditionalCreate,
    Read,
    Vread,
    Update,
    Delete,
    History,
    SearchGet,
    SearchPost,
    Everything,
    Transaction,
    Disclose,
}

const INTERACTIONS: [Interaction; 13] = [
    Interaction::Metadata,
    Interaction::Create,
    Interaction::ConditionalCreate,
    Interaction::Read,
    Interaction::Vread,
    Interaction::Update,
    Interaction::Delete,
    Interaction::History,
    Interaction::SearchGet,
    Interaction::SearchPost,
    Interaction::Everything,
    Interaction::Transaction,
    Interaction::Disclose,
];

impl Interaction {
    fn label(self) -> &'static str {
        match self {
            Interaction::Metadata => "metadata",
            Interaction::Create => "create",
            Interaction::ConditionalCreate => "cond-create",
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
            Interaction::History => "history",
            Interaction::SearchGet => "search GET",
            Interaction::SearchPost => "search POST",
            Interaction::Everything => "$everything",
            Interaction::Transaction => "transaction",
            Interaction::Disclose => "$disclose",
        }
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            Interaction::Create
                | Interaction::ConditionalCreate
                | Interaction::Update
                | Interaction::Delete
                | Interaction::Transaction
        )
    }

    fn is_search(self) -> bool {
        matches!(self, Interaction::SearchGet | Interaction::SearchPost)
    }
}

/// The answer deny-by-default requires.
fn expected(who: Who, interaction: Interaction) -> StatusCode {
    if interaction == Interaction::Metadata {
        return StatusCode::OK;
    }
    if interaction == Interaction::Disclose {
        return StatusCode::UNAUTHORIZED;
    }
    match who {
        Who::Practitioner => match interaction {
            Interaction::Create | Interaction::ConditionalCreate => StatusCode::CREATED,
            Interaction::Delete => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        },
        Who::PatientOwn if interaction.is_write() => StatusCode::FORBIDDEN,
        Who::PatientOwn => StatusCode::OK,
        Who::PatientOther if interaction.is_write() => StatusCode::FORBIDDEN,
        // Searches answer, with nothing of another's in them.
        Who::PatientOther if interaction.is_search() => StatusCode::OK,
        Who::PatientOther => StatusCode::NOT_FOUND,
        Who::NoToken => StatusCode::UNAUTHORIZED,
        Who::ClinicAdmin | Who::PracticeManager | Who::SystemAdmin | Who::PractitionerFr => StatusCode::FORBIDDEN,
    }
}

struct World {
    /// The patient whose account `patient-anna` holds, and one of their observations.
    own: (String, String),
    /// Another patient of DE, and one of theirs.
    other: (String, String),
}

async fn created(reply: Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{:#}", reply.body);
    reply.id()
}

fn observation(patient: &str) -> Value {
    resources::observation(patient, "8867-4", 72.0, "/min", "2026-11-02T09:10:00+01:00")
}

async fn setup(h: &Harness) -> World {
    let dr = h.clinician("DE");
    let mut anna = resources::patient("A123456789", "Müller");
    anna["extension"] = json!([{"url": meridian_records::validate::ACCOUNT_EXTENSION, "valueString": "patient-anna"}]);
    let own = created(h.post("/de/v1/fhir/Patient", &dr, &anna).await).await;
    let own_obs = created(h.post("/de/v1/fhir/Observation", &dr, &observation(&own)).await).await;
    let other = created(
        h.post("/de/v1/fhir/Patient", &dr, &resources::patient("B987654321", "Schmidt"))
            .await,
    )
    .await;
    let other_obs = created(h.post("/de/v1/fhir/Observation", &dr, &observation(&other)).await).await;
    World {
        own: (own, own_obs),
        other: (other, other_obs),
    }
}

/// Makes the request of `interaction` as `who`, on the records `who` aims at. Whatever the
/// request needs beforehand (a current version, an observation to delete) is done first,
/// as a clinician, and is not part of what is compared.
async fn attempt(
    h: &Harness,
    world: &World,
    who: Who,
    interaction: Interaction,
    n: usize,
) -> (Reply, Vec<(String, i64)>, Vec<(String, i64)>) {
    let dr = h.clinician("DE");
    let token = who.token(h);
    let token = token.as_deref();
    let (patient, obs) = if who == Who::PatientOther {
        &world.other
    } else {
        &world.own
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut body: Option<Vec<u8>> = None;
    let (method, path) = match interaction {
        Interaction::Metadata => (Method::GET, "/de/v1/fhir/metadata".to_string()),
        Interaction::Create => {
            body = Some(serde_json::to_vec(&observation(patient)).unwrap());
            (Method::POST, "/de/v1/fhir/Observation".to_string())
        }
        Interaction::ConditionalCreate => {
            let mut o = observation(patient);
            let value = format!("roles-{n}");
            o["identifier"] = json!([{"system": "urn:meridian:test", "value": value}]);
            body = Some(serde_json::to_vec(&o).unwrap());
            headers.push(("if-none-exist".into(), format!("identifier=urn:meridian:test|{value}")));
            (Method::POST, "/de/v1/fhir/Observation".to_string())
        }
        Interaction::Read => (Method::GET, format!("/de/v1/fhir/Observation/{obs}")),
        Interaction::Vread => (Method::GET, format!("/de/v1/fhir/Observation/{obs}/_history/1")),
        Interaction::Update => {
            let current = h.get(&format!("/de/v1/fhir/Observation/{obs}"), &dr).await;
            assert_eq!(current.status, StatusCode::OK);
            let mut changed = current.body.clone();
            changed["valueQuantity"]["value"] = json!(70 + n);
            body = Some(serde_json::to_vec(&changed).unwrap());
            headers.push(("if-match".into(), current.header("etag").unwrap().to_string()));
            (Method::PUT, format!("/de/v1/fhir/Observation/{obs}"))
        }
        Interaction::Delete => {
            let doomed = created(h.post("/de/v1/fhir/Observation", &dr, &observation(patient)).await).await;
            (Method::DELETE, format!("/de/v1/fhir/Observation/{doomed}"))
        }
        Interaction::History => (Method::GET, format!("/de/v1/fhir/Observation/{obs}/_history")),
        Interaction::SearchGet => (Method::GET, format!("/de/v1/fhir/Observation?patient={patient}")),
        Interaction::SearchPost => {
            headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
            body = Some(format!("patient={patient}").into_bytes());
            (Method::POST, "/de/v1/fhir/Observation/_search".to_string())
        }
        Interaction::Everything => (Method::GET, format!("/de/v1/fhir/Patient/{patient}/$everything")),
        Interaction::Transaction => {
            let bundle = json!({
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{
                    "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                    "resource": observation(patient),
                    "request": {"method": "POST", "url": "Observation"},
                }],
            });
            body = Some(serde_json::to_vec(&bundle).unwrap());
            (Method::POST, "/de/v1/fhir".to_string())
        }
        Interaction::Disclose => {
            headers.push(("x-meridian-requesting-country".into(), "FR".into()));
            headers.push(("x-meridian-purpose-of-use".into(), "TREAT".into()));
            if let Some(token) = token {
                headers.push(("x-meridian-clinician".into(), token.to_string()));
            }
            (
                Method::GET,
                format!("/de/v1/fhir/$disclose?patient={patient}&scope=everything"),
            )
        }
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let before = h.counts().await;
    let reply = h.send_bytes(method, &path, token, &headers, body).await;
    let after = h.counts().await;
    (reply, before, after)
}

/// The subjects of a searchset's matches.
fn subjects(reply: &Reply) -> Vec<String> {
    reply
        .entries()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            e["resource"]["subject"]["reference"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// What else must hold of an answer besides its status; None when it does.
fn check(
    world: &World,
    who: Who,
    interaction: Interaction,
    reply: &Reply,
    before: &[(String, i64)],
    after: &[(String, i64)],
) -> Option<String> {
    let status = reply.status;
    if status.is_client_error() {
        if reply.body["resourceType"] != "OperationOutcome" {
            return Some(format!("a refusal without an OperationOutcome: {:#}", reply.body));
        }
        let code = reply.body["issue"][0]["code"].as_str().unwrap_or_default();
        let wanted = match status {
            StatusCode::UNAUTHORIZED => "login",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not-found",
            _ => code,
        };
        if code != wanted {
            return Some(format!("issue.code {code:?}, wanted {wanted:?}"));
        }
        if status == StatusCode::UNAUTHORIZED && reply.header("www-authenticate") != Some("Bearer") {
            return Some(format!("401 without WWW-Authenticate: Bearer: {:?}", reply.headers));
        }
        if before != after {
            return Some(format!("a refusal wrote: {before:?} -> {after:?}"));
        }
    }
    if status.is_success() && interaction.is_search() {
        let found = subjects(reply);
        let own = format!("Patient/{}", world.own.0);
        match who {
            Who::PatientOther if !found.is_empty() => return Some(format!("another's records found: {found:?}")),
            Who::Practitioner | Who::PatientOwn if found.is_empty() || found.iter().any(|s| *s != own) => {
                return Some(format!("wanted the own patient's observations only, found {found:?}"));
            }
            _ => {}
        }
    }
    if status == StatusCode::OK && interaction == Interaction::Everything {
        let first = &reply.entries()[0]["resource"];
        if first["id"] != world.own.0.as_str() {
            return Some(format!("$everything of the wrong patient: {first:#}"));
        }
    }
    None
}

#[tokio::test]
async fn every_interaction_by_every_role() {
    let h = Harness::start(&["DE", "FR"]).await;
    let world = setup(&h).await;
    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut n = 0;
    for who in WHO {
        let mut row = Vec::new();
        for interaction in INTERACTIONS {
            n += 1;
            let (reply, before, after) = attempt(&h, &world, who, interaction, n).await;
            let wanted = expected(who, interaction);
            let mut cell = reply.status.as_u16().to_string();
            if reply.status != wanted {
                cell.push_str(&format!("≠{}", wanted.as_u16()));
                failures.push(format!(
                    "{} {}: {} (wanted {wanted}): {}",
                    who.label(),
                    interaction.label(),
                    reply.status,
                    reply.body
                ));
            } else if let Some(why) = check(&world, who, interaction, &reply, &before, &after) {
                cell.push('!');
                failures.push(format!("{} {}: {why}", who.label(), interaction.label()));
            }
            row.push(cell);
        }
        table.push((who.label(), row));
    }
    let mut out = format!("{:<24}", "role \\ interaction");
    for interaction in INTERACTIONS {
        out.push_str(&format!("{:>13}", interaction.label()));
    }
    out.push('\n');
    for (label, row) in &table {
        out.push_str(&format!("{label:<24}"));
        for cell in row {
            out.push_str(&format!("{cell:>13}"));
        }
        out.push('\n');
    }
    println!("{out}");
    assert!(failures.is_empty(), "\n{out}\n{}", failures.join("\n"));
}

/// The CapabilityStatement is open to all, for the countries served here only.
#[tokio::test]
async fn metadata_is_served_for_the_countries_here_only() {
    let h = Harness::start(&["DE"]).await;
    let reply = h.send(Method::GET, "/de/v1/fhir/metadata", None, &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["resourceType"], "CapabilityStatement");
    for cc in ["fr", "xx", "DE"] {
        let reply = h
            .send(Method::GET, &format!("/{cc}/v1/fhir/metadata"), None, &[], None)
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{cc}: {:#}", reply.body);
        assert_eq!(reply.body["issue"][0]["code"], "not-found");
    }
}

/// A patient asking for another's deleted record learns nothing: 404 as for any record not
/// theirs, not 410; their own deleted record is 410.
#[tokio::test]
async fn a_patient_does_not_learn_that_anothers_record_was_deleted() {
    let h = Harness::start(&["DE"]).await;
    let world = setup(&h).await;
    let dr = h.clinician("DE");
    let anna = h.token("patient-anna", &[Role::Patient], &["DE"]);
    for (patient, _) in [&world.own, &world.other] {
        let doomed = created(h.post("/de/v1/fhir/Observation", &dr, &observation(patient)).await).await;
        let gone = h.delete(&format!("/de/v1/fhir/Observation/{doomed}"), &dr).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
        let wanted = if *patient == world.own.0 {
            StatusCode::GONE
        } else {
            StatusCode::NOT_FOUND
        };
        let before = h.counts().await;
        for path in [
            format!("/de/v1/fhir/Observation/{doomed}"),
            format!("/de/v1/fhir/Observation/{doomed}/_history"),
        ] {
            let reply = h.get(&path, &anna).await;
            let wanted = if path.ends_with("_history") && wanted == StatusCode::GONE {
                // The history of their own deleted record is theirs to read.
                StatusCode::OK
            } else {
                wanted
            };
            assert_eq!(reply.status, wanted, "{path}: {:#}", reply.body);
        }
        if *patient != world.own.0 {
            assert_eq!(before, h.counts().await, "no audit record of reads that did not happen");
        }
    }
    // Another patient's Patient resource, deleted.
    let gone = h.delete(&format!("/de/v1/fhir/Patient/{}", world.other.0), &dr).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let reply = h.get(&format!("/de/v1/fhir/Patient/{}", world.other.0), &anna).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{:#}", reply.body);
}
