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
use tenet_core::stats::{POOL_WAIT_BUCKETS, PoolStatus, PoolStatuses};

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
}

/// Encodes the pool families; samples only for the pools in use.
fn encode_pools(
    statuses: PoolStatuses,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
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
        "The maximum number of connections each pool opens",
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

impl Collector for CoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_cache(&mut encoder)?;
        encode_pools(self.tenet.pool_statuses(), &mut encoder)
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;
    use tenet_core::stats::WaitSnapshot;

    use super::*;

    /// Encodes fixed pool states, as a service on Postgres and Redis would.
    #[derive(Debug)]
    struct FixedPools(PoolStatuses);

    impl Collector for FixedPools {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_pools(self.0, &mut encoder)
        }
    }

    fn render(statuses: PoolStatuses) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FixedPools(statuses)));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("metrics encode");
        text
    }

    #[test]
    fn pools_in_use_get_samples() {
        let mut buckets = [0; POOL_WAIT_BUCKETS.len() + 1];
        buckets[0] = 2;
        buckets[3] = 1;
        buckets[POOL_WAIT_BUCKETS.len()] = 1;
        let postgres = PoolStatus {
            connections: 5,
            idle: 2,
            max_size: 16,
            wait: WaitSnapshot {
                buckets,
                sum: Duration::from_millis(1500),
            },
        };

        let text = render(PoolStatuses {
            postgres: Some(postgres),
            redis: None,
        });

        for line in [
            r#"tenet_pool_connections{pool="postgres",state="in_use"} 3"#,
            r#"tenet_pool_connections{pool="postgres",state="idle"} 2"#,
            r#"tenet_pool_max_connections{pool="postgres"} 16"#,
            r#"tenet_pool_wait_seconds_bucket{pool="postgres",le="0.0001"} 2"#,
            r#"tenet_pool_wait_seconds_bucket{pool="postgres",le="0.0025"} 3"#,
            r#"tenet_pool_wait_seconds_bucket{pool="postgres",le="1"} 3"#,
            r#"tenet_pool_wait_seconds_bucket{pool="postgres",le="+Inf"} 4"#,
            r#"tenet_pool_wait_seconds_sum{pool="postgres"} 1.5"#,
            r#"tenet_pool_wait_seconds_count{pool="postgres"} 4"#,
        ] {
            assert!(
                text.lines().any(|sample| sample == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains(r#"pool="redis""#), "{text}");
    }

    #[test]
    fn unused_pools_are_declared_without_samples() {
        let text = render(PoolStatuses {
            postgres: None,
            redis: None,
        });

        for name in [
            "tenet_pool_connections",
            "tenet_pool_max_connections",
            "tenet_pool_wait_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
        }
        assert!(!text.contains("pool="), "{text}");
    }
}
