//! `limit` and `cursor` on `GET /tenants` and `GET /tenants/{id}/keys`.

use reqwest::StatusCode;
use serde_json::Value;
use tenet_core::api::{KeyListResponse, TenantListResponse};

use crate::helpers::{ADMIN_TOKEN, TestServer};

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_page_by_cursor() {
    let server = TestServer::start().await;
    let mut created = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        created.push(server.admin().create_tenant(name).await.id);
    }

    let mut listed = Vec::new();
    let mut path = "/tenants?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: TenantListResponse = serde_json::from_value(body).expect("tenant list");
        assert!(page.tenants.len() <= 2, "{page:?}");
        listed.extend(page.tenants.iter().map(|tenant| tenant.id));
        pages += 1;
        match page.next_cursor {
            Some(cursor) => path = format!("/tenants?limit=2&cursor={cursor}"),
            None => break,
        }
    }

    assert_eq!(listed, created);
    assert_eq!(pages, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_last_page_has_no_cursor() {
    let server = TestServer::start().await;
    server.admin().create_tenant("a").await;
    server.admin().create_tenant("b").await;

    let (status, body) = get(&server, "/tenants?limit=2").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["next_cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limit_is_fifty() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    for _ in 0..51 {
        server.admin().issue_key(&tenant).await;
    }

    let (status, body) = get(&server, &format!("/tenants/{}/keys", tenant.id)).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"].as_array().map(Vec::len), Some(50));
    assert!(body["next_cursor"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pages_stay_stable_while_keys_are_issued() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push(server.admin().issue_key(&tenant).await.id);
    }
    let keys_path = format!("/tenants/{}/keys", tenant.id);

    let (_, body) = get(&server, &format!("{keys_path}?limit=2")).await;
    let first: KeyListResponse = serde_json::from_value(body).expect("key list");
    issued.push(server.admin().issue_key(&tenant).await.id);
    let cursor = first.next_cursor.clone().expect("a second page");
    let (status, body) = get(&server, &format!("{keys_path}?cursor={cursor}&limit=2")).await;
    let second: KeyListResponse = serde_json::from_value(body).expect("key list");

    assert_eq!(status, StatusCode::OK);
    let first_ids: Vec<_> = first.keys.iter().map(|key| key.id).collect();
    let second_ids: Vec<_> = second.keys.iter().map(|key| key.id).collect();
    assert_eq!(first_ids, issued[..2]);
    assert_eq!(second_ids, issued[2..]);
    assert_eq!(second.next_cursor, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_limits_are_rejected() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;

    for path in [
        "/tenants?limit=0".to_owned(),
        "/tenants?limit=101".to_owned(),
        "/tenants?limit=abc".to_owned(),
        format!("/tenants/{}/keys?limit=-3", tenant.id),
    ] {
        let (status, body) = get(&server, &path).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_limit", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cursors_are_rejected() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;

    for path in [
        "/tenants?cursor=".to_owned(),
        "/tenants?cursor=not-a-cursor".to_owned(),
        format!("/tenants/{}/keys?cursor={}", tenant.id, tenant.id),
    ] {
        let (status, body) = get(&server, &path).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_cursor", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_ignored() {
    let server = TestServer::start().await;
    server.admin().create_tenant("a").await;
    server.admin().create_tenant("b").await;

    let (status, body) = get(&server, "/tenants?sort=desc&limit=1&page=9").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(1));
    assert!(body["next_cursor"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_checks_credentials_first() {
    let server = TestServer::start().await;

    let response = server
        .client
        .get(server.url("/tenants?limit=0"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_from_another_listing_is_rejected() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let first = admin.create_tenant("a").await;
    let second = admin.create_tenant("b").await;
    for _ in 0..2 {
        admin.issue_key(&first).await;
    }
    let (_, tenants) = get(&server, "/tenants?limit=1").await;
    let tenants_cursor = tenants["next_cursor"].as_str().expect("tenants cursor");
    let (_, keys) = get(&server, &format!("/tenants/{}/keys?limit=1", first.id)).await;
    let keys_cursor = keys["next_cursor"].as_str().expect("keys cursor");

    for path in [
        format!("/tenants/{}/keys?cursor={tenants_cursor}", first.id),
        format!("/tenants?cursor={keys_cursor}"),
        format!("/tenants/{}/keys?cursor={keys_cursor}", second.id),
    ] {
        let (status, body) = get(&server, &path).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_cursor", "{path}");
    }
    let (status, body) = get(
        &server,
        &format!("/tenants/{}/keys?cursor={keys_cursor}", first.id),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_limit_is_decoded() {
    let server = TestServer::start().await;
    server.admin().create_tenant("a").await;
    server.admin().create_tenant("b").await;

    let (status, body) = get(&server, "/tenants?limit=%31").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(1));
}
