//! Protocol versions: HTTP/2 with prior knowledge (h2c) next to HTTP/1.1.

use reqwest::{StatusCode, Version};
use tenet_core::api::PrincipalResponse;

use crate::helpers::{ADMIN_TOKEN, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_works() {
    let server = TestServer::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("HTTP/2 client");

    let created = h2
        .post(server.url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": "Acme" }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(created.version(), Version::HTTP_2);
    assert_eq!(created.status(), StatusCode::CREATED);
    let tenant: tenet_core::api::TenantResponse = created.json().await.expect("tenant JSON");

    let issued = h2
        .post(server.url(&format!("/tenants/{}/keys", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(issued.status(), StatusCode::CREATED);
    let key: tenet_core::api::IssuedKeyResponse = issued.json().await.expect("key JSON");

    let protected = h2
        .get(server.url("/protected"))
        .header("x-api-key", &key.api_key)
        .send()
        .await
        .expect("request sent");
    assert_eq!(protected.version(), Version::HTTP_2);
    assert_eq!(protected.status(), StatusCode::OK);
    let principal: PrincipalResponse = protected.json().await.expect("principal JSON");
    assert_eq!(principal.key_id, key.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_is_served_on_the_same_port() {
    let server = TestServer::start().await;

    let response = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
}
