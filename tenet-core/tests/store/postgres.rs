//! Postgres-only behaviour: migrations, options, error mapping and lost
//! connections.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tenet_core::{
    Error, KeyDigest, KeyEventKind, KeyId, KeyInfo, KeyMetadata, KeyRecord, PageRequest, Pepper,
    PostgresOptions, PostgresStore, Principal, Store, Tenant, TenantId, TenantName, TenantStatus,
    Tenet,
};
use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_postgres::config::{Config, Host};

use crate::cases::audit;
use crate::database::{TestSchema, database_url};
use crate::proxy::CuttingProxy;

const PASSWORD: &str = "zq9-Hunter2-secret";

/// Returns the current time truncated to milliseconds.
pub(crate) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond())
        .expect("a millisecond of the current time is valid")
}

pub(crate) fn tenant() -> Tenant {
    Tenant::new(
        TenantId::generate(),
        TenantName::parse("Acme").expect("valid name"),
        now(),
    )
}

pub(crate) fn key(tenant: TenantId) -> KeyRecord {
    let mut digest = [0u8; 32];
    getrandom::fill(&mut digest).expect("OS random source");
    KeyRecord {
        info: KeyInfo {
            id: KeyId::generate(),
            tenant_id: tenant,
            name: None,
            prefix: "tnt_AbCdEfGh".to_owned(),
            created_at: now(),
            revoked_at: None,
            expires_at: None,
            scopes: Vec::new(),
            metadata: KeyMetadata::default(),
            last_used_at: None,
            replaced_by: None,
        },
        digest: KeyDigest::from_bytes(digest),
    }
}

