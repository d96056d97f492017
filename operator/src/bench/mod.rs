//! `meridian bench ...`: the hot paths measured on this machine, each printing its figures
//! and ending with one line of `key=value` pairs for scripts.

pub mod booking;
pub mod search;

pub use booking::BookingBench;
pub use search::SearchBench;

/// The `p`th percentile of `sorted` (ascending), nearest rank; 0 when empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}
