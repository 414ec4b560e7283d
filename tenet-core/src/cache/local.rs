//! The bounded in-process verification cache.
//!
//! Written here rather than taken from a cache crate for two reasons: an
//! insert must be able to lose atomically against a concurrent
//! invalidation (see [`LocalCache::insert`]), and a warm lookup must cost a
//! few tens of nanoseconds and allocate nothing, since it runs on every
//! request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::Verdict;
use crate::secret::KeyDigest;

const SHARDS: usize = 64;

/// A cached verdict and when the data behind it was read.
#[derive(Debug, Clone)]
struct Entry {
    verdict: Verdict,
    /// Milliseconds since the cache was created at which the read that
    /// produced this verdict started.
    read_at: u64,
}

/// A point in cache time: milliseconds since the cache was created.
pub(crate) type Millis = u64;

/// Hashes a digest by its first eight bytes. A keyed BLAKE3 digest is
/// already uniformly distributed and not chosen by the client, so hashing
/// it again would only cost time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `KeyDigest` hashes as one `[u8; 32]`, which std writes as a length
        // prefix followed by the bytes; keep the first 8-byte chunk.
        if bytes.len() >= 8 && self.0 == 0 {
            let mut head = [0u8; 8];
            head.copy_from_slice(&bytes[..8]);
            self.0 = u64::from_le_bytes(head);
        }
    }

    fn write_usize(&mut self, _length: usize) {}
}

type Map = HashMap<KeyDigest, Entry, BuildHasherDefault<DigestHasher>>;

#[derive(Debug, Default)]
struct Shard {
    map: RwLock<Map>,
    /// Bumped by every invalidation of a digest in this shard, so that a
    /// fill that read its data before the invalidation is discarded.
    generation: AtomicU64,
}

/// A sharded map from key digest to verdict, bounded in entries.
#[derive(Debug)]
pub(crate) struct LocalCache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    ttl: u64,
    negative_ttl: u64,
    epoch: Instant,
}

/// A shard's generation, taken before reading the data for a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

impl LocalCache {
    pub(crate) fn new(capacity: usize, ttl: Duration, negative_ttl: Duration) -> Self {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Self {
            shards,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            ttl: saturating_millis(ttl),
            negative_ttl: saturating_millis(negative_ttl),
            epoch: Instant::now(),
        }
    }

    /// Returns the current cache time.
    pub(crate) fn now(&self) -> Millis {
        saturating_millis(self.epoch.elapsed())
    }

    /// Returns the cached verdict for `digest` if it is younger than its
    /// TTL and was read at or after `not_before`.
    pub(crate) fn get(
        &self,
        digest: &KeyDigest,
        now: Millis,
        not_before: Millis,
    ) -> Option<Verdict> {
        let map = self
            .shard(digest)
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(digest)?;
        let ttl = match entry.verdict {
            Verdict::Unknown => self.negative_ttl,
            Verdict::Valid(_) | Verdict::Revoked(_) => self.ttl,
        };
        let fresh = now.saturating_sub(entry.read_at) < ttl && entry.read_at >= not_before;
        fresh.then(|| entry.verdict.clone())
    }

    /// Takes the generation to pass to [`LocalCache::insert`]; call it
    /// before reading the data to cache.
    pub(crate) fn generation(&self, digest: &KeyDigest) -> Generation {
        Generation(self.shard(digest).generation.load(Ordering::Acquire))
    }

    /// Caches a verdict unless `digest`'s shard was invalidated since
    /// `generation` was taken, in which case the verdict may predate the
    /// change and is dropped. Returns whether it was cached.
    pub(crate) fn insert(
        &self,
        digest: KeyDigest,
        verdict: Verdict,
        read_at: Millis,
        generation: Generation,
    ) -> bool {
        let shard = self.shard(&digest);
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        if shard.generation.load(Ordering::Acquire) != generation.0 {
            return false;
        }
        if map.len() >= self.shard_capacity && !map.contains_key(&digest) {
            // Digests are uniformly random, so the first key in iteration
            // order is a random victim.
            if let Some(victim) = map.keys().next().copied() {
                map.remove(&victim);
            }
        }
        map.insert(digest, Entry { verdict, read_at });
        true
    }

