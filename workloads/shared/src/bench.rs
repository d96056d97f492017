//! What the workloads' benchmarks (`meridian bench ...`) share: each prints its figures and
//! ends with one line of `key=value` pairs for scripts.

/// The `p`th percentile of `sorted` (ascending), nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}
