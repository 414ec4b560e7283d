//! Postgres key lookups that share statements: results per caller, the
//! batch bound, lost connections and dropped callers.
//!
//! The tests make batches deterministic by holding a lock on `api_keys`
//! from another session. The first lookup's statement blocks on it, so
//! every lookup started meanwhile queues, and the queued lookups go
//! together once the lock is released.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tenet_core::{
    Error, KeyDigest, KeyId, KeyRecord, MemoryStore, Pepper, PostgresOptions, PostgresStore,
    Principal, Rejection, Result, Store, Tenant, TenantName, TenantStatus, Tenet,
};
use tokio_postgres::Client;

use crate::cases::audit;
use crate::database::TestSchema;
use crate::postgres::{key, now, tenant};

type Found = Option<(KeyRecord, Option<Tenant>)>;
type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Found>> + Send + 'a>>;

/// Keys in every state a lookup can find, and digests that find nothing.
struct Fixture {
    /// Digests to look up, with repeats, in the order the lookups start.
    digests: Vec<KeyDigest>,
    /// What a lookup of each digest, alone, returned.
    expected: Vec<Found>,
}

impl Fixture {
    /// Stores keys of an active, a suspended and a deleted tenant, one of
    /// them revoked, and returns `count` lookups that cycle through them and
    /// through unknown digests.
    async fn create(store: &PostgresStore, count: usize) -> Self {
        let active = insert_tenant(store).await;
        let suspended = insert_tenant(store).await;
        let deleted = insert_tenant(store).await;
        let mut stored = Vec::new();
        for tenant in [&active, &active, &active, &suspended, &deleted] {
            let key = key(tenant.id);
            store
                .insert_key(&key, None, &audit(tenant.id))
                .await
                .expect("key inserts");
            stored.push(key.digest);
        }
        store
            .revoke_key(
                active.id,
                stored_key_id(store, stored[2]).await,
                now(),
                &audit(active.id),
            )
            .await
            .expect("revoke runs")
            .expect("key exists");
        store
            .set_tenant_status(suspended.id, TenantStatus::Suspended, &audit(suspended.id))
            .await
            .expect("status update runs")
            .expect("tenant exists");
        store
            .delete_tenant(deleted.id, now(), &audit(deleted.id))
            .await
            .expect("delete runs")
            .expect("tenant exists");
        let unknown: Vec<KeyDigest> = (0..3).map(|_| key(active.id).digest).collect();

        let kinds: Vec<KeyDigest> = stored.iter().chain(&unknown).copied().collect();
        let digests: Vec<KeyDigest> = (0..count).map(|i| kinds[i % kinds.len()]).collect();
        let mut expected = Vec::with_capacity(count);
        for digest in &digests {
            let found = store
                .key_and_tenant_by_digest(digest)
                .await
                .expect("a lookup alone runs");
            expected.push(found);
        }
        Self { digests, expected }
    }

    /// Checks each result against the lookup of its digest alone.
    fn check(&self, results: &[Result<Found>]) {
        self.check_from(0, results);
    }

    /// Checks the results of the lookups from the `first`-th on.
    fn check_from(&self, first: usize, results: &[Result<Found>]) {
        assert_eq!(first + results.len(), self.digests.len());
        let expected = &self.expected[first..];
        for (offset, (result, expected)) in results.iter().zip(expected).enumerate() {
            let index = first + offset;
            let found = result
                .as_ref()
                .unwrap_or_else(|err| panic!("lookup {index} failed: {err}"));
            assert_eq!(found, expected, "lookup {index}");
        }
    }
}

async fn insert_tenant(store: &PostgresStore) -> Tenant {
    let tenant = tenant();
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");
    tenant
}

async fn stored_key_id(store: &PostgresStore, digest: KeyDigest) -> KeyId {
    store
        .key_by_digest(&digest)
        .await
        .expect("key reads")
        .expect("key exists")
        .info
        .id
}

