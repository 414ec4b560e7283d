//! The shared store for several replicas: PostgreSQL through a bb8 pool of
//! tokio-postgres connections (no TLS).
//!
//! Every query is parameterised and prepared once per connection. The
//! tables come from versioned migrations that [`PostgresStore::migrate`]
//! applies. The store never migrates on its own, so that an operator can
//! run the migrations as a separate step.
//!
//! The pool does not ping a connection on checkout, so that a read costs
//! one round trip. Instead, the pool drops a connection that a call lost or
//! abandoned (see `pool::Connection`), and checkout skips one that the
//! driver has seen closed. The reads on the verification path retry once
//! when their connection was lost.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bb8::{Pool, PooledConnection, RunError};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::stored_limit::{LimitColumns, tenant_limits_of};
use super::{
    KeyEvent, KeyEventKind, KeyEvents, KeyLimitWrite, PageRequest, Rotation, Store, TenantEvent,
};
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
use crate::stats::{PoolStatus, WaitHistogram};
use crate::tenant::{Tenant, TenantStatus};
use crate::usage::{UsageCount, UsageRange};

mod batch;
mod checkout;
mod errors;
mod migrations;
mod options;
mod pool;

pub use batch::KeyLookupStats;
pub use options::PostgresOptions;

use batch::LookupQueue;
use errors::Redactor;
use pool::{ConnectErrorSink, Connection, LastConnectError, Manager};

// The key queries return the columns in the order `key_from_row` reads.
const SELECT_KEYS_OF_TENANT: &str = "\
    SELECT id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
        metadata::text, last_used_at, replaced_by \
    FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3";
const SELECT_KEY_BY_DIGEST: &str = "\
    SELECT id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
        metadata::text, last_used_at, replaced_by \
    FROM api_keys WHERE digest = $1";
// The key's columns as in SELECT_KEY_BY_DIGEST, then the tenant's as in
// SELECT_TENANT from KEY_COLUMNS on, NULL when the tenant row is gone.
const SELECT_KEY_AND_TENANT_BY_DIGEST: &str = "\
    SELECT k.id, k.tenant_id, k.name, k.prefix, k.digest, k.created_at, k.revoked_at, \
        k.expires_at, k.scopes, k.metadata::text, k.last_used_at, k.replaced_by, \
        t.id, t.name, t.created_at, t.status, t.deleted_at \
    FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.digest = $1";
// The columns of SELECT_KEY_AND_TENANT_BY_DIGEST, then the 1-based position
// of the key's digest in $1, for several digests at once. Postgres compares
// the digests, and a digest that is not stored has no row.
const SELECT_KEYS_AND_TENANTS_BY_DIGESTS: &str = "\
    SELECT k.id, k.tenant_id, k.name, k.prefix, k.digest, k.created_at, k.revoked_at, \
        k.expires_at, k.scopes, k.metadata::text, k.last_used_at, k.replaced_by, \
        t.id, t.name, t.created_at, t.status, t.deleted_at, q.slot \
    FROM unnest($1::bytea[]) WITH ORDINALITY AS q (digest, slot) \
    JOIN api_keys k ON k.digest = q.digest \
    LEFT JOIN tenants t ON t.id = k.tenant_id";
/// The number of key columns that `key_from_row` reads.
const KEY_COLUMNS: usize = 12;
// Each key write records a key event and its audit entry in the same
// statement, and so in the same transaction. Audit parameters come last, in
// the column order of `INSERT INTO audit_log`.
//
// A key is inserted only while its tenant is not deleted. The tenant row is
// locked FOR SHARE, which conflicts with the UPDATE that deletes a tenant,
// so a deletion waits for the insert to commit and then revokes that key too.
// The key's own limit ($12 to $15) is inserted in the same statement when
// its rate is not NULL.
const INSERT_KEY: &str = "\
    WITH tenant AS ( \
        SELECT id FROM tenants WHERE id = $2 AND deleted_at IS NULL FOR SHARE \
    ), inserted AS ( \
        INSERT INTO api_keys \
            (id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
            metadata, last_used_at) \
        SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::bytea, $6::timestamptz, \
            $7::timestamptz, $8::timestamptz, $9::text[], $10::text::jsonb, $11::timestamptz \
        FROM tenant \
        RETURNING id, digest \
    ), event AS ( \
        INSERT INTO key_events (digest, kind) SELECT digest, 'issued' FROM inserted \
    ), key_limit AS ( \
        INSERT INTO key_limits (key_id, rate, period_ms, burst, shadow) \
        SELECT id, $12::bigint, $13::bigint, $14::bigint, $15::boolean FROM inserted \
        WHERE $12::bigint IS NOT NULL \
    ) \
    INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
    SELECT $16::uuid, $17::uuid, $18::text, $19::text, $20::text, $21::uuid, $22::timestamptz \
    FROM inserted";
const SELECT_TENANT_LIMITS: &str = "\
    SELECT rate, period_ms, burst, shadow, monthly_quota \
    FROM tenant_limits WHERE tenant_id = $1";
// Like a key insert, a limit write locks the tenant row FOR SHARE and
// writes nothing, audit entry included, for a deleted tenant.
const UPSERT_TENANT_LIMITS: &str = "\
    WITH tenant AS ( \
        SELECT id FROM tenants WHERE id = $1 AND deleted_at IS NULL FOR SHARE \
    ), written AS ( \
        INSERT INTO tenant_limits (tenant_id, rate, period_ms, burst, shadow, monthly_quota) \
        SELECT id, $2::bigint, $3::bigint, $4::bigint, $5::boolean, $6::bigint FROM tenant \
        ON CONFLICT (tenant_id) DO UPDATE SET rate = excluded.rate, \
            period_ms = excluded.period_ms, burst = excluded.burst, \
            shadow = excluded.shadow, monthly_quota = excluded.monthly_quota \
        RETURNING tenant_id \
    ) \
    INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
    SELECT $7::uuid, $8::uuid, $9::text, $10::text, $11::text, $12::uuid, $13::timestamptz \
    FROM written";
