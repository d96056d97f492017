//! Reads the watched folder: every `*.yaml` / `*.yml` below it, several documents per file,
//! of kind `Country`, `Region`, `PatientIndex` or `Secret` (for `external` Regions). A document with a field
//! the CRD's schema (or a core Secret's) does not know is refused, as an API server with
//! strict field validation refuses it.
//!
//! A `.meridianignore` file in the folder lists sub-folders (or files) to leave out, one
//! path relative to the folder per line (`#` starts a comment): `examples/` holds the
//! 249 countries of `examples/world/` for `meridian dev --manifests examples/world`
//! without `meridian dev` on `examples/` launching them too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use meridian_crds::{Country, PatientIndex, Region};

use crate::providers::StaticSecrets;

/// One object as read from disk, with the file it came from and when that was written.
#[derive(Clone, Debug)]
pub struct Loaded<K> {
    pub object: K,
    pub path: PathBuf,
    pub modified: SystemTime,
}

/// Everything the folder holds.
#[derive(Default)]
pub struct Manifests {
    pub countries: BTreeMap<String, Loaded<Country>>,
    pub regions: BTreeMap<String, Loaded<Region>>,
    pub indexes: BTreeMap<String, Loaded<PatientIndex>>,
    pub secrets: StaticSecrets,
    /// Files or documents that could not be read, with the reason.
    pub errors: Vec<String>,
    /// The files behind `errors`.
    pub unreadable: std::collections::BTreeSet<PathBuf>,
}

/// Reads `dir` recursively.
pub fn load(dir: &Path) -> std::io::Result<Manifests> {
    let mut files = Vec::new();
    let ignored = ignored(dir)?;
    collect(dir, &ignored, &mut files)?;
    files.sort();
    let mut out = Manifests::default();
    for path in files {
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // Removed between listing and reading: it will be gone on the next scan too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.errors.push(format!("{}: {e}", path.display()));
                out.unreadable.insert(path);
                continue;
            }
        };
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            if let Err(e) = read_document(doc, &path, modified, &mut out) {
                out.errors.push(format!("{} (document {}): {e}", path.display(), i + 1));
                out.unreadable.insert(path.clone());
            }
        }
    }
    Ok(out)
}

fn read_document(
    doc: serde_yaml_ng::Deserializer<'_>,
    path: &Path,
    modified: SystemTime,
    out: &mut Manifests,
) -> Result<(), String> {
    use serde::Deserialize;
    let value = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Ok(()); // an empty document, e.g. a trailing `---`
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(format!("{kind} has no metadata.name"));
    }
    // An API server with strict field validation refuses what its schema does not know;
    // serde would drop it silently (a misspelt field would quietly mean its default).
    let unknown = crate::schema::unknown_fields(&value)?;
    if !unknown.is_empty() {
        let s = if unknown.len() == 1 { "" } else { "s" };
        return Err(format!("{kind} {name}: unknown field{s} {}", unknown.join(", ")));
    }
    match kind.as_str() {
        "Country" => insert(&mut out.countries, value, &name, path, modified)?,
        "Region" => insert(&mut out.regions, value, &name, path, modified)?,
        "PatientIndex" => insert(&mut out.indexes, value, &name, path, modified)?,
        "Secret" => {
            let namespace = value
                .pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default");
            out.secrets.insert(namespace, &name, secret_data(&value)?);
        }
        other => {
            return Err(format!(
                "kind {other:?} is not one Meridian reads (Country, Region, PatientIndex, Secret)"
            ));
        }
    }
    Ok(())
}

/// Adds the object `value` of kind `K` to `objects`, unless one of its name is there already.
fn insert<K: serde::de::DeserializeOwned>(
    objects: &mut BTreeMap<String, Loaded<K>>,
    value: serde_json::Value,
    name: &str,
    path: &Path,
    modified: SystemTime,
) -> Result<(), String> {
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    if let Some(existing) = objects.get(name) {
        return Err(format!("{kind} {name} is also defined in {}", existing.path.display()));
    }
    let object: K = serde_json::from_value(value).map_err(|e| format!("{kind} {name}: {e}"))?;
    objects.insert(
        name.to_string(),
        Loaded {
            object,
            path: path.to_path_buf(),
            modified,
        },
    );
    Ok(())
}

