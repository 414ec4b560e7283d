//! Key metadata, `last_used_at` and usage metering, on every backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tenet_core::ratelimit::{LocalQuota, Mode, QuotaMonth};
use tenet_core::{
    AuditEntry, CacheOptions, Error, IssuedKey, KeyDigest, KeyEvents, KeyId, KeyInfo,
    KeyLimitWrite, KeyMetadata, KeyOptions, KeyRecord, KeyUse, Limit, PageRequest, Pepper,
    Rejection, Result, Rotation, Scope, Store, Tenant, TenantId, TenantLimits, TenantName,
    TenantStatus, Tenet, UsageCount, UsageRange,
};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::backend::TestStore;

fn pepper() -> Pepper {
    Pepper::from_config(&Pepper::generate_config()).expect("generated pepper is valid")
}

/// A store that counts the batch writes of key uses and usage counts and
/// the reads of keys by digest, and forwards every call to the wrapped
/// store, after `key_read_delay` for a read by digest.
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn Store>,
    key_use_writes: AtomicUsize,
    key_uses_written: AtomicUsize,
    usage_writes: AtomicUsize,
    pub(crate) key_reads: AtomicUsize,
    key_read_delay: Duration,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self::with_key_read_delay(inner, Duration::ZERO)
    }

    pub(crate) fn with_key_read_delay(inner: Arc<dyn Store>, key_read_delay: Duration) -> Self {
        Self {
            inner,
            key_use_writes: AtomicUsize::new(0),
            key_uses_written: AtomicUsize::new(0),
            usage_writes: AtomicUsize::new(0),
            key_reads: AtomicUsize::new(0),
            key_read_delay,
        }
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn insert_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> Result<()> {
        self.inner.insert_tenant(tenant, audit).await
    }
    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.inner.tenant(id).await
    }
    async fn list_tenants(&self, page: PageRequest) -> Result<Vec<Tenant>> {
        self.inner.list_tenants(page).await
    }
    async fn insert_key(
        &self,
        key: &KeyRecord,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<()> {
        self.inner.insert_key(key, limit, audit).await
    }
    async fn list_keys(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<KeyInfo>> {
        self.inner.list_keys(tenant, page).await
    }
    async fn revoke_key(
        &self,
        tenant: TenantId,
        key: KeyId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<KeyRecord>> {
        self.inner.revoke_key(tenant, key, at, audit).await
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
        self.inner
            .rotate_key(tenant, key, replacement, replacement_limit, rotation, audit)
            .await
    }
    async fn set_tenant_status(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        self.inner.set_tenant_status(tenant, status, audit).await
    }
    async fn rename_tenant(
        &self,
        tenant: TenantId,
        name: &TenantName,
        audit: &AuditEntry,
    ) -> Result<Option<Tenant>> {
        self.inner.rename_tenant(tenant, name, audit).await
    }
    async fn delete_tenant(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<KeyRecord>>> {
        self.inner.delete_tenant(tenant, at, audit).await
    }
    async fn list_audit(&self, tenant: TenantId, page: PageRequest) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(tenant, page).await
    }
    async fn key_by_digest(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>> {
        self.key_reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.key_read_delay).await;
        self.inner.key_by_digest(digest).await
    }
    async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
        self.inner.tenant_limits(tenant).await
    }
    async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: &TenantLimits,
        audit: &AuditEntry,
    ) -> Result<()> {
        self.inner.set_tenant_limits(tenant, limits, audit).await
    }
    async fn key_limit(&self, key: KeyId) -> Result<Option<Limit>> {
        self.inner.key_limit(key).await
    }
    async fn set_key_limit(
        &self,
        tenant: TenantId,
        key: KeyId,
        limit: Option<&Limit>,
        audit: &AuditEntry,
    ) -> Result<KeyLimitWrite> {
        self.inner.set_key_limit(tenant, key, limit, audit).await
    }
    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.setting(name).await
    }
    async fn init_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.inner.init_setting(name, value).await
    }
    async fn record_key_uses(&self, uses: &[KeyUse]) -> Result<()> {
        self.key_use_writes.fetch_add(1, Ordering::SeqCst);
        self.key_uses_written
            .fetch_add(uses.len(), Ordering::SeqCst);
        self.inner.record_key_uses(uses).await
    }
    async fn add_usage(&self, counts: &[UsageCount]) -> Result<()> {
        self.usage_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.add_usage(counts).await
    }
    async fn usage(&self, tenant: TenantId, range: UsageRange) -> Result<Vec<UsageCount>> {
        self.inner.usage(tenant, range).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn key_events(&self, since: Option<OffsetDateTime>) -> Result<KeyEvents> {
        self.inner.key_events(since).await
    }
}

async fn create_tenant(tenet: &Tenet) -> TenantId {
    tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created")
        .id
}

