//! Storage cases that every backend must pass, written against
//! `Arc<dyn Store>` only.

use std::sync::Arc;
use std::time::Duration;

use tenet_core::{
    Actor, AuditAction, AuditEntry, AuditTarget, Error, KeyDigest, KeyId, KeyInfo, KeyLimitWrite,
    KeyMetadata, KeyName, KeyRecord, Limit, PageRequest, Rotation, Scope, Store, Tenant, TenantId,
    TenantLimits, TenantName, TenantStatus,
};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::backend::TestStore;

/// Returns the current time truncated to milliseconds, as the service
/// stores it.
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond())
        .expect("a millisecond of the current time is valid")
}

fn tenant(name: &str) -> Tenant {
    Tenant::new(
        TenantId::generate(),
        TenantName::parse(name).expect("valid tenant name"),
        now(),
    )
}

/// Returns an audit entry for a change to `tenant`, for store calls whose
/// test is not about the audit trail.
pub fn audit(tenant: TenantId) -> AuditEntry {
    AuditEntry::new(
        tenant,
        Actor::Admin,
        AuditAction::RenameTenant,
        AuditTarget::Tenant(tenant),
        now(),
    )
}

fn random_digest() -> KeyDigest {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS random source");
    KeyDigest::from_bytes(bytes)
}

fn key(tenant: TenantId, name: Option<&str>) -> KeyRecord {
    KeyRecord {
        info: KeyInfo {
            id: KeyId::generate(),
            tenant_id: tenant,
            name: name.map(|name| KeyName::parse(name).expect("valid key name")),
            prefix: "tnt_AbCdEfGh".to_owned(),
            created_at: now(),
            revoked_at: None,
            expires_at: None,
            scopes: Vec::new(),
            metadata: KeyMetadata::default(),
            last_used_at: None,
            replaced_by: None,
        },
        digest: random_digest(),
    }
}

async fn insert_tenant(store: &Arc<dyn Store>, name: &str) -> Tenant {
    let tenant = tenant(name);
    store
        .insert_tenant(&tenant, &audit(tenant.id))
        .await
        .expect("tenant inserts");
    tenant
}

async fn insert_key(store: &Arc<dyn Store>, tenant: TenantId) -> KeyRecord {
    let key = key(tenant, Some("worker"));
    store
        .insert_key(&key, None, &audit(key.info.tenant_id))
        .await
        .expect("key inserts");
    key
}

pub async fn tenant_round_trips(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;

    let found = store.tenant(tenant.id).await.expect("tenant reads");
    let missing = store
        .tenant(TenantId::generate())
        .await
        .expect("tenant reads");

    assert_eq!(found, Some(tenant));
    assert_eq!(missing, None);
}

pub async fn tenants_list_oldest_first(backend: &TestStore) {
    let store = backend.store();
    let first = tenant("first");
    let second = tenant("second");
    let third = tenant("third");

    // Inserted out of order, so only the listing's ordering can sort them.
    for tenant in [&third, &first, &second] {
        store
            .insert_tenant(tenant, &audit(tenant.id))
            .await
            .expect("tenant inserts");
    }
    let listed = store
        .list_tenants(PageRequest::first(usize::MAX))
        .await
        .expect("tenants list");

    assert_eq!(listed, vec![first, second, third]);
}

pub async fn tenants_page_after_id(backend: &TestStore) {
    let store = backend.store();
    let mut tenants = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        tenants.push(insert_tenant(&store, name).await);
    }

    let first = store
        .list_tenants(PageRequest::first(2))
        .await
        .expect("tenants list");
    let second = store
        .list_tenants(PageRequest {
            after: Some(tenants[1].id.as_uuid()),
            limit: 2,
        })
        .await
        .expect("tenants list");
    let last = store
        .list_tenants(PageRequest {
            after: Some(tenants[3].id.as_uuid()),
            limit: 2,
        })
        .await
        .expect("tenants list");
    let past_end = store
        .list_tenants(PageRequest {
            after: Some(tenants[4].id.as_uuid()),
            limit: 2,
        })
        .await
        .expect("tenants list");

    assert_eq!(first, tenants[..2]);
    assert_eq!(second, tenants[2..4]);
    assert_eq!(last, tenants[4..]);
    assert!(past_end.is_empty());
}

pub async fn keys_page_stays_stable_while_keys_are_added(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Globex").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(insert_key(&store, tenant.id).await.info);
        insert_key(&store, other.id).await;
    }

    let first = store
        .list_keys(tenant.id, PageRequest::first(2))
        .await
        .expect("keys list");
    keys.push(insert_key(&store, tenant.id).await.info);
    let after = first.last().map(|key| key.id.as_uuid());
    let rest = store
        .list_keys(tenant.id, PageRequest { after, limit: 10 })
        .await
        .expect("keys list");

    assert_eq!(first, keys[..2]);
    assert_eq!(rest, keys[2..]);
}

pub async fn key_for_missing_tenant_is_not_found(backend: &TestStore) {
    let store = backend.store();
    let orphan = key(TenantId::generate(), None);

    let inserted = store
        .insert_key(&orphan, None, &audit(orphan.info.tenant_id))
        .await;

    assert!(
        matches!(inserted, Err(Error::NotFound { kind: "tenant", .. })),
        "{inserted:?}"
    );
    let found = store
        .key_by_digest(&orphan.digest)
        .await
        .expect("lookup runs");
    assert_eq!(found, None);
}

