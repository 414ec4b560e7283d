//! Monthly quotas without Redis: after a restart, and when a quota is set
//! for the first time or again, the server starts each tenant's month from
//! the accepted requests in the stored usage and those not flushed yet.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenet_core::api::TenantResponse;

use crate::helpers::{ADMIN_TOKEN, TestSchema, TestServer};

/// Flushes usage only at shutdown, so that the restart alone must carry
/// the counts into the store.
const FLUSH_AT_SHUTDOWN: [&str; 2] = ["--usage-flush-interval", "3600"];

const QUOTA: usize = 5;

async fn set_quota(server: &TestServer, tenant: &TenantResponse) {
    put_limits(server, tenant, json!({ "monthly_quota": QUOTA })).await;
}

async fn put_limits(server: &TestServer, tenant: &TenantResponse, limits: Value) {
    let response = server
        .client
        .put(server.url(&format!("/tenants/{}/limits", tenant.id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&limits)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Calls `/protected` and returns the status and the error code, if any.
async fn protected(server: &TestServer, key: &str) -> (StatusCode, Option<String>) {
    let response = server
        .client
        .get(server.url("/protected"))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().map(str::to_owned);
    (status, code)
}

async fn accepted_this_month(server: &TestServer, tenant: &TenantResponse) -> u64 {
    let now = time::OffsetDateTime::now_utc();
    let month = tenet_core::ratelimit::QuotaMonth::containing(now);
    let format = |at| tenet_core::timestamp::format(at);
    let url = server.url(&format!(
        "/tenants/{}/usage?from={}&to={}",
        tenant.id,
        format(month.starts_at()),
        format(month.resets_at())
    ));
    let body: Value = server
        .client
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("usage JSON");
    body["totals"]["accepted"].as_u64().expect("accepted total")
}

/// Spends the quota on `server`, restarts it with `restart`, and checks
/// that the restarted server rejects the next request.
async fn spend_restart_and_check<F, Fut>(server: TestServer, restart: F)
where
    F: FnOnce(TestServer) -> Fut,
    Fut: Future<Output = TestServer>,
{
    let tenant = server.admin().create_tenant("Acme").await;
    set_quota(&server, &tenant).await;
    let key = server.admin().issue_key(&tenant).await;
    let mut before = Vec::new();
    for _ in 0..QUOTA {
        before.push(protected(&server, &key.api_key).await.0);
    }
    let (over_before, _) = protected(&server, &key.api_key).await;

    let server = restart(server).await;
    let (status, code) = protected(&server, &key.api_key).await;
    let accepted = accepted_this_month(&server, &tenant).await;

    assert_eq!(before, [StatusCode::OK; QUOTA]);
    assert_eq!(over_before, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "after the restart");
    assert_eq!(code.as_deref(), Some("quota_exceeded"));
    assert_eq!(accepted, QUOTA as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_survives_a_restart_on_sqlite() {
    let server = TestServer::start_with(&FLUSH_AT_SHUTDOWN).await;

    spend_restart_and_check(server, |server| async {
        let data_dir = server.stop_keeping_data().await;
        TestServer::start_in(data_dir, &FLUSH_AT_SHUTDOWN).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_survives_a_restart_on_postgres() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let flags = [
        "--database-url",
        &schema.database_url,
        "--database-schema",
        &schema.name,
        FLUSH_AT_SHUTDOWN[0],
        FLUSH_AT_SHUTDOWN[1],
    ];
    let server = TestServer::start_with(&flags).await;

    spend_restart_and_check(server, |server| async {
        server.stop().await;
        TestServer::start_with(&flags).await
    })
    .await;
}

/// A quota set again after a time without one starts from the stored
/// usage, which also counts the requests accepted in between, as it does
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_set_again_counts_requests_without_it() {
    let server = TestServer::start_with(&["--usage-flush-interval", "1"]).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    set_quota(&server, &tenant).await;
    let (first, _) = protected(&server, &key.api_key).await;

    put_limits(&server, &tenant, json!({})).await;
    let mut unlimited = Vec::new();
    for _ in 0..QUOTA {
        unlimited.push(protected(&server, &key.api_key).await.0);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while accepted_this_month(&server, &tenant).await < QUOTA as u64 + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "usage counts flushed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    set_quota(&server, &tenant).await;
    let (status, code) = protected(&server, &key.api_key).await;

    assert_eq!(first, StatusCode::OK);
    assert_eq!(unlimited, [StatusCode::OK; QUOTA]);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "quota set again");
    assert_eq!(code.as_deref(), Some("quota_exceeded"));
    server.stop().await;
}

/// A first quota counts the requests accepted before it was set, also
/// those that the server has not flushed to the store yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_quota_counts_requests_not_flushed_yet() {
    let server = TestServer::start_with(&FLUSH_AT_SHUTDOWN).await;
    let tenant = server.admin().create_tenant("Acme").await;
    let key = server.admin().issue_key(&tenant).await;
    let mut before = Vec::new();
    for _ in 0..QUOTA - 1 {
        before.push(protected(&server, &key.api_key).await.0);
    }

    set_quota(&server, &tenant).await;
    let (last, _) = protected(&server, &key.api_key).await;
    let (over, code) = protected(&server, &key.api_key).await;

    assert_eq!(before, [StatusCode::OK; QUOTA - 1]);
    assert_eq!(
        accepted_this_month(&server, &tenant).await,
        0,
        "not flushed"
    );
    assert_eq!(last, StatusCode::OK);
    assert_eq!(over, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code.as_deref(), Some("quota_exceeded"));
    server.stop().await;
}
