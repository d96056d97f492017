//! Manifests checked against the CRDs' generated `openAPIV3Schema` as an API server with
//! strict field validation checks them: unknown fields refused at every depth (metadata
//! too), then types, required fields, enums, patterns, minimum/maximum, and the CEL rules
//! (`x-kubernetes-validations`). `meridian dev` and `meridian plan` read manifests that never
//! went through an API server; this is what makes them refuse what a cluster would refuse.
//!
//! The structural schema is handed to a JSON-schema validator (`jsonschema`, draft 4, the
//! dialect OpenAPI v3 schemas build on) after the two things an API server does that JSON
//! Schema does not: `additionalProperties: false` wherever a schema lists `properties` and
//! does not say `x-kubernetes-preserve-unknown-fields`, and `nullable` as a `null` type. The
//! CEL rules are evaluated by kube's `cel` feature on the untouched CRD schema.

use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::schemars;
use kube::CustomResourceExt;
use meridian_crds::{Country, PatientIndex, Region};
use serde_json::{Value, json};

use crate::validate::FieldError;

/// What an API server would say about one manifest, empty when it would accept it.
/// `Err` when its kind is none that Meridian reads.
pub fn check(object: &Value) -> Result<Vec<FieldError>, String> {
    Ok(schema_for(object)?.check(object))
}

/// Only the fields the schema does not know (as `spec.database.storageGib`): what serde
/// would silently drop. Whatever else is wrong is left to the readers and their
/// conditions.
pub fn unknown_fields(object: &Value) -> Result<Vec<String>, String> {
    Ok(schema_for(object)?.unknown_fields(object))
}

/// The compiled schema of one kind.
struct KindSchema {
    validator: jsonschema::Validator,
    /// The CRD's schema as generated, with its CEL rules; `None` for core kinds.
    cel: Option<Value>,
}

static COUNTRY: LazyLock<KindSchema> = LazyLock::new(KindSchema::custom_resource::<Country>);
static REGION: LazyLock<KindSchema> = LazyLock::new(KindSchema::custom_resource::<Region>);
static PATIENT_INDEX: LazyLock<KindSchema> = LazyLock::new(KindSchema::custom_resource::<PatientIndex>);
static SECRET: LazyLock<KindSchema> = LazyLock::new(KindSchema::secret);

fn schema_for(object: &Value) -> Result<&'static KindSchema, String> {
    match object.get("kind").and_then(Value::as_str).unwrap_or_default() {
        "Country" => Ok(&COUNTRY),
        "Region" => Ok(&REGION),
        "PatientIndex" => Ok(&PATIENT_INDEX),
        "Secret" => Ok(&SECRET),
        other => Err(format!(
            "kind {other:?} is not one Meridian reads (Country, Region, PatientIndex, Secret)"
        )),
    }
}

impl KindSchema {
    fn custom_resource<K: CustomResourceExt>() -> Self {
        let crd = K::crd();
        let version = &crd.spec.versions[0];
        let generated = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("a derived CRD has an openAPIV3Schema"),
        )
        .expect("the CRD schema serializes");
        let mut schema = generated.clone();
        // The API server routes by apiVersion and kind, and checks metadata as ObjectMeta.
        schema["properties"]["apiVersion"] = json!({"enum": [format!("{}/{}", crd.spec.group, version.name)]});
        schema["properties"]["kind"] = json!({"enum": [crd.spec.names.kind]});
        schema["properties"]["metadata"] = object_meta();
        Self::compile(schema, Some(generated))
    }

    fn secret() -> Self {
        let mut schema = openapi_schema_of::<Secret>();
        schema["properties"]["apiVersion"] = json!({"enum": ["v1"]});
        schema["properties"]["kind"] = json!({"enum": ["Secret"]});
        schema["properties"]["metadata"] = object_meta();
        Self::compile(schema, None)
    }

    fn compile(mut schema: Value, cel: Option<Value>) -> Self {
        structural(&mut schema);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&schema)
            .expect("the generated schema is a valid JSON schema");
        Self { validator, cel }
    }

    fn check(&self, object: &Value) -> Vec<FieldError> {
        let mut errors: Vec<FieldError> = self.validator.iter_errors(object).flat_map(field_errors).collect();
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        // Rules on a value of the wrong shape say nothing useful: like the API server,
        // report the shape first.
        if errors.is_empty()
            && let Some(cel) = &self.cel
            && let Err(failed) = kube::core::cel::Validator::new().validate(cel, object, None)
        {
            errors.extend(failed.into_vec().into_iter().map(|e| FieldError {
                field: if e.field_path.is_empty() {
                    "<root>".into()
                } else {
                    e.field_path
                },
                message: e.message,
            }));
        }
        errors
    }

    fn unknown_fields(&self, object: &Value) -> Vec<String> {
        let mut unknown: Vec<String> = self
            .validator
            .iter_errors(object)
            .filter(|e| {
                matches!(
                    e.kind(),
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
                )
            })
            .flat_map(field_errors)
            .map(|e| e.field)
            .collect();
        unknown.sort();
        unknown.dedup();
        unknown
    }
}

