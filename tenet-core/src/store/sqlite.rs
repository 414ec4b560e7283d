//! The embedded store: one SQLite file through rusqlite.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a committed
//! write survives a crash or power loss once the call returns. One
//! connection serves all calls on tokio's blocking pool; SQLite serialises
//! writers anyway, and a single node needs no more.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::stored_limit::{LimitColumns, tenant_limits_of};
use super::{KeyLimitWrite, PageRequest, Rotation, Store};
use crate::audit::{Actor, AuditAction, AuditEntry, AuditTarget};
use crate::error::{Error, Result};
use crate::id::{AuditId, KeyId, TenantId};
use crate::key::{KeyInfo, KeyRecord};
use crate::key_use::KeyUse;
use crate::metadata::KeyMetadata;
use crate::name::{KeyName, TenantName};
use crate::ratelimit::{Limit, TenantLimits};
use crate::scope::Scope;
use crate::secret::KeyDigest;
use crate::tenant::{Tenant, TenantStatus};
use crate::usage::{UsageCount, UsageRange};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many have run. Append new steps; never edit a released one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT,
    prefix      TEXT NOT NULL,
    digest      BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
CREATE TABLE settings (
    name   TEXT PRIMARY KEY NOT NULL,
    value  BLOB NOT NULL
);
"#,
    // Scopes are stored space-separated, which their alphabet allows.
    r#"
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
"#,
    // A tenant's row may carry a rate limit, a quota or both, so every
    // column but the id is nullable. A key's row always carries a limit.
    r#"
CREATE TABLE tenant_limits (
    tenant_id      TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id),
    rate           INTEGER,
    period_ms      INTEGER,
    burst          INTEGER,
    shadow         INTEGER,
    monthly_quota  INTEGER
);
CREATE TABLE key_limits (
    key_id     TEXT PRIMARY KEY NOT NULL REFERENCES api_keys (id),
    rate       INTEGER NOT NULL,
    period_ms  INTEGER NOT NULL,
    burst      INTEGER NOT NULL,
    shadow     INTEGER NOT NULL
);
"#,
    // A deleted tenant keeps its row, so that its audit entries keep their
    // tenant.
    r#"
ALTER TABLE tenants ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'suspended'));
ALTER TABLE tenants ADD COLUMN deleted_at INTEGER;
CREATE TABLE audit_log (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_kind  TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
"#,
    // Metadata is compact JSON text. Usage hours are Unix milliseconds of
    // the hour's start, like every other time here.
    r#"
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
CREATE TABLE usage_hourly (
    tenant_id  TEXT NOT NULL,
    hour       INTEGER NOT NULL,
    key_id     TEXT NOT NULL,
    accepted   INTEGER NOT NULL,
    rejected   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, hour, key_id)
);
"#,
    // The id of the key that a rotation issued in this key's place, set
    // once by the rotation.
    r#"
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
"#,
];

const KEY_COLUMNS: &str = "id, tenant_id, name, prefix, digest, created_at, revoked_at, \
     expires_at, scopes, metadata, last_used_at, replaced_by";
const TENANT_COLUMNS: &str = "id, name, created_at, status, deleted_at";
const AUDIT_COLUMNS: &str = "id, tenant_id, actor, action, target_kind, target_id, at";

/// A store in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens or creates the database at `path` and applies any pending
    /// migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let opened = path.clone();
        let connection = tokio::task::spawn_blocking(move || open_and_migrate(&opened))
            .await
            .map_err(Error::store)??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path,
        })
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the blocking pool with the connection.
    async fn call<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic inside `work` rolls back its open transaction when the
            // transaction is dropped, so the connection is still usable.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(Error::store)?
    }
}

