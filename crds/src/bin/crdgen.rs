//! Writes the generated CRDs into `crds/*.yaml` and into the chart's `crds/` folder (Helm
//! installs the CRDs from there before the templates): `cargo run -p meridian-crds --bin crdgen`.
use std::path::Path;

fn main() -> std::io::Result<()> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart_dir = crate_dir.join("../charts/meridian-operator/crds");
    for (name, yaml) in meridian_crds::crd_files() {
        for dir in [crate_dir, chart_dir.as_path()] {
            let path = dir.join(name);
            std::fs::write(&path, &yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
