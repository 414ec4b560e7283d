//! Protocol versions: HTTP/2 with prior knowledge (h2c) next to HTTP/1.1.

use reqwest::{StatusCode, Version};
use tenet_core::api::PrincipalResponse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN_TOKEN, TestServer, stalled_request};

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

/// Headers that differ between two responses to the same request.
const PER_RESPONSE_HEADERS: [&str; 2] = ["date", "x-request-id"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_matches_get_without_body() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let tenant_path = format!("/tenants/{}", tenant.id);
    let cases = [
        ("health", "/healthz", None),
        ("OpenAPI document", "/openapi.json", None),
        ("tenant list", "/tenants", Some(ADMIN_TOKEN)),
        ("one tenant", tenant_path.as_str(), Some(ADMIN_TOKEN)),
        ("rejected key", "/protected", Some("not-a-key")),
    ];

    for (description, path, token) in cases {
        let mut get = server.client.get(server.url(path));
        let mut head = server.client.head(server.url(path));
        if let Some(token) = token {
            get = get.bearer_auth(token);
            head = head.bearer_auth(token);
        }

        let get = get.send().await.expect("GET sent");
        let head = head.send().await.expect("HEAD sent");

        assert_eq!(head.status(), get.status(), "{description}");
        assert_eq!(
            comparable_headers(head.headers()),
            comparable_headers(get.headers()),
            "{description}"
        );
        let get_body = get.bytes().await.expect("GET body");
        let head_body = head.bytes().await.expect("HEAD body");
        assert!(!get_body.is_empty(), "{description}");
        assert!(head_body.is_empty(), "{description}");
    }
}

