//! The `Tenet` service: every tenancy and key operation, over any store.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::cache::local::Millis;
use crate::cache::redis::{RedisCache, RedisOptions};
use crate::cache::{CacheLayer, CacheOptions, Verdict, feed, valid_verdict};
use crate::error::{Error, Result};
use crate::expiry;
use crate::id::{KeyId, TenantId};
use crate::key::{
    ApiKey, IssuedKey, KeyInfo, KeyOptions, KeyRecord, Principal, RotatedKey, VerifiedKey,
};
use crate::key_use::KeyUseRecorder;
use crate::name::{KeyName, TenantName};
use crate::secret::{KeyDigest, Pepper};
use crate::stats::{CacheStats, PoolStatuses};
use crate::store::{Page, PageRequest, Rotation, Store};
use crate::tenant::Tenant;
use crate::usage::{Outcome, UsageCount, UsageRange, UsageRecorder};

const PEPPER_FINGERPRINT: &str = "pepper_fingerprint";

/// Rows per store read when a listing walks every page.
const WALK_PAGE_SIZE: usize = 500;

/// Tenants and their API keys on top of a [`Store`], with optional
/// verification caches.
///
/// Cheap to clone; clones share the store and the caches.
#[derive(Debug, Clone)]
pub struct Tenet {
    store: Arc<dyn Store>,
    pepper: Pepper,
    cache: Option<Arc<CacheLayer>>,
    key_uses: Arc<KeyUseRecorder>,
    usage: Arc<UsageRecorder>,
}

/// Configures a [`Tenet`]; see [`Tenet::builder`].
#[derive(Debug)]
pub struct TenetBuilder {
    store: Arc<dyn Store>,
    pepper: Pepper,
    cache: Option<CacheOptions>,
    redis: Option<RedisOptions>,
}

impl TenetBuilder {
    /// Caches verification results in process.
    pub fn cache(mut self, options: CacheOptions) -> Self {
        self.cache = Some(options);
        self
    }

    /// Shares cached results and revocations with other replicas through
    /// Redis. Turns on the in-process cache with default options unless
    /// [`TenetBuilder::cache`] set it.
    pub fn redis(mut self, options: RedisOptions) -> Self {
        self.redis = Some(options);
        self
    }

    /// Opens the service, checking that the pepper is the one the store's
    /// keys were issued under, and starts the cache's background tasks.
    ///
    /// The first open of an empty store records the pepper's fingerprint;
    /// later opens with another pepper fail with [`Error::Config`] instead
    /// of rejecting every key at run time. Must run inside a tokio runtime
    /// when a cache is configured.
    pub async fn build(self) -> Result<Tenet> {
        let fingerprint = self.pepper.fingerprint();
        let stored = self
            .store
            .init_setting(PEPPER_FINGERPRINT, &fingerprint)
            .await?;
        if stored != fingerprint {
            return Err(Error::Config(
                "the key pepper differs from the one this store's keys were issued \
                 under; start with the original pepper (TENET_KEY_PEPPER or the \
                 data directory's pepper file)"
                    .to_owned(),
            ));
        }

        let cache_options = match (self.cache, &self.redis) {
            (Some(options), _) => Some(options),
            (None, Some(_)) => Some(CacheOptions::default()),
            (None, None) => None,
        };
        let cache = match cache_options {
            Some(options) => {
                options.validate()?;
                let redis = self.redis.map(RedisCache::new).transpose()?;
                let layer = Arc::new(CacheLayer::new(options, redis, self.store.is_shared()));
                feed::spawn(&layer, &self.store);
                Some(layer)
            }
            None => None,
        };

        Ok(Tenet {
            store: self.store,
            pepper: self.pepper,
            cache,
            key_uses: Arc::default(),
            usage: Arc::default(),
        })
    }
}

impl Tenet {
    /// Opens the service over `store` without caches; see
    /// [`TenetBuilder::build`] for the pepper check.
    pub async fn open(store: Arc<dyn Store>, pepper: Pepper) -> Result<Self> {
        Self::builder(store, pepper).build().await
    }

    /// Starts configuring a service over `store`.
    pub fn builder(store: Arc<dyn Store>, pepper: Pepper) -> TenetBuilder {
        TenetBuilder {
            store,
            pepper,
            cache: None,
            redis: None,
        }
    }