/// Connects a store whose backends carry the schema's name as
/// `application_name`, with a migrated schema.
///
/// Its statement timeout is a minute rather than the default 5 s, because
/// the tests hold the lock on `api_keys` while they find and terminate
/// backends, which can take longer than 5 s on a loaded machine.
async fn named_store(schema: &TestSchema, pool_size: u32) -> PostgresStore {
    schema.migrated_store().await;
    schema
        .connect_named(PostgresOptions {
            pool_size,
            statement_timeout: Duration::from_secs(60),
            ..schema.options()
        })
        .await
}

/// Starts a transaction on `client` that holds an exclusive lock on
/// `api_keys`, so that every key lookup blocks until it ends.
async fn lock_keys(client: &Client) {
    client
        .batch_execute("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("api_keys locks");
}

/// Waits until a backend of `application_name` other than those in
/// `except` waits for a lock while running a statement that contains
/// `text`, and returns its pid.
async fn blocked_lookup(
    client: &Client,
    application_name: &str,
    text: &str,
    except: &[i32],
) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock' AND position($2 in query) > 0",
                &[&application_name, &text],
            )
            .await
            .expect("pg_stat_activity reads");
        let pid = rows
            .iter()
            .map(|row| row.get::<_, i32>(0))
            .find(|pid| !except.contains(pid));
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no lookup containing {text:?} blocked on a lock within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Cancels the statement that backend `pid` runs, which fails it without
/// closing the connection.
async fn cancel(client: &Client, pid: i32) {
    let row = client
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .await
        .expect("cancel request runs");
    assert!(row.get::<_, bool>(0), "backend {pid} got no cancel request");
}

async fn terminate(client: &Client, pid: i32) {
    let row = client
        .query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid])
        .await
        .expect("backend terminates");
    assert!(
        row.get::<_, bool>(0),
        "backend {pid} did not exit within 5 s"
    );
}

/// Starts a lookup of `digest` in a task of its own and waits until its
/// statement blocks on the lock, as `observer`'s session reports, so that the
/// lookups started after it queue behind it.
async fn blocked_leader(
    store: &PostgresStore,
    schema: &TestSchema,
    observer: &Client,
    digest: KeyDigest,
) -> (tokio::task::JoinHandle<Result<Found>>, i32) {
    let leader = {
        let store = store.clone();
        tokio::spawn(async move { store.key_and_tenant_by_digest(&digest).await })
    };
    let pid = blocked_lookup(observer, schema.name(), "api_keys", &[]).await;
    (leader, pid)
}

/// Creates a lookup per digest and polls each once, which queues it behind
/// the blocked leader. None can finish yet.
async fn queue_lookups<'a>(store: &'a PostgresStore, digests: &'a [KeyDigest]) -> Vec<Lookup<'a>> {
    let mut lookups: Vec<Lookup<'a>> = digests
        .iter()
        .map(|digest| store.key_and_tenant_by_digest(digest))
        .collect();
    poll_fn(|cx| {
        for (index, lookup) in lookups.iter_mut().enumerate() {
            assert!(
                lookup.as_mut().poll(cx).is_pending(),
                "lookup {index} finished while the leader was blocked"
            );
        }
        Poll::Ready(())
    })
    .await;
    lookups
}

/// The lookups queued behind a leader, which run as one batch.
type Queued<'a> = Pin<Box<futures_util::future::JoinAll<Lookup<'a>>>>;

