//! What a resource must be, beyond its structure, before it is stored: required bindings,
//! one value per choice element, valid dates, LOINC and SNOMED CT codes with valid check
//! digits, national identifiers that match the Country's pattern, and the minimum age of
//! an account holder. Also pulls out what search matches on, and the references the store
//! must find in the same country. Every refusal names the element.

use chrono::{DateTime, Utc};
use meridian_crds::CountrySpec;
use serde_json::Value;
use uuid::Uuid;

use crate::codes;
use crate::dates;
use crate::fhir::datatypes::{CodeableConcept, Identifier, Reference};
use crate::fhir::resources::{Consent, Encounter, MedicationRequest, Observation, Patient};
use crate::fhir::{Issue, IssueType, ResourceType, read};

/// The extension that names a Patient's login: the identity provider's subject of the
/// account this Patient holds.
pub const ACCOUNT_EXTENSION: &str = "https://meridian.dev/fhir/StructureDefinition/account-subject";

/// The Country's rules the records service enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub code: String,
    pub retention_years: u32,
    pub minimum_age: u32,
    pub national_id_name: Option<String>,
    pub national_id_pattern: Option<String>,
    pub national_id_system: Option<String>,
    pub record_sharing: bool,
}

impl Rules {
    pub fn of(spec: &CountrySpec) -> Self {
        let r = &spec.regulatory;
        Self {
            code: spec.code.clone(),
            retention_years: r.retention_years,
            minimum_age: r.minimum_age,
            national_id_name: r.national_id_name.clone(),
            national_id_pattern: r.national_id_pattern.clone(),
            national_id_system: r.national_id_system.clone(),
            record_sharing: r.consent.record_sharing,
        }
    }
}

/// A reference the store must resolve in the same country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub expression: String,
    pub resource_type: ResourceType,
    pub id: Uuid,
}

/// What clinical search matches on (the columns of `fhir_resources`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Indexed {
    pub patient: Option<Uuid>,
    pub identifiers: Vec<String>,
    pub status: Option<String>,
    pub class: Option<String>,
    pub intent: Option<String>,
    pub codes: Vec<String>,
    pub categories: Vec<String>,
    pub date_start: Option<DateTime<Utc>>,
    pub date_end: Option<DateTime<Utc>>,
    /// `valueQuantity.value` as written (a JSON number), compared as `numeric`.
    pub quantity: Option<String>,
}

/// What a Patient is searched by, before it is hashed ([`crate::vault`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientTerms {
    pub family: Vec<String>,
    pub given: Vec<String>,
    /// Every part of every name: family, given, prefix, suffix, text words.
    pub name: Vec<String>,
    pub birthdate: Option<String>,
    pub gender: Option<String>,
    /// `(system, value)`, values of the national ID normalised.
    pub identifiers: Vec<(String, String)>,
}

/// What a (checked, normalised) Patient is searched by: its names, birth date, gender and
/// identifiers. The store derives the search hashes from this when it writes a Patient, and
/// a key rotation from the stored Patient when it re-hashes them under the new key.
pub fn patient_terms(p: &Patient) -> PatientTerms {
    let mut terms = PatientTerms {
        birthdate: p.birth_date.clone(),
        gender: p.gender.clone(),
        ..Default::default()
    };
    for identifier in &p.identifier {
        if let (Some(system), Some(value)) = (&identifier.system, &identifier.value) {
            terms.identifiers.push((system.clone(), value.clone()));
        } else if let Some(value) = &identifier.value {
            terms.identifiers.push((String::new(), value.clone()));
        }
    }
    for name in &p.name {
        terms.family.extend(name.family.iter().cloned());
        terms.given.extend(name.given.iter().cloned());
        terms.name.extend(name.family.iter().cloned());
        terms.name.extend(name.given.iter().cloned());
        terms.name.extend(name.prefix.iter().cloned());
        terms.name.extend(name.suffix.iter().cloned());
        if let Some(text) = &name.text {
            terms.name.extend(text.split_whitespace().map(String::from));
        }
    }
    terms
}

