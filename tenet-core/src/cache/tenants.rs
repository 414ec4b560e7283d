//! The in-process cache of tenant status, which every verification of a
//! valid key reads.
//!
//! It follows the key cache's rules: a fill records the shard generation
//! before it reads the store and is dropped when the shard was invalidated
//! since, so a slow fill can never write an older status over a newer one.
//! Status changes are not monotone (a tenant may be suspended and resumed
//! many times), so no entry may outlive the change that invalidates it.
//!
//! Each tenant's status lives in a [`TenantSlot`] that the key cache's
//! entries of the tenant's keys share, so that a warm verification reads
//! its tenant's status with one atomic load from the key's entry instead of
//! a second map lookup. Invalidating a tenant empties its slot in place,
//! which every key entry holding the slot sees at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

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

/// Bits of a slot's word that hold the state; the rest hold the read time.
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// One tenant's cached state and when the read that produced it started,
/// in one atomic word, shared by the tenant cache and the key cache entries
/// of the tenant's keys.
///
/// The word is 0 while the slot holds no state: before its first fill,
/// after an invalidation, and for good once the slot has left the tenant
/// cache. Otherwise its low two bits are the state and the others the
/// cache time of the read. Slots are written only under their shard's
/// write lock, so a fill and an invalidation of one tenant never interleave.
#[derive(Debug, Default)]
pub(crate) struct TenantSlot {
    word: AtomicU64,
}

impl TenantSlot {
    /// Returns the slot's state if it was read less than `ttl` before
    /// `now` and at or after `not_before`.
    #[inline]
    pub(crate) fn state(
        &self,
        now: Millis,
        not_before: Millis,
        ttl: Millis,
    ) -> Option<TenantState> {
        let word = self.word.load(Ordering::Acquire);
        let state = match word & STATE_MASK {
            1 => TenantState::Active,
            2 => TenantState::Suspended,
            3 => TenantState::Gone,
            _ => return None,
        };
        let read_at = word >> STATE_BITS;
        let fresh = now.saturating_sub(read_at) < ttl && read_at >= not_before;
        fresh.then_some(state)
    }

    fn set(&self, state: TenantState, read_at: Millis) {
        let code = match state {
            TenantState::Active => 1,
            TenantState::Suspended => 2,
            TenantState::Gone => 3,
        };
        // Cache time would need 146 million years to reach the top bits.
        let read_at = read_at.min(u64::MAX >> STATE_BITS);
        self.word
            .store((read_at << STATE_BITS) | code, Ordering::Release);
    }

    fn clear(&self) {
        self.word.store(0, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: RwLock<HashMap<TenantId, Arc<TenantSlot>>>,
    /// Bumped by every invalidation in this shard.
    generation: AtomicU64,
}

/// A shard's generation, taken before reading the status for a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TenantGeneration(u64);

/// A sharded map from tenant id to state slot, bounded in entries.
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
        map.get(&tenant)?.state(now, not_before, self.ttl)
    }

    /// Returns the state of `tenant` like [`TenantCache::get`], from `slot`
    /// when that holds it, which saves the map lookup.
    ///
    /// `slot` is the slot a key cache entry took when it was filled. It can
    /// have left the cache since, by eviction, and then stays empty, so the
    /// map is read for a slot that holds no fresh state.
    #[inline]
    pub(crate) fn state_of(
        &self,
        slot: Option<&TenantSlot>,
        tenant: TenantId,
        now: Millis,
        not_before: Millis,
    ) -> Option<TenantState> {
        if let Some(state) = slot.and_then(|slot| slot.state(now, not_before, self.ttl)) {
            return Some(state);
        }
        self.get(tenant, now, not_before)
    }

    /// Returns the slot of `tenant`, adding an empty one when it has none,
    /// for a key cache entry to hold.
    pub(crate) fn slot(&self, tenant: TenantId) -> Arc<TenantSlot> {
        let shard = self.shard(tenant);
        {
            let map = shard.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = map.get(&tenant) {
                return Arc::clone(slot);
            }
        }
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(self.slot_in(&mut map, tenant))
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
        self.slot_in(&mut map, tenant).set(state, read_at);
        true
    }

    /// Empties the slot of `tenant` and makes every fill of its shard in
    /// flight lose. The slot stays in the map, so that the key entries
    /// holding it see the next fill.
    pub(crate) fn invalidate(&self, tenant: TenantId) {
        let shard = self.shard(tenant);
        let map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        shard.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(slot) = map.get(&tenant) {
            slot.clear();
        }
    }

    /// Empties every slot and makes every fill in flight lose.
    pub(crate) fn clear(&self) {
        for shard in &*self.shards {
            let map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
            shard.generation.fetch_add(1, Ordering::AcqRel);
            for slot in map.values() {
                slot.clear();
            }
        }
    }

    /// Returns the slot of `tenant` in `map`, a shard's map under its write
    /// lock, adding an empty one, and evicting another when the shard is
    /// full.
    fn slot_in<'m>(
        &self,
        map: &'m mut HashMap<TenantId, Arc<TenantSlot>>,
        tenant: TenantId,
    ) -> &'m Arc<TenantSlot> {
        if map.len() >= self.shard_capacity && !map.contains_key(&tenant) {
            // The map's iteration order depends on a random hasher seed, so
            // the first entry is an arbitrary victim. Its slot is emptied
            // for good, so that key entries holding it read the map.
            // NOTE: such key entries read the map on every verification
            // until they are filled again, within the cache TTL.
            if let Some(victim) = map.keys().next().copied()
                && let Some(slot) = map.remove(&victim)
            {
                slot.clear();
            }
        }
        map.entry(tenant).or_default()
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
    fn a_slot_taken_before_a_fill_sees_it_and_its_invalidation() {
        let cache = cache();
        let tenant = TenantId::generate();
        let slot = cache.slot(tenant);

        let before = slot.state(0, 0, 60_000);
        cache.insert(tenant, TenantState::Active, 100, cache.generation(tenant));
        let filled = slot.state(100, 0, 60_000);
        cache.invalidate(tenant);
        let invalidated = slot.state(100, 0, 60_000);
        cache.insert(
            tenant,
            TenantState::Suspended,
            200,
            cache.generation(tenant),
        );

        assert_eq!(before, None);
        assert_eq!(filled, Some(TenantState::Active));
        assert_eq!(invalidated, None);
        assert!(
            Arc::ptr_eq(&slot, &cache.slot(tenant)),
            "one slot per tenant"
        );
        assert_eq!(slot.state(200, 0, 60_000), Some(TenantState::Suspended));
    }

    #[test]
    fn a_slot_keeps_the_read_time_for_ttl_and_cutoff() {
        let cache = cache();
        let tenant = TenantId::generate();
        let slot = cache.slot(tenant);

        cache.insert(tenant, TenantState::Gone, 1_000, cache.generation(tenant));

        assert_eq!(slot.state(60_999, 0, 60_000), Some(TenantState::Gone));
        assert_eq!(slot.state(61_000, 0, 60_000), None, "past the TTL");
        assert_eq!(slot.state(1_000, 1_000, 60_000), Some(TenantState::Gone));
        assert_eq!(
            slot.state(1_000, 1_001, 60_000),
            None,
            "read before the cutoff"
        );
        cache.clear();
        assert_eq!(slot.state(1_000, 0, 60_000), None, "cleared");
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
