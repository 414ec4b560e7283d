//! Service cases through `Tenet`, on every backend.

use std::sync::Arc;

use tenet_core::{ApiKey, Error, KeyName, Pepper, Principal, Rejection, Store, TenantName, Tenet};

use crate::backend::TestStore;

fn pepper() -> Pepper {
    Pepper::from_config(&Pepper::generate_config()).expect("generated pepper is valid")
}

async fn open(store: Arc<dyn Store>, pepper: &Pepper) -> Tenet {
    Tenet::open(store, pepper.clone())
        .await
        .expect("service opens")
}

pub async fn issued_key_verifies(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created");
    let issued = tenet
        .issue_key(tenant.id, Some(KeyName::parse("ci").expect("valid name")))
        .await
        .expect("key is issued");

    let principal = tenet.verify(issued.api_key.expose_secret()).await;

    let expected = Principal {
        tenant_id: tenant.id,
        key_id: issued.info.id,
    };
    assert_eq!(principal.ok(), Some(expected));
}

pub async fn revoked_key_is_rejected(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created");
    let issued = tenet
        .issue_key(tenant.id, None)
        .await
        .expect("key is issued");
    tenet
        .revoke_key(tenant.id, issued.info.id)
        .await
        .expect("key is revoked");

    let verified = tenet.verify(issued.api_key.expose_secret()).await;

    assert!(
        matches!(verified, Err(Error::Rejected(Rejection::Revoked))),
        "{verified:?}"
    );
}

pub async fn unknown_key_is_rejected(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let never_issued = ApiKey::generate();

    let verified = tenet.verify(never_issued.expose_secret()).await;

    assert!(
        matches!(verified, Err(Error::Rejected(Rejection::Unknown))),
        "{verified:?}"
    );
}

pub async fn other_pepper_is_config_error(backend: &TestStore) {
    let store = backend.store();
    open(Arc::clone(&store), &pepper()).await;

    let reopened = Tenet::open(store, pepper()).await;

    assert!(matches!(reopened, Err(Error::Config(_))), "{reopened:?}");
}

pub async fn reopen_keeps_tenants_keys_and_revocations(backend: &TestStore) {
    let pepper = pepper();
    let tenet = open(backend.store(), &pepper).await;
    let tenant = tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created");
    let kept = tenet
        .issue_key(tenant.id, None)
        .await
        .expect("key is issued");
    let revoked = tenet
        .issue_key(tenant.id, None)
        .await
        .expect("key is issued");
    tenet
        .revoke_key(tenant.id, revoked.info.id)
        .await
        .expect("key is revoked");
    let keys_before = tenet.list_keys(tenant.id).await.expect("keys list");
    drop(tenet);

    let reopened = open(backend.reopen().await, &pepper).await;

    let tenants = reopened.list_tenants().await.expect("tenants list");
    assert_eq!(tenants, vec![tenant.clone()]);
    let keys_after = reopened.list_keys(tenant.id).await.expect("keys list");
    assert_eq!(keys_after, keys_before);
    let kept_principal = reopened.verify(kept.api_key.expose_secret()).await;
    assert_eq!(
        kept_principal.ok(),
        Some(Principal {
            tenant_id: tenant.id,
            key_id: kept.info.id,
        })
    );
    let revoked_verdict = reopened.verify(revoked.api_key.expose_secret()).await;
    assert!(
        matches!(revoked_verdict, Err(Error::Rejected(Rejection::Revoked))),
        "{revoked_verdict:?}"
    );
}
