//! What the store's Redis connection did since it was made: connections
//! opened and round trips timed in fixed buckets, with plain atomics (a
//! request costs two clock reads and three adds). Read by the metrics
//! endpoint through `TimelineStore::stats`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the round-trip buckets, in microseconds: a loopback
/// round trip takes tens of µs, one behind a busy Redis milliseconds, and
/// the default response timeout is a second.
pub const ROUND_TRIP_BOUNDS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

#[derive(Debug, Default)]
pub(super) struct ConnectionStats {
    connects: AtomicU64,
    /// Round trips per bucket (not cumulative); the last one is above
    /// every bound.
    buckets: [AtomicU64; ROUND_TRIP_BOUNDS_MICROS.len() + 1],
    sum_nanos: AtomicU64,
}

impl ConnectionStats {
    pub fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// One request answered (or timed out) after `took`.
    pub fn round_trip(&self, took: Duration) {
        // In nanoseconds: whole microseconds would put 50.9 µs in the
        // 50 µs bucket.
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket =
            ROUND_TRIP_BOUNDS_MICROS.partition_point(|&bound| bound.saturating_mul(1_000) < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RedisStats {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        RedisStats {
            connects: self.connects.load(Ordering::Relaxed),
            round_trips: buckets.iter().sum(),
            round_trip_buckets: buckets,
            round_trip_sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// The store's Redis connection so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Connections opened (the first, then one per reconnection).
    pub connects: u64,
    /// Requests (a pipeline or script call each) answered or timed out.
    pub round_trips: u64,
    /// Round trips per bucket (not cumulative): at most each bound of
    /// `ROUND_TRIP_BOUNDS_MICROS` and above the one before, then above all.
    pub round_trip_buckets: [u64; ROUND_TRIP_BOUNDS_MICROS.len() + 1],
    pub round_trip_sum_nanos: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_fall_in_their_buckets() {
        let stats = ConnectionStats::default();
        stats.connected();
        for nanos in [10_000, 50_000, 50_001, 900_000, 2_000_000_000] {
            stats.round_trip(Duration::from_nanos(nanos));
        }
        let seen = stats.snapshot();
        assert_eq!(seen.connects, 1);
        assert_eq!(seen.round_trips, 5);
        assert_eq!(
            seen.round_trip_sum_nanos,
            10_000 + 50_000 + 50_001 + 900_000 + 2_000_000_000
        );
        // At most 50 µs: 10 and 50; then 50.001 (≤ 100), 900 (≤ 1 ms),
        // and 2 s above every bound.
        assert_eq!(&seen.round_trip_buckets[..5], &[2, 1, 0, 0, 1]);
        assert_eq!(seen.round_trip_buckets[14], 1, "above 1 s");
        assert_eq!(seen.round_trip_buckets.iter().sum::<u64>(), 5);
    }
}
