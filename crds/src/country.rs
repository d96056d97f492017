use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::DeletionPolicy;

/// A Country is a market: its rules, its features and the Region that holds its data.
/// Applying one launches the country; no code change is needed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "platform.meridian.dev",
    version = "v1alpha1",
    kind = "Country",
    plural = "countries",
    shortname = "ctry",
    category = "meridian",
    status = "CountryStatus",
    cel,
    doc = "A Country: a market with its regulatory rules, features and the Region that holds its data.",
    printcolumn(name = "Code", type_ = "string", json_path = ".spec.code"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Residency", type_ = "string", json_path = ".spec.residency"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.residency != 'strict' || (has(self.allowedCloudRegions) && size(self.allowedCloudRegions) > 0)").message("residency: strict requires spec.allowedCloudRegions").field_path(".allowedCloudRegions"))]
#[serde(rename_all = "camelCase")]
pub struct CountrySpec {
    /// ISO 3166-1 alpha-2 code in upper case (`DE`, `FR`; the United Kingdom is `GB`).
    /// Immutable: partitions and indexes are named after it.
    #[schemars(pattern(r"^[A-Z]{2}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.code is immutable"))]
    pub code: String,
    /// Human-readable name, e.g. `Germany`.
    #[schemars(length(min = 1, max = 100))]
    pub display_name: String,
    /// IANA time zone that availability and slots are expressed in, e.g. `Europe/Berlin`.
    #[schemars(length(min = 1))]
    pub timezone: String,
    /// BCP 47 locale for dates, numbers and messages, e.g. `de-DE`.
    #[schemars(pattern(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"))]
    pub locale: String,
    /// ISO 639-1 codes of the languages offered to patients, first one is the default.
    #[schemars(length(min = 1), inner(pattern(r"^[a-z]{2,3}$")))]
    pub languages: Vec<String>,
    /// ISO 4217 currency code, e.g. `EUR`.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Name of the Region that holds this country's data. Immutable: moving a country's
    /// data is a migration, not an edit.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.region is immutable"))]
    pub region: String,
    /// `strict`: data may live only in a `dedicated` Region whose `cloudRegion` is listed in
    /// `allowedCloudRegions`. `shared`: any Region will do.
    pub residency: Residency,
    /// Cloud regions this country's data may live in; required when `residency` is `strict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")))]
    pub allowed_cloud_regions: Vec<String>,
    /// National rules the workloads enforce.
    pub regulatory: Regulatory,
    /// Product features switched on for this country.
    #[serde(default)]
    pub features: Features,
    /// How practitioner search analyses text in this country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSettings>,
    /// What an appointment costs: the billing consumer issues an invoice per booked
    /// appointment and a credit note per cancellation, in `currency`. Without it, no
    /// invoices are issued in this country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
    /// `Retain` (default) detaches and keeps the partitions and index when the Country is
    /// deleted; `Delete` drops them. Patient data is only ever dropped with `Delete`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop reconciling and serving this country without deleting anything.
    #[serde(default)]
    pub suspend: bool,
}

/// The Country that holds `country`'s code among `countries`: the oldest Country with that
/// code (then by name), `country` itself included. Only the holder is reconciled and served;
/// a newer Country with the same code is refused and owns nothing. A Country being deleted
/// still holds its code until its cleanup is done.
pub fn code_holder<'a>(country: &'a Country, countries: impl IntoIterator<Item = &'a Country>) -> &'a Country {
    countries
        .into_iter()
        .filter(|c| c.spec.code == country.spec.code && c.metadata.name != country.metadata.name)
        .chain(std::iter::once(country))
        .min_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name).cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        })
        .expect("the country itself is a candidate")
}

/// The fee and tax of an appointment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Billing {
    /// The fee of one appointment before tax, in `currency`, as a decimal with no more
    /// digits after the point than the currency has (`60.00` EUR, `8000` JPY).
    #[schemars(pattern(r"^[0-9]{1,9}(\.[0-9]{1,3})?$"))]
    pub appointment_fee: String,
    /// The tax rate applied to the fee, as a fraction: `0.19` is 19 %. Default `0`.
    #[serde(default = "no_tax")]
    #[schemars(pattern(r"^0(\.[0-9]{1,6})?$"))]
    pub tax_rate: String,
}

fn no_tax() -> String {
    "0".into()
}

/// Where a country's personal data may live.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Residency {
    /// Only in a dedicated Region in one of `allowedCloudRegions`.
    Strict,
    /// In any Region, shared with other countries.
    Shared,
}

