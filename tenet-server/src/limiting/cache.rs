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
type Entries<K, V> = Mutex<HashMap<K, Cached<V>, foldhash::fast::RandomState>>;

/// One cached value, with the time it was read.
///
/// Requests read the value under the map's mutex, held only to clone it,
/// because every authenticated request reads two of them: one lock per
/// value, which the server's workers would otherwise contend for twice. A
/// request that refreshes the value holds the entry's async mutex across
/// the store read, so that concurrent requests for the same subject wait
/// for that read instead of starting their own.
#[derive(Debug)]
struct Cached<V> {
    value: Option<(V, Instant)>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl<V> Default for Cached<V> {
    fn default() -> Self {
        Self {
            value: None,
            refreshing: Arc::default(),
        }
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

        let tenant_limits = self
            .read(&self.tenants, tenant, || {
                tenet.store().tenant_limits(tenant)
            })
            .await;
        let key_limit = self
            .read(&self.keys, key, || tenet.store().key_limit(key))
            .await;
        (tenant_limits, key_limit)
    }

    /// Returns a tenant's limits and a key's own limit when both are cached
    /// and fresh, without waiting.
    ///
    /// Every authenticated request calls this, and both values are almost always
    /// fresh, so this reads them without the per-entry async lock or a
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
        let entries = lock(entries);
        let (value, read_at) = entries.get(&id)?.value.as_ref()?;
        (now.saturating_duration_since(*read_at) < self.refresh).then(|| value.clone())
    }

    /// Returns the value of `id`, read from the store unless another
    /// request has just read it.
    async fn read<K, V, F>(&self, entries: &Entries<K, V>, id: K, fetch: impl FnOnce() -> F) -> V
    where
        K: Eq + Hash + Copy,
        V: Clone + Default,
        F: Future<Output = tenet_core::Result<V>>,
    {
        let refreshing = refresh_lock(entries, id);
        let _refreshing = refreshing.lock().await;
        if let Some(value) = self.fresh(entries, id, Instant::now()) {
            return value;
        }

        let value = match fetch().await {
            Ok(value) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("reading rate limits from the store again");
                }
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
                lock(entries)
                    .get(&id)
                    .and_then(|entry| entry.value.as_ref())
                    .map(|(value, _)| value.clone())
                    .unwrap_or_default()
            }
        };
        // An entry that was forgotten or evicted during the read is not
        // brought back, so that a value read before a limits change does
        // not outlive the change.
        let mut entries = lock(entries);
        if let Some(entry) = entries
            .get_mut(&id)
            .filter(|entry| Arc::ptr_eq(&entry.refreshing, &refreshing))
        {
            entry.value = Some((value.clone(), Instant::now()));
        }
        value
    }
}

/// Returns the async mutex that a refresh of `id` holds, adding an entry
/// for `id`. A full map is emptied first, which bounds its memory.
fn refresh_lock<K: Eq + Hash + Copy, V>(
    entries: &Entries<K, V>,
    id: K,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut entries = lock(entries);
    if entries.len() >= MAX_ENTRIES && !entries.contains_key(&id) {
        entries.clear();
    }
    Arc::clone(&entries.entry(id).or_default().refreshing)
}

/// Locks a map. No code panics while it holds one, so a poisoned lock
/// still guards a consistent map.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures_util::FutureExt as _;

    use super::*;

    fn limit() -> Limit {
        Limit::new(5, Duration::from_secs(1), 10).expect("valid limit")
    }

    #[tokio::test]
    async fn read_value_stays_fresh_for_the_refresh_interval() {
        let cache = LimitCache::new(Duration::from_secs(60));
        let key = KeyId::generate();

        let value = cache
            .read(&cache.keys, key, || async { Ok(Some(limit())) })
            .await;

        assert_eq!(value, Some(limit()));
        let now = Instant::now();
        assert_eq!(cache.fresh(&cache.keys, key, now), Some(Some(limit())));
        let later = now + Duration::from_secs(61);
        assert_eq!(cache.fresh(&cache.keys, key, later), None);
    }

    #[tokio::test]
    async fn value_read_across_a_forget_is_not_kept() {
        let cache = LimitCache::new(Duration::from_secs(60));
        let key = KeyId::generate();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut read = pin!(cache.read(&cache.keys, key, || async move {
            released.await.expect("the test releases the read");
            Ok(Some(limit()))
        }));
        assert!(read.as_mut().now_or_never().is_none(), "the read waits");

        cache.forget_key(key);
        release.send(()).expect("the read is waiting");

        assert_eq!(read.await, Some(limit()));
        assert_eq!(cache.fresh(&cache.keys, key, Instant::now()), None);
    }

    #[tokio::test]
    async fn failed_read_keeps_the_last_value() {
        let cache = LimitCache::new(Duration::ZERO);
        let key = KeyId::generate();
        cache
            .read(&cache.keys, key, || async { Ok(Some(limit())) })
            .await;

        let value = cache
            .read(&cache.keys, key, || async {
                Err(tenet_core::Error::Unavailable("store down".into()))
            })
            .await;

        assert_eq!(value, Some(limit()));
    }
}