/// Blocks a leader's lookup of the fixture's first digest on the lock that
/// the caller holds, queues the other lookups behind it, and cancels the
/// leader's statement. The lead passes to the oldest queued lookup, whose
/// batch of all the others blocks on the same lock.
///
/// Returns the batch's backend, the leader's result and the queued
/// lookups. Cancelling the leader, rather than letting it finish, keeps
/// the lock held throughout: a second locker queued behind the leader
/// would race it, because Postgres may release and retake a statement's
/// locks when it replans the statement after an invalidation.
async fn blocked_batch<'a>(
    store: &'a PostgresStore,
    schema: &TestSchema,
    observer: &Client,
    fixture: &'a Fixture,
) -> (i32, Result<Found>, Queued<'a>) {
    let (leader, leader_pid) = blocked_leader(store, schema, observer, fixture.digests[0]).await;
    let queued = queue_lookups(store, &fixture.digests[1..]).await;
    let mut queued = Box::pin(join_all(queued));
    cancel(observer, leader_pid).await;
    let leader_result = leader.await.expect("leader task runs");

    let batch = tokio::select! {
        _ = &mut queued => panic!("the batch finished while the table was locked"),
        pid = blocked_lookup(observer, schema.name(), "unnest", &[]) => pid,
    };
    (batch, leader_result, queued)
}

/// Terminates the backend of the blocked `batch` statement, and returns
/// the backend of the statement that retries it once that blocks too.
async fn terminate_for_retry(
    observer: &Client,
    schema: &TestSchema,
    batch: i32,
    queued: &mut Queued<'_>,
) -> i32 {
    terminate(observer, batch).await;
    let terminated = [batch];
    tokio::select! {
        _ = queued => panic!("the retry finished while the table was locked"),
        pid = blocked_lookup(observer, schema.name(), "unnest", &terminated) => pid,
    }
}

/// Asserts that `result` is the failure of a cancelled statement.
fn assert_cancelled(result: &Result<Found>) {
    let Err(Error::Unavailable(err)) = result else {
        panic!("expected a cancelled lookup, got {result:?}");
    };
    assert!(err.to_string().contains("canceling statement"), "{err}");
}

