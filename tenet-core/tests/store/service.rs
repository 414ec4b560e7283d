//! Service cases through `Tenet`, on every backend.

use std::sync::Arc;
use std::time::Duration;

use tenet_core::{
    Actor, ApiKey, AuditAction, AuditId, AuditTarget, Error, IssuedKey, KeyId, KeyName, KeyOptions,
    Limit, Pepper, Principal, Rejection, Scope, Store, TenantId, TenantLimits, TenantName,
    TenantStatus, Tenet,
};
use time::OffsetDateTime;

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

async fn tenant_of(tenet: &Tenet) -> tenet_core::TenantId {
    tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created")
        .id
}

pub async fn expired_key_is_rejected(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let expires_at = OffsetDateTime::now_utc() + Duration::from_millis(1_500);
    let issued = tenet
        .issue_key_with(
            tenant,
            KeyOptions {
                expires_at: Some(expires_at),
                ..KeyOptions::default()
            },
        )
        .await
        .expect("key is issued");
    let presented = issued.api_key.expose_secret();

    let before = tenet.verify_with(presented, &[]).await;
    let remaining = expires_at - OffsetDateTime::now_utc();
    tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(20)).await;
    let after = tenet.verify(presented).await;

    let verified = before.expect("the key verifies before its expiry");
    assert_eq!(verified.expires_at, issued.info.expires_at);
    assert!(
        matches!(after, Err(Error::Rejected(Rejection::Expired))),
        "{after:?}"
    );
}

pub async fn scopes_are_required(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let scopes = Scope::parse_list(&["billing:read", "billing:write"]).expect("valid scopes");
    let issued = tenet
        .issue_key_with(
            tenant,
            KeyOptions {
                scopes: scopes.clone(),
                ..KeyOptions::default()
            },
        )
        .await
        .expect("key is issued");
    let presented = issued.api_key.expose_secret();

    let held = tenet.verify_with(presented, &["billing:read"]).await;
    let missing = tenet
        .verify_with(presented, &["billing:read", "admin"])
        .await;

    let held = held.expect("a held scope verifies");
    assert_eq!(&*held.scopes, scopes.as_slice());
    assert!(
        matches!(missing, Err(Error::Rejected(Rejection::MissingScope))),
        "{missing:?}"
    );
}

pub async fn invalid_expiry_is_rejected(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;

    let past = tenet
        .issue_key_with(
            tenant,
            KeyOptions {
                expires_at: Some(OffsetDateTime::now_utc() - Duration::from_secs(1)),
                ..KeyOptions::default()
            },
        )
        .await;

    assert!(
        matches!(
            past,
            Err(Error::Invalid {
                field: "expires_at",
                ..
            })
        ),
        "{past:?}"
    );
    let keys = tenet.list_keys(tenant).await.expect("keys list");
    assert!(keys.is_empty(), "{keys:?}");
}

pub async fn rotated_key_ends_after_grace(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let scopes = Scope::parse_list(&["billing:read"]).expect("valid scopes");
    let old = tenet
        .issue_key_with(
            tenant,
            KeyOptions {
                name: Some(KeyName::parse("worker").expect("valid name")),
                scopes: scopes.clone(),
                ..KeyOptions::default()
            },
        )
        .await
        .expect("key is issued");
    let immediate = tenet.issue_key(tenant, None).await.expect("key is issued");

    let rotated = tenet
        .rotate_key(tenant, old.info.id, Duration::from_millis(1_000))
        .await
        .expect("key is rotated");
    tenet
        .rotate_key(tenant, immediate.info.id, Duration::ZERO)
        .await
        .expect("key is rotated");

    assert_eq!(rotated.issued.info.name, old.info.name);
    assert_eq!(rotated.issued.info.scopes, scopes);
    let old_expiry = rotated.old.expires_at.expect("the old key now expires");
    let new_key = rotated.issued.api_key.expose_secret();
    assert!(tenet.verify(new_key).await.is_ok());
    assert!(tenet.verify(old.api_key.expose_secret()).await.is_ok());
    let revoked = tenet.verify(immediate.api_key.expose_secret()).await;
    assert!(
        matches!(revoked, Err(Error::Rejected(Rejection::Revoked))),
        "{revoked:?}"
    );

    let remaining = old_expiry - OffsetDateTime::now_utc();
    tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(20)).await;
    let expired = tenet.verify(old.api_key.expose_secret()).await;
    assert!(
        matches!(expired, Err(Error::Rejected(Rejection::Expired))),
        "{expired:?}"
    );
    assert!(tenet.verify(new_key).await.is_ok());
}

