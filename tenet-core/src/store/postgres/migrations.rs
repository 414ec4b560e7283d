//! Versioned schema migrations, applied once across replicas.

use std::collections::BTreeSet;

use tokio_postgres::Transaction;

use super::errors::Redactor;
use super::pool::Connection;
use crate::error::{Error, Result};

/// Schema migrations in order; version N is `MIGRATIONS[N - 1]`. Append new
/// steps and never edit a released one, because databases record only the
/// version they applied.
///
/// The first version creates the SQLite store's tables. Timestamps are `timestamptz`, which
/// keeps microseconds, so the millisecond times that [`crate::Tenet`]
/// writes read back unchanged.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text,
    prefix      text NOT NULL,
    digest      bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
CREATE TABLE settings (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);
"#,
    // Key events tell other replicas' caches which digests changed. `at` is
    // the writing transaction's start time, the clock that readers compare.
    r#"
CREATE TABLE key_events (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest  bytea NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('issued', 'revoked')),
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_events_by_time ON key_events (at);
"#,
    r#"
ALTER TABLE api_keys
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{}';
"#,
    r#"
ALTER TABLE key_events DROP CONSTRAINT key_events_kind_check;
ALTER TABLE key_events ADD CONSTRAINT key_events_kind_check
    CHECK (kind IN ('issued', 'revoked', 'expiry_shortened'));
"#,
    // A tenant's row may carry a rate limit, a quota or both; the CHECK
    // keeps the three rate limit columns set or unset together.
    r#"
CREATE TABLE tenant_limits (
    tenant_id      uuid PRIMARY KEY REFERENCES tenants (id),
    rate           bigint,
    period_ms      bigint,
    burst          bigint,
    shadow         boolean,
    monthly_quota  bigint,
    CHECK ((rate IS NULL) = (period_ms IS NULL) AND (rate IS NULL) = (burst IS NULL))
);
CREATE TABLE key_limits (
    key_id     uuid PRIMARY KEY REFERENCES api_keys (id),
    rate       bigint NOT NULL,
    period_ms  bigint NOT NULL,
    burst      bigint NOT NULL,
    shadow     boolean NOT NULL
);
"#,
    // Tenant status and deletion, the audit trail, and tenant events, which
    // tell other replicas' caches which tenants changed status. A deleted
    // tenant keeps its row, so that its audit entries keep their tenant.
    r#"
ALTER TABLE tenants
    ADD COLUMN status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'suspended')),
    ADD COLUMN deleted_at timestamptz;
CREATE TABLE audit_log (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    actor        text NOT NULL,
    action       text NOT NULL,
    target_kind  text NOT NULL CHECK (target_kind IN ('tenant', 'key')),
    target_id    uuid NOT NULL,
    at           timestamptz NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
CREATE TABLE tenant_events (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_events_by_time ON tenant_events (at);
"#,
    // Usage rows are added to by every replica; the primary key serves
    // both the upsert and the per-tenant range read.
    r#"
ALTER TABLE api_keys
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN last_used_at timestamptz;
CREATE TABLE usage_hourly (
    tenant_id  uuid NOT NULL,
    hour       timestamptz NOT NULL,
    key_id     uuid NOT NULL,
    accepted   bigint NOT NULL CHECK (accepted >= 0),
    rejected   bigint NOT NULL CHECK (rejected >= 0),
    PRIMARY KEY (tenant_id, hour, key_id)
);
"#,
    // The id of the key that a rotation issued in this key's place, set
    // once by the rotation.
    r#"
ALTER TABLE api_keys ADD COLUMN replaced_by uuid;
"#,
];

/// The version of the newest migration, as stored in
/// `tenet_schema_migrations.version`.
pub(super) const LATEST_VERSION: i32 = MIGRATIONS.len() as i32;

/// Key of the transaction-level advisory lock that serialises migrations:
/// the ASCII bytes of "tenet_mg" as a big-endian integer. It is one key for
/// the whole database, so migrations of different schemas in one database
/// also run one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x7465_6e65_745f_6d67;

/// Applies the pending migrations in one transaction and returns the
/// versions this call applied.
///
/// The transaction first takes [`MIGRATION_LOCK_KEY`], so a replica that
/// starts while another migrates waits, then reads the versions already
/// applied and skips them. The statement timeout is lifted inside the
/// transaction because a migration may rewrite a large table.
pub(super) async fn migrate(connection: &mut Connection, redactor: &Redactor) -> Result<Vec<u32>> {
    // The connection stays busy, so the pool drops it, unless the
    // transaction ends here in a commit or a rollback.
    let transaction = connection
        .borrow_client()
        .transaction()
        .await
        .map_err(|err| redactor.error(&err, "starting the migration transaction"))?;

    match apply_pending(&transaction, redactor).await {
        Ok(applied) => {
            transaction
                .commit()
                .await
                .map_err(|err| redactor.error(&err, "committing the migrations"))?;
            connection.release_client();
            for version in &applied {
                tracing::debug!(version, "applied Postgres migration");
            }
            Ok(applied)
        }
        Err(err) => {
            // Rolled back here rather than on drop, so that the locks are
            // released before the connection goes back to the pool.
            match transaction.rollback().await {
                Ok(()) => connection.release_client(),
                Err(rollback) => {
                    tracing::debug!(error = %redactor.describe(&rollback), "migration rollback failed");
                }
            }
            Err(err)
        }
    }
}

async fn apply_pending(transaction: &Transaction<'_>, redactor: &Redactor) -> Result<Vec<u32>> {
    let fail = |err: tokio_postgres::Error, action: &str| redactor.error(&err, action);

    transaction
        .batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(|err| fail(err, "lifting the statement timeout for migrations"))?;
    // `CREATE TABLE IF NOT EXISTS` on an existing table sends a NOTICE,
    // which tokio-postgres logs at info level on every start.
    transaction
        .batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(|err| fail(err, "silencing notices for migrations"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|err| fail(err, "taking the migration lock"))?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tenet_schema_migrations (
                 version     integer PRIMARY KEY,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|err| fail(err, "creating tenet_schema_migrations"))?;

    let applied: BTreeSet<i32> = transaction
        .query("SELECT version FROM tenet_schema_migrations", &[])
        .await
        .map_err(|err| fail(err, "reading tenet_schema_migrations"))?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|err| fail(err, "reading tenet_schema_migrations"))?;

    if let Some(&newest) = applied.last() {
        if newest > LATEST_VERSION {
            return Err(Error::Config(format!(
                "the Postgres schema has migration version {newest}, newer than this \
                 build's {LATEST_VERSION}; run a newer tenet-server"
            )));
        }
    }

    let mut applied_now = Vec::new();
    for (version, sql) in (1..=LATEST_VERSION).zip(MIGRATIONS) {
        if applied.contains(&version) {
            continue;
        }

        transaction
            .batch_execute(sql)
            .await
            .map_err(|err| fail(err, &format!("applying migration {version}")))?;
        transaction
            .execute(
                "INSERT INTO tenet_schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(|err| fail(err, &format!("recording migration {version}")))?;
        applied_now.push(version.unsigned_abs());
    }
    Ok(applied_now)
}