pub async fn keys_list_per_tenant(backend: &TestStore) {
    let store = backend.store();
    let acme = insert_tenant(&store, "Acme").await;
    let globex = insert_tenant(&store, "Globex").await;
    let acme_first = insert_key(&store, acme.id).await;
    let globex_key = insert_key(&store, globex.id).await;
    let acme_second = insert_key(&store, acme.id).await;

    let acme_keys = store
        .list_keys(acme.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    let globex_keys = store
        .list_keys(globex.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    let nobody_keys = store
        .list_keys(TenantId::generate(), PageRequest::first(usize::MAX))
        .await
        .expect("keys list");

    assert_eq!(acme_keys, vec![acme_first.info, acme_second.info]);
    assert_eq!(globex_keys, vec![globex_key.info]);
    assert!(nobody_keys.is_empty());
}

pub async fn revoke_keeps_first_time(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let key = insert_key(&store, tenant.id).await;
    let first_time = datetime!(2030-01-02 03:04:05.678 UTC);
    let second_time = datetime!(2030-01-02 04:00:00.000 UTC);

    let first = store
        .revoke_key(tenant.id, key.info.id, first_time, &audit(tenant.id))
        .await
        .expect("revoke runs")
        .expect("key exists");
    let second = store
        .revoke_key(tenant.id, key.info.id, second_time, &audit(tenant.id))
        .await
        .expect("revoke runs")
        .expect("key exists");

    assert_eq!(first.info.revoked_at, Some(first_time));
    assert_eq!(first.digest, key.digest);
    assert_eq!(second.info.revoked_at, Some(first_time));
    let listed = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    assert_eq!(listed[0].revoked_at, Some(first_time));
}

pub async fn revoke_of_other_tenant_key_is_none(backend: &TestStore) {
    let store = backend.store();
    let owner = insert_tenant(&store, "Owner").await;
    let intruder = insert_tenant(&store, "Intruder").await;
    let key = insert_key(&store, owner.id).await;

    let revoked = store
        .revoke_key(intruder.id, key.info.id, now(), &audit(intruder.id))
        .await
        .expect("revoke runs");
    let unknown = store
        .revoke_key(owner.id, KeyId::generate(), now(), &audit(owner.id))
        .await
        .expect("revoke runs");

    assert_eq!(revoked, None);
    assert_eq!(unknown, None);
    let stored = store
        .key_by_digest(&key.digest)
        .await
        .expect("lookup runs")
        .expect("key still exists");
    assert_eq!(stored, key, "the key changed");
}

pub async fn key_found_by_digest(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let key = insert_key(&store, tenant.id).await;
    let unnamed = key_without_name(&store, tenant.id).await;

    let found = store.key_by_digest(&key.digest).await.expect("lookup runs");
    let found_unnamed = store
        .key_by_digest(&unnamed.digest)
        .await
        .expect("lookup runs");
    let unknown = store
        .key_by_digest(&random_digest())
        .await
        .expect("lookup runs");

    assert_eq!(found, Some(key));
    assert_eq!(found_unnamed, Some(unnamed));
    assert_eq!(unknown, None);
}

async fn key_without_name(store: &Arc<dyn Store>, tenant: TenantId) -> KeyRecord {
    let key = key(tenant, None);
    store
        .insert_key(&key, None, &audit(key.info.tenant_id))
        .await
        .expect("key inserts");
    key
}

pub async fn duplicate_digest_is_rejected(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let original = insert_key(&store, tenant.id).await;
    let mut duplicate = key(tenant.id, Some("copy"));
    duplicate.digest = original.digest;

    let inserted = store
        .insert_key(&duplicate, None, &audit(duplicate.info.tenant_id))
        .await;

    assert!(matches!(inserted, Err(Error::Store(_))), "{inserted:?}");
    let found = store
        .key_by_digest(&original.digest)
        .await
        .expect("lookup runs");
    assert_eq!(found, Some(original.clone()));
    let listed = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    assert_eq!(listed, vec![original.info]);
}

pub async fn init_setting_first_writer_wins(backend: &TestStore) {
    let store = backend.store();

    let first = store
        .init_setting("fingerprint", b"first")
        .await
        .expect("init runs");
    let second = store
        .init_setting("fingerprint", b"second")
        .await
        .expect("init runs");
    let read = store.setting("fingerprint").await.expect("setting reads");
    let missing = store.setting("missing").await.expect("setting reads");

    assert_eq!(first, b"first");
    assert_eq!(second, b"first");
    assert_eq!(read, Some(b"first".to_vec()));
    assert_eq!(missing, None);
}

pub async fn concurrent_init_setting_agrees(backend: &TestStore) {
    let store = backend.store();

    let writers: Vec<_> = (0..8u8)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.init_setting("shared", &[writer]).await })
        })
        .collect();
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.expect("task runs").expect("init runs"));
    }

    let stored = store.setting("shared").await.expect("setting reads");
    let stored = stored.expect("a writer stored the setting");
    for result in results {
        assert_eq!(result, stored);
    }
}

