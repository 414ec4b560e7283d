//! The main flow: tenants, keys, `/protected` and revocation.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use serde_json::Value;
use tenet_core::api::{PrincipalResponse, TenantResponse};

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_from_tenant_to_revocation() {
    let server = TestServer::start().await;
    let admin = server.admin();

    let tenant = admin.create_tenant("  Acme Cafe\u{301}  ").await;
    assert_eq!(tenant.name, "Acme Caf\u{e9}");
    let fetched: TenantResponse = server
        .client
        .get(server.url(&format!("/tenants/{}", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("tenant JSON");
    assert_eq!(fetched, tenant);
    assert_eq!(admin.tenants().await, vec![tenant.clone()]);

    let key = admin.issue_key(&tenant).await;
    assert_eq!(key.tenant_id, tenant.id);
    assert!(key.api_key.starts_with(&key.prefix));

    for headers in [
        [("x-api-key", key.api_key.clone())],
        [("authorization", format!("Bearer {}", key.api_key))],
        [("authorization", format!("bEaReR {}", key.api_key))],
    ] {
        let [(name, value)] = headers;
        let response = server
            .client
            .get(server.url("/protected"))
            .header(name, &value)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let principal: PrincipalResponse = response.json().await.expect("principal JSON");
        assert_eq!(principal.tenant_id, tenant.id);
        assert_eq!(principal.key_id, key.id);
    }

    admin.revoke_key(&tenant, &key).await;

    let response = server
        .client
        .get(server.url("/protected"))
        .header("x-api-key", &key.api_key)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "Bearer realm=\"tenet\""
    );
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "unauthorized");

    let keys = admin.keys(&tenant).await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoked_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_responses_have_the_documented_shape() {
    let server = TestServer::start().await;

    let response = server
        .client
        .post(server.url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": "Acme" }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let tenant: Value = response.json().await.expect("tenant JSON");
    let id = tenant["id"].as_str().expect("id is a string").to_owned();
    assert_eq!(field_names(&tenant), ["created_at", "id", "name", "status"]);
    assert_eq!(tenant["status"], "active");
    assert!(
        time::OffsetDateTime::parse(
            tenant["created_at"].as_str().expect("string"),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );

    let response = server
        .client
        .post(server.url(&format!("/tenants/{id}/keys")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": "billing worker" }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let issued: Value = response.json().await.expect("key JSON");
    assert_eq!(
        field_names(&issued),
        [
            "api_key",
            "created_at",
            "expires_at",
            "id",
            "limit",
            "metadata",
            "name",
            "prefix",
            "scopes",
            "tenant_id"
        ]
    );
    assert_eq!(issued["name"], "billing worker");

    let response = server
        .client
        .get(server.url(&format!("/tenants/{id}/keys")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    let listing: Value = response.json().await.expect("key list JSON");
    let listed = &listing["keys"][0];
    assert_eq!(
        field_names(listed),
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "metadata",
            "name",
            "prefix",
            "replaced_by",
            "revoked_at",
            "scopes",
            "tenant_id"
        ]
    );
    assert!(listed["revoked_at"].is_null());
    assert!(listed["last_used_at"].is_null());
    assert!(listed["replaced_by"].is_null());
    assert_eq!(listed["metadata"], serde_json::json!({}));
    assert!(
        !listing
            .to_string()
            .contains(issued["api_key"].as_str().expect("string"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_creation_sets_location() {
    let server = TestServer::start().await;

    let response = server
        .client
        .post(server.url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": "Acme" }))
        .send()
        .await
        .expect("request sent");

    let location = response.headers()[LOCATION]
        .to_str()
        .expect("text")
        .to_owned();
    let tenant: TenantResponse = response.json().await.expect("tenant JSON");
    assert_eq!(location, format!("/tenants/{}", tenant.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_issue_accepts_empty_body() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let url = server.url(&format!("/tenants/{}/keys", tenant.id));

    let no_type = server.client.post(&url).bearer_auth(ADMIN_TOKEN).send();
    let json_type = server
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header(CONTENT_TYPE, "application/json")
        .send();
    let empty_object = server
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}));

    for (description, request) in [
        ("no body, no content type", no_type.await),
        ("no body, JSON content type", json_type.await),
        ("empty object", empty_object.send().await),
    ] {
        let response = request.expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED, "{description}");
        let issued: Value = response.json().await.expect("key JSON");
        assert!(issued["name"].is_null(), "{description}");
    }
    assert_eq!(server.admin().keys(&tenant).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_issue_reads_null_as_absent() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let url = server.url(&format!("/tenants/{}/keys", tenant.id));
    let body = serde_json::json!({
        "name": null,
        "expires_at": null,
        "ttl_seconds": null,
        "scopes": null,
        "limit": null,
        "metadata": null,
    });

    let response = server
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.expect("key JSON");
    assert_eq!(issued["scopes"], serde_json::json!([]));
    assert!(issued["name"].is_null());
    assert!(issued["expires_at"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_twice_is_no_content() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let key = admin.issue_key(&tenant).await;
    admin.revoke_key(&tenant, &key).await;
    let first = admin.keys(&tenant).await[0].revoked_at;

    admin.revoke_key(&tenant, &key).await;

    assert_eq!(admin.keys(&tenant).await[0].revoked_at, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_revoke_is_not_found() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let owner = admin.create_tenant("Owner").await;
    let other = admin.create_tenant("Other").await;
    let key = admin.issue_key(&owner).await;

    let response = server
        .client
        .delete(server.url(&format!("/tenants/{}/keys/{}", other.id, key.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "key_not_found");
    assert_eq!(
        protected_status(&server, &[("x-api-key", &key.api_key)]).await,
        StatusCode::OK
    );
    assert!(admin.keys(&owner).await[0].revoked_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_per_tenant() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let first = admin.create_tenant("First").await;
    let second = admin.create_tenant("Second").await;
    let first_key = admin.issue_key(&first).await;
    admin.issue_key(&second).await;

    let keys = admin.keys(&first).await;

    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, first_key.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_answer_ok() {
    let server = TestServer::start().await;

    for path in ["/healthz", "/readyz"] {
        let response = server
            .client
            .get(server.url(path))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["status"], "ok", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_and_returns() {
    let server = TestServer::start().await;
    let addr = server.addr;
    assert_eq!(
        protected_status(&server, &[]).await,
        StatusCode::UNAUTHORIZED
    );

    server.stop().await;

    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

fn field_names(object: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = object
        .as_object()
        .expect("JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}
