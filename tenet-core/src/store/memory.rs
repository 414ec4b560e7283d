//! An in-process store for embedding and tests. Nothing survives the
//! process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{KeyLimitWrite, PageRequest, Rotation, Store};
use crate::audit::AuditEntry;
use crate::error::{Error, Result};
use crate::id::{AuditId, KeyId, TenantId};
use crate::key::{KeyInfo, KeyRecord};
use crate::key_use::KeyUse;
use crate::name::TenantName;
use crate::ratelimit::{Limit, TenantLimits};
use crate::secret::KeyDigest;
use crate::tenant::{Tenant, TenantStatus};
use crate::usage::{UsageCount, UsageRange};

/// A store that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    // UUIDv7 ids sort by creation time, so ordered maps list oldest first.
    tenants: BTreeMap<TenantId, Tenant>,
    keys: BTreeMap<KeyId, KeyRecord>,
    keys_by_digest: HashMap<KeyDigest, KeyId>,
    settings: HashMap<String, Vec<u8>>,
    tenant_limits: HashMap<TenantId, TenantLimits>,
    key_limits: HashMap<KeyId, Limit>,
    audit: BTreeMap<AuditId, AuditEntry>,
    /// Accepted and rejected counts per tenant, hour and key, in the
    /// order that [`Store::usage`] lists them.
    usage: BTreeMap<(TenantId, OffsetDateTime, KeyId), (u64, u64)>,
}

impl State {
    /// Returns a tenant that exists and is not deleted.
    fn live_tenant(&mut self, id: TenantId) -> Option<&mut Tenant> {
        self.tenants
            .get_mut(&id)
            .filter(|tenant| tenant.deleted_at.is_none())
    }

    fn record(&mut self, audit: &AuditEntry) {
        self.audit.insert(audit.id, audit.clone());
    }
}