/// National regulatory rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Regulatory {
    /// Years that medical records must be kept after the last contact.
    #[schemars(range(min = 1, max = 100))]
    pub retention_years: u32,
    /// Minimum age for a patient to hold an account of their own.
    #[schemars(range(min = 0, max = 21))]
    pub minimum_age: u32,
    /// Name of the national identifier, e.g. `Krankenversichertennummer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id_name: Option<String>,
    /// Regular expression a national identifier must match (anchored by the workloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id_pattern: Option<String>,
    /// FHIR identifier system (a URI) of the national identifier, e.g.
    /// `http://fhir.de/sid/gkv/kvid-10`. The records service checks Patient identifiers of
    /// this system against `nationalIdPattern` and normalises them before they are stored
    /// or searched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id_system: Option<String>,
    /// Consents the workloads must collect before processing.
    #[serde(default)]
    pub consent: Consent,
}

/// Consent rules; each flag means "explicit opt-in required".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// Processing health data (GDPR art. 9) needs explicit consent.
    #[serde(default)]
    pub health_data: bool,
    /// Patients' records may be shared with clinicians of other countries through the
    /// PatientIndex (cross-border lookups), each patient opting in with an active FHIR
    /// `Consent` (scope `patient-privacy`, provision `permit`). False: they are never
    /// shared, and the PatientIndex leaves the country out.
    #[serde(default)]
    pub record_sharing: bool,
    /// Appointment reminders (by SMS or e-mail) need explicit consent: each patient opts in
    /// with an active FHIR `Consent` of category
    /// `https://meridian.dev/fhir/CodeSystem/consent-category|appointment-reminders`,
    /// provision `permit`. Notices of a re-assignment or a needed rebooking are not
    /// reminders and need none.
    #[serde(default)]
    pub reminders: bool,
    /// Secondary use for research needs explicit consent.
    #[serde(default)]
    pub research: bool,
}

/// Feature flags.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Patients book online.
    #[serde(default = "enabled")]
    pub online_booking: bool,
    /// Appointments move to another practitioner when theirs becomes unavailable.
    #[serde(default = "enabled")]
    pub reassignment: bool,
    /// Notices to patients (reminders, re-assignment, rebooking) go by SMS to those with a
    /// mobile number, where the notifications service has an SMS provider; by e-mail
    /// otherwise.
    #[serde(default)]
    pub sms_reminders: bool,
    /// Video consultations.
    #[serde(default)]
    pub video_consultations: bool,
}

fn enabled() -> bool {
    true
}

impl Default for Features {
    fn default() -> Self {
        Self {
            online_booking: true,
            reassignment: true,
            sms_reminders: false,
            video_consultations: false,
        }
    }
}

/// Search analysis for the country's practitioner index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchSettings {
    /// Language analyzer: the language's tokenisation, normalisation, stop words and
    /// stemmer, as OpenSearch's analyzer of that name. Without `search`, the analyzer
    /// follows the Country's `locale`.
    pub analyzer: SearchAnalyzer,
    /// Synonym rules in Solr format, e.g. `GP, Hausarzt => Allgemeinmedizin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synonyms: Vec<String>,
}

/// Supported language analyzers: every language analyzer of OpenSearch 2.x, and `standard`
/// (no stop words, no stemming).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SearchAnalyzer {
    Standard,
    Arabic,
    Armenian,
    Basque,
    Bengali,
    Brazilian,
    Bulgarian,
    Catalan,
    Cjk,
    Czech,
    Danish,
    Dutch,
    English,
    Estonian,
    Finnish,
    French,
    Galician,
    German,
    Greek,
    Hindi,
    Hungarian,
    Indonesian,
    Irish,
    Italian,
    Latvian,
    Lithuanian,
    Norwegian,
    Persian,
    Portuguese,
    Romanian,
    Russian,
    Sorani,
    Spanish,
    Swedish,
    Turkish,
    Thai,
}

/// Observed state of a Country.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountryStatus {
    /// `ResidencyCompliant`, `DatabaseReady`, `Ready` (and, as they land,
    /// `SearchIndexReady`, `RoutesReady`), each with a reason and message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Region the country is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The list partitions that hold the country's rows, e.g. `appointments_de`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
    /// The vault data keys the Country added to its Region's `vault-keys` Secret, by id
    /// (e.g. `k1`; never key material): with `deletionPolicy: Delete` they go with the
    /// partitions, otherwise they stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_keys: Vec<String>,
    /// Name of the search alias, e.g. `practitioners_de`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_alias: Option<String>,
    /// Name of the versioned index behind the alias, e.g. `practitioners_de_v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Gateway route prefixes, e.g. `/de/v1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}
