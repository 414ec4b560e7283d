//! Tenants and API keys for SaaS backends.
//!
//! `tenet-core` is the whole of Tenet's logic; `tenet-server` puts it behind
//! HTTP. A Rust service can embed it directly:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenet_core::Result<()> {
//! use std::sync::Arc;
//! use tenet_core::{MemoryStore, Pepper, Tenet, TenantName};
//!
//! let pepper = Pepper::from_config(&Pepper::generate_config())?;
//! let tenet = Tenet::open(Arc::new(MemoryStore::new()), pepper).await?;
//!
//! let tenant = tenet.create_tenant(TenantName::parse("Acme")?).await?;
//! let issued = tenet.issue_key(tenant.id, None).await?;
//! let principal = tenet.verify(issued.api_key.expose_secret()).await?;
//! assert_eq!(principal.tenant_id, tenant.id);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`key`]: the key format, its parser and key metadata;
//! - [`secret`]: the pepper, key digests and the admin token;
//! - [`id`], [`name`], [`scope`], [`tenant`]: identifiers and validated values;
//! - [`audit`]: audit entries, which record who changed what;
//! - [`expiry`]: key expiry checks;
//! - [`metadata`]: the JSON object an issuer attaches to a key;
//! - [`store`]: the storage trait and its backends;
//! - [`cache`]: the verification caches, in process and in Redis;
//! - [`service`]: [`Tenet`], the operations;
//! - [`ratelimit`]: GCRA rate limits, in process and in Redis;
//! - [`key_use`]: `last_used_at`, recorded in memory and written in batches;
//! - [`usage`]: request counts per tenant, key and hour;
//! - [`stats`]: cache and connection pool counters for metrics;
//! - [`error`]: the crate's one error type;
//! - [`api`]: the request and response bodies of the HTTP API.
//!
//! # Guarantees
//! - No plaintext key is stored or logged; stores keep a BLAKE3 digest keyed
//!   with the server's pepper, and look keys up by it.
//! - A found digest is compared again in constant time.
//! - Secrets (`ApiKey`, `Pepper`, `AdminToken`) never print their value and
//!   are wiped from memory on drop.
//! - Every change to a tenant or key is recorded in the audit trail in the
//!   same transaction as the change, on every store.

pub mod api;
pub mod audit;
pub mod cache;
pub(crate) mod clock;
pub mod error;
pub mod expiry;
pub mod id;
pub mod key;
pub mod key_use;
pub mod metadata;
pub mod name;
pub mod ratelimit;
pub mod scope;
pub mod secret;
pub mod service;
pub mod stats;
pub mod store;
pub mod tenant;
pub mod timestamp;
pub mod usage;

pub use audit::{Actor, AuditAction, AuditEntry, AuditTarget};
pub use cache::CacheOptions;
pub use cache::redis::RedisOptions;
pub use error::{Error, Rejection, Result};
pub use id::{AuditId, KeyId, TenantId};
pub use key::{
    ApiKey, IssuedKey, KeyInfo, KeyOptions, KeyRecord, Principal, RotatedKey, VerifiedKey,
};
pub use key_use::KeyUse;
pub use metadata::KeyMetadata;
pub use name::{KeyName, TenantName};
pub use ratelimit::{Limit, TenantLimits};
pub use scope::Scope;
pub use secret::{AdminToken, AdminTokenDigest, KeyDigest, Pepper};
pub use service::{Tenet, TenetBuilder};
pub use store::{
    KeyEvent, KeyEventKind, KeyEvents, KeyLimitWrite, KeyLookupStats, MemoryStore, Page,
    PageRequest, PostgresOptions, PostgresStore, Rotation, SqliteStore, Store, TenantEvent,
};
pub use tenant::{Tenant, TenantStatus};
pub use usage::{Granularity, Outcome, UsageCount, UsageRange};
