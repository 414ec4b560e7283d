//! Tenant lifecycle over HTTP: suspend, resume, rename, delete, and the
//! audit trail that records each change.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenet_core::KeyId;
use tenet_core::api::{IssuedKeyResponse, TenantResponse};

use crate::helpers::{ADMIN_TOKEN, TestServer};

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

async fn admin(server: &TestServer, method: Method, path: &str) -> (StatusCode, Value) {
    send(server, method, path, ADMIN_TOKEN, None).await
}

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

/// Calls `GET /protected` with `key` and returns status and error code.
async fn protected(server: &TestServer, key: &IssuedKeyResponse) -> (StatusCode, Value) {
    let (status, body) = send(server, Method::GET, "/protected", &key.api_key, None).await;
    (status, body["error"]["code"].clone())
}

async fn verify(server: &TestServer, key: &IssuedKeyResponse) -> Value {
    let (status, body) = send(
        server,
        Method::POST,
        "/verify",
        ADMIN_TOKEN,
        Some(json!({ "key": key.api_key })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Returns every audit entry of a tenant as the admin reads it, walking
/// pages of two.
async fn audit_trail(server: &TestServer, tenant: &TenantResponse) -> Vec<Value> {
    let path = format!("/tenants/{}/audit?limit=2", tenant.id);
    let mut entries = Vec::new();
    let mut page_path = path.clone();
    loop {
        let (status, mut body) = admin(server, Method::GET, &page_path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["entries"].as_array_mut().expect("an entries list");
        assert!(page.len() <= 2);
        entries.append(page);
        match body["next_cursor"].as_str() {
            Some(cursor) => page_path = format!("{path}&cursor={cursor}"),
            None => return entries,
        }
    }
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|entry| entry["action"].as_str().expect("an action"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_tenant_keys_are_rejected_until_resume() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let keys_path = format!("/tenants/{}/keys", tenant.id);
    assert_eq!(protected(&server, &key).await.0, StatusCode::OK, "warm");

    let (suspend_status, suspended) = admin(
        &server,
        Method::POST,
        &format!("/tenants/{}/suspend", tenant.id),
    )
    .await;
    let (again_status, again) = admin(
        &server,
        Method::POST,
        &format!("/tenants/{}/suspend", tenant.id),
    )
    .await;
    let (_, read) = admin(&server, Method::GET, &format!("/tenants/{}", tenant.id)).await;

    assert_eq!(suspend_status, StatusCode::OK, "{suspended}");
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(again_status, StatusCode::OK, "suspending twice is fine");
    assert_eq!(again["status"], "suspended");
    assert_eq!(read["status"], "suspended");
    assert_eq!(
        protected(&server, &key).await,
        (StatusCode::FORBIDDEN, json!("tenant_suspended"))
    );
    assert_eq!(
        verify(&server, &key).await,
        json!({ "valid": false, "code": "tenant_suspended" })
    );
    let (manager_status, manager_body) =
        send(&server, Method::GET, &keys_path, &manager.api_key, None).await;
    assert_eq!(manager_status, StatusCode::FORBIDDEN);
    assert_eq!(manager_body["error"]["code"], "tenant_suspended");
    let (admin_status, _) = admin(&server, Method::GET, &keys_path).await;
    assert_eq!(admin_status, StatusCode::OK, "the admin still manages keys");

    for _ in 0..2 {
        let (status, resumed) = admin(
            &server,
            Method::POST,
            &format!("/tenants/{}/resume", tenant.id),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{resumed}");
        assert_eq!(resumed["status"], "active");
    }
    assert_eq!(protected(&server, &key).await.0, StatusCode::OK);
    assert_eq!(verify(&server, &key).await["valid"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_changes_need_the_admin_token() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let base = format!("/tenants/{}", tenant.id);
    let cases = [
        (Method::POST, format!("{base}/suspend"), None),
        (Method::POST, format!("{base}/resume"), None),
        (
            Method::PATCH,
            base.clone(),
            Some(json!({ "name": "Taken" })),
        ),
        (Method::DELETE, base.clone(), None),
    ];

    for (method, path, body) in cases {
        let (status, response) = send(&server, method.clone(), &path, &manager.api_key, body).await;

        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(response["error"]["code"], "unauthorized", "{method} {path}");
    }
    let (_, read) = admin(&server, Method::GET, &base).await;
    assert_eq!(read["name"], "Acme");
    assert_eq!(read["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenants_are_not_found() {
    let server = TestServer::start().await;
    let unknown = "01a241d1-0888-7148-a609-18b5399bfdc3";

    for id in [unknown, "not-an-id"] {
        for (method, path) in [
            (Method::POST, format!("/tenants/{id}/suspend")),
            (Method::POST, format!("/tenants/{id}/resume")),
            (Method::DELETE, format!("/tenants/{id}")),
            (Method::GET, format!("/tenants/{id}/audit")),
        ] {
            let (status, body) = admin(&server, method.clone(), &path).await;

            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(body["error"]["code"], "tenant_not_found", "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_validates_like_create() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let path = format!("/tenants/{}", tenant.id);

    let (status, renamed) = send(
        &server,
        Method::PATCH,
        &path,
        ADMIN_TOKEN,
        Some(json!({ "name": "Acme Europe" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["name"], "Acme Europe");
    assert_eq!(renamed["id"], json!(tenant.id));
    let (_, read) = admin(&server, Method::GET, &path).await;
    assert_eq!(read["name"], "Acme Europe");

    let cases = [
        ("blank name", json!({ "name": "   " }), "invalid_name"),
        ("missing name", json!({}), "invalid_name"),
        (
            "control character",
            json!({ "name": "a\u{7}b" }),
            "invalid_name",
        ),
        ("name not a string", json!({ "name": 7 }), "invalid_json"),
        (
            "unknown field",
            json!({ "name": "x", "status": "suspended" }),
            "invalid_json",
        ),
    ];
    for (description, body, code) in cases {
        let (status, response) = send(&server, Method::PATCH, &path, ADMIN_TOKEN, Some(body)).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{description}");
        assert_eq!(response["error"]["code"], code, "{description}");
    }
    let (_, read) = admin(&server, Method::GET, &path).await;
    assert_eq!(
        read["name"], "Acme Europe",
        "rejected renames change nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tenant_is_gone_on_every_route() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let other = server.admin().create_tenant("Globex").await;
    let key = server.admin().issue_key(&tenant).await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let other_key = server.admin().issue_key(&other).await;
    let base = format!("/tenants/{}", tenant.id);
    assert_eq!(protected(&server, &key).await.0, StatusCode::OK, "warm");

    let (status, body) = admin(&server, Method::DELETE, &base).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    assert_eq!(protected(&server, &key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        protected(&server, &manager).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        verify(&server, &key).await,
        json!({ "valid": false, "code": "key_revoked" })
    );
    let key_path = format!("{base}/keys/{}", key.id);
    let cases = [
        (Method::GET, base.clone(), None),
        (Method::PATCH, base.clone(), Some(json!({ "name": "Back" }))),
        (Method::DELETE, base.clone(), None),
        (Method::POST, format!("{base}/suspend"), None),
        (Method::POST, format!("{base}/resume"), None),
        (Method::GET, format!("{base}/keys"), None),
        (Method::POST, format!("{base}/keys"), None),
        (Method::DELETE, key_path.clone(), None),
        (Method::POST, format!("{key_path}/rotate"), None),
    ];
    for (method, path, body) in cases {
        let (status, response) = send(&server, method.clone(), &path, ADMIN_TOKEN, body).await;

        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            response["error"]["code"], "tenant_not_found",
            "{method} {path}"
        );
    }
    let listed = server.admin().tenants().await;
    let ids: Vec<_> = listed.iter().map(|listed| listed.id).collect();
    assert_eq!(ids, vec![other.id]);
    assert_eq!(protected(&server, &other_key).await.0, StatusCode::OK);
    let trail = audit_trail(&server, &tenant).await;
    assert_eq!(actions(&trail).last(), Some(&"delete_tenant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_each_change_with_its_actor() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let other = server.admin().create_tenant("Globex").await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let outsider = issue_with_scopes(&server, &other, &["tenet:admin"]).await;
    let keys_path = format!("/tenants/{}/keys", tenant.id);
    let audit_path = format!("/tenants/{}/audit", tenant.id);

    let (_, issued) = send(&server, Method::POST, &keys_path, &manager.api_key, None).await;
    let issued_id = issued["id"].as_str().expect("key id").to_owned();
    let (_, rotated) = send(
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
    assert_eq!(revoke_status, StatusCode::NO_CONTENT);
    let (own_status, own) = send(&server, Method::GET, &audit_path, &manager.api_key, None).await;
    let (outsider_status, _) =
        send(&server, Method::GET, &audit_path, &outsider.api_key, None).await;
    send(
        &server,
        Method::PATCH,
        &format!("/tenants/{}", tenant.id),
        ADMIN_TOKEN,
        Some(json!({ "name": "Acme Europe" })),
    )
    .await;
    admin(
        &server,
        Method::POST,
        &format!("/tenants/{}/suspend", tenant.id),
    )
    .await;
    admin(
        &server,
        Method::POST,
        &format!("/tenants/{}/resume", tenant.id),
    )
    .await;

    let trail = audit_trail(&server, &tenant).await;
    assert_eq!(own_status, StatusCode::OK, "{own}");
    assert_eq!(own["entries"].as_array().map(Vec::len), Some(5));
    assert_eq!(outsider_status, StatusCode::NOT_FOUND);
    assert_eq!(
        actions(&trail),
        vec![
            "create_tenant",
            "issue_key",
            "issue_key",
            "rotate_key",
            "revoke_key",
            "rename_tenant",
            "suspend_tenant",
            "resume_tenant",
        ]
    );
    let manager_id = manager.id.to_string();
    let actors: Vec<&str> = trail
        .iter()
        .map(|entry| entry["actor"].as_str().expect("an actor"))
        .collect();
    assert_eq!(
        actors,
        vec![
            "admin",
            "admin",
            manager_id.as_str(),
            manager_id.as_str(),
            manager_id.as_str(),
            "admin",
            "admin",
            "admin",
        ]
    );
    let tenant_id = tenant.id.to_string();
    let targets: Vec<(&str, &str)> = trail
        .iter()
        .map(|entry| {
            (
                entry["target_type"].as_str().expect("a target type"),
                entry["target_id"].as_str().expect("a target id"),
            )
        })
        .collect();
    assert_eq!(targets[0], ("tenant", tenant_id.as_str()));
    assert_eq!(targets[1], ("key", manager_id.as_str()));
    assert_eq!(targets[2], ("key", issued_id.as_str()));
    assert_eq!(targets[3], ("key", issued_id.as_str()));
    assert_eq!(targets[4], ("key", new_id));
    assert_eq!(targets[5], ("tenant", tenant_id.as_str()));
    assert!(
        trail
            .iter()
            .all(|entry| entry["tenant_id"] == json!(tenant.id))
    );
    assert!(trail.iter().all(|entry| entry["at"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_limit_changes_with_actor() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let manager = issue_with_scopes(&server, &tenant, &["tenet:admin"]).await;
    let worker = server.admin().issue_key(&tenant).await;
    let limit = json!({"rate": 10, "period_seconds": 1, "burst": 5});
    let key_limit_path = format!("/tenants/{}/keys/{}/limit", tenant.id, worker.id);
    let recorded = audit_trail(&server, &tenant).await.len();

    let (tenant_status, tenant_body) = send(
        &server,
        Method::PUT,
        &format!("/tenants/{}/limits", tenant.id),
        ADMIN_TOKEN,
        Some(json!({ "limit": limit, "monthly_quota": 1000 })),
    )
    .await;
    let (set_status, set_body) = send(
        &server,
        Method::PUT,
        &key_limit_path,
        &manager.api_key,
        Some(json!({ "limit": limit })),
    )
    .await;
    let (removed_status, removed_body) = send(
        &server,
        Method::PUT,
        &key_limit_path,
        ADMIN_TOKEN,
        Some(json!({ "limit": null })),
    )
    .await;
    let (missing_status, _) = send(
        &server,
        Method::PUT,
        &format!("/tenants/{}/keys/{}/limit", tenant.id, KeyId::generate()),
        ADMIN_TOKEN,
        Some(json!({ "limit": limit })),
    )
    .await;

    assert_eq!(tenant_status, StatusCode::OK, "{tenant_body}");
    assert_eq!(set_status, StatusCode::OK, "{set_body}");
    assert_eq!(removed_status, StatusCode::OK, "{removed_body}");
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
    let trail = audit_trail(&server, &tenant).await;
    let changes = &trail[recorded..];
    assert_eq!(
        actions(changes),
        vec!["set_tenant_limits", "set_key_limit", "set_key_limit"],
        "one entry per change and none for the unknown key"
    );
    let summary: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|entry| {
            (
                entry["actor"].as_str().expect("an actor"),
                entry["target_type"].as_str().expect("a target type"),
                entry["target_id"].as_str().expect("a target id"),
            )
        })
        .collect();
    let tenant_id = tenant.id.to_string();
    let manager_id = manager.id.to_string();
    let worker_id = worker.id.to_string();
    assert_eq!(summary[0], ("admin", "tenant", tenant_id.as_str()));
    assert_eq!(summary[1], (manager_id.as_str(), "key", worker_id.as_str()));
    assert_eq!(summary[2], ("admin", "key", worker_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rejects_invalid_paging() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let path = format!("/tenants/{}/audit", tenant.id);

    let (limit_status, limit) = admin(&server, Method::GET, &format!("{path}?limit=101")).await;
    let (cursor_status, cursor) = admin(&server, Method::GET, &format!("{path}?cursor=!!")).await;
    let (anonymous, _) = send(&server, Method::GET, &path, "wrong-token", None).await;

    assert_eq!(limit_status, StatusCode::BAD_REQUEST);
    assert_eq!(limit["error"]["code"], "invalid_limit");
    assert_eq!(cursor_status, StatusCode::BAD_REQUEST);
    assert_eq!(cursor["error"]["code"], "invalid_cursor");
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
}