/// [`patient_terms`] of a stored Patient (as the vault holds it: checked, with `id` and `meta`).
pub fn stored_patient_terms(body: &Value) -> Result<PatientTerms, serde_json::Error> {
    let p: Patient = serde_json::from_value(body.clone())?;
    Ok(patient_terms(&p))
}

/// A resource ready to store.
#[derive(Clone, Debug)]
pub struct Checked {
    pub resource_type: ResourceType,
    /// The resource as stored and served (normalised; `id` and `meta` set by the store).
    pub body: Value,
    pub indexed: Indexed,
    pub references: Vec<Target>,
    /// For a Patient: what search matches on, and the account subject it holds.
    pub patient: Option<(PatientTerms, Option<String>)>,
}

fn required_code(value: &str, allowed: &[&str], expression: &str) -> Result<(), Issue> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(Issue::invalid(
        IssueType::Value,
        format!("{value:?} is not one of {}", allowed.join(", ")),
        Some(expression.into()),
    ))
}

fn one_of(present: &[(&str, bool)], required: bool, base: &str) -> Result<(), Issue> {
    let set: Vec<&str> = present.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect();
    if set.len() > 1 {
        return Err(Issue::invalid(
            IssueType::Structure,
            format!("only one of {} may be given", set.join(", ")),
            Some(format!("{base}.{}", set[1])),
        ));
    }
    if required && set.is_empty() {
        let names: Vec<&str> = present.iter().map(|(n, _)| *n).collect();
        return Err(Issue::invalid(
            IssueType::Required,
            format!("one of {} is required", names.join(", ")),
            Some(format!("{base}.{}", names[0])),
        ));
    }
    Ok(())
}

fn check_date(value: Option<&String>, expression: &str, date_only: bool) -> Result<(), Issue> {
    let Some(value) = value else { return Ok(()) };
    let ok = if date_only {
        dates::is_date(value)
    } else {
        dates::is_date_time(value)
    };
    if ok {
        return Ok(());
    }
    let kind = if date_only {
        "date (YYYY, YYYY-MM or YYYY-MM-DD)"
    } else {
        "dateTime"
    };
    Err(Issue::invalid(
        IssueType::Value,
        format!("{value:?} is not a valid FHIR {kind}"),
        Some(expression.into()),
    ))
}

/// `Patient/<id>` (or another type) as a target, refusing what cannot be one of ours.
fn target(reference: &Reference, expression: &str, allowed: &[ResourceType]) -> Result<Option<Target>, Issue> {
    let Some(text) = reference.reference.as_deref() else {
        return Ok(None);
    };
    let invalid = |why: String| Issue::invalid(IssueType::Value, why, Some(format!("{expression}.reference")));
    let Some((kind, id)) = text.split_once('/') else {
        return Err(invalid(format!("{text:?} is not a reference of the form Type/id")));
    };
    let Some(resource_type) = ResourceType::parse(kind).filter(|t| allowed.contains(t)) else {
        let names: Vec<&str> = allowed.iter().map(|t| t.as_str()).collect();
        return Err(invalid(format!(
            "{text:?} must refer to a {} of this country, as Type/id",
            names.join(" or ")
        )));
    };
    let id = id
        .parse()
        .map_err(|_| invalid(format!("{text:?} names no {resource_type} of this country")))?;
    Ok(Some(Target {
        expression: format!("{expression}.reference"),
        resource_type,
        id,
    }))
}

fn codeable_tokens(concept: &CodeableConcept, out: &mut Vec<String>) {
    for coding in &concept.coding {
        if let Some(code) = &coding.code {
            out.push(format!("{}|{code}", coding.system.as_deref().unwrap_or_default()));
            out.push(code.clone());
        }
    }
}