fn comparable_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !PER_RESPONSE_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            let value = value.to_str().expect("visible ASCII").to_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sends_no_body_bytes() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connected");

    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: tenet\r\nConnection: close\r\n\r\n")
        .await
        .expect("request written");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("response read");

    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("a Content-Length header");
    assert_ne!(length, "0", "{head}");
    assert_eq!(body, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_head_has_no_body() {
    let server = TestServer::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("HTTP/2 client");

    let response = h2
        .head(server.url("/openapi.json"))
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("content-length"));
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_head_for_get_routes() {
    let server = TestServer::start().await;
    let cases = [
        ("/healthz", "GET, HEAD"),
        ("/tenants", "GET, HEAD, POST"),
        ("/verify", "POST"),
    ];

    for (path, allow) in cases {
        let response = server
            .client
            .request(reqwest::Method::OPTIONS, server.url(path))
            .send()
            .await
            .expect("request sent");

        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(response.headers()["allow"], allow, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_body_gets_408() {
    let server = TestServer::start_with(&["--header-read-timeout", "1"]).await;
    let mut stream = stalled_request(server.addr).await;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the server answers and closes the connection")
    .expect("response read");

    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(body["error"]["code"], "body_timeout");
}

/// Sends `request` on a new connection, shuts down the writing side, and
/// returns everything the server sends until it closes.
async fn exchange_then_half_close(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.expect("connected");
    stream.write_all(request).await.expect("request written");
    stream.shutdown().await.expect("writing side shut down");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("response read");
    String::from_utf8(raw).expect("UTF-8 response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_connection_gets_its_response() {
    let server = TestServer::start().await;

    for path in ["/healthz", "/tenants"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: tenet\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        );
        let response = exchange_then_half_close(&server, request.as_bytes()).await;

        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_request_body_closes_the_connection() {
    let server = TestServer::start().await;
    let body = "x".repeat(70_000);

    // GET reads no body, whatever its status; an error leaves the body
    // unread on any method.
    for (method, path, status) in [
        ("GET", "/healthz", "200"),
        ("GET", "/tenants", "200"),
        ("DELETE", "/tenants/not-an-id", "404"),
        ("POST", "/tenants", "413"),
    ] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: tenet\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = exchange_then_half_close(&server, request.as_bytes()).await;

        let (head, _) = response.split_once("\r\n\r\n").expect("a header block");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} {path}: {head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{method} {path}: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_request_body_keeps_the_connection() {
    let server = TestServer::start().await;
    let body = r#"{"name":"Kept open"}"#;
    let request = format!(
        "POST /tenants HTTP/1.1\r\nHost: tenet\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         GET /healthz HTTP/1.1\r\nHost: tenet\r\n\r\n",
        body.len()
    );

    let response = exchange_then_half_close(&server, request.as_bytes()).await;

    assert!(response.starts_with("HTTP/1.1 201"), "{response:?}");
    assert_eq!(response.matches("HTTP/1.1 ").count(), 2, "{response:?}");
    assert!(
        !response.to_ascii_lowercase().contains("connection: close"),
        "{response:?}"
    );
}

/// `{"name":"Compressed"}` compressed with gzip, as `gzip -n` writes it.
const GZIPPED_CREATE: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\xca\x4b\xcc\x4d\
\x55\xb2\x52\x72\xce\xcf\x2d\x28\x4a\x2d\x2e\x4e\x4d\x51\xaa\x05\x00\x0c\xdf\xc8\x26\x15\x00\x00\x00";

/// Returns the head of a `POST /tenants` over HTTP/1.1 with one
/// `Transfer-Encoding` line for each of `codings`.
fn create_head(codings: &[&str]) -> String {
    let mut head = format!(
        "POST /tenants HTTP/1.1\r\nHost: tenet\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\n"
    );
    for coding in codings {
        head.push_str(&format!("Transfer-Encoding: {coding}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Returns a `POST /tenants` with `body` in one chunk and the last chunk.
fn chunked_create(codings: &[&str], body: &[u8]) -> Vec<u8> {
    let mut request = create_head(codings).into_bytes();
    request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    request
}

/// Checks that `response` is the 501 for a transfer coding, naming
/// `value`, and that it closes the connection.
fn assert_transfer_coding_rejected(response: &str, value: &str) {
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    assert!(head.starts_with("HTTP/1.1 501 "), "{value}: {head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{value}: {head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(
        body["error"]["code"], "unsupported_transfer_encoding",
        "{value}"
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("Transfer-Encoding {value},")),
        "{value}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_coding_before_chunked_gets_501() {
    let server = TestServer::start().await;
    let plain = br#"{"name":"Plain"}"#;
    let cases: [(&[&str], &[u8], &str); 6] = [
        (&["gzip, chunked"], GZIPPED_CREATE, "gzip, chunked"),
        (&["gzip, chunked"], plain, "gzip, chunked"),
        (&["deflate, chunked"], plain, "deflate, chunked"),
        (&["GZIP, Chunked"], plain, "GZIP, Chunked"),
        (&["gzip", "chunked"], plain, "gzip, chunked"),
        (&["chunked, chunked"], plain, "chunked, chunked"),
    ];

    for (codings, body, value) in cases {
        let request = chunked_create(codings, body);

        let response = exchange_then_half_close(&server, &request).await;

        assert_transfer_coding_rejected(&response, value);
    }
    assert!(server.admin().tenants().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_coding_rejected_before_body_arrives() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connected");
    stream
        .write_all(create_head(&["deflate, chunked"]).as_bytes())
        .await
        .expect("request head written");

    // The body is never sent, and the server responds and closes the
    // connection anyway.
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the server answers without waiting for the body")
    .expect("response read");

    let response = String::from_utf8(raw).expect("UTF-8 response");
    assert_transfer_coding_rejected(&response, "deflate, chunked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_alone_is_decoded_in_any_letter_case() {
    let server = TestServer::start().await;

    for coding in ["chunked", "Chunked", "CHUNKED"] {
        let body = format!(r#"{{"name":"{coding}"}}"#);
        let request = chunked_create(&[coding], body.as_bytes());

        let response = exchange_then_half_close(&server, &request).await;

        assert!(
            response.starts_with("HTTP/1.1 201 "),
            "{coding}: {response}"
        );
    }
    let mut names: Vec<String> = server
        .admin()
        .tenants()
        .await
        .into_iter()
        .map(|tenant| tenant.name)
        .collect();
    names.sort();
    assert_eq!(names, ["CHUNKED", "Chunked", "chunked"]);
}

/// hyper rejects these requests with a bare 400 before they reach the
/// routes, as the README's limits section states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_chunked_last_coding_gets_hyper_400() {
    let server = TestServer::start().await;
    let http10 = String::from_utf8(chunked_create(&["chunked"], b"{}"))
        .expect("UTF-8 request")
        .replacen("HTTP/1.1", "HTTP/1.0", 1)
        .into_bytes();
    let requests = [
        chunked_create(&["gzip"], b"{}"),
        chunked_create(&["chunked, gzip"], b"{}"),
        http10,
    ];

    for request in &requests {
        let response = exchange_then_half_close(&server, request).await;

        let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
        assert!(body.is_empty(), "{body}");
    }
    assert!(server.admin().tenants().await.is_empty());
}