impl MemoryStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // Every update below either completes or changes nothing before it can
    // panic, so the state behind a poisoned lock is still consistent.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> Result<()> {
        let mut state = self.write();
        state.tenants.insert(tenant.id, tenant.clone());
        state.record(audit);
        Ok(())
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        Ok(self.read().tenants.get(&id).cloned())
    }

    async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>> {
        let state = self.read();
        let tenants = state
            .tenants
            .values()
            .filter(|tenant| tenant.deleted_at.is_none())
            .filter(|tenant| page.after.is_none_or(|after| tenant.id.as_uuid() > after))
            .take(page.limit)
            .cloned()
            .collect();
        Ok(tenants)
    }

    async fn insert_key(
        &self,
        key: &KeyRecord,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut state = self.write();
        if state.live_tenant(key.info.tenant_id).is_none() {
            return Err(Error::not_found("tenant", key.info.tenant_id));
        }
        // Mirrors the UNIQUE digest column of the SQL stores.
        if state.keys_by_digest.contains_key(&key.digest) {
            return Err(Error::store(format!(
                "cannot insert key {}: another key has the same digest",
                key.info.id
            )));
        }
        state.keys_by_digest.insert(key.digest, key.info.id);
        state.keys.insert(key.info.id, key.clone());
        if let Some(limit) = limit {
            state.key_limits.insert(key.info.id, limit.clone());
        }
        state.record(audit);
        Ok(())
    }

    async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>> {
        let state = self.read();
        let keys = state
            .keys
            .values()
            .filter(|key| key.info.tenant_id == tenant)
            .filter(|key| page.after.is_none_or(|after| key.info.id.as_uuid() > after))
            .take(page.limit)
            .map(|key| key.info.clone())
            .collect();
        Ok(keys)
    }

    async fn revoke_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let mut state = self.write();
        let Some(record) = state.keys.get_mut(&key) else {
            return Ok(None);
        };
        if record.info.tenant_id != tenant {
            return Ok(None);
        }
        record.info.revoked_at.get_or_insert(at);
        let revoked = record.clone();
        state.record(audit);
        Ok(Some(revoked))
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
        let mut state = self.write();
        let at = replacement.info.created_at;
        let rotatable = state.keys.get(&key).is_some_and(|old| {
            old.info.tenant_id == tenant
                && old.info.revoked_at.is_none()
                && old.info.replaced_by.is_none()
                && old.info.expires_at.is_none_or(|expiry| expiry > at)
        });
        if !rotatable {
            return Ok(None);
        }
        if state.keys_by_digest.contains_key(&replacement.digest) {
            return Err(Error::store(format!(
                "cannot insert key {}: another key has the same digest",
                replacement.info.id
            )));
        }

        state
            .keys_by_digest
            .insert(replacement.digest, replacement.info.id);
        state.keys.insert(replacement.info.id, replacement.clone());
        if let Some(limit) = replacement_limit {
            state.key_limits.insert(replacement.info.id, limit.clone());
        }
        let Some(old) = state.keys.get_mut(&key) else {
            return Ok(None);
        };
        old.info.replaced_by = Some(replacement.info.id);
        match rotation {
            Rotation::RevokeAt(at) => old.info.revoked_at = Some(at),
            Rotation::ExpireBy(at) => {
                old.info.expires_at =
                    Some(old.info.expires_at.map_or(at, |current| current.min(at)));
            }
        }
        let old = old.clone();
        state.record(audit);
        Ok(Some(old))
    }

    async fn set_tenant_status(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        let mut state = self.write();
        let Some(stored) = state.live_tenant(tenant) else {
            return Ok(None);
        };
        stored.status = status;
        let updated = stored.clone();
        state.record(audit);
        Ok(Some(updated))
    }

    async fn rename_tenant(
        &self,
        tenant: TenantId,
        name: &TenantName,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        let mut state = self.write();
        let Some(stored) = state.live_tenant(tenant) else {
            return Ok(None);
        };
        stored.name = name.clone();
        let updated = stored.clone();
        state.record(audit);
        Ok(Some(updated))
    }

    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyRecord>>> {
        let mut state = self.write();
        let Some(stored) = state.live_tenant(tenant) else {
            return Ok(None);
        };
        stored.deleted_at = Some(at);
        let mut revoked = Vec::new();
        for record in state.keys.values_mut() {
            if record.info.tenant_id == tenant && record.info.revoked_at.is_none() {
                record.info.revoked_at = Some(at);
                revoked.push(record.clone());
            }
        }
        state.record(audit);
        Ok(Some(revoked))
    }

    async fn list_audit(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<AuditEntry>> {
        let state = self.read();
        let entries = state
            .audit
            .values()
            .filter(|entry| entry.tenant_id == tenant)
            .filter(|entry| page.after.is_none_or(|after| entry.id.as_uuid() > after))
            .take(page.limit)
            .cloned()
            .collect();
        Ok(entries)
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>> {
        let state = self.read();
        let record = state
            .keys_by_digest
            .get(digest)
            .and_then(|id| state.keys.get(id))
            .cloned();
        Ok(record)
    }

    async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
        let state = self.read();
        Ok(state
            .tenant_limits
            .get(&tenant)
            .cloned()
            .unwrap_or_default())
    }

    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: &TenantLimits,
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut state = self.write();
        if state.live_tenant(tenant).is_none() {
            return Err(Error::not_found("tenant", tenant));
        }
        state.tenant_limits.insert(tenant, limits.clone());
        state.record(audit);
        Ok(())
    }

    async fn key_limit(&self, key: KeyId) -> Result<Option<Limit>> {
        Ok(self.read().key_limits.get(&key).cloned())
    }

    async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<KeyLimitWrite> {
        let mut state = self.write();
        let Some(record) = state
            .keys
            .get(&key)
            .filter(|record| record.info.tenant_id == tenant)
        else {
            return Ok(KeyLimitWrite::NotFound);
        };
        let revoked = record.info.revoked_at.is_some();
        if state.live_tenant(tenant).is_none() {
            return Ok(KeyLimitWrite::NotFound);
        }
        if revoked {
            return Ok(KeyLimitWrite::Revoked);
        }
        match limit {
            Some(limit) => state.key_limits.insert(key, limit.clone()),
            None => state.key_limits.remove(&key),
        };
        state.record(audit);
        Ok(KeyLimitWrite::Written)
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read().settings.get(name).cloned())
    }

    async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut state = self.write();
        let stored = state
            .settings
            .entry(name.to_owned())
            .or_insert_with(|| value.to_vec());
        Ok(stored.clone())
    }

    async fn record_key_uses(&self, uses: &[KeyUse]) -> Result<()> {
        let mut state = self.write();
        for used in uses {
            if let Some(record) = state.keys.get_mut(&used.key_id) {
                let latest = record
                    .info
                    .last_used_at
                    .map_or(used.used_at, |stored| stored.max(used.used_at));
                record.info.last_used_at = Some(latest);
            }
        }
        Ok(())
    }

    async fn add_usage(&self, counts: &[UsageCount]) -> Result<()> {
        let mut state = self.write();
        for count in counts {
            let row = state
                .usage
                .entry((count.tenant_id, count.hour, count.key_id))
                .or_default();
            row.0 = row.0.saturating_add(count.accepted);
            row.1 = row.1.saturating_add(count.rejected);
        }
        Ok(())
    }

    async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
        let state = self.read();
        let start = (tenant, range.from, KeyId::from_uuid(uuid::Uuid::nil()));
        let counts = state
            .usage
            .range(start..)
            .take_while(|((id, hour, _), _)| *id == tenant && *hour < range.to)
            .map(
                |(&(tenant_id, hour, key_id), &(accepted, rejected))| UsageCount {
                    tenant_id,
                    key_id,
                    hour,
                    accepted,
                    rejected,
                },
            )
            .collect();
        Ok(counts)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
