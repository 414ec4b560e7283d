//! Request ids, `/metrics` and the metrics listener.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use crate::helpers::{
    ADMIN_TOKEN, BINARY_TIMEOUT, BinaryServer, TestSchema, TestServer, protected_status,
};

/// Returns a well-formed key that was never issued.
fn unknown_key() -> String {
    tenet_core::ApiKey::generate().expose_secret().to_owned()
}

/// Returns the `/metrics` text of a server.
pub async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.expect("metrics text")
}

/// Returns the value of the sample whose name and labels are exactly
/// `series`, such as `tenet_ready` or `tenet_verifications_total{outcome="valid"}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("numeric sample value"))
}

/// Returns the names of every series the text can contain, from its
/// `# TYPE` lines: a histogram `h` contributes `h_bucket`, `h_sum` and
/// `h_count`, other types their declared name.
pub fn series_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(declaration) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = declaration.split(' ');
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_request_id_is_echoed() {
    let server = TestServer::start().await;

    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "client-id_1.2:3")
        .send()
        .await
        .expect("request sent");

    assert_eq!(response.headers()["x-request-id"], "client-id_1.2:3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request_id_is_replaced() {
    let server = TestServer::start().await;
    let too_long = "a".repeat(129);

    for sent in [
        None,
        Some("has space"),
        Some("a/b"),
        Some(too_long.as_str()),
    ] {
        let mut request = server.client.get(server.url("/no/such/route"));
        if let Some(sent) = sent {
            request = request.header("x-request-id", sent);
        }
        let response = request.send().await.expect("request sent");

        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .expect("ASCII id");
        let uuid = uuid_v7(echoed);
        assert!(uuid, "{sent:?} got {echoed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_request_id_is_replaced_unlogged() {
    // A token in the request id alphabet with separators, so that only the
    // comparison with the admin token rejects it, not its shape.
    let admin_token = "ops.admin:token.0123456789.abcdefghij";
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let server = BinaryServer::start(data_dir.path(), &[("TENET_ADMIN_TOKEN", admin_token)]);
    let client = reqwest::Client::new();
    let (_, key) = tenant_with_key(&client, &server, admin_token, "Request ids").await;

    for secret in [admin_token, key.as_str()] {
        let response = client
            .get(server.url("/healthz"))
            .header("x-request-id", secret)
            .send()
            .await
            .expect("request sent");

        assert_eq!(response.status(), StatusCode::OK);
        let echoed = response.headers()["x-request-id"]
            .to_str()
            .expect("ASCII id");
        assert!(uuid_v7(echoed), "a credential was echoed as {echoed}");
    }

    // The access log line of a request is written after its response is
    // sent, so wait for both before reading the log.
    let deadline = Instant::now() + BINARY_TIMEOUT;
    while healthz_lines(&server) < 2 {
        assert!(
            Instant::now() < deadline,
            "the /healthz requests were not logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.assert_logs_exclude(admin_token);
    server.assert_logs_exclude(&key);
    server.stop();
}

/// Counts the access log lines of `/healthz` requests.
fn healthz_lines(server: &BinaryServer) -> usize {
    server
        .logs
        .lock()
        .expect("log lines")
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "request" && event["route"] == "/healthz")
        .count()
}

fn uuid_v7(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && groups[2].starts_with('7')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_verifications() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Metrics Tenant Name").await;
    let valid = admin.issue_key(&tenant).await;
    let revoked = admin.issue_key(&tenant).await;
    admin.revoke_key(&tenant, &revoked).await;
    let unknown = unknown_key();

    let cases = [
        (valid.api_key.as_str(), StatusCode::OK),
        (revoked.api_key.as_str(), StatusCode::UNAUTHORIZED),
        (unknown.as_str(), StatusCode::UNAUTHORIZED),
        ("not-a-key", StatusCode::UNAUTHORIZED),
    ];
    for (key, status) in cases {
        assert_eq!(
            protected_status(&server, &[("x-api-key", key)]).await,
            status
        );
    }
    let raw_path = format!("/unknown/{}", tenant.id);
    let missing = server
        .client
        .get(server.url(&raw_path))
        .send()
        .await
        .expect("request sent");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let text = scrape(&server.client, &server.url("/metrics")).await;

    for (outcome, count) in [
        ("valid", 1.0),
        ("revoked", 1.0),
        ("unknown", 1.0),
        ("malformed", 1.0),
        ("unavailable", 0.0),
    ] {
        let series = format!("tenet_verifications_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(count), "{series}");
    }
    let issued =
        r#"tenet_http_requests_total{route="/tenants/{id}/keys",method="POST",status_class="2xx"}"#;
    assert_eq!(sample(&text, issued), Some(2.0));
    let unmatched =
        r#"tenet_http_requests_total{route="unmatched",method="GET",status_class="4xx"}"#;
    assert_eq!(sample(&text, unmatched), Some(1.0));
    let rejected = r#"tenet_http_request_duration_seconds_count{route="/protected",method="GET",status_class="4xx"}"#;
    assert_eq!(sample(&text, rejected), Some(3.0));
    let version = format!(
        "tenet_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some(1.0));
    assert_eq!(sample(&text, "tenet_ready"), Some(1.0));
    assert!(sample(&text, "tenet_cache_entries").is_some());
    for secret in [
        tenant.id.to_string(),
        tenant.name.clone(),
        valid.api_key.clone(),
        valid.id.to_string(),
        raw_path,
    ] {
        assert!(!text.contains(&secret), "the metrics contain {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_declare_every_documented_family() {
    let server = TestServer::start().await;
    // Request families appear with their first request.
    scrape(&server.client, &server.url("/metrics")).await;

    let text = scrape(&server.client, &server.url("/metrics")).await;

    let names = series_names(&text);
    for name in [
        "tenet_http_requests_total",
        "tenet_http_request_duration_seconds_bucket",
        "tenet_verifications_total",
        "tenet_cache_lookups_total",
        "tenet_pool_connections",
        "tenet_pool_max_connections",
        "tenet_pool_wait_seconds_bucket",
        "tenet_revocation_messages_total",
        "tenet_cache_entries",
        "tenet_build_info",
        "tenet_ready",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    for (layer, result) in [
        ("local", "hit"),
        ("local", "miss"),
        ("redis", "hit"),
        ("redis", "miss"),
    ] {
        let series = format!("tenet_cache_lookups_total{{layer=\"{layer}\",result=\"{result}\"}}");
        assert!(sample(&text, &series).is_some(), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_serves_operational_routes_only() {
    let server = TestServer::start_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics_addr = server.metrics_addr.expect("metrics address bound");
    let url = |path: &str| format!("http://{metrics_addr}{path}");

    let text = scrape(&server.client, &url("/metrics")).await;
    let ready = server
        .client
        .get(url("/readyz"))
        .send()
        .await
        .expect("request sent");
    let tenants = server
        .client
        .get(url("/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");

    assert!(text.contains("tenet_ready 1"), "{text}");
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(tenants.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_lines_carry_request_id() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let server = BinaryServer::start(data_dir.path(), &[]);
    let client = reqwest::Client::new();

    let response = client
        .get(server.url("/protected"))
        .header("x-request-id", "trace-me-42")
        .header("x-api-key", unknown_key())
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The rejection reason is a debug line inside the handler, the request
    // line comes last; both must carry the id.
    let lines = wait_for_log(&server, "request");
    let rejected = lines
        .iter()
        .find(|event| event["message"] == "rejected API key")
        .expect("the rejection is logged");
    let request = lines
        .iter()
        .find(|event| event["message"] == "request" && event["route"] == "/protected")
        .expect("the request is logged");
    assert_eq!(rejected["span"]["request_id"], "trace-me-42");
    assert_eq!(request["span"]["request_id"], "trace-me-42");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_lines_carry_the_tenant() {
    let KeyedServer {
        server,
        client,
        tenant_id,
        key,
        _data_dir,
    } = KeyedServer::start("Logged tenant").await;
    let tenant_id = tenant_id.as_str();

    let accepted = client
        .get(server.url("/protected"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request sent");
    let rejected = client
        .get(server.url("/protected"))
        .header("x-api-key", unknown_key())
        .send()
        .await
        .expect("request sent");
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);

    // Lines are written after their responses, so wait for the last one.
    let deadline = Instant::now() + BINARY_TIMEOUT;
    let lines = loop {
        let lines = wait_for_log(&server, "request");
        let protected = request_lines(&lines, "/protected");
        if protected.len() == 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "the /protected requests were not logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let created = request_lines(&lines, "/tenants");
    let issued = request_lines(&lines, "/tenants/{id}/keys");
    let protected = request_lines(&lines, "/protected");

    assert_eq!(created[0]["tenant_id"], tenant_id, "created tenant");
    assert_eq!(issued[0]["tenant_id"], tenant_id, "tenant in the path");
    let statuses: Vec<(u64, &Value)> = protected
        .iter()
        .map(|line| (line["status"].as_u64().expect("status"), &line["tenant_id"]))
        .collect();
    assert!(
        statuses.contains(&(200, &Value::from(tenant_id))),
        "{statuses:?}"
    );
    assert!(statuses.contains(&(401, &Value::Null)), "{statuses:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_tenant_lines_carry_the_tenant() {
    let KeyedServer {
        server,
        client,
        tenant_id,
        key,
        _data_dir,
    } = KeyedServer::start("Suspended").await;
    let tenant_id = tenant_id.as_str();
    let suspended = client
        .post(server.url(&format!("/tenants/{tenant_id}/suspend")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(suspended.status(), StatusCode::OK);

    let protected = client
        .get(server.url("/protected"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("request sent");
    let verified = client
        .post(server.url("/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(protected.status(), StatusCode::FORBIDDEN);
    assert_eq!(verified.status(), StatusCode::OK);
    let verified: Value = verified.json().await.expect("verify JSON");
    assert_eq!(verified["code"], "tenant_suspended");

    let lines = wait_for_requests(&server, "/verify", 1);
    let protected = request_lines(&lines, "/protected");
    let verify = request_lines(&lines, "/verify");

    assert_eq!(protected.len(), 1, "{protected:?}");
    assert_eq!(protected[0]["status"], 403);
    assert_eq!(protected[0]["tenant_id"], tenant_id, "403 tenant_suspended");
    assert_eq!(verify.len(), 1, "{verify:?}");
    assert_eq!(verify[0]["tenant_id"], tenant_id, "verified key's tenant");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_lines_carry_the_tenant() {
    let KeyedServer {
        server,
        client,
        tenant_id,
        key,
        _data_dir,
    } = KeyedServer::start("Limited").await;
    let tenant_id = tenant_id.as_str();
    let limited = client
        .put(server.url(&format!("/tenants/{tenant_id}/limits")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({
            "limit": { "rate": 1, "period_seconds": 3600, "burst": 1 }
        }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(limited.status(), StatusCode::OK);

    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client
            .get(server.url("/protected"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("request sent");
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "a burst of 1 passes one request"
    );

    let lines = wait_for_requests(&server, "/protected", 2);
    let protected = request_lines(&lines, "/protected");

    assert_eq!(protected.len(), 2, "{protected:?}");
    assert_eq!(protected[1]["status"], 429);
    assert_eq!(protected[1]["tenant_id"], tenant_id, "429 over the limit");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_omit_postgres_parameters() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let env = |rust_log| {
        [
            ("RUST_LOG", rust_log),
            ("TENET_DATABASE_URL", schema.database_url.as_str()),
            ("TENET_DATABASE_SCHEMA", schema.name.as_str()),
            ("TENET_ADMIN_TOKEN", ADMIN_TOKEN),
            (
                "TENET_KEY_PEPPER",
                "log-test-pepper-0123456789abcdefghijklmnopqrstuvwxyz",
            ),
        ]
    };
    let client = reqwest::Client::new();

    // The second server names tokio_postgres, which lets its debug lines
    // through, so it shows that this traffic logs parameters otherwise.
    let mut parameter_lines = Vec::new();
    for rust_log in ["debug", "debug,tokio_postgres=debug"] {
        let server = BinaryServer::start(data_dir.path(), &env(rust_log));
        let (_, key) = tenant_with_key(&client, &server, ADMIN_TOKEN, "Logged tenant").await;
        let protected = client
            .get(server.url("/protected"))
            .header("x-api-key", &key)
            .send()
            .await
            .expect("request sent");
        assert_eq!(protected.status(), StatusCode::OK, "RUST_LOG={rust_log}");

        // tokio-postgres logs "executing statement s1 with parameters:
        // [...]" before it sends a statement, so the lines of the key
        // lookup come before the request line of /protected.
        let lines = wait_for_requests(&server, "/protected", 1);
        let with_parameters = lines
            .iter()
            .filter(|line| {
                line["message"]
                    .as_str()
                    .is_some_and(|message| message.contains("with parameters"))
            })
            .count();
        parameter_lines.push((rust_log, with_parameters));
        server.stop();
    }

    assert_eq!(parameter_lines[0], ("debug", 0), "{parameter_lines:?}");
    assert!(parameter_lines[1].1 > 0, "{parameter_lines:?}");
}

/// A binary server started with [`ADMIN_TOKEN`], and one tenant with a key.
struct KeyedServer {
    server: BinaryServer,
    client: reqwest::Client,
    tenant_id: String,
    /// The plaintext key.
    key: String,
    /// Dropped last, after the server has stopped.
    _data_dir: tempfile::TempDir,
}

impl KeyedServer {
    async fn start(tenant_name: &str) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let server = BinaryServer::start(data_dir.path(), &[("TENET_ADMIN_TOKEN", ADMIN_TOKEN)]);
        let client = reqwest::Client::new();
        let (tenant_id, key) = tenant_with_key(&client, &server, ADMIN_TOKEN, tenant_name).await;
        Self {
            server,
            client,
            tenant_id,
            key,
            _data_dir: data_dir,
        }
    }
}

/// Creates a tenant named `name` through a binary server and issues it a
/// key, and returns the tenant id and the plaintext key.
async fn tenant_with_key(
    client: &reqwest::Client,
    server: &BinaryServer,
    admin_token: &str,
    name: &str,
) -> (String, String) {
    let tenant: Value = client
        .post(server.url("/tenants"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("tenant JSON");
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    let issued: Value = client
        .post(server.url(&format!("/tenants/{tenant_id}/keys")))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("key JSON");
    let key = issued["api_key"]
        .as_str()
        .expect("plaintext key")
        .to_owned();
    (tenant_id, key)
}

/// Returns the request log lines of `route`, in the order they were written.
fn request_lines<'a>(lines: &'a [Value], route: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|event| event["message"] == "request" && event["route"] == route)
        .collect()
}

/// Waits until the binary has logged a line with `message`, and returns
/// every JSON log line so far.
/// Waits until the log has `count` request lines of `route`, and returns
/// every line. The log thread writes lines in batches, so a request's line
/// may arrive a little after its response.
fn wait_for_requests(server: &BinaryServer, route: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + BINARY_TIMEOUT;
    loop {
        let lines = wait_for_log(server, "request");
        if request_lines(&lines, route).len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} {route} requests were logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_log(server: &BinaryServer, message: &str) -> Vec<Value> {
    let deadline = Instant::now() + BINARY_TIMEOUT;
    loop {
        let lines: Vec<Value> = server
            .logs
            .lock()
            .expect("log lines")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        if lines.iter().any(|event| event["message"] == message) {
            return lines;
        }
        assert!(Instant::now() < deadline, "no {message:?} log line");
        std::thread::sleep(Duration::from_millis(20));
    }
}