// `owned` finds the key only when it belongs to this live tenant, so the
// statement writes nothing for a missing key or another tenant's key. A
// NULL rate ($3) removes the key's limit, and any other rate replaces it.
// Returns one row, `revoked`, when the tenant has the key, and writes only
// when the key is not revoked. A revoke that commits while this statement
// runs may leave the limit written, which changes nothing for a revoked key.
const WRITE_KEY_LIMIT: &str = "\
    WITH found AS ( \
        SELECT k.id, k.revoked_at IS NOT NULL AS revoked \
        FROM api_keys AS k JOIN tenants AS t ON t.id = k.tenant_id \
        WHERE k.id = $1 AND k.tenant_id = $2 AND t.deleted_at IS NULL \
        FOR SHARE OF t \
    ), owned AS ( \
        SELECT id FROM found WHERE NOT revoked \
    ), removed AS ( \
        DELETE FROM key_limits WHERE key_id IN (SELECT id FROM owned) \
            AND $3::bigint IS NULL \
    ), written AS ( \
        INSERT INTO key_limits (key_id, rate, period_ms, burst, shadow) \
        SELECT id, $3::bigint, $4::bigint, $5::bigint, $6::boolean FROM owned \
        WHERE $3::bigint IS NOT NULL \
        ON CONFLICT (key_id) DO UPDATE SET rate = excluded.rate, \
            period_ms = excluded.period_ms, burst = excluded.burst, \
            shadow = excluded.shadow \
    ), audit AS ( \
        INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
        SELECT $7::uuid, $8::uuid, $9::text, $10::text, $11::text, $12::uuid, $13::timestamptz \
        FROM owned \
    ) \
    SELECT revoked FROM found";
// COALESCE keeps the first revocation time. Under concurrent revokes the
// second UPDATE re-reads the committed row, so it keeps the first time too.
// A repeated revoke records another event, which readers handle as a no-op.
const REVOKE_KEY: &str = "\
    WITH revoked AS ( \
        UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) \
        WHERE id = $1 AND tenant_id = $2 \
        RETURNING id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
            metadata, last_used_at, replaced_by \
    ), event AS ( \
        INSERT INTO key_events (digest, kind) SELECT digest, 'revoked' FROM revoked \
    ), audit AS ( \
        INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
        SELECT $4::uuid, $5::uuid, $6::text, $7::text, $8::text, $9::uuid, $10::timestamptz \
        FROM revoked \
    ) \
    SELECT id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
        metadata::text, last_used_at, replaced_by \
    FROM revoked";
/// Builds a rotation statement from how it ends the old key (`$set`) and
/// the event that records it (`$kind`).
///
/// A rotation is one statement, and so one transaction: it ends the old
/// key, inserts the replacement and its own limit ($15 to $18, skipped for
/// a NULL rate) only when the old key was found, and records an event for
/// each key and the audit entry. Like [`INSERT_KEY`], it locks the tenant
/// row FOR SHARE, so a concurrent deletion revokes the replacement.
///
/// Of two concurrent rotations of one key, the second UPDATE waits for the
/// first to commit. Under READ COMMITTED, the default isolation level, it
/// then re-checks its WHERE clause on the new row version, where
/// `replaced_by` is set, and so changes nothing.
macro_rules! rotate_key_sql {
    ($set:literal, $kind:literal) => {
        concat!(
            "WITH tenant AS ( \
                SELECT id FROM tenants WHERE id = $2 AND deleted_at IS NULL FOR SHARE \
            ), changed AS ( \
                UPDATE api_keys SET replaced_by = $4, ",
            $set,
            " \
                WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL \
                    AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $9) \
                    AND EXISTS (SELECT 1 FROM tenant) \
                RETURNING id, tenant_id, name, prefix, digest, created_at, revoked_at, \
                    expires_at, scopes, metadata, last_used_at, replaced_by \
            ), old_event AS ( \
                INSERT INTO key_events (digest, kind) SELECT digest, '",
            $kind,
            "' FROM changed \
            ), inserted AS ( \
                INSERT INTO api_keys \
                    (id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, \
                    scopes, metadata, last_used_at) \
                SELECT $4::uuid, $5::uuid, $6::text, $7::text, $8::bytea, $9::timestamptz, \
                    $10::timestamptz, $11::timestamptz, $12::text[], $13::text::jsonb, \
                    $14::timestamptz \
                WHERE EXISTS (SELECT 1 FROM changed) \
                RETURNING id, digest \
            ), new_event AS ( \
                INSERT INTO key_events (digest, kind) SELECT digest, 'issued' FROM inserted \
            ), new_limit AS ( \
                INSERT INTO key_limits (key_id, rate, period_ms, burst, shadow) \
                SELECT id, $15::bigint, $16::bigint, $17::bigint, $18::boolean FROM inserted \
                WHERE $15::bigint IS NOT NULL \
            ), audit AS ( \
                INSERT INTO audit_log \
                    (id, tenant_id, actor, action, target_kind, target_id, at) \
                SELECT $19::uuid, $20::uuid, $21::text, $22::text, $23::text, $24::uuid, \
                    $25::timestamptz \
                FROM changed \
            ) \
            SELECT id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, \
                scopes, metadata::text, last_used_at, replaced_by \
            FROM changed"
        )
    };
}

// LEAST keeps an expiry that is already sooner.
const ROTATE_KEY_EXPIRE: &str = rotate_key_sql!(
    "expires_at = LEAST(COALESCE(expires_at, $3), $3)",
    "expiry_shortened"
);
const ROTATE_KEY_REVOKE: &str = rotate_key_sql!("revoked_at = $3", "revoked");
const SELECT_KEY_EVENTS: &str = "\
    SELECT seq, digest, kind FROM key_events WHERE at >= $1 ORDER BY seq";
// GREATEST ignores NULL, so a key's first use sets the column.
const RECORD_KEY_USES: &str = "\
    UPDATE api_keys AS k SET last_used_at = GREATEST(k.last_used_at, u.used_at) \
    FROM unnest($1::uuid[], $2::timestamptz[]) AS u (id, used_at) \
    WHERE k.id = u.id";
// One statement, so the whole batch commits or none of it does.
const ADD_USAGE: &str = "\
    INSERT INTO usage_hourly AS u (tenant_id, hour, key_id, accepted, rejected) \
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::bigint[], \
        $5::bigint[]) \
    ON CONFLICT (tenant_id, hour, key_id) DO UPDATE SET \
        accepted = u.accepted + excluded.accepted, \
        rejected = u.rejected + excluded.rejected";
