//! Checks that the CRD schema cannot express (IANA time zones, BCP 47 locales, that a
//! regex compiles), plus the schema's own patterns and CEL rules again, because `meridian
//! dev` and `meridian plan` read manifests that never went through an API server.

use std::fmt;

use meridian_crds::{Country, PatientIndex, Region, RegionProvider};

/// One invalid field: `spec.timezone: unknown IANA time zone "Mars/Olympus"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins field errors into one condition message.
pub fn describe(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|re| re.is_match(value))
}

/// Every problem with a Country's spec, empty when it is valid.
/// The shape of a cloud region's name, as the CRDs' schemas check it.
const CLOUD_REGION: &str = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$";

pub fn country(country: &Country) -> Vec<FieldError> {
    let spec = &country.spec;
    let mut errors = Vec::new();
    if !matches(r"^[A-Z]{2}$", &spec.code) {
        errors.push(err(
            "spec.code",
            format!(
                "{:?} is not an ISO 3166-1 alpha-2 code in upper case (e.g. \"DE\")",
                spec.code
            ),
        ));
    }
    if spec.timezone.parse::<chrono_tz::Tz>().is_err() {
        errors.push(err(
            "spec.timezone",
            format!("unknown IANA time zone {:?} (e.g. \"Europe/Berlin\")", spec.timezone),
        ));
    }
    match language_tags::LanguageTag::parse(&spec.locale) {
        Ok(tag) if tag.is_valid() => {}
        _ => errors.push(err(
            "spec.locale",
            format!("{:?} is not a BCP 47 language tag (e.g. \"de-DE\")", spec.locale),
        )),
    }
    if spec.languages.is_empty() {
        errors.push(err("spec.languages", "at least one language is required"));
    }
    for (i, lang) in spec.languages.iter().enumerate() {
        if !matches(r"^[a-z]{2,3}$", lang) {
            errors.push(err(
                &format!("spec.languages[{i}]"),
                format!("{lang:?} is not an ISO 639 language code"),
            ));
        }
    }
    if !matches(r"^[A-Z]{3}$", &spec.currency) {
        errors.push(err(
            "spec.currency",
            format!("{:?} is not an ISO 4217 currency code", spec.currency),
        ));
    }
    if let Some(billing) = &spec.billing {
        use meridian_shared::money;
        if let Err(e) = money::parse_amount(&billing.appointment_fee, &spec.currency) {
            errors.push(err("spec.billing.appointmentFee", e.to_string()));
        }
        if money::parse_rate(&billing.tax_rate).is_err() {
            errors.push(err(
                "spec.billing.taxRate",
                format!("{:?} is not a fraction such as \"0.19\" (19 %)", billing.tax_rate),
            ));
        }
    }
    if spec.region.is_empty() {
        errors.push(err("spec.region", "the name of a Region is required"));
    }
    for (i, cloud) in spec.allowed_cloud_regions.iter().enumerate() {
        if !matches(CLOUD_REGION, cloud) {
            errors.push(err(
                &format!("spec.allowedCloudRegions[{i}]"),
                format!("{cloud:?} is not a cloud region name (e.g. \"eu-central-1\")"),
            ));
        }
    }
    if let Some(pattern) = &spec.regulatory.national_id_pattern
        && let Err(e) = regex::Regex::new(pattern)
    {
        let first_line = e.to_string().lines().last().unwrap_or_default().trim().to_string();
        errors.push(err(
            "spec.regulatory.nationalIdPattern",
            format!("not a valid regular expression: {first_line}"),
        ));
    }
    if !(1..=100).contains(&spec.regulatory.retention_years) {
        errors.push(err("spec.regulatory.retentionYears", "must be between 1 and 100"));
    }
    if spec.regulatory.minimum_age > 21 {
        errors.push(err("spec.regulatory.minimumAge", "must be between 0 and 21"));
    }
    errors.extend(cel_errors(country.validate_cel()));
    dedup(errors)
}

/// Every problem with a Region's spec, empty when it is valid.
pub fn region(region: &Region) -> Vec<FieldError> {
    let spec = &region.spec;
    let mut errors = Vec::new();
    if !matches(CLOUD_REGION, &spec.cloud_region) {
        errors.push(err(
            "spec.cloudRegion",
            format!(
                "{:?} is not a cloud region name (e.g. \"eu-central-1\")",
                spec.cloud_region
            ),
        ));
    }
    if spec.provider == RegionProvider::External && spec.external.is_none() {
        errors.push(err("spec.external", "required when spec.provider is external"));
    }
    errors.extend(cel_errors(region.validate_cel()));
    dedup(errors)
}

