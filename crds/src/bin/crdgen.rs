//! Writes the generated CRDs into `crds/*.yaml`: `cargo run -p meridian-crds --bin crdgen`.
use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, yaml) in meridian_crds::crd_files() {
        let path = dir.join(name);
        std::fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