/// `stringData` as is, `data` base64-decoded.
fn secret_data(value: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    let mut data = BTreeMap::new();
    if let Some(map) = value.get("data").and_then(|d| d.as_object()) {
        for (key, encoded) in map {
            let bytes: k8s_openapi::ByteString =
                serde_json::from_value(encoded.clone()).map_err(|e| format!("data.{key}: {e}"))?;
            data.insert(
                key.clone(),
                String::from_utf8(bytes.0).map_err(|_| format!("data.{key} is not UTF-8"))?,
            );
        }
    }
    if let Some(map) = value.get("stringData").and_then(|d| d.as_object()) {
        for (key, v) in map {
            data.insert(key.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    Ok(data)
}

/// The paths `dir/.meridianignore` names, below `dir`.
fn ignored(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let text = match std::fs::read_to_string(dir.join(IGNORE_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim().trim_matches('/'))
        .filter(|line| !line.is_empty())
        .map(|line| dir.join(line))
        .collect())
}

/// The file in a manifest folder that lists what to leave out.
pub const IGNORE_FILE: &str = ".meridianignore";

fn collect(dir: &Path, ignored: &[PathBuf], files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if ignored.contains(&path) {
            continue;
        }
        if path.is_dir() {
            collect(&path, ignored, files)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use super::super::store::{Objects, SyncReport};
    use super::*;

    const REGION: &str = include_str!("../../../examples/regions/eu-central-1.yaml");

    #[test]
    fn the_examples_folder_leaves_out_what_its_ignore_file_names() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let loaded = load(&examples).unwrap();
        assert_eq!(loaded.errors, Vec::<String>::new());
        let countries: Vec<&str> = loaded.countries.keys().map(String::as_str).collect();
        assert_eq!(countries, ["de", "eg", "es", "fr", "gb", "it", "jp", "th"]);
        assert_eq!(loaded.regions.len(), 6);
        let world = load(&examples.join("world")).unwrap();
        assert_eq!(world.errors, Vec::<String>::new());
        assert_eq!((world.countries.len(), world.regions.len()), (249, 6));

        // Comments, blank lines and a trailing slash; a file as well as a folder.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("more")).unwrap();
        std::fs::write(dir.path().join("more/a.yaml"), REGION).unwrap();
        std::fs::write(dir.path().join("b.yaml"), REGION.replace("eu-central-1\n", "b\n")).unwrap();
        std::fs::write(
            dir.path().join(IGNORE_FILE),
            "# sets of their own\n\nmore/  # a folder\nb.yaml\n",
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert!(
            loaded.regions.is_empty() && loaded.errors.is_empty(),
            "{:?}",
            loaded.errors
        );
        std::fs::write(dir.path().join(IGNORE_FILE), "b.yaml\n").unwrap();
        assert_eq!(
            load(dir.path()).unwrap().regions.keys().collect::<Vec<_>>(),
            ["eu-central-1"]
        );
    }

    #[test]
    fn an_unknown_field_is_a_manifest_error_naming_its_path_and_keeps_the_previous_object() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eu-central-1.yaml");
        std::fs::write(&file, REGION).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.errors, Vec::<String>::new());
        let mut regions = Objects::<Region>::default();
        regions.sync(
            &loaded.regions,
            &loaded.unreadable,
            &mut SyncReport::default(),
            Instant::now(),
        );
        assert_eq!(regions.entries["eu-central-1"].object.metadata.generation, Some(1));

        // The spelling the CRD had before, with a new size: refused, nothing changes.
        let old_spelling = REGION
            .replace("storageGiB: 100", "storageGib: 500")
            .replace("instances: 2", "instances: 3");
        std::fs::write(&file, old_spelling).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(
            loaded.errors,
            [format!(
                "{} (document 1): Region eu-central-1: unknown field spec.database.storageGib",
                file.display()
            )]
        );
        assert!(loaded.regions.is_empty());
        assert_eq!(loaded.unreadable, BTreeSet::from([file.clone()]));
        let mut report = SyncReport::default();
        regions.sync(&loaded.regions, &loaded.unreadable, &mut report, Instant::now());
        let kept = &regions.entries["eu-central-1"].object;
        assert_eq!(kept.metadata.generation, Some(1));
        assert!(kept.metadata.deletion_timestamp.is_none());
        assert_eq!(kept.spec.database.as_ref().unwrap().instances, Some(2));
        assert!(report.changed.is_empty() && report.removed.is_empty());

        // Several at once, metadata and a Secret's fields included.
        std::fs::write(
            &file,
            REGION
                .replace("metadata:\n", "metadata:\n  lables: {a: b}\n")
                .replace("deletionPolicy", "replicas: 2\n  deletionPolicy")
                + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringdata: {url: x}\n",
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.errors.len(), 2, "{:?}", loaded.errors);
        assert!(
            loaded.errors[0].ends_with("Region eu-central-1: unknown fields metadata.lables, spec.replicas"),
            "{:?}",
            loaded.errors
        );
        assert!(
            loaded.errors[1].ends_with("(document 2): Secret db: unknown field stringdata"),
            "{:?}",
            loaded.errors
        );
    }
}
