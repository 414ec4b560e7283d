//! The limits of tenants and keys, cached in process so that the request
//! path reads the store only once per subject and refresh interval.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tenet_core::{KeyId, Limit, TenantId, TenantLimits, Tenet};

/// Entries per map before the map is emptied, which bounds memory when
/// many tenants or keys are active; each entry is then read again once.
const MAX_ENTRIES: usize = 100_000;

/// Limits read from the store, each kept for the refresh interval.
///
/// A change made through this replica takes effect here at once (see
/// [`LimitCache::forget_tenant`]) and on other replicas within the refresh
/// interval. When a refresh fails, the last known value stays in use and
/// the next attempt waits another interval, so a store outage neither
/// drops limits nor sends every request to the store.
#[derive(Debug)]
pub struct LimitCache {
    refresh: Duration,
    tenants: Entries<TenantId, TenantLimits>,
    keys: Entries<KeyId, Option<Limit>>,
    /// Whether the last read failed, so that an outage logs one warning
    /// and one line when reads succeed again, not one per subject.
    failing: AtomicBool,
}

/// Keyed by ids that the server generated, so the fast hasher needs no
/// defence against chosen keys; SipHash took about a third of a lookup.
type Entries<K, V> = Mutex<HashMap<K, Arc<Slot<V>>, foldhash::fast::RandomState>>;

/// One cached value, with the time it was read.
///
/// Requests read the value under a plain mutex, held only to clone it,
/// because every authenticated request reads two of them. A request that
/// refreshes the value holds the async mutex across the store read, so
/// that concurrent requests for the same subject wait for that read
/// instead of starting their own.
#[derive(Debug, Default)]
struct Slot<V> {
    value: Mutex<Option<(V, Instant)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl<V: Clone> Slot<V> {
    /// Returns the value when it was read less than `refresh` before `now`.
    fn fresh(&self, refresh: Duration, now: Instant) -> Option<V> {
        let value = lock(&self.value);
        let (value, read_at) = value.as_ref()?;
        (now.saturating_duration_since(*read_at) < refresh).then(|| value.clone())
    }

    /// Returns the value, however old.
    fn last(&self) -> Option<V> {
        lock(&self.value).as_ref().map(|(value, _)| value.clone())
    }

    fn set(&self, value: V) {
        *lock(&self.value) = Some((value, Instant::now()));
    }
}

impl LimitCache {
    /// Builds an empty cache that keeps values for `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            tenants: Mutex::default(),
            keys: Mutex::default(),
            failing: AtomicBool::new(false),
        }
    }

    /// Returns a tenant's limits and a key's own limit.
    pub async fn limits(
        &self,
        tenet: &Tenet,
        tenant: TenantId,
        key: KeyId,
    ) -> (TenantLimits, Option<Limit>) {
        if let Some(limits) = self.fresh_limits(tenant, key) {
            return limits;
        }

        let tenant_slot = slot(&self.tenants, tenant);
        let key_slot = slot(&self.keys, key);
        let tenant_limits = self
            .read(&tenant_slot, || tenet.store().tenant_limits(tenant))
            .await;
        let key_limit = self.read(&key_slot, || tenet.store().key_limit(key)).await;
        (tenant_limits, key_limit)
    }

    /// Returns a tenant's limits and a key's own limit when both are cached
    /// and fresh, without waiting.
    ///
    /// Every authenticated request calls this, and both values are almost always
    /// fresh, so this reads them without the per-slot async lock or a
    /// reference count.
    pub fn fresh_limits(
        &self,
        tenant: TenantId,
        key: KeyId,
    ) -> Option<(TenantLimits, Option<Limit>)> {
        let now = Instant::now();
        let tenant_limits = self.fresh(&self.tenants, tenant, now)?;
        let key_limit = self.fresh(&self.keys, key, now)?;
        Some((tenant_limits, key_limit))
    }

    /// Drops a tenant's cached limits, so that the next request reads them.
    pub fn forget_tenant(&self, tenant: TenantId) {
        lock(&self.tenants).remove(&tenant);
    }

    /// Drops a key's cached limit, so that the next request reads it.
    pub fn forget_key(&self, key: KeyId) {
        lock(&self.keys).remove(&key);
    }

    /// Returns the cached value of `id` when it is younger than the refresh
    /// interval at `now`.
    fn fresh<K: Eq + Hash, V: Clone>(
        &self,
        entries: &Entries<K, V>,
        id: K,
        now: Instant,
    ) -> Option<V> {
        lock(entries).get(&id)?.fresh(self.refresh, now)
    }

    async fn read<V, F>(&self, slot: &Slot<V>, fetch: impl FnOnce() -> F) -> V
    where
        V: Clone + Default,
        F: Future<Output = tenet_core::Result<V>>,
    {
        let _refreshing = slot.refreshing.lock().await;
        if let Some(value) = slot.fresh(self.refresh, Instant::now()) {
            return value;
        }

        match fetch().await {
            Ok(value) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("reading rate limits from the store again");
                }
                slot.set(value.clone());
                value
            }
            Err(err) => {
                // NOTE: a subject whose limits were never read before the
                // store failed gets no limits until a read succeeds.
                if self.failing.swap(true, Ordering::AcqRel) {
                    tracing::debug!(error = %err, "failed to read rate limits");
                } else {
                    tracing::warn!(
                        error = %err,
                        "failed to read rate limits; keeping the last known ones"
                    );
                }
                let value = slot.last().unwrap_or_default();
                slot.set(value.clone());
                value
            }
        }
    }
}

fn slot<K: Eq + Hash + Copy, V: Default>(entries: &Entries<K, V>, id: K) -> Arc<Slot<V>> {
    let mut entries = lock(entries);
    if entries.len() >= MAX_ENTRIES && !entries.contains_key(&id) {
        entries.clear();
    }
    Arc::clone(entries.entry(id).or_default())
}

/// Locks a map or a slot's value. No code panics while it holds either,
/// so a poisoned lock still guards a consistent value.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