    /// Returns the number of entries in the in-process verification cache,
    /// expired ones included; 0 without a cache.
    pub fn cached_keys(&self) -> usize {
        self.cache.as_ref().map_or(0, |cache| cache.local.len())
    }

    /// Returns the cache and invalidation counters; `None` without a cache.
    pub fn cache_stats(&self) -> Option<&CacheStats> {
        self.cache.as_ref().map(|cache| &cache.stats)
    }

    /// Returns the state of the Postgres and Redis connection pools, for
    /// those of them that this service uses.
    pub fn pool_statuses(&self) -> PoolStatuses {
        PoolStatuses {
            postgres: self.store.pool_status(),
            redis: self
                .cache
                .as_ref()
                .and_then(|cache| cache.redis.as_ref())
                .map(RedisCache::pool_status),
        }
    }

    /// Returns the store, for health checks and settings.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, name: TenantName) -> Result<Tenant> {
        let tenant = Tenant {
            id: TenantId::generate(),
            name,
            created_at: now(),
        };
        self.store.insert_tenant(&tenant).await?;
        tracing::debug!(tenant_id = %tenant.id, "created tenant");
        Ok(tenant)
    }

    /// Returns a tenant, or [`Error::NotFound`].
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant> {
        self.store
            .tenant(id)
            .await?
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    /// Lists all tenants, oldest first, reading the store page by page.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let mut tenants = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_tenants_page(after, WALK_PAGE_SIZE).await?;
            tenants.extend(page.items);
            match page.next_after {
                Some(next) => after = Some(TenantId::from_uuid(next)),
                None => return Ok(tenants),
            }
        }
    }

    /// Lists at most `limit` tenants with ids after `after`, oldest first.
    ///
    /// Reads one row more than `limit` to learn whether another page
    /// follows, so the last page has no `next_after`.
    pub async fn list_tenants_page(
        &self,
        after: Option<TenantId>,
        limit: usize,
    ) -> Result<Page<Tenant>> {
        let request = PageRequest {
            after: after.map(|id| id.as_uuid()),
            limit: limit.saturating_add(1),
        };
        let tenants = self.store.list_tenants(request).await?;
        Ok(into_page(tenants, limit, |tenant| tenant.id.as_uuid()))
    }

    /// Issues a new key to a tenant, with a name at most.
    ///
    /// The returned [`IssuedKey`] is the only place the plaintext key ever
    /// exists; the store keeps its keyed digest.
    pub async fn issue_key(&self, tenant: TenantId, name: Option<KeyName>) -> Result<IssuedKey> {
        let options = KeyOptions {
            name,
            ..KeyOptions::default()
        };
        self.issue_key_with(tenant, options).await
    }

    /// Issues a new key to a tenant with a name, an expiry and scopes.
    ///
    /// Fails with [`Error::Invalid`] when `options.expires_at` is not in
    /// the future or lies more than [`expiry::MAX_KEY_LIFETIME`] ahead.
    pub async fn issue_key_with(&self, tenant: TenantId, options: KeyOptions) -> Result<IssuedKey> {
        self.issue_chosen_key(tenant, options, ApiKey::generate())
            .await
    }

    /// Issues `api_key`, which the caller generated.
    async fn issue_chosen_key(
        &self,
        tenant: TenantId,
        options: KeyOptions,
        api_key: ApiKey,
    ) -> Result<IssuedKey> {
        let created_at = now();
        let expires_at = options
            .expires_at
            .map(|at| expiry::check_expiry(at, created_at))
            .transpose()?;
        let mut scopes = options.scopes;
        scopes.sort_unstable();
        scopes.dedup();

        let record = KeyRecord {
            info: KeyInfo {
                id: KeyId::generate(),
                tenant_id: tenant,
                name: options.name,
                prefix: api_key.display_prefix().to_owned(),
                created_at,
                revoked_at: None,
                expires_at,
                scopes,
                metadata: options.metadata,
                last_used_at: None,
            },
            digest: self.pepper.digest(api_key.secret()),
        };
        self.store.insert_key(&record).await?;
        tracing::debug!(tenant_id = %tenant, key_id = %record.info.id, "issued key");

        self.announce(&record.digest, &valid_verdict(&record.info))
            .await;
        Ok(IssuedKey {
            info: record.info,
            api_key,
        })
    }

    /// Lists a tenant's keys, revoked ones included, oldest first, reading
    /// the store page by page.
    pub async fn list_keys(&self, tenant: TenantId) -> Result<Vec<KeyInfo>> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_keys_page(tenant, after, WALK_PAGE_SIZE).await?;
            keys.extend(page.items);
            match page.next_after {
                Some(next) => after = Some(KeyId::from_uuid(next)),
                None => return Ok(keys),
            }
        }
    }

    /// Lists at most `limit` keys of a tenant with ids after `after`,
    /// revoked ones included, oldest first; [`Error::NotFound`] for an
    /// unknown tenant.
    pub async fn list_keys_page(
        &self,
        tenant: TenantId,
        after: Option<KeyId>,
        limit: usize,
    ) -> Result<Page<KeyInfo>> {
        self.tenant(tenant).await?;
        let request = PageRequest {
            after: after.map(|id| id.as_uuid()),
            limit: limit.saturating_add(1),
        };
        let keys = self.store.list_keys(tenant, request).await?;
        Ok(into_page(keys, limit, |key| key.id.as_uuid()))
    }

    /// Revokes a key of a tenant. Revoking a revoked key changes nothing.
    ///
    /// A key id that belongs to another tenant is [`Error::NotFound`], and
    /// that key stays valid.
    pub async fn revoke_key(&self, tenant: TenantId, key: KeyId) -> Result<KeyInfo> {
        let revoked = self
            .store
            .revoke_key(tenant, key, now())
            .await?
            .ok_or_else(|| Error::not_found("key", key))?;
        tracing::debug!(tenant_id = %tenant, key_id = %key, "revoked key");

        let owner = principal_of(&revoked.info);
        self.announce(&revoked.digest, &Verdict::Revoked(Some(owner)))
            .await;
        Ok(revoked.info)
    }

    /// Rotates a key: issues a new key with the old key's name, scopes and
    /// metadata, and ends the old key after `grace`, or at once for a zero
    /// grace.
    ///
    /// The old key's expiry moves to now plus `grace` unless it already
    /// expires sooner, and every replica's cache learns of the shorter
    /// expiry like of a revoke. A key id that belongs to another tenant, or
    /// a revoked key, is [`Error::NotFound`]. The new key keeps the old
    /// key's expiry, if it had one.
    pub async fn rotate_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        grace: std::time::Duration,
    ) -> Result<RotatedKey> {
        let old = self
            .list_keys(tenant)
            .await?
            .into_iter()
            .find(|info| info.id == key && info.revoked_at.is_none())
            .ok_or_else(|| Error::not_found("key", key))?;

        let rotated_at = now();
        let api_key = ApiKey::generate();
        let replacement = KeyRecord {
            info: KeyInfo {
                id: KeyId::generate(),
                tenant_id: tenant,
                name: old.name.clone(),
                prefix: api_key.display_prefix().to_owned(),
                created_at: rotated_at,
                revoked_at: None,
                expires_at: old.expires_at.filter(|at| *at > rotated_at),
                scopes: old.scopes.clone(),
                metadata: old.metadata.clone(),
                last_used_at: None,
            },
            digest: self.pepper.digest(api_key.secret()),
        };
        let rotation = if grace.is_zero() {
            Rotation::RevokeAt(rotated_at)
        } else {
            Rotation::ExpireBy(rotated_at + grace)
        };
        let ended = self
            .store
            .rotate_key(tenant, key, &replacement, rotation)
            .await?
            .ok_or_else(|| Error::not_found("key", key))?;
        tracing::debug!(
            tenant_id = %tenant,
            key_id = %key,
            new_key_id = %replacement.info.id,
            "rotated key"
        );

        self.announce(&replacement.digest, &valid_verdict(&replacement.info))
            .await;
        let old_verdict = if ended.info.revoked_at.is_some() {
            Verdict::Revoked(Some(principal_of(&ended.info)))
        } else {
            valid_verdict(&ended.info)
        };
        self.announce(&ended.digest, &old_verdict).await;
        Ok(RotatedKey {
            issued: IssuedKey {
                info: replacement.info,
                api_key,
            },
            old: ended.info,
        })
    }

    /// Verifies a presented key and returns whom it acts for.
    ///
    /// Malformed keys are rejected by parsing alone. A well-formed key is
    /// looked up by its keyed digest, in the caches first, then through the
    /// store's index, where the found digest is compared once more in
    /// constant time. A revoked, unknown or expired key is rejected. A warm
    /// cache hit allocates nothing.
    pub async fn verify(&self, presented: &str) -> Result<Principal> {
        self.verify_with(presented, &[])
            .await
            .map(|verified| verified.principal)
    }

    /// Verifies a presented key like [`Tenet::verify`] and also requires
    /// it to hold every scope in `required_scopes`, else
    /// [`Rejection::MissingScope`](crate::Rejection::MissingScope).
    ///
    /// Expiry is checked at each call against the wall clock, so a cached
    /// key is rejected from the millisecond it expires, without a store
    /// read or write. A warm cache hit allocates nothing: the scopes are
    /// shared with the cache entry.
    pub async fn verify_with(
        &self,
        presented: &str,
        required_scopes: &[&str],
    ) -> Result<VerifiedKey> {
        let (verdict, now) = self.verdict(presented).await?;
        let verified = verdict.check(required_scopes);
        if verified.is_ok() {
            self.record_key_use(&verdict, now);
        }
        verified
    }

    /// Verifies a presented key like [`Tenet::verify_with`] and counts the
    /// request for usage metering: accepted when the key verifies, rejected
    /// when the key is known but revoked, expired or missing a scope.
    ///
    /// Malformed and unknown keys belong to no tenant and are not counted.
    /// A revoked key is counted only when this process has the key's
    /// record. A revoked state that reached the cache through another
    /// replica's key event or through Redis carries no key id.
    pub async fn verify_metered(
        &self,
        presented: &str,
        required_scopes: &[&str],
    ) -> Result<VerifiedKey> {
        let (verdict, now) = self.verdict(presented).await?;
        let owner = verdict.principal();
        let verified = verdict.check(required_scopes);

        match (&verified, owner) {
            (Ok(verified), _) => {
                let principal = verified.principal;
                self.record_key_use(&verdict, now);
                self.record_usage(principal.tenant_id, principal.key_id, Outcome::Accepted);
            }
            (Err(Error::Rejected(_)), Some(owner)) => {
                self.record_usage(owner.tenant_id, owner.key_id, Outcome::Rejected);
            }
            (Err(_), _) => {}
        }
        verified
    }

    /// Counts one request of a key for usage metering, in memory until the
    /// next [`Tenet::flush_usage`]. It takes no lock across an await and
    /// cannot fail.
    ///
    /// A route that applies a rate limit after the key verified should
    /// verify with [`Tenet::verify_with`] and record [`Outcome::Accepted`]
    /// or [`Outcome::RateLimited`] here, because [`Tenet::verify_metered`]
    /// already counts a verified key as accepted.
    pub fn record_usage(&self, tenant: TenantId, key: KeyId, outcome: Outcome) {
        self.usage.record(tenant, key, outcome);
    }

    /// Returns the cached or stored state of a presented key, and the
    /// cache time of the lookup when a cache is configured.
    async fn verdict(&self, presented: &str) -> Result<(Verdict, Option<Millis>)> {
        let digest = self
            .pepper
            .digest_presented(presented)
            .map_err(Error::Rejected)?;

        let Some(cache) = &self.cache else {
            return Ok((self.verdict_from_store(&digest).await?, None));
        };
        let now = cache.local.now();
        if let Some(verdict) = cache.local.get(&digest, now, cache.trust_cutoff(now)) {
            cache.stats.local_hits.increment();
            return Ok((verdict, Some(now)));
        }
        cache.stats.local_misses.increment();
        let verdict = self.verify_uncached(cache, digest).await?;
        Ok((verdict, Some(now)))
    }

    /// Records that the key of a valid `verdict` was used, at the cache
    /// time `now` when there is one.
    ///
    /// With a cache, the use goes to the cell that the cache entry shares,
    /// which takes atomic operations only. Without one, each verification
    /// builds a new verdict, so the use goes to the recorder's map instead.
    fn record_key_use(&self, verdict: &Verdict, now: Option<Millis>) {
        let Verdict::Valid(key) = verdict else {
            return;
        };
        match (&self.cache, now) {
            (Some(cache), Some(now)) => {
                self.key_uses.record_cell(&key.uses, cache.wall_millis(now));
            }
            _ => self.key_uses.record(key.principal.key_id),
        }
    }

    /// Writes the `last_used_at` of every key that verified since the last
    /// call, in one store call, and returns how many keys it wrote.
    ///
    /// Called once per interval, this writes each key at most once per
    /// interval. When the write fails, the uses are kept for the next call.
    ///
    /// NOTE: nothing calls this on its own; `tenet-server` calls it on a
    /// timer. An embedder that never calls it keeps growing memory: one
    /// entry per cache fill of a used key, or per key without a cache.
    pub async fn flush_key_uses(&self) -> Result<usize> {
        let uses = self.key_uses.take();
        if uses.is_empty() {
            return Ok(0);
        }
        match self.store.record_key_uses(&uses).await {
            Ok(()) => {
                tracing::debug!(keys = uses.len(), "wrote key uses");
                Ok(uses.len())
            }
            Err(err) => {
                self.key_uses.restore(&uses);
                Err(err)
            }
        }
    }

    /// Adds the usage counts recorded since the last call to the store in
    /// one atomic call, and returns how many hourly rows it wrote.
    ///
    /// When the write fails, the counts are kept for the next call, so a
    /// failed flush loses nothing while the process lives.
    pub async fn flush_usage(&self) -> Result<usize> {
        let counts = self.usage.take();
        if counts.is_empty() {
            return Ok(0);
        }
        match self.store.add_usage(&counts).await {
            Ok(()) => {
                tracing::debug!(rows = counts.len(), "wrote usage counts");
                Ok(counts.len())
            }
            Err(err) => {
                self.usage.restore(&counts);
                Err(err)
            }
        }
    }

    /// Returns a tenant's stored hourly usage counts in `range`, ordered by
    /// hour, then key id; [`Error::NotFound`] for an unknown tenant.
    ///
    /// Counts still in memory, here or on other replicas, are not included
    /// until their next flush.
    pub async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
        self.tenant(tenant).await?;
        self.store.usage(tenant, range).await
    }

    async fn verify_uncached(&self, cache: &Arc<CacheLayer>, digest: KeyDigest) -> Result<Verdict> {
        // Both are taken before any read, see `LocalCache::insert`.
        let generation = cache.local.generation(&digest);
        let read_at = cache.local.now();

        if let Some(redis) = &cache.redis {
            if let Some(verdict) = redis.get(&digest).await {
                cache.stats.redis_hits.increment();
                cache
                    .local
                    .insert(digest, verdict.clone(), read_at, generation);
                return Ok(verdict);
            }
            cache.stats.redis_misses.increment();
        }

        let verdict = self.verdict_from_store(&digest).await?;
        cache
            .local
            .insert(digest, verdict.clone(), read_at, generation);
        if cache.redis.is_some() {
            let cache = Arc::clone(cache);
            let filled = verdict.clone();
            tokio::spawn(async move {
                // A fill that took too long may have read the store before a
                // revoke whose Redis entry has expired since.
                if cache.local.now().saturating_sub(read_at) > cache.fill_deadline() {
                    return;
                }
                if let Some(redis) = &cache.redis {
                    redis.put(&digest, &filled, cache.ttl_for(&filled)).await;
                }
            });
        }
        Ok(verdict)
    }

    async fn verdict_from_store(&self, digest: &KeyDigest) -> Result<Verdict> {
        let verdict = match self.store.key_by_digest(digest).await? {
            Some(record) if record.digest.ct_eq(digest) => {
                if record.info.revoked_at.is_some() {
                    Verdict::Revoked(Some(principal_of(&record.info)))
                } else {
                    valid_verdict(&record.info)
                }
            }
            _ => Verdict::Unknown,
        };
        Ok(verdict)
    }

    /// Tells the caches, here and on other replicas, that the key with
    /// `digest` is now in the `verdict` state. Redis comes before the local
    /// cache so that a local fill from Redis cannot undo the change.
    async fn announce(&self, digest: &KeyDigest, verdict: &Verdict) {
        let Some(cache) = &self.cache else {
            return;
        };
        if let Some(redis) = &cache.redis {
            redis.put(digest, verdict, cache.ttl_for(verdict)).await;
        }
        cache.local.invalidate(digest);
        if let Some(redis) = &cache.redis {
            if redis.publish(digest).await {
                cache.stats.invalidations_published.increment();
            }
        }
    }
}

