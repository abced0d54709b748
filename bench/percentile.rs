//! The one percentile the benchmark drivers report (`driver.rs`,
//! `scale.rs`): nearest rank over the sorted samples, so a reported value
//! is always one that was measured.

/// The `p`th percentile (0 to 100) of `v`; NaN when `v` is empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
}
