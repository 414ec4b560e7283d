//! The `Tenet` service: every tenancy and key operation, over any store.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::audit::{Actor, AuditAction, AuditEntry, AuditTarget};
use crate::cache::fills::Fill;
use crate::cache::local::Millis;
use crate::cache::redis::{RedisCache, RedisOptions};
use crate::cache::tenants::TenantState;
use crate::cache::{CacheLayer, CacheOptions, Passed, Verdict, feed, valid_verdict};
use crate::clock::CacheClock;
use crate::error::{Error, Rejection, Result};
use crate::expiry;
use crate::id::{AuditId, KeyId, TenantId};
use crate::key::{
    ApiKey, IssuedKey, KeyInfo, KeyOptions, KeyRecord, Principal, RotatedKey, VerifiedKey,
};
use crate::key_use::KeyUseRecorder;
use crate::name::{KeyName, TenantName};
use crate::ratelimit::{Limit, QuotaMonth, TenantLimits};
use crate::secret::{KeyDigest, Pepper};
use crate::stats::{CacheStats, PoolStatuses};
use crate::store::{KeyLimitWrite, Page, PageRequest, Rotation, Store};
use crate::tenant::{Tenant, TenantStatus};
use crate::usage::{Outcome, UsageCount, UsageRange, UsageRecorder};

const PEPPER_FINGERPRINT: &str = "pepper_fingerprint";

/// Rows per store read when a listing walks every page.
const WALK_PAGE_SIZE: usize = 500;

/// Tenants and their API keys on top of a [`Store`], with optional
/// verification caches.
///
/// Cheap to clone; clones share the store and the caches. Every change is
/// recorded in the audit trail under the handle's actor, which is
/// [`Actor::Admin`] unless [`Tenet::acting_as`] set another.
#[derive(Debug, Clone)]
pub struct Tenet {
    store: Arc<dyn Store>,
    pepper: Pepper,
    cache: Option<Arc<CacheLayer>>,
    actor: Actor,
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
    /// The clock of the cache's time; tests set a manual one.
    clock: CacheClock,
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

