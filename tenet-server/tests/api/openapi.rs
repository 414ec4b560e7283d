//! `GET /openapi.json` and its agreement with the router's route table.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tenet_server::routes;

use crate::helpers::{ADMIN_TOKEN, TestServer};

/// The HTTP methods an OpenAPI path item may contain, as its lowercase keys.
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(server: &TestServer) -> Value {
    let response = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("JSON document")
}

/// Returns every (path template, method) pair that the document lists.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("a paths object");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item object");
        for key in item.keys() {
            if OPERATION_KEYS.contains(&key.as_str()) {
                operations.insert((path.clone(), key.to_uppercase()));
            }
        }
    }
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_is_openapi_3_1_without_auth() {
    let server = TestServer::start().await;

    let document = document(&server).await;

    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "Tenet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_matches_route_table() {
    let server = TestServer::start().await;
    let document = document(&server).await;

    let documented = documented_operations(&document);
    let routed: BTreeSet<(String, String)> = routes::table()
        .into_iter()
        .flat_map(|(template, methods)| {
            methods
                .iter()
                .map(move |method| (template.to_owned(), method.as_str().to_owned()))
        })
        .collect();

    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_serves_every_documented_operation() {
    let server = TestServer::start().await;
    let document = document(&server).await;
    let placeholder = "01a241d1-0888-7148-a609-18b5399bfdc3";

    for (path, method) in documented_operations(&document) {
        let concrete = path
            .replace("{id}", placeholder)
            .replace("{key_id}", placeholder);
        let method = Method::from_bytes(method.as_bytes()).expect("a valid method");

        let response = server
            .client
            .request(method.clone(), server.url(&concrete))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent");

        let status = response.status();
        let body = response.text().await.expect("body read");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body.contains("\"code\":\"not_found\""),
            "{method} {path}: {body}"
        );
    }
}
