//! Every manifest under `examples/` is one a real API server accepts: checked against the
//! generated CRDs' `openAPIV3Schema` (the same schema `crds/*.yaml` holds, see the crds
//! crate's staleness test) with unknown fields refused, as `kubectl apply` with strict field
//! validation does, plus required fields, enums, patterns, ranges and the CEL rules.

use std::path::{Path, PathBuf};

use meridian_operator::schema;
use meridian_operator::validate::FieldError;
use serde::Deserialize;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every document of every manifest file, with where it came from.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn every_example_manifest_passes_the_crd_schema_with_unknown_fields_refused() {
    let mut files = Vec::new();
    yaml_files(&examples(), &mut files);
    files.sort();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for file in &files {
        for (i, doc) in documents(&std::fs::read_to_string(file).unwrap()).iter().enumerate() {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let errors = schema::check(doc).unwrap_or_else(|e| panic!("{} (document {}): {e}", file.display(), i + 1));
            assert_eq!(errors, [], "{} (document {}) would be refused", file.display(), i + 1);
            *kinds.entry(kind).or_default() += 1;
        }
    }
    // The walk found the examples the README applies (not an empty folder passing vacuously).
    assert!(kinds.get("Region").is_some_and(|n| *n >= 4), "{kinds:?}");
    assert!(kinds.get("Country").is_some_and(|n| *n >= 5), "{kinds:?}");
    assert_eq!(kinds.get("PatientIndex"), Some(&1), "{kinds:?}");
}

#[test]
fn the_old_spelling_and_fields_the_crd_does_not_have_are_refused_by_path() {
    let region = std::fs::read_to_string(examples().join("regions/eu-west-1.yaml")).unwrap();
    let old = region
        .replace("storageGiB", "storageGib")
        .replace("volumeGiB", "volumeGib");
    let errors = schema::check(&documents(&old)[0]).unwrap();
    assert_eq!(
        errors,
        [
            FieldError {
                field: "spec.database.storageGib".into(),
                message: "unknown field".into()
            },
            FieldError {
                field: "spec.search.volumeGib".into(),
                message: "unknown field".into()
            },
        ]
    );

    let country = std::fs::read_to_string(examples().join("countries/de.yaml")).unwrap();
    let extra = country
        .replace("  features:\n", "  features:\n    teleHealth: true\n")
        .replace("metadata:\n", "metadata:\n  label: {team: de}\n");
    let errors = schema::check(&documents(&extra)[0]).unwrap();
    assert_eq!(
        fields(&errors),
        ["metadata.label", "spec.features.teleHealth"],
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| e.message == "unknown field"), "{errors:?}");
}

#[test]
fn what_else_the_api_server_checks_is_checked_too() {
    let country = std::fs::read_to_string(examples().join("countries/de.yaml")).unwrap();
    // A pattern, a range and an enum.
    let bad = country
        .replace("code: DE", "code: de")
        .replace("retentionYears: 10", "retentionYears: 0")
        .replace("residency: strict", "residency: local");
    let errors = schema::check(&documents(&bad)[0]).unwrap();
    let mut named = fields(&errors);
    named.sort();
    assert_eq!(
        named,
        ["spec.code", "spec.regulatory.retentionYears", "spec.residency"],
        "{errors:?}"
    );
    // A CEL rule: strict residency needs the allowed cloud regions.
    let no_allowed = country.replace("  allowedCloudRegions: [eu-central-1]\n", "");
    let errors = schema::check(&documents(&no_allowed)[0]).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("residency: strict requires spec.allowedCloudRegions"),
        "{errors:?}"
    );
}