const SELECT_USAGE: &str = "\
    SELECT tenant_id, hour, key_id, accepted, rejected FROM usage_hourly \
    WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, key_id";
const SELECT_ACCEPTED_USAGE: &str = "\
    SELECT COALESCE(SUM(accepted), 0)::bigint FROM usage_hourly \
    WHERE tenant_id = $1 AND hour >= $2 AND hour < $3";
const PRUNE_KEY_EVENTS: &str = "\
    DELETE FROM key_events WHERE at < now() - make_interval(secs => $1)";
const SELECT_TENANT_EVENTS: &str = "\
    SELECT seq, tenant_id FROM tenant_events WHERE at >= $1 ORDER BY seq";
const PRUNE_TENANT_EVENTS: &str = "\
    DELETE FROM tenant_events WHERE at < now() - make_interval(secs => $1)";

// The tenant queries return the columns in the order `tenant_from_row`
// reads.
const INSERT_TENANT: &str = "\
    WITH inserted AS ( \
        INSERT INTO tenants (id, name, created_at, status, deleted_at) \
        VALUES ($1, $2, $3, $4, $5) \
        RETURNING id \
    ) \
    INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
    SELECT $6::uuid, $7::uuid, $8::text, $9::text, $10::text, $11::uuid, $12::timestamptz \
    FROM inserted";
const SELECT_TENANT: &str = "\
    SELECT id, name, created_at, status, deleted_at FROM tenants WHERE id = $1";
const SELECT_TENANTS: &str = "\
    SELECT id, name, created_at, status, deleted_at FROM tenants \
    WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2";
// A status change records a tenant event, so that other replicas drop the
// cached status.
const SET_TENANT_STATUS: &str = "\
    WITH updated AS ( \
        UPDATE tenants SET status = $2 WHERE id = $1 AND deleted_at IS NULL \
        RETURNING id, name, created_at, status, deleted_at \
    ), event AS ( \
        INSERT INTO tenant_events (tenant_id) SELECT id FROM updated \
    ), audit AS ( \
        INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
        SELECT $3::uuid, $4::uuid, $5::text, $6::text, $7::text, $8::uuid, $9::timestamptz \
        FROM updated \
    ) \
    SELECT id, name, created_at, status, deleted_at FROM updated";
const RENAME_TENANT: &str = "\
    WITH updated AS ( \
        UPDATE tenants SET name = $2 WHERE id = $1 AND deleted_at IS NULL \
        RETURNING id, name, created_at, status, deleted_at \
    ), audit AS ( \
        INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
        SELECT $3::uuid, $4::uuid, $5::text, $6::text, $7::text, $8::uuid, $9::timestamptz \
        FROM updated \
    ) \
    SELECT id, name, created_at, status, deleted_at FROM updated";
// The first statement of a deletion. Its row lock makes key inserts of this
// tenant wait, so the second statement, with a newer snapshot, revokes them
// too.
const MARK_TENANT_DELETED: &str = "\
    WITH deleted AS ( \
        UPDATE tenants SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL \
        RETURNING id \
    ), event AS ( \
        INSERT INTO tenant_events (tenant_id) SELECT id FROM deleted \
    ), audit AS ( \
        INSERT INTO audit_log (id, tenant_id, actor, action, target_kind, target_id, at) \
        SELECT $3::uuid, $4::uuid, $5::text, $6::text, $7::text, $8::uuid, $9::timestamptz \
        FROM deleted \
    ) \
    SELECT id FROM deleted";
const REVOKE_TENANT_KEYS: &str = "\
    WITH revoked AS ( \
        UPDATE api_keys SET revoked_at = $2 WHERE tenant_id = $1 AND revoked_at IS NULL \
        RETURNING id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
            metadata, last_used_at, replaced_by \
    ), event AS ( \
        INSERT INTO key_events (digest, kind) SELECT digest, 'revoked' FROM revoked \
    ) \
    SELECT id, tenant_id, name, prefix, digest, created_at, revoked_at, expires_at, scopes, \
        metadata::text, last_used_at, replaced_by \
    FROM revoked";
const SELECT_AUDIT: &str = "\
    SELECT id, tenant_id, actor, action, target_kind, target_id, at FROM audit_log \
    WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3";

