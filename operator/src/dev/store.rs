//! The objects `meridian dev` holds, as a cluster would: metadata the API server fills in
//! (uid, generation, creation and deletion timestamps, finalizers) and status written back
//! by the reconcilers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use meridian_crds::{Country, FINALIZER, PatientIndex, Region};
use serde::Serialize;

use super::manifests::Loaded;
use crate::controller::Next;
use crate::validate::{self, FieldError};

/// How long a manifest must be gone from the folder before its object is deleted.
pub const DELETE_AFTER_MISSING: std::time::Duration = std::time::Duration::from_secs(1);

/// What the store needs to know about a kind.
pub trait Managed: Clone + Serialize {
    const PLURAL: &'static str;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    fn spec_json(&self) -> serde_json::Value;
    /// Takes spec, labels and annotations from `desired`, keeping metadata and status.
    fn take_spec(&mut self, desired: &Self);
    /// The API server's transition rules (immutable fields).
    fn check_update(new: &Self, old: &Self) -> Vec<FieldError>;
}

macro_rules! managed {
    ($kind:ty, $plural:literal, $check:path) => {
        impl Managed for $kind {
            const PLURAL: &'static str = $plural;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn spec_json(&self) -> serde_json::Value {
                serde_json::to_value(&self.spec).expect("spec serializes")
            }
            fn take_spec(&mut self, desired: &Self) {
                self.spec = desired.spec.clone();
                self.metadata.labels = desired.metadata.labels.clone();
                self.metadata.annotations = desired.metadata.annotations.clone();
            }
            fn check_update(new: &Self, old: &Self) -> Vec<FieldError> {
                $check(new, old)
            }
        }
    };
}
managed!(Country, "countries", validate::country_update);
managed!(Region, "regions", validate::region_update);
managed!(PatientIndex, "patientindexes", validate::patient_index_update);

/// One stored object and its bookkeeping.
#[derive(Clone)]
pub struct Entry<K> {
    pub object: K,
    /// When the manifest behind the current generation was written (for timings).
    pub written: SystemTime,
    /// When to reconcile next; `None` means "only on change".
    pub due: Option<Instant>,
    /// Since when its manifest has been missing from the folder.
    pub missing_since: Option<Instant>,
    /// The file it was read from.
    pub path: std::path::PathBuf,
}

/// What one sync with the folder changed, as lines to print.
#[derive(Default)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub rejected: Vec<String>,
}

