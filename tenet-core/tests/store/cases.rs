//! Storage cases that every backend must pass, written against
//! `Arc<dyn Store>` only.

use std::sync::Arc;

use tenet_core::{
    Error, KeyDigest, KeyId, KeyInfo, KeyMetadata, KeyName, KeyRecord, PageRequest, Rotation,
    Scope, Store, Tenant, TenantId, TenantName,
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
    Tenant {
        id: TenantId::generate(),
        name: TenantName::parse(name).expect("valid tenant name"),
        created_at: now(),
    }
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
        },
        digest: random_digest(),
    }
}

async fn insert_tenant(store: &Arc<dyn Store>, name: &str) -> Tenant {
    let tenant = tenant(name);
    store.insert_tenant(&tenant).await.expect("tenant inserts");
    tenant
}

async fn insert_key(store: &Arc<dyn Store>, tenant: TenantId) -> KeyRecord {
    let key = key(tenant, Some("worker"));
    store.insert_key(&key).await.expect("key inserts");
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
        store.insert_tenant(tenant).await.expect("tenant inserts");
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

    let inserted = store.insert_key(&orphan).await;

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
        .revoke_key(tenant.id, key.info.id, first_time)
        .await
        .expect("revoke runs")
        .expect("key exists");
    let second = store
        .revoke_key(tenant.id, key.info.id, second_time)
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
        .revoke_key(intruder.id, key.info.id, now())
        .await
        .expect("revoke runs");
    let unknown = store
        .revoke_key(owner.id, KeyId::generate(), now())
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
    store.insert_key(&key).await.expect("key inserts");
    key
}

pub async fn duplicate_digest_is_rejected(backend: &TestStore) {
    let store = backend.store();
    let tenant = insert_tenant(&store, "Acme").await;
    let original = insert_key(&store, tenant.id).await;
    let mut duplicate = key(tenant.id, Some("copy"));
    duplicate.digest = original.digest;

    let inserted = store.insert_key(&duplicate).await;

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
        store.insert_tenant(&tenant).await.expect("tenant inserts");
        let mut key = key(tenant.id, None);
        key.info.created_at = at;
        key.info.revoked_at = Some(at);
        store.insert_key(&key).await.expect("key inserts");

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
        store.insert_key(&key).await.expect("key inserts");

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
    store.insert_key(&scoped).await.expect("key inserts");
    store.insert_key(&plain).await.expect("key inserts");

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
    let mut old = key(tenant.id, Some("worker"));
    old.info.expires_at = Some(datetime!(2030-01-01 00:00:00 UTC));
    store.insert_key(&old).await.expect("key inserts");
    let sooner = datetime!(2029-01-01 00:00:00 UTC);
    let later = datetime!(2029-06-01 00:00:00 UTC);
    let first = key(tenant.id, Some("worker"));
    let second = key(tenant.id, Some("worker"));

    let shortened = store
        .rotate_key(tenant.id, old.info.id, &first, Rotation::ExpireBy(sooner))
        .await
        .expect("rotation succeeds")
        .expect("the key exists");
    let kept = store
        .rotate_key(tenant.id, old.info.id, &second, Rotation::ExpireBy(later))
        .await
        .expect("rotation succeeds")
        .expect("the key exists");
    let found = store
        .key_by_digest(&first.digest)
        .await
        .expect("lookup succeeds");

    assert_eq!(shortened.info.expires_at, Some(sooner));
    assert_eq!(
        kept.info.expires_at,
        Some(sooner),
        "a later expiry is ignored"
    );
    assert_eq!(found, Some(first));
    assert_eq!(
        store
            .list_keys(tenant.id, PageRequest::first(usize::MAX))
            .await
            .expect("keys list")
            .len(),
        3
    );
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
            Rotation::RevokeAt(at),
        )
        .await
        .expect("rotation runs");
    let revoked = store
        .rotate_key(
            tenant.id,
            old.info.id,
            &key(tenant.id, None),
            Rotation::RevokeAt(at),
        )
        .await
        .expect("rotation runs");
    let again = store
        .rotate_key(
            tenant.id,
            old.info.id,
            &key(tenant.id, None),
            Rotation::RevokeAt(at),
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
