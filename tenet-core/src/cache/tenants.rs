//! The in-process cache of tenant status, which every verification of a
//! valid key reads.
//!
//! It follows the key cache's rules: a fill records the shard generation
//! before it reads the store and is dropped when the shard was invalidated
//! since, so a slow fill can never write an older status over a newer one.
//! Status changes are not monotone (a tenant may be suspended and resumed
//! many times), so no entry may outlive the change that invalidates it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use super::local::Millis;
use crate::id::TenantId;

const SHARDS: usize = 16;

/// The state of a tenant that verification acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TenantState {
    Active,
    Suspended,
    /// Deleted, or never existed.
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: TenantState,
    /// Cache time at which the read that produced `state` started.
    read_at: Millis,
}

#[derive(Debug, Default)]
struct Shard {
    map: RwLock<HashMap<TenantId, Entry>>,
    /// Bumped by every invalidation in this shard.
    generation: AtomicU64,
}

/// A shard's generation, taken before reading the status for a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TenantGeneration(u64);

/// A sharded map from tenant id to state, bounded in entries.
#[derive(Debug)]
pub(crate) struct TenantCache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    ttl: Millis,
}

impl TenantCache {
    pub(crate) fn new(capacity: usize, ttl: Millis) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            ttl,
        }
    }

    /// Returns the cached state of `tenant` if it is younger than the TTL
    /// and was read at or after `not_before`.
    pub(crate) fn get(
        &self,
        tenant: TenantId,
        now: Millis,
        not_before: Millis,
    ) -> Option<TenantState> {
        let map = self
            .shard(tenant)
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(&tenant)?;
        let fresh = now.saturating_sub(entry.read_at) < self.ttl && entry.read_at >= not_before;
        fresh.then_some(entry.state)
    }

    /// Takes the generation to pass to [`TenantCache::insert`]; call it
    /// before reading the state to cache.
    pub(crate) fn generation(&self, tenant: TenantId) -> TenantGeneration {
        TenantGeneration(self.shard(tenant).generation.load(Ordering::Acquire))
    }

    /// Caches a state unless the shard was invalidated since `generation`
    /// was taken. Returns whether it was cached.
    pub(crate) fn insert(
        &self,
        tenant: TenantId,
        state: TenantState,
        read_at: Millis,
        generation: TenantGeneration,
    ) -> bool {
        let shard = self.shard(tenant);
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        if shard.generation.load(Ordering::Acquire) != generation.0 {
            return false;
        }
        if map.len() >= self.shard_capacity && !map.contains_key(&tenant) {
            // The map's iteration order depends on a random hasher seed, so
            // the first entry is an arbitrary victim.
            if let Some(victim) = map.keys().next().copied() {
                map.remove(&victim);
            }
        }
        map.insert(tenant, Entry { state, read_at });
        true
    }

    /// Drops `tenant` and makes every fill of its shard in flight lose.
    pub(crate) fn invalidate(&self, tenant: TenantId) {
        let shard = self.shard(tenant);
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        shard.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(&tenant);
    }

    /// Drops every entry and makes every fill in flight lose.
    pub(crate) fn clear(&self) {
        for shard in &*self.shards {
            let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
            shard.generation.fetch_add(1, Ordering::AcqRel);
            map.clear();
        }
    }

    fn shard(&self, tenant: TenantId) -> &Shard {
        // The last bytes of a UUIDv7 are random; the first ones are a time.
        &self.shards[usize::from(tenant.as_uuid().as_bytes()[15]) % SHARDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> TenantCache {
        TenantCache::new(1_000, 60_000)
    }

    #[test]
    fn cached_state_is_returned_until_ttl() {
        let cache = cache();
        let tenant = TenantId::generate();

        assert!(cache.insert(
            tenant,
            TenantState::Suspended,
            100,
            cache.generation(tenant)
        ));

        assert_eq!(cache.get(tenant, 100, 0), Some(TenantState::Suspended));
        assert_eq!(cache.get(tenant, 60_099, 0), Some(TenantState::Suspended));
        assert_eq!(cache.get(tenant, 60_100, 0), None);
    }

    #[test]
    fn state_read_before_cutoff_is_not_trusted() {
        let cache = cache();
        let tenant = TenantId::generate();

        cache.insert(tenant, TenantState::Active, 1_000, cache.generation(tenant));

        assert!(cache.get(tenant, 1_500, 1_000).is_some());
        assert!(cache.get(tenant, 1_500, 1_001).is_none());
    }

    #[test]
    fn fill_started_before_a_change_is_dropped() {
        let cache = cache();
        let tenant = TenantId::generate();
        let generation = cache.generation(tenant);

        // The fill read "active", then a suspension invalidated the entry.
        cache.invalidate(tenant);
        let cached = cache.insert(tenant, TenantState::Active, 0, generation);

        assert!(!cached);
        assert_eq!(cache.get(tenant, 0, 0), None);
    }

    #[test]
    fn invalidation_and_clear_remove_entries() {
        let cache = cache();
        let first = TenantId::generate();
        let second = TenantId::generate();
        cache.insert(first, TenantState::Active, 0, cache.generation(first));
        cache.insert(second, TenantState::Active, 0, cache.generation(second));

        cache.invalidate(first);
        assert_eq!(cache.get(first, 0, 0), None);
        assert_eq!(cache.get(second, 0, 0), Some(TenantState::Active));

        cache.clear();
        assert_eq!(cache.get(second, 0, 0), None);
    }

    #[test]
    fn cache_stays_within_capacity() {
        let cache = TenantCache::new(32, 60_000);

        for _ in 0..200 {
            let tenant = TenantId::generate();
            cache.insert(tenant, TenantState::Active, 0, cache.generation(tenant));
        }

        let len: usize = cache
            .shards
            .iter()
            .map(|shard| shard.map.read().map(|map| map.len()).unwrap_or(0))
            .sum();
        assert!(len <= 32, "len {len}");
    }
}