    /// Times the cache with `clock`, which a test moves by hand.
    #[cfg(test)]
    fn clock(mut self, clock: CacheClock) -> Self {
        self.clock = clock;
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
                let layer = Arc::new(CacheLayer::new(
                    options,
                    redis,
                    self.store.is_shared(),
                    self.clock,
                ));
                feed::spawn(&layer, &self.store);
                Some(layer)
            }
            None => None,
        };

        Ok(Tenet {
            store: self.store,
            pepper: self.pepper,
            cache,
            actor: Actor::Admin,
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
            clock: CacheClock::new(),
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

    /// Returns a handle on the same service whose changes the audit trail
    /// records as made by `actor`.
    pub fn acting_as(&self, actor: Actor) -> Tenet {
        Tenet {
            actor,
            ..self.clone()
        }
    }

    /// Returns the actor that this handle records changes under.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    fn audit_entry(
        &self,
        tenant: TenantId,
        action: AuditAction,
        target: AuditTarget,
        at: OffsetDateTime,
    ) -> AuditEntry {
        AuditEntry::new(tenant, self.actor, action, target, at)
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, name: TenantName) -> Result<Tenant> {
        let tenant = Tenant::new(TenantId::generate(), name, now());
        let audit = self.audit_entry(
            tenant.id,
            AuditAction::CreateTenant,
            AuditTarget::Tenant(tenant.id),
            tenant.created_at,
        );
        self.store.insert_tenant(&tenant, &audit).await?;
        tracing::debug!(tenant_id = %tenant.id, actor = %self.actor, "created tenant");
        Ok(tenant)
    }

    /// Returns a tenant, or [`Error::NotFound`] when it does not exist or
    /// is deleted.
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant> {
        self.store
            .tenant(id)
            .await?
            .filter(|tenant| tenant.deleted_at.is_none())
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    /// Renames a tenant; [`Error::NotFound`] when it does not exist or is
    /// deleted.
    pub async fn rename_tenant(&self, id: TenantId, name: TenantName) -> Result<Tenant> {
        let audit = self.audit_entry(
            id,
            AuditAction::RenameTenant,
            AuditTarget::Tenant(id),
            now(),
        );
        let tenant = self
            .store
            .rename_tenant(id, &name, &audit)
            .await?
            .ok_or_else(|| Error::not_found("tenant", id))?;
        tracing::debug!(tenant_id = %id, actor = %self.actor, "renamed tenant");
        Ok(tenant)
    }

    /// Suspends a tenant: its keys are rejected with
    /// [`Rejection::TenantSuspended`] until [`Tenet::resume_tenant`].
    /// Suspending a suspended tenant changes nothing.
    ///
    /// Every replica's cache learns of the change within the staleness
    /// bound, like of a revoke.
    pub async fn suspend_tenant(&self, id: TenantId) -> Result<Tenant> {
        self.set_tenant_status(id, TenantStatus::Suspended, AuditAction::SuspendTenant)
            .await
    }

    /// Resumes a suspended tenant, whose keys then verify again. Resuming
    /// an active tenant changes nothing.
    pub async fn resume_tenant(&self, id: TenantId) -> Result<Tenant> {
        self.set_tenant_status(id, TenantStatus::Active, AuditAction::ResumeTenant)
            .await
    }

    async fn set_tenant_status(
        &self,
        id: TenantId,
        status: TenantStatus,
        action: AuditAction,
    ) -> Result<Tenant> {
        let audit = self.audit_entry(id, action, AuditTarget::Tenant(id), now());
        let tenant = self
            .store
            .set_tenant_status(id, status, &audit)
            .await?
            .ok_or_else(|| Error::not_found("tenant", id))?;
        tracing::debug!(tenant_id = %id, actor = %self.actor, %status, "set tenant status");

        self.announce_tenant(id).await;
        Ok(tenant)
    }

    /// Deletes a tenant: revokes every key it has and marks it deleted, in
    /// one transaction. Afterwards the tenant is [`Error::NotFound`] for
    /// every operation except [`Tenet::audit_page`].
    pub async fn delete_tenant(&self, id: TenantId) -> Result<()> {
        let at = now();
        let audit = self.audit_entry(id, AuditAction::DeleteTenant, AuditTarget::Tenant(id), at);
        let revoked = self
            .store
            .delete_tenant(id, at, &audit)
            .await?
            .ok_or_else(|| Error::not_found("tenant", id))?;
        tracing::debug!(
            tenant_id = %id,
            actor = %self.actor,
            revoked_keys = revoked.len(),
            "deleted tenant"
        );

        for key in &revoked {
            let owner = principal_of(&key.info);
            self.announce(&key.digest, &Verdict::Revoked(Some(owner)))
                .await;
        }
        self.announce_tenant(id).await;
        Ok(())
    }

    /// Lists at most `limit` audit entries of a tenant with ids after
    /// `after`, oldest first. A deleted tenant's trail stays readable; a
    /// tenant that never existed is [`Error::NotFound`].
    pub async fn audit_page(
        &self,
        tenant: TenantId,
        after: Option<AuditId>,
        limit: usize,
    ) -> Result<Page<AuditEntry>> {
        if self.store.tenant(tenant).await?.is_none() {
            return Err(Error::not_found("tenant", tenant));
        }
        let request = PageRequest {
            after: after.map(|id| id.as_uuid()),
            limit: limit.saturating_add(1),
        };
        let entries = self.store.list_audit(tenant, request).await?;
        Ok(into_page(entries, limit, |entry| entry.id.as_uuid()))
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
                replaced_by: None,
            },
            digest: self.pepper.digest(api_key.secret()),
        };
        let audit = self.audit_entry(
            tenant,
            AuditAction::IssueKey,
            AuditTarget::Key(record.info.id),
            created_at,
        );
        self.store
            .insert_key(&record, options.limit.as_ref(), &audit)
            .await?;
        tracing::debug!(
            tenant_id = %tenant,
            key_id = %record.info.id,
            actor = %self.actor,
            "issued key"
        );

        self.announce(&record.digest, &valid_verdict(&record.info))
            .await;
        Ok(IssuedKey {
            info: record.info,
            api_key,
            limit: options.limit,
        })
    }

    /// Returns a tenant's limits, or [`Error::NotFound`] for an unknown
    /// tenant.
    pub async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
        self.tenant(tenant).await?;
        self.store.tenant_limits(tenant).await
    }

    /// Replaces a tenant's limits after checking the quota, and returns
    /// them; [`Error::NotFound`] for an unknown or deleted tenant.
    pub async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: TenantLimits,
    ) -> Result<TenantLimits> {
        limits.validate()?;
        let audit = self.audit_entry(
            tenant,
            AuditAction::SetTenantLimits,
            AuditTarget::Tenant(tenant),
            now(),
        );
        self.store
            .set_tenant_limits(tenant, &limits, &audit)
            .await?;
        tracing::debug!(tenant_id = %tenant, actor = %self.actor, "set tenant limits");
        Ok(limits)
    }

    /// Returns a key's own rate limit, or `None` when only its tenant's
    /// limit applies; [`Error::NotFound`] for a key that is not this
    /// tenant's.
    pub async fn key_limit(&self, tenant: TenantId, key: KeyId) -> Result<Option<Limit>> {
        self.tenant_key(tenant, key).await?;
        self.store.key_limit(key).await
    }

    /// Sets a key's own limit, or removes it for `None`. A key id that
    /// belongs to another tenant, or any key of a deleted tenant, is
    /// [`Error::NotFound`], and a revoked key is [`Error::KeyRevoked`].
    pub async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: Option<Limit>,
    ) -> Result<Option<Limit>> {
        let audit = self.audit_entry(
            tenant,
            AuditAction::SetKeyLimit,
            AuditTarget::Key(key),
            now(),
        );
        match self
            .store
            .set_key_limit(tenant, key, limit.as_ref(), &audit)
            .await?
        {
            KeyLimitWrite::Written => {}
            KeyLimitWrite::NotFound => {
                // Read only after the write found nothing, so that the
                // error names the tenant when the tenant is what is missing.
                self.tenant(tenant).await?;
                return Err(Error::not_found("key", key));
            }
            KeyLimitWrite::Revoked => return Err(Error::KeyRevoked { key }),
        }
        tracing::debug!(tenant_id = %tenant, key_id = %key, actor = %self.actor, "set key limit");
        Ok(limit)
    }

    /// Reads one key of a tenant, revoked or not; [`Error::NotFound`] for
    /// an unknown tenant or a key that is not this tenant's.
    ///
    /// It reads a one-key page of the tenant's listing that starts just
    /// before `key`, which every store reads through its index on tenant
    /// and key id, so its cost does not grow with the tenant's key count.
    async fn tenant_key(&self, tenant: TenantId, key: KeyId) -> Result<KeyInfo> {
        let before = key
            .as_uuid()
            .as_u128()
            .checked_sub(1)
            .map(|id| KeyId::from_uuid(uuid::Uuid::from_u128(id)));
        self.list_keys_page(tenant, before, 1)
            .await?
            .items
            .into_iter()
            .find(|info| info.id == key)
            .ok_or_else(|| Error::not_found("key", key))
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
    /// that key stays valid. So is any key of a deleted tenant.
    pub async fn revoke_key(&self, tenant: TenantId, key: KeyId) -> Result<KeyInfo> {
        self.tenant(tenant).await?;
        let at = now();
        let audit = self.audit_entry(tenant, AuditAction::RevokeKey, AuditTarget::Key(key), at);
        let revoked = self
            .store
            .revoke_key(tenant, key, at, &audit)
            .await?
            .ok_or_else(|| Error::not_found("key", key))?;
        tracing::debug!(tenant_id = %tenant, key_id = %key, actor = %self.actor, "revoked key");

        let owner = principal_of(&revoked.info);
        self.announce(&revoked.digest, &Verdict::Revoked(Some(owner)))
            .await;
        Ok(revoked.info)
    }

    /// Rotates a key: issues a new key with the old key's name, scopes and
    /// own rate limit and metadata, and ends the old key after `grace`, or
    /// at once for a zero grace.
    ///
    /// The old key's expiry moves to now plus `grace` unless it already
    /// expires sooner, and every replica's cache learns of the shorter
    /// expiry like of a revoke. The new key keeps the old key's expiry, if
    /// it had one.
    ///
    /// A key rotates once: the store records the new key as the old key's
    /// successor in the same transaction, and of concurrent rotations of
    /// one key exactly one succeeds. Errors:
    /// - [`Error::NotFound`] for a key id of another tenant;
    /// - [`Error::KeyRotated`] for a key rotated before, naming its
    ///   successor, also when it was revoked afterwards;
    /// - [`Error::KeyRevoked`] for a revoked key never rotated;
    /// - [`Error::KeyExpired`] for a key whose expiry has passed.
    pub async fn rotate_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        grace: std::time::Duration,
    ) -> Result<RotatedKey> {
        self.rotate_key_expiring_by(tenant, key, grace, None).await
    }

    /// Rotates a key like [`Tenet::rotate_key`], but the new key expires at
    /// `latest_expiry` at the latest, also when the old key never expires.
    ///
    /// A caller that acts through an expiring key passes that key's expiry,
    /// so that no key it rotates outlives it. A `latest_expiry` that has
    /// passed is [`Error::Invalid`].
    pub async fn rotate_key_expiring_by(
        &self,
        tenant: TenantId,
        key: KeyId,
        grace: std::time::Duration,
        latest_expiry: Option<OffsetDateTime>,
    ) -> Result<RotatedKey> {
        let rotated_at = now();
        if let Some(latest) = latest_expiry.filter(|latest| *latest <= rotated_at) {
            return Err(Error::invalid(
                "expires_at",
                format!("the latest expiry {latest} has passed, so the new key would be expired"),
            ));
        }
        let old = self.rotatable_key(tenant, key, rotated_at).await?;

        let expires_at = match (old.expires_at, latest_expiry) {
            (Some(old), Some(latest)) => Some(old.min(latest)),
            (old, latest) => old.or(latest),
        };
        let api_key = ApiKey::generate();
        let replacement = KeyRecord {
            info: KeyInfo {
                id: KeyId::generate(),
                tenant_id: tenant,
                name: old.name.clone(),
                prefix: api_key.display_prefix().to_owned(),
                created_at: rotated_at,
                revoked_at: None,
                expires_at,
                scopes: old.scopes.clone(),
                metadata: old.metadata.clone(),
                last_used_at: None,
                replaced_by: None,
            },
            digest: self.pepper.digest(api_key.secret()),
        };
        let rotation = if grace.is_zero() {
            Rotation::RevokeAt(rotated_at)
        } else {
            Rotation::ExpireBy(rotated_at + grace)
        };
        // The limit is read first, so that an unreadable limit fails the
        // rotation before anything is written.
        let limit = self.store.key_limit(key).await?;
        let audit = self.audit_entry(
            tenant,
            AuditAction::RotateKey,
            AuditTarget::Key(key),
            rotated_at,
        );
        let rotated = self
            .store
            .rotate_key(tenant, key, &replacement, limit.as_ref(), rotation, &audit)
            .await?;
        let Some(ended) = rotated else {
            // Another rotation, a revoke or the expiry came first. Reading
            // the key again after the store's atomic check shows which.
            self.rotatable_key(tenant, key, rotated_at).await?;
            return Err(Error::not_found("key", key));
        };
        tracing::debug!(
            tenant_id = %tenant,
            key_id = %key,
            new_key_id = %replacement.info.id,
            actor = %self.actor,
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
                limit,
            },
            old: ended.info,
        })
    }

    /// Reads a key of a tenant and checks that it may rotate at `at`: it
    /// exists, has no successor, is not revoked and has not expired.
    async fn rotatable_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        at: OffsetDateTime,
    ) -> Result<KeyInfo> {
        let old = self.tenant_key(tenant, key).await?;

        // A successor is checked first, because a rotation with no grace
        // also revokes the old key.
        if let Some(successor) = old.replaced_by {
            return Err(Error::KeyRotated { key, successor });
        }
        if old.revoked_at.is_some() {
            return Err(Error::KeyRevoked { key });
        }
        match old.expires_at {
            Some(expired_at) if expired_at <= at => Err(Error::KeyExpired { key, expired_at }),
            _ => Ok(old),
        }
    }

    /// Verifies a presented key and returns whom it acts for.
    ///
    /// Malformed keys are rejected by parsing alone. A well-formed key is
    /// looked up by its keyed digest, in the caches first, then through the
    /// store's index, where the found digest is compared once more in
    /// constant time. A revoked, unknown or expired key is rejected, and so
    /// is a key of a suspended tenant. A warm cache hit allocates nothing.
    pub async fn verify(&self, presented: &str) -> Result<Principal> {
        let verified = match self.verify_warm(presented, &[], Metering::None, false) {
            Warm::Settled(verified) => verified,
            Warm::Cold(cold) => Box::pin(self.verify_cold(cold, &[], Metering::None, false)).await,
        };
        verified.map(|passed| passed.principal)
    }

    /// Verifies a presented key like [`Tenet::verify`] and also requires
    /// it to hold every scope in `required_scopes`, else
    /// [`Rejection::MissingScope`], and its tenant to be active, else
    /// [`Rejection::TenantSuspended`].
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
        self.verify_counted(presented, required_scopes, Metering::None)
            .await
    }

    /// Verifies a presented key like [`Tenet::verify_with`] and counts the
    /// request for usage metering: accepted when the key verifies, rejected
    /// when the key is known but revoked, expired, missing a scope or of a
    /// suspended tenant.
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
        self.verify_counted(presented, required_scopes, Metering::All)
            .await
    }

    /// Verifies a presented key like [`Tenet::verify_metered`] but counts
    /// only rejections, for a caller that applies rate limits next and then
    /// records [`Outcome::Accepted`] or [`Outcome::RateLimited`] itself
    /// with [`Tenet::record_usage`], so that each request counts once.
    pub async fn verify_metered_before_limits(
        &self,
        presented: &str,
        required_scopes: &[&str],
    ) -> Result<VerifiedKey> {
        self.verify_counted(presented, required_scopes, Metering::RejectionsOnly)
            .await
    }

    /// Runs the verification path behind `verify_with` and the metered
    /// variants, which differ only in what `metering` counts. `verify`
    /// takes the same two steps without asking for the key's scopes.
    ///
    /// [`Tenet::verify_warm`] settles a warm cache hit without an await.
    /// Every other case takes the boxed [`Tenet::verify_cold`], so that its
    /// large future (Redis and store reads) is not part of this one, which
    /// would otherwise be built and copied at its full size on every call.
    async fn verify_counted(
        &self,
        presented: &str,
        required_scopes: &[&str],
        metering: Metering,
    ) -> Result<VerifiedKey> {
        let verified = match self.verify_warm(presented, required_scopes, metering, true) {
            Warm::Settled(verified) => verified,
            Warm::Cold(cold) => {
                Box::pin(self.verify_cold(cold, required_scopes, metering, true)).await
            }
        };
        verified.map(Passed::into_verified)
    }

    /// Verifies a presented key from the in-process cache alone, when a
    /// fresh entry settles it: a rejection, or a pass with the tenant's
    /// status at hand. Otherwise it hands over what it found for
    /// [`Tenet::verify_cold`].
    ///
    /// It is a plain function rather than part of an `async fn`, so that
    /// its values live on the stack instead of in the caller's future. It
    /// is always inlined, because its result is large: returned through
    /// memory, it cost a criterion build about a third more than the
    /// builds that inlined it.
    #[inline(always)]
    fn verify_warm(
        &self,
        presented: &str,
        required_scopes: &[&str],
        metering: Metering,
        want_scopes: bool,
    ) -> Warm {
        let digest = match self.pepper.digest_presented(presented) {
            Ok(digest) => digest,
            Err(rejection) => return Warm::Settled(Err(Error::Rejected(rejection))),
        };
        let Some(cache) = &self.cache else {
            return Warm::Cold(Cold { digest, warm: None });
        };
        let now = cache.local.now();
        let Some(checked) = check_cached(cache, &digest, now, required_scopes, want_scopes) else {
            return Warm::Cold(Cold { digest, warm: None });
        };
        cache.stats.local_hits.increment();
        let verified = match checked.result {
            Err(rejection) => Err(Error::Rejected(rejection)),
            Ok(passed) => match checked.tenant_state {
                Some(state) => admit(passed, state),
                None => {
                    let warm = Checked {
                        result: Ok(passed),
                        ..checked
                    };
                    return Warm::Cold(Cold {
                        digest,
                        warm: Some(warm),
                    });
                }
            },
        };
        self.account(&digest, &checked.trace, &verified, metering);
        Warm::Settled(verified)
    }

    /// Finishes a verification that the cache could not settle: reads the
    /// key when the cache held no fresh entry for it, then the tenant's
    /// status when the key passed and its status was not at hand.
    async fn verify_cold(
        &self,
        cold: Cold,
        required_scopes: &[&str],
        metering: Metering,
        want_scopes: bool,
    ) -> Result<Passed> {
        let Cold { digest, warm } = cold;
        let checked = match warm {
            Some(checked) => checked,
            None => {
                self.check_uncached(digest, required_scopes, want_scopes)
                    .await?
            }
        };
        let verified = match checked.result {
            Ok(passed) => match checked.tenant_state {
                Some(state) => admit(passed, state),
                None => self.admit_tenant(passed, checked.trace.hit_at).await,
            },
            Err(rejection) => Err(Error::Rejected(rejection)),
        };
        self.account(&digest, &checked.trace, &verified, metering);
        verified
    }

    /// Records what a verification of `digest` did: the key's use when it
    /// passed, unless the cache lookup recorded it, and the request for
    /// usage metering when `metering` counts it.
    fn account(
        &self,
        digest: &KeyDigest,
        trace: &Trace,
        verified: &Result<Passed>,
        metering: Metering,
    ) {
        match (verified, trace.owner) {
            (Ok(passed), _) => {
                let principal = passed.principal;
                // A use recorded at the cache lookup needs no second one.
                if !trace.use_recorded {
                    self.record_key_use(principal.key_id, digest, trace.lookup_at);
                }
                if metering == Metering::All {
                    self.record_usage(principal.tenant_id, principal.key_id, Outcome::Accepted);
                }
            }
            (Err(Error::Rejected(_)), Some(owner)) if metering != Metering::None => {
                self.record_usage(owner.tenant_id, owner.key_id, Outcome::Rejected);
            }
            (Err(_), _) => {}
        }
    }

    /// Passes a verified key on only while its tenant is active, reading
    /// the tenant's state through the tenant cache when there is one.
    ///
    /// `hit_at` is the cache time of a key lookup that hit the cache, which
    /// the tenant cache reuses to save a clock read.
    async fn admit_tenant(&self, passed: Passed, hit_at: Option<Millis>) -> Result<Passed> {
        let tenant = passed.principal.tenant_id;
        let state = match &self.cache {
            Some(cache) => {
                let now = hit_at.unwrap_or_else(|| cache.local.now());
                match cache.tenant_state(tenant, now) {
                    Some(state) => state,
                    // Boxed for the same reason as a key's cache miss.
                    None => Box::pin(self.cached_tenant_state(cache, tenant, now)).await?,
                }
            }
            None => Box::pin(self.tenant_state_from_store(tenant)).await?,
        };
        admit(passed, state)
    }

    /// Counts one request of a key for usage metering, in memory until the
    /// next [`Tenet::flush_usage`]. It takes no lock across an await and
    /// cannot fail.
    ///
    /// A route that applies a rate limit after the key verified should
    /// verify with [`Tenet::verify_metered_before_limits`] and record
    /// [`Outcome::Accepted`] or [`Outcome::RateLimited`] here, because
    /// [`Tenet::verify_metered`] already counts a verified key as accepted.
    pub fn record_usage(&self, tenant: TenantId, key: KeyId, outcome: Outcome) {
        self.usage.record(tenant, key, outcome);
    }

    /// Looks up a key's digest that the in-process cache has no fresh
    /// entry for, or any digest without a cache, and checks its expiry and
    /// `required_scopes`.
    async fn check_uncached(
        &self,
        digest: KeyDigest,
        required_scopes: &[&str],
        want_scopes: bool,
    ) -> Result<Checked> {
        let Some(cache) = &self.cache else {
            // One store read brings the tenant's status along, which saves
            // a round trip to a networked store.
            let found = self.store.key_and_tenant_by_digest(&digest).await?;
            let (record, tenant) = found.map_or((None, None), |(record, tenant)| {
                (Some(record), Some(tenant_state(tenant)))
            });
            let verdict = verdict_of(record, &digest);
            let mut checked = Checked::of(&verdict, required_scopes, want_scopes, None);
            checked.tenant_state = tenant;
            return Ok(checked);
        };
        cache.stats.local_misses.increment();

        // A miss that found another fill of this key in flight reads the
        // cache again once that fill ends. When that fill failed, or lost
        // to an invalidation, it reads the store itself, without waiting
        // a second time.
        let _lead = match cache.fills.begin(digest) {
            Fill::Lead(guard) => Some(guard),
            Fill::Wait(waiting) => {
                waiting.await;
                let now = cache.local.now();
                if let Some(hit) = check_cached(cache, &digest, now, required_scopes, want_scopes) {
                    return Ok(hit);
                }
                None
            }
        };
        let now = cache.local.now();
        let verdict = self.verify_uncached(cache, digest).await?;
        Ok(Checked::of(
            &verdict,
            required_scopes,
            want_scopes,
            Some(now),
        ))
    }

    /// Records that the key `key_id` verified, after a lookup of its
    /// `digest` at cache time `lookup_at` when there is a cache.
    ///
    /// With a cache, the use goes to the key's cache entry, which takes one
    /// atomic operation. Without one, or when the entry has left the cache
    /// meanwhile, it goes to the recorder's map instead.
    fn record_key_use(&self, key_id: KeyId, digest: &KeyDigest, lookup_at: Option<Millis>) {
        if let (Some(cache), Some(now)) = (&self.cache, lookup_at)
            && cache.local.record_use(digest, now)
        {
            return;
        }
        self.key_uses.record(key_id);
    }

    /// Writes the `last_used_at` of every key that verified since the last
    /// call, in one store call, and returns how many keys it wrote.
    ///
    /// Called once per interval, this writes each key at most once per
    /// interval. When the write fails, the uses are kept for the next call.
    ///
    /// With a cache, this reads every cache entry, so its time grows with
    /// the cache's size (a few milliseconds per 100,000 entries, by
    /// estimate).
    ///
    /// NOTE: nothing calls this on its own; `tenet-server` calls it on a
    /// timer. An embedder that never calls it keeps growing memory: one
    /// map entry per used key that left the cache, or per used key without
    /// a cache.
    pub async fn flush_key_uses(&self) -> Result<usize> {
        if let Some(cache) = &self.cache {
            for (key_id, at) in cache.local.take_uses() {
                self.key_uses.record_at(key_id, cache.wall_millis(at));
            }
        }
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
        let _flushing = self.usage.flush_gate.write().await;
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
    /// A deleted tenant's usage stays readable, so that its last period can
    /// still be billed. Counts still in memory, here or on other replicas,
    /// are not included until their next flush.
    pub async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
        if self.store.tenant(tenant).await?.is_none() {
            return Err(Error::not_found("tenant", tenant));
        }
        self.store.usage(tenant, range).await
    }

    /// Returns the number of a tenant's requests accepted in `month`: those
    /// in the store and those this process counted and has not flushed
    /// yet. A monthly quota's count starts from it, also after a restart.
    ///
    /// Requests still in memory on other replicas are not included. After
    /// a graceful shutdown nothing is missing; after a crash, at most the
    /// requests of the last usage flush interval are. A flush in progress
    /// waits for the sum, or the sum for the flush, so that no count is
    /// missed or added twice.
    pub async fn accepted_in_month(&self, tenant: TenantId, month: QuotaMonth) -> Result<u64> {
        let range = UsageRange::new(month.starts_at(), month.resets_at())?;
        let _no_flush = self.usage.flush_gate.read().await;
        let stored = self.store.accepted_usage(tenant, range).await?;
        Ok(stored.saturating_add(self.usage.accepted_pending(tenant, range)))
    }

    /// Returns a tenant's state from the tenant cache, filling it from the
    /// store on a miss. The fill takes the generation before it reads, so a
    /// change committed meanwhile makes the fill lose.
    ///
    /// Tenant status has no copy in Redis. While the event feed is stale,
    /// a status read before the staleness bound is read again. When the
    /// store is down too, the cached status is used until its TTL ends,
    /// and a tenant without one gets [`Error::Unavailable`].
    async fn cached_tenant_state(
        &self,
        cache: &CacheLayer,
        tenant: TenantId,
        now: Millis,
    ) -> Result<TenantState> {
        if let Some(state) = cache.tenants.get(tenant, now, cache.trust_cutoff(now)) {
            return Ok(state);
        }
        let generation = cache.tenants.generation(tenant);
        let read_at = cache.local.now();
        let state = match self.tenant_state_from_store(tenant).await {
            Ok(state) => state,
            Err(err @ Error::Unavailable(_)) => {
                // NOTE: while the store cannot be reached, a status read
                // before the staleness bound is used until its TTL ends,
                // unless an event (from the feed or Redis) invalidated it.
                // A change that this replica missed meanwhile, for example
                // during a partition from Postgres alone, applies here only
                // when the entry expires.
                return match cache.tenants.get(tenant, now, 0) {
                    Some(state) => {
                        tracing::debug!(
                            tenant_id = %tenant,
                            error = %err,
                            "using the last known tenant status while the store is unavailable"
                        );
                        Ok(state)
                    }
                    None => Err(err),
                };
            }
            Err(err) => return Err(err),
        };
        cache.tenants.insert(tenant, state, read_at, generation);
        Ok(state)
    }

    async fn tenant_state_from_store(&self, tenant: TenantId) -> Result<TenantState> {
        Ok(tenant_state(self.store.tenant(tenant).await?))
    }

    async fn verify_uncached(&self, cache: &Arc<CacheLayer>, digest: KeyDigest) -> Result<Verdict> {
        // Both are taken before any read, see `LocalCache::insert`.
        let generation = cache.local.generation(&digest);
        let read_at = cache.local.now();

        if let Some(redis) = &cache.redis {
            if let Some(verdict) = redis.get(&digest).await {
                cache.stats.redis_hits.increment();
                cache.fill_local(digest, verdict.clone(), read_at, generation);
                return Ok(verdict);
            }
            cache.stats.redis_misses.increment();
        }

        let verdict = self.verdict_from_store(&digest).await?;
        cache.fill_local(digest, verdict.clone(), read_at, generation);
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
        Ok(verdict_of(self.store.key_by_digest(digest).await?, digest))
    }

    /// Tells the tenant caches, here and on other replicas, that the status
    /// of `tenant` changed. The store is written already, so a fill that
    /// starts after the local invalidation reads the new status.
    async fn announce_tenant(&self, tenant: TenantId) {
        let Some(cache) = &self.cache else {
            return;
        };
        cache.tenants.invalidate(tenant);
        if let Some(redis) = &cache.redis {
            if redis.publish_tenant(tenant).await {
                cache.stats.invalidations_published.increment();
            }
        }
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
        match verdict {
            Verdict::Revoked(owner) => cache.local.revoke(digest, *owner, cache.local.now()),
            Verdict::Valid(_) | Verdict::Unknown => cache.local.invalidate(digest),
        }
        if let Some(redis) = &cache.redis {
            if redis.publish(digest).await {
                cache.stats.invalidations_published.increment();
            }
        }
    }
}