fn open_and_migrate(path: &Path) -> Result<Connection> {
    let mut connection = Connection::open(path).map_err(|err| {
        Error::store(format!(
            "cannot open SQLite database {}: {err}",
            path.display()
        ))
    })?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(Error::store)?;
    migrate(&mut connection)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<()> {
    let transaction = connection.transaction().map_err(Error::store)?;
    let applied: usize = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(Error::store)?;
    if applied > MIGRATIONS.len() {
        return Err(Error::Config(format!(
            "the SQLite database has schema version {applied}, newer than this \
             build's {}; run a newer tenet-server",
            MIGRATIONS.len()
        )));
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        transaction.execute_batch(step).map_err(Error::store)?;
        tracing::debug!(version = index + 1, "applied SQLite migration");
    }
    transaction
        .pragma_update(None, "user_version", MIGRATIONS.len())
        .map_err(Error::store)?;
    transaction.commit().map_err(Error::store)
}

fn to_millis(at: OffsetDateTime) -> i64 {
    // i64 milliseconds cover ±292 million years; the cast cannot truncate
    // any time `OffsetDateTime` can hold.
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(millis: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, err.into())
    })
}

fn insert_key_row(transaction: &rusqlite::Transaction<'_>, key: &KeyRecord) -> Result<()> {
    transaction
        .execute(
            &format!(
                "INSERT INTO api_keys ({KEY_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                key.info.id.to_string(),
                key.info.tenant_id.to_string(),
                key.info.name.as_ref().map(KeyName::as_str),
                key.info.prefix,
                key.digest.as_bytes(),
                to_millis(key.info.created_at),
                key.info.revoked_at.map(to_millis),
                key.info.expires_at.map(to_millis),
                join_scopes(&key.info.scopes),
                key.info.metadata.to_json(),
                key.info.last_used_at.map(to_millis),
                key.info.replaced_by.map(|id| id.to_string()),
            ],
        )
        .map_err(Error::store)?;
    Ok(())
}

/// Stores `limit` as the key's own limit, or removes its limit for `None`.
fn write_key_limit(
    transaction: &rusqlite::Transaction<'_>,
    key: KeyId,
    limit: Option<LimitColumns>,
) -> Result<()> {
    match limit {
        Some(c) => transaction.execute(
            "INSERT INTO key_limits (key_id, rate, period_ms, burst, shadow) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (key_id) DO UPDATE SET rate = excluded.rate, \
                 period_ms = excluded.period_ms, burst = excluded.burst, \
                 shadow = excluded.shadow",
            params![key.to_string(), c.rate, c.period_ms, c.burst, c.shadow],
        ),
        None => transaction.execute(
            "DELETE FROM key_limits WHERE key_id = ?1",
            [key.to_string()],
        ),
    }
    .map_err(Error::store)?;
    Ok(())
}

fn insert_audit_row(transaction: &rusqlite::Transaction<'_>, audit: &AuditEntry) -> Result<()> {
    transaction
        .execute(
            &format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                audit.id.to_string(),
                audit.tenant_id.to_string(),
                audit.actor.to_string(),
                audit.action.as_str(),
                audit.target.kind(),
                audit.target.as_uuid().hyphenated().to_string(),
                to_millis(audit.at),
            ],
        )
        .map_err(Error::store)?;
    Ok(())
}

/// Reads a tenant that exists and is not deleted, inside `transaction`.
fn live_tenant(transaction: &rusqlite::Transaction<'_>, id: TenantId) -> Result<Option<Tenant>> {
    transaction
        .query_row(
            &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1 AND deleted_at IS NULL"),
            [id.to_string()],
            tenant_from_row,
        )
        .optional()
        .map_err(Error::store)
}

fn join_scopes(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    names.join(" ")
}

fn conversion(err: Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, err.into())
}

