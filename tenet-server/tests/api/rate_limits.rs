//! Rate limits, monthly quotas and the limit of failed authentications
//! on one in-process server, which decides in process (no Redis).

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tenet_core::api::{IssuedKeyResponse, TenantResponse};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{ADMIN_TOKEN, TestServer};

/// Returns a limit that refills one request an hour, so that every
/// accepted request in a test comes out of the burst.
fn hourly(burst: u32) -> Value {
    json!({"rate": 1, "period_seconds": 3600, "burst": burst})
}

async fn put_limits(server: &TestServer, tenant: &str, body: &Value) -> (StatusCode, Value) {
    let response = server
        .client
        .put(server.url(&format!("/tenants/{tenant}/limits")))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn set_limits(server: &TestServer, tenant: &TenantResponse, body: Value) {
    let (status, reply) = put_limits(server, &tenant.id.to_string(), &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

async fn issue_with(
    server: &TestServer,
    tenant: &TenantResponse,
    body: Value,
) -> IssuedKeyResponse {
    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("issued key JSON")
}

async fn protected(server: &TestServer, key: &str) -> Response {
    server
        .client
        .get(server.url("/protected"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("request sent")
}

async fn statuses(server: &TestServer, key: &str, count: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        statuses.push(protected(server, key).await.status());
    }
    statuses
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("visible ASCII").to_owned())
}

async fn error_code(response: Response) -> (String, String) {
    let body: Value = response.json().await.expect("JSON error body");
    let code = body["error"]["code"].as_str().expect("a code").to_owned();
    let message = body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    (code, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_round_trip() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let path = server.url(&format!("/tenants/{}/limits", tenant.id));
    let body = json!({
        "limit": {"rate": 100, "period_seconds": 60, "burst": 20, "shadow": true},
        "monthly_quota": 50000
    });

    let before: Value = server
        .client
        .get(&path)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body");
    let (status, stored) = put_limits(&server, &tenant.id.to_string(), &body).await;
    let after: Value = server
        .client
        .get(&path)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body");

    assert_eq!(before, json!({"limit": null, "monthly_quota": null}));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, body);
    assert_eq!(after, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_need_admin_and_a_tenant() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    let missing = uuid::Uuid::now_v7().to_string();

    let (unknown, _) = put_limits(&server, &missing, &json!({"monthly_quota": 5})).await;
    let as_key = server
        .client
        .get(server.url(&format!("/tenants/{}/limits", tenant.id)))
        .bearer_auth(&key.api_key)
        .send()
        .await
        .expect("request sent");

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(as_key.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_limits_are_rejected() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let tenant_id = tenant.id.to_string();
    let cases = [
        (
            "zero rate",
            json!({"limit": {"rate": 0, "period_seconds": 1, "burst": 1}}),
            "invalid_rate_limit",
        ),
        (
            "zero burst",
            json!({"limit": {"rate": 1, "period_seconds": 1, "burst": 0}}),
            "invalid_rate_limit",
        ),
        (
            "zero period",
            json!({"limit": {"rate": 1, "period_seconds": 0, "burst": 1}}),
            "invalid_rate_limit",
        ),
        (
            "burst spanning centuries",
            json!({"limit": {"rate": 1, "period_seconds": 86400, "burst": 4_000_000}}),
            "invalid_rate_limit",
        ),
        (
            "negative rate",
            json!({"limit": {"rate": -1, "period_seconds": 1, "burst": 1}}),
            "invalid_json",
        ),
        ("zero quota", json!({"monthly_quota": 0}), "invalid_quota"),
        (
            "quota over 2^50",
            json!({"monthly_quota": 1u64 << 51}),
            "invalid_quota",
        ),
        ("unknown field", json!({"quota": 5}), "invalid_json"),
        (
            "unknown limit field",
            json!({"limit": {"rate": 1, "period_seconds": 1, "burst": 1, "x": 1}}),
            "invalid_json",
        ),
    ];

    for (description, body, code) in cases {
        let (status, reply) = put_limits(&server, &tenant_id, &body).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{description}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{description}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_limit_message_gives_seconds() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let tenant_id = tenant.id.to_string();
    let cases = [
        (
            json!({"limit": {"rate": 1, "period_seconds": 0, "burst": 1}}),
            "period 0 s",
        ),
        (
            json!({"limit": {"rate": 1, "period_seconds": 86400, "burst": 4_000_000}}),
            "per 86400 s",
        ),
        (
            json!({"limit": {"rate": 1, "period_seconds": u64::MAX, "burst": 1}}),
            "per 18446744073709551615 s",
        ),
    ];

    for (body, expected) in cases {
        let (status, reply) = put_limits(&server, &tenant_id, &body).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        let message = reply["error"]["message"].as_str().expect("message");
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limit_sets_headers_and_rejects() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = issue_with(&server, &tenant, json!({"limit": hourly(2)})).await;

    let first = protected(&server, &key.api_key).await;
    let second = protected(&server, &key.api_key).await;
    let third = protected(&server, &key.api_key).await;

    assert_eq!(key.limit.map(|limit| limit.burst), Some(2));
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&first, "ratelimit-remaining").as_deref(), Some("1"));
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header(&second, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&third, "ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&third, "ratelimit-remaining").as_deref(), Some("0"));
    let retry: u64 = header(&third, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=3600).contains(&retry),
        "Retry-After {retry} for one request an hour"
    );
    let reset: u64 = header(&third, "ratelimit-reset")
        .expect("RateLimit-Reset")
        .parse()
        .expect("whole seconds");
    assert!(reset > 3600, "reset {reset} for two requests an hour");
    assert_eq!(error_code(third).await.0, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_key_gets_no_limit_headers() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;

    let response = protected(&server, &key.api_key).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "ratelimit-limit"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limit_is_shared_by_its_keys() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let other_tenant = server.admin().create_tenant("Globex").await;
    set_limits(&server, &tenant, json!({"limit": hourly(3)})).await;
    let first = server.admin().issue_key(&tenant).await;
    let second = server.admin().issue_key(&tenant).await;
    let stranger = server.admin().issue_key(&other_tenant).await;

    let through_first = statuses(&server, &first.api_key, 4).await;
    let through_second = protected(&server, &second.api_key).await;
    let other = protected(&server, &stranger.api_key).await;

    assert_eq!(
        through_first,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(through_second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(other.status(), StatusCode::OK, "another tenant is apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rejection_leaves_tenant_limit() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    set_limits(&server, &tenant, json!({"limit": hourly(3)})).await;
    let tight = issue_with(&server, &tenant, json!({"limit": hourly(1)})).await;
    let loose = server.admin().issue_key(&tenant).await;

    let through_tight = statuses(&server, &tight.api_key, 5).await;
    let through_loose = statuses(&server, &loose.api_key, 3).await;

    assert_eq!(through_tight[0], StatusCode::OK);
    assert!(
        through_tight[1..]
            .iter()
            .all(|status| *status == StatusCode::TOO_MANY_REQUESTS),
        "{through_tight:?}"
    );
    // The tight key used one of the tenant's three; its rejections none.
    assert_eq!(
        through_loose,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limit_changes_take_effect() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let other = server.admin().create_tenant("Globex").await;
    let key = server.admin().issue_key(&tenant).await;
    let path = format!("/tenants/{}/keys/{}/limit", tenant.id, key.id);
    let put = |path: String, body: Value| {
        let request = server
            .client
            .put(server.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body);
        async move { request.send().await.expect("request sent") }
    };
    assert_eq!(
        protected(&server, &key.api_key).await.status(),
        StatusCode::OK
    );

    let set = put(path.clone(), json!({"limit": hourly(1)})).await;
    let limited = statuses(&server, &key.api_key, 2).await;
    let removed = put(path.clone(), json!({"limit": null})).await;
    let unlimited = protected(&server, &key.api_key).await;
    let foreign = put(
        format!("/tenants/{}/keys/{}/limit", other.id, key.id),
        json!({"limit": hourly(1)}),
    )
    .await;
    let unknown_tenant = put(
        format!(
            "/tenants/{}/keys/{}/limit",
            "01890a5d-ac96-774b-bcce-b302099a8057", key.id
        ),
        json!({"limit": hourly(1)}),
    )
    .await;

    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(
        limited,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "the new limit applies at once"
    );
    assert_eq!(removed.status(), StatusCode::OK);
    assert_eq!(unlimited.status(), StatusCode::OK);
    assert_eq!(header(&unlimited, "ratelimit-limit"), None);
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(foreign).await.0, "key_not_found");
    assert_eq!(unknown_tenant.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(unknown_tenant).await.0, "tenant_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_limit_only_reports() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let mut limit = hourly(1);
    limit["shadow"] = json!(true);
    set_limits(&server, &tenant, json!({"limit": limit})).await;
    let key = server.admin().issue_key(&tenant).await;

    let first = protected(&server, &key.api_key).await;
    let second = protected(&server, &key.api_key).await;
    let third = protected(&server, &key.api_key).await;
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("metrics text");

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "tenet-shadow-rejected"), None);
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        header(&second, "tenet-shadow-rejected").as_deref(),
        Some("true")
    );
    assert_eq!(third.status(), StatusCode::OK);
    assert!(
        metrics.contains(r#"tenet_rate_limit_decisions_total{outcome="shadow_rejected"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_limit_applies_at_once() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    set_limits(&server, &tenant, json!({"limit": hourly(1)})).await;

    let first = protected(&server, &key.api_key).await;
    let over = protected(&server, &key.api_key).await;
    let raised = json!({"rate": 100, "period_seconds": 60, "burst": 50});
    set_limits(&server, &tenant, json!({"limit": raised})).await;
    let after = protected(&server, &key.api_key).await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(header(&after, "ratelimit-limit").as_deref(), Some("50"));
    assert_eq!(header(&after, "ratelimit-remaining").as_deref(), Some("49"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_rejection_carries_the_rate_limit_headers() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let mut limit = hourly(1);
    limit["shadow"] = json!(true);
    set_limits(
        &server,
        &tenant,
        json!({"limit": limit, "monthly_quota": 2}),
    )
    .await;
    let key = server.admin().issue_key(&tenant).await;

    let accepted = statuses(&server, &key.api_key, 2).await;
    let over = protected(&server, &key.api_key).await;

    assert_eq!(accepted, [StatusCode::OK, StatusCode::OK]);
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&over, "ratelimit-limit").as_deref(), Some("1"));
    assert_eq!(header(&over, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(
        header(&over, "tenet-shadow-rejected").as_deref(),
        Some("true")
    );
    assert!(header(&over, "retry-after").is_some());
    assert_eq!(error_code(over).await.0, "quota_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_admits_exactly_its_size() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    set_limits(&server, &tenant, json!({"monthly_quota": 3})).await;
    let first = server.admin().issue_key(&tenant).await;
    let second = server.admin().issue_key(&tenant).await;

    let accepted = statuses(&server, &first.api_key, 2).await;
    let third = protected(&server, &second.api_key).await;
    let over = protected(&server, &first.api_key).await;

    assert_eq!(accepted, [StatusCode::OK, StatusCode::OK]);
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&over, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=31 * 86_400).contains(&retry),
        "Retry-After {retry} is within a month"
    );
    let (code, message) = error_code(over).await;
    assert_eq!(code, "quota_exceeded");
    let reset_text = message
        .rsplit(' ')
        .next()
        .expect("the message ends with the reset time");
    let reset = OffsetDateTime::parse(reset_text, &Rfc3339).expect("an RFC 3339 time");
    assert_eq!(reset.day(), 1);
    assert!(reset > OffsetDateTime::now_utc());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_limit_state() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = issue_with(&server, &tenant, json!({"limit": hourly(1)})).await;
    let verify = |consume: bool| {
        let request = server
            .client
            .post(server.url("/verify"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"key": key.api_key, "consume": consume}));
        async move {
            let response = request.send().await.expect("request sent");
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.expect("JSON body")
        }
    };

    let peeked = verify(false).await;
    let peeked_again = verify(false).await;
    let consumed = verify(true).await;
    let limited = verify(true).await;

    assert_eq!(peeked["rate_limit"]["allowed"], true);
    assert_eq!(peeked["rate_limit"]["remaining"], 1);
    assert_eq!(
        peeked_again["rate_limit"]["remaining"], 1,
        "peeking is free"
    );
    assert_eq!(consumed["rate_limit"]["allowed"], true);
    assert_eq!(consumed["rate_limit"]["remaining"], 0);
    assert_eq!(limited["valid"], true);
    assert_eq!(limited["rate_limit"]["allowed"], false);
    assert_eq!(limited["rate_limit"]["code"], "rate_limited");
    assert!(limited["rate_limit"]["retry_after_seconds"].as_u64() >= Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_limit_the_address_only() {
    let server =
        TestServer::start_with(&["--auth-failure-rate", "1", "--auth-failure-burst", "3"]).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    let guess = tenet_core::ApiKey::generate();
    // Every address in 127.0.0.0/8 is loopback on Linux, so the owner can
    // reach the server from an address of its own.
    let owner = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("HTTP client");

    let guesses = statuses(&server, guess.expose_secret(), 3).await;
    let blocked_guess = protected(&server, guess.expose_secret()).await;
    let blocked_valid = protected(&server, &key.api_key).await;
    let from_owner = owner
        .get(server.url("/protected"))
        .header("X-API-Key", &key.api_key)
        .send()
        .await
        .expect("request sent");

    assert_eq!(guesses, [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(blocked_guess.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&blocked_guess, "retry-after").is_some());
    assert_eq!(error_code(blocked_guess).await.0, "rate_limited");
    assert_eq!(blocked_valid.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(from_owner.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_keeps_its_limit() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await;
    let old = issue_with(&server, &tenant, json!({"limit": hourly(1)})).await;

    let response = server
        .client
        .post(server.url(&format!("/tenants/{}/keys/{}/rotate", tenant.id, old.id)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let rotated: Value = response.json().await.expect("JSON body");
    assert_eq!(
        rotated["new_key"]["limit"],
        json!({"rate": 1, "period_seconds": 3600, "burst": 1, "shadow": false})
    );
    let new_key = rotated["new_key"]["api_key"].as_str().expect("new key");
    let through_new = statuses(&server, new_key, 2).await;

    assert_eq!(
        through_new,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "the new key has the old key's burst of 1"
    );
}