/// Polls `lookups`, none of which may finish, until a statement that
/// contains `text` from a backend not in `except` blocks on a lock, and
/// returns that backend's pid.
async fn drive_until_blocked(
    lookups: &mut [Lookup<'_>],
    observer: &Client,
    schema: &TestSchema,
    text: &str,
    except: &[i32],
) -> i32 {
    let pending = poll_fn(|cx| {
        for (index, lookup) in lookups.iter_mut().enumerate() {
            assert!(
                lookup.as_mut().poll(cx).is_pending(),
                "lookup {index} finished while the table was locked"
            );
        }
        Poll::<()>::Pending
    });
    tokio::select! {
        () = pending => unreachable!("the polling future never finishes"),
        pid = blocked_lookup(observer, schema.name(), text, except) => pid,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_lookups_share_statements() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 2).await;
    let fixture = Fixture::create(&store, 150).await;
    let locker = schema.client().await;
    lock_keys(&locker).await;
    let before = store.key_lookup_stats();

    let (leader, _) = blocked_leader(&store, &schema, &locker, fixture.digests[0]).await;
    let queued = queue_lookups(&store, &fixture.digests[1..]).await;
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let mut results = vec![leader.await.expect("leader task runs")];
    results.extend(join_all(queued).await);

    fixture.check(&results);
    let after = store.key_lookup_stats();
    assert_eq!(after.lookups - before.lookups, 150);
    // The leader's statement, then 149 queued lookups in batches of at
    // most 64: 64, 64 and 21.
    assert_eq!(after.batches - before.batches, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_verifications_get_their_own_verdicts() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 2).await;
    let pepper = Pepper::from_config(&Pepper::generate_config()).expect("valid pepper");
    let tenet = Tenet::open(Arc::new(store.clone()), pepper)
        .await
        .expect("service opens");
    let name = |text: &str| TenantName::parse(text).expect("valid name");
    let active = tenet
        .create_tenant(name("Acme"))
        .await
        .expect("tenant is created");
    let suspended = tenet
        .create_tenant(name("Globex"))
        .await
        .expect("tenant is created");
    let deleted = tenet
        .create_tenant(name("Initech"))
        .await
        .expect("tenant is created");
    let mut keys = Vec::new();
    for tenant in [&active, &active, &active, &suspended, &deleted] {
        keys.push(
            tenet
                .issue_key(tenant.id, None)
                .await
                .expect("key is issued"),
        );
    }
    tenet
        .revoke_key(active.id, keys[2].info.id)
        .await
        .expect("key is revoked");
    tenet
        .suspend_tenant(suspended.id)
        .await
        .expect("tenant is suspended");
    tenet
        .delete_tenant(deleted.id)
        .await
        .expect("tenant is deleted");
    // A well-formed key that this store never issued.
    let elsewhere = Tenet::open(
        Arc::new(MemoryStore::new()),
        Pepper::from_config(&Pepper::generate_config()).expect("valid pepper"),
    )
    .await
    .expect("service opens");
    let other = elsewhere
        .create_tenant(name("Other"))
        .await
        .expect("tenant is created");
    let unknown = elsewhere
        .issue_key(other.id, None)
        .await
        .expect("key is issued");
    let mut presented: Vec<String> = keys
        .iter()
        .map(|key| key.api_key.expose_secret().to_owned())
        .collect();
    presented.push(unknown.api_key.expose_secret().to_owned());
    let principal = |index: usize| Principal {
        tenant_id: keys[index].info.tenant_id,
        key_id: keys[index].info.id,
    };
    let expected: Vec<std::result::Result<Principal, Rejection>> = vec![
        Ok(principal(0)),
        Ok(principal(1)),
        Err(Rejection::Revoked),
        Err(Rejection::TenantSuspended {
            tenant: suspended.id,
        }),
        Err(Rejection::Revoked),
        Err(Rejection::Unknown),
    ];
    let before = store.key_lookup_stats();

    let tasks: Vec<_> = (0..240)
        .map(|i| {
            let tenet = tenet.clone();
            let key = presented[i % presented.len()].clone();
            tokio::spawn(async move { tenet.verify(&key).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("verification task runs"));
    }

    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = &expected[i % expected.len()];
        match (outcome, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "verification {i}"),
            (Err(Error::Rejected(got)), Err(want)) => assert_eq!(got, want, "verification {i}"),
            (got, want) => panic!("verification {i}: expected {want:?}, got {got:?}"),
        }
    }
    let after = store.key_lookup_stats();
    assert_eq!(after.lookups - before.lookups, 240);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_retries_once_when_its_backend_is_terminated() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 4).await;
    let fixture = Fixture::create(&store, 20).await;
    let locker = schema.client().await;
    let observer = schema.client().await;
    lock_keys(&locker).await;

    let (batch, leader_result, mut queued) =
        blocked_batch(&store, &schema, &observer, &fixture).await;
    let retry = terminate_for_retry(&observer, &schema, batch, &mut queued).await;
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let results = queued.await;

    assert_ne!(batch, retry);
    assert_cancelled(&leader_result);
    fixture.check_from(1, &results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_fails_every_lookup_in_it() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 4).await;
    let fixture = Fixture::create(&store, 20).await;
    let locker = schema.client().await;
    let observer = schema.client().await;
    lock_keys(&locker).await;

    // Both the batch's statement and its retry lose their backend.
    let (batch, leader_result, mut queued) =
        blocked_batch(&store, &schema, &observer, &fixture).await;
    let retry = terminate_for_retry(&observer, &schema, batch, &mut queued).await;
    terminate(&observer, retry).await;
    let results = queued.await;
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let later = store.key_and_tenant_by_digest(&fixture.digests[1]).await;

    assert_cancelled(&leader_result);
    assert_eq!(results.len(), 19);
    for (index, result) in results.iter().enumerate() {
        let Err(Error::Unavailable(err)) = result else {
            panic!("lookup {index}: expected an unavailable store, got {result:?}");
        };
        assert!(err.to_string().contains("connection was lost"), "{err}");
    }
    assert_eq!(later.ok().as_ref(), Some(&fixture.expected[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_leader_and_waiters_stall_nobody() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 4).await;
    let fixture = Fixture::create(&store, 30).await;
    let locker = schema.client().await;
    let observer = schema.client().await;
    lock_keys(&locker).await;

    let (leader, leader_pid) = blocked_leader(&store, &schema, &observer, fixture.digests[0]).await;
    let dropped = queue_lookups(&store, &fixture.digests[1..10]).await;
    let kept = queue_lookups(&store, &fixture.digests[10..]).await;
    // Callers that leave while queued, then the leader mid-statement. The
    // lead passes over the callers that left to the first kept one.
    drop(dropped);
    leader.abort();
    assert!(leader.await.is_err_and(|err| err.is_cancelled()));
    let mut kept = std::pin::pin!(join_all(kept));
    let aborted = [leader_pid];
    let batch = tokio::select! {
        _ = &mut kept => panic!("the batch finished while the table was locked"),
        pid = blocked_lookup(&observer, schema.name(), "unnest", &aborted) => pid,
    };
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let results = tokio::time::timeout(Duration::from_secs(10), kept)
        .await
        .expect("the kept lookups finish");

    assert_ne!(batch, leader_pid);
    assert_eq!(results.len(), 20);
    for (offset, result) in results.iter().enumerate() {
        let index = offset + 10;
        let found = result
            .as_ref()
            .unwrap_or_else(|err| panic!("lookup {index} failed: {err}"));
        assert_eq!(found, &fixture.expected[index], "lookup {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_passes_on_from_a_caller_dropped_before_its_turn() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 2).await;
    let fixture = Fixture::create(&store, 10).await;
    let locker = schema.client().await;
    lock_keys(&locker).await;

    let (leader, _) = blocked_leader(&store, &schema, &locker, fixture.digests[0]).await;
    let mut queued = queue_lookups(&store, &fixture.digests[1..]).await;
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    // The leader finishes and hands the lead to the oldest queued lookup,
    // which is dropped before it is polled again.
    let leader_result = leader.await.expect("leader task runs");
    drop(queued.remove(0));
    let results = tokio::time::timeout(Duration::from_secs(10), join_all(queued))
        .await
        .expect("the other lookups finish");

    let mut all = vec![leader_result];
    all.extend(results);
    let expected = Fixture {
        digests: [&fixture.digests[..1], &fixture.digests[2..]].concat(),
        expected: [&fixture.expected[..1], &fixture.expected[2..]].concat(),
    };
    expected.check(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_batch_leader_requeues_its_lookups() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = named_store(&schema, 4).await;
    let fixture = Fixture::create(&store, 12).await;
    let locker = schema.client().await;
    let observer = schema.client().await;
    lock_keys(&locker).await;

    // The first leader blocks, and a batch of the others forms behind it.
    let (leader, leader_pid) = blocked_leader(&store, &schema, &observer, fixture.digests[0]).await;
    let mut queued = queue_lookups(&store, &fixture.digests[1..]).await;
    leader.abort();
    assert!(leader.await.is_err_and(|err| err.is_cancelled()));
    let mut seen = vec![leader_pid];
    let first_batch = drive_until_blocked(&mut queued, &observer, &schema, "unnest", &seen).await;
    seen.push(first_batch);
    // The batch's leader, the oldest queued lookup, leaves mid-statement.
    // The lookups it carried go back to the queue, and the next oldest
    // sends them again.
    drop(queued.remove(0));
    let second_batch = drive_until_blocked(&mut queued, &observer, &schema, "unnest", &seen).await;
    locker
        .batch_execute("ROLLBACK")
        .await
        .expect("lock releases");
    let results = tokio::time::timeout(Duration::from_secs(10), join_all(queued))
        .await
        .expect("the requeued lookups finish");

    assert_ne!(first_batch, second_batch);
    let expected = Fixture {
        digests: fixture.digests[2..].to_vec(),
        expected: fixture.expected[2..].to_vec(),
    };
    expected.check(&results);
}
