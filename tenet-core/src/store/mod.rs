//! Storage behind one trait, with a module per backend.
//!
//! A store keeps tenants, key records (metadata and keyed digest, never the
//! key), hourly usage counts and a few named settings such as the pepper
//! fingerprint. Every write
//! is durable when its future resolves. Stores do no validation of their
//! own: [`crate::Tenet`] hands them checked values only.
//!
//! Every write method takes the [`AuditEntry`] that records the change and
//! stores it in the same transaction as the change. It stores the entry
//! whenever the call finds its target, also for a repeated revoke or
//! suspension, and a call that returns `None` writes neither.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::AuditEntry;
use crate::error::Result;
use crate::id::{KeyId, TenantId};
use crate::key::{KeyInfo, KeyRecord};
use crate::key_use::KeyUse;
use crate::name::TenantName;
use crate::ratelimit::{Limit, TenantLimits};
use crate::secret::KeyDigest;
use crate::stats::PoolStatus;
use crate::tenant::{Tenant, TenantStatus};
use crate::usage::{UsageCount, UsageRange};

mod memory;
mod postgres;
mod sqlite;
mod stored_limit;

pub use memory::MemoryStore;
pub use postgres::{KeyLookupStats, PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// A backend for tenants, keys, the audit trail and settings.
///
/// Implementations map "backend not reachable in time" to
/// [`crate::Error::Unavailable`] and every other driver failure to
/// [`crate::Error::Store`].
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Inserts a new tenant.
    async fn insert_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> Result<()>;

    /// Returns the tenant with this id, if any, deleted ones included.
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>>;

    /// Lists at most `page.limit` tenants that are not deleted with ids
    /// after `page.after`, ordered by id, which for UUIDv7 ids is oldest
    /// first.
    async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>>;

    /// Inserts a new key record, with `limit` as its own limit when given,
    /// in one transaction, so that the key never exists without its limit.
    ///
    /// Returns [`crate::Error::NotFound`] when the key's tenant does not
    /// exist or is deleted, checked in the same transaction as the insert
    /// so that a concurrent [`Store::delete_tenant`] cannot miss the key.
    async fn insert_key(
        &self,
        key: &KeyRecord,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<()>;

    /// Lists at most `page.limit` keys of a tenant with ids after
    /// `page.after`, ordered by id (oldest first), revoked ones included.
    async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>>;

    /// Marks a key of this tenant revoked at `at`, unless it already is.
    ///
    /// Returns the key as stored afterwards (a second revoke keeps the first
    /// time), or `None` when this tenant has no key with this id. A shared
    /// store records a [`KeyEvent`] in the same transaction.
    async fn revoke_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>>;

    /// Rotates a key of this tenant in one transaction: inserts
    /// `replacement` with `replacement_limit` as its own limit when given,
    /// sets the old key's `replaced_by` to the replacement's id, and ends
    /// the old key as `rotation` specifies. An expiry moves only earlier.
    ///
    /// Returns the old key as stored afterwards, or `None`, with nothing
    /// written, unless this tenant has a key with this id that is not
    /// revoked, has no `replaced_by` and has no expiry at or before the
    /// replacement's `created_at`. The check and the update are one atomic
    /// step, so of concurrent rotations of one key exactly one returns the
    /// key. A shared store records a [`KeyEvent`] for each key in the same
    /// transaction. A deleted tenant's keys are all revoked, so they never
    /// rotate.
    async fn rotate_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        replacement: &KeyRecord,
        replacement_limit: Option<&Limit>,
        rotation: Rotation,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>>;

    /// Sets a tenant's status; setting the status it already has changes
    /// nothing but still records `audit`.
    ///
    /// Returns the tenant as stored afterwards, or `None`, with nothing
    /// written, when no tenant with this id exists or it is deleted. A
    /// shared store records a [`TenantEvent`] in the same transaction.
    async fn set_tenant_status(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>>;

    /// Renames a tenant; returns the tenant as stored afterwards, or `None`,
    /// with nothing written, when it does not exist or is deleted.
    async fn rename_tenant(
        &self,
        tenant: TenantId,
        name: &TenantName,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>>;

    /// Marks a tenant deleted at `at` and revokes each of its unrevoked
    /// keys at `at`, in one transaction.
    ///
    /// Returns the keys that this call revoked, or `None`, with nothing
    /// written, when no tenant with this id exists or it is deleted
    /// already. A shared store records a [`KeyEvent`] for each revoked key
    /// and a [`TenantEvent`] in the same transaction.
    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyRecord>>>;

    /// Lists at most `page.limit` audit entries of a tenant with ids after
    /// `page.after`, ordered by id (oldest first).
    async fn list_audit(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<AuditEntry>>;

    /// Finds a key by the digest of its secret through an index.
    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>>;

    /// Finds a key by the digest of its secret, like
    /// [`Store::key_by_digest`], with its tenant as [`Store::tenant`]
    /// returns it (`None` for a tenant that is gone from the store).
    ///
    /// A verification without a cache needs both. The default reads them
    /// one after the other. A store with a network round trip per query
    /// should read them in one.
    async fn key_and_tenant_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Result<Option<(KeyRecord, Option<Tenant>)>> {
        let Some(record) = self.key_by_digest(digest).await? else {
            return Ok(None);
        };
        let tenant = self.tenant(record.info.tenant_id).await?;
        Ok(Some((record, tenant)))
    }

    /// Returns a tenant's limits, with both unset when none were stored or
    /// the tenant does not exist.
    async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits>;

    /// Replaces a tenant's limits.
    ///
    /// Returns [`crate::Error::NotFound`], with nothing written, when the
    /// tenant does not exist or is deleted.
    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: &TenantLimits,
        audit: &AuditEntry,
    ) -> Result<()>;

    /// Returns the limit of a key of its own, if it has one.
    async fn key_limit(&self, key: KeyId) -> Result<Option<Limit>>;

    /// Sets the limit of a key of this tenant, or removes it for `None`,
    /// and records `audit`, unless the key is revoked.
    ///
    /// Writes nothing and returns [`KeyLimitWrite::NotFound`] when this
    /// tenant has no key with this id or is deleted, and
    /// [`KeyLimitWrite::Revoked`] when the key is revoked.
    async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<KeyLimitWrite>;

    /// Reads a named setting.
    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Stores a setting unless it already has a value, and returns the value
    /// stored afterwards, so that replicas starting together agree on the
    /// first writer's value.
    async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;

    /// Moves each key's `last_used_at` to its use's time unless it is
    /// already later, so that an older time never overwrites a newer one.
    /// Ids of keys that do not exist are skipped.
    async fn record_key_uses(&self, uses: &[KeyUse]) -> Result<()>;

    /// Adds each count to the stored row of its tenant, key and hour,
    /// creating missing rows, all in one transaction. Adding rather than
    /// overwriting lets replicas that count the same hour sum up. `counts`
    /// contains each tenant, key and hour at most once.
    async fn add_usage(&self, counts: &[UsageCount]) -> Result<()>;

    /// Lists a tenant's hourly counts with hours in `range`, ordered by
    /// hour, then key id.
    async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>>;

    /// Returns the sum of a tenant's accepted requests over its keys and
    /// the hours in `range`, the count that a monthly quota starts from.
    ///
    /// The default implementation sums [`Store::usage`], and the database
    /// stores sum in their query instead.
    async fn accepted_usage(&self, tenant: TenantId, range: UsageRange) -> Result<u64> {
        let counts = self.usage(tenant, range).await?;
        Ok(counts
            .iter()
            .fold(0u64, |sum, count| sum.saturating_add(count.accepted)))
    }

    /// Checks that the backend responds.
    async fn ping(&self) -> Result<()>;

    /// Whether other processes write to this store too, so that caches must
    /// learn about their changes through [`Store::key_events`].
    fn is_shared(&self) -> bool {
        false
    }

    /// Returns the state of the store's connection pool, for metrics;
    /// `None` for a store without one.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }

    /// Returns the store's clock and the key and tenant events recorded at
    /// or after `since` (all of them are returned again on the next call
    /// with the same `since`: callers must treat events as idempotent).
    ///
    /// With `since` of `None`, returns the clock and no events. Stores that
    /// only this process writes record no events.
    async fn key_events(&self, since: Option<OffsetDateTime>) -> Result<KeyEvents> {
        let _ = since;
        Ok(KeyEvents {
            now: OffsetDateTime::now_utc(),
            events: Vec::new(),
            tenant_events: Vec::new(),
        })
    }
}

/// Outcome of [`Store::set_key_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLimitWrite {
    /// The limit and its audit entry were written.
    Written,
    /// This tenant has no key with this id, or the tenant is deleted.
    NotFound,
    /// The key is revoked, and a revoked key keeps the limit it had.
    Revoked,
}

/// One page of a keyset-paginated listing: the rows whose id is greater
/// than `after`, in id order, at most `limit` of them.
///
/// Keyset pagination keeps pages stable while rows are added, because a
/// new UUIDv7 id sorts after every id already listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// The last id of the previous page, or `None` for the first page.
    pub after: Option<Uuid>,
    /// The maximum number of rows to return.
    pub limit: usize,
}

impl PageRequest {
    /// Requests the first `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }
}

/// Rows of one page and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as [`PageRequest::after`] for the next page, or
    /// `None` when this page is the last.
    pub next_after: Option<Uuid>,
}

/// A change to a key that other processes' caches must not miss: the key
/// was issued or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEvent {
    /// Unique per event; increases with insertion order but may commit out
    /// of order.
    pub seq: i64,
    pub digest: KeyDigest,
    pub kind: KeyEventKind,
}

/// The kind of change to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyEventKind {
    Issued,
    Revoked,
    /// A rotation moved the key's expiry earlier.
    ExpiryShortened,
}

/// The way [`Store::rotate_key`] ends the old key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Revoke the old key at this time.
    RevokeAt(OffsetDateTime),
    /// Let the old key expire at this time at the latest.
    ExpireBy(OffsetDateTime),
}

/// A change to a tenant that other processes' caches must not miss: it
/// was suspended, resumed or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantEvent {
    /// Unique per event, in a sequence of its own, apart from
    /// [`KeyEvent::seq`].
    pub seq: i64,
    pub tenant_id: TenantId,
}

/// Key and tenant events read from a store, with the store's clock at the
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvents {
    pub now: OffsetDateTime,
    pub events: Vec<KeyEvent>,
    pub tenant_events: Vec<TenantEvent>,
}
