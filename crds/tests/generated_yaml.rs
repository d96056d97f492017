//! `crds/*.yaml` and the chart's copies are generated from the Rust types; a stale file fails
//! here.

#[test]
fn committed_crd_files_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, expected) in meridian_crds::crd_files() {
        for path in [dir.join(name), dir.join("../charts/meridian-operator/crds").join(name)] {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == expected,
                "{} is stale: regenerate it with `cargo run -p meridian-crds --bin crdgen` and commit the result",
                path.display()
            );
        }
    }
}

/// The chart ships exactly the generated CRDs: none missing, none left over from a kind that
/// is gone.
#[test]
fn the_charts_crds_folder_holds_exactly_the_generated_files() {
    let chart_crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/meridian-operator/crds");
    let mut present: Vec<String> = std::fs::read_dir(&chart_crds)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut generated: Vec<String> = meridian_crds::crd_files()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    generated.sort();
    assert_eq!(present, generated);
}

#[test]
fn crds_are_cluster_scoped_with_status_subresource_and_short_names() {
    use kube::CustomResourceExt;
    for (crd, short) in [
        (meridian_crds::Country::crd(), "ctry"),
        (meridian_crds::Region::crd(), "reg"),
        (meridian_crds::PatientIndex::crd(), "mpi"),
    ] {
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_string()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(columns.contains(&"Ready"), "{columns:?}");
    }
}

#[test]
fn sizing_fields_are_spelled_with_the_unit_as_the_examples_write_it() {
    use kube::CustomResourceExt;
    let schema = serde_json::to_value(&meridian_crds::Region::crd().spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert!(spec["database"]["properties"]["storageGiB"].is_object(), "{spec:#}");
    assert!(spec["search"]["properties"]["volumeGiB"].is_object(), "{spec:#}");

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/regions/eu-central-1.yaml");
    let region: meridian_crds::Region = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(region.spec.database.unwrap().storage_gib, Some(100));
    assert_eq!(region.spec.search.unwrap().volume_gib, Some(50));
}