/// The objects of one kind, by name.
pub struct Objects<K> {
    pub entries: BTreeMap<String, Entry<K>>,
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Managed> Objects<K> {
    /// Brings the store in line with the folder: new objects are created, changed specs
    /// bump the generation, vanished objects get a deletion timestamp (their finalizer
    /// keeps them until cleanup is done). Objects from files in `unreadable` are kept as
    /// they are: a manifest saved half-written is an error to fix, not a deletion.
    pub fn sync(
        &mut self,
        desired: &BTreeMap<String, Loaded<K>>,
        unreadable: &BTreeSet<std::path::PathBuf>,
        report: &mut SyncReport,
        now: Instant,
    ) {
        for (name, loaded) in desired {
            match self.entries.get_mut(name) {
                None => {
                    let mut object = loaded.object.clone();
                    let meta = object.meta_mut();
                    meta.uid = Some(uuid::Uuid::new_v4().to_string());
                    meta.generation = Some(1);
                    meta.creation_timestamp = Some(Time(Timestamp::now()));
                    meta.finalizers = Some(vec![FINALIZER.to_string()]);
                    meta.resource_version = Some("1".into());
                    self.entries.insert(
                        name.clone(),
                        Entry {
                            object,
                            written: loaded.modified,
                            due: Some(now),
                            missing_since: None,
                            path: loaded.path.clone(),
                        },
                    );
                    report.added.push(format!("{} {name}", K::PLURAL));
                }
                Some(entry) if entry.object.meta().deletion_timestamp.is_some() => {
                    // Re-created while its deletion is still running: finish that first.
                }
                Some(entry) => {
                    entry.missing_since = None;
                    entry.path = loaded.path.clone();
                    let spec_changed = entry.object.spec_json() != loaded.object.spec_json();
                    let meta_changed = entry.object.meta().annotations != loaded.object.meta().annotations
                        || entry.object.meta().labels != loaded.object.meta().labels;
                    if !spec_changed && !meta_changed {
                        continue;
                    }
                    let errors = K::check_update(&loaded.object, &entry.object);
                    if !errors.is_empty() {
                        report.rejected.push(format!(
                            "{} {name}: update refused: {}",
                            K::PLURAL,
                            validate::describe(&errors)
                        ));
                        continue;
                    }
                    entry.object.take_spec(&loaded.object);
                    let meta = entry.object.meta_mut();
                    if spec_changed {
                        meta.generation = Some(meta.generation.unwrap_or(0) + 1);
                        entry.written = loaded.modified;
                    }
                    bump(meta);
                    entry.due = Some(now);
                    report.changed.push(format!("{} {name}", K::PLURAL));
                }
            }
        }
        for (name, entry) in self.entries.iter_mut() {
            if desired.contains_key(name)
                || entry.object.meta().deletion_timestamp.is_some()
                || unreadable.contains(&entry.path)
            {
                entry.missing_since = None;
                continue;
            }
            // Editors that save by renaming leave a file missing for an instant; only a
            // manifest gone for a while is a deletion (which may drop data).
            let since = *entry.missing_since.get_or_insert(now);
            if now.duration_since(since) >= DELETE_AFTER_MISSING {
                let meta = entry.object.meta_mut();
                meta.deletion_timestamp = Some(Time(Timestamp::now()));
                bump(meta);
                entry.due = Some(now);
                report.removed.push(format!("{} {name}", K::PLURAL));
            }
        }
    }

    /// Names whose reconcile is due.
    pub fn due(&self, now: Instant) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.due.is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// When to reconcile `name` next.
    pub fn schedule(&mut self, name: &str, next: Next) {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.due = match next {
                Next::AwaitChange => None,
                Next::Requeue(after) => Some(Instant::now() + after),
            };
        }
    }

    /// The objects, for reconcilers that look across them.
    pub fn objects(&self) -> Vec<K> {
        self.entries.values().map(|e| e.object.clone()).collect()
    }
}

fn bump(meta: &mut ObjectMeta) {
    let rv = meta
        .resource_version
        .as_deref()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    meta.resource_version = Some((rv + 1).to_string());
}

/// Everything `meridian dev` holds.
#[derive(Default)]
pub struct Store {
    pub countries: Objects<Country>,
    pub regions: Objects<Region>,
    pub indexes: Objects<PatientIndex>,
}

impl Store {
    /// Writes a new status, bumping the resource version when it changed. Returns whether it changed.
    pub fn set_country_status(&mut self, name: &str, status: meridian_crds::CountryStatus) -> bool {
        set_status(
            self.countries.entries.get_mut(name),
            status,
            |c| &mut c.status,
            |c| &mut c.metadata,
        )
    }

    /// See [`Store::set_country_status`].
    pub fn set_region_status(&mut self, name: &str, status: meridian_crds::RegionStatus) -> bool {
        set_status(
            self.regions.entries.get_mut(name),
            status,
            |r| &mut r.status,
            |r| &mut r.metadata,
        )
    }

    /// See [`Store::set_country_status`].
    pub fn set_index_status(&mut self, name: &str, status: meridian_crds::PatientIndexStatus) -> bool {
        set_status(
            self.indexes.entries.get_mut(name),
            status,
            |i| &mut i.status,
            |i| &mut i.metadata,
        )
    }
}