/// A presented key, looked up and checked against the required scopes,
/// before its tenant's status is checked.
#[derive(Debug)]
struct Checked {
    result: Result<Passed, Rejection>,
    /// The tenant's state when the key's lookup brought it along.
    tenant_state: Option<TenantState>,
    trace: Trace,
}

/// The facts of a key's lookup besides its result, for the accounting
/// after the verification.
#[derive(Debug, Clone, Copy)]
struct Trace {
    /// Whom the key acts or acted for, when known.
    owner: Option<Principal>,
    /// The cache time of the lookup, with a cache.
    lookup_at: Option<Millis>,
    /// The cache time of the lookup when it hit the cache.
    hit_at: Option<Millis>,
    /// Whether the lookup already recorded the key's use.
    use_recorded: bool,
}

/// The outcome of [`Tenet::verify_warm`].
#[derive(Debug)]
enum Warm {
    /// The cache settled the verification, whose use and metering are
    /// recorded.
    Settled(Result<Passed>),
    /// Redis, the store or the tenant's status must be read.
    Cold(Cold),
}

/// A verification that the in-process cache could not settle.
#[derive(Debug)]
struct Cold {
    digest: KeyDigest,
    /// The cache hit, when there was one, whose tenant status was not at
    /// hand.
    warm: Option<Checked>,
}

