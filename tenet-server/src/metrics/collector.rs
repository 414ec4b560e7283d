//! Reads `tenet-core`'s counters and pool states at scrape time.
//!
//! Every metric family is described on each scrape, even without samples,
//! so a dashboard query never names a metric that the server does not
//! declare. Cache and invalidation counters are 0 without a cache; pool
//! samples exist only for the pools in use.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tenet_core::Tenet;
use tenet_core::stats::{POOL_WAIT_BUCKETS, PoolStatus};

/// The collector of the `tenet-core` metrics of one service.
#[derive(Debug)]
pub(super) struct CoreCollector {
    tenet: Tenet,
}

impl CoreCollector {
    pub(super) fn new(tenet: Tenet) -> Self {
        Self { tenet }
    }

    fn encode_cache(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.tenet.cache_stats();
        let read = |pick: fn(&tenet_core::stats::CacheStats) -> u64| stats.map_or(0, pick);

        let mut family = encoder.encode_descriptor(
            "tenet_cache_lookups",
            "Verification cache lookups, by cache layer and result",
            None,
            MetricType::Counter,
        )?;
        let lookups = [
            ("local", "hit", read(|s| s.local_hits.get())),
            ("local", "miss", read(|s| s.local_misses.get())),
            ("redis", "hit", read(|s| s.redis_hits.get())),
            ("redis", "miss", read(|s| s.redis_misses.get())),
        ];
        for (layer, result, value) in lookups {
            let labels = [("layer", layer), ("result", result)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "tenet_revocation_messages",
            "Key invalidation messages on Redis pub/sub (sent after each issue and \
             revoke), by direction",
            None,
            MetricType::Counter,
        )?;
        let messages = [
            ("sent", read(|s| s.invalidations_published.get())),
            ("received", read(|s| s.invalidations_received.get())),
        ];
        for (direction, value) in messages {
            let labels = [("direction", direction)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }

        let entries = i64::try_from(self.tenet.cached_keys()).unwrap_or(i64::MAX);
        let gauge = encoder.encode_descriptor(
            "tenet_cache_entries",
            "Entries in the in-process verification cache, expired ones included",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(entries).encode(gauge)
    }

    fn encode_pools(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.tenet.pool_statuses();
        let pools: Vec<(&str, PoolStatus)> =
            [("postgres", statuses.postgres), ("redis", statuses.redis)]
                .into_iter()
                .filter_map(|(name, status)| status.map(|status| (name, status)))
                .collect();

        let mut family = encoder.encode_descriptor(
            "tenet_pool_connections",
            "Open pooled connections, by pool and state",
            None,
            MetricType::Gauge,
        )?;
        for (pool, status) in &pools {
            for (state, value) in [("in_use", status.in_use()), ("idle", status.idle)] {
                let labels = [("pool", *pool), ("state", state)];
                ConstGauge::new(i64::from(value)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "tenet_pool_max_connections",
            "The most connections each pool opens",
            None,
            MetricType::Gauge,
        )?;
        for (pool, status) in &pools {
            let labels = [("pool", *pool)];
            ConstGauge::new(i64::from(status.max_size)).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "tenet_pool_wait_seconds",
            "Time spent waiting for a pooled connection, in seconds, timeouts included",
            None,
            MetricType::Histogram,
        )?;
        for (pool, status) in &pools {
            let labels = [("pool", *pool)];
            let buckets: Vec<(f64, u64)> = POOL_WAIT_BUCKETS
                .iter()
                .copied()
                .zip(status.wait.buckets)
                .collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    seconds(status.wait.sum),
                    status.wait.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

impl Collector for CoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_cache(&mut encoder)?;
        self.encode_pools(&mut encoder)
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