/// One validator error as field errors: an object with unknown fields gives one per field.
fn field_errors(error: jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let at = dotted(error.instance_path());
    let under = |name: &str| {
        if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}.{name}")
        }
    };
    match error.kind() {
        Kind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| FieldError {
                field: under(name),
                message: "unknown field".into(),
            })
            .collect(),
        Kind::Required { property } => vec![FieldError {
            field: under(property.as_str().unwrap_or_default()),
            message: "Required value".into(),
        }],
        _ => vec![FieldError {
            field: if at.is_empty() { "<root>".into() } else { at },
            message: error.to_string(),
        }],
    }
}

/// `/spec/languages/0` as `spec.languages[0]`, the way Kubernetes names fields.
fn dotted(location: &jsonschema::paths::Location) -> String {
    let mut out = String::new();
    for segment in location.iter() {
        match segment {
            jsonschema::paths::LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
            jsonschema::paths::LocationSegment::Property(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&name);
            }
        }
    }
    out
}

/// ObjectMeta's schema, as the API server checks every object's metadata.
fn object_meta() -> Value {
    openapi_schema_of::<ObjectMeta>()
}

/// A type's OpenAPI v3 schema with every sub-schema inlined (no `$ref`s).
fn openapi_schema_of<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schema serializes");
    if let Some(map) = schema.as_object_mut() {
        map.remove("title");
        map.remove("components");
        map.remove("definitions");
    }
    schema
}

/// Applies what an API server does with a structural schema and JSON Schema does not:
/// unknown fields are refused where the schema lists `properties` (unless it preserves
/// unknown fields), and `nullable: true` admits `null`.
fn structural(node: &mut Value) {
    let Value::Object(map) = node else { return };
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !preserves && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    if map.remove("nullable") == Some(Value::Bool(true)) {
        if let Some(Value::String(ty)) = map.get("type").cloned() {
            map.insert("type".into(), json!([ty, "null"]));
        }
        if let Some(Value::Array(values)) = map.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(structural);
    }
    for keyword in ["items", "additionalProperties", "not"] {
        if let Some(sub) = map.get_mut(keyword) {
            structural(sub);
        }
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = map.get_mut(keyword) {
            subs.iter_mut().for_each(structural);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Value {
        serde_yaml_ng::from_str(include_str!("../../examples/regions/eu-central-1.yaml")).unwrap()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn an_example_region_is_accepted() {
        assert_eq!(check(&region()).unwrap(), []);
        assert_eq!(unknown_fields(&region()).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn unknown_fields_are_named_at_any_depth_metadata_included() {
        let mut r = region();
        r["spec"]["database"]["storageGib"] = json!(100);
        r["spec"]["replicas"] = json!(2);
        r["metadata"]["lables"] = json!({"a": "b"});
        r["extra"] = json!(true);
        assert_eq!(
            unknown_fields(&r).unwrap(),
            ["extra", "metadata.lables", "spec.database.storageGib", "spec.replicas"]
        );
        let errors = check(&r).unwrap();
        assert!(errors.iter().all(|e| e.message == "unknown field"), "{errors:?}");
    }

    #[test]
    fn types_required_enums_patterns_and_ranges_are_checked() {
        let mut r = region();
        r["spec"]["database"]["storageGiB"] = json!(0);
        r["spec"]["search"]["volumeGiB"] = json!("50");
        r["spec"]["cloudRegion"] = json!("Frankfurt");
        r["spec"]["isolation"] = json!("private");
        r["spec"].as_object_mut().unwrap().remove("provider");
        let errors = check(&r).unwrap();
        let mut named = fields(&errors);
        named.sort();
        assert_eq!(
            named,
            [
                "spec.cloudRegion",
                "spec.database.storageGiB",
                "spec.isolation",
                "spec.provider",
                "spec.search.volumeGiB"
            ],
            "{errors:?}"
        );
        let mut wrong = region();
        wrong["apiVersion"] = json!("platform.meridian.dev/v1");
        assert_eq!(fields(&check(&wrong).unwrap()), ["apiVersion"]);
    }

    #[test]
    fn cel_rules_are_evaluated() {
        let mut r = region();
        r["spec"]["provider"] = json!("external");
        let errors = check(&r).unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("spec.external is required"), "{errors:?}");
    }

    #[test]
    fn secrets_are_checked_as_core_secrets_and_other_kinds_are_refused() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "x"},
                            "stringData": {"url": "postgres://h/db"}});
        assert_eq!(check(&secret).unwrap(), []);
        let mut typo = secret.clone();
        typo["stringdata"] = typo["stringData"].take();
        typo.as_object_mut().unwrap().remove("stringData");
        assert_eq!(unknown_fields(&typo).unwrap(), ["stringdata"]);
        assert!(check(&json!({"kind": "ConfigMap"})).is_err());
    }
}
