//! Time to complete as a fixed log-scale histogram: 8 buckets per doubling
//! of milliseconds, the same edges on every day, so per-day counters sum
//! into one histogram for any range. A quantile read from it is within
//! `MAX_RELATIVE_ERROR` of the exact one.

/// Buckets per doubling of the duration.
const PER_DOUBLING: f64 = 8.0;

/// A bucket spans a ratio of 2^(1/8); it reports its geometric middle, at
/// most 2^(1/16) away from any duration it holds: 4.43 %.
pub const MAX_RELATIVE_ERROR: f64 = 0.044_273_782_427_414;

/// The bucket of a duration: 0 for under 1 ms (reported as 0, an absolute
/// error under 1 ms), else 1 + floor(8 · log2(ms)).
pub fn bucket_of(duration_micros: i64) -> u32 {
    let millis = duration_micros as f64 / 1_000.0;
    if millis < 1.0 {
        return 0;
    }
    // A finite positive f64 ≥ 1 ms up to i64::MAX µs gives at most ~420.
    1 + (PER_DOUBLING * millis.log2()).floor() as u32
}

/// The duration a bucket reports: its geometric middle, in microseconds.
pub fn representative_micros(bucket: u32) -> i64 {
    if bucket == 0 {
        return 0;
    }
    let millis = ((f64::from(bucket) - 0.5) / PER_DOUBLING).exp2();
    (millis * 1_000.0).round() as i64
}

/// The nearest-rank quantile `q` (0 < q ≤ 1: the ⌈q·n⌉-th smallest) of
/// the durations counted in `buckets` (bucket, count), as its bucket's
/// representative. `None` when nothing is counted.
pub fn quantile_micros(buckets: &[(u32, u64)], q: f64) -> Option<i64> {
    let mut sorted = buckets.to_vec();
    sorted.sort_unstable();
    let total: u64 = sorted.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, count) in sorted {
        seen += count;
        if seen >= rank {
            return Some(representative_micros(bucket));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_is_within_the_bound_of_its_bucket() {
        let mut d = 1_000i64;
        while d < 90 * 86_400 * 1_000_000 {
            let reported = representative_micros(bucket_of(d)) as f64;
            let err = (reported - d as f64).abs() / d as f64;
            assert!(err <= MAX_RELATIVE_ERROR + 1e-9, "{d}: {err}");
            d = d + d / 7 + 13;
        }
        assert_eq!(bucket_of(999), 0);
        assert_eq!(representative_micros(0), 0);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let buckets: Vec<(u32, u64)> = [10_000, 20_000, 40_000, 80_000]
            .iter()
            .map(|&d| (bucket_of(d), 1))
            .collect();
        let median = quantile_micros(&buckets, 0.5).expect("some");
        assert_eq!(median, representative_micros(bucket_of(20_000)));
        let p90 = quantile_micros(&buckets, 0.9).expect("some");
        assert_eq!(p90, representative_micros(bucket_of(80_000)));
        assert_eq!(quantile_micros(&[], 0.5), None);
    }
}