fn check_codings(concept: &CodeableConcept, expression: &str) -> Result<(), Issue> {
    for (i, coding) in concept.coding.iter().enumerate() {
        if let (Some(system), Some(code)) = (&coding.system, &coding.code) {
            codes::check_coding(system, code)
                .map_err(|why| Issue::invalid(IssueType::Value, why, Some(format!("{expression}.coding[{i}].code"))))?;
        }
    }
    Ok(())
}

fn identifier_tokens(identifiers: &[Identifier]) -> Vec<String> {
    let mut out = Vec::new();
    for identifier in identifiers {
        if let Some(value) = &identifier.value {
            let system = identifier.system.as_deref().unwrap_or_default();
            out.push(format!("{system}|{value}"));
            out.push(value.clone());
        }
    }
    out
}

fn period_range(start: Option<&str>, end: Option<&str>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let start = start.and_then(dates::range).map(|(s, _)| s);
    // An open end lasts for ever: NULL, read as +infinity by search.
    let end = end.and_then(dates::range).map(|(_, e)| e);
    (start, end)
}

fn meta_and_id(body: &mut Value) {
    // The server sets meta.versionId and meta.lastUpdated; the rest of meta is kept.
    if let Some(meta) = body.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
    }
}

/// Checks `body` as a resource of type `resource_type` for the country of `rules`, `today`
/// being the date ages are counted on.
pub fn check(
    resource_type: ResourceType,
    body: Value,
    rules: &Rules,
    today: chrono::NaiveDate,
) -> Result<Checked, Issue> {
    let base = resource_type.as_str();
    let mut indexed = Indexed::default();
    let mut references = Vec::new();
    let mut patient_terms = None;
    let mut push = |t: Option<Target>| {
        if let Some(t) = t {
            references.push(t);
        }
    };
    let mut body = match resource_type {
        ResourceType::Patient => {
            let mut p: Patient = read(resource_type, body)?;
            if let Some(gender) = &p.gender {
                required_code(gender, &["male", "female", "other", "unknown"], "Patient.gender")?;
            }
            check_date(p.birth_date.as_ref(), "Patient.birthDate", true)?;
            check_date(p.deceased_date_time.as_ref(), "Patient.deceasedDateTime", false)?;
            one_of(
                &[
                    ("deceasedBoolean", p.deceased_boolean.is_some()),
                    ("deceasedDateTime", p.deceased_date_time.is_some()),
                ],
                false,
                base,
            )?;
            one_of(
                &[
                    ("multipleBirthBoolean", p.multiple_birth_boolean.is_some()),
                    ("multipleBirthInteger", p.multiple_birth_integer.is_some()),
                ],
                false,
                base,
            )?;
            for (i, identifier) in p.identifier.iter_mut().enumerate() {
                let expression = format!("Patient.identifier[{i}].value");
                let national = identifier.system.is_some() && identifier.system == rules.national_id_system;
                if let (true, Some(value), Some(pattern)) = (national, &identifier.value, &rules.national_id_pattern) {
                    let normal = crate::national_id::check_named(rules.national_id_name.as_deref(), pattern, value)
                        .map_err(|why| Issue::invalid(IssueType::Value, why, Some(expression.clone())))?;
                    identifier.value = Some(normal);
                }
            }
            let terms = self::patient_terms(&p);
            let mut account = None;
            for (i, extension) in p.extension.iter().enumerate() {
                if extension.get("url").and_then(Value::as_str) != Some(ACCOUNT_EXTENSION) {
                    continue;
                }
                let expression = format!("Patient.extension[{i}]");
                let subject = extension
                    .get("valueString")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                let Some(subject) = subject else {
                    return Err(Issue::invalid(
                        IssueType::Required,
                        "the account extension needs valueString: the account's subject",
                        Some(expression),
                    ));
                };
                let Some(birth) = &p.birth_date else {
                    return Err(Issue::invalid(
                        IssueType::BusinessRule,
                        format!(
                            "a patient holds their own account only from age {} in {}: the birth date is needed",
                            rules.minimum_age, rules.code
                        ),
                        Some("Patient.birthDate".into()),
                    ));
                };
                if dates::age_on(birth, today).is_none_or(|age| age < rules.minimum_age) {
                    return Err(Issue::invalid(
                        IssueType::BusinessRule,
                        format!(
                            "the patient is younger than {} ({}'s regulatory.minimumAge) and cannot hold their own account",
                            rules.minimum_age, rules.code
                        ),
                        Some(expression),
                    ));
                }
                account = Some(subject.to_string());
            }
            for (i, gp) in p.general_practitioner.iter().enumerate() {
                // Practitioners and organisations are not served here: only their display.
                if gp.reference.is_some() {
                    return Err(Issue::invalid(
                        IssueType::NotSupported,
                        "references to practitioners are not resolvable here; give identifier or display",
                        Some(format!("Patient.generalPractitioner[{i}].reference")),
                    ));
                }
            }
            patient_terms = Some((terms, account));
            serde_json::to_value(&p).expect("serializes")
        }
        ResourceType::Encounter => {
            let e: Encounter = read(resource_type, body)?;
            required_code(
                &e.status,
                &[
                    "planned",
                    "arrived",
                    "triaged",
                    "in-progress",
                    "onleave",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ],
                "Encounter.status",
            )?;
            if e.class.code.is_none() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "the class needs a code",
                    Some("Encounter.class.code".into()),
                ));
            }
            if let Some(period) = &e.period {
                check_date(period.start.as_ref(), "Encounter.period.start", false)?;
                check_date(period.end.as_ref(), "Encounter.period.end", false)?;
                (indexed.date_start, indexed.date_end) = period_range(period.start.as_deref(), period.end.as_deref());
            }
            if let Some(subject) = &e.subject {
                let t = target(subject, "Encounter.subject", &[ResourceType::Patient])?;
                indexed.patient = t.as_ref().map(|t| t.id);
                push(t);
            }
            if let Some(part_of) = &e.part_of {
                push(target(part_of, "Encounter.partOf", &[ResourceType::Encounter])?);
            }
            indexed.status = Some(e.status.clone());
            indexed.class = e.class.code.clone();
            indexed.identifiers = identifier_tokens(&e.identifier);
            serde_json::to_value(&e).expect("serializes")
        }
        ResourceType::Observation => {
            let o: Observation = read(resource_type, body)?;
            required_code(
                &o.status,
                &[
                    "registered",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ],
                "Observation.status",
            )?;
            if o.code.coding.is_empty() && o.code.text.is_none() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "the code needs a coding or a text",
                    Some("Observation.code".into()),
                ));
            }
            check_codings(&o.code, "Observation.code")?;
            for (i, c) in o.category.iter().enumerate() {
                check_codings(c, &format!("Observation.category[{i}]"))?;
            }
            one_of(
                &[
                    ("effectiveDateTime", o.effective_date_time.is_some()),
                    ("effectivePeriod", o.effective_period.is_some()),
                    ("effectiveTiming", o.effective_timing.is_some()),
                    ("effectiveInstant", o.effective_instant.is_some()),
                ],
                false,
                base,
            )?;
            one_of(
                &[
                    ("valueQuantity", o.value_quantity.is_some()),
                    ("valueCodeableConcept", o.value_codeable_concept.is_some()),
                    ("valueString", o.value_string.is_some()),
                    ("valueBoolean", o.value_boolean.is_some()),
                    ("valueInteger", o.value_integer.is_some()),
                    ("valueRange", o.value_range.is_some()),
                    ("valueRatio", o.value_ratio.is_some()),
                    ("valueSampledData", o.value_sampled_data.is_some()),
                    ("valueTime", o.value_time.is_some()),
                    ("valueDateTime", o.value_date_time.is_some()),
                    ("valuePeriod", o.value_period.is_some()),
                ],
                false,
                base,
            )?;
            check_date(o.effective_date_time.as_ref(), "Observation.effectiveDateTime", false)?;
            if let Some(instant) = &o.effective_instant
                && !dates::is_instant(instant)
            {
                return Err(Issue::invalid(
                    IssueType::Value,
                    format!("{instant:?} is not a valid FHIR instant"),
                    Some("Observation.effectiveInstant".into()),
                ));
            }
            if let Some(issued) = &o.issued
                && !dates::is_instant(issued)
            {
                return Err(Issue::invalid(
                    IssueType::Value,
                    format!("{issued:?} is not a valid FHIR instant"),
                    Some("Observation.issued".into()),
                ));
            }
            if let Some(code) = &o.value_codeable_concept {
                check_codings(code, "Observation.valueCodeableConcept")?;
            }
            if let Some(period) = &o.effective_period {
                check_date(period.start.as_ref(), "Observation.effectivePeriod.start", false)?;
                check_date(period.end.as_ref(), "Observation.effectivePeriod.end", false)?;
                (indexed.date_start, indexed.date_end) = period_range(period.start.as_deref(), period.end.as_deref());
            } else if let Some(at) = o.effective_date_time.as_deref().or(o.effective_instant.as_deref()) {
                let (s, e) = dates::range(at).expect("checked above");
                (indexed.date_start, indexed.date_end) = (Some(s), Some(e));
            }
            if let Some(q) = &o.value_quantity {
                indexed.quantity = q.value.as_ref().map(|v| v.to_string());
            }
            if let Some(subject) = &o.subject {
                let t = target(subject, "Observation.subject", &[ResourceType::Patient])?;
                indexed.patient = t.as_ref().map(|t| t.id);
                push(t);
            }
            if let Some(encounter) = &o.encounter {
                push(target(encounter, "Observation.encounter", &[ResourceType::Encounter])?);
            }
            for (i, member) in o.has_member.iter().enumerate() {
                push(target(
                    member,
                    &format!("Observation.hasMember[{i}]"),
                    &[ResourceType::Observation],
                )?);
            }
            indexed.status = Some(o.status.clone());
            codeable_tokens(&o.code, &mut indexed.codes);
            for c in &o.category {
                codeable_tokens(c, &mut indexed.categories);
            }
            indexed.identifiers = identifier_tokens(&o.identifier);
            serde_json::to_value(&o).expect("serializes")
        }
        ResourceType::MedicationRequest => {
            let m: MedicationRequest = read(resource_type, body)?;
            required_code(
                &m.status,
                &[
                    "active",
                    "on-hold",
                    "cancelled",
                    "completed",
                    "entered-in-error",
                    "stopped",
                    "draft",
                    "unknown",
                ],
                "MedicationRequest.status",
            )?;
            required_code(
                &m.intent,
                &[
                    "proposal",
                    "plan",
                    "order",
                    "original-order",
                    "reflex-order",
                    "filler-order",
                    "instance-order",
                    "option",
                ],
                "MedicationRequest.intent",
            )?;
            if let Some(priority) = &m.priority {
                required_code(
                    priority,
                    &["routine", "urgent", "asap", "stat"],
                    "MedicationRequest.priority",
                )?;
            }
            one_of(
                &[
                    ("medicationCodeableConcept", m.medication_codeable_concept.is_some()),
                    ("medicationReference", m.medication_reference.is_some()),
                ],
                true,
                base,
            )?;
            if m.medication_reference.is_some() {
                return Err(Issue::invalid(
                    IssueType::NotSupported,
                    "Medication resources are not served here: give medicationCodeableConcept",
                    Some("MedicationRequest.medicationReference".into()),
                ));
            }
            one_of(
                &[
                    ("reportedBoolean", m.reported_boolean.is_some()),
                    ("reportedReference", m.reported_reference.is_some()),
                ],
                false,
                base,
            )?;
            if let Some(code) = &m.medication_codeable_concept {
                check_codings(code, "MedicationRequest.medicationCodeableConcept")?;
            }
            check_date(m.authored_on.as_ref(), "MedicationRequest.authoredOn", false)?;
            let t = target(&m.subject, "MedicationRequest.subject", &[ResourceType::Patient])?;
            if t.is_none() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "a prescription names its patient: Patient/<id>",
                    Some("MedicationRequest.subject.reference".into()),
                ));
            }
            indexed.patient = t.as_ref().map(|t| t.id);
            push(t);
            if let Some(encounter) = &m.encounter {
                push(target(
                    encounter,
                    "MedicationRequest.encounter",
                    &[ResourceType::Encounter],
                )?);
            }
            if let Some(at) = &m.authored_on {
                let (s, e) = dates::range(at).expect("checked above");
                (indexed.date_start, indexed.date_end) = (Some(s), Some(e));
            }
            indexed.status = Some(m.status.clone());
            indexed.intent = Some(m.intent.clone());
            if let Some(code) = &m.medication_codeable_concept {
                codeable_tokens(code, &mut indexed.codes);
            }
            indexed.identifiers = identifier_tokens(&m.identifier);
            serde_json::to_value(&m).expect("serializes")
        }
        ResourceType::Consent => {
            let c: Consent = read(resource_type, body)?;
            required_code(
                &c.status,
                &[
                    "draft",
                    "proposed",
                    "active",
                    "rejected",
                    "inactive",
                    "entered-in-error",
                ],
                "Consent.status",
            )?;
            if c.scope.coding.is_empty() && c.scope.text.is_none() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "the scope needs a coding or text (e.g. patient-privacy)",
                    Some("Consent.scope".into()),
                ));
            }
            if c.category.is_empty() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "a Consent needs at least one category",
                    Some("Consent.category".into()),
                ));
            }
            // R4 invariant ppc-1.
            if c.policy.is_empty() && c.policy_rule.is_none() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "either policy or policyRule is required (R4 invariant ppc-1)",
                    Some("Consent.policyRule".into()),
                ));
            }
            one_of(
                &[
                    ("sourceAttachment", c.source_attachment.is_some()),
                    ("sourceReference", c.source_reference.is_some()),
                ],
                false,
                base,
            )?;
            check_date(c.date_time.as_ref(), "Consent.dateTime", false)?;
            let t = match &c.patient {
                Some(patient) => target(patient, "Consent.patient", &[ResourceType::Patient])?,
                None => None,
            };
            // Every Consent kept here is a patient's (R4 invariants ppc-2 to ppc-5 ask the
            // same of the privacy, research, adr and treatment scopes).
            if t.is_none() {
                return Err(Issue::invalid(
                    IssueType::Required,
                    "a Consent names its patient: Patient/<id>",
                    Some("Consent.patient.reference".into()),
                ));
            }
            indexed.patient = t.as_ref().map(|t| t.id);
            push(t);
            if let Some(provision) = &c.provision {
                if let Some(kind) = &provision.type_ {
                    required_code(kind, &["deny", "permit"], "Consent.provision.type")?;
                }
                if let Some(period) = &provision.period {
                    check_date(period.start.as_ref(), "Consent.provision.period.start", false)?;
                    check_date(period.end.as_ref(), "Consent.provision.period.end", false)?;
                }
            }
            if let Some(at) = &c.date_time {
                let (s, e) = dates::range(at).expect("checked above");
                (indexed.date_start, indexed.date_end) = (Some(s), Some(e));
            }
            indexed.status = Some(c.status.clone());
            codeable_tokens(&c.scope, &mut indexed.codes);
            for category in &c.category {
                codeable_tokens(category, &mut indexed.categories);
            }
            indexed.identifiers = identifier_tokens(&c.identifier);
            serde_json::to_value(&c).expect("serializes")
        }
    };
    meta_and_id(&mut body);
    Ok(Checked {
        resource_type,
        body,
        indexed,
        references,
        patient: patient_terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn de() -> Rules {
        Rules {
            code: "DE".into(),
            retention_years: 10,
            minimum_age: 16,
            national_id_name: Some("Krankenversichertennummer".into()),
            national_id_pattern: Some("^[A-Z][0-9]{9}$".into()),
            national_id_system: Some("http://fhir.de/sid/gkv/kvid-10".into()),
            record_sharing: true,
        }
    }

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
    }

    fn refused(t: ResourceType, body: Value) -> Issue {
        check(t, body, &de(), today()).unwrap_err()
    }

    #[test]
    fn a_bad_loinc_check_digit_is_refused_at_its_coding() {
        let e = refused(
            ResourceType::Observation,
            json!({"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8867-5"}]}}),
        );
        assert_eq!(e.expression.as_deref(), Some("Observation.code.coding[0].code"));
        assert!(e.diagnostics.contains("check digit"), "{}", e.diagnostics);
    }

    #[test]
    fn a_national_id_must_match_the_countrys_pattern_and_is_normalised() {
        let e = refused(
            ResourceType::Patient,
            json!({"resourceType": "Patient",
                   "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": "12345"}]}),
        );
        assert_eq!(e.expression.as_deref(), Some("Patient.identifier[0].value"));
        let ok = check(
            ResourceType::Patient,
            json!({"resourceType": "Patient",
                   "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": "a 123 456 789"}]}),
            &de(),
            today(),
        )
        .unwrap();
        assert_eq!(ok.body["identifier"][0]["value"], "A123456789");
    }

    #[test]
    fn a_child_cannot_hold_their_own_account() {
        let account = json!({"url": ACCOUNT_EXTENSION, "valueString": "user-1"});
        let e = refused(
            ResourceType::Patient,
            json!({"resourceType": "Patient", "birthDate": "2015-01-01", "extension": [account]}),
        );
        assert_eq!(e.expression.as_deref(), Some("Patient.extension[0]"));
        assert!(e.diagnostics.contains("minimumAge"));
        let ok = check(
            ResourceType::Patient,
            json!({"resourceType": "Patient", "birthDate": "1990-01-01", "extension": [account]}),
            &de(),
            today(),
        )
        .unwrap();
        assert_eq!(ok.patient.unwrap().1.as_deref(), Some("user-1"));
    }

    #[test]
    fn choices_codes_and_references_are_checked() {
        let e = refused(
            ResourceType::MedicationRequest,
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                   "subject": {"reference": "Patient/0b7f2c1e-8a2b-4b8e-9b1c-5c7a8d9e0f11"}}),
        );
        assert_eq!(
            e.expression.as_deref(),
            Some("MedicationRequest.medicationCodeableConcept")
        );
        let e = refused(
            ResourceType::Encounter,
            json!({"resourceType": "Encounter", "status": "done", "class": {"code": "AMB"}}),
        );
        assert_eq!(e.expression.as_deref(), Some("Encounter.status"));
        let e = refused(
            ResourceType::Observation,
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "https://elsewhere.example/Patient/1"}}),
        );
        assert_eq!(e.expression.as_deref(), Some("Observation.subject.reference"));
        let ok = check(
            ResourceType::Observation,
            json!({"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                   "subject": {"reference": "Patient/0b7f2c1e-8a2b-4b8e-9b1c-5c7a8d9e0f11"},
                   "effectiveDateTime": "2026-11-01T10:00:00+01:00",
                   "valueQuantity": {"value": 72, "unit": "/min"}}),
            &de(),
            today(),
        )
        .unwrap();
        assert_eq!(ok.references.len(), 1);
        assert_eq!(ok.indexed.codes, ["http://loinc.org|8867-4", "8867-4"]);
        assert_eq!(ok.indexed.quantity.as_deref(), Some("72"));
        assert!(ok.indexed.date_start.is_some());
    }
}
