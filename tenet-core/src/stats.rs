//! Counters of the verification caches and connection pools, for metrics.
//!
//! Counting is one relaxed atomic add, so it costs a few nanoseconds on the
//! request path and allocates nothing. An exporter reads the values at
//! scrape time through [`Tenet::cache_stats`](crate::Tenet::cache_stats)
//! and [`Tenet::pool_statuses`](crate::Tenet::pool_statuses).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic event counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the number of events counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Lookups in the verification caches and invalidation messages, counted
/// over the life of one [`Tenet`](crate::Tenet) and its clones.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// In-process lookups that returned a fresh verdict.
    pub local_hits: Counter,
    /// In-process lookups that found no fresh verdict.
    pub local_misses: Counter,
    /// Redis lookups that returned a verdict.
    pub redis_hits: Counter,
    /// Redis lookups that returned nothing, failed, or were skipped while
    /// the Redis breaker was open.
    pub redis_misses: Counter,
    /// Invalidation messages published on Redis after an issue or a revoke.
    pub invalidations_published: Counter,
    /// Well-formed invalidation messages received from Redis, this
    /// replica's own included.
    pub invalidations_received: Counter,
}

/// Upper bounds of the pool wait histogram's buckets, in seconds. A last
/// bucket without a bound counts the longer waits.
pub const POOL_WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// How long requests waited for a pooled connection, bucketed.
#[derive(Debug, Default)]
pub struct WaitHistogram {
    /// One count per bound of [`POOL_WAIT_BUCKETS`], then the overflow.
    counts: [AtomicU64; POOL_WAIT_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl WaitHistogram {
    /// Records one wait, whether it ended with a connection or a timeout.
    pub(crate) fn record(&self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        let bucket = POOL_WAIT_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(POOL_WAIT_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Reads the histogram. Waits recorded during the read may be in the
    /// buckets but not yet in the sum, which a scrape tolerates.
    pub fn snapshot(&self) -> WaitSnapshot {
        let mut buckets = [0; POOL_WAIT_BUCKETS.len() + 1];
        for (count, atomic) in buckets.iter_mut().zip(&self.counts) {
            *count = atomic.load(Ordering::Relaxed);
        }
        let sum_nanos = self.sum_nanos.load(Ordering::Relaxed);
        WaitSnapshot {
            buckets,
            sum: Duration::from_nanos(sum_nanos),
        }
    }
}

/// A copy of a [`WaitHistogram`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitSnapshot {
    /// Waits per bucket, not cumulative: one entry per bound of
    /// [`POOL_WAIT_BUCKETS`], then the waits longer than the last bound.
    pub buckets: [u64; POOL_WAIT_BUCKETS.len() + 1],
    /// Total time waited.
    pub sum: Duration,
}

impl WaitSnapshot {
    /// Returns the number of waits recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The state of one connection pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStatus {
    /// Open connections, busy or idle.
    pub connections: u32,
    /// Open connections that no request holds.
    pub idle: u32,
    /// The maximum number of connections the pool opens.
    pub max_size: u32,
    /// Time that requests waited for a connection.
    pub wait: WaitSnapshot,
}

impl PoolStatus {
    pub(crate) fn new(state: bb8::State, max_size: u32, wait: &WaitHistogram) -> Self {
        Self {
            connections: state.connections,
            idle: state.idle_connections,
            max_size,
            wait: wait.snapshot(),
        }
    }

    /// Returns the connections that requests hold now.
    pub fn in_use(&self) -> u32 {
        self.connections.saturating_sub(self.idle)
    }
}

/// The connection pools of a [`Tenet`](crate::Tenet): `None` for a backend
/// it does not use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStatuses {
    pub postgres: Option<PoolStatus>,
    pub redis: Option<PoolStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_land_in_their_buckets() {
        let histogram = WaitHistogram::default();

        histogram.record(Duration::from_micros(50));
        histogram.record(Duration::from_millis(1));
        histogram.record(Duration::from_secs(3));

        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[0], 1);
        assert_eq!(snapshot.buckets[2], 1);
        assert_eq!(snapshot.buckets[POOL_WAIT_BUCKETS.len()], 1);
        assert_eq!(snapshot.count(), 3);
        assert_eq!(
            snapshot.sum,
            Duration::from_micros(50) + Duration::from_millis(1) + Duration::from_secs(3)
        );
    }
}