/// How long key events are kept. Readers look back a few seconds, or to
/// when their Redis connection was lost. A Redis entry older than the
/// cache TTL has expired anyway, so a day is ample for TTLs of minutes.
const KEY_EVENT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// A store in a PostgreSQL database, shared by any number of replicas.
///
/// Cheap to clone; clones share the pool.
///
/// A call whose connection is lost (closed by the server, reset, or
/// terminated with `pg_terminate_backend`) fails with
/// [`Error::Unavailable`], and the pool drops that connection. Only the
/// reads that verification makes, [`Store::key_by_digest`],
/// [`Store::key_and_tenant_by_digest`], [`Store::tenant`] and
/// [`Store::key_events`], retry once on another connection first. Writes
/// never retry on their own, because a write whose connection was lost may
/// have committed, and the caller decides whether to repeat it.
///
/// Concurrent [`Store::key_and_tenant_by_digest`] calls share statements:
/// the calls that arrive while one is in flight go together in the next.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool<Manager>,
    redactor: Redactor,
    last_connect_error: LastConnectError,
    /// `host:port/dbname` for messages; never the URL, which may carry a
    /// password.
    target: String,
    options: PostgresOptions,
    /// Time each checkout waited for a connection, shared by clones.
    pool_wait: Arc<WaitHistogram>,
    /// Key lookups waiting to share a statement, shared by clones.
    lookups: Arc<LookupQueue>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The migration version that [`PostgresStore::migrate`] brings a
    /// database to.
    pub const SCHEMA_VERSION: u32 = migrations::LATEST_VERSION.unsigned_abs();

    /// Checks that `url` parses as a Postgres URL, without connecting, so
    /// that a caller can reject a malformed one before anything else.
    /// Fails with [`Error::Config`] like [`PostgresStore::connect`]; the
    /// message never contains the URL's password.
    pub fn check_url(url: &str) -> Result<()> {
        parse_url(url).map(drop)
    }

    /// Creates the pool for `url` (such as
    /// `postgres://tenet:secret@db.internal:5432/tenet`) and opens one
    /// connection to check that the server accepts it.
    ///
    /// Fails with [`Error::Config`] for an invalid URL or options. Fails
    /// with [`Error::Unavailable`] when no connection opens within
    /// `options.connect_timeout`, and the message then includes the last
    /// connection error, such as a refused connection or a failed login.
    /// No message contains the URL's password.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self> {
        options.validate()?;
        let mut config = parse_url(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("tenet");
        }

        let redactor = Redactor::new(config.get_password());
        let target = describe_target(&config);
        let last_connect_error = LastConnectError::default();
        let manager = Manager::new(config, options.session_setup(), last_connect_error.clone());
        // No ping on checkout, because it would double the round trips of
        // every read. `Manager::has_broken` drops lost and abandoned
        // connections instead, and `checkout` skips closed ones.
        let pool = Pool::builder()
            .max_size(options.pool_size)
            .connection_timeout(options.connect_timeout)
            .test_on_check_out(false)
            .error_sink(Box::new(ConnectErrorSink {
                last_error: last_connect_error.clone(),
                redactor: redactor.clone(),
            }))
            .build_unchecked(manager);

        let store = Self {
            pool,
            redactor,
            last_connect_error,
            target,
            options,
            pool_wait: Arc::default(),
            lookups: Arc::default(),
        };
        store.check_schema().await?;
        tracing::debug!(
            target = %store.target,
            schema = ?store.options.schema,
            pool_size = store.options.pool_size,
            "connected to Postgres"
        );
        Ok(store)
    }

    /// Applies the pending schema migrations and returns the versions this
    /// call applied, in order (empty when the schema is current).
    ///
    /// Every replica may call it at start, because a transaction-level
    /// advisory lock makes concurrent callers apply each version exactly
    /// once. Fails with [`Error::Config`] when the database has a version
    /// newer than [`PostgresStore::SCHEMA_VERSION`]. The schema set in
    /// [`PostgresOptions::schema`] must already exist.
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        let mut connection = self.connection().await?;
        migrations::migrate(&mut connection, &self.redactor).await
    }

    /// Checks that the connection's `search_path` names a schema that
    /// exists, so that a mistyped schema fails at start with its name
    /// instead of at the first statement with Postgres's "no schema has
    /// been selected".
    async fn check_schema(&self) -> Result<()> {
        let row = self
            .bounded(async {
                let mut connection = self.connection().await?;
                connection
                    .query_one(
                        "SELECT current_schema(), current_setting('search_path')",
                        &[],
                    )
                    .await
                    .map_err(|err| self.failed(&err, "reading the current schema"))
            })
            .await?;
        let current: Option<String> = column(&row, 0, "current schema")?;
        if current.is_some() {
            return Ok(());
        }
        let search_path: String = column(&row, 1, "search_path")?;
        let message = match &self.options.schema {
            Some(schema) => format!(
                "the Postgres schema {schema:?} does not exist in {}; create it with \
                 CREATE SCHEMA, or choose an existing schema",
                self.target
            ),
            None => format!(
                "no schema in the search_path ({search_path}) of the Postgres user exists in \
                 {}; create one with CREATE SCHEMA, or choose an existing schema",
                self.target
            ),
        };
        Err(Error::Config(message))
    }

    async fn connection(&self) -> Result<PooledConnection<'_, Manager>> {
        let started = Instant::now();
        let checkout = self.checkout().await;
        self.pool_wait.record(started.elapsed());
        checkout
    }

    // The reads that verification makes, each on a given connection so that
    // a caller can run it again on another (see `retry_connection`).

    async fn select_key_by_digest(
        &self,
        connection: &mut Connection,
        digest: &KeyDigest,
    ) -> Result<Option<KeyRecord>> {
        let digest = &digest.as_bytes()[..];
        let row = connection
            .query_opt(SELECT_KEY_BY_DIGEST, &[&digest])
            .await
            .map_err(|err| self.failed(&err, "looking up a key by digest"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn select_tenant(
        &self,
        connection: &mut Connection,
        id: TenantId,
    ) -> Result<Option<Tenant>> {
        let uuid = id.as_uuid();
        let row = connection
            .query_opt(SELECT_TENANT, &[&uuid])
            .await
            .map_err(|err| self.failed(&err, format_args!("reading tenant {id}")))?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn select_events(
        &self,
        connection: &mut Connection,
        since: Option<OffsetDateTime>,
    ) -> Result<KeyEvents> {
        // The clock is read before the events, so an event that commits
        // between the two statements is read again by the next call.
        let clock = connection
            .query_one("SELECT now()", &[])
            .await
            .map_err(|err| self.failed(&err, "reading the Postgres clock"))?;
        let now = column(&clock, 0, "server clock")?;

        let Some(since) = since else {
            return Ok(KeyEvents {
                now,
                events: Vec::new(),
                tenant_events: Vec::new(),
            });
        };
        let rows = connection
            .query(SELECT_KEY_EVENTS, &[&since])
            .await
            .map_err(|err| self.failed(&err, format_args!("reading key events since {since}")))?;
        let events = rows.iter().map(key_event_from_row).collect::<Result<_>>()?;
        let rows = connection
            .query(SELECT_TENANT_EVENTS, &[&since])
            .await
            .map_err(|err| {
                self.failed(&err, format_args!("reading tenant events since {since}"))
            })?;
        let tenant_events = rows
            .iter()
            .map(|row| {
                Ok(TenantEvent {
                    seq: column(row, 0, "tenant event seq")?,
                    tenant_id: TenantId::from_uuid(column(row, 1, "tenant event tenant_id")?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(KeyEvents {
            now,
            events,
            tenant_events,
        })
    }

    fn checkout_error(&self, err: RunError<tokio_postgres::Error>) -> Error {
        match err {
            RunError::User(err) => self.redactor.error(&err, "opening a Postgres connection"),
            RunError::TimedOut => self.acquire_timeout(),
        }
    }

    /// Bounds a call by the connect and statement timeouts together, so that
    /// a Postgres that stops responding without closing the connection (a
    /// network partition) costs a request a 503, not a hang.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.options.connect_timeout + self.options.statement_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(self.redactor.message(format!(
                "Postgres at {} did not respond within {limit:?}",
                self.target
            )))),
        }
    }

    fn acquire_timeout(&self) -> Error {
        let open = self.pool.state().connections;
        let reason = match self.last_connect_error.get() {
            Some(last) => format!("the last connection attempt failed: {last}"),
            // With room in the pool, the wait was for a new connection that
            // Postgres never completed.
            None if open < self.options.pool_size => format!(
                "Postgres did not complete a new connection ({open} of {} open); check \
                 that it is up and reachable",
                self.options.pool_size
            ),
            None => format!(
                "all {} connections were busy; raise the pool size or check for slow queries",
                self.options.pool_size
            ),
        };
        Error::unavailable(self.redactor.message(format!(
            "no Postgres connection to {} within {:?}: {reason}",
            self.target, self.options.connect_timeout
        )))
    }

    fn failed(&self, err: &tokio_postgres::Error, action: impl fmt::Display) -> Error {
        self.redactor.call_error(err, action)
    }
}

/// Describes the first host, port and database of `config` for messages.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}

/// Returns the error for a stored value that does not convert back into
/// its type, which means that something other than this store wrote it.
fn invalid_row(what: &str, reason: impl fmt::Display) -> Error {
    Error::store(format!("stored {what} is invalid: {reason}"))
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &str,
) -> Result<T> {
    row.try_get(index).map_err(|err| invalid_row(what, err))
}

/// Returns the bounds of a page as SQL parameters. The first page starts
/// after the nil UUID, which sorts below every UUIDv7.
fn page_params(page: PageRequest) -> (Uuid, i64) {
    let after = page.after.unwrap_or(Uuid::nil());
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    (after, limit)
}

fn tenant_from_row(row: &Row) -> Result<Tenant> {
    tenant_from_columns(row, 0)
}

/// Reads a tenant from the five columns of `row` that start at `first`.
fn tenant_from_columns(row: &Row, first: usize) -> Result<Tenant> {
    let name: &str = column(row, first + 1, "tenant name")?;
    let status: &str = column(row, first + 3, "tenant status")?;
    Ok(Tenant {
        id: TenantId::from_uuid(column(row, first, "tenant id")?),
        name: TenantName::parse(name).map_err(|err| invalid_row("tenant name", err))?,
        created_at: column(row, first + 2, "tenant created_at")?,
        status: TenantStatus::parse(status).map_err(|err| invalid_row("tenant status", err))?,
        deleted_at: column(row, first + 4, "tenant deleted_at")?,
    })
}

/// Reads a row of `SELECT_KEY_AND_TENANT_BY_DIGEST` or
/// `SELECT_KEYS_AND_TENANTS_BY_DIGESTS`.
fn key_and_tenant_from_row(row: &Row) -> Result<(KeyRecord, Option<Tenant>)> {
    let record = key_from_row(row)?;
    let tenant_id: Option<Uuid> = column(row, KEY_COLUMNS, "tenant id")?;
    let tenant = match tenant_id {
        Some(_) => Some(tenant_from_columns(row, KEY_COLUMNS)?),
        None => None,
    };
    Ok((record, tenant))
}

fn audit_from_row(row: &Row) -> Result<AuditEntry> {
    let actor: &str = column(row, 2, "audit actor")?;
    let action: &str = column(row, 3, "audit action")?;
    let target_kind: &str = column(row, 4, "audit target_kind")?;
    let target_id: Uuid = column(row, 5, "audit target_id")?;
    Ok(AuditEntry {
        id: AuditId::from_uuid(column(row, 0, "audit id")?),
        tenant_id: TenantId::from_uuid(column(row, 1, "audit tenant_id")?),
        actor: Actor::parse(actor).map_err(|err| invalid_row("audit actor", err))?,
        action: AuditAction::parse(action).map_err(|err| invalid_row("audit action", err))?,
        target: AuditTarget::from_parts(target_kind, target_id)
            .map_err(|err| invalid_row("audit target", err))?,
        at: column(row, 6, "audit at")?,
    })
}

/// An audit entry as SQL parameters, in the column order of
/// `INSERT INTO audit_log`.
struct AuditParams {
    id: Uuid,
    tenant_id: Uuid,
    actor: String,
    action: &'static str,
    target_kind: &'static str,
    target_id: Uuid,
    at: OffsetDateTime,
}

impl AuditParams {
    fn new(audit: &AuditEntry) -> Self {
        Self {
            id: audit.id.as_uuid(),
            tenant_id: audit.tenant_id.as_uuid(),
            actor: audit.actor.to_string(),
            action: audit.action.as_str(),
            target_kind: audit.target.kind(),
            target_id: audit.target.as_uuid(),
            at: audit.at,
        }
    }

    /// Returns `leading` followed by the audit parameters.
    fn after<'a>(&'a self, leading: &[&'a (dyn ToSql + Sync)]) -> Vec<&'a (dyn ToSql + Sync)> {
        let mut params = leading.to_vec();
        params.extend_from_slice(&[
            &self.id,
            &self.tenant_id,
            &self.actor,
            &self.action,
            &self.target_kind,
            &self.target_id,
            &self.at,
        ]);
        params
    }
}

/// A rate limit as SQL parameters, all NULL for no limit.
struct LimitParams {
    rate: Option<i64>,
    period_ms: Option<i64>,
    burst: Option<i64>,
    shadow: Option<bool>,
}

impl LimitParams {
    fn new(limit: Option<&Limit>) -> Self {
        let columns = limit.map(LimitColumns::of);
        Self {
            rate: columns.map(|c| c.rate),
            period_ms: columns.map(|c| c.period_ms),
            burst: columns.map(|c| c.burst),
            shadow: columns.map(|c| c.shadow),
        }
    }
}

/// Reads a key from the first [`KEY_COLUMNS`] columns of `row`.
///
/// The text and byte columns are borrowed from the row, not copied into a
/// `String` or `Vec` of their own before they are parsed.
fn key_from_row(row: &Row) -> Result<KeyRecord> {
    let name: Option<&str> = column(row, 2, "key name")?;
    let digest: &[u8] = column(row, 4, "key digest")?;
    let scopes: Vec<&str> = column(row, 8, "key scopes")?;
    let metadata: &str = column(row, 9, "key metadata")?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| invalid_row("key digest", format!("{} bytes", digest.len())))?;
    Ok(KeyRecord {
        info: KeyInfo {
            id: KeyId::from_uuid(column(row, 0, "key id")?),
            tenant_id: TenantId::from_uuid(column(row, 1, "key tenant_id")?),
            name: name
                .map(KeyName::parse)
                .transpose()
                .map_err(|err| invalid_row("key name", err))?,
            prefix: column(row, 3, "key prefix")?,
            created_at: column(row, 5, "key created_at")?,
            revoked_at: column(row, 6, "key revoked_at")?,
            expires_at: column(row, 7, "key expires_at")?,
            scopes: Scope::parse_list(&scopes).map_err(|err| invalid_row("key scopes", err))?,
            metadata: KeyMetadata::from_json(metadata)
                .map_err(|err| invalid_row("key metadata", err))?,
            last_used_at: column(row, 10, "key last_used_at")?,
            replaced_by: column::<Option<Uuid>>(row, 11, "key replaced_by")?.map(KeyId::from_uuid),
        },
        digest: KeyDigest::from_bytes(digest),
    })
}

fn usage_from_row(row: &Row) -> Result<UsageCount> {
    let accepted: i64 = column(row, 3, "usage accepted")?;
    let rejected: i64 = column(row, 4, "usage rejected")?;
    Ok(UsageCount {
        tenant_id: TenantId::from_uuid(column(row, 0, "usage tenant_id")?),
        hour: column(row, 1, "usage hour")?,
        key_id: KeyId::from_uuid(column(row, 2, "usage key_id")?),
        accepted: accepted.unsigned_abs(),
        rejected: rejected.unsigned_abs(),
    })
}

/// Converts a count to Postgres's `bigint`, saturating at its maximum,
/// which no real count reaches.
fn to_sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn key_event_from_row(row: &Row) -> Result<KeyEvent> {
    let digest: Vec<u8> = column(row, 1, "key event digest")?;
    let digest: [u8; 32] = digest.try_into().map_err(|bytes: Vec<u8>| {
        invalid_row("key event digest", format!("{} bytes", bytes.len()))
    })?;
    let kind: &str = column(row, 2, "key event kind")?;
    let kind = match kind {
        "issued" => KeyEventKind::Issued,
        "revoked" => KeyEventKind::Revoked,
        "expiry_shortened" => KeyEventKind::ExpiryShortened,
        other => return Err(invalid_row("key event kind", format!("{other:?}"))),
    };
    Ok(KeyEvent {
        seq: column(row, 0, "key event seq")?,
        digest: KeyDigest::from_bytes(digest),
        kind,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> Result<()> {
        self.bounded(async {
            let id: Uuid = tenant.id.as_uuid();
            let audit = AuditParams::new(audit);
            let mut connection = self.connection().await?;
            connection
                .execute(
                    INSERT_TENANT,
                    &audit.after(&[
                        &id,
                        &tenant.name.as_str(),
                        &tenant.created_at,
                        &tenant.status.as_str(),
                        &tenant.deleted_at,
                    ]),
                )
                .await
                .map_err(|err| self.failed(&err, format_args!("inserting tenant {}", tenant.id)))?;
            Ok(())
        })
        .await
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            let first = self.select_tenant(&mut connection, id).await;
            match self.retry_connection(connection, &first).await? {
                Some(mut connection) => self.select_tenant(&mut connection, id).await,
                None => first,
            }
        })
        .await
    }

    async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>> {
        self.bounded(async {
            let (after, limit) = page_params(page);
            let mut connection = self.connection().await?;
            let rows = connection
                .query(SELECT_TENANTS, &[&after, &limit])
                .await
                .map_err(|err| self.failed(&err, "listing tenants"))?;
            rows.iter().map(tenant_from_row).collect()
        })
        .await
    }

    async fn insert_key(
        &self,
        key: &KeyRecord,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<()> {
        self.bounded(async {
            let audit = AuditParams::new(audit);
            let limit = LimitParams::new(limit);
            let info = &key.info;
            let id = info.id.as_uuid();
            let tenant_id = info.tenant_id.as_uuid();
            let name = info.name.as_ref().map(KeyName::as_str);
            let digest = &key.digest.as_bytes()[..];
            let scopes: Vec<&str> = info.scopes.iter().map(Scope::as_str).collect();
            let metadata = info.metadata.to_json();

            // The statement checks the tenant inside its own transaction, so a
            // tenant cannot be deleted between check and insert.
            let mut connection = self.connection().await?;
            let inserted = connection
                .execute(
                    INSERT_KEY,
                    &audit.after(&[
                        &id,
                        &tenant_id,
                        &name,
                        &info.prefix,
                        &digest,
                        &info.created_at,
                        &info.revoked_at,
                        &info.expires_at,
                        &scopes,
                        &metadata,
                        &info.last_used_at,
                        &limit.rate,
                        &limit.period_ms,
                        &limit.burst,
                        &limit.shadow,
                    ]),
                )
                .await;
            match inserted {
                Ok(0) => return Err(Error::not_found("tenant", info.tenant_id)),
                Ok(_) => {}
                Err(err) if err.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                    return Err(Error::not_found("tenant", info.tenant_id));
                }
                Err(err) => {
                    return Err(self.failed(
                        &err,
                        format_args!("inserting key {} of tenant {}", info.id, info.tenant_id),
                    ));
                }
            }

            // Pruning rides on issuing, a rare write, instead of the frequent
            // event reads. The key is stored already, so a failed prune is
            // only logged.
            let retention = KEY_EVENT_RETENTION.as_secs_f64();
            for (sql, what) in [
                (PRUNE_KEY_EVENTS, "key events"),
                (PRUNE_TENANT_EVENTS, "tenant events"),
            ] {
                if let Err(err) = connection.execute(sql, &[&retention]).await {
                    let err = self.failed(&err, format_args!("pruning old {what}"));
                    tracing::debug!(error = %err, "event pruning failed");
                }
            }
            Ok(())
        })
        .await
    }

    async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let (after, limit) = page_params(page);
            let mut connection = self.connection().await?;
            let rows = connection
                .query(SELECT_KEYS_OF_TENANT, &[&tenant_id, &after, &limit])
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("listing keys of tenant {tenant}"))
                })?;
            rows.iter()
                .map(|row| key_from_row(row).map(|key| key.info))
                .collect()
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
        self.bounded(async {
            let key_id = key.as_uuid();
            let tenant_id = tenant.as_uuid();
            let audit = AuditParams::new(audit);
            let mut connection = self.connection().await?;
            let row = connection
                .query_opt(REVOKE_KEY, &audit.after(&[&key_id, &tenant_id, &at]))
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("revoking key {key} of tenant {tenant}"))
                })?;
            row.as_ref().map(key_from_row).transpose()
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
        self.bounded(async {
            let audit = AuditParams::new(audit);
            let limit = LimitParams::new(replacement_limit);
            let key_id = key.as_uuid();
            let tenant_id = tenant.as_uuid();
            let (sql, at) = match rotation {
                Rotation::RevokeAt(at) => (ROTATE_KEY_REVOKE, at),
                Rotation::ExpireBy(at) => (ROTATE_KEY_EXPIRE, at),
            };
            let info = &replacement.info;
            let new_id = info.id.as_uuid();
            let new_tenant = info.tenant_id.as_uuid();
            let name = info.name.as_ref().map(KeyName::as_str);
            let digest = &replacement.digest.as_bytes()[..];
            let scopes: Vec<&str> = info.scopes.iter().map(Scope::as_str).collect();
            let metadata = info.metadata.to_json();

            let mut connection = self.connection().await?;
            let row = connection
                .query_opt(
                    sql,
                    &audit.after(&[
                        &key_id,
                        &tenant_id,
                        &at,
                        &new_id,
                        &new_tenant,
                        &name,
                        &info.prefix,
                        &digest,
                        &info.created_at,
                        &info.revoked_at,
                        &info.expires_at,
                        &scopes,
                        &metadata,
                        &info.last_used_at,
                        &limit.rate,
                        &limit.period_ms,
                        &limit.burst,
                        &limit.shadow,
                    ]),
                )
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("rotating key {key} of tenant {tenant}"))
                })?;
            row.as_ref().map(key_from_row).transpose()
        })
        .await
    }

    async fn set_tenant_status(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let audit = AuditParams::new(audit);
            let mut connection = self.connection().await?;
            let row = connection
                .query_opt(
                    SET_TENANT_STATUS,
                    &audit.after(&[&tenant_id, &status.as_str()]),
                )
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("setting tenant {tenant} {status}"))
                })?;
            row.as_ref().map(tenant_from_row).transpose()
        })
        .await
    }

    async fn rename_tenant(
        &self,
        tenant: TenantId,
        name: &TenantName,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let audit = AuditParams::new(audit);
            let mut connection = self.connection().await?;
            let row = connection
                .query_opt(RENAME_TENANT, &audit.after(&[&tenant_id, &name.as_str()]))
                .await
                .map_err(|err| self.failed(&err, format_args!("renaming tenant {tenant}")))?;
            row.as_ref().map(tenant_from_row).transpose()
        })
        .await
    }

    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyRecord>>> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let audit = AuditParams::new(audit);
            let failed = |err: tokio_postgres::Error| {
                self.failed(&err, format_args!("deleting tenant {tenant}"))
            };
            // A connection whose transaction did not end in a commit or
            // rollback here is left busy, so the pool drops it.
            let mut connection = self.connection().await?;
            let transaction = connection
                .borrow_client()
                .transaction()
                .await
                .map_err(failed)?;

            let deleted = transaction
                .query_opt(MARK_TENANT_DELETED, &audit.after(&[&tenant_id, &at]))
                .await
                .map_err(failed)?;
            if deleted.is_none() {
                transaction.rollback().await.map_err(failed)?;
                connection.release_client();
                return Ok(None);
            }
            let rows = transaction
                .query(REVOKE_TENANT_KEYS, &[&tenant_id, &at])
                .await
                .map_err(failed)?;
            let revoked = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
            transaction.commit().await.map_err(failed)?;
            connection.release_client();
            Ok(Some(revoked))
        })
        .await
    }

    async fn list_audit(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<AuditEntry>> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let (after, limit) = page_params(page);
            let mut connection = self.connection().await?;
            let rows = connection
                .query(SELECT_AUDIT, &[&tenant_id, &after, &limit])
                .await
                .map_err(|err| {
                    self.failed(
                        &err,
                        format_args!("listing audit entries of tenant {tenant}"),
                    )
                })?;
            rows.iter().map(audit_from_row).collect()
        })
        .await
    }

    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            let first = self.select_key_by_digest(&mut connection, digest).await;
            match self.retry_connection(connection, &first).await? {
                Some(mut connection) => self.select_key_by_digest(&mut connection, digest).await,
                None => first,
            }
        })
        .await
    }

    async fn key_and_tenant_by_digest(
        &self,
        digest: &KeyDigest,
    ) -> Result<Option<(KeyRecord, Option<Tenant>)>> {
        self.bounded(self.batched_key_and_tenant(*digest)).await
    }

    async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
        self.bounded(async {
            let id = tenant.as_uuid();
            let mut connection = self.connection().await?;
            let row = connection
                .query_opt(SELECT_TENANT_LIMITS, &[&id])
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("reading the limits of tenant {tenant}"))
                })?;
            let Some(row) = row else {
                return Ok(TenantLimits::default());
            };
            let rate: Option<i64> = column(&row, 0, "tenant rate")?;
            let period_ms: Option<i64> = column(&row, 1, "tenant period_ms")?;
            let burst: Option<i64> = column(&row, 2, "tenant burst")?;
            let shadow: Option<bool> = column(&row, 3, "tenant shadow")?;
            let quota: Option<i64> = column(&row, 4, "tenant monthly_quota")?;
            tenant_limits_of(rate, period_ms, burst, shadow, quota)
        })
        .await
    }

    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: &TenantLimits,
        audit: &AuditEntry,
    ) -> Result<()> {
        self.bounded(async {
            let id = tenant.as_uuid();
            let audit = AuditParams::new(audit);
            let limit = LimitParams::new(limits.limit.as_ref());
            let quota = limits
                .monthly_quota
                .map(|quota| i64::try_from(quota).unwrap_or(i64::MAX));
            let mut connection = self.connection().await?;
            let written = connection
                .execute(
                    UPSERT_TENANT_LIMITS,
                    &audit.after(&[
                        &id,
                        &limit.rate,
                        &limit.period_ms,
                        &limit.burst,
                        &limit.shadow,
                        &quota,
                    ]),
                )
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("writing the limits of tenant {tenant}"))
                })?;
            if written == 0 {
                return Err(Error::not_found("tenant", tenant));
            }
            Ok(())
        })
        .await
    }

    async fn key_limit(&self, key: KeyId) -> Result<Option<Limit>> {
        self.bounded(async {
            let id = key.as_uuid();
            let mut connection = self.connection().await?;
            let row = connection
                .query_opt(
                    "SELECT rate, period_ms, burst, shadow FROM key_limits WHERE key_id = $1",
                    &[&id],
                )
                .await
                .map_err(|err| self.failed(&err, format_args!("reading the limit of key {key}")))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let columns = LimitColumns {
                rate: column(&row, 0, "key rate")?,
                period_ms: column(&row, 1, "key period_ms")?,
                burst: column(&row, 2, "key burst")?,
                shadow: column(&row, 3, "key shadow")?,
            };
            columns.into_limit().map(Some)
        })
        .await
    }

    async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<KeyLimitWrite> {
        self.bounded(async {
            let key_id = key.as_uuid();
            let tenant_id = tenant.as_uuid();
            let audit = AuditParams::new(audit);
            let limit = LimitParams::new(limit);
            let mut connection = self.connection().await?;
            let found = connection
                .query_opt(
                    WRITE_KEY_LIMIT,
                    &audit.after(&[
                        &key_id,
                        &tenant_id,
                        &limit.rate,
                        &limit.period_ms,
                        &limit.burst,
                        &limit.shadow,
                    ]),
                )
                .await
                .map_err(|err| self.failed(&err, format_args!("writing the limit of key {key}")))?;
            let Some(row) = found else {
                return Ok(KeyLimitWrite::NotFound);
            };
            if column::<bool>(&row, 0, "revoked")? {
                Ok(KeyLimitWrite::Revoked)
            } else {
                Ok(KeyLimitWrite::Written)
            }
        })
        .await
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            let row = connection
                .query_opt("SELECT value FROM settings WHERE name = $1", &[&name])
                .await
                .map_err(|err| self.failed(&err, format_args!("reading setting {name:?}")))?;
            row.as_ref()
                .map(|row| column(row, 0, "setting value"))
                .transpose()
        })
        .await
    }

    async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.bounded(async {
            let mut connection = self.connection().await?;

            // Under READ COMMITTED, an INSERT that conflicts with a concurrent,
            // uncommitted insert waits for it, and the SELECT that follows takes
            // a new snapshot, so every replica reads the first writer's value.
            connection
                .execute(
                    "INSERT INTO settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                    &[&name, &value],
                )
                .await
                .map_err(|err| self.failed(&err, format_args!("initialising setting {name:?}")))?;
            let row = connection
                .query_one("SELECT value FROM settings WHERE name = $1", &[&name])
                .await
                .map_err(|err| self.failed(&err, format_args!("reading setting {name:?}")))?;
            column(&row, 0, "setting value")
        })
        .await
    }

    async fn record_key_uses(&self, uses: &[KeyUse]) -> Result<()> {
        let ids: Vec<Uuid> = uses.iter().map(|used| used.key_id.as_uuid()).collect();
        let times: Vec<OffsetDateTime> = uses.iter().map(|used| used.used_at).collect();
        self.bounded(async {
            let mut connection = self.connection().await?;
            connection
                .execute(RECORD_KEY_USES, &[&ids, &times])
                .await
                .map_err(|err| {
                    self.failed(
                        &err,
                        format_args!("recording the use of {} keys", ids.len()),
                    )
                })?;
            Ok(())
        })
        .await
    }

    async fn add_usage(&self, counts: &[UsageCount]) -> Result<()> {
        let tenants: Vec<Uuid> = counts.iter().map(|c| c.tenant_id.as_uuid()).collect();
        let hours: Vec<OffsetDateTime> = counts.iter().map(|c| c.hour).collect();
        let keys: Vec<Uuid> = counts.iter().map(|c| c.key_id.as_uuid()).collect();
        let accepted: Vec<i64> = counts.iter().map(|c| to_sql_count(c.accepted)).collect();
        let rejected: Vec<i64> = counts.iter().map(|c| to_sql_count(c.rejected)).collect();
        self.bounded(async {
            let mut connection = self.connection().await?;
            connection
                .execute(ADD_USAGE, &[&tenants, &hours, &keys, &accepted, &rejected])
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("adding {} usage counts", counts.len()))
                })?;
            Ok(())
        })
        .await
    }

    async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let mut connection = self.connection().await?;
            let rows = connection
                .query(SELECT_USAGE, &[&tenant_id, &range.from, &range.to])
                .await
                .map_err(|err| {
                    self.failed(&err, format_args!("reading usage of tenant {tenant}"))
                })?;
            rows.iter().map(usage_from_row).collect()
        })
        .await
    }

    async fn accepted_usage(&self, tenant: TenantId, range: UsageRange) -> Result<u64> {
        self.bounded(async {
            let tenant_id = tenant.as_uuid();
            let mut connection = self.connection().await?;
            let row = connection
                .query_one(SELECT_ACCEPTED_USAGE, &[&tenant_id, &range.from, &range.to])
                .await
                .map_err(|err| {
                    self.failed(
                        &err,
                        format_args!("reading accepted usage of tenant {tenant}"),
                    )
                })?;
            let accepted: i64 = column(&row, 0, "accepted usage")?;
            Ok(accepted.unsigned_abs())
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            connection
                .query_one("SELECT 1", &[])
                .await
                .map_err(|err| self.failed(&err, "pinging Postgres"))?;
            Ok(())
        })
        .await
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        Some(PoolStatus::new(
            self.pool.state(),
            self.options.pool_size,
            &self.pool_wait,
        ))
    }

    async fn key_events(&self, since: Option<OffsetDateTime>) -> Result<KeyEvents> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            let first = self.select_events(&mut connection, since).await;
            match self.retry_connection(connection, &first).await? {
                Some(mut connection) => self.select_events(&mut connection, since).await,
                None => first,
            }
        })
        .await
    }
}

/// Parses a Postgres URL. The error names what is wrong without the
/// password, which the URL may carry.
fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url).map_err(|err| {
        let redactor = Redactor::for_unparsed_url(url);
        Error::Config(format!(
            "invalid Postgres URL: {}; expected \
             postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            redactor.describe(&err)
        ))
    })
}
