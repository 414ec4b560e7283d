//! Every route method against a real server.

use tenet_client::Credential;
use tenet_core::Granularity;
use tenet_core::api::{
    IssueKeyRequest, KeyLimitBody, LimitBody, RotateKeyRequest, TenantLimitsBody, VerifyRequest,
    VerifyResponse,
};

use crate::helpers::TestServer;

#[tokio::test]
async fn tenants_create_list_get() {
    let server = TestServer::start().await;
    let admin = server.admin();

    let first = admin.create_tenant("Acme").await.expect("created");
    let second = admin.create_tenant("Globex").await.expect("created");
    let list = admin.list_tenants().await.expect("listed");
    let read = admin.tenant(second.id).await.expect("read");

    assert_eq!(first.name, "Acme");
    assert_eq!(list.tenants, vec![first, second.clone()]);
    assert_eq!(read, second);
}

#[tokio::test]
async fn key_listing_follows_cursors() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");
    let mut issued = Vec::new();
    for _ in 0..101 {
        let key = admin
            .issue_key(tenant.id, &IssueKeyRequest::default())
            .await
            .expect("issued");
        issued.push(key.id);
    }

    let first = admin.list_keys_page(tenant.id, None).await.expect("listed");
    let cursor = first.next_cursor.clone().expect("a second page");
    let second = admin
        .list_keys_page(tenant.id, Some(&cursor))
        .await
        .expect("listed");
    let all = admin.list_keys(tenant.id).await.expect("listed");

    assert_eq!(first.keys.len(), 100);
    assert_eq!(second.keys.len(), 1);
    assert_eq!(second.next_cursor, None);
    let all_ids: Vec<_> = all.keys.iter().map(|key| key.id).collect();
    assert_eq!(all_ids, issued);
    assert_eq!(all.next_cursor, None);
}

#[tokio::test]
async fn keys_issue_list_revoke() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");

    let issued = admin
        .issue_key(
            tenant.id,
            &IssueKeyRequest {
                name: Some("billing worker".to_owned()),
                ttl_seconds: Some(3600),
                scopes: vec!["billing:read".to_owned()],
                ..IssueKeyRequest::default()
            },
        )
        .await
        .expect("issued");
    let before = admin.list_keys(tenant.id).await.expect("listed");
    admin
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");
    admin
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoking again succeeds");
    let after = admin.list_keys(tenant.id).await.expect("listed");

    assert_eq!(issued.tenant_id, tenant.id);
    assert_eq!(issued.name.as_deref(), Some("billing worker"));
    assert!(issued.api_key.starts_with(&issued.prefix));
    assert!(issued.expires_at.is_some());
    assert_eq!(issued.scopes, vec!["billing:read"]);
    assert_eq!(before.keys[0].scopes, vec!["billing:read"]);
    assert_eq!(before.keys[0].expires_at, issued.expires_at);
    assert_eq!(before.keys.len(), 1);
    assert_eq!(before.keys[0].id, issued.id);
    assert_eq!(before.keys[0].revoked_at, None);
    assert!(after.keys[0].revoked_at.is_some());
}

#[tokio::test]
async fn whoami_and_verify_key_return_the_principal() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    let key_client = server.anonymous().with_credential(issued.api_key.as_str());

    let whoami = key_client.whoami().await.expect("valid key");
    let principal = server
        .anonymous()
        .verify_key(&Credential::new(issued.api_key.as_str()))
        .await
        .expect("valid key");

    assert_eq!(whoami.tenant_id, tenant.id);
    assert_eq!(whoami.key_id, issued.id);
    assert_eq!(principal.tenant_id, tenant.id);
    assert_eq!(principal.key_id, issued.id);
    assert_eq!(principal.scopes, None);
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_credential() {
    let server = TestServer::start().await;
    let client = server.anonymous();

    let health = client.health().await.expect("healthy");
    let ready = client.ready().await.expect("ready");
    let metrics = client.metrics().await.expect("metrics");

    assert_eq!(health.status, "ok");
    assert_eq!(ready.status, "ok");
    assert!(metrics.contains("tenet_ready"), "{metrics}");
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let server = TestServer::start().await;
    let client = tenet_client::Client::builder(&format!("{}/prefix", server.url()))
        .build()
        .expect("valid client");

    let error = client.health().await.expect_err("no route under /prefix");

    assert!(error.is_not_found(), "{error}");
    assert_eq!(error.code(), Some("not_found"));
    assert!(error.to_string().contains("/prefix/healthz"), "{error}");
}