async fn issue(tenet: &Tenet, tenant: TenantId, scopes: &[&str]) -> IssuedKey {
    let options = KeyOptions {
        scopes: Scope::parse_list(scopes).expect("valid scopes"),
        ..KeyOptions::default()
    };
    tenet
        .issue_key_with(tenant, options)
        .await
        .expect("key is issued")
}

async fn listed(tenet: &Tenet, tenant: TenantId, key: KeyId) -> KeyInfo {
    tenet
        .list_keys(tenant)
        .await
        .expect("keys list")
        .into_iter()
        .find(|info| info.id == key)
        .expect("the key is listed")
}

/// Returns the range of the current UTC hour and the next one, which
/// contains every count recorded during the test.
fn this_hour() -> UsageRange {
    let now = OffsetDateTime::now_utc();
    let hour = now
        .replace_minute(0)
        .and_then(|at| at.replace_second(0))
        .and_then(|at| at.replace_nanosecond(0))
        .expect("the start of the hour is valid");
    UsageRange::new(
        hour - Duration::from_secs(3600),
        hour + Duration::from_secs(7200),
    )
    .expect("a three-hour range is valid")
}

/// Sums the accepted and rejected counts of one key.
fn totals_of(counts: &[UsageCount], key: KeyId) -> (u64, u64) {
    counts
        .iter()
        .filter(|count| count.key_id == key)
        .fold((0, 0), |(accepted, rejected), count| {
            (accepted + count.accepted, rejected + count.rejected)
        })
}

