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
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use super::tenants::{TenantCache, TenantSlot, TenantState};
use super::{Passed, Verdict};
use crate::clock::CacheClock;
use crate::error::Rejection;
use crate::id::KeyId;
use crate::key::Principal;
use crate::scope::Scope;
use crate::secret::KeyDigest;

const SHARDS: usize = 64;

/// A cached verdict, when the data behind it was read, and when its key
/// last verified.
#[derive(Debug)]
struct Entry {
    verdict: Verdict,
    /// Milliseconds since the cache was created at which the read that
    /// produced this verdict started.
    read_at: u64,
    /// The status slot of a valid key's tenant, shared with the tenant
    /// cache, so that a warm verification finds the status without a
    /// lookup of its own. `None` for other verdicts.
    tenant: Option<Arc<TenantSlot>>,
    /// Cache time plus one of the latest verification since the last
    /// [`LocalCache::take_uses`], or 0 for none. Kept here rather than
    /// behind a pointer of its own, which would add a heap allocation of
    /// about 64 bytes to every cached key.
    last_use: AtomicU64,
}

impl Entry {
    fn new(verdict: Verdict, read_at: Millis, tenant: Option<Arc<TenantSlot>>) -> Self {
        Self {
            verdict,
            read_at,
            tenant,
            last_use: AtomicU64::new(0),
        }
    }

    /// Records a use of the entry's key at cache time `now`.
    #[inline]
    fn record_use(&self, now: Millis) {
        let stamp = now.saturating_add(1);
        // Most uses fall in a tick already recorded; reading first spares
        // them a write to a cache line that other cores read. A plain store
        // rather than `fetch_max` saves a locked instruction per request.
        // Two threads that race here may leave the earlier of their two
        // stamps. That makes `last_used_at` early by the time between two
        // concurrent uses of one key, well within its flush lag.
        if self.last_use.load(Ordering::Relaxed) < stamp {
            self.last_use.store(stamp, Ordering::Relaxed);
        }
    }

    /// Returns the key and cache time of a use not yet taken, if any.
    fn take_use(&self) -> Option<(KeyId, Millis)> {
        let stamp = self.last_use.swap(0, Ordering::Relaxed);
        let principal = self.verdict.principal()?;
        (stamp != 0).then(|| (principal.key_id, stamp - 1))
    }
}

/// The outcome of [`LocalCache::check`] on a fresh entry.
#[derive(Debug)]
pub(crate) struct CachedCheck {
    /// Whom the key acts or acted for, when known.
    pub(crate) owner: Option<Principal>,
    pub(crate) result: Result<Passed, Rejection>,
    /// The state of the key's tenant, when the key passed and the state
    /// was at hand.
    pub(crate) tenant: Option<TenantState>,
    /// Whether the key's use was recorded, which happens only for a key
    /// that passed, of a tenant known to be active.
    pub(crate) use_recorded: bool,
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
    /// The scopes of every cached key without scopes. Sharing one empty
    /// slice per shard saves an allocation per key, and a shard's own copy
    /// keeps verifications of unrelated keys off one reference count.
    no_scopes: Arc<[Scope]>,
}

/// A sharded map from key digest to verdict, bounded in entries.
///
/// Entries also record when their key last verified (see
/// [`LocalCache::record_use`]), so that a warm verification records its use
/// with one atomic operation on memory the lookup already touched.
#[derive(Debug)]
pub(crate) struct LocalCache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    ttl: u64,
    negative_ttl: u64,
    clock: CacheClock,
    /// Uses not yet taken of entries that left the map, by key, in cache
    /// time. A key appears once however often it was evicted.
    departed_uses: Mutex<HashMap<KeyId, Millis>>,
}

/// A shard's generation, taken before reading the data for a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

impl LocalCache {
    #[cfg(test)]
    pub(crate) fn new(capacity: usize, ttl: Duration, negative_ttl: Duration) -> Self {
        Self::with_clock(capacity, ttl, negative_ttl, CacheClock::new())
    }

    /// Makes a cache timed by `clock`.
    pub(crate) fn with_clock(
        capacity: usize,
        ttl: Duration,
        negative_ttl: Duration,
        clock: CacheClock,
    ) -> Self {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Self {
            shards,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            ttl: saturating_millis(ttl),
            negative_ttl: saturating_millis(negative_ttl),
            clock,
            departed_uses: Mutex::default(),
        }
    }