fn set_status<K, S: PartialEq>(
    entry: Option<&mut Entry<K>>,
    status: S,
    slot: impl Fn(&mut K) -> &mut Option<S>,
    meta: impl Fn(&mut K) -> &mut ObjectMeta,
) -> bool {
    let Some(entry) = entry else { return false };
    let current = slot(&mut entry.object);
    if current.as_ref() == Some(&status) {
        return false;
    }
    *current = Some(status);
    bump(meta(&mut entry.object));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(yaml: &str) -> BTreeMap<String, Loaded<Country>> {
        let object: Country = serde_yaml_ng::from_str(yaml).unwrap();
        let name = object.metadata.name.clone().unwrap();
        BTreeMap::from([(
            name,
            Loaded {
                object,
                path: "de.yaml".into(),
                modified: SystemTime::now(),
            },
        )])
    }

    fn none() -> BTreeSet<std::path::PathBuf> {
        BTreeSet::new()
    }

    const DE: &str = include_str!("../../../examples/countries/de.yaml");

    #[test]
    fn objects_get_server_side_metadata_generations_and_deletion_timestamps() {
        let mut objects = Objects::<Country>::default();
        let mut report = SyncReport::default();
        let now = Instant::now();
        objects.sync(&loaded(DE), &none(), &mut report, now);
        let meta = &objects.entries["de"].object.metadata;
        assert_eq!(
            (meta.generation, meta.finalizers.as_deref()),
            (Some(1), Some(&[FINALIZER.to_string()][..]))
        );
        assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
        assert_eq!(report.added, ["countries de"]);

        // Unchanged: nothing happens; a changed spec bumps the generation.
        objects.entries.get_mut("de").unwrap().due = None;
        objects.sync(&loaded(DE), &none(), &mut SyncReport::default(), now);
        assert!(objects.entries["de"].due.is_none());
        objects.sync(
            &loaded(
                &DE.replace("suspend: false", "suspend: true")
                    .replace("deletionPolicy: Retain", "deletionPolicy: Delete"),
            ),
            &none(),
            &mut report,
            now,
        );
        assert_eq!(objects.entries["de"].object.metadata.generation, Some(2));
        assert_eq!(objects.due(now).len(), 1);

        objects.sync(&BTreeMap::new(), &none(), &mut report, now);
        assert!(
            objects.entries["de"].object.metadata.deletion_timestamp.is_none(),
            "missing for an instant is no deletion"
        );
        let later = now + DELETE_AFTER_MISSING;
        objects.sync(
            &BTreeMap::new(),
            &BTreeSet::from(["de.yaml".into()]),
            &mut report,
            later,
        );
        assert!(
            objects.entries["de"].object.metadata.deletion_timestamp.is_none(),
            "a broken file is no deletion"
        );
        objects.sync(&BTreeMap::new(), &none(), &mut report, later);
        objects.sync(&BTreeMap::new(), &none(), &mut report, later + DELETE_AFTER_MISSING);
        assert!(
            objects.entries["de"].object.metadata.deletion_timestamp.is_some(),
            "kept until its finalizer is done"
        );
        assert_eq!(report.removed, ["countries de"]);
    }

    #[test]
    fn an_edit_to_an_immutable_field_is_refused_like_an_api_server_would() {
        let mut objects = Objects::<Country>::default();
        let now = Instant::now();
        objects.sync(&loaded(DE), &none(), &mut SyncReport::default(), now);
        let mut report = SyncReport::default();
        objects.sync(
            &loaded(&DE.replace("region: eu-central-1", "region: eu-west-1")),
            &none(),
            &mut report,
            now,
        );
        assert_eq!(objects.entries["de"].object.spec.region, "eu-central-1");
        assert_eq!(objects.entries["de"].object.metadata.generation, Some(1));
        assert!(
            report.rejected[0].contains("spec.region is immutable"),
            "{:?}",
            report.rejected
        );
    }
}