impl Checked {
    /// Checks a verdict read from Redis or the store, at cache time
    /// `lookup_at` with a cache.
    fn of(
        verdict: &Verdict,
        required_scopes: &[&str],
        want_scopes: bool,
        lookup_at: Option<Millis>,
    ) -> Self {
        Self {
            result: verdict.check(required_scopes, want_scopes),
            tenant_state: None,
            trace: Trace {
                owner: verdict.principal(),
                lookup_at,
                hit_at: None,
                use_recorded: false,
            },
        }
    }
}

/// Checks a presented key against the in-process cache, when its entry is
/// fresh and trusted at cache time `now`.
#[inline(always)]
fn check_cached(
    cache: &CacheLayer,
    digest: &KeyDigest,
    now: Millis,
    required_scopes: &[&str],
    want_scopes: bool,
) -> Option<Checked> {
    let cutoff = cache.trust_cutoff(now);
    let checked = cache.local.check(
        digest,
        now,
        cutoff,
        required_scopes,
        want_scopes,
        &cache.tenants,
    )?;
    Some(Checked {
        result: checked.result,
        tenant_state: checked.tenant,
        trace: Trace {
            owner: checked.owner,
            lookup_at: Some(now),
            hit_at: Some(now),
            use_recorded: checked.use_recorded,
        },
    })
}