pub async fn timestamps_round_trip_exactly(backend: &TestStore) {
    let store = backend.store();
    let times = [
        datetime!(2031-05-06 07:08:09.123 UTC),
        datetime!(1969-12-31 23:59:59.999 UTC),
        datetime!(1970-01-01 00:00:00.001 UTC),
        datetime!(2262-04-11 23:47:16.854 UTC),
    ];

    for at in times {
        let mut tenant = tenant("Timely");
        tenant.created_at = at;
        store
            .insert_tenant(&tenant, &audit(tenant.id))
            .await
            .expect("tenant inserts");
        let mut key = key(tenant.id, None);
        key.info.created_at = at;
        key.info.revoked_at = Some(at);
        store
            .insert_key(&key, None, &audit(key.info.tenant_id))
            .await
            .expect("key inserts");

        let read_tenant = store.tenant(tenant.id).await.expect("tenant reads");
        let read_key = store.key_by_digest(&key.digest).await.expect("lookup runs");

        assert_eq!(read_tenant.map(|tenant| tenant.created_at), Some(at));
        let read_key = read_key.expect("key exists");
        assert_eq!(read_key.info.created_at, at);
        assert_eq!(read_key.info.revoked_at, Some(at));
    }
}

pub async fn names_round_trip(backend: &TestStore) {
    let store = backend.store();
    let names = [
        "Zoë's \"quoted\" café",
        "東京株式会社 🚀",
        "Robert'); DROP TABLE tenants;--",
        "back\\slash % _ $1 ?1",
    ];

    for name in names {
        let tenant = insert_tenant(&store, name).await;
        let key = key(tenant.id, Some(name));
        store
            .insert_key(&key, None, &audit(key.info.tenant_id))
            .await
            .expect("key inserts");

        let read_tenant = store.tenant(tenant.id).await.expect("tenant reads");
        let read_keys = store
            .list_keys(tenant.id, PageRequest::first(usize::MAX))
            .await
            .expect("keys list");

        assert_eq!(read_tenant.map(|tenant| tenant.name), Some(tenant.name));
        assert_eq!(read_keys.len(), 1);
        assert_eq!(read_keys[0].name, key.info.name);
    }
    let listed = store
        .list_tenants(PageRequest::first(usize::MAX))
        .await
        .expect("tenants list");
    assert_eq!(listed.len(), names.len());
}

pub async fn ping_succeeds(backend: &TestStore) {
    let store = backend.store();

    let pinged = store.ping().await;

    assert!(pinged.is_ok(), "{pinged:?}");
}

pub async fn expiry_and_scopes_round_trip(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let mut scoped = key(tenant.id, None);
    scoped.info.expires_at = Some(datetime!(2031-02-03 04:05:06.789 UTC));
    scoped.info.scopes =
        Scope::parse_list(&["billing:read", "tenet:verify", "x.y_z-0"]).expect("valid scopes");
    let plain = key(tenant.id, None);
    store
        .insert_key(&scoped, None, &audit(scoped.info.tenant_id))
        .await
        .expect("key inserts");
    store
        .insert_key(&plain, None, &audit(plain.info.tenant_id))
        .await
        .expect("key inserts");

    let by_digest = store
        .key_by_digest(&scoped.digest)
        .await
        .expect("lookup succeeds");
    let listed = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    let plain_found = store
        .key_by_digest(&plain.digest)
        .await
        .expect("lookup succeeds");

    assert_eq!(by_digest, Some(scoped.clone()));
    assert_eq!(listed, vec![scoped.info, plain.info.clone()]);
    assert_eq!(plain_found.map(|found| found.info), Some(plain.info));
}

pub async fn rotate_shortens_expiry_and_inserts(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let sooner = datetime!(2029-01-01 00:00:00 UTC);
    let later = datetime!(2029-06-01 00:00:00 UTC);
    let mut long_lived = key(tenant.id, Some("worker"));
    long_lived.info.expires_at = Some(datetime!(2030-01-01 00:00:00 UTC));
    let mut short_lived = key(tenant.id, Some("worker"));
    short_lived.info.expires_at = Some(sooner);
    for old in [&long_lived, &short_lived] {
        store
            .insert_key(old, None, &audit(tenant.id))
            .await
            .expect("key inserts");
    }
    let first = key(tenant.id, Some("worker"));
    let second = key(tenant.id, Some("worker"));

    let shortened = store
        .rotate_key(
            tenant.id,
            long_lived.info.id,
            &first,
            None,
            Rotation::ExpireBy(sooner),
            &audit(tenant.id),
        )
        .await
        .expect("rotation succeeds")
        .expect("the key exists");
    let kept = store
        .rotate_key(
            tenant.id,
            short_lived.info.id,
            &second,
            None,
            Rotation::ExpireBy(later),
            &audit(tenant.id),
        )
        .await
        .expect("rotation succeeds")
        .expect("the key exists");
    let found = store
        .key_by_digest(&first.digest)
        .await
        .expect("lookup succeeds");

    assert_eq!(shortened.info.expires_at, Some(sooner));
    assert_eq!(shortened.info.replaced_by, Some(first.info.id));
    assert_eq!(
        kept.info.expires_at,
        Some(sooner),
        "a later expiry is ignored"
    );
    assert_eq!(kept.info.replaced_by, Some(second.info.id));
    assert_eq!(found, Some(first));
    assert_eq!(
        store
            .list_keys(tenant.id, PageRequest::first(usize::MAX))
            .await
            .expect("keys list")
            .len(),
        4
    );
}