#[tokio::test]
async fn verify_reports_scopes_and_rejections() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (tenant, issued) = server.tenant_with_scoped_key("billing:read").await;
    let request = VerifyRequest {
        key: issued.api_key.clone(),
        scopes: vec!["billing:read".to_owned()],
        consume: true,
    };

    let valid = admin.verify(&request).await.expect("verified");
    let principal = admin
        .verify_key(&Credential::new(issued.api_key.as_str()))
        .await
        .expect("valid key");
    admin
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("revoked");
    let invalid = admin.verify(&request).await.expect("verified");
    let rejected = admin
        .verify_key(&Credential::new(issued.api_key.as_str()))
        .await
        .expect_err("revoked key");

    let VerifyResponse::Valid(valid) = valid else {
        panic!("expected a valid key, got {valid:?}");
    };
    assert_eq!(valid.key_id, issued.id);
    assert_eq!(valid.scopes, vec!["billing:read"]);
    assert_eq!(principal.scopes, Some(vec!["billing:read".to_owned()]));
    let VerifyResponse::Invalid(invalid) = invalid else {
        panic!("expected a rejected key, got {invalid:?}");
    };
    assert_eq!(invalid.code, "key_revoked");
    assert!(rejected.is_key_rejected(), "{rejected}");
    assert_eq!(rejected.code(), Some("key_revoked"));
    assert!(!rejected.to_string().contains(&issued.api_key));
}

#[tokio::test]
async fn revoked_key_rotation_is_conflict() {
    let server = TestServer::start().await;
    let (tenant, key) = server.tenant_with_key().await;
    let admin = server.admin();
    admin.revoke_key(tenant.id, key.id).await.expect("revoked");

    let rotated = admin
        .rotate_key(tenant.id, key.id, &RotateKeyRequest::default())
        .await;
    let limited = admin
        .set_key_limit(tenant.id, key.id, &KeyLimitBody { limit: None })
        .await;

    let rotate_error = rotated.expect_err("a revoked key does not rotate");
    assert!(rotate_error.is_conflict(), "{rotate_error:?}");
    assert_eq!(rotate_error.code(), Some("key_revoked"));
    let limit_error = limited.expect_err("a revoked key takes no limit");
    assert!(limit_error.is_conflict(), "{limit_error:?}");
    assert_eq!(limit_error.code(), Some("key_revoked"));
}

#[tokio::test]
async fn rotate_key_replaces_the_key() {
    let server = TestServer::start().await;
    let (tenant, old) = server.tenant_with_key().await;
    let admin = server.admin();

    let rotated = admin
        .rotate_key(
            tenant.id,
            old.id,
            &RotateKeyRequest {
                grace_seconds: Some(0),
            },
        )
        .await
        .expect("rotated");
    let old_rejected = admin
        .verify_key(&Credential::new(old.api_key.as_str()))
        .await;
    let new_principal = admin
        .verify_key(&Credential::new(rotated.new_key.api_key.as_str()))
        .await
        .expect("new key verifies");

    assert_eq!(rotated.old_key.id, old.id);
    assert_ne!(rotated.new_key.id, old.id);
    assert_ne!(rotated.new_key.api_key, old.api_key);
    assert!(
        old_rejected
            .as_ref()
            .is_err_and(tenet_client::Error::is_key_rejected),
        "{old_rejected:?}"
    );
    assert_eq!(new_principal.key_id, rotated.new_key.id);
}

#[tokio::test]
async fn verify_key_with_checks_scopes() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (_, issued) = server.tenant_with_scoped_key("billing:read").await;
    let key = Credential::new(issued.api_key.as_str());

    let held = admin
        .verify_key_with(&key, &["billing:read".to_owned()])
        .await
        .expect("key holds the scope");
    let missing = admin
        .verify_key_with(&key, &["billing:write".to_owned()])
        .await
        .expect_err("key lacks the scope");
    let anonymous = server
        .anonymous()
        .verify_key_with(&key, &["billing:read".to_owned()])
        .await
        .expect_err("no credential");

    assert_eq!(held.key_id, issued.id);
    assert!(missing.is_key_rejected(), "{missing:?}");
    assert_eq!(missing.code(), Some("missing_scope"));
    assert!(
        matches!(anonymous, tenet_client::Error::MissingCredential { .. }),
        "{anonymous:?}"
    );
}