/// Every problem with a PatientIndex's spec, empty when it is valid: the patterns its CRD
/// schema checks, for manifests that never went through an API server.
pub fn patient_index(index: &PatientIndex) -> Vec<FieldError> {
    let spec = &index.spec;
    let mut errors = Vec::new();
    let dns_label = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    if spec.region.len() > 63 || !matches(dns_label, &spec.region) {
        errors.push(err(
            "spec.region",
            format!("{:?} is not a Region's name (e.g. \"eu-central-1\")", spec.region),
        ));
    }
    if spec.key_secret_ref.name.len() > 253 || !matches(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", &spec.key_secret_ref.name)
    {
        errors.push(err(
            "spec.keySecretRef.name",
            format!("{:?} is not a Secret's name", spec.key_secret_ref.name),
        ));
    }
    for (i, code) in spec.countries.iter().flatten().enumerate() {
        if !matches(r"^[A-Z]{2}$", code) {
            errors.push(err(
                &format!("spec.countries[{i}]"),
                format!("{code:?} is not an ISO 3166-1 alpha-2 code in upper case (e.g. \"DE\")"),
            ));
        }
    }
    errors
}

/// See [`country_update`].
pub fn patient_index_update(new: &PatientIndex, old: &PatientIndex) -> Vec<FieldError> {
    cel_errors(new.validate_cel_update(old))
}

/// Rejects a spec change the API server would refuse (the CEL transition rules), for
/// drivers that see edits without an API server in between.
pub fn country_update(new: &Country, old: &Country) -> Vec<FieldError> {
    cel_errors(new.validate_cel_update(old))
}

/// See [`country_update`].
pub fn region_update(new: &Region, old: &Region) -> Vec<FieldError> {
    cel_errors(new.validate_cel_update(old))
}

fn cel_errors(result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<FieldError> {
    let Err(errors) = result else { return Vec::new() };
    errors
        .into_vec()
        .into_iter()
        .map(|e| {
            // Our rules' messages already start with the field ("spec.code is immutable").
            let field = e
                .message
                .split_whitespace()
                .find(|w| w.starts_with("spec."))
                .map(str::to_string);
            let field = field.unwrap_or_else(|| {
                if e.field_path.is_empty() {
                    "spec".into()
                } else {
                    e.field_path.clone()
                }
            });
            err(field.trim_end_matches([':', ',']), e.message)
        })
        .collect()
}

/// CEL and the Rust checks can report the same field twice; keep the first.
fn dedup(errors: Vec<FieldError>) -> Vec<FieldError> {
    let mut seen = std::collections::BTreeSet::new();
    errors.into_iter().filter(|e| seen.insert(e.field.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> Country {
        serde_yaml_ng::from_str(include_str!("../../examples/countries/de.yaml")).unwrap()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_examples_are_valid() {
        for yaml in [
            include_str!("../../examples/countries/de.yaml"),
            include_str!("../../examples/countries/fr.yaml"),
            include_str!("../../examples/countries/gb.yaml"),
            include_str!("../../examples/countries/es.yaml"),
            include_str!("../../examples/countries/it.yaml"),
        ] {
            let c: Country = serde_yaml_ng::from_str(yaml).unwrap();
            assert_eq!(country(&c), [], "{:?}", c.metadata.name);
        }
        let r: Region = serde_yaml_ng::from_str(include_str!("../../examples/regions/eu-west-1.yaml")).unwrap();
        assert_eq!(region(&r), []);
        let i: PatientIndex = serde_yaml_ng::from_str(include_str!("../../examples/patientindex/global.yaml")).unwrap();
        assert_eq!(patient_index(&i), []);
    }

    #[test]
    fn a_patient_index_names_its_bad_fields_and_keeps_its_region() {
        let mut i: PatientIndex =
            serde_yaml_ng::from_str(include_str!("../../examples/patientindex/global.yaml")).unwrap();
        let original = i.clone();
        i.spec.region = "EU Central".into();
        i.spec.key_secret_ref.name = "Keys!".into();
        i.spec.countries = Some(vec!["DE".into(), "fr".into()]);
        assert_eq!(
            fields(&patient_index(&i)),
            ["spec.region", "spec.keySecretRef.name", "spec.countries[1]"]
        );
        let mut moved = original.clone();
        moved.spec.region = "eu-west-3".into();
        assert_eq!(fields(&patient_index_update(&moved, &original)), ["spec.region"]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut c = de();
        c.spec.code = "de".into();
        c.spec.timezone = "Europe/Bonn".into();
        c.spec.locale = "de_DE!".into();
        c.spec.languages = vec!["German".into()];
        c.spec.currency = "euro".into();
        c.spec.regulatory.national_id_pattern = Some("[A-Z".into());
        assert_eq!(
            fields(&country(&c)),
            [
                "spec.code",
                "spec.timezone",
                "spec.locale",
                "spec.languages[0]",
                "spec.currency",
                "spec.regulatory.nationalIdPattern"
            ]
        );
    }

    #[test]
    fn a_fee_finer_than_the_currency_and_a_rate_that_is_no_fraction_are_named() {
        let mut c = de();
        c.spec.currency = "JPY".into();
        c.spec.billing = Some(meridian_crds::Billing {
            appointment_fee: "80.50".into(),
            tax_rate: "19".into(),
        });
        let errors = country(&c);
        assert_eq!(fields(&errors), ["spec.billing.appointmentFee", "spec.billing.taxRate"]);
        assert!(errors[0].message.contains("JPY"), "{errors:?}");
    }

    #[test]
    fn cel_rules_are_enforced_without_an_api_server() {
        let mut c = de();
        c.spec.allowed_cloud_regions.clear();
        let errors = country(&c);
        assert_eq!(fields(&errors), ["spec.allowedCloudRegions"]);
        assert!(errors[0].message.contains("residency: strict requires"), "{errors:?}");

        let mut moved = de();
        moved.spec.region = "eu-west-1".into();
        moved.spec.code = "AT".into();
        let errors = country_update(&moved, &de());
        assert_eq!(fields(&errors), ["spec.code", "spec.region"], "{errors:?}");
    }

    #[test]
    fn residency_holds_at_admission_where_one_object_can_tell() {
        let mut c = de();
        c.spec.allowed_cloud_regions = vec!["eu-central-1".into(), "Frankfurt".into()];
        let errors = country(&c);
        assert_eq!(fields(&errors), ["spec.allowedCloudRegions[1]"], "{errors:?}");

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
        let dedicated: Region = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(dedicated.spec.isolation, meridian_crds::Isolation::Dedicated);
        let mut shared = dedicated.clone();
        shared.spec.isolation = meridian_crds::Isolation::Shared;
        let errors = region_update(&shared, &dedicated);
        assert_eq!(fields(&errors), ["spec.isolation"], "{errors:?}");
        assert!(errors[0].message.contains("strict countries rely on it"), "{errors:?}");
        assert!(
            region_update(&dedicated, &shared).is_empty(),
            "shared may become dedicated"
        );

        let mut moved = dedicated.clone();
        moved.spec.provider = meridian_crds::RegionProvider::Aws;
        assert_eq!(fields(&region_update(&moved, &dedicated)), ["spec.provider"]);
    }

    #[test]
    fn events_name_a_missing_bootstrap_and_a_broker_the_provider_cannot_run() {
        let region_with = |provider: &str, events: &str| -> Region {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: platform.meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: x}}\n\
                 spec: {{provider: {provider}, cloudRegion: eu-west-1, external: {{databaseUrlSecretRef: {{name: db, key: url}}}},\
                 events: {events}}}"
            ))
            .unwrap()
        };
        assert_eq!(
            fields(&region(&region_with("external", "{broker: external}"))),
            ["spec.events.bootstrapServersSecretRef"]
        );
        assert_eq!(
            fields(&region(&region_with("external", "{broker: inCluster}"))),
            ["spec.events.broker"]
        );
        assert!(region(&region_with("inCluster", "{broker: inCluster}")).is_empty());
        assert!(region(&region_with("aws", "{broker: inCluster}")).is_empty());
    }

    #[test]
    fn notifications_need_events_a_channel_and_both_smtp_credentials() {
        let with = |events: &str, notifications: &str| -> Region {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: platform.meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: x}}\n\
                 spec: {{provider: inCluster, cloudRegion: eu-west-1, {events} notifications: {notifications}}}"
            ))
            .unwrap()
        };
        let smtp = "{smtp: {host: smtp.example, from: a@b.example}}";
        assert!(region(&with("events: {broker: inCluster},", smtp)).is_empty());
        assert_eq!(fields(&region(&with("", smtp))), ["spec.notifications"]);
        assert_eq!(
            fields(&region(&with("events: {broker: inCluster},", "{}"))),
            ["spec.notifications"]
        );
        let half = "{smtp: {host: smtp.example, from: a@b.example, usernameSecretRef: {name: m, key: u}}}";
        assert_eq!(
            fields(&region(&with("events: {broker: inCluster},", half))),
            ["spec.notifications.smtp"]
        );
    }

    #[test]
    fn an_external_region_needs_its_secret_reference() {
        let r: Region = serde_yaml_ng::from_str(
            "apiVersion: platform.meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: x}\n\
             spec: {provider: external, cloudRegion: eu-west-1}",
        )
        .unwrap();
        assert_eq!(fields(&region(&r)), ["spec.external"]);
    }
}