pub async fn suspended_tenant_keys_are_rejected(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");
    let presented = issued.api_key.expose_secret();

    let suspended = tenet.suspend_tenant(tenant).await.expect("suspended");
    let again = tenet.suspend_tenant(tenant).await.expect("suspended again");
    let while_suspended = tenet.verify(presented).await;
    let resumed = tenet.resume_tenant(tenant).await.expect("resumed");
    let after = tenet.verify(presented).await;

    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(again.status, TenantStatus::Suspended);
    assert!(
        matches!(
            while_suspended,
            Err(Error::Rejected(Rejection::TenantSuspended { tenant: rejected }))
                if rejected == tenant
        ),
        "{while_suspended:?}"
    );
    assert_eq!(resumed.status, TenantStatus::Active);
    assert!(after.is_ok(), "{after:?}");
}

pub async fn deleted_tenant_keeps_only_its_audit(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");

    tenet.delete_tenant(tenant).await.expect("deleted");

    let verified = tenet.verify(issued.api_key.expose_secret()).await;
    assert!(
        matches!(verified, Err(Error::Rejected(Rejection::Revoked))),
        "{verified:?}"
    );
    let not_found =
        |result: &Result<_, Error>| matches!(result, Err(Error::NotFound { kind: "tenant", .. }));
    assert!(not_found(&tenet.tenant(tenant).await.map(|_| ())));
    assert!(not_found(&tenet.delete_tenant(tenant).await));
    assert!(not_found(&tenet.suspend_tenant(tenant).await.map(|_| ())));
    assert!(not_found(&tenet.list_keys(tenant).await.map(|_| ())));
    assert!(not_found(
        &tenet.revoke_key(tenant, issued.info.id).await.map(|_| ())
    ));
    assert!(not_found(&tenet.issue_key(tenant, None).await.map(|_| ())));
    assert!(not_found(
        &tenet
            .set_tenant_limits(tenant, TenantLimits::default())
            .await
            .map(|_| ())
    ));
    let key_limit = tenet.set_key_limit(tenant, issued.info.id, None).await;
    assert!(
        matches!(key_limit, Err(Error::NotFound { kind: "tenant", .. })),
        "{key_limit:?}"
    );
    let listed = tenet.list_tenants().await.expect("tenants list");
    assert!(listed.iter().all(|listed| listed.id != tenant));
    let audit = tenet
        .audit_page(tenant, None, 50)
        .await
        .expect("audit reads");
    assert_eq!(audit.items.len(), 3);
    assert_eq!(audit.items[2].action, AuditAction::DeleteTenant);
}

