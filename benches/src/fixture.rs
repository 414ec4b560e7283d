//! Services and issued keys for the benchmarks.

use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use tenet_core::{CacheOptions, Pepper, Principal, TenantName, Tenet};

/// Cache lifetime of the benchmark services: far longer than any run, so a
/// warm cache stays warm while criterion samples it. The TTLs do not change
/// what a cache hit costs.
pub const BENCH_TTL: Duration = Duration::from_secs(3600);

/// Returns a new random pepper.
pub fn pepper() -> Pepper {
    Pepper::from_config(&Pepper::generate_config()).expect("a generated pepper is valid")
}

/// Returns cache options for `capacity` entries with [`BENCH_TTL`] for
/// every verdict and the default staleness settings.
pub fn cache_options(capacity: usize) -> CacheOptions {
    CacheOptions {
        capacity,
        ttl: BENCH_TTL,
        negative_ttl: BENCH_TTL,
        ..CacheOptions::default()
    }
}

/// Formats a key count for a benchmark id: `10k`, `1m`, or the number.
pub fn count_label(count: usize) -> String {
    match count {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Plaintext keys issued to one tenant, each with whom it acts for.
///
/// Benchmark fixtures only: the keys stay in this process and are never
/// printed.
#[derive(Debug, Default)]
pub struct IssuedKeys {
    pub keys: Vec<String>,
    pub principals: Vec<Principal>,
}

impl IssuedKeys {
    /// Returns the keys paired with their principals.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, Principal)> {
        self.keys
            .iter()
            .map(String::as_str)
            .zip(self.principals.iter().copied())
    }

    /// Returns an endless cycle over the keys.
    pub fn cycle(&self) -> KeyCycle<'_> {
        KeyCycle {
            keys: &self.keys,
            next: 0,
        }
    }
}

/// Creates a tenant and issues it `count` keys through
/// [`Tenet::issue_key`], with up to `concurrency` issues in flight.
///
/// Concurrency only helps stores that take concurrent writes (Postgres);
/// the memory and SQLite stores serialise them anyway.
pub async fn issue(
    tenet: &Tenet,
    count: usize,
    concurrency: usize,
) -> tenet_core::Result<IssuedKeys> {
    let name = TenantName::parse("Bench").expect("a valid tenant name");
    let tenant = tenet.create_tenant(name).await?.id;

    let issued: Vec<(String, Principal)> = futures_util::stream::iter(0..count)
        .map(|_| async move {
            let issued = tenet.issue_key(tenant, None).await?;
            let principal = Principal {
                tenant_id: issued.info.tenant_id,
                key_id: issued.info.id,
            };
            Ok::<_, tenet_core::Error>((issued.api_key.expose_secret().to_owned(), principal))
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;

    let (keys, principals) = issued.into_iter().unzip();
    Ok(IssuedKeys { keys, principals })
}

/// Verifies every key once, which fills the cache of a cached `tenet`.
///
/// # Panics
///
/// Panics if a key is rejected or verifies as another principal, because
/// a benchmark over a broken fixture measures nothing useful.
pub async fn warm(tenet: &Tenet, issued: &IssuedKeys) {
    for (key, expected) in issued.pairs() {
        let principal = tenet
            .verify(key)
            .await
            .unwrap_or_else(|err| panic!("an issued key failed to verify while warming: {err}"));
        assert_eq!(principal, expected, "a key verified as another principal");
    }
}

/// An endless cycle over keys in issue order.
///
/// Keys are random, so issue order is a random order of their digests and
/// each step looks up an unrelated part of the cache's map.
#[derive(Debug, Clone)]
pub struct KeyCycle<'a> {
    keys: &'a [String],
    next: usize,
}

impl<'a> KeyCycle<'a> {
    /// Returns the next key, wrapping around after the last.
    ///
    /// # Panics
    ///
    /// Panics if the cycle has no keys.
    pub fn next_key(&mut self) -> &'a str {
        let key = &self.keys[self.next];
        self.next = (self.next + 1) % self.keys.len();
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_labels_use_the_largest_round_unit() {
        let cases = [
            (10_000, "10k"),
            (1_000_000, "1m"),
            (2_500, "2500"),
            (1_500_000, "1500k"),
            (999, "999"),
        ];

        for (count, expected) in cases {
            assert_eq!(count_label(count), expected, "{count}");
        }
    }

    #[test]
    fn key_cycle_wraps_around() {
        let issued = IssuedKeys {
            keys: vec!["a".to_owned(), "b".to_owned()],
            principals: Vec::new(),
        };
        let mut cycle = issued.cycle();

        let order: Vec<&str> = (0..5).map(|_| cycle.next_key()).collect();

        assert_eq!(order, ["a", "b", "a", "b", "a"]);
    }
}
