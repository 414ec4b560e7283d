//! `POST /tenants/{id}/keys/{key_id}/rotate`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenet_core::api::{RotateKeyResponse, TenantResponse};
use time::OffsetDateTime;

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

async fn rotate(
    server: &TestServer,
    tenant: &TenantResponse,
    key_id: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys/{key_id}/rotate", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_key_for_grace() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let old = server.admin().issue_key(&tenant).await;
    let old_headers = [("x-api-key", old.api_key.as_str())];
    assert_eq!(
        protected_status(&server, &old_headers).await,
        StatusCode::OK
    );

    let (status, body) = rotate(
        &server,
        &tenant,
        &old.id.to_string(),
        json!({"grace_seconds": 1}),
    )
    .await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rotated: RotateKeyResponse = serde_json::from_value(body).expect("rotation JSON");
    assert_eq!(rotated.old_key.id, old.id);
    assert_eq!(rotated.new_key.name, old.name);
    let new_headers = [("x-api-key", rotated.new_key.api_key.as_str())];
    assert_eq!(
        protected_status(&server, &new_headers).await,
        StatusCode::OK
    );
    assert_eq!(
        protected_status(&server, &old_headers).await,
        StatusCode::OK
    );

    let old_expiry = rotated.old_key.expires_at.expect("the old key now expires");
    let remaining = old_expiry - OffsetDateTime::now_utc();
    tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(20)).await;
    assert_eq!(
        protected_status(&server, &old_headers).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        protected_status(&server, &new_headers).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_with_zero_grace_revokes() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let old = server.admin().issue_key(&tenant).await;
    let old_headers = [("x-api-key", old.api_key.as_str())];
    assert_eq!(
        protected_status(&server, &old_headers).await,
        StatusCode::OK
    );

    let (status, body) = rotate(
        &server,
        &tenant,
        &old.id.to_string(),
        json!({"grace_seconds": 0}),
    )
    .await;
    let (again, again_body) = rotate(&server, &tenant, &old.id.to_string(), json!({})).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["old_key"]["revoked_at"].is_string(), "{body}");
    assert_eq!(
        protected_status(&server, &old_headers).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(again, StatusCode::NOT_FOUND);
    assert_eq!(again_body["error"]["code"], "key_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rejects_bad_input() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let other = server.admin().create_tenant("Other").await;
    let key = server.admin().issue_key(&tenant).await;
    let key_id = key.id.to_string();

    let (foreign, _) = rotate(&server, &other, &key_id, json!({})).await;
    let (huge, huge_body) = rotate(
        &server,
        &tenant,
        &key_id,
        json!({"grace_seconds": u64::MAX}),
    )
    .await;
    let (unknown, unknown_body) = rotate(&server, &tenant, &key_id, json!({"grace": 1})).await;

    assert_eq!(foreign, StatusCode::NOT_FOUND);
    assert_eq!(huge, StatusCode::BAD_REQUEST);
    assert_eq!(huge_body["error"]["code"], "invalid_expiry");
    assert_eq!(unknown, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_body["error"]["code"], "invalid_json");
    let headers = [("x-api-key", key.api_key.as_str())];
    assert_eq!(protected_status(&server, &headers).await, StatusCode::OK);
}