fn principal_of(info: &KeyInfo) -> Principal {
    Principal {
        tenant_id: info.tenant_id,
        key_id: info.id,
    }
}

/// Returns the current time in UTC, truncated to milliseconds, which every
/// store keeps exactly.
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let millis = now.millisecond();
    now.replace_millisecond(millis).unwrap_or(now)
}

/// Cuts `rows`, read with a limit of `limit + 1`, to `limit` and sets
/// `next_after` to the last kept row's id when a row was cut.
fn into_page<T>(mut rows: Vec<T>, limit: usize, id_of: impl Fn(&T) -> uuid::Uuid) -> Page<T> {
    let next_after = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(id_of)
    } else {
        None
    };
    Page {
        items: rows,
        next_after,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::error::Rejection;
    use crate::key_use::KeyUse;
    use crate::store::MemoryStore;

    /// A store that counts lookups by digest, and can pause the first lookup
    /// until released, returning the record as it was when the lookup began.
    #[derive(Debug, Default)]
    struct ProbeStore {
        inner: MemoryStore,
        lookups: AtomicUsize,
        gate: Option<(Notify, Notify)>,
    }

    #[async_trait]
    impl Store for ProbeStore {
        async fn insert_tenant(&self, tenant: &Tenant) -> Result<()> {
            self.inner.insert_tenant(tenant).await
        }
        async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
            self.inner.tenant(id).await
        }
        async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>> {
            self.inner.list_tenants(page).await
        }
        async fn insert_key(&self, key: &KeyRecord) -> Result<()> {
            self.inner.insert_key(key).await
        }
        async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>> {
            self.inner.list_keys(tenant, page).await
        }
        async fn revoke_key(
            &self,
            tenant: TenantId,
            key: KeyId,
            at: OffsetDateTime,
        ) -> Result<Option<KeyRecord>> {
            self.inner.revoke_key(tenant, key, at).await
        }
        async fn rotate_key(
            &self,
            tenant: TenantId,
            key: KeyId,
            replacement: &KeyRecord,
            rotation: Rotation,
        ) -> Result<Option<KeyRecord>> {
            self.inner
                .rotate_key(tenant, key, replacement, rotation)
                .await
        }
        async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>> {
            let earlier = self.lookups.fetch_add(1, Ordering::SeqCst);
            let snapshot = self.inner.key_by_digest(digest).await;
            if let (0, Some((reached, release))) = (earlier, &self.gate) {
                reached.notify_one();
                release.notified().await;
            }
            snapshot
        }
        async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
            self.inner.setting(name).await
        }
        async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
            self.inner.init_setting(name, value).await
        }
        async fn record_key_uses(&self, uses: &[KeyUse]) -> Result<()> {
            self.inner.record_key_uses(uses).await
        }
        async fn add_usage(&self, counts: &[UsageCount]) -> Result<()> {
            self.inner.add_usage(counts).await
        }
        async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
            self.inner.usage(tenant, range).await
        }
        async fn ping(&self) -> Result<()> {
            self.inner.ping().await
        }
    }

    fn pepper() -> Pepper {
        Pepper::from_config(&Pepper::generate_config()).expect("generated pepper is valid")
    }

    async fn cached(store: Arc<ProbeStore>) -> Tenet {
        Tenet::builder(store, pepper())
            .cache(CacheOptions::default())
            .build()
            .await
            .expect("service opens")
    }

    async fn tenant(tenet: &Tenet) -> TenantId {
        let name = TenantName::parse("Acme").expect("valid name");
        tenet.create_tenant(name).await.expect("tenant created").id
    }

    #[tokio::test]
    async fn warm_verification_skips_the_store() {
        let store = Arc::new(ProbeStore::default());
        let tenet = cached(Arc::clone(&store)).await;
        let issued = tenet
            .issue_key(tenant(&tenet).await, None)
            .await
            .expect("issued");

        for _ in 0..3 {
            tenet
                .verify(issued.api_key.expose_secret())
                .await
                .expect("valid key");
        }

        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_key_is_cached_briefly() {
        let store = Arc::new(ProbeStore::default());
        let tenet = cached(Arc::clone(&store)).await;
        let stranger = ApiKey::generate();

        for _ in 0..3 {
            let err = tenet
                .verify(stranger.expose_secret())
                .await
                .expect_err("unknown key");
            assert!(matches!(err, Error::Rejected(Rejection::Unknown)));
        }

        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn issuing_is_not_shadowed_by_a_cached_miss() {
        let tenet = cached(Arc::new(ProbeStore::default())).await;
        let tenant = tenant(&tenet).await;
        let key = ApiKey::generate();
        let early = tenet.verify(key.expose_secret()).await;
        assert!(matches!(early, Err(Error::Rejected(Rejection::Unknown))));

        tenet
            .issue_chosen_key(tenant, KeyOptions::default(), key.clone())
            .await
            .expect("issued");

        let principal = tenet.verify(key.expose_secret()).await.expect("now valid");
        assert_eq!(principal.tenant_id, tenant);
    }

    #[tokio::test]
    async fn revoke_takes_effect_on_a_warm_cache() {
        let tenet = cached(Arc::new(ProbeStore::default())).await;
        let tenant = tenant(&tenet).await;
        let issued = tenet.issue_key(tenant, None).await.expect("issued");
        tenet
            .verify(issued.api_key.expose_secret())
            .await
            .expect("valid key");

        tenet
            .revoke_key(tenant, issued.info.id)
            .await
            .expect("revoked");

        let err = tenet
            .verify(issued.api_key.expose_secret())
            .await
            .expect_err("revoked");
        assert!(matches!(err, Error::Rejected(Rejection::Revoked)));
    }

    #[tokio::test]
    async fn fill_racing_a_revoke_does_not_restore_the_key() {
        let store = Arc::new(ProbeStore {
            gate: Some((Notify::new(), Notify::new())),
            ..ProbeStore::default()
        });
        let tenet = cached(Arc::clone(&store)).await;
        let tenant = tenant(&tenet).await;
        let issued = tenet.issue_key(tenant, None).await.expect("issued");
        let presented = issued.api_key.expose_secret().to_owned();
        let (reached, release) = store.gate.as_ref().expect("gated store");

        // The lookup reads the key while it is still valid, then waits.
        let racing = tokio::spawn({
            let tenet = tenet.clone();
            let presented = presented.clone();
            async move { tenet.verify(&presented).await }
        });
        reached.notified().await;
        tenet
            .revoke_key(tenant, issued.info.id)
            .await
            .expect("revoked");
        release.notify_one();
        let raced = racing.await.expect("task finished");
        assert!(raced.is_ok(), "the lookup began before the revoke");

        let after = tenet.verify(&presented).await;
        assert!(matches!(after, Err(Error::Rejected(Rejection::Revoked))));
    }

    #[tokio::test]
    async fn cached_key_is_rejected_once_it_expires() {
        let store = Arc::new(ProbeStore::default());
        let tenet = cached(Arc::clone(&store)).await;
        let expires_at = OffsetDateTime::now_utc() + std::time::Duration::from_millis(300);
        let options = KeyOptions {
            expires_at: Some(expires_at),
            ..KeyOptions::default()
        };
        let issued = tenet
            .issue_key_with(tenant(&tenet).await, options)
            .await
            .expect("issued");
        let presented = issued.api_key.expose_secret();
        tenet.verify(presented).await.expect("valid before expiry");

        let remaining = expires_at - OffsetDateTime::now_utc();
        tokio::time::sleep(remaining.unsigned_abs() + std::time::Duration::from_millis(20)).await;
        let err = tenet.verify(presented).await.expect_err("expired");

        assert!(matches!(err, Error::Rejected(Rejection::Expired)));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1, "served from cache");
    }

    #[tokio::test]
    async fn invalid_cache_options_are_rejected() {
        let options = CacheOptions {
            ttl: std::time::Duration::from_millis(500),
            ..CacheOptions::default()
        };

        let built = Tenet::builder(Arc::new(MemoryStore::new()), pepper())
            .cache(options)
            .build()
            .await;

        assert!(matches!(built, Err(Error::Config(_))));
    }
}
