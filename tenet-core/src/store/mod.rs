//! Storage behind one trait, with a module per backend.
//!
//! A store keeps tenants, key records (metadata and keyed digest, never the
//! key), hourly usage counts and a few named settings such as the pepper
//! fingerprint. Every write
//! is durable when its future resolves. Stores do no validation of their
//! own: [`crate::Tenet`] hands them checked values only.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;
use crate::id::{KeyId, TenantId};
use crate::key::{KeyInfo, KeyRecord};
use crate::key_use::KeyUse;
use crate::secret::KeyDigest;
use crate::stats::PoolStatus;
use crate::tenant::Tenant;
use crate::usage::{UsageCount, UsageRange};

mod memory;
mod postgres;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// A backend for tenants, keys and settings.
///
/// Implementations map "backend not reachable in time" to
/// [`crate::Error::Unavailable`] and every other driver failure to
/// [`crate::Error::Store`].
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Inserts a new tenant.
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<()>;

    /// Returns the tenant with this id, if any.
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>>;

    /// Lists at most `page.limit` tenants with ids after `page.after`,
    /// ordered by id, which for UUIDv7 ids is oldest first.
    async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>>;

    /// Inserts a new key record.
    ///
    /// Returns [`crate::Error::NotFound`] when the key's tenant does not
    /// exist, checked in the same transaction as the insert.
    async fn insert_key(&self, key: &KeyRecord) -> Result<()>;

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
    ) -> Result<Option<KeyRecord>>;

    /// Rotates a key of this tenant in one transaction: inserts
    /// `replacement`, then revokes the old key at `at` when `revoke` is set,
    /// else moves its expiry to `expires_by` unless it already expires
    /// sooner.
    ///
    /// Returns the old key as stored afterwards, or `None`, with nothing
    /// written, when this tenant has no unrevoked key with this id. A shared
    /// store records a [`KeyEvent`] for each key in the same transaction.
    async fn rotate_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        replacement: &KeyRecord,
        rotation: Rotation,
    ) -> Result<Option<KeyRecord>>;

    /// Finds a key by the digest of its secret through an index.
    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>>;

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

    /// Returns the store's clock and the key events recorded at or after
    /// `since` (all of them are returned again on the next call with the
    /// same `since`: callers must treat events as idempotent).
    ///
    /// With `since` of `None`, returns the clock and no events. Stores that
    /// only this process writes record no events.
    async fn key_events(&self, since: Option<OffsetDateTime>) -> Result<KeyEvents> {
        let _ = since;
        Ok(KeyEvents {
            now: OffsetDateTime::now_utc(),
            events: Vec::new(),
        })
    }
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

/// Key events read from a store, with the store's clock at the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvents {
    pub now: OffsetDateTime,
    pub events: Vec<KeyEvent>,
}
