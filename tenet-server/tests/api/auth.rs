//! Credentials: admin token, API keys, ambiguity, and identical rejections.

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::Value;

use tenet_server::routes;

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_credentials_are_unauthorized() {
    let server = TestServer::start().await;
    let wrong_token = format!("{ADMIN_TOKEN}x");
    let truncated = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    let cases = [
        ("no header", None),
        ("wrong token", Some(format!("Bearer {wrong_token}"))),
        ("truncated token", Some(format!("Bearer {truncated}"))),
        ("basic scheme", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("token without scheme", Some(ADMIN_TOKEN.to_owned())),
        ("extra space", Some(format!("Bearer  {ADMIN_TOKEN}"))),
        ("empty bearer", Some("Bearer ".to_owned())),
    ];

    for (description, authorization) in cases {
        let mut request = server.client.get(server.url("/tenants"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }

        let response = request.send().await.expect("request sent");

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{description}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tenet\"",
            "{description}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_scheme_is_case_insensitive() {
    let server = TestServer::start().await;

    let response = server
        .client
        .get(server.url("/tenants"))
        .header("authorization", format!("BEARER {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_admin_header_is_unauthorized() {
    let server = TestServer::start().await;

    let response = server
        .client
        .get(server.url("/tenants"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_key_cannot_manage() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let key = admin.issue_key(&tenant).await;
    let tenant_path = format!("/tenants/{}", tenant.id);
    let keys_path = format!("/tenants/{}/keys", tenant.id);
    let key_path = format!("/tenants/{}/keys/{}", tenant.id, key.id);
    let client = &server.client;
    // Tenant routes take the admin token only. Key routes take a key with
    // the scope tenet:admin too, so a valid key without it is forbidden.
    let requests = [
        (
            "list tenants",
            client.get(server.url("/tenants")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "create tenant",
            client
                .post(server.url("/tenants"))
                .json(&serde_json::json!({ "name": "Intruder" })),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "read tenant",
            client.get(server.url(&tenant_path)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "list keys",
            client.get(server.url(&keys_path)),
            StatusCode::FORBIDDEN,
        ),
        (
            "issue key",
            client.post(server.url(&keys_path)),
            StatusCode::FORBIDDEN,
        ),
        (
            "revoke key",
            client.delete(server.url(&key_path)),
            StatusCode::FORBIDDEN,
        ),
    ];

    for (description, request, expected) in requests {
        let response = request
            .bearer_auth(&key.api_key)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), expected, "{description}");
    }

    assert_eq!(admin.tenants().await.len(), 1);
    let keys = admin.keys(&tenant).await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoked_at.is_none());
    assert_eq!(
        protected_status(&server, &[("x-api-key", &key.api_key)]).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_not_a_tenant_key() {
    let server = TestServer::start().await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");

    let by_bearer = protected_status(&server, &[("authorization", &bearer)]).await;
    let by_header = protected_status(&server, &[("x-api-key", ADMIN_TOKEN)]).await;

    assert_eq!(by_bearer, StatusCode::UNAUTHORIZED);
    assert_eq!(by_header, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_credentials_are_unauthorized() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let key = admin.issue_key(&tenant).await;
    let other = admin.issue_key(&tenant).await;
    let valid = key.api_key.as_str();
    let bearer = format!("Bearer {valid}");
    let comma_joined = format!("{valid},{valid}");
    let comma_bearer = format!("Bearer {valid}, Bearer {valid}");
    let cases: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "repeated X-API-Key",
            vec![("x-api-key", valid), ("x-api-key", valid)],
        ),
        (
            "two different keys",
            vec![("x-api-key", valid), ("x-api-key", &other.api_key)],
        ),
        ("comma in X-API-Key", vec![("x-api-key", &comma_joined)]),
        (
            "X-API-Key and Authorization",
            vec![("x-api-key", valid), ("authorization", &bearer)],
        ),
        (
            "repeated Authorization",
            vec![("authorization", &bearer), ("authorization", &bearer)],
        ),
        (
            "comma in Authorization",
            vec![("authorization", &comma_bearer)],
        ),
    ];

    assert_eq!(
        protected_status(&server, &[("x-api-key", valid)]).await,
        StatusCode::OK
    );
    for (description, headers) in cases {
        assert_eq!(
            protected_status(&server, &headers).await,
            StatusCode::UNAUTHORIZED,
            "{description}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_rejection_looks_the_same() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let revoked = admin.issue_key(&tenant).await;
    admin.revoke_key(&tenant, &revoked).await;
    let valid = admin.issue_key(&tenant).await;
    // Generated here, so well-formed, but never issued by the server.
    let unknown_key = tenet_core::ApiKey::generate();
    let unknown = unknown_key.expose_secret();
    let mut typo = valid.api_key.clone();
    typo.replace_range(10..11, if &typo[10..11] == "A" { "B" } else { "A" });
    let cases: [(&str, Vec<(&str, &str)>); 7] = [
        ("missing", vec![]),
        ("malformed", vec![("x-api-key", "nonsense")]),
        ("one-character typo", vec![("x-api-key", &typo)]),
        ("unknown", vec![("x-api-key", unknown)]),
        ("revoked", vec![("x-api-key", &revoked.api_key)]),
        (
            "basic scheme",
            vec![("authorization", "Basic dXNlcjpwYXNz")],
        ),
        (
            "ambiguous",
            vec![("x-api-key", &valid.api_key), ("x-api-key", &valid.api_key)],
        ),
    ];

    let mut bodies = Vec::new();
    for (description, headers) in cases {
        let mut request = server.client.get(server.url("/protected"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{description}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"tenet\"",
            "{description}"
        );
        bodies.push((description, response.bytes().await.expect("body")));
    }

    let (_, first) = &bodies[0];
    let parsed: Value = serde_json::from_slice(first).expect("JSON body");
    assert_eq!(parsed["error"]["code"], "unauthorized");
    for (description, body) in &bodies {
        assert_eq!(body, first, "{description}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_with_api_key_is_unauthorized() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let key = admin.issue_key(&tenant).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let valid = key.api_key.as_str();
    let second_credentials: [(&str, Vec<(&str, &str)>); 2] = [
        ("one X-API-Key", vec![("x-api-key", valid)]),
        (
            "two X-API-Key",
            vec![("x-api-key", valid), ("x-api-key", valid)],
        ),
    ];
    // These routes take no credentials at all.
    let open = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
    let uniform = unauthorized_body(&server).await;

    for (template, methods) in routes::table() {
        if open.contains(&template) {
            continue;
        }
        let path = template
            .replace("{id}", &tenant.id.to_string())
            .replace("{key_id}", &key.id.to_string());
        for method in methods {
            for (description, headers) in &second_credentials {
                let mut request = server
                    .client
                    .request(method.clone(), server.url(&path))
                    .header("authorization", &bearer);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }

                let response = request.send().await.expect("request sent");

                let case = format!("{method} {template} with {description}");
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
                let body = response.bytes().await.expect("body");
                assert_eq!(body, uniform, "{case}");
            }
        }
    }

    assert_eq!(admin.tenants().await.len(), 1);
    assert_eq!(admin.keys(&tenant).await.len(), 1);
}

/// Returns the body of a request without credentials, which every other
/// rejection must match byte for byte.
async fn unauthorized_body(server: &TestServer) -> bytes::Bytes {
    let response = server
        .client
        .get(server.url("/tenants"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    response.bytes().await.expect("body")
}
