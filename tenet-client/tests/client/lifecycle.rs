//! The tenant lifecycle methods against a real server.

use tenet_client::Credential;
use tenet_core::api::{IssueKeyRequest, VerifyRequest, VerifyResponse};

use crate::helpers::TestServer;

#[tokio::test]
async fn suspend_and_resume_switch_key_verification() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (tenant, key) = server.tenant_with_key().await;
    let presented = Credential::new(key.api_key.clone());
    let check = VerifyRequest {
        key: key.api_key.clone(),
        scopes: Vec::new(),
        consume: true,
    };

    let suspended = admin.suspend_tenant(tenant.id).await.expect("suspended");
    let rejected = server.anonymous().verify_key(&presented).await;
    let reason = admin.verify(&check).await.expect("verify answers");
    let resumed = admin.resume_tenant(tenant.id).await.expect("resumed");
    let accepted = server.anonymous().verify_key(&presented).await;

    assert_eq!(suspended.status, "suspended");
    let err = rejected.expect_err("a suspended tenant's key is rejected");
    assert!(err.is_key_rejected(), "{err}");
    assert_eq!(err.code(), Some("tenant_suspended"));
    match reason {
        VerifyResponse::Invalid(invalid) => assert_eq!(invalid.code, "tenant_suspended"),
        VerifyResponse::Valid(_) => panic!("a suspended tenant's key verified"),
    }
    assert_eq!(resumed.status, "active");
    assert_eq!(accepted.expect("valid again").tenant_id, tenant.id);
}

#[tokio::test]
async fn rename_returns_the_new_name() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");

    let renamed = admin
        .rename_tenant(tenant.id, "Acme Europe")
        .await
        .expect("renamed");
    let blank = admin.rename_tenant(tenant.id, " ").await;

    assert_eq!(renamed.name, "Acme Europe");
    assert_eq!(admin.tenant(tenant.id).await.expect("read"), renamed);
    let err = blank.expect_err("a blank name is invalid");
    assert!(err.is_invalid_input(), "{err}");
    assert_eq!(err.code(), Some("invalid_name"));
}

#[tokio::test]
async fn delete_hides_the_tenant_and_keeps_its_audit() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (tenant, key) = server.tenant_with_key().await;

    admin.delete_tenant(tenant.id).await.expect("deleted");

    let read = admin.tenant(tenant.id).await.expect_err("gone");
    assert!(read.is_not_found(), "{read}");
    let again = admin.delete_tenant(tenant.id).await.expect_err("gone");
    assert_eq!(again.code(), Some("tenant_not_found"));
    let rejected = server
        .anonymous()
        .verify_key(&Credential::new(key.api_key.clone()))
        .await
        .expect_err("the key was revoked");
    assert!(rejected.is_key_rejected(), "{rejected}");
    let audit = admin.list_audit(tenant.id).await.expect("audit reads");
    let actions: Vec<&str> = audit
        .entries
        .iter()
        .map(|entry| entry.action.as_str())
        .collect();
    assert_eq!(actions, ["create_tenant", "issue_key", "delete_tenant"]);
}

#[tokio::test]
async fn audit_listing_follows_cursors() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");
    for _ in 0..100 {
        admin
            .issue_key(tenant.id, &IssueKeyRequest::default())
            .await
            .expect("issued");
    }

    let first = admin
        .list_audit_page(tenant.id, None)
        .await
        .expect("listed");
    let cursor = first.next_cursor.clone().expect("a second page");
    let second = admin
        .list_audit_page(tenant.id, Some(&cursor))
        .await
        .expect("listed");
    let all = admin.list_audit(tenant.id).await.expect("listed");

    assert_eq!(first.entries.len(), 100);
    assert_eq!(second.entries.len(), 1);
    assert_eq!(all.entries.len(), 101);
    assert_eq!(all.entries[..100], first.entries[..]);
    assert_eq!(all.next_cursor, None);
    assert!(all.entries.iter().all(|entry| entry.actor == "admin"));
}