pub async fn audit_trail_records_actor_and_target(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let admin_key = tenet.issue_key(tenant, None).await.expect("key is issued");
    let as_key = tenet.acting_as(Actor::Key(admin_key.info.id));

    let issued = as_key.issue_key(tenant, None).await.expect("key is issued");
    let rotated = as_key
        .rotate_key(tenant, issued.info.id, Duration::ZERO)
        .await
        .expect("key rotates");
    as_key
        .revoke_key(tenant, rotated.issued.info.id)
        .await
        .expect("key is revoked");
    tenet
        .rename_tenant(
            tenant,
            TenantName::parse("Acme Europe").expect("valid name"),
        )
        .await
        .expect("renamed");
    tenet.suspend_tenant(tenant).await.expect("suspended");
    tenet.resume_tenant(tenant).await.expect("resumed");
    tenet.delete_tenant(tenant).await.expect("deleted");
    let first = tenet
        .audit_page(tenant, None, 5)
        .await
        .expect("audit reads");
    let after = first.next_after.map(AuditId::from_uuid);
    let second = tenet
        .audit_page(tenant, after, 5)
        .await
        .expect("audit reads");

    let entries: Vec<_> = first.items.iter().chain(&second.items).collect();
    let summary: Vec<_> = entries
        .iter()
        .map(|entry| (entry.action, entry.actor, entry.target))
        .collect();
    let admin = Actor::Admin;
    let key = Actor::Key(admin_key.info.id);
    let tenant_target = AuditTarget::Tenant(tenant);
    assert_eq!(
        summary,
        vec![
            (AuditAction::CreateTenant, admin, tenant_target),
            (
                AuditAction::IssueKey,
                admin,
                AuditTarget::Key(admin_key.info.id)
            ),
            (AuditAction::IssueKey, key, AuditTarget::Key(issued.info.id)),
            (
                AuditAction::RotateKey,
                key,
                AuditTarget::Key(issued.info.id)
            ),
            (
                AuditAction::RevokeKey,
                key,
                AuditTarget::Key(rotated.issued.info.id)
            ),
            (AuditAction::RenameTenant, admin, tenant_target),
            (AuditAction::SuspendTenant, admin, tenant_target),
            (AuditAction::ResumeTenant, admin, tenant_target),
            (AuditAction::DeleteTenant, admin, tenant_target),
        ]
    );
    assert_eq!(second.next_after, None);
    assert!(entries.iter().all(|entry| entry.tenant_id == tenant));
    assert!(entries.windows(2).all(|pair| pair[0].at <= pair[1].at));
    let missing = tenet.audit_page(TenantId::generate(), None, 5).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

/// Issues a key that expires `lifetime` from now.
async fn issue_expiring(tenet: &Tenet, tenant: TenantId, lifetime: Duration) -> IssuedKey {
    let options = KeyOptions {
        expires_at: Some(OffsetDateTime::now_utc() + lifetime),
        ..KeyOptions::default()
    };
    tenet
        .issue_key_with(tenant, options)
        .await
        .expect("key is issued")
}

pub async fn expired_key_rotation_is_rejected(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = issue_expiring(&tenet, tenant, Duration::from_millis(300)).await;
    let expires_at = issued.info.expires_at.expect("the key expires");

    let remaining = expires_at - OffsetDateTime::now_utc();
    tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(20)).await;
    let rotated = tenet
        .rotate_key(tenant, issued.info.id, Duration::from_secs(60))
        .await;

    match rotated {
        Err(Error::KeyExpired { key, expired_at }) => {
            assert_eq!(key, issued.info.id);
            assert_eq!(expired_at, expires_at);
        }
        other => panic!("expected KeyExpired, got {other:?}"),
    }
    let keys = tenet.list_keys(tenant).await.expect("keys list");
    assert_eq!(keys.len(), 1, "no replacement was stored: {keys:?}");
}

pub async fn replacement_keeps_unexpired_expiry(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = issue_expiring(&tenet, tenant, Duration::from_secs(3_600)).await;

    let rotated = tenet
        .rotate_key(tenant, issued.info.id, Duration::from_secs(60))
        .await
        .expect("key is rotated");

    assert_eq!(rotated.issued.info.expires_at, issued.info.expires_at);
}

pub async fn key_rotates_only_once(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");
    let grace = Duration::from_secs(3_600);

    let first = tenet
        .rotate_key(tenant, issued.info.id, grace)
        .await
        .expect("key is rotated");
    let again = tenet.rotate_key(tenant, issued.info.id, grace).await;
    let successor = tenet
        .rotate_key(tenant, first.issued.info.id, grace)
        .await
        .expect("the successor rotates");

    let new_id = first.issued.info.id;
    assert_eq!(first.old.replaced_by, Some(new_id));
    match again {
        Err(Error::KeyRotated { key, successor }) => {
            assert_eq!(key, issued.info.id);
            assert_eq!(successor, new_id);
        }
        other => panic!("expected KeyRotated, got {other:?}"),
    }
    assert_eq!(successor.old.replaced_by, Some(successor.issued.info.id));
    let keys = tenet.list_keys(tenant).await.expect("keys list");
    assert_eq!(keys.len(), 3, "{keys:?}");
}

pub async fn revoked_rotated_key_names_successor(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");
    let first = tenet
        .rotate_key(tenant, issued.info.id, Duration::ZERO)
        .await
        .expect("key is rotated");

    let again = tenet
        .rotate_key(tenant, issued.info.id, Duration::ZERO)
        .await;

    assert!(
        matches!(again, Err(Error::KeyRotated { successor, .. }) if successor == first.issued.info.id),
        "{again:?}"
    );
}

