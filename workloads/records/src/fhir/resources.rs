//! The five resources the service stores, with every element R4 defines for them and their
//! cardinality (a list where R4 allows many, one where it allows one, required where R4
//! requires it). Elements the service does not look into are kept as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::datatypes::{CodeableConcept, Coding, HumanName, Identifier, Meta, Narrative, Period, Quantity, Reference};

/// Declares a resource with the elements every DomainResource has, then its own. serde
/// cannot refuse unknown fields through `flatten`, hence a macro rather than a shared struct.
macro_rules! domain_resource {
    ($(#[$attr:meta])* $name:ident { $($(#[$fattr:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$attr])*
        #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            pub resource_type: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub id: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub meta: Option<Meta>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub implicit_rules: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub language: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub text: Option<Narrative>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub contained: Vec<Value>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub extension: Vec<Value>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub modifier_extension: Vec<Value>,
            $($(#[$fattr])* pub $field: $ty,)*
        }
    };
}

domain_resource!(
    /// `Patient`. In storage only in the vault: every identifying element is here.
    Patient {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identifier: Vec<Identifier>,
        #[serde(skip_serializing_if = "Option::is_none")]
        active: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        name: Vec<HumanName>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        telecom: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        gender: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        birth_date: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        deceased_boolean: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        deceased_date_time: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        address: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        marital_status: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        multiple_birth_boolean: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        multiple_birth_integer: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        photo: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        contact: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        communication: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        general_practitioner: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        managing_organization: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        link: Vec<Value>,
    }
);

domain_resource!(
    /// `Encounter`.
    Encounter {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identifier: Vec<Identifier>,
        status: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        status_history: Vec<Value>,
        class: Coding,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        class_history: Vec<Value>,
        #[serde(rename = "type", default, skip_serializing_if = "Vec::is_empty")]
        type_: Vec<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        service_type: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        priority: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        episode_of_care: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        based_on: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        participant: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        appointment: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        period: Option<Period>,
        #[serde(skip_serializing_if = "Option::is_none")]
        length: Option<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reason_code: Vec<CodeableConcept>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reason_reference: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        diagnosis: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        account: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        hospitalization: Option<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        location: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        service_provider: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        part_of: Option<Reference>,
    }
);

domain_resource!(
    /// `Observation`.
    Observation {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identifier: Vec<Identifier>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        based_on: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        part_of: Vec<Reference>,
        status: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        category: Vec<CodeableConcept>,
        code: CodeableConcept,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        focus: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encounter: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        effective_date_time: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        effective_period: Option<Period>,
        #[serde(skip_serializing_if = "Option::is_none")]
        effective_timing: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        effective_instant: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        issued: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        performer: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_quantity: Option<Quantity>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_codeable_concept: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_string: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_boolean: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_integer: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_range: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_ratio: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_sampled_data: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_time: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_date_time: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value_period: Option<Period>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_absent_reason: Option<CodeableConcept>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        interpretation: Vec<CodeableConcept>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        note: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body_site: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        specimen: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reference_range: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        has_member: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        derived_from: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        component: Vec<Value>,
    }
);

domain_resource!(
    /// `MedicationRequest`: an e-prescription.
    MedicationRequest {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identifier: Vec<Identifier>,
        status: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        status_reason: Option<CodeableConcept>,
        intent: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        category: Vec<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        priority: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        do_not_perform: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reported_boolean: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reported_reference: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        medication_codeable_concept: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        medication_reference: Option<Reference>,
        subject: Reference,
        #[serde(skip_serializing_if = "Option::is_none")]
        encounter: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        supporting_information: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        authored_on: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        requester: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        performer: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        performer_type: Option<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recorder: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reason_code: Vec<CodeableConcept>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reason_reference: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instantiates_canonical: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instantiates_uri: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        based_on: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group_identifier: Option<Identifier>,
        #[serde(skip_serializing_if = "Option::is_none")]
        course_of_therapy_type: Option<CodeableConcept>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        insurance: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        note: Vec<Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dosage_instruction: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dispense_request: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        substitution: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prior_prescription: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        detected_issue: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        event_history: Vec<Reference>,
    }
);

domain_resource!(
    /// `Consent`: here, above all a patient's choice on sharing their records across borders
    /// (scope `patient-privacy`).
    Consent {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identifier: Vec<Identifier>,
        status: String,
        scope: CodeableConcept,
        category: Vec<CodeableConcept>,
        #[serde(skip_serializing_if = "Option::is_none")]
        patient: Option<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        date_time: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        performer: Vec<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        organization: Vec<Reference>,
        #[serde(skip_serializing_if = "Option::is_none")]
        source_attachment: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        source_reference: Option<Reference>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        policy: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy_rule: Option<CodeableConcept>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        verification: Vec<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        provision: Option<ConsentProvision>,
    }
);

/// `Consent.provision`: the rule, permit or deny, with when and for what purposes it holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentProvision {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modifier_extension: Vec<Value>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action: Vec<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_label: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_period: Option<Period>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provision: Vec<Value>,
}
