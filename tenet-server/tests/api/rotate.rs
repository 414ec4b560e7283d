//! `POST /tenants/{id}/keys/{key_id}/rotate`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenet_core::api::{RotateKeyResponse, TenantResponse};
use tenet_core::{KeyId, TenantId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

/// Issues a key through the admin token with the settings in `body`.
async fn issue_with(server: &TestServer, tenant: &TenantResponse, body: Value) -> Value {
    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("JSON body")
}

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
    let new_id = body["new_key"]["id"].as_str().expect("new key id");
    assert_eq!(again, StatusCode::CONFLICT);
    assert_eq!(again_body["error"]["code"], "key_rotated");
    assert!(
        again_body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains(new_id)),
        "{again_body}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_rotation_conflicts() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let issued = issue_with(&server, &tenant, json!({"ttl_seconds": 1})).await;
    let key_id = issued["id"].as_str().expect("key id");
    let expires_at = issued["expires_at"].as_str().expect("expiry").to_owned();
    let expiry = OffsetDateTime::parse(&expires_at, &Rfc3339).expect("RFC 3339 expiry");

    let remaining = expiry - OffsetDateTime::now_utc();
    tokio::time::sleep(remaining.unsigned_abs() + Duration::from_millis(20)).await;
    let (status, body) = rotate(&server, &tenant, key_id, json!({})).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "key_expired");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&expires_at), "{message}");
    assert!(message.contains("issue a new key"), "{message}");
    assert_eq!(server.admin().keys(&tenant).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_rotation_and_limit_conflict() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    server.admin().revoke_key(&tenant, &key).await;
    let audit_path = format!("/tenants/{}/audit?limit=100", tenant.id);
    let audit_before = audit_actions(&server, &audit_path).await;

    let (rotated, rotate_body) = rotate(&server, &tenant, &key.id.to_string(), json!({})).await;
    let limited = server
        .client
        .put(server.url(&format!("/tenants/{}/keys/{}/limit", tenant.id, key.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"limit": {"rate": 1, "period_seconds": 1, "burst": 1}}))
        .send()
        .await
        .expect("request sent");
    let limit_status = limited.status();
    let limit_body: Value = limited.json().await.expect("JSON body");

    assert_eq!(rotated, StatusCode::CONFLICT, "{rotate_body}");
    assert_eq!(rotate_body["error"]["code"], "key_revoked");
    let message = rotate_body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&key.id.to_string()), "{message}");
    assert!(message.contains("issue a new key"), "{message}");
    assert_eq!(limit_status, StatusCode::CONFLICT, "{limit_body}");
    assert_eq!(limit_body["error"]["code"], "key_revoked");
    assert_eq!(server.admin().keys(&tenant).await.len(), 1);
    assert_eq!(audit_actions(&server, &audit_path).await, audit_before);
}

/// Returns the actions of a tenant's audit entries, oldest first.
async fn audit_actions(server: &TestServer, path: &str) -> Vec<String> {
    let body: Value = server
        .client
        .get(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body");
    body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| entry["action"].as_str().expect("action").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_keeps_old_expiry() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let issued = issue_with(&server, &tenant, json!({"ttl_seconds": 3600})).await;
    let key_id = issued["id"].as_str().expect("key id");

    let (status, body) = rotate(&server, &tenant, key_id, json!({})).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["new_key"]["expires_at"], issued["expires_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_lists_its_successor() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let old = server.admin().issue_key(&tenant).await;
    let old_id = old.id.to_string();

    let (status, body) = rotate(&server, &tenant, &old_id, json!({})).await;
    let (again, again_body) = rotate(&server, &tenant, &old_id, json!({})).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    let rotated: RotateKeyResponse = serde_json::from_value(body).expect("rotation JSON");
    let new_id = rotated.new_key.id;
    assert_eq!(rotated.old_key.replaced_by, Some(new_id));
    assert_eq!(again, StatusCode::CONFLICT, "{again_body}");
    assert_eq!(again_body["error"]["code"], "key_rotated");
    let keys = server.admin().keys(&tenant).await;
    let listed_old = keys.iter().find(|key| key.id == old.id).expect("old key");
    let listed_new = keys.iter().find(|key| key.id == new_id).expect("new key");
    assert_eq!(listed_old.replaced_by, Some(new_id));
    assert_eq!(listed_new.replaced_by, None);
    assert_eq!(keys.len(), 2);
}

/// Sends 20 rotations of one key at once: one gets the new key and the
/// others 409 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_rotations_leave_one_successor() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let old = server.admin().issue_key(&tenant).await;
    let old_id = old.id.to_string();

    let rotations = (0..20).map(|_| rotate(&server, &tenant, &old_id, json!({})));
    let outcomes = futures_util::future::join_all(rotations).await;

    let created: Vec<_> = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    let new_id = created[0].1["new_key"]["id"].as_str().expect("new key id");
    for (status, body) in outcomes
        .iter()
        .filter(|(status, _)| *status != StatusCode::CREATED)
    {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "key_rotated");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(new_id), "{message}");
    }
    assert_eq!(server.admin().keys(&tenant).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_wins_over_key_id() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    let unknown = TenantId::generate();
    let key_ids = [
        key.id.to_string(),
        KeyId::generate().to_string(),
        "nope".to_owned(),
    ];

    for key_id in &key_ids {
        let path = format!("/tenants/{unknown}/keys/{key_id}");
        for (method, path) in [
            (Method::DELETE, path.clone()),
            (Method::POST, format!("{path}/rotate")),
        ] {
            let response = server
                .client
                .request(method.clone(), server.url(&path))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body: Value = response.json().await.expect("JSON body");
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "tenant_not_found", "{method} {path}");
        }
    }
    let (malformed, body) = rotate(&server, &tenant, "nope", json!({})).await;
    assert_eq!(malformed, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "key_not_found");
}
