//! Latency statistics: nearest-rank percentiles over recorded samples.
//!
//! Samples are kept whole (every section bounds its request count), so the percentiles are
//! exact, not estimated from buckets. Nothing here measures time.

use std::time::Duration;

use serde::Serialize;

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) min_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
}

impl Summary {
    /// `None` for no samples: a section that measured nothing must say so, not print zeros.
    pub(crate) fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let mean_us = us.iter().sum::<f64>() / us.len() as f64;
        Some(Summary {
            n: us.len(),
            min_us: us[0],
            p50_us: percentile(&us, 50.0),
            p90_us: percentile(&us, 90.0),
            p99_us: percentile(&us, 99.0),
            p999_us: percentile(&us, 99.9),
            max_us: us[us.len() - 1],
            mean_us,
        })
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest sample with at least
/// `p` % of the samples at or below it. With fewer than 1000 samples p99.9 is the maximum,
/// which is what a reader should assume anyway.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    // The epsilon absorbs binary rounding: 99.9 % of 1000 must be rank 999, not 1000.
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// The median of unsorted values (`None` when empty).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(percentile(&v, 50.0))
}

/// Least-squares slope of `y` over `x` (`None` with fewer than two distinct `x`).
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_to(n: usize) -> Vec<f64> {
        (1..=n).map(|i| i as f64).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = one_to(1000);
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        // The smallest sample, never index -1.
        assert_eq!(percentile(&v, 0.0), 1.0);
    }

    #[test]
    fn small_samples_round_up_to_a_real_sample() {
        let v = one_to(10);
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 99.0), 10.0);
        assert_eq!(percentile(&[7.0], 99.9), 7.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_is_in_microseconds_and_sorted_internally() {
        let samples: Vec<Duration> = [30, 10, 20].map(Duration::from_micros).to_vec();
        let s = Summary::of(&samples).expect("three samples");
        assert_eq!(s.n, 3);
        assert_eq!(s.min_us, 10.0);
        assert_eq!(s.p50_us, 20.0);
        assert_eq!(s.max_us, 30.0);
        assert_eq!(s.mean_us, 20.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn slope_of_a_line() {
        let pts = [(0.0, 100.0), (100.0, 150.0), (200.0, 200.0)];
        assert_eq!(slope(&pts), Some(0.5));
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
