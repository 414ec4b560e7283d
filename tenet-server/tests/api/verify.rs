//! Key expiry and scopes over HTTP, and `POST /verify`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenet_core::api::{IssuedKeyResponse, TenantResponse};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

/// Issues a key with `body` and returns the status and JSON body.
async fn issue(server: &TestServer, tenant: &TenantResponse, body: Value) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn issue_ok(server: &TestServer, tenant: &TenantResponse, body: Value) -> IssuedKeyResponse {
    let (status, body) = issue(server, tenant, body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).expect("issued key JSON")
}

/// Calls `/verify` with `auth` as the bearer credential.
async fn verify(server: &TestServer, auth: &str, body: Value) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url("/verify"))
        .bearer_auth(auth)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_returns_expiry_and_scopes() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;

    let key = issue_ok(
        &server,
        &tenant,
        json!({"ttl_seconds": 3600, "scopes": ["b:write", "a:read", "b:write"]}),
    )
    .await;
    let listed = server.admin().keys(&tenant).await;

    assert_eq!(key.scopes, ["a:read", "b:write"]);
    let expires_at = key.expires_at.expect("an expiry");
    let lifetime = expires_at - OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::minutes(59) && lifetime <= time::Duration::hours(1),
        "{lifetime}"
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].scopes, key.scopes);
    assert_eq!(listed[0].expires_at, key.expires_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_expiry_and_scopes_are_rejected() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let past = (OffsetDateTime::now_utc() - Duration::from_secs(60))
        .format(&Rfc3339)
        .expect("formats");
    let too_far = (OffsetDateTime::now_utc() + Duration::from_secs(11 * 366 * 86_400))
        .format(&Rfc3339)
        .expect("formats");
    let many: Vec<String> = (0..65).map(|n| format!("s{n}")).collect();
    let cases = [
        (json!({"expires_at": past}), "invalid_expiry"),
        (json!({"expires_at": too_far}), "invalid_expiry"),
        (json!({"ttl_seconds": 0}), "invalid_expiry"),
        (
            json!({"ttl_seconds": 60, "expires_at": too_far}),
            "invalid_expiry",
        ),
        (json!({"expires_at": "tomorrow"}), "invalid_expiry"),
        (json!({"scopes": ["Admin"]}), "invalid_scopes"),
        (json!({"scopes": [""]}), "invalid_scopes"),
        (json!({"scopes": ["a".repeat(65)]}), "invalid_scopes"),
        (json!({"scopes": many}), "invalid_scopes"),
    ];

    for (body, code) in cases {
        let (status, response) = issue(&server, &tenant, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(response["error"]["code"], code, "{body}");
    }
    assert!(server.admin().keys(&tenant).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_expiry_names_value_and_form() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let cases = [
        ("date only", json!("2030-01-01"), "\"2030-01-01\""),
        (
            "no offset",
            json!("2030-01-01T00:00:00"),
            "\"2030-01-01T00:00:00\"",
        ),
        (
            "month 13",
            json!("2030-13-01T00:00:00Z"),
            "\"2030-13-01T00:00:00Z\"",
        ),
        ("a number", json!(1_893_456_000), "1893456000"),
    ];

    for (description, value, shown) in cases {
        let (status, body) = issue(&server, &tenant, json!({"expires_at": value})).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{description}");
        assert_eq!(body["error"]["code"], "invalid_expiry", "{description}");
        let message = body["error"]["message"].as_str().expect("a message");
        assert!(message.contains(shown), "{description}: {message}");
        assert!(message.contains("RFC 3339"), "{description}: {message}");
        assert!(
            message.contains("2030-01-01T00:00:00Z"),
            "{description}: {message}"
        );
    }
    assert!(server.admin().keys(&tenant).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_expiry_message_is_rfc_3339() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;

    let (status, body) = issue(
        &server,
        &tenant,
        json!({"expires_at": "2020-01-01T09:00:00+09:00"}),
    )
    .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_expiry");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(message.contains("2020-01-01T00:00:00.000Z"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_gets_401_on_protected() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = issue_ok(&server, &tenant, json!({"ttl_seconds": 1})).await;
    let headers = [("x-api-key", key.api_key.as_str())];

    let before = protected_status(&server, &headers).await;
    let remaining = key.expires_at.expect("an expiry") - OffsetDateTime::now_utc();
    tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(20)).await;
    let after = protected_status(&server, &headers).await;
    let (_, verdict) = verify(&server, ADMIN_TOKEN, json!({"key": key.api_key})).await;

    assert_eq!(before, StatusCode::OK);
    assert_eq!(after, StatusCode::UNAUTHORIZED);
    assert_eq!(verdict, json!({"valid": false, "code": "key_expired"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_each_outcome() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let scoped = issue_ok(&server, &tenant, json!({"scopes": ["billing:read"]})).await;
    let revoked = admin.issue_key(&tenant).await;
    admin.revoke_key(&tenant, &revoked).await;
    let unknown = tenet_core::ApiKey::generate();

    let (status, valid) = verify(
        &server,
        ADMIN_TOKEN,
        json!({"key": scoped.api_key, "scopes": ["billing:read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        valid,
        json!({
            "valid": true,
            "tenant_id": tenant.id,
            "key_id": scoped.id,
            "scopes": ["billing:read"],
            "expires_at": null,
            "rate_limit": null,
        })
    );

    let cases = [
        (
            json!({"key": scoped.api_key, "scopes": ["billing:write"]}),
            "missing_scope",
        ),
        (json!({"key": revoked.api_key}), "key_revoked"),
        (json!({"key": unknown.expose_secret()}), "key_unknown"),
        (json!({"key": "tnt_short"}), "key_malformed"),
        (json!({"key": ""}), "key_malformed"),
    ];
    for (body, code) in cases {
        let (status, verdict) = verify(&server, ADMIN_TOKEN, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(verdict, json!({"valid": false, "code": code}), "{body}");
    }

    let (status, error) = verify(
        &server,
        ADMIN_TOKEN,
        json!({"key": scoped.api_key, "scopes": ["Bad Scope"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "invalid_scopes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_needs_admin_or_verify_scope() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let verifier = issue_ok(&server, &tenant, json!({"scopes": ["tenet:verify"]})).await;
    let plain = server.admin().issue_key(&tenant).await;
    let body = json!({"key": plain.api_key});

    let (by_key, verdict) = verify(&server, &verifier.api_key, body.clone()).await;
    let (unscoped, unscoped_error) = verify(&server, &plain.api_key, body.clone()).await;
    let (wrong, _) = verify(&server, "not-the-admin-token", body.clone()).await;
    let anonymous = server
        .client
        .post(server.url("/verify"))
        .json(&body)
        .send()
        .await
        .expect("request sent")
        .status();
    let get = server
        .client
        .get(server.url("/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent")
        .status();

    assert_eq!(by_key, StatusCode::OK);
    assert_eq!(verdict["valid"], true);
    assert_eq!(unscoped, StatusCode::FORBIDDEN);
    assert_eq!(unscoped_error["error"]["code"], "missing_scope");
    assert_eq!(wrong, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(get, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_without_key_field_is_invalid_json() {
    let server = TestServer::start().await;
    let bodies = [
        ("empty object", json!({})),
        ("scopes only", json!({"scopes": ["billing:read"]})),
    ];

    for (description, body) in bodies {
        let (status, error) = verify(&server, ADMIN_TOKEN, body).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{description}");
        assert_eq!(error["error"]["code"], "invalid_json", "{description}");
        let message = error["error"]["message"].as_str().expect("a message");
        assert!(
            message.contains("missing field `key`"),
            "{description}: {message}"
        );
    }
}