pub async fn revoked_key_rejects_rotation_and_limit(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");
    tenet
        .revoke_key(tenant, issued.info.id)
        .await
        .expect("key is revoked");

    let rotated = tenet
        .rotate_key(tenant, issued.info.id, Duration::ZERO)
        .await;
    let limited = tenet.set_key_limit(tenant, issued.info.id, None).await;

    assert!(
        matches!(rotated, Err(Error::KeyRevoked { key }) if key == issued.info.id),
        "{rotated:?}"
    );
    assert!(
        matches!(limited, Err(Error::KeyRevoked { key }) if key == issued.info.id),
        "{limited:?}"
    );
}

/// Runs 20 rotations of one key at once through the service: one returns
/// the new key and every other one names that key as the successor.
pub async fn parallel_rotations_leave_one_successor(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let tenet = tenet.clone();
            let key = issued.info.id;
            tokio::spawn(async move {
                tenet
                    .rotate_key(tenant, key, Duration::from_secs(3_600))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut named = Vec::new();
    for task in tasks {
        match task.await.expect("task finished") {
            Ok(rotated) => winners.push(rotated.issued),
            Err(Error::KeyRotated { successor, .. }) => named.push(successor),
            Err(other) => panic!("unexpected rotation error: {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = winners[0].info.id;
    assert_eq!(named.len(), 19);
    assert!(
        named.iter().all(|successor| *successor == winner),
        "{named:?}"
    );
    let keys = tenet.list_keys(tenant).await.expect("keys list");
    let live: Vec<_> = keys
        .iter()
        .filter(|key| key.replaced_by.is_none())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(
        tenet
            .verify(winners[0].api_key.expose_secret())
            .await
            .is_ok()
    );
}

pub async fn rotation_expiry_is_capped(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let lasting = tenet.issue_key(tenant, None).await.expect("key is issued");
    let expiring = issue_expiring(&tenet, tenant, Duration::from_secs(600)).await;
    let cap = millis_now() + Duration::from_secs(60);
    let grace = Duration::from_secs(30);

    let capped = tenet
        .rotate_key_expiring_by(tenant, lasting.info.id, grace, Some(cap))
        .await
        .expect("key is rotated");
    let sooner_kept = tenet
        .rotate_key_expiring_by(
            tenant,
            expiring.info.id,
            grace,
            Some(cap + Duration::from_secs(3_600)),
        )
        .await
        .expect("key is rotated");

    let passed = tenet
        .rotate_key_expiring_by(
            tenant,
            capped.issued.info.id,
            grace,
            Some(millis_now() - Duration::from_secs(1)),
        )
        .await;

    assert_eq!(capped.issued.info.expires_at, Some(cap));
    assert_eq!(sooner_kept.issued.info.expires_at, expiring.info.expires_at);
    assert!(
        matches!(
            passed,
            Err(Error::Invalid {
                field: "expires_at",
                ..
            })
        ),
        "{passed:?}"
    );
}

/// Returns the current time truncated to milliseconds, as stores keep it.
fn millis_now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond())
        .expect("a millisecond of the current time is valid")
}
pub async fn issue_and_rotate_keep_the_limit(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let own = Limit::new(5, Duration::from_secs(1), 2).expect("valid limit");
    let options = KeyOptions {
        limit: Some(own.clone()),
        ..KeyOptions::default()
    };

    let issued = tenet
        .issue_key_with(tenant, options)
        .await
        .expect("key is issued");
    let graced = tenet
        .rotate_key(tenant, issued.info.id, Duration::from_secs(60))
        .await
        .expect("key rotates");
    let immediate = tenet
        .rotate_key(tenant, graced.issued.info.id, Duration::ZERO)
        .await
        .expect("key rotates");

    let store = tenet.store();
    for (what, key) in [
        ("issued", &issued),
        ("rotated with grace", &graced.issued),
        ("rotated at once", &immediate.issued),
    ] {
        assert_eq!(key.limit.as_ref(), Some(&own), "{what}: returned limit");
        assert_eq!(
            store.key_limit(key.info.id).await.expect("limit reads"),
            Some(own.clone()),
            "{what}: stored limit"
        );
    }
}

pub async fn limit_changes_record_actor(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let admin_key = tenet.issue_key(tenant, None).await.expect("key is issued");
    let as_key = tenet.acting_as(Actor::Key(admin_key.info.id));
    let limit = Limit::new(5, Duration::from_secs(1), 2).expect("valid limit");
    let limits = TenantLimits {
        limit: Some(limit.clone()),
        monthly_quota: Some(100),
    };

    tenet
        .set_tenant_limits(tenant, limits)
        .await
        .expect("limits are set");
    as_key
        .set_key_limit(tenant, admin_key.info.id, Some(limit))
        .await
        .expect("limit is set");
    let missing = as_key.set_key_limit(tenant, KeyId::generate(), None).await;

    let trail = tenet
        .audit_page(tenant, None, 50)
        .await
        .expect("audit reads");
    let summary: Vec<_> = trail
        .items
        .iter()
        .map(|entry| (entry.action, entry.actor, entry.target))
        .collect();
    assert_eq!(
        summary[2..],
        [
            (
                AuditAction::SetTenantLimits,
                Actor::Admin,
                AuditTarget::Tenant(tenant)
            ),
            (
                AuditAction::SetKeyLimit,
                Actor::Key(admin_key.info.id),
                AuditTarget::Key(admin_key.info.id)
            ),
        ]
    );
    assert!(
        matches!(missing, Err(Error::NotFound { kind: "key", .. })),
        "{missing:?}"
    );
}

pub async fn one_key_reads_find_keys_among_many(backend: &TestStore) {
    let tenet = open(backend.store(), &pepper()).await;
    let tenant = tenant_of(&tenet).await;
    let other = tenant_of(&tenet).await;
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(tenet.issue_key(tenant, None).await.expect("key is issued"));
    }
    let foreign = tenet.issue_key(other, None).await.expect("key is issued");
    let between = KeyId::from_uuid(uuid::Uuid::from_u128(
        keys[2].info.id.as_uuid().as_u128() + 1,
    ));

    for (index, key) in keys.iter().enumerate() {
        let limit = tenet.key_limit(tenant, key.info.id).await;
        assert!(matches!(limit, Ok(None)), "key {index}: {limit:?}");
    }
    let foreign_limit = tenet.key_limit(tenant, foreign.info.id).await;
    let between_limit = tenet.key_limit(tenant, between).await;
    let rotated = tenet
        .rotate_key(tenant, keys[3].info.id, Duration::ZERO)
        .await;
    let foreign_rotation = tenet
        .rotate_key(tenant, foreign.info.id, Duration::ZERO)
        .await;

    assert!(
        matches!(foreign_limit, Err(Error::NotFound { .. })),
        "{foreign_limit:?}"
    );
    assert!(
        matches!(between_limit, Err(Error::NotFound { .. })),
        "{between_limit:?}"
    );
    assert!(rotated.is_ok(), "{rotated:?}");
    assert!(
        matches!(foreign_rotation, Err(Error::NotFound { .. })),
        "{foreign_rotation:?}"
    );
}

pub async fn concurrent_misses_share_one_read(backend: &TestStore) {
    let store = Arc::new(crate::usage::CountingStore::with_key_read_delay(
        backend.store(),
        Duration::from_millis(200),
    ));
    let tenet = Tenet::builder(Arc::clone(&store) as Arc<dyn Store>, pepper())
        .cache(tenet_core::CacheOptions::default())
        .build()
        .await
        .expect("service opens");
    let tenant = tenant_of(&tenet).await;
    let issued = tenet.issue_key(tenant, None).await.expect("key is issued");
    let key = issued.api_key.expose_secret();
    // On a shared store, the poll of key events applies the issue event
    // within the staleness bound (1 s). Its invalidation would make the
    // fill below lose, so it is let pass first.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = store.key_reads.load(std::sync::atomic::Ordering::SeqCst);

    let results =
        futures_util::future::join_all((0..20).map(|_| async { tenet.verify(key).await })).await;
    let reads = store.key_reads.load(std::sync::atomic::Ordering::SeqCst) - before;

    for (index, result) in results.iter().enumerate() {
        assert_eq!(
            result.as_ref().ok(),
            Some(&issued_principal(&issued)),
            "verification {index}"
        );
    }
    assert_eq!(
        reads, 1,
        "20 concurrent misses of one key read the store once"
    );
}

fn issued_principal(issued: &IssuedKey) -> Principal {
    Principal {
        tenant_id: issued.info.tenant_id,
        key_id: issued.info.id,
    }
}