    /// Returns the current cache time, which lags the exact time by less
    /// than one tick of the coarse clock (see [`crate::clock`]).
    #[inline]
    pub(crate) fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Returns the tick of the cache's clock: how late, at most, cache time
    /// runs.
    pub(crate) fn tick(&self) -> Millis {
        self.clock.tick()
    }

    /// Returns the cached verdict for `digest` if it is younger than its
    /// TTL and was read at or after `not_before`. Verifications use
    /// [`LocalCache::check`], which clones nothing.
    #[cfg(test)]
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
        self.fresh(entry, now, not_before)
            .then(|| entry.verdict.clone())
    }

    /// Checks the cached verdict for `digest` against `required_scopes`,
    /// like [`Verdict::check`], if the entry is younger than its TTL and
    /// was read at or after `not_before`. The key's scopes are cloned into
    /// the result only when `want_scopes` is set.
    ///
    /// A key that passes has its tenant's state read from `tenants`,
    /// through the entry's tenant slot when the slot contains a fresh
    /// state. The result's `tenant` is `None` when no fresh state is at
    /// hand. When the
    /// tenant is active, the key's use at `now` is recorded in the entry, as
    /// [`LocalCache::record_use`] would, so that a warm verification finds
    /// the entry once. It checks under the shard's read lock instead of
    /// cloning the verdict, which saves a reference count update. Always
    /// inlined into the warm path, like `Tenet::verify_warm`, because its
    /// result is large.
    #[inline(always)]
    pub(crate) fn check(
        &self,
        digest: &KeyDigest,
        now: Millis,
        not_before: Millis,
        required_scopes: &[&str],
        want_scopes: bool,
        tenants: &TenantCache,
    ) -> Option<CachedCheck> {
        let map = self
            .shard(digest)
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(digest)?;
        if !self.fresh(entry, now, not_before) {
            return None;
        }

        let result = entry.verdict.check(required_scopes, want_scopes);
        let tenant = match &result {
            Ok(passed) => tenants.state_of(
                entry.tenant.as_deref(),
                passed.principal.tenant_id,
                now,
                not_before,
            ),
            Err(_) => None,
        };
        let use_recorded = tenant == Some(TenantState::Active);
        if use_recorded {
            entry.record_use(now);
        }
        Some(CachedCheck {
            owner: entry.verdict.principal(),
            result,
            tenant,
            use_recorded,
        })
    }

    /// Tells whether `entry` is younger than its TTL and was read at or
    /// after `not_before`.
    fn fresh(&self, entry: &Entry, now: Millis, not_before: Millis) -> bool {
        let ttl = match entry.verdict {
            Verdict::Unknown => self.negative_ttl,
            Verdict::Valid(_) | Verdict::Revoked(_) => self.ttl,
        };
        now.saturating_sub(entry.read_at) < ttl && entry.read_at >= not_before
    }

    /// Records that the key cached under `digest` verified at `now`, for
    /// the next [`LocalCache::take_uses`]. Returns `false` when the entry
    /// has left the cache since it was read, so that the caller records the
    /// use elsewhere.
    pub(crate) fn record_use(&self, digest: &KeyDigest, now: Millis) -> bool {
        let map = self
            .shard(digest)
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = map.get(digest) else {
            return false;
        };
        entry.record_use(now);
        true
    }

    /// Removes and returns the latest use of every key recorded since the
    /// last call, in cache time, one element per key at most.
    ///
    /// It reads every entry, one shard at a time under the shard's read
    /// lock, so it costs time in proportion to the cache's size. Call it
    /// once per flush interval, not per request.
    pub(crate) fn take_uses(&self) -> Vec<(KeyId, Millis)> {
        let mut uses: Vec<(KeyId, Millis)> = self
            .departed_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for shard in &*self.shards {
            let map = shard.map.read().unwrap_or_else(PoisonError::into_inner);
            uses.extend(map.values().filter_map(Entry::take_use));
        }
        uses
    }

    /// Takes the generation to pass to [`LocalCache::insert`]; call it
    /// before reading the data to cache.
    pub(crate) fn generation(&self, digest: &KeyDigest) -> Generation {
        Generation(self.shard(digest).generation.load(Ordering::Acquire))
    }

    /// Caches a verdict unless `digest`'s shard was invalidated since
    /// `generation` was taken, in which case the verdict may predate the
    /// change and is dropped. Returns whether it was cached.
    ///
    /// `tenant` is the status slot of a valid key's tenant, from
    /// [`TenantCache::slot`], or `None`.
    pub(crate) fn insert(
        &self,
        digest: KeyDigest,
        mut verdict: Verdict,
        read_at: Millis,
        generation: Generation,
        tenant: Option<Arc<TenantSlot>>,
    ) -> bool {
        let shard = self.shard(&digest);
        if let Verdict::Valid(key) = &mut verdict
            && key.scopes.is_empty()
        {
            key.scopes = Arc::clone(&shard.no_scopes);
        }

        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        if shard.generation.load(Ordering::Acquire) != generation.0 {
            return false;
        }
        if map.len() >= self.shard_capacity && !map.contains_key(&digest) {
            // Digests are uniformly random, so the first key in iteration
            // order is a random victim.
            if let Some(victim) = map.keys().next().copied()
                && let Some(evicted) = map.remove(&victim)
            {
                self.keep_departed_use(&evicted);
            }
        }
        if let Some(replaced) = map.insert(digest, Entry::new(verdict, read_at, tenant)) {
            self.keep_departed_use(&replaced);
        }
        true
    }

    /// Drops `digest` and makes every fill of its shard that is in flight
    /// lose.
    pub(crate) fn invalidate(&self, digest: &KeyDigest) {
        let shard = self.shard(digest);
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        shard.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(removed) = map.remove(digest) {
            self.keep_departed_use(&removed);
        }
    }

    /// Turns a cached entry of `digest` into a revoked verdict read at
    /// `now`, and makes every fill of its shard that is in flight lose. The
    /// verdict keeps `owner`, or else the principal the entry had.
    ///
    /// A revoked key stays in demand until its clients notice, so keeping
    /// its entry spares the store one read per request until the entry
    /// would have been refilled. A digest that is not cached stays out of
    /// the cache, so revoking unused keys takes no capacity.
    pub(crate) fn revoke(&self, digest: &KeyDigest, owner: Option<Principal>, now: Millis) {
        let shard = self.shard(digest);
        let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
        shard.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entry) = map.get_mut(digest) {
            let owner = owner.or_else(|| entry.verdict.principal());
            entry.verdict = Verdict::Revoked(owner);
            entry.read_at = now;
            entry.tenant = None;
        }
    }

    /// Drops every entry and makes every fill in flight lose.
    pub(crate) fn clear(&self) {
        for shard in &*self.shards {
            let mut map = shard.map.write().unwrap_or_else(PoisonError::into_inner);
            shard.generation.fetch_add(1, Ordering::AcqRel);
            for (_, removed) in map.drain() {
                self.keep_departed_use(&removed);
            }
        }
    }

    /// Keeps the untaken use of an entry that leaves the map for the next
    /// [`LocalCache::take_uses`].
    fn keep_departed_use(&self, entry: &Entry) {
        let Some((key_id, at)) = entry.take_use() else {
            return;
        };
        let mut departed = self
            .departed_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let latest = departed.entry(key_id).or_insert(at);
        *latest = (*latest).max(at);
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

        assert!(cache.insert(key, verdict.clone(), 100, cache.generation(&key), None));

        assert_eq!(cache.get(&key, 100, 0), Some(verdict.clone()));
        assert_eq!(cache.get(&key, 60_099, 0), Some(verdict));
        assert_eq!(cache.get(&key, 60_100, 0), None);
    }

    #[test]
    fn negative_verdict_uses_its_own_ttl() {
        let cache = cache();
        let key = digest(2);

        cache.insert(key, Verdict::Unknown, 0, cache.generation(&key), None);

        assert_eq!(cache.get(&key, 4_999, 0), Some(Verdict::Unknown));
        assert_eq!(cache.get(&key, 5_000, 0), None);
    }

    #[test]
    fn entry_read_before_cutoff_is_not_trusted() {
        let cache = cache();
        let key = digest(3);

        cache.insert(key, valid(), 1_000, cache.generation(&key), None);

        assert!(cache.get(&key, 1_500, 1_000).is_some());
        assert!(cache.get(&key, 1_500, 1_001).is_none());
    }

    #[test]
    fn fill_started_before_invalidation_is_dropped() {
        let cache = cache();
        let key = digest(4);
        let generation = cache.generation(&key);

        cache.invalidate(&key);
        let cached = cache.insert(key, valid(), 0, generation, None);

        assert!(!cached);
        assert_eq!(cache.get(&key, 0, 0), None);
    }

    #[test]
    fn invalidation_removes_entry() {
        let cache = cache();
        let key = digest(5);
        cache.insert(key, valid(), 0, cache.generation(&key), None);

        cache.invalidate(&key);

        assert_eq!(cache.get(&key, 0, 0), None);
    }

    fn key_id_of(verdict: &Verdict) -> KeyId {
        verdict.principal().expect("a valid verdict").key_id
    }

    #[test]
    fn latest_use_is_taken_once() {
        let cache = cache();
        let key = digest(6);
        let verdict = valid();
        cache.insert(key, verdict.clone(), 0, cache.generation(&key), None);

        assert!(cache.record_use(&key, 40));
        assert!(cache.record_use(&key, 90));
        assert!(cache.record_use(&key, 70));
        let first = cache.take_uses();
        let second = cache.take_uses();
        assert!(cache.record_use(&key, 120));
        let third = cache.take_uses();

        assert_eq!(first, vec![(key_id_of(&verdict), 90)]);
        assert!(second.is_empty(), "a taken use is not taken again");
        assert_eq!(third, vec![(key_id_of(&verdict), 120)]);
    }

    #[test]
    fn use_at_time_zero_is_kept() {
        let cache = cache();
        let key = digest(7);
        let verdict = valid();
        cache.insert(key, verdict.clone(), 0, cache.generation(&key), None);

        cache.record_use(&key, 0);

        assert_eq!(cache.take_uses(), vec![(key_id_of(&verdict), 0)]);
    }

    #[test]
    fn use_of_missing_entry_is_reported() {
        let cache = cache();

        assert!(!cache.record_use(&digest(8), 10));
        assert!(cache.take_uses().is_empty());
    }

    #[test]
    fn use_survives_invalidation_and_refill() {
        let cache = cache();
        let invalidated = digest(9);
        let refilled = digest(10);
        let first = valid();
        let second = valid();
        cache.insert(
            invalidated,
            first.clone(),
            0,
            cache.generation(&invalidated),
            None,
        );
        cache.insert(
            refilled,
            second.clone(),
            0,
            cache.generation(&refilled),
            None,
        );

        cache.record_use(&invalidated, 15);
        cache.record_use(&refilled, 25);
        cache.invalidate(&invalidated);
        cache.insert(
            refilled,
            second.clone(),
            30,
            cache.generation(&refilled),
            None,
        );
        let mut uses = cache.take_uses();
        uses.sort_by_key(|(_, at)| *at);

        assert_eq!(
            uses,
            vec![(key_id_of(&first), 15), (key_id_of(&second), 25)]
        );
    }

    #[test]
    fn use_survives_eviction() {
        let cache = LocalCache::new(1, Duration::from_secs(60), Duration::from_secs(5));
        let mut inserted = Vec::new();
        for seed in 0..=255u8 {
            let key = digest(seed);
            let verdict = valid();
            cache.insert(key, verdict.clone(), 0, cache.generation(&key), None);
            assert!(cache.record_use(&key, u64::from(seed)));
            inserted.push(key_id_of(&verdict));
        }

        let mut recorded: Vec<KeyId> = cache.take_uses().into_iter().map(|(key, _)| key).collect();
        recorded.sort();
        inserted.sort();

        assert!(cache.len() <= SHARDS, "len {}", cache.len());
        assert_eq!(recorded, inserted, "every evicted key's use is kept");
    }

    #[test]
    fn keys_without_scopes_share_the_shard_slice() {
        let cache = cache();
        let first = digest(11);
        let mut second = 12u8;
        while digest(second).as_bytes()[31] as usize % SHARDS
            != first.as_bytes()[31] as usize % SHARDS
        {
            second += 1;
        }
        let second = digest(second);
        cache.insert(first, valid(), 0, cache.generation(&first), None);
        cache.insert(second, valid(), 0, cache.generation(&second), None);

        let scopes = |key| match cache.get(&key, 0, 0) {
            Some(Verdict::Valid(valid)) => valid.scopes,
            other => panic!("expected a valid verdict, got {other:?}"),
        };

        assert!(Arc::ptr_eq(&scopes(first), &scopes(second)));
    }

    #[test]
    fn revoke_replaces_a_cached_entry_only() {
        let cache = cache();
        let cached = digest(13);
        let uncached = digest(14);
        let verdict = valid();
        let owner = verdict.principal();
        cache.insert(cached, verdict, 0, cache.generation(&cached), None);
        let in_flight = cache.generation(&cached);

        cache.revoke(&cached, None, 500);
        cache.revoke(&uncached, owner, 500);
        let late_fill = cache.insert(cached, valid(), 0, in_flight, None);

        assert_eq!(cache.get(&cached, 500, 0), Some(Verdict::Revoked(owner)));
        assert_eq!(cache.get(&cached, 60_499, 0), Some(Verdict::Revoked(owner)));
        assert_eq!(cache.get(&uncached, 500, 0), None);
        assert!(!late_fill, "a fill that read before the revoke loses");
    }

    #[test]
    fn check_records_use_for_active_tenant_only() {
        let cache = cache();
        let tenants = TenantCache::new(100, 60_000);
        let key = digest(15);
        let verdict = valid();
        let key_id = key_id_of(&verdict);
        let tenant = verdict.principal().expect("a valid verdict").tenant_id;
        cache.insert(
            key,
            verdict,
            0,
            cache.generation(&key),
            Some(tenants.slot(tenant)),
        );
        let set = |state| {
            tenants.invalidate(tenant);
            tenants.insert(tenant, state, 0, tenants.generation(tenant));
        };

        set(TenantState::Suspended);
        let suspended = cache.check(&key, 10, 0, &[], false, &tenants);
        tenants.invalidate(tenant);
        let unknown_tenant = cache.check(&key, 20, 0, &[], false, &tenants);
        set(TenantState::Active);
        let missing_scope = cache.check(&key, 30, 0, &["billing:read"], false, &tenants);
        let nothing_yet = cache.take_uses();
        let active = cache.check(&key, 40, 0, &[], true, &tenants);
        let recorded = cache.take_uses();

        let suspended = suspended.expect("a fresh entry");
        assert!(suspended.result.is_ok());
        assert_eq!(suspended.tenant, Some(TenantState::Suspended));
        assert!(!suspended.use_recorded);
        let unknown_tenant = unknown_tenant.expect("a fresh entry");
        assert_eq!(unknown_tenant.tenant, None);
        assert!(!unknown_tenant.use_recorded);
        let missing_scope = missing_scope.expect("a fresh entry");
        assert!(missing_scope.result.is_err());
        assert_eq!(missing_scope.tenant, None, "a rejected key reads no tenant");
        assert!(!missing_scope.use_recorded);
        assert!(nothing_yet.is_empty());
        let active = active.expect("a fresh entry");
        assert!(active.use_recorded);
        let passed = active.result.expect("an active tenant's key passes");
        assert!(passed.scopes.is_some(), "scopes were asked for");
        assert_eq!(recorded, vec![(key_id, 40)]);
    }

    #[test]
    fn check_reads_map_for_evicted_slot() {
        // One entry per shard, so that a second tenant in the first one's
        // shard evicts it.
        let tenants = TenantCache::new(1, 60_000);
        let cache = cache();
        let key = digest(16);
        let verdict = valid();
        let tenant = verdict.principal().expect("a valid verdict").tenant_id;
        cache.insert(
            key,
            verdict,
            0,
            cache.generation(&key),
            Some(tenants.slot(tenant)),
        );
        tenants.insert(tenant, TenantState::Active, 0, tenants.generation(tenant));
        let mut other = TenantId::generate();
        while other.as_uuid().as_bytes()[15] % 16 != tenant.as_uuid().as_bytes()[15] % 16 {
            other = TenantId::generate();
        }

        tenants.insert(other, TenantState::Active, 0, tenants.generation(other));
        let evicted = cache.check(&key, 10, 0, &[], false, &tenants);
        tenants.insert(
            tenant,
            TenantState::Suspended,
            10,
            tenants.generation(tenant),
        );
        let refilled = cache.check(&key, 20, 0, &[], false, &tenants);

        assert_eq!(evicted.expect("a fresh entry").tenant, None);
        assert_eq!(
            refilled.expect("a fresh entry").tenant,
            Some(TenantState::Suspended),
            "the entry's emptied slot sends the check to the map"
        );
    }

    #[test]
    fn cache_stays_within_capacity() {
        let cache = LocalCache::new(128, Duration::from_secs(60), Duration::from_secs(5));

        for seed in 0..=255u8 {
            let key = digest(seed);
            cache.insert(key, valid(), 0, cache.generation(&key), None);
        }

        assert!(cache.len() <= 128, "len {}", cache.len());
    }
}