/// Returns the bounds of a page as SQL parameters. Ids are stored in their
/// lowercase hyphenated form, whose text order is the UUID order, and the
/// first page starts after the nil UUID, which sorts below every UUIDv7.
fn page_params(page: PageRequest) -> (String, i64) {
    let after = page
        .after
        .unwrap_or(uuid::Uuid::nil())
        .hyphenated()
        .to_string();
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    (after, limit)
}

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let status: String = row.get(3)?;
    let deleted_at: Option<i64> = row.get(4)?;
    Ok(Tenant {
        id: TenantId::parse(&id).map_err(conversion)?,
        name: TenantName::parse(&name).map_err(conversion)?,
        created_at: from_millis(row.get(2)?)?,
        status: TenantStatus::parse(&status).map_err(conversion)?,
        deleted_at: deleted_at.map(from_millis).transpose()?,
    })
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let id: String = row.get(0)?;
    let tenant_id: String = row.get(1)?;
    let actor: String = row.get(2)?;
    let action: String = row.get(3)?;
    let target_kind: String = row.get(4)?;
    let target_id: String = row.get(5)?;
    let target_id = uuid::Uuid::try_parse(&target_id)
        .map_err(|err| conversion(Error::invalid("audit target", err.to_string())))?;
    Ok(AuditEntry {
        id: AuditId::parse(&id).map_err(conversion)?,
        tenant_id: TenantId::parse(&tenant_id).map_err(conversion)?,
        actor: Actor::parse(&actor).map_err(conversion)?,
        action: AuditAction::parse(&action).map_err(conversion)?,
        target: AuditTarget::from_parts(&target_kind, target_id).map_err(conversion)?,
        at: from_millis(row.get(6)?)?,
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let id: String = row.get(0)?;
    let tenant_id: String = row.get(1)?;
    let name: Option<String> = row.get(2)?;
    let digest: [u8; 32] = row.get(4)?;
    let revoked_at: Option<i64> = row.get(6)?;
    let expires_at: Option<i64> = row.get(7)?;
    let scopes: String = row.get(8)?;
    let scopes: Vec<&str> = scopes.split_whitespace().collect();
    let metadata: String = row.get(9)?;
    let last_used_at: Option<i64> = row.get(10)?;
    let replaced_by: Option<String> = row.get(11)?;
    Ok(KeyRecord {
        info: KeyInfo {
            id: KeyId::parse(&id).map_err(conversion)?,
            tenant_id: TenantId::parse(&tenant_id).map_err(conversion)?,
            name: name
                .as_deref()
                .map(KeyName::parse)
                .transpose()
                .map_err(conversion)?,
            prefix: row.get(3)?,
            created_at: from_millis(row.get(5)?)?,
            revoked_at: revoked_at.map(from_millis).transpose()?,
            expires_at: expires_at.map(from_millis).transpose()?,
            scopes: Scope::parse_list(&scopes).map_err(conversion)?,
            metadata: KeyMetadata::from_json(&metadata).map_err(conversion)?,
            last_used_at: last_used_at.map(from_millis).transpose()?,
            replaced_by: replaced_by
                .as_deref()
                .map(KeyId::parse)
                .transpose()
                .map_err(conversion)?,
        },
        digest: KeyDigest::from_bytes(digest),
    })
}

fn usage_from_row(row: &Row<'_>) -> rusqlite::Result<UsageCount> {
    let tenant_id: String = row.get(0)?;
    let key_id: String = row.get(2)?;
    let accepted: i64 = row.get(3)?;
    let rejected: i64 = row.get(4)?;
    Ok(UsageCount {
        tenant_id: TenantId::parse(&tenant_id).map_err(conversion)?,
        hour: from_millis(row.get(1)?)?,
        key_id: KeyId::parse(&key_id).map_err(conversion)?,
        accepted: accepted.unsigned_abs(),
        rejected: rejected.unsigned_abs(),
    })
}

/// Converts a count to SQLite's signed 64-bit integer, saturating at its
/// maximum, which no real count reaches.
fn to_sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> Result<()> {
        let tenant = tenant.clone();
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            transaction
                .execute(
                    &format!("INSERT INTO tenants ({TENANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![
                        tenant.id.to_string(),
                        tenant.name.as_str(),
                        to_millis(tenant.created_at),
                        tenant.status.as_str(),
                        tenant.deleted_at.map(to_millis),
                    ],
                )
                .map_err(Error::store)?;
            insert_audit_row(&transaction, &audit)?;
            transaction.commit().map_err(Error::store)
        })
        .await
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.call(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_row([id.to_string()], tenant_from_row)
                        .optional()
                })
                .map_err(Error::store)
        })
        .await
    }

    async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>> {
        self.call(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants \
                     WHERE id > ?1 AND deleted_at IS NULL ORDER BY id LIMIT ?2"
                ))
                .map_err(Error::store)?;
            let tenants = statement
                .query_map(page_params(page), tenant_from_row)
                .and_then(Iterator::collect)
                .map_err(Error::store)?;
            Ok(tenants)
        })
        .await
    }

    async fn insert_key(
        &self,
        key: &KeyRecord,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<()> {
        let key = key.clone();
        let limit = limit.map(LimitColumns::of);
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            if live_tenant(&transaction, key.info.tenant_id)?.is_none() {
                return Err(Error::not_found("tenant", key.info.tenant_id));
            }
            insert_key_row(&transaction, &key)?;
            if limit.is_some() {
                write_key_limit(&transaction, key.info.id, limit)?;
            }
            insert_audit_row(&transaction, &audit)?;
            transaction.commit().map_err(Error::store)
        })
        .await
    }

    async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>> {
        self.call(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys \
                     WHERE id > ?1 AND tenant_id = ?3 ORDER BY id LIMIT ?2"
                ))
                .map_err(Error::store)?;
            let (after, limit) = page_params(page);
            let keys = statement
                .query_map(params![after, limit, tenant.to_string()], |row| {
                    key_from_row(row).map(|key| key.info)
                })
                .and_then(Iterator::collect)
                .map_err(Error::store)?;
            Ok(keys)
        })
        .await
    }

    async fn revoke_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            transaction
                .execute(
                    "UPDATE api_keys SET revoked_at = ?3
                     WHERE id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL",
                    params![key.to_string(), tenant.to_string(), to_millis(at)],
                )
                .map_err(Error::store)?;
            let revoked = transaction
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1 AND tenant_id = ?2"),
                    [key.to_string(), tenant.to_string()],
                    key_from_row,
                )
                .optional()
                .map_err(Error::store)?;
            if revoked.is_some() {
                insert_audit_row(&transaction, &audit)?;
            }
            transaction.commit().map_err(Error::store)?;
            Ok(revoked)
        })
        .await
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
        let replacement = replacement.clone();
        let replacement_limit = replacement_limit.map(LimitColumns::of);
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            // The WHERE clause is the rotation's whole check, so it runs
            // in the same statement as the update.
            let (sql, at) = match rotation {
                Rotation::RevokeAt(at) => (
                    "UPDATE api_keys SET revoked_at = ?3, replaced_by = ?4
                     WHERE id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL
                        AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > ?5)",
                    at,
                ),
                Rotation::ExpireBy(at) => (
                    "UPDATE api_keys
                     SET expires_at = MIN(COALESCE(expires_at, ?3), ?3), replaced_by = ?4
                     WHERE id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL
                        AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > ?5)",
                    at,
                ),
            };
            let changed = transaction
                .execute(
                    sql,
                    params![
                        key.to_string(),
                        tenant.to_string(),
                        to_millis(at),
                        replacement.info.id.to_string(),
                        to_millis(replacement.info.created_at),
                    ],
                )
                .map_err(Error::store)?;
            if changed == 0 {
                return Ok(None);
            }
            insert_key_row(&transaction, &replacement)?;
            if replacement_limit.is_some() {
                write_key_limit(&transaction, replacement.info.id, replacement_limit)?;
            }
            let old = transaction
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                    [key.to_string()],
                    key_from_row,
                )
                .map_err(Error::store)?;
            insert_audit_row(&transaction, &audit)?;
            transaction.commit().map_err(Error::store)?;
            Ok(Some(old))
        })
        .await
    }

    async fn set_tenant_status(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            transaction
                .execute(
                    "UPDATE tenants SET status = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    params![tenant.to_string(), status.as_str()],
                )
                .map_err(Error::store)?;
            let updated = live_tenant(&transaction, tenant)?;
            if updated.is_some() {
                insert_audit_row(&transaction, &audit)?;
            }
            transaction.commit().map_err(Error::store)?;
            Ok(updated)
        })
        .await
    }

    async fn rename_tenant(
        &self,
        tenant: TenantId,
        name: &TenantName,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        let name = name.clone();
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            transaction
                .execute(
                    "UPDATE tenants SET name = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    params![tenant.to_string(), name.as_str()],
                )
                .map_err(Error::store)?;
            let updated = live_tenant(&transaction, tenant)?;
            if updated.is_some() {
                insert_audit_row(&transaction, &audit)?;
            }
            transaction.commit().map_err(Error::store)?;
            Ok(updated)
        })
        .await
    }

    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyRecord>>> {
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            let deleted = transaction
                .execute(
                    "UPDATE tenants SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    params![tenant.to_string(), to_millis(at)],
                )
                .map_err(Error::store)?;
            if deleted == 0 {
                return Ok(None);
            }
            let revoked = transaction
                .prepare(&format!(
                    "UPDATE api_keys SET revoked_at = ?2 \
                     WHERE tenant_id = ?1 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_map(params![tenant.to_string(), to_millis(at)], key_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(Error::store)?;
            insert_audit_row(&transaction, &audit)?;
            transaction.commit().map_err(Error::store)?;
            Ok(Some(revoked))
        })
        .await
    }

    async fn list_audit(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<AuditEntry>> {
        self.call(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log \
                     WHERE id > ?1 AND tenant_id = ?3 ORDER BY id LIMIT ?2"
                ))
                .map_err(Error::store)?;
            let (after, limit) = page_params(page);
            let entries = statement
                .query_map(params![after, limit, tenant.to_string()], audit_from_row)
                .and_then(Iterator::collect)
                .map_err(Error::store)?;
            Ok(entries)
        })
        .await
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>> {
        let digest = *digest;
        self.call(move |connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = ?1"
                ))
                .and_then(|mut statement| {
                    statement
                        .query_row([digest.as_bytes()], key_from_row)
                        .optional()
                })
                .map_err(Error::store)
        })
        .await
    }

    async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
        let row = self
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT rate, period_ms, burst, shadow, monthly_quota \
                         FROM tenant_limits WHERE tenant_id = ?1",
                        [tenant.to_string()],
                        |row| {
                            let rate: Option<i64> = row.get(0)?;
                            let period_ms: Option<i64> = row.get(1)?;
                            let burst: Option<i64> = row.get(2)?;
                            let shadow: Option<bool> = row.get(3)?;
                            let quota: Option<i64> = row.get(4)?;
                            Ok((rate, period_ms, burst, shadow, quota))
                        },
                    )
                    .optional()
                    .map_err(Error::store)
            })
            .await?;
        let Some((rate, period_ms, burst, shadow, quota)) = row else {
            return Ok(TenantLimits::default());
        };
        tenant_limits_of(rate, period_ms, burst, shadow, quota)
    }

    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: &TenantLimits,
        audit: &AuditEntry,
    ) -> Result<()> {
        let columns = limits.limit.as_ref().map(LimitColumns::of);
        let quota = limits
            .monthly_quota
            .map(|quota| i64::try_from(quota).unwrap_or(i64::MAX));
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            if live_tenant(&transaction, tenant)?.is_none() {
                return Err(Error::not_found("tenant", tenant));
            }
            transaction
                .execute(
                    "INSERT INTO tenant_limits \
                         (tenant_id, rate, period_ms, burst, shadow, monthly_quota) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (tenant_id) DO UPDATE SET rate = excluded.rate, \
                         period_ms = excluded.period_ms, burst = excluded.burst, \
                         shadow = excluded.shadow, monthly_quota = excluded.monthly_quota",
                    params![
                        tenant.to_string(),
                        columns.map(|c| c.rate),
                        columns.map(|c| c.period_ms),
                        columns.map(|c| c.burst),
                        columns.map(|c| c.shadow),
                        quota
                    ],
                )
                .map_err(Error::store)?;
            insert_audit_row(&transaction, &audit)?;
            transaction.commit().map_err(Error::store)
        })
        .await
    }

    async fn key_limit(&self, key: KeyId) -> Result<Option<Limit>> {
        let row = self
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT rate, period_ms, burst, shadow FROM key_limits WHERE key_id = ?1",
                        [key.to_string()],
                        |row| {
                            Ok(LimitColumns {
                                rate: row.get(0)?,
                                period_ms: row.get(1)?,
                                burst: row.get(2)?,
                                shadow: row.get(3)?,
                            })
                        },
                    )
                    .optional()
                    .map_err(Error::store)
            })
            .await?;
        row.map(LimitColumns::into_limit).transpose()
    }

    async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<KeyLimitWrite> {
        let columns = limit.map(LimitColumns::of);
        let audit = audit.clone();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            let revoked: Option<bool> = transaction
                .query_row(
                    "SELECT k.revoked_at IS NOT NULL \
                     FROM api_keys AS k JOIN tenants AS t ON t.id = k.tenant_id \
                     WHERE k.id = ?1 AND k.tenant_id = ?2 AND t.deleted_at IS NULL",
                    [key.to_string(), tenant.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(Error::store)?;
            match revoked {
                None => return Ok(KeyLimitWrite::NotFound),
                Some(true) => return Ok(KeyLimitWrite::Revoked),
                Some(false) => {}
            }
            write_key_limit(&transaction, key, columns)?;
            insert_audit_row(&transaction, &audit)?;
            transaction.commit().map_err(Error::store)?;
            Ok(KeyLimitWrite::Written)
        })
        .await
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_owned();
        self.call(move |connection| {
            connection
                .query_row(
                    "SELECT value FROM settings WHERE name = ?1",
                    [name],
                    |row| row.get(0),
                )
                .optional()
                .map_err(Error::store)
        })
        .await
    }

    async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let name = name.to_owned();
        let value = value.to_vec();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            transaction
                .execute(
                    "INSERT INTO settings (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO NOTHING",
                    params![name, value],
                )
                .map_err(Error::store)?;
            let stored = transaction
                .query_row(
                    "SELECT value FROM settings WHERE name = ?1",
                    [&name],
                    |row| row.get(0),
                )
                .map_err(Error::store)?;
            transaction.commit().map_err(Error::store)?;
            Ok(stored)
        })
        .await
    }

    async fn record_key_uses(&self, uses: &[KeyUse]) -> Result<()> {
        let uses = uses.to_vec();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            {
                let mut statement = transaction
                    .prepare_cached(
                        "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2)
                         WHERE id = ?1",
                    )
                    .map_err(Error::store)?;
                for used in &uses {
                    statement
                        .execute(params![used.key_id.to_string(), to_millis(used.used_at)])
                        .map_err(Error::store)?;
                }
            }
            transaction.commit().map_err(Error::store)
        })
        .await
    }

    async fn add_usage(&self, counts: &[UsageCount]) -> Result<()> {
        let counts = counts.to_vec();
        self.call(move |connection| {
            let transaction = connection.transaction().map_err(Error::store)?;
            {
                let mut statement = transaction
                    .prepare_cached(
                        "INSERT INTO usage_hourly (tenant_id, hour, key_id, accepted, rejected)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (tenant_id, hour, key_id) DO UPDATE SET
                             accepted = accepted + excluded.accepted,
                             rejected = rejected + excluded.rejected",
                    )
                    .map_err(Error::store)?;
                for count in &counts {
                    statement
                        .execute(params![
                            count.tenant_id.to_string(),
                            to_millis(count.hour),
                            count.key_id.to_string(),
                            to_sql_count(count.accepted),
                            to_sql_count(count.rejected),
                        ])
                        .map_err(Error::store)?;
                }
            }
            transaction.commit().map_err(Error::store)
        })
        .await
    }

    async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
        self.call(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT tenant_id, hour, key_id, accepted, rejected FROM usage_hourly
                     WHERE tenant_id = ?1 AND hour >= ?2 AND hour < ?3
                     ORDER BY hour, key_id",
                )
                .map_err(Error::store)?;
            let counts = statement
                .query_map(
                    params![
                        tenant.to_string(),
                        to_millis(range.from),
                        to_millis(range.to)
                    ],
                    usage_from_row,
                )
                .and_then(Iterator::collect)
                .map_err(Error::store)?;
            Ok(counts)
        })
        .await
    }

    async fn accepted_usage(&self, tenant: TenantId, range: UsageRange) -> Result<u64> {
        self.call(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT COALESCE(SUM(accepted), 0) FROM usage_hourly
                     WHERE tenant_id = ?1 AND hour >= ?2 AND hour < ?3",
                )
                .map_err(Error::store)?;
            let accepted: i64 = statement
                .query_row(
                    params![
                        tenant.to_string(),
                        to_millis(range.from),
                        to_millis(range.to)
                    ],
                    |row| row.get(0),
                )
                .map_err(Error::store)?;
            Ok(accepted.unsigned_abs())
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.call(|connection| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(Error::store)
        })
        .await
    }
}