    /// Drops `digest` and makes every fill of its shard that is in flight
    /// lose.
    pub(crate) fn invalidate(&self, digest: &KeyDigest) {
        let shard = self.shard(digest);
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        shard.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(digest);
    }

    /// Drops every entry and makes every fill in flight lose.
    pub(crate) fn clear(&self) {
        for shard in &*self.shards {
            let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
            shard.generation.fetch_add(1, Ordering::AcqRel);
            map.clear();
        }
    }

    /// Returns the number of cached entries, expired ones included.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .map
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    fn shard(&self, digest: &KeyDigest) -> &Shard {
        // The last digest byte is independent of the 8 bytes the map hashes.
        &self.shards[usize::from(digest.as_bytes()[31]) % SHARDS]
    }
}

fn saturating_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::ValidKey;
    use crate::expiry::Expiry;
    use crate::id::{KeyId, TenantId};
    use crate::key::Principal;

    fn digest(seed: u8) -> KeyDigest {
        KeyDigest::from_bytes(*blake3::hash(&[seed]).as_bytes())
    }

    fn valid() -> Verdict {
        let key_id = KeyId::generate();
        Verdict::Valid(ValidKey {
            principal: Principal {
                tenant_id: TenantId::generate(),
                key_id,
            },
            expires_at: Expiry::NEVER,
            scopes: Arc::from([]),
            uses: Arc::new(crate::key_use::KeyUseCell::new(key_id)),
        })
    }

    fn cache() -> LocalCache {
        LocalCache::new(1_000, Duration::from_secs(60), Duration::from_secs(5))
    }

    #[test]
    fn cached_verdict_is_returned_until_ttl() {
        let cache = cache();
        let key = digest(1);
        let verdict = valid();

        assert!(cache.insert(key, verdict.clone(), 100, cache.generation(&key)));

        assert_eq!(cache.get(&key, 100, 0), Some(verdict.clone()));
        assert_eq!(cache.get(&key, 60_099, 0), Some(verdict));
        assert_eq!(cache.get(&key, 60_100, 0), None);
    }

    #[test]
    fn negative_verdict_uses_its_own_ttl() {
        let cache = cache();
        let key = digest(2);

        cache.insert(key, Verdict::Unknown, 0, cache.generation(&key));

        assert_eq!(cache.get(&key, 4_999, 0), Some(Verdict::Unknown));
        assert_eq!(cache.get(&key, 5_000, 0), None);
    }

    #[test]
    fn entry_read_before_cutoff_is_not_trusted() {
        let cache = cache();
        let key = digest(3);

        cache.insert(key, valid(), 1_000, cache.generation(&key));

        assert!(cache.get(&key, 1_500, 1_000).is_some());
        assert!(cache.get(&key, 1_500, 1_001).is_none());
    }

    #[test]
    fn fill_started_before_invalidation_is_dropped() {
        let cache = cache();
        let key = digest(4);
        let generation = cache.generation(&key);

        cache.invalidate(&key);
        let cached = cache.insert(key, valid(), 0, generation);

        assert!(!cached);
        assert_eq!(cache.get(&key, 0, 0), None);
    }

    #[test]
    fn invalidation_removes_entry() {
        let cache = cache();
        let key = digest(5);
        cache.insert(key, valid(), 0, cache.generation(&key));

        cache.invalidate(&key);

        assert_eq!(cache.get(&key, 0, 0), None);
    }

    #[test]
    fn cache_stays_within_capacity() {
        let cache = LocalCache::new(128, Duration::from_secs(60), Duration::from_secs(5));

        for seed in 0..=255u8 {
            let key = digest(seed);
            cache.insert(key, valid(), 0, cache.generation(&key));
        }

        assert!(cache.len() <= 128, "len {}", cache.len());
    }
}