pub async fn rotated_key_does_not_rotate_again(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let old = insert_key(&store, tenant.id).await;
    let first = key(tenant.id, Some("worker"));
    let second = key(tenant.id, Some("worker"));
    let grace_end = now() + Duration::from_secs(3_600);

    store
        .rotate_key(
            tenant.id,
            old.info.id,
            &first,
            None,
            Rotation::ExpireBy(grace_end),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs")
        .expect("the key rotates");
    let again = store
        .rotate_key(
            tenant.id,
            old.info.id,
            &second,
            None,
            Rotation::ExpireBy(grace_end - Duration::from_secs(60)),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs");
    let listed = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    let second_found = store
        .key_by_digest(&second.digest)
        .await
        .expect("lookup succeeds");

    assert_eq!(again, None, "a rotated key rotates once");
    assert_eq!(second_found, None, "the refused replacement is not stored");
    assert_eq!(listed.len(), 2);
    let stored_old = listed
        .iter()
        .find(|info| info.id == old.info.id)
        .expect("the old key is listed");
    assert_eq!(stored_old.replaced_by, Some(first.info.id));
    assert_eq!(stored_old.expires_at, Some(grace_end), "expiry unchanged");
    let stored_new = listed
        .iter()
        .find(|info| info.id == first.info.id)
        .expect("the new key is listed");
    assert_eq!(stored_new.replaced_by, None);
}

pub async fn expired_key_does_not_rotate(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let mut old = key(tenant.id, Some("worker"));
    old.info.expires_at = Some(now() - Duration::from_secs(1));
    store
        .insert_key(&old, None, &audit(tenant.id))
        .await
        .expect("key inserts");
    let replacement = key(tenant.id, Some("worker"));

    let rotated = store
        .rotate_key(
            tenant.id,
            old.info.id,
            &replacement,
            None,
            Rotation::RevokeAt(replacement.info.created_at),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs");
    let listed = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");

    assert_eq!(rotated, None);
    assert_eq!(listed, vec![old.info]);
}

/// Starts 20 rotations of one key at once, each with its own replacement;
/// exactly one may win.
pub async fn concurrent_rotations_have_one_winner(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let old = insert_key(&store, tenant.id).await;
    let grace_end = now() + Duration::from_secs(3_600);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let replacement = key(tenant.id, Some("worker"));
            tokio::spawn(async move {
                let rotated = store
                    .rotate_key(
                        tenant.id,
                        old.info.id,
                        &replacement,
                        None,
                        Rotation::ExpireBy(grace_end),
                        &audit(tenant.id),
                    )
                    .await
                    .expect("rotation runs");
                rotated.map(|_| replacement.info.id)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("task finished"));
    }
    let listed = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");

    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let stored_old = listed
        .iter()
        .find(|info| info.id == old.info.id)
        .expect("the old key is listed");
    assert_eq!(stored_old.replaced_by, Some(winners[0]));
}

pub async fn rotate_with_revoke_and_missing_key(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Other").await;
    let old = insert_key(&store, tenant.id).await;
    let at = now();

    let foreign = store
        .rotate_key(
            other.id,
            old.info.id,
            &key(other.id, None),
            None,
            Rotation::RevokeAt(at),
            &audit(other.id),
        )
        .await
        .expect("rotation runs");
    let revoked = store
        .rotate_key(
            tenant.id,
            old.info.id,
            &key(tenant.id, None),
            None,
            Rotation::RevokeAt(at),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs");
    let again = store
        .rotate_key(
            tenant.id,
            old.info.id,
            &key(tenant.id, None),
            None,
            Rotation::RevokeAt(at),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs");

    assert_eq!(foreign, None);
    assert!(
        store
            .list_keys(other.id, PageRequest::first(usize::MAX))
            .await
            .expect("keys list")
            .is_empty()
    );
    assert_eq!(revoked.expect("the key exists").info.revoked_at, Some(at));
    assert_eq!(again, None, "a revoked key is not rotated");
    assert_eq!(
        store
            .list_keys(tenant.id, PageRequest::first(usize::MAX))
            .await
            .expect("keys list")
            .len(),
        2
    );
}

fn limit(rate: u32, period_secs: u64, burst: u32) -> Limit {
    Limit::new(rate, Duration::from_secs(period_secs), burst).expect("valid limit")
}

pub async fn tenant_limits_round_trip(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let full = TenantLimits {
        limit: Some(limit(100, 60, 20).shadow()),
        monthly_quota: Some(1 << 40),
    };
    let quota_only = TenantLimits {
        limit: None,
        monthly_quota: Some(5),
    };

    let before = store.tenant_limits(tenant.id).await.expect("limits read");
    store
        .set_tenant_limits(tenant.id, &full, &audit(tenant.id))
        .await
        .expect("limits write");
    let after_full = store.tenant_limits(tenant.id).await.expect("limits read");
    store
        .set_tenant_limits(tenant.id, &quota_only, &audit(tenant.id))
        .await
        .expect("limits write");
    let after_replace = store.tenant_limits(tenant.id).await.expect("limits read");

    assert_eq!(before, TenantLimits::default());
    assert_eq!(after_full, full);
    assert_eq!(after_replace, quota_only);
}

pub async fn tenant_limits_of_missing_tenant(backend: &TestStore) {
    let store = backend.store();
    let missing = TenantId::generate();
    let limits = TenantLimits {
        limit: Some(limit(1, 1, 1)),
        monthly_quota: None,
    };

    let written = store
        .set_tenant_limits(missing, &limits, &audit(missing))
        .await;
    let read = store.tenant_limits(missing).await.expect("limits read");

    assert!(
        matches!(written, Err(Error::NotFound { kind: "tenant", .. })),
        "{written:?}"
    );
    assert_eq!(read, TenantLimits::default());
}

pub async fn key_limit_set_replaced_and_removed(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let key = insert_key(&store, tenant.id).await;
    let first = limit(10, 1, 5);
    let second = limit(3, 60, 1).shadow();

    let before = store.key_limit(key.info.id).await.expect("limit reads");
    let set = store
        .set_key_limit(tenant.id, key.info.id, Some(&first), &audit(tenant.id))
        .await
        .expect("limit writes");
    let after_set = store.key_limit(key.info.id).await.expect("limit reads");
    store
        .set_key_limit(tenant.id, key.info.id, Some(&second), &audit(tenant.id))
        .await
        .expect("limit writes");
    let after_replace = store.key_limit(key.info.id).await.expect("limit reads");
    let removed = store
        .set_key_limit(tenant.id, key.info.id, None, &audit(tenant.id))
        .await
        .expect("limit writes");
    let after_remove = store.key_limit(key.info.id).await.expect("limit reads");

    assert_eq!(before, None);
    assert_eq!(set, KeyLimitWrite::Written);
    assert_eq!(after_set, Some(first));
    assert_eq!(after_replace, Some(second));
    assert_eq!(removed, KeyLimitWrite::Written);
    assert_eq!(after_remove, None);
}

pub async fn key_limit_of_other_tenant_writes_nothing(backend: &TestStore) {
    let store = backend.store();
    let owner = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Globex").await;
    let key = insert_key(&store, owner.id).await;

    let foreign = store
        .set_key_limit(
            other.id,
            key.info.id,
            Some(&limit(1, 1, 1)),
            &audit(other.id),
        )
        .await
        .expect("limit write runs");
    let foreign_removal = store
        .set_key_limit(other.id, key.info.id, None, &audit(other.id))
        .await
        .expect("limit write runs");
    let missing = store
        .set_key_limit(
            owner.id,
            KeyId::generate(),
            Some(&limit(1, 1, 1)),
            &audit(owner.id),
        )
        .await
        .expect("limit write runs");

    assert_eq!(foreign, KeyLimitWrite::NotFound);
    assert_eq!(foreign_removal, KeyLimitWrite::NotFound);
    assert_eq!(missing, KeyLimitWrite::NotFound);
    assert_eq!(
        store.key_limit(key.info.id).await.expect("limit reads"),
        None
    );
}
pub async fn key_limit_of_revoked_key_writes_nothing(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let key = insert_key(&store, tenant.id).await;
    let kept = limit(10, 1, 5);
    store
        .set_key_limit(tenant.id, key.info.id, Some(&kept), &audit(tenant.id))
        .await
        .expect("limit writes");
    store
        .revoke_key(tenant.id, key.info.id, now(), &audit(tenant.id))
        .await
        .expect("revoke runs")
        .expect("key is revoked");
    let recorded = audit_of(&store, tenant.id).await.len();

    let changed = store
        .set_key_limit(
            tenant.id,
            key.info.id,
            Some(&limit(1, 1, 1)),
            &audit(tenant.id),
        )
        .await
        .expect("limit write runs");
    let removed = store
        .set_key_limit(tenant.id, key.info.id, None, &audit(tenant.id))
        .await
        .expect("limit write runs");

    assert_eq!(changed, KeyLimitWrite::Revoked);
    assert_eq!(removed, KeyLimitWrite::Revoked);
    assert_eq!(
        store.key_limit(key.info.id).await.expect("limit reads"),
        Some(kept)
    );
    assert_eq!(
        audit_of(&store, tenant.id).await.len(),
        recorded,
        "rejected changes record nothing"
    );
}

pub async fn key_inserts_with_its_limit(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let limited = key(tenant.id, Some("limited"));
    let own = limit(10, 1, 5).shadow();
    let mut duplicate = key(tenant.id, Some("copy"));
    duplicate.digest = limited.digest;

    store
        .insert_key(&limited, Some(&own), &audit(tenant.id))
        .await
        .expect("key inserts");
    let plain = insert_key(&store, tenant.id).await;
    let rejected = store
        .insert_key(&duplicate, Some(&limit(1, 1, 1)), &audit(tenant.id))
        .await;

    assert_eq!(
        store.key_limit(limited.info.id).await.expect("limit reads"),
        Some(own)
    );
    assert_eq!(
        store.key_limit(plain.info.id).await.expect("limit reads"),
        None
    );
    assert!(matches!(rejected, Err(Error::Store(_))), "{rejected:?}");
    assert_eq!(
        store
            .key_limit(duplicate.info.id)
            .await
            .expect("limit reads"),
        None,
        "a failed insert writes no limit"
    );
}

pub async fn rotation_writes_the_replacement_limit(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Globex").await;
    let old = insert_key(&store, tenant.id).await;
    let own = limit(3, 60, 2);
    let limited = key(tenant.id, Some("worker"));
    let plain = key(tenant.id, Some("worker"));
    let foreign = key(other.id, None);

    let rejected = store
        .rotate_key(
            other.id,
            old.info.id,
            &foreign,
            Some(&own),
            Rotation::RevokeAt(now()),
            &audit(other.id),
        )
        .await
        .expect("rotation runs");
    store
        .rotate_key(
            tenant.id,
            old.info.id,
            &limited,
            Some(&own),
            Rotation::ExpireBy(now()),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs")
        .expect("the key exists");
    store
        .rotate_key(
            tenant.id,
            limited.info.id,
            &plain,
            None,
            Rotation::RevokeAt(now()),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs")
        .expect("the key exists");

    assert_eq!(rejected, None);
    assert_eq!(
        store.key_limit(foreign.info.id).await.expect("limit reads"),
        None,
        "a rotation that finds no key writes no limit"
    );
    assert_eq!(
        store.key_limit(limited.info.id).await.expect("limit reads"),
        Some(own)
    );
    assert_eq!(
        store.key_limit(plain.info.id).await.expect("limit reads"),
        None
    );
}

pub async fn limit_changes_are_audited(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Globex").await;
    let key = insert_key(&store, tenant.id).await;
    let admin_key = KeyId::generate();
    let limits = TenantLimits {
        limit: Some(limit(100, 60, 20)),
        monthly_quota: Some(1_000),
    };
    let tenant_changed = AuditEntry::new(
        tenant.id,
        Actor::Admin,
        AuditAction::SetTenantLimits,
        AuditTarget::Tenant(tenant.id),
        now(),
    );
    let key_limited = AuditEntry::new(
        tenant.id,
        Actor::Key(admin_key),
        AuditAction::SetKeyLimit,
        AuditTarget::Key(key.info.id),
        now(),
    );
    let key_unlimited = AuditEntry::new(
        tenant.id,
        Actor::Key(admin_key),
        AuditAction::SetKeyLimit,
        AuditTarget::Key(key.info.id),
        now(),
    );
    let recorded = audit_of(&store, tenant.id).await;

    store
        .set_tenant_limits(tenant.id, &limits, &tenant_changed)
        .await
        .expect("limits write");
    store
        .set_key_limit(tenant.id, key.info.id, Some(&limit(1, 1, 1)), &key_limited)
        .await
        .expect("limit write runs");
    store
        .set_key_limit(tenant.id, key.info.id, None, &key_unlimited)
        .await
        .expect("limit write runs");
    let foreign = AuditEntry::new(
        other.id,
        Actor::Admin,
        AuditAction::SetKeyLimit,
        AuditTarget::Key(key.info.id),
        now(),
    );
    store
        .set_key_limit(other.id, key.info.id, Some(&limit(1, 1, 1)), &foreign)
        .await
        .expect("limit write runs");
    let missing = TenantId::generate();
    let unknown = AuditEntry::new(
        missing,
        Actor::Admin,
        AuditAction::SetTenantLimits,
        AuditTarget::Tenant(missing),
        now(),
    );
    let unknown_written = store.set_tenant_limits(missing, &limits, &unknown).await;

    let entries = audit_of(&store, tenant.id).await;
    assert_eq!(entries[..recorded.len()], recorded[..]);
    assert_eq!(
        entries[recorded.len()..],
        [tenant_changed, key_limited, key_unlimited]
    );
    assert_eq!(
        audit_of(&store, other.id).await.len(),
        1,
        "a write to another tenant's key records nothing"
    );
    assert!(
        matches!(unknown_written, Err(Error::NotFound { kind: "tenant", .. })),
        "{unknown_written:?}"
    );
    assert!(audit_of(&store, missing).await.is_empty());
}

/// Returns every audit entry of `tenant`, oldest first.
async fn audit_of(store: &Arc<dyn Store>, tenant: TenantId) -> Vec<AuditEntry> {
    store
        .list_audit(tenant, PageRequest::first(usize::MAX))
        .await
        .expect("audit lists")
}

pub async fn tenant_status_changes_and_repeats(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;

    let suspended = store
        .set_tenant_status(tenant.id, TenantStatus::Suspended, &audit(tenant.id))
        .await
        .expect("status update runs")
        .expect("tenant exists");
    let again = store
        .set_tenant_status(tenant.id, TenantStatus::Suspended, &audit(tenant.id))
        .await
        .expect("status update runs")
        .expect("tenant exists");
    let read = store.tenant(tenant.id).await.expect("tenant reads");
    let resumed = store
        .set_tenant_status(tenant.id, TenantStatus::Active, &audit(tenant.id))
        .await
        .expect("status update runs")
        .expect("tenant exists");

    assert_eq!(tenant.status, TenantStatus::Active);
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(again, suspended);
    assert_eq!(read, Some(suspended));
    assert_eq!(resumed.status, TenantStatus::Active);
    assert_eq!(resumed.name, tenant.name);
}

pub async fn rename_keeps_other_fields(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let name = TenantName::parse("Acme Europe").expect("valid tenant name");

    let renamed = store
        .rename_tenant(tenant.id, &name, &audit(tenant.id))
        .await
        .expect("rename runs")
        .expect("tenant exists");
    let missing = store
        .rename_tenant(TenantId::generate(), &name, &audit(tenant.id))
        .await
        .expect("rename runs");

    assert_eq!(renamed.name, name);
    assert_eq!(renamed.id, tenant.id);
    assert_eq!(renamed.created_at, tenant.created_at);
    assert_eq!(
        store.tenant(tenant.id).await.expect("tenant reads"),
        Some(renamed)
    );
    assert_eq!(missing, None);
}

pub async fn delete_revokes_keys_and_hides_tenant(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Globex").await;
    let live = insert_key(&store, tenant.id).await;
    let revoked_before = insert_key(&store, tenant.id).await;
    let first_time = datetime!(2030-01-02 03:04:05.678 UTC);
    store
        .revoke_key(
            tenant.id,
            revoked_before.info.id,
            first_time,
            &audit(tenant.id),
        )
        .await
        .expect("revoke runs");
    let other_key = insert_key(&store, other.id).await;
    let at = now();

    let revoked = store
        .delete_tenant(tenant.id, at, &audit(tenant.id))
        .await
        .expect("delete runs")
        .expect("tenant exists");

    let ids: Vec<KeyId> = revoked.iter().map(|key| key.info.id).collect();
    assert_eq!(ids, vec![live.info.id], "only unrevoked keys are revoked");
    assert_eq!(revoked[0].digest, live.digest);
    let keys = store
        .list_keys(tenant.id, PageRequest::first(usize::MAX))
        .await
        .expect("keys list");
    assert_eq!(keys[0].revoked_at, Some(at));
    assert_eq!(keys[1].revoked_at, Some(first_time));
    let stored = store
        .tenant(tenant.id)
        .await
        .expect("tenant reads")
        .expect("the row is kept");
    assert_eq!(stored.deleted_at, Some(at));
    let listed = store
        .list_tenants(PageRequest::first(usize::MAX))
        .await
        .expect("tenants list");
    assert_eq!(listed, vec![other.clone()]);
    let other_found = store
        .key_by_digest(&other_key.digest)
        .await
        .expect("lookup runs")
        .expect("other key exists");
    assert_eq!(other_found.info.revoked_at, None);
}

pub async fn deleted_tenant_rejects_every_change(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let key = insert_key(&store, tenant.id).await;
    store
        .delete_tenant(tenant.id, now(), &audit(tenant.id))
        .await
        .expect("delete runs")
        .expect("tenant exists");
    let recorded = audit_of(&store, tenant.id).await.len();
    let name = TenantName::parse("Renamed").expect("valid tenant name");

    let second_delete = store
        .delete_tenant(tenant.id, now(), &audit(tenant.id))
        .await
        .expect("delete runs");
    let suspend = store
        .set_tenant_status(tenant.id, TenantStatus::Suspended, &audit(tenant.id))
        .await
        .expect("status update runs");
    let rename = store
        .rename_tenant(tenant.id, &name, &audit(tenant.id))
        .await
        .expect("rename runs");
    let issue = store
        .insert_key(&self::key(tenant.id, None), None, &audit(tenant.id))
        .await;
    let rotate = store
        .rotate_key(
            tenant.id,
            key.info.id,
            &self::key(tenant.id, None),
            None,
            Rotation::RevokeAt(now()),
            &audit(tenant.id),
        )
        .await
        .expect("rotation runs");
    let missing = store
        .delete_tenant(TenantId::generate(), now(), &audit(tenant.id))
        .await
        .expect("delete runs");
    let limits = TenantLimits {
        limit: Some(limit(1, 1, 1)),
        monthly_quota: None,
    };
    let tenant_limits = store
        .set_tenant_limits(tenant.id, &limits, &audit(tenant.id))
        .await;
    let key_limit = store
        .set_key_limit(
            tenant.id,
            key.info.id,
            Some(&limit(1, 1, 1)),
            &audit(tenant.id),
        )
        .await
        .expect("limit write runs");

    assert_eq!(second_delete, None);
    assert_eq!(suspend, None);
    assert_eq!(rename, None);
    assert!(
        matches!(issue, Err(Error::NotFound { kind: "tenant", .. })),
        "{issue:?}"
    );
    assert_eq!(rotate, None);
    assert_eq!(missing, None);
    assert!(
        matches!(tenant_limits, Err(Error::NotFound { kind: "tenant", .. })),
        "{tenant_limits:?}"
    );
    assert_eq!(key_limit, KeyLimitWrite::NotFound);
    assert_eq!(
        store.tenant_limits(tenant.id).await.expect("limits read"),
        TenantLimits::default()
    );
    assert_eq!(
        store.key_limit(key.info.id).await.expect("limit reads"),
        None
    );
    assert_eq!(
        audit_of(&store, tenant.id).await.len(),
        recorded,
        "rejected changes record nothing"
    );
}

pub async fn audit_entries_round_trip(backend: &TestStore) {
    let store = backend.store();
    let tenant = tenant("Acme");
    let key = self::key(tenant.id, None);
    let admin_key = KeyId::generate();
    let created = AuditEntry::new(
        tenant.id,
        Actor::Admin,
        AuditAction::CreateTenant,
        AuditTarget::Tenant(tenant.id),
        datetime!(2030-01-02 03:04:05.678 UTC),
    );
    let issued = AuditEntry::new(
        tenant.id,
        Actor::Key(admin_key),
        AuditAction::IssueKey,
        AuditTarget::Key(key.info.id),
        datetime!(2030-01-02 03:04:06.001 UTC),
    );

    store
        .insert_tenant(&tenant, &created)
        .await
        .expect("tenant inserts");
    store
        .insert_key(&key, None, &issued)
        .await
        .expect("key inserts");

    assert_eq!(audit_of(&store, tenant.id).await, vec![created, issued]);
}

pub async fn audit_records_each_change_per_tenant(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let other = insert_tenant(&store, "Globex").await;
    let key = insert_key(&store, tenant.id).await;
    let entry = |action, target| AuditEntry::new(tenant.id, Actor::Admin, action, target, now());
    let name = TenantName::parse("Acme Europe").expect("valid tenant name");

    let renamed = entry(AuditAction::RenameTenant, AuditTarget::Tenant(tenant.id));
    store
        .rename_tenant(tenant.id, &name, &renamed)
        .await
        .expect("rename runs");
    let suspended = entry(AuditAction::SuspendTenant, AuditTarget::Tenant(tenant.id));
    store
        .set_tenant_status(tenant.id, TenantStatus::Suspended, &suspended)
        .await
        .expect("status update runs");
    let rotated = entry(AuditAction::RotateKey, AuditTarget::Key(key.info.id));
    store
        .rotate_key(
            tenant.id,
            key.info.id,
            &self::key(tenant.id, None),
            None,
            Rotation::ExpireBy(now()),
            &rotated,
        )
        .await
        .expect("rotation runs")
        .expect("key exists");
    let revoked = entry(AuditAction::RevokeKey, AuditTarget::Key(key.info.id));
    store
        .revoke_key(tenant.id, key.info.id, now(), &revoked)
        .await
        .expect("revoke runs")
        .expect("key exists");
    let unknown = entry(AuditAction::RevokeKey, AuditTarget::Key(KeyId::generate()));
    store
        .revoke_key(tenant.id, KeyId::generate(), now(), &unknown)
        .await
        .expect("revoke runs");
    let deleted = entry(AuditAction::DeleteTenant, AuditTarget::Tenant(tenant.id));
    store
        .delete_tenant(tenant.id, now(), &deleted)
        .await
        .expect("delete runs")
        .expect("tenant exists");

    let entries = audit_of(&store, tenant.id).await;
    let actions: Vec<AuditAction> = entries.iter().map(|entry| entry.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::RenameTenant,
            AuditAction::RenameTenant,
            AuditAction::RenameTenant,
            AuditAction::SuspendTenant,
            AuditAction::RotateKey,
            AuditAction::RevokeKey,
            AuditAction::DeleteTenant,
        ],
        "the helper's entries for insertion, then one per change, and none for \
         the unknown key"
    );
    assert_eq!(entries[3..], [suspended, rotated, revoked, deleted]);
    assert_eq!(audit_of(&store, other.id).await.len(), 1);
}

pub async fn audit_pages_after_id(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    for _ in 0..4 {
        insert_key(&store, tenant.id).await;
    }
    let all = audit_of(&store, tenant.id).await;

    let first = store
        .list_audit(tenant.id, PageRequest::first(2))
        .await
        .expect("audit lists");
    let second = store
        .list_audit(
            tenant.id,
            PageRequest {
                after: Some(first[1].id.as_uuid()),
                limit: 2,
            },
        )
        .await
        .expect("audit lists");
    let last = store
        .list_audit(
            tenant.id,
            PageRequest {
                after: Some(all[3].id.as_uuid()),
                limit: 2,
            },
        )
        .await
        .expect("audit lists");

    assert_eq!(all.len(), 5);
    assert_eq!(first, all[..2]);
    assert_eq!(second, all[2..4]);
    assert_eq!(last, all[4..]);
}

pub async fn key_and_tenant_read_together(backend: &TestStore) {
    let store = backend.store();
    let active = insert_tenant(&store, "Acme").await;
    let suspended = insert_tenant(&store, "Globex").await;
    let deleted = insert_tenant(&store, "Initech").await;
    let active_key = insert_key(&store, active.id).await;
    let suspended_key = insert_key(&store, suspended.id).await;
    let deleted_key = insert_key(&store, deleted.id).await;
    let missing = key(active.id, None);
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

    for (what, record) in [
        ("active", &active_key),
        ("suspended", &suspended_key),
        ("deleted", &deleted_key),
    ] {
        let together = store
            .key_and_tenant_by_digest(&record.digest)
            .await
            .expect("joined read runs")
            .expect("key is found");
        let key_alone = store
            .key_by_digest(&record.digest)
            .await
            .expect("key reads")
            .expect("key is found");
        let tenant_alone = store
            .tenant(record.info.tenant_id)
            .await
            .expect("tenant reads");

        assert_eq!(together.0.info, key_alone.info, "{what}: key");
        assert_eq!(together.0.digest, key_alone.digest, "{what}: digest");
        assert_eq!(together.1, tenant_alone, "{what}: tenant");
    }
    let none = store
        .key_and_tenant_by_digest(&missing.digest)
        .await
        .expect("joined read runs");
    assert!(none.is_none(), "an unknown digest finds nothing");
}
