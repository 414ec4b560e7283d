//! API keys with the scope `tenet:admin` managing their own tenant's keys.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenet_core::api::{IssuedKeyResponse, TenantResponse};

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

/// Sends a request with `credential` as bearer and returns status and body;
/// the body is `Null` when empty.
async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(credential);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let bytes = response.bytes().await.expect("body read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, body)
}

/// Issues a key with `scopes` through the admin token.
async fn issue_with_scopes(
    server: &TestServer,
    tenant: &TenantResponse,
    scopes: &[&str],
) -> IssuedKeyResponse {
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/tenants/{}/keys", tenant.id),
        ADMIN_TOKEN,
        Some(json!({ "scopes": scopes })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).expect("issued key JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_manages_own_keys() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["billing:read", "tenet:admin"]).await;
    let keys_path = format!("/tenants/{}/keys", tenant.id);

    let (issued_status, issued) = send(
        &server,
        Method::POST,
        &keys_path,
        &manager.api_key,
        Some(json!({ "name": "reader", "scopes": ["billing:read"] })),
    )
    .await;
    let issued_id = issued["id"].as_str().expect("key id").to_owned();
    let (list_status, list) = send(&server, Method::GET, &keys_path, &manager.api_key, None).await;
    let (rotate_status, rotated) = send(
        &server,
        Method::POST,
        &format!("{keys_path}/{issued_id}/rotate"),
        &manager.api_key,
        Some(json!({ "grace_seconds": 0 })),
    )
    .await;
    let new_id = rotated["new_key"]["id"].as_str().expect("new key id");
    let (revoke_status, _) = send(
        &server,
        Method::DELETE,
        &format!("{keys_path}/{new_id}"),
        &manager.api_key,
        None,
    )
    .await;

    assert_eq!(issued_status, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["scopes"], json!(["billing:read"]));
    assert_eq!(list_status, StatusCode::OK, "{list}");
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(rotate_status, StatusCode::CREATED, "{rotated}");
    assert_eq!(rotated["new_key"]["scopes"], json!(["billing:read"]));
    assert_eq!(revoke_status, StatusCode::NO_CONTENT);
    let new_key = rotated["new_key"]["api_key"].as_str().expect("new key");
    assert_eq!(
        protected_status(&server, &[("x-api-key", new_key)]).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_sees_other_tenants_as_missing() {
    let server = TestServer::start().await;
    let acme = server.admin().create_tenant("Acme").await;
    let globex = server.admin().create_tenant("Globex").await;
    let manager = issue_with_scopes(&server, &acme, &["tenet:admin"]).await;
    let victim = server.admin().issue_key(&globex).await;
    let keys_path = format!("/tenants/{}/keys", globex.id);
    let key_path = format!("{keys_path}/{}", victim.id);
    let requests = [
        ("list", Method::GET, keys_path.clone(), None),
        ("issue", Method::POST, keys_path.clone(), Some(json!({}))),
        (
            "rotate",
            Method::POST,
            format!("{key_path}/rotate"),
            Some(json!({})),
        ),
        ("revoke", Method::DELETE, key_path.clone(), None),
    ];

    for (description, method, path, body) in requests {
        let (status, body) = send(&server, method, &path, &manager.api_key, body).await;

        assert_eq!(status, StatusCode::NOT_FOUND, "{description}: {body}");
        assert_eq!(body["error"]["code"], "tenant_not_found", "{description}");
    }

    assert_eq!(server.admin().keys(&globex).await.len(), 1);
    assert_eq!(
        protected_status(&server, &[("x-api-key", &victim.api_key)]).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_grants_only_held_scopes() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["billing:read", "tenet:admin"]).await;
    let keys_path = format!("/tenants/{}/keys", tenant.id);

    let (status, body) = send(
        &server,
        Method::POST,
        &keys_path,
        &manager.api_key,
        Some(json!({ "scopes": ["billing:read", "billing:write"] })),
    )
    .await;

    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "missing_scope");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("billing:write")),
        "{body}"
    );
    assert_eq!(server.admin().keys(&tenant).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_cannot_rotate_stronger_key() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let stronger = issue_with_scopes(&server, &tenant, &["billing:write"]).await;

    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/tenants/{}/keys/{}/rotate", tenant.id, stronger.id),
        &manager.api_key,
        Some(json!({ "grace_seconds": 0 })),
    )
    .await;

    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "missing_scope");
    assert_eq!(server.admin().keys(&tenant).await.len(), 2);
    assert_eq!(
        protected_status(&server, &[("x-api-key", &stronger.api_key)]).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_cannot_reach_tenant_routes() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let requests = [
        ("list tenants", Method::GET, "/tenants".to_owned(), None),
        (
            "create tenant",
            Method::POST,
            "/tenants".to_owned(),
            Some(json!({ "name": "Intruder" })),
        ),
        (
            "read own tenant",
            Method::GET,
            format!("/tenants/{}", tenant.id),
            None,
        ),
    ];

    for (description, method, path, body) in requests {
        let (status, body) = send(&server, method, &path, &manager.api_key, body).await;

        assert_eq!(status, StatusCode::UNAUTHORIZED, "{description}: {body}");
    }

    assert_eq!(server.admin().tenants().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_without_admin_scope_is_forbidden() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let reader = issue_with_scopes(&server, &tenant, &["billing:read"]).await;

    let (status, body) = send(
        &server,
        Method::GET,
        &format!("/tenants/{}/keys", tenant.id),
        &reader.api_key,
        None,
    )
    .await;

    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "missing_scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_admin_key_is_unauthorized() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let keys_path = format!("/tenants/{}/keys", tenant.id);
    let (revoke_status, _) = send(
        &server,
        Method::DELETE,
        &format!("{keys_path}/{}", manager.id),
        &manager.api_key,
        None,
    )
    .await;

    let (status, body) = send(&server, Method::GET, &keys_path, &manager.api_key, None).await;

    assert_eq!(revoke_status, StatusCode::NO_CONTENT);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// Issues a `tenet:admin` key through the admin token that expires in an
/// hour, and returns it with its expiry as listed.
async fn expiring_manager(
    server: &TestServer,
    tenant: &TenantResponse,
) -> (IssuedKeyResponse, Value) {
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/tenants/{}/keys", tenant.id),
        ADMIN_TOKEN,
        Some(json!({ "scopes": ["tenet:admin"], "ttl_seconds": 3600 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let expires_at = body["expires_at"].clone();
    assert!(expires_at.is_string(), "{body}");
    (
        serde_json::from_value(body).expect("issued key JSON"),
        expires_at,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_admin_key_caps_issued_expiry() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let (manager, manager_expiry) = expiring_manager(&server, &tenant).await;
    let keys_path = format!("/tenants/{}/keys", tenant.id);
    let issue = |body: Value| {
        send(
            &server,
            Method::POST,
            &keys_path,
            &manager.api_key,
            Some(body),
        )
    };

    let (default_status, default_key) = issue(json!({})).await;
    let (earlier_status, earlier_key) = issue(json!({ "ttl_seconds": 60 })).await;
    let (later_ttl, later_ttl_body) = issue(json!({ "ttl_seconds": 7200 })).await;
    let (later_at, later_at_body) = issue(json!({ "expires_at": "2030-01-01T00:00:00Z" })).await;

    assert_eq!(default_status, StatusCode::CREATED, "{default_key}");
    assert_eq!(default_key["expires_at"], manager_expiry);
    assert_eq!(earlier_status, StatusCode::CREATED, "{earlier_key}");
    assert_ne!(earlier_key["expires_at"], manager_expiry);
    let manager_expiry = manager_expiry.as_str().expect("expiry text");
    for (status, body) in [(later_ttl, later_ttl_body), (later_at, later_at_body)] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_expiry");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(manager_expiry), "{message}");
    }
    assert_eq!(server.admin().keys(&tenant).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_admin_key_caps_rotated_expiry() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let (manager, manager_expiry) = expiring_manager(&server, &tenant).await;
    let lasting = server.admin().issue_key(&tenant).await;

    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/tenants/{}/keys/{}/rotate", tenant.id, lasting.id),
        &manager.api_key,
        Some(json!({})),
    )
    .await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["new_key"]["expires_at"], manager_expiry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_issues_without_expiry() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let (_, manager_expiry) = expiring_manager(&server, &tenant).await;

    let issued = server.admin().issue_key(&tenant).await;
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/tenants/{}/keys", tenant.id),
        ADMIN_TOKEN,
        Some(json!({ "expires_at": "2030-01-01T00:00:00Z" })),
    )
    .await;

    assert!(manager_expiry.is_string());
    assert_eq!(issued.expires_at, None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["expires_at"], "2030-01-01T00:00:00.000Z");
}