pub async fn metadata_round_trips_and_survives_rotation(backend: &TestStore) {
    let tenet = Tenet::open(backend.store(), pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let metadata = json!({"owner": "billing", "ticket": 42, "tags": ["a", "b"]});
    let options = KeyOptions {
        metadata: KeyMetadata::parse(metadata.clone()).expect("valid metadata"),
        ..KeyOptions::default()
    };

    let issued = tenet
        .issue_key_with(tenant, options)
        .await
        .expect("key is issued");
    let plain = issue(&tenet, tenant, &[]).await;
    let rotated = tenet
        .rotate_key(tenant, issued.info.id, Duration::ZERO)
        .await
        .expect("key rotates");

    let stored = listed(&tenet, tenant, issued.info.id).await;
    let replacement = listed(&tenet, tenant, rotated.issued.info.id).await;
    let without = listed(&tenet, tenant, plain.info.id).await;
    assert_eq!(
        serde_json::to_value(&stored.metadata).ok(),
        Some(metadata.clone())
    );
    assert_eq!(
        serde_json::to_value(&replacement.metadata).ok(),
        Some(metadata)
    );
    assert!(without.metadata.is_empty());
}

pub async fn last_used_never_moves_backwards(backend: &TestStore) {
    let store = backend.store();
    let tenet = Tenet::open(Arc::clone(&store), pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let key = issue(&tenet, tenant, &[]).await.info.id;
    let newer = datetime!(2026-12-04 12:00:00.250 UTC);
    let older = datetime!(2026-12-04 11:00 UTC);

    store
        .record_key_uses(&[KeyUse {
            key_id: key,
            used_at: newer,
        }])
        .await
        .expect("first use is written");
    store
        .record_key_uses(&[
            KeyUse {
                key_id: key,
                used_at: older,
            },
            KeyUse {
                key_id: KeyId::generate(),
                used_at: newer,
            },
        ])
        .await
        .expect("an older use and an unknown key are accepted");

    assert_eq!(listed(&tenet, tenant, key).await.last_used_at, Some(newer));
}

pub async fn key_uses_coalesce_into_one_write(backend: &TestStore) {
    key_uses_coalesce(backend, None).await;
}

/// With a cache, uses are recorded in the cache entries rather than in the
/// recorder's map; the outcome must be the same.
pub async fn key_uses_coalesce_with_a_cache(backend: &TestStore) {
    key_uses_coalesce(backend, Some(CacheOptions::default())).await;
}

async fn key_uses_coalesce(backend: &TestStore, cache: Option<CacheOptions>) {
    let store = Arc::new(CountingStore::new(backend.store()));
    let mut builder = Tenet::builder(Arc::clone(&store) as Arc<dyn Store>, pepper());
    if let Some(cache) = cache {
        builder = builder.cache(cache);
    }
    let tenet = builder.build().await.expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let first = issue(&tenet, tenant, &[]).await;
    let second = issue(&tenet, tenant, &[]).await;
    let unused = issue(&tenet, tenant, &[]).await;
    let before = OffsetDateTime::now_utc() - Duration::from_secs(1);

    for _ in 0..50 {
        tenet
            .verify(first.api_key.expose_secret())
            .await
            .expect("first key verifies");
        tenet
            .verify(second.api_key.expose_secret())
            .await
            .expect("second key verifies");
    }
    let unflushed = listed(&tenet, tenant, first.info.id).await;
    let written = tenet.flush_key_uses().await.expect("key uses are written");
    let again = tenet.flush_key_uses().await.expect("nothing is left");

    assert_eq!(unflushed.last_used_at, None, "no write before the flush");
    assert_eq!(written, 2);
    assert_eq!(again, 0);
    assert_eq!(store.key_use_writes.load(Ordering::SeqCst), 1);
    assert_eq!(store.key_uses_written.load(Ordering::SeqCst), 2);
    let used = listed(&tenet, tenant, first.info.id).await.last_used_at;
    assert!(used.is_some_and(|at| at >= before), "{used:?}");
    let never = listed(&tenet, tenant, unused.info.id).await;
    assert_eq!(never.last_used_at, None);
}

pub async fn usage_totals_match_after_flush(backend: &TestStore) {
    let store = Arc::new(CountingStore::new(backend.store()));
    let tenet = Tenet::open(Arc::clone(&store) as Arc<dyn Store>, pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let busy = issue(&tenet, tenant, &["billing:read"]).await;
    let revoked = issue(&tenet, tenant, &[]).await;
    tenet
        .revoke_key(tenant, revoked.info.id)
        .await
        .expect("key is revoked");
    let stranger = tenet_core::ApiKey::generate();

    for _ in 0..7 {
        tenet
            .verify_metered(busy.api_key.expose_secret(), &["billing:read"])
            .await
            .expect("busy key verifies");
    }
    for _ in 0..3 {
        let missing = tenet
            .verify_metered(busy.api_key.expose_secret(), &["billing:write"])
            .await;
        assert!(matches!(
            missing,
            Err(Error::Rejected(Rejection::MissingScope))
        ));
    }
    for _ in 0..2 {
        let rejected = tenet
            .verify_metered(revoked.api_key.expose_secret(), &[])
            .await;
        assert!(matches!(rejected, Err(Error::Rejected(Rejection::Revoked))));
        let unknown = tenet.verify_metered(stranger.expose_secret(), &[]).await;
        assert!(matches!(unknown, Err(Error::Rejected(Rejection::Unknown))));
    }
    let before_flush = tenet.usage(tenant, this_hour()).await.expect("usage reads");
    tenet.flush_usage().await.expect("usage is written");
    let counts = tenet.usage(tenant, this_hour()).await.expect("usage reads");

    assert!(
        before_flush.is_empty(),
        "nothing is stored before the flush"
    );
    assert_eq!(store.usage_writes.load(Ordering::SeqCst), 1);
    assert_eq!(totals_of(&counts, busy.info.id), (7, 3));
    assert_eq!(totals_of(&counts, revoked.info.id), (0, 2));
    assert_eq!(counts.len(), 2, "unknown keys are not counted: {counts:?}");
}

pub async fn usage_adds_to_stored_rows(backend: &TestStore) {
    let store = backend.store();
    let tenet = Tenet::open(Arc::clone(&store), pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let other = create_tenant(&tenet).await;
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let hour = datetime!(2026-12-04 10:00 UTC);
    let count = |tenant_id, key_id, hour, accepted, rejected| UsageCount {
        tenant_id,
        key_id,
        hour,
        accepted,
        rejected,
    };
    let next = hour + Duration::from_secs(3600);

    store
        .add_usage(&[count(tenant, a, hour, 5, 1), count(tenant, b, next, 2, 0)])
        .await
        .expect("first batch is added");
    store
        .add_usage(&[count(tenant, a, hour, 10, 2), count(other, a, hour, 100, 0)])
        .await
        .expect("second batch is added");
    let both = UsageRange::new(hour, next + Duration::from_secs(3600)).expect("valid range");
    let first_hour = UsageRange::new(hour, next).expect("valid range");

    let listed = store.usage(tenant, both).await.expect("usage reads");
    let cut = store.usage(tenant, first_hour).await.expect("usage reads");

    assert_eq!(
        listed,
        vec![count(tenant, a, hour, 15, 3), count(tenant, b, next, 2, 0)]
    );
    assert_eq!(cut, vec![count(tenant, a, hour, 15, 3)]);
}

/// Two services on separate handles of one database stand for two
/// replicas; their flushes of the same hour must add up.
pub async fn replicas_flushing_one_hour_sum_up(backend: &TestStore) {
    let pepper = pepper();
    let first = Tenet::open(backend.store(), pepper.clone())
        .await
        .expect("first replica opens");
    let second = Tenet::open(backend.reopen().await, pepper)
        .await
        .expect("second replica opens");
    let tenant = create_tenant(&first).await;
    let key = issue(&first, tenant, &[]).await;

    for _ in 0..4 {
        first
            .verify_metered(key.api_key.expose_secret(), &[])
            .await
            .expect("key verifies on the first replica");
    }
    for _ in 0..6 {
        second
            .verify_metered(key.api_key.expose_secret(), &[])
            .await
            .expect("key verifies on the second replica");
    }
    let (flushed_first, flushed_second) = tokio::join!(first.flush_usage(), second.flush_usage());
    flushed_first.expect("first replica flushes");
    flushed_second.expect("second replica flushes");
    first.flush_usage().await.expect("an empty flush succeeds");

    let counts = second
        .usage(tenant, this_hour())
        .await
        .expect("usage reads");
    assert_eq!(totals_of(&counts, key.info.id), (10, 0));
}

/// Checks that the accepted sum that a monthly quota starts from covers
/// the tenant's keys and the month's hours only, and no rejected requests.
pub async fn accepted_usage_sums_one_month(backend: &TestStore) {
    let store = backend.store();
    let tenet = Tenet::open(Arc::clone(&store), pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let other = create_tenant(&tenet).await;
    let idle = create_tenant(&tenet).await;
    let (a, b) = (KeyId::generate(), KeyId::generate());
    let count = |tenant_id, key_id, hour, accepted, rejected| UsageCount {
        tenant_id,
        key_id,
        hour,
        accepted,
        rejected,
    };
    store
        .add_usage(&[
            count(tenant, a, datetime!(2026-11-30 23:00 UTC), 1000, 0),
            count(tenant, a, datetime!(2026-12-01 00:00 UTC), 5, 9),
            count(tenant, b, datetime!(2026-12-31 23:00 UTC), 7, 0),
            count(tenant, a, datetime!(2027-01-01 00:00 UTC), 2000, 0),
            count(other, a, datetime!(2026-12-10 12:00 UTC), 4000, 0),
        ])
        .await
        .expect("usage is added");
    let december = QuotaMonth::containing(datetime!(2026-12-15 08:00 UTC));
    let range =
        UsageRange::new(december.starts_at(), december.resets_at()).expect("a month is a range");

    let stored = store
        .accepted_usage(tenant, range)
        .await
        .expect("usage sums");
    let in_month = tenet
        .accepted_in_month(tenant, december)
        .await
        .expect("usage sums");
    let none = tenet
        .accepted_in_month(idle, december)
        .await
        .expect("usage sums");

    assert_eq!(stored, 12);
    assert_eq!(in_month, 12);
    assert_eq!(none, 0);
}

/// Checks that a new process's quota count starts from the accepted
/// requests that an earlier process flushed, as after a restart.
pub async fn flushed_usage_seeds_a_new_quota_count(backend: &TestStore) {
    let tenet = Tenet::open(backend.store(), pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let key = issue(&tenet, tenant, &[]).await;
    for _ in 0..3 {
        tenet
            .verify_metered(key.api_key.expose_secret(), &[])
            .await
            .expect("key verifies");
    }
    tenet.flush_usage().await.expect("usage flushes");
    let restarted = LocalQuota::new();
    let subject = format!("tenant:{tenant}");
    let take = || {
        restarted.take_seeded(
            &subject,
            4,
            OffsetDateTime::now_utc(),
            Mode::Consume,
            |month| tenet.accepted_in_month(tenant, month),
        )
    };

    let last = take().await;
    let over = take().await;

    assert!(last.allowed, "3 of 4 were used");
    assert_eq!(last.used, 4);
    assert!(!over.allowed);
}

/// Checks that a quota count starts from the accepted requests this
/// process has not flushed yet as well as the stored ones, and counts each
/// once after a flush.
pub async fn unflushed_usage_counts_in_the_month(backend: &TestStore) {
    let tenet = Tenet::open(backend.store(), pepper())
        .await
        .expect("service opens");
    let tenant = create_tenant(&tenet).await;
    let other = create_tenant(&tenet).await;
    let key = issue(&tenet, tenant, &[]).await;
    let other_key = issue(&tenet, other, &[]).await;
    let month = QuotaMonth::containing(OffsetDateTime::now_utc());
    for issued in [&key, &key, &other_key] {
        tenet
            .verify_metered(issued.api_key.expose_secret(), &[])
            .await
            .expect("key verifies");
    }

    let pending = tenet.accepted_in_month(tenant, month).await;
    tenet.flush_usage().await.expect("usage flushes");
    let flushed = tenet.accepted_in_month(tenant, month).await;
    tenet
        .verify_metered(key.api_key.expose_secret(), &[])
        .await
        .expect("key verifies");
    let both = tenet.accepted_in_month(tenant, month).await;

    assert_eq!(pending.expect("usage sums"), 2);
    assert_eq!(flushed.expect("usage sums"), 2);
    assert_eq!(both.expect("usage sums"), 3);
}