/// Waits until a statement in `schema` is blocked on a table lock and
/// returns the blocked backend's pid.
async fn blocked_backend(client: &Client, schema: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .query_opt(
                "SELECT l.pid FROM pg_locks l \
                 JOIN pg_class c ON c.oid = l.relation \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT l.granted AND n.nspname = $1 LIMIT 1",
                &[&schema],
            )
            .await
            .expect("pg_locks reads");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "no statement blocked on a lock in {schema} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Locks the settings table from another session until the transaction
/// ends, so that store statements on it block.
async fn lock_settings(client: &Client) {
    client
        .batch_execute("BEGIN; LOCK TABLE settings IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("settings table locks");
}

/// Returns how many backends run with `application_name`.
async fn backend_count(client: &Client, application_name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .expect("pg_stat_activity reads")
        .get(0)
}

/// Runs bursts of concurrent reads on `store` until every one of its
/// `pool_size` connections is open. The store's connections must carry
/// the schema's name as `application_name`.
async fn open_every_connection(store: &PostgresStore, schema: &TestSchema, pool_size: u32) {
    let client = schema.client().await;
    let expected = i64::from(pool_size);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reads = (0..pool_size * 4).map(|_| store.list_tenants(PageRequest::first(1)));
        for read in join_all(reads).await {
            read.expect("tenants list");
        }
        let open = backend_count(&client, schema.name()).await;
        if open == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the store opened {open} of {expected} connections within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Terminates every backend of `application_name` with
/// `pg_terminate_backend`, waiting up to 5 s for each to exit, and returns
/// how many exited.
async fn terminate_backends(client: &Client, application_name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
             FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application_name],
        )
        .await
        .expect("backends terminate")
        .get(0)
}

/// Returns a port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(schema.connect(schema.options()).await);
    }

    let runs: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|store| tokio::spawn(async move { store.migrate().await }))
        .collect();
    let mut applied = Vec::new();
    for run in runs {
        let versions = run.await.expect("task runs").expect("migrate succeeds");
        applied.extend(versions);
    }

    applied.sort_unstable();
    let expected: Vec<u32> = (1..=PostgresStore::SCHEMA_VERSION).collect();
    assert_eq!(applied, expected);
    let rows = schema
        .client()
        .await
        .query(
            "SELECT version, count(*) FROM tenet_schema_migrations GROUP BY version \
             ORDER BY version",
            &[],
        )
        .await
        .expect("migration table reads");
    let recorded: Vec<(i32, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let expected_rows: Vec<(i32, i64)> = expected
        .iter()
        .map(|&version| (i32::try_from(version).expect("small version"), 1))
        .collect();
    assert_eq!(recorded, expected_rows);
    let again = replicas[0].migrate().await.expect("migrate succeeds");
    assert_eq!(again, Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_rejects_newer_schema() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.migrated_store().await;
    let newer = i32::try_from(PostgresStore::SCHEMA_VERSION + 1).expect("small version");
    schema
        .client()
        .await
        .execute(
            "INSERT INTO tenet_schema_migrations (version) VALUES ($1)",
            &[&newer],
        )
        .await
        .expect("version row inserts");

    let migrated = store.migrate().await;

    let Err(Error::Config(message)) = migrated else {
        panic!("expected a configuration error, got {migrated:?}");
    };
    assert!(message.contains("newer"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_before_migrate_ask_for_migrations() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.connect(schema.options()).await;

    let listed = store.list_tenants(PageRequest::first(usize::MAX)).await;

    let Err(Error::Store(err)) = listed else {
        panic!("expected a store error, got {listed:?}");
    };
    assert!(err.to_string().contains("migrate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_isolated() {
    let (Some(first), Some(second)) = (TestSchema::create().await, TestSchema::create().await)
    else {
        return;
    };
    let first_store = first.migrated_store().await;
    let second_store = second.migrated_store().await;
    let tenant = tenant();

    first_store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");

    let in_first = first_store
        .list_tenants(PageRequest::first(usize::MAX))
        .await
        .expect("tenants list");
    let in_second = second_store
        .list_tenants(PageRequest::first(usize::MAX))
        .await
        .expect("tenants list");
    assert_eq!(in_first, vec![tenant]);
    assert!(in_second.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_events_record_issue_and_revoke() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.migrated_store().await;
    let tenant = tenant();
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");

    let start = store.key_events(None).await.expect("clock reads");
    let key = key(tenant.id);
    store
        .insert_key(&key, None, &audit(key.info.tenant_id))
        .await
        .expect("key inserts");
    store
        .revoke_key(
            tenant.id,
            key.info.id,
            key.info.created_at,
            &audit(tenant.id),
        )
        .await
        .expect("revoke runs")
        .expect("key exists");
    let batch = store
        .key_events(Some(start.now))
        .await
        .expect("events read");
    let later = store
        .key_events(Some(batch.now + Duration::from_secs(60)))
        .await
        .expect("events read");

    assert!(store.is_shared());
    assert!(start.events.is_empty());
    let kinds: Vec<_> = batch.events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, vec![KeyEventKind::Issued, KeyEventKind::Revoked]);
    assert!(batch.events.iter().all(|event| event.digest == key.digest));
    assert!(batch.events[0].seq < batch.events[1].seq);
    assert!(batch.now >= start.now);
    assert!(later.events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuing_prunes_day_old_key_events() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.migrated_store().await;
    let client = schema.client().await;
    client
        .batch_execute(
            "INSERT INTO key_events (digest, kind, at) VALUES \
             (decode(repeat('00', 32), 'hex'), 'revoked', now() - interval '25 hours'), \
             (decode(repeat('11', 32), 'hex'), 'revoked', now() - interval '23 hours')",
        )
        .await
        .expect("old events insert");
    let tenant = tenant();
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");

    store
        .insert_key(&key(tenant.id), None, &audit(tenant.id))
        .await
        .expect("key inserts");

    let rows = client
        .query(
            "SELECT encode(digest, 'hex'), kind FROM key_events ORDER BY seq",
            &[],
        )
        .await
        .expect("key events read");
    let remaining: Vec<(String, String)> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(remaining.len(), 2, "{remaining:?}");
    assert_eq!(remaining[0], ("11".repeat(32), "revoked".to_owned()));
    assert_eq!(remaining[1].1, "issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_on_init_setting() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let first: Arc<dyn Store> = Arc::new(schema.migrated_store().await);
    let second: Arc<dyn Store> = Arc::new(schema.connect(schema.options()).await);

    let (from_first, from_second) = tokio::join!(
        first.init_setting("pepper_fingerprint", b"first"),
        second.init_setting("pepper_fingerprint", b"second"),
    );

    let from_first = from_first.expect("init runs");
    let from_second = from_second.expect("init runs");
    assert_eq!(from_first, from_second);
    assert!(from_first == b"first" || from_first == b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_is_unavailable() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let store = schema
        .connect(PostgresOptions {
            statement_timeout: Duration::from_millis(200),
            ..schema.options()
        })
        .await;
    let locker = schema.client().await;
    lock_settings(&locker).await;

    let blocked = store.setting("pepper_fingerprint").await;

    let Err(Error::Unavailable(err)) = blocked else {
        panic!("expected the store to be unavailable, got {blocked:?}");
    };
    assert!(err.to_string().contains("statement_timeout"), "{err}");
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let unblocked = store.setting("pepper_fingerprint").await;
    assert_eq!(unblocked.ok(), Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connection_is_unavailable() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let store = schema
        .connect(PostgresOptions {
            pool_size: 1,
            statement_timeout: Duration::from_secs(30),
            ..schema.options()
        })
        .await;
    let locker = schema.client().await;
    lock_settings(&locker).await;

    let reader = store.clone();
    let blocked = tokio::spawn(async move { reader.setting("pepper_fingerprint").await });
    let pid = blocked_backend(&locker, schema.name()).await;
    locker
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("backend terminates");
    let result = blocked.await.expect("task runs");

    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let recovered = store.setting("pepper_fingerprint").await;
    assert_eq!(recovered.ok(), Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_is_unavailable() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let store = schema
        .connect(PostgresOptions {
            pool_size: 1,
            connect_timeout: Duration::from_millis(300),
            statement_timeout: Duration::from_secs(30),
            ..schema.options()
        })
        .await;
    let locker = schema.client().await;
    lock_settings(&locker).await;
    let reader = store.clone();
    let holder = tokio::spawn(async move { reader.setting("pepper_fingerprint").await });
    blocked_backend(&locker, schema.name()).await;

    let pinged = store.ping().await;

    let Err(Error::Unavailable(err)) = pinged else {
        panic!("expected the store to be unavailable, got {pinged:?}");
    };
    assert!(err.to_string().contains("busy"), "{err}");
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let held = holder.await.expect("task runs");
    assert_eq!(held.ok(), Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_unavailable_without_password() {
    let port = closed_port();
    let url = format!("postgres://tenet:{PASSWORD}@127.0.0.1:{port}/tenet");
    let options = PostgresOptions {
        connect_timeout: Duration::from_millis(500),
        ..PostgresOptions::default()
    };

    let connected = PostgresStore::connect(&url, options).await;

    let Err(Error::Unavailable(err)) = connected else {
        panic!("expected the store to be unavailable, got {connected:?}");
    };
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_echoing_password_is_redacted() {
    let Some(url) = database_url() else {
        return;
    };
    // A database named like the password makes the server's "does not
    // exist" message contain the password.
    let config: Config = url.parse().expect("test database URL parses");
    let Some(Host::Tcp(host)) = config.get_hosts().first() else {
        panic!("the test database URL must name a TCP host");
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let echoing_url = format!("postgres://{user}:{PASSWORD}@{host}:{port}/{PASSWORD}");
    let options = PostgresOptions {
        connect_timeout: Duration::from_millis(500),
        ..PostgresOptions::default()
    };

    let connected = PostgresStore::connect(&echoing_url, options).await;

    let Err(Error::Unavailable(err)) = connected else {
        panic!("expected the store to be unavailable, got {connected:?}");
    };
    let message = err.to_string();
    assert!(message.contains("does not exist"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_schema_is_named_at_connect() {
    let Some(url) = database_url() else {
        return;
    };
    // A name that no test creates, because test schemas start with
    // tenet_test_ and carry a UUID.
    let schema = format!("tenet_missing_{}", uuid::Uuid::now_v7().simple());
    let options = PostgresOptions {
        schema: Some(schema.clone()),
        pool_size: 1,
        ..PostgresOptions::default()
    };

    let connected = PostgresStore::connect(&url, options).await;

    let Err(Error::Config(message)) = connected else {
        panic!("expected a configuration error, got {connected:?}");
    };
    assert!(message.contains(&schema), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_url_is_config_error_without_password() {
    let url = format!("postgres://tenet:{PASSWORD}@127.0.0.1:not-a-port/tenet");

    let connected = PostgresStore::connect(&url, PostgresOptions::default()).await;

    let Err(Error::Config(message)) = connected else {
        panic!("expected a configuration error, got {connected:?}");
    };
    assert!(message.contains("port"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_changes_record_tenant_and_key_events() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.migrated_store().await;
    let tenant = tenant();
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");
    let key = key(tenant.id);
    store
        .insert_key(&key, None, &audit(tenant.id))
        .await
        .expect("key inserts");
    let start = store.key_events(None).await.expect("clock reads");

    for status in [TenantStatus::Suspended, TenantStatus::Active] {
        store
            .set_tenant_status(tenant.id, status, &audit(tenant.id))
            .await
            .expect("status update runs")
            .expect("tenant exists");
    }
    store
        .rename_tenant(
            tenant.id,
            &TenantName::parse("Renamed").expect("valid name"),
            &audit(tenant.id),
        )
        .await
        .expect("rename runs");
    store
        .delete_tenant(tenant.id, now(), &audit(tenant.id))
        .await
        .expect("delete runs")
        .expect("tenant exists");
    let batch = store
        .key_events(Some(start.now))
        .await
        .expect("events read");

    let tenants: Vec<TenantId> = batch
        .tenant_events
        .iter()
        .map(|event| event.tenant_id)
        .collect();
    assert_eq!(
        tenants,
        vec![tenant.id; 3],
        "suspend, resume and delete record events; a rename does not"
    );
    let kinds: Vec<_> = batch.events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, vec![KeyEventKind::Revoked]);
    assert_eq!(batch.events[0].digest, key.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_revokes_keys_issued_concurrently() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = Arc::new(schema.migrated_store().await);
    let tenant = tenant();
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");

    // Issues race the deletion; each either lands before it, and is then
    // revoked by it, or fails because the tenant is gone.
    let issuers: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .insert_key(&key(tenant.id), None, &audit(tenant.id))
                    .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    store
        .delete_tenant(tenant.id, now(), &audit(tenant.id))
        .await
        .expect("delete runs")
        .expect("tenant exists");
    for issuer in issuers {
        let issued = issuer.await.expect("task finished");
        assert!(
            matches!(issued, Ok(()) | Err(Error::NotFound { kind: "tenant", .. })),
            "{issued:?}"
        );
    }

    let keys = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    let live: Vec<_> = keys.iter().filter(|key| key.revoked_at.is_none()).collect();
    assert!(live.is_empty(), "keys left valid: {live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_succeeds_after_backends_terminated() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let pool_size = 3;
    let store = schema
        .connect_named(PostgresOptions {
            pool_size,
            ..schema.options()
        })
        .await;
    let pepper = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
    let tenet = Tenet::open(Arc::new(store.clone()), pepper)
        .await
        .expect("service opens");
    let tenant = tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created");
    let issued = tenet
        .issue_key(tenant.id, None)
        .await
        .expect("key is issued");
    open_every_connection(&store, &schema, pool_size).await;
    let client = schema.client().await;

    let terminated = terminate_backends(&client, schema.name()).await;
    let verified = tenet.verify(issued.api_key.expose_secret()).await;

    assert_eq!(terminated, i64::from(pool_size));
    let expected = Principal {
        tenant_id: tenant.id,
        key_id: issued.info.id,
    };
    assert!(
        matches!(&verified, Ok(principal) if *principal == expected),
        "{verified:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_poll_survives_terminated_backends() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let pool_size = 3;
    let store = schema
        .connect_named(PostgresOptions {
            pool_size,
            ..schema.options()
        })
        .await;
    let start = store.key_events(None).await.expect("clock reads");
    let tenant = tenant();
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");
    let key = key(tenant.id);
    store
        .insert_key(&key, None, &audit(tenant.id))
        .await
        .expect("key inserts");
    open_every_connection(&store, &schema, pool_size).await;
    let client = schema.client().await;

    let terminated = terminate_backends(&client, schema.name()).await;
    let polled = store.key_events(Some(start.now)).await;

    assert_eq!(terminated, i64::from(pool_size));
    let batch = polled.expect("key events read after the backends were terminated");
    let kinds: Vec<_> = batch.events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, vec![KeyEventKind::Issued]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_after_backends_terminated_recovers() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let pool_size = 3;
    let store = schema
        .connect_named(PostgresOptions {
            pool_size,
            ..schema.options()
        })
        .await;
    open_every_connection(&store, &schema, pool_size).await;
    let client = schema.client().await;
    let first = tenant();
    let second = tenant();

    let terminated = terminate_backends(&client, schema.name()).await;
    let written = store.insert_tenant(&first, &audit(first.id)).await;
    let next = store.insert_tenant(&second, &audit(second.id)).await;

    assert_eq!(terminated, i64::from(pool_size));
    match written {
        Ok(()) => {}
        Err(Error::Unavailable(err)) => {
            let message = err.to_string();
            assert!(
                message.contains(&format!("inserting tenant {}", first.id)),
                "{message}"
            );
            assert!(message.contains("connection was lost"), "{message}");
        }
        Err(err) => panic!("expected success or an unavailable store, got {err:?}"),
    }
    assert!(next.is_ok(), "{next:?}");
    let stored = store.tenant(second.id).await;
    assert_eq!(stored.ok(), Some(Some(second)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_call_drops_its_connection() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let store = schema
        .connect_named(PostgresOptions {
            pool_size: 1,
            statement_timeout: Duration::from_secs(30),
            ..schema.options()
        })
        .await;
    let locker = schema.client().await;
    lock_settings(&locker).await;

    // The read blocks on the lock until the timeout drops its future.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        store.setting("pepper_fingerprint"),
    )
    .await;
    let pinged = tokio::time::timeout(Duration::from_secs(5), store.ping()).await;
    let open = backend_count(&locker, schema.name()).await;
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");

    assert!(
        abandoned.is_err(),
        "the blocked read finished: {abandoned:?}"
    );
    assert!(
        matches!(pinged, Ok(Ok(()))),
        "a ping on the abandoned connection would wait behind the blocked read: {pinged:?}"
    );
    assert_eq!(
        open, 2,
        "the blocked backend and the ping's new one should both be open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reads_retry_on_lost_connection() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let direct = schema.migrated_store().await;
    let tenant = tenant();
    direct
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");
    let key = key(tenant.id);
    direct
        .insert_key(&key, None, &audit(tenant.id))
        .await
        .expect("key inserts");
    let proxy = CuttingProxy::start(schema.server_addr().await).await;
    // One connection, so that each read after a cut gets the cut one.
    let store = schema
        .connect_through(
            proxy.addr,
            PostgresOptions {
                pool_size: 1,
                ..schema.options()
            },
        )
        .await;

    proxy.cut();
    let found = store.key_by_digest(&key.digest).await;
    proxy.cut();
    let together = store.key_and_tenant_by_digest(&key.digest).await;
    proxy.cut();
    let read = store.tenant(tenant.id).await;
    proxy.cut();
    let polled = store.key_events(None).await;

    let found = found.expect("key lookup retries");
    assert_eq!(found.map(|record| record.info.id), Some(key.info.id));
    let (record, owner) = together
        .expect("joined lookup retries")
        .expect("key is found");
    assert_eq!(record.info.id, key.info.id);
    assert_eq!(owner, Some(tenant.clone()));
    assert_eq!(read.ok(), Some(Some(tenant)));
    assert!(polled.is_ok(), "{polled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_lost_connection_is_not_retried() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    schema.migrated_store().await;
    let proxy = CuttingProxy::start(schema.server_addr().await).await;
    let store = schema
        .connect_through(
            proxy.addr,
            PostgresOptions {
                pool_size: 1,
                ..schema.options()
            },
        )
        .await;
    let first = tenant();
    let second = tenant();

    proxy.cut();
    let written = store.insert_tenant(&first, &audit(first.id)).await;
    let next = store.insert_tenant(&second, &audit(second.id)).await;

    let Err(Error::Unavailable(err)) = written else {
        panic!("expected the store to be unavailable, got {written:?}");
    };
    let message = err.to_string();
    assert!(
        message.contains(&format!("inserting tenant {}", first.id)),
        "{message}"
    );
    assert!(message.contains("connection was lost"), "{message}");
    assert!(next.is_ok(), "{next:?}");
    let unwritten = store.tenant(first.id).await;
    assert_eq!(unwritten.ok(), Some(None), "the lost write ran again");
}