/// Turns the stored key found by `digest`'s index into a verdict, comparing
/// the stored digest once more in constant time.
fn verdict_of(record: Option<KeyRecord>, digest: &KeyDigest) -> Verdict {
    match record {
        Some(record) if record.digest.ct_eq(digest) => {
            if record.info.revoked_at.is_some() {
                Verdict::Revoked(Some(principal_of(&record.info)))
            } else {
                valid_verdict(&record.info)
            }
        }
        _ => Verdict::Unknown,
    }
}

/// Returns the state of a tenant as read from the store.
fn tenant_state(tenant: Option<Tenant>) -> TenantState {
    match tenant {
        Some(tenant) if tenant.deleted_at.is_some() => TenantState::Gone,
        Some(tenant) => match tenant.status {
            TenantStatus::Active => TenantState::Active,
            TenantStatus::Suspended => TenantState::Suspended,
        },
        None => TenantState::Gone,
    }
}

/// What a verification counts for usage metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metering {
    None,
    /// Rejections of known keys; the caller records the rest.
    RejectionsOnly,
    /// Rejections of known keys and accepted requests.
    All,
}

/// Accepts a verified key only while its tenant is active. A deleted
/// tenant's keys are revoked with it, so a key whose tenant is gone reads as
/// revoked.
fn admit(passed: Passed, state: TenantState) -> Result<Passed> {
    match state {
        TenantState::Active => Ok(passed),
        TenantState::Suspended => Err(Error::Rejected(Rejection::TenantSuspended {
            tenant: passed.principal.tenant_id,
        })),
        TenantState::Gone => Err(Error::Rejected(Rejection::Revoked)),
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
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::clock::ManualClock;
    use crate::error::Rejection;
    use crate::key_use::KeyUse;
    use crate::store::{KeyEvents, MemoryStore};

    /// A store that counts lookups by digest and tenant reads, and can
    /// pause the first lookup, or every tenant read, until released,
    /// returning the data as it was when the read began.
    #[derive(Debug, Default)]
    struct ProbeStore {
        inner: MemoryStore,
        lookups: AtomicUsize,
        tenant_reads: AtomicUsize,
        gate: Option<(Notify, Notify)>,
        tenant_gate: Option<(Notify, Notify)>,
        /// Claims to be shared, so that the cache polls its events.
        shared: bool,
        /// Makes every event read fail, as when the store is down.
        events_fail: AtomicBool,
    }

    #[async_trait]
    impl Store for ProbeStore {
        async fn insert_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> Result<()> {
            self.inner.insert_tenant(tenant, audit).await
        }
        async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
            self.tenant_reads.fetch_add(1, Ordering::SeqCst);
            let snapshot = self.inner.tenant(id).await;
            if let Some((reached, release)) = &self.tenant_gate {
                reached.notify_one();
                release.notified().await;
            }
            snapshot
        }
        async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>> {
            self.inner.list_tenants(page).await
        }
        async fn insert_key(
            &self,
            key: &KeyRecord,
            limit: Option<&Limit>,
            audit: &AuditEntry,
        ) -> Result<()> {
            self.inner.insert_key(key, limit, audit).await
        }
        async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>> {
            self.inner.list_keys(tenant, page).await
        }
        async fn revoke_key(
            &self,
            tenant: TenantId,
            key: KeyId,
            at: OffsetDateTime,
            audit: &AuditEntry,
        ) -> Result<Option<KeyRecord>> {
            self.inner.revoke_key(tenant, key, at, audit).await
        }
        async fn rotate_key(
            &self,
            tenant: TenantId,
            key: KeyId,
            replacement: &KeyRecord,
            replacement_limit: Option<&Limit>,
            rotation: Rotation,
            audit: &AuditEntry,
        ) -> Result<Option<KeyRecord>> {
            self.inner
                .rotate_key(tenant, key, replacement, replacement_limit, rotation, audit)
                .await
        }
        async fn set_tenant_status(
            &self,
            tenant: TenantId,
            status: TenantStatus,
            audit: &AuditEntry,
        ) -> Result<Option<Tenant>> {
            self.inner.set_tenant_status(tenant, status, audit).await
        }
        async fn rename_tenant(
            &self,
            tenant: TenantId,
            name: &TenantName,
            audit: &AuditEntry,
        ) -> Result<Option<Tenant>> {
            self.inner.rename_tenant(tenant, name, audit).await
        }
        async fn delete_tenant(
            &self,
            tenant: TenantId,
            at: OffsetDateTime,
            audit: &AuditEntry,
        ) -> Result<Option<Vec<KeyRecord>>> {
            self.inner.delete_tenant(tenant, at, audit).await
        }
        async fn list_audit(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<AuditEntry>> {
            self.inner.list_audit(tenant, page).await
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
        async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
            self.inner.tenant_limits(tenant).await
        }
        async fn set_tenant_limits(
            &self,
            tenant: TenantId,
            limits: &TenantLimits,
            audit: &AuditEntry,
        ) -> Result<()> {
            self.inner.set_tenant_limits(tenant, limits, audit).await
        }
        async fn key_limit(&self, key: KeyId) -> Result<Option<Limit>> {
            self.inner.key_limit(key).await
        }
        async fn set_key_limit(
            &self,
            tenant: TenantId,
            key: KeyId,
            limit: Option<&Limit>,
            audit: &AuditEntry,
        ) -> Result<KeyLimitWrite> {
            self.inner.set_key_limit(tenant, key, limit, audit).await
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
        fn is_shared(&self) -> bool {
            self.shared
        }
        async fn key_events(&self, since: Option<OffsetDateTime>) -> Result<KeyEvents> {
            if self.events_fail.load(Ordering::SeqCst) {
                return Err(Error::unavailable("the test store is down"));
            }
            self.inner.key_events(since).await
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
    async fn warm_tenant_status_skips_the_store() {
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

        assert_eq!(store.tenant_reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn suspend_and_resume_reach_warm_cache() {
        let tenet = cached(Arc::new(ProbeStore::default())).await;
        let tenant = tenant(&tenet).await;
        let issued = tenet.issue_key(tenant, None).await.expect("issued");
        let presented = issued.api_key.expose_secret();
        tenet.verify(presented).await.expect("valid key");

        tenet.suspend_tenant(tenant).await.expect("suspended");
        let suspended = tenet.verify(presented).await;
        tenet.resume_tenant(tenant).await.expect("resumed");
        let resumed = tenet.verify(presented).await;

        assert!(matches!(
            suspended,
            Err(Error::Rejected(Rejection::TenantSuspended { tenant: rejected }))
                if rejected == tenant
        ));
        assert!(resumed.is_ok(), "{resumed:?}");
    }

    #[tokio::test]
    async fn fill_racing_a_suspend_loses() {
        let store = Arc::new(ProbeStore {
            tenant_gate: Some((Notify::new(), Notify::new())),
            ..ProbeStore::default()
        });
        let tenet = cached(Arc::clone(&store)).await;
        let tenant = tenant(&tenet).await;
        let issued = tenet.issue_key(tenant, None).await.expect("issued");
        let presented = issued.api_key.expose_secret().to_owned();
        let (reached, release) = store.tenant_gate.as_ref().expect("gated store");

        // The fill reads the tenant while it is still active, then waits.
        let racing = tokio::spawn({
            let tenet = tenet.clone();
            let presented = presented.clone();
            async move { tenet.verify(&presented).await }
        });
        reached.notified().await;
        tenet.suspend_tenant(tenant).await.expect("suspended");
        release.notify_one();
        let raced = racing.await.expect("task finished");
        assert!(raced.is_ok(), "the fill began before the suspension");

        let after = tokio::spawn({
            let tenet = tenet.clone();
            async move { tenet.verify(&presented).await }
        });
        reached.notified().await;
        release.notify_one();
        let after = after.await.expect("task finished");
        assert!(matches!(
            after,
            Err(Error::Rejected(Rejection::TenantSuspended { tenant: rejected }))
                if rejected == tenant
        ));
    }

    #[tokio::test]
    async fn stale_feed_distrusts_tenant_status() {
        let store = Arc::new(ProbeStore {
            shared: true,
            ..ProbeStore::default()
        });
        let tenet = cached(Arc::clone(&store)).await;
        let issued = tenet
            .issue_key(tenant(&tenet).await, None)
            .await
            .expect("issued");
        let presented = issued.api_key.expose_secret();
        tenet.verify(presented).await.expect("valid key");
        let filled = store.tenant_reads.load(Ordering::SeqCst);

        // Past the staleness bound without a successful poll, the cached
        // status may miss a suspension, so it is read again.
        store.events_fail.store(true, Ordering::SeqCst);
        let bound = CacheOptions::default().max_staleness;
        tokio::time::sleep(bound + std::time::Duration::from_millis(300)).await;
        tenet.verify(presented).await.expect("valid key");

        assert_eq!(filled, 1);
        assert_eq!(store.tenant_reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stale_feed_distrusts_one_tick_early() {
        let store = Arc::new(ProbeStore {
            shared: true,
            events_fail: AtomicBool::new(true),
            ..ProbeStore::default()
        });
        let manual = ManualClock::new(4);
        let tenet = Tenet::builder(Arc::clone(&store) as Arc<dyn Store>, pepper())
            .cache(CacheOptions::default())
            .clock(CacheClock::manual(manual.clone()))
            .build()
            .await
            .expect("service opens");
        let issued = tenet
            .issue_key(tenant(&tenet).await, None)
            .await
            .expect("issued");
        let presented = issued.api_key.expose_secret();
        let reads = || {
            (
                store.lookups.load(Ordering::SeqCst),
                store.tenant_reads.load(Ordering::SeqCst),
            )
        };

        // No poll succeeds, so an entry is trusted for the staleness bound
        // (1,000 ms) less one tick (4 ms) of the cache clock after its read.
        manual.set(1_000);
        tenet.verify(presented).await.expect("valid key");
        let filled = reads();
        manual.set(1_996);
        tenet.verify(presented).await.expect("valid key");
        let trusted = reads();
        manual.set(1_997);
        tenet.verify(presented).await.expect("valid key");

        assert_eq!(filled, (1, 1));
        assert_eq!(trusted, (1, 1), "served from the caches");
        assert_eq!(reads(), (2, 2), "key and tenant read again");
    }

    #[tokio::test]
    async fn cached_entry_refills_at_ttl() {
        let store = Arc::new(ProbeStore::default());
        let manual = ManualClock::new(4);
        let tenet = Tenet::builder(Arc::clone(&store) as Arc<dyn Store>, pepper())
            .cache(CacheOptions::default())
            .clock(CacheClock::manual(manual.clone()))
            .build()
            .await
            .expect("service opens");
        let issued = tenet
            .issue_key(tenant(&tenet).await, None)
            .await
            .expect("issued");
        let presented = issued.api_key.expose_secret();
        let ttl = crate::cache::millis(CacheOptions::default().ttl);

        tenet.verify(presented).await.expect("valid key");
        manual.set(ttl - 1);
        tenet.verify(presented).await.expect("valid key");
        let before_ttl = store.lookups.load(Ordering::SeqCst);
        manual.set(ttl);
        tenet.verify(presented).await.expect("valid key");

        assert_eq!(before_ttl, 1);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn audit_records_the_actor() {
        let tenet = cached(Arc::new(ProbeStore::default())).await;
        let tenant = tenant(&tenet).await;
        let key = KeyId::generate();

        let issued = tenet
            .acting_as(Actor::Key(key))
            .issue_key(tenant, None)
            .await
            .expect("issued");
        let page = tenet.audit_page(tenant, None, 10).await.expect("audit");

        let actions: Vec<_> = page.items.iter().map(|entry| entry.action).collect();
        assert_eq!(actions, [AuditAction::CreateTenant, AuditAction::IssueKey]);
        assert_eq!(page.items[0].actor, Actor::Admin);
        assert_eq!(page.items[1].actor, Actor::Key(key));
        assert_eq!(page.items[1].target, AuditTarget::Key(issued.info.id));
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
