//! The `Tenet` service: every tenancy and key operation, over any store.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::error::{Error, Rejection, Result};
use crate::id::{KeyId, TenantId};
use crate::key::{self, ApiKey, IssuedKey, KeyInfo, KeyRecord, Principal};
use crate::name::{KeyName, TenantName};
use crate::secret::Pepper;
use crate::store::Store;
use crate::tenant::Tenant;

const PEPPER_FINGERPRINT: &str = "pepper_fingerprint";

/// Tenants and their API keys on top of a [`Store`].
///
/// Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct Tenet {
    store: Arc<dyn Store>,
    pepper: Pepper,
}

impl Tenet {
    /// Opens the service over `store`, checking that `pepper` is the one the
    /// store's keys were issued under.
    ///
    /// The first open of an empty store records the pepper's fingerprint;
    /// later opens with another pepper fail with [`Error::Config`] instead
    /// of rejecting every key at run time.
    pub async fn open(store: Arc<dyn Store>, pepper: Pepper) -> Result<Self> {
        let fingerprint = pepper.fingerprint();
        let stored = store.init_setting(PEPPER_FINGERPRINT, &fingerprint).await?;
        if stored != fingerprint {
            return Err(Error::Config(
                "the key pepper differs from the one this store's keys were issued \
                 under; start with the original pepper (TENET_KEY_PEPPER or the \
                 data directory's pepper file)"
                    .to_owned(),
            ));
        }
        Ok(Self { store, pepper })
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

    /// Lists all tenants, oldest first.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.store.list_tenants().await
    }

    /// Issues a new key to a tenant.
    ///
    /// The returned [`IssuedKey`] is the only place the plaintext key ever
    /// exists; the store keeps its keyed digest.
    pub async fn issue_key(&self, tenant: TenantId, name: Option<KeyName>) -> Result<IssuedKey> {
        let api_key = ApiKey::generate();
        let record = KeyRecord {
            info: KeyInfo {
                id: KeyId::generate(),
                tenant_id: tenant,
                name,
                prefix: api_key.display_prefix().to_owned(),
                created_at: now(),
                revoked_at: None,
            },
            digest: self.pepper.digest(api_key.secret()),
        };
        self.store.insert_key(&record).await?;
        tracing::debug!(tenant_id = %tenant, key_id = %record.info.id, "issued key");
        Ok(IssuedKey {
            info: record.info,
            api_key,
        })
    }

    /// Lists a tenant's keys, revoked ones included, oldest first.
    pub async fn list_keys(&self, tenant: TenantId) -> Result<Vec<KeyInfo>> {
        self.tenant(tenant).await?;
        self.store.list_keys(tenant).await
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
        Ok(revoked.info)
    }

    /// Verifies a presented key and returns whom it acts for.
    ///
    /// Malformed keys are rejected by parsing alone. A well-formed key is
    /// found by its keyed digest through the store's index, then the digest
    /// is compared once more in constant time.
    pub async fn verify(&self, presented: &str) -> Result<Principal> {
        let secret = key::decode(presented).map_err(Error::Rejected)?;
        let digest = self.pepper.digest(&secret);

        let record = self
            .store
            .key_by_digest(&digest)
            .await?
            .filter(|record| record.digest.ct_eq(&digest))
            .ok_or(Error::Rejected(Rejection::Unknown))?;
        if record.info.revoked_at.is_some() {
            return Err(Error::Rejected(Rejection::Revoked));
        }

        Ok(Principal {
            tenant_id: record.info.tenant_id,
            key_id: record.info.id,
        })
    }
}

/// The current time in UTC, truncated to milliseconds, which every store
/// keeps exactly.
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let millis = now.millisecond();
    now.replace_millisecond(millis).unwrap_or(now)
}
