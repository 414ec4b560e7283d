//! Key metadata, `last_used_at` and usage metering over HTTP.
//!
//! The servers here flush only once an hour, so every count and key use
//! that reaches the store was written by the flush at graceful shutdown.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenet_core::TenantId;
use tenet_core::api::{IssuedKeyResponse, TenantResponse, UsageRecord, UsageResponse};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{ADMIN_TOKEN, TestSchema, TestServer, protected_status};

/// Flags that keep the periodic flushes out of a test.
const HOURLY_FLUSH: [&str; 4] = [
    "--usage-flush-interval",
    "3600",
    "--key-use-flush-interval",
    "3600",
];

/// Issues a key with `body` through the admin token and returns the status
/// and JSON body.
async fn issue(server: &TestServer, tenant: &TenantResponse, body: Value) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn issue_ok(server: &TestServer, tenant: &TenantResponse, body: Value) -> IssuedKeyResponse {
    let (status, body) = issue(server, tenant, body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).expect("issued key JSON")
}

/// Sends `GET path` with `credential` as bearer and returns the status,
/// the content type and the body text.
async fn get(server: &TestServer, path: &str, credential: &str) -> (StatusCode, String, String) {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(credential)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

/// Calls `POST /verify` with the admin token and returns the `valid` flag.
async fn verify_valid(server: &TestServer, key: &str, scopes: &[&str]) -> bool {
    let response = server
        .client
        .post(server.url("/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "key": key, "scopes": scopes }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON body");
    body["valid"] == true
}

/// Calls `POST /verify` with the admin token and `"consume": false`, and
/// returns the JSON body.
async fn verify_without_consuming(server: &TestServer, key: &str) -> Value {
    let response = server
        .client
        .post(server.url("/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "key": key, "consume": false }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON body")
}

/// Returns a query for the day around now, which contains every hour that a
/// test's requests fall into.
fn today_query() -> String {
    let now = OffsetDateTime::now_utc();
    let format = |at: OffsetDateTime| at.format(&Rfc3339).expect("a formattable time");
    let from = format(now - time::Duration::hours(12));
    let to = format(now + time::Duration::hours(12));
    format!("from={from}&to={to}")
}

fn bearer(key: &IssuedKeyResponse) -> String {
    format!("Bearer {}", key.api_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_stored_listed_and_rotated() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let metadata = json!({"owner": "billing", "ticket": 42, "nested": {"on": true}});

    let issued = issue_ok(&server, &tenant, json!({ "metadata": metadata })).await;
    let plain = server.admin().issue_key(&tenant).await;
    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys/{}/rotate", tenant.id, issued.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let rotated: Value = response.json().await.expect("JSON body");
    let listed = server.admin().keys(&tenant).await;

    assert_eq!(Value::Object(issued.metadata.clone()), metadata);
    assert_eq!(rotated["new_key"]["metadata"], metadata);
    let stored = listed
        .iter()
        .find(|key| key.id == issued.id)
        .expect("listed");
    assert_eq!(Value::Object(stored.metadata.clone()), metadata);
    let without = listed
        .iter()
        .find(|key| key.id == plain.id)
        .expect("listed");
    assert!(without.metadata.is_empty());
    assert_eq!(without.last_used_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_metadata_is_rejected() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let cases = [
        ("an array", json!([1, 2]), "must be a JSON object"),
        ("a string", json!("owner"), "must be a JSON object"),
        ("a number", json!(7), "must be a JSON object"),
        (
            "over 4 KiB",
            json!({ "blob": "x".repeat(4096) }),
            "the maximum is 4096",
        ),
        ("a NUL character", json!({ "a": "x\u{0}" }), "U+0000"),
    ];

    for (description, metadata, message) in cases {
        let (status, body) = issue(&server, &tenant, json!({ "metadata": metadata })).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{description}");
        assert_eq!(body["error"]["code"], "invalid_metadata", "{description}");
        let text = body["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{description}: {text}");
    }
    assert!(server.admin().keys(&tenant).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_match_after_shutdown_flush() {
    let server = TestServer::start_with(&HOURLY_FLUSH).await;
    let admin = server.admin();
    let tenant = admin.create_tenant("Acme").await;
    let busy = issue_ok(&server, &tenant, json!({ "scopes": ["billing:read"] })).await;
    let revoked = admin.issue_key(&tenant).await;
    let unused = admin.issue_key(&tenant).await;
    admin.revoke_key(&tenant, &revoked).await;
    let stranger = tenet_core::ApiKey::generate();

    for _ in 0..5 {
        let status = protected_status(&server, &[("authorization", &bearer(&busy))]).await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..2 {
        let status = protected_status(&server, &[("authorization", &bearer(&revoked))]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for _ in 0..3 {
        assert!(verify_valid(&server, &busy.api_key, &["billing:read"]).await);
    }
    assert!(!verify_valid(&server, &busy.api_key, &["billing:write"]).await);
    assert!(!verify_valid(&server, stranger.expose_secret(), &[]).await);
    let unflushed = admin.keys(&tenant).await;
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_in(data_dir, &HOURLY_FLUSH).await;
    let path = format!("/tenants/{}/usage?{}", tenant.id, today_query());

    let (status, _, body) = get(&server, &path, ADMIN_TOKEN).await;
    let (day_status, _, day_body) =
        get(&server, &format!("{path}&granularity=day"), ADMIN_TOKEN).await;
    let keys = server.admin().keys(&tenant).await;

    assert!(unflushed.iter().all(|key| key.last_used_at.is_none()));
    assert_eq!(status, StatusCode::OK, "{body}");
    let usage: UsageResponse = serde_json::from_str(&body).expect("usage JSON");
    assert_eq!(usage.granularity, "hour");
    assert_eq!((usage.totals.accepted, usage.totals.rejected), (8, 3));
    let per_key = |key_id| {
        usage
            .periods
            .iter()
            .flat_map(|period| &period.keys)
            .filter(|key| key.key_id == key_id)
            .fold((0, 0), |(a, r), key| (a + key.accepted, r + key.rejected))
    };
    assert_eq!(per_key(busy.id), (8, 1));
    assert_eq!(per_key(revoked.id), (0, 2));
    assert_eq!(per_key(unused.id), (0, 0));
    assert_eq!(day_status, StatusCode::OK);
    let days: UsageResponse = serde_json::from_str(&day_body).expect("usage JSON");
    assert_eq!(days.periods.len(), 1, "{day_body}");
    assert_eq!(days.periods[0].accepted, 8);
    let used = keys.iter().find(|key| key.id == busy.id).expect("listed");
    assert!(used.last_used_at.is_some(), "flushed at shutdown");
    let idle = keys.iter().find(|key| key.id == unused.id).expect("listed");
    assert_eq!(idle.last_used_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_count_as_rejected() {
    let server = TestServer::start_with(&HOURLY_FLUSH).await;
    let tenant = server.admin().create_tenant("Acme").await;
    // One request in the burst, then a refill of one request an hour.
    let limited = issue_ok(
        &server,
        &tenant,
        json!({ "limit": {"rate": 1, "period_seconds": 3600, "burst": 1} }),
    )
    .await;
    let peeked = server.admin().issue_key(&tenant).await;

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(protected_status(&server, &[("x-api-key", &limited.api_key)]).await);
    }
    let limited_peek = verify_without_consuming(&server, &limited.api_key).await;
    let unlimited_peek = verify_without_consuming(&server, &peeked.api_key).await;
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_in(data_dir, &HOURLY_FLUSH).await;
    let path = format!("/tenants/{}/usage?{}", tenant.id, today_query());
    let (status, _, body) = get(&server, &path, ADMIN_TOKEN).await;

    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(limited_peek["valid"], true, "{limited_peek}");
    assert_eq!(unlimited_peek["valid"], true, "{unlimited_peek}");
    assert_eq!(status, StatusCode::OK, "{body}");
    let usage: UsageResponse = serde_json::from_str(&body).expect("usage JSON");
    let per_key = |key_id| {
        usage
            .periods
            .iter()
            .flat_map(|period| &period.keys)
            .filter(|key| key.key_id == key_id)
            .fold((0, 0), |(a, r), key| (a + key.accepted, r + key.rejected))
    };
    assert_eq!(per_key(limited.id), (1, 2));
    assert_eq!(
        per_key(peeked.id),
        (0, 0),
        "a check with consume false counts nothing"
    );
    assert_eq!((usage.totals.accepted, usage.totals.rejected), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_stable_json_lines() {
    let server = TestServer::start_with(&HOURLY_FLUSH).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let first = server.admin().issue_key(&tenant).await;
    let second = server.admin().issue_key(&tenant).await;
    for key in [&first, &second, &first] {
        let status = protected_status(&server, &[("x-api-key", &key.api_key)]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let data_dir = server.stop_keeping_data().await;
    let server = TestServer::start_in(data_dir, &HOURLY_FLUSH).await;
    let path = format!("/tenants/{}/usage/export?{}", tenant.id, today_query());

    let (status, content_type, body) = get(&server, &path, ADMIN_TOKEN).await;
    let (_, _, again) = get(&server, &path, ADMIN_TOKEN).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/x-ndjson");
    assert_eq!(body, again, "a second export is identical");
    assert!(body.ends_with('\n'));
    let records: Vec<UsageRecord> = body
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert_eq!(records.len(), 2, "{body}");
    let of = |key: &IssuedKeyResponse| {
        records
            .iter()
            .find(|record| record.key_id == key.id)
            .expect("a record per used key")
    };
    assert_eq!(of(&first).accepted, 2);
    assert_eq!(of(&second).accepted, 1);
    assert_ne!(of(&first).event_id, of(&second).event_id);
    assert!(records.iter().all(|record| record.tenant_id == tenant.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_queries_are_validated() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let cases = [
        ("no parameters", String::new(), "invalid_range"),
        (
            "missing to",
            "from=2026-12-01T00:00:00Z".to_owned(),
            "invalid_range",
        ),
        (
            "not RFC 3339",
            "from=2026-12-01&to=2026-12-02T00:00:00Z".to_owned(),
            "invalid_range",
        ),
        (
            "from equals to",
            "from=2026-12-01T00:00:00Z&to=2026-12-01T00:00:00Z".to_owned(),
            "invalid_range",
        ),
        (
            "over 31 days",
            "from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z".to_owned(),
            "invalid_range",
        ),
        (
            "unknown granularity",
            "from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z&granularity=month".to_owned(),
            "invalid_granularity",
        ),
    ];

    for (description, query, code) in cases {
        for route in ["usage", "usage/export"] {
            if route == "usage/export" && code == "invalid_granularity" {
                continue;
            }
            let path = format!("/tenants/{}/{route}?{query}", tenant.id);

            let (status, _, body) = get(&server, &path, ADMIN_TOKEN).await;

            assert_eq!(status, StatusCode::BAD_REQUEST, "{description} on {route}");
            let body: Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(body["error"]["code"], code, "{description} on {route}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_limited_to_own_tenant_admin_keys() {
    let server = TestServer::start().await;
    let acme = server.admin().create_tenant("Acme").await;
    let other = server.admin().create_tenant("Other").await;
    let manager = issue_ok(&server, &acme, json!({ "scopes": ["tenet:admin"] })).await;
    let plain = server.admin().issue_key(&acme).await;
    let query = today_query();
    let path = |tenant: &TenantResponse| format!("/tenants/{}/usage?{query}", tenant.id);

    let (own, _, _) = get(&server, &path(&acme), &manager.api_key).await;
    let (foreign, _, _) = get(&server, &path(&other), &manager.api_key).await;
    let (unscoped, _, _) = get(&server, &path(&acme), &plain.api_key).await;
    let (anonymous, _, _) = get(&server, &path(&acme), "not-a-credential").await;
    let (missing, _, _) = get(
        &server,
        &format!("/tenants/{}/usage?{query}", TenantId::generate()),
        ADMIN_TOKEN,
    )
    .await;

    assert_eq!(own, StatusCode::OK);
    assert_eq!(foreign, StatusCode::NOT_FOUND);
    assert_eq!(unscoped, StatusCode::FORBIDDEN);
    assert_eq!(anonymous, StatusCode::UNAUTHORIZED);
    assert_eq!(missing, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tenant_usage_stays_readable() {
    let server = TestServer::start_with(&["--usage-flush-interval", "1"]).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = issue_ok(&server, &tenant, json!({})).await;
    for _ in 0..2 {
        let status = protected_status(&server, &[("x-api-key", key.api_key.as_str())]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let now = OffsetDateTime::now_utc();
    let range = format!(
        "from={}&to={}",
        (now - time::Duration::hours(2))
            .format(&Rfc3339)
            .expect("time"),
        (now + time::Duration::hours(1))
            .format(&Rfc3339)
            .expect("time"),
    )
    .replace('+', "%2B");
    let usage_path = format!("/tenants/{}/usage?{range}", tenant.id);
    let accepted = || async {
        let (_, _, body) = get(&server, &usage_path, ADMIN_TOKEN).await;
        serde_json::from_str::<UsageResponse>(&body).map_or(0, |usage| usage.totals.accepted)
    };
    // The 1-second flush writes the two requests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while accepted().await < 2 {
        assert!(std::time::Instant::now() < deadline, "usage never flushed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let deleted = server
        .client
        .delete(server.url(&format!("/tenants/{}", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    let (status, _, body) = get(&server, &usage_path, ADMIN_TOKEN).await;
    let (unknown, _, _) = get(
        &server,
        &format!("/tenants/{}/usage?{range}", TenantId::generate()),
        ADMIN_TOKEN,
    )
    .await;

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(status, StatusCode::OK, "{body}");
    let usage: UsageResponse = serde_json::from_str(&body).expect("usage JSON");
    assert_eq!(usage.totals.accepted, 2);
    assert_eq!(unknown, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_final_write_is_an_error() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let mut flags = vec![
        "--database-url",
        &schema.database_url,
        "--database-schema",
        &schema.name,
    ];
    flags.extend(HOURLY_FLUSH);
    let server = TestServer::start_with(&flags).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    let status = protected_status(&server, &[("x-api-key", &key.api_key)]).await;
    assert_eq!(status, StatusCode::OK);

    // The table of usage counts goes away, so every write of the counts
    // fails until the retries at shutdown give up.
    schema
        .execute(&format!(
            "ALTER TABLE {}.usage_hourly RENAME TO usage_hourly_gone",
            schema.name
        ))
        .await;
    let stopped = server.stop_reporting().await;

    match stopped {
        Err(tenet_server::Error::FinalWrite { data, .. }) => assert_eq!(data, "usage counts"),
        other => panic!("expected a failed final write, got {other:?}"),
    }
}
