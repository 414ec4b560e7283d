//! Limits and robustness: request head and body sizes, timeouts, the
//! connection bound, and concurrent load.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN_TOKEN, TestServer, protected_status};

/// Upper bound for waits on the server in these tests; reaching it fails
/// the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_header_gets_431() {
    let server = TestServer::start().await;
    let huge = "a".repeat(70 * 1024);
    let large = "a".repeat(32 * 1024);

    let rejected = server
        .client
        .get(server.url("/healthz"))
        .header("x-padding", &huge)
        .send()
        .await
        .expect("request sent");
    let accepted = server
        .client
        .get(server.url("/healthz"))
        .header("x-padding", &large)
        .send()
        .await
        .expect("request sent");

    assert_eq!(
        rejected.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(accepted.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limit_is_configurable() {
    let server = TestServer::start_with(&["--max-header-bytes", "16384"]).await;

    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-padding", "a".repeat(20 * 1024))
        .send()
        .await
        .expect("request sent");

    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_is_configurable() {
    let server = TestServer::start_with(&["--max-body-bytes", "100"]).await;
    let small = format!(r#"{{"name":"{}"}}"#, "x".repeat(80));
    let large = format!(r#"{{"name":"{}"}}"#, "x".repeat(120));

    let accepted = create_tenant_raw(&server, small).await;
    let rejected = create_tenant_raw(&server, large).await;

    assert_eq!(accepted, StatusCode::CREATED);
    assert_eq!(rejected, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.admin().tenants().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_limit_gets_413() {
    let server = TestServer::start_with(&["--max-body-bytes", "1024"]).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    let head = format!(
        "POST /tenants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    let chunk = format!("{:x}\r\n{}\r\n", 600, " ".repeat(600));
    for _ in 0..2 {
        stream
            .write_all(chunk.as_bytes())
            .await
            .expect("chunk sent");
    }

    let response = read_response_head(&mut stream).await;

    assert!(
        response.starts_with("HTTP/1.1 413 "),
        "unexpected response: {response}"
    );
    assert!(server.admin().tenants().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_closed() {
    let server = TestServer::start_with(&["--header-read-timeout", "1"]).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .await
        .expect("partial head sent");

    let received = read_until_closed(&mut stream).await;

    assert!(received.is_empty(), "unexpected response: {received:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed() {
    let server = TestServer::start_with(&["--header-read-timeout", "1"]).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");

    let received = read_until_closed(&mut stream).await;

    assert!(received.is_empty(), "unexpected response: {received:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let server = TestServer::start_with(&["--header-read-timeout", "1"]).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request sent");
    let head = read_response_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(!head.contains("connection: close"), "{head}");

    let rest = read_until_closed(&mut stream).await;

    // Only the rest of the first response's body may follow its head.
    assert!(!rest.contains("HTTP/1.1"), "unexpected response: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_protected_calls_all_succeed() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let key = admin.issue_key(&tenant).await;

    let headers = [("x-api-key", key.api_key.as_str())];
    let calls = (0..200).map(|_| protected_status(&server, &headers));
    let statuses = futures_util::future::join_all(calls).await;

    assert_eq!(statuses.len(), 200);
    for (index, status) in statuses.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "call {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_queues_extra_connections() {
    let server = TestServer::start_with(&["--max-connections", "1"]).await;
    let mut first = TcpStream::connect(server.addr).await.expect("connects");
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request sent");
    let response = read_response_head(&mut first).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

    let second = server.client.get(server.url("/healthz")).send();
    let mut second = std::pin::pin!(second);
    let while_first_open = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
    assert!(
        while_first_open.is_err(),
        "a second connection was served while the first held the only slot"
    );

    drop(first);
    let after = tokio::time::timeout(WAIT, second)
        .await
        .expect("the queued connection is served once the first closes")
        .expect("request sent");
    assert_eq!(after.status(), StatusCode::OK);
}

/// Posts a tenant body and returns the status.
async fn create_tenant_raw(server: &TestServer, body: String) -> StatusCode {
    server
        .client
        .post(server.url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent")
        .status()
}

/// Reads until the server closes the connection, within [`WAIT`]; a reset
/// counts as closed.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection before the wait ends")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads from `stream` until the end of a response head, within [`WAIT`].
pub async fn read_response_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !received.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.expect("readable");
            if read == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..read]);
        }
    })
    .await
    .expect("a response head arrives before the wait ends");
    String::from_utf8_lossy(&received).into_owned()
}