#[tokio::test]
async fn verify_key_over_a_limit_is_limited() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");
    let limited = IssueKeyRequest {
        limit: Some(LimitBody {
            rate: 1,
            period_seconds: 60,
            burst: 1,
            shadow: false,
        }),
        ..IssueKeyRequest::default()
    };
    let issued = admin.issue_key(tenant.id, &limited).await.expect("issued");
    let key = Credential::new(issued.api_key.as_str());

    let first = admin.verify_key(&key).await.expect("within the limit");
    let second = admin.verify_key(&key).await.expect_err("over the limit");
    let checked = admin
        .check_key(&key, &[], false)
        .await
        .expect("check_key reports the limit state");

    assert_eq!(first.key_id, issued.id);
    assert!(second.is_limited(), "{second:?}");
    assert_eq!(second.code(), Some("rate_limited"));
    let wait = second.retry_after().expect("a wait before the retry");
    assert!((1..=60).contains(&wait.as_secs()), "{wait:?}");
    let state = checked.rate_limit.expect("limit state");
    assert!(!state.allowed);
}

#[tokio::test]
async fn verify_key_over_the_quota_is_limited() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (tenant, issued) = server.tenant_with_key().await;
    let quota = TenantLimitsBody {
        limit: None,
        monthly_quota: Some(1),
    };
    admin
        .set_limits(tenant.id, &quota)
        .await
        .expect("quota set");
    let key = Credential::new(issued.api_key.as_str());

    admin.verify_key(&key).await.expect("within the quota");
    let over = admin.verify_key(&key).await.expect_err("over the quota");

    assert!(over.is_limited(), "{over:?}");
    assert_eq!(over.code(), Some("quota_exceeded"));
    assert!(over.retry_after().is_some(), "{over:?}");
    assert!(over.to_string().contains("resets at"), "{over}");
}

#[tokio::test]
async fn limits_set_get_and_key_limit() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await.expect("created");
    let key = admin
        .issue_key(tenant.id, &IssueKeyRequest::default())
        .await
        .expect("issued");
    let limits = TenantLimitsBody {
        limit: Some(LimitBody {
            rate: 100,
            period_seconds: 60,
            burst: 20,
            shadow: false,
        }),
        monthly_quota: Some(1000),
    };
    let key_limit = KeyLimitBody {
        limit: Some(LimitBody {
            rate: 1,
            period_seconds: 3600,
            burst: 1,
            shadow: false,
        }),
    };

    let before = admin.get_limits(tenant.id).await.expect("read");
    let stored = admin.set_limits(tenant.id, &limits).await.expect("set");
    let after = admin.get_limits(tenant.id).await.expect("read");
    let key_before = admin.get_key_limit(tenant.id, key.id).await.expect("read");
    let key_stored = admin
        .set_key_limit(tenant.id, key.id, &key_limit)
        .await
        .expect("set");
    let key_after = admin.get_key_limit(tenant.id, key.id).await.expect("read");
    let other_tenant = admin.create_tenant("Other").await.expect("created");
    let foreign = admin.get_key_limit(other_tenant.id, key.id).await;
    let invalid = admin
        .set_limits(
            tenant.id,
            &TenantLimitsBody {
                limit: None,
                monthly_quota: Some(0),
            },
        )
        .await;

    assert_eq!(before, TenantLimitsBody::default());
    assert_eq!(stored, limits);
    assert_eq!(after, limits);
    assert_eq!(key_stored, key_limit);
    assert_eq!(key_before, KeyLimitBody { limit: None });
    assert_eq!(key_after, key_limit);
    assert!(
        foreign
            .as_ref()
            .is_err_and(tenet_client::Error::is_not_found),
        "{foreign:?}"
    );
    let err = invalid.expect_err("a zero quota is invalid");
    assert!(err.to_string().contains("invalid_quota"), "{err}");
}

#[tokio::test]
async fn usage_and_export_match_requests() {
    let server = TestServer::start_with(&["--usage-flush-interval", "1"]).await;
    let admin = server.admin();
    let (tenant, issued) = server.tenant_with_key().await;
    let key = server.anonymous().with_credential(issued.api_key.as_str());
    for _ in 0..3 {
        key.whoami().await.expect("the key is accepted");
    }
    let now = time::OffsetDateTime::now_utc();
    let (from, to) = (
        now - time::Duration::hours(2),
        now + time::Duration::hours(2),
    );

    // The counts reach the store at the next flush, within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let usage = loop {
        let usage = admin
            .usage(tenant.id, from, to, Granularity::Day)
            .await
            .expect("usage reads");
        if usage.totals.accepted == 3 || std::time::Instant::now() > deadline {
            break usage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let records = admin
        .export_usage(tenant.id, from, to)
        .await
        .expect("usage exports");
    let again = admin
        .export_usage(tenant.id, from, to)
        .await
        .expect("usage exports");

    assert_eq!(usage.totals.accepted, 3);
    assert_eq!(usage.totals.rejected, 0);
    assert_eq!(usage.granularity, "day");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key_id, issued.id);
    assert_eq!(records[0].accepted, 3);
    assert_eq!(records, again, "a second export is identical");
}
