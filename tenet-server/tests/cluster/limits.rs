//! Rate limits and quotas shared by three replicas through Redis, and the
//! per-replica fallback while Redis is cut off.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenet_core::api::{IssuedKeyResponse, TenantResponse};
use tokio::task::JoinSet;
use tokio::time::sleep;

use super::proxy::Mode;
use super::{Cluster, REDIS_TIMEOUT};

/// The Redis timeout of the flood tests: above the server's default, so
/// that a thousand concurrent requests on a two-core machine do not time
/// out and fall back while Redis is healthy.
const FLOOD_REDIS_TIMEOUT_MS: &str = "2000";

/// Returns a limit that refills one request a day, so that every accepted
/// request comes out of the burst. Bursts up to 400 pass the limit's
/// bound of 2^45 µs for `burst * period / rate`.
fn daily(burst: u32) -> Value {
    json!({"rate": 1, "period_seconds": 86_400, "burst": burst})
}

/// Starts `count` replicas that know their count and wait `redis_timeout_ms`
/// for Redis.
async fn start(count: usize, redis_timeout_ms: &str) -> Option<Cluster> {
    let replicas = count.to_string();
    Cluster::start(
        count,
        &[
            ("TENET_REDIS_TIMEOUT_MS", redis_timeout_ms),
            ("TENET_REPLICAS", replicas.as_str()),
        ],
    )
    .await
}

async fn put(cluster: &Cluster, path: &str, body: Value) {
    let admin = cluster.admin(0);
    let response = admin
        .client
        .put(format!("{}{path}", admin.base))
        .bearer_auth(&admin.token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK, "PUT {path}");
}

async fn issue_limited(
    cluster: &Cluster,
    tenant: &TenantResponse,
    burst: u32,
) -> IssuedKeyResponse {
    let admin = cluster.admin(0);
    let response = admin
        .client
        .post(format!("{}/tenants/{}/keys", admin.base, tenant.id))
        .bearer_auth(&admin.token)
        .json(&json!({"limit": daily(burst)}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("issued key JSON")
}

/// Verifies `key` on every replica without counting the request, so that
/// each replica has the key and its limits cached before a flood.
async fn warm(cluster: &Cluster, key: &str) {
    for index in 0..cluster.replicas.len() {
        let admin = cluster.admin(index);
        let response = admin
            .client
            .post(format!("{}/verify", admin.base))
            .bearer_auth(&admin.token)
            .json(&json!({"key": key, "consume": false}))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["valid"], true, "replica {index}: {body}");
    }
}

/// Sends `count` concurrent `/protected` requests with `key`, spread over
/// the replicas in turn, and returns their statuses.
async fn flood(cluster: &Cluster, key: &str, count: usize) -> Vec<StatusCode> {
    let mut requests = JoinSet::new();
    for index in 0..count {
        let url = cluster.replicas[index % cluster.replicas.len()]
            .server
            .url("/protected");
        let request = cluster.client.get(url).header("X-API-Key", key);
        requests.spawn(async move { request.send().await.map(|response| response.status()) });
    }
    let mut statuses = Vec::with_capacity(count);
    while let Some(joined) = requests.join_next().await {
        let status = joined
            .expect("request task ends")
            .expect("the replica answers");
        statuses.push(status);
    }
    statuses
}

fn count(statuses: &[StatusCode], wanted: StatusCode) -> usize {
    statuses.iter().filter(|status| **status == wanted).count()
}

fn assert_only_ok_and_429(statuses: &[StatusCode]) {
    for status in statuses {
        assert!(
            *status == StatusCode::OK || *status == StatusCode::TOO_MANY_REQUESTS,
            "unexpected status {status}"
        );
    }
}

/// Returns every key under the cluster's prefix whose TTL is not set.
async fn keys_without_expiry(cluster: &Cluster) -> (usize, Vec<String>) {
    let redis = redis::Client::open(cluster.redis_url.as_str()).expect("valid Redis URL");
    let mut connection = redis
        .get_multiplexed_async_connection()
        .await
        .expect("Redis connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", cluster.prefix))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    let mut without = Vec::new();
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("PTTL");
        // -1 is a key without expiry; -2 one that expired since KEYS.
        if ttl == -1 {
            without.push(key.clone());
        }
    }
    (keys.len(), without)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_holds_across_three_replicas() {
    let Some(cluster) = start(3, FLOOD_REDIS_TIMEOUT_MS).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let key = issue_limited(&cluster, &tenant, 100).await;
    warm(&cluster, &key.api_key).await;

    let statuses = flood(&cluster, &key.api_key, 1000).await;

    assert_only_ok_and_429(&statuses);
    let accepted = count(&statuses, StatusCode::OK);
    assert!(accepted <= 100, "{accepted} accepted over a burst of 100");
    assert_eq!(
        accepted, 100,
        "Redis was healthy, so the whole burst is used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_exact_across_replicas_and_keys_expire() {
    let Some(cluster) = start(3, FLOOD_REDIS_TIMEOUT_MS).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    put(
        &cluster,
        &format!("/tenants/{}/limits", tenant.id),
        json!({
            "limit": {"rate": 1, "period_seconds": 1, "burst": 1000},
            "monthly_quota": 60
        }),
    )
    .await;
    let first = issue_limited(&cluster, &tenant, 200).await;
    let second = cluster.issue(1, &tenant).await;
    warm(&cluster, &first.api_key).await;
    warm(&cluster, &second.api_key).await;

    let mut statuses = flood(&cluster, &first.api_key, 100).await;
    statuses.extend(flood(&cluster, &second.api_key, 100).await);

    assert_only_ok_and_429(&statuses);
    assert_eq!(count(&statuses, StatusCode::OK), 60);
    let (written, without_expiry) = keys_without_expiry(&cluster).await;
    assert!(
        written >= 3,
        "only {written} Redis keys: the tenant and key limits and the quota"
    );
    assert!(
        without_expiry.is_empty(),
        "Redis keys without expiry: {without_expiry:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_per_replica_and_recovers() {
    let Some(cluster) = start(3, &REDIS_TIMEOUT.as_millis().to_string()).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let key = issue_limited(&cluster, &tenant, 30).await;
    // Warm every replica's verification and limit caches, and use 20 of
    // the shared burst of 30 through Redis.
    let mut before = Vec::new();
    for index in 0..20 {
        before.push(cluster.protected(index % 3, &key.api_key).await);
    }
    assert_eq!(before, vec![StatusCode::OK; 20]);

    for replica in &cluster.replicas {
        replica.redis.set(Mode::Refuse);
    }
    let mut during = vec![Vec::new(); 3];
    for round in 0..15 {
        for (index, statuses) in during.iter_mut().enumerate() {
            statuses.push(cluster.protected(index, &key.api_key).await);
        }
        if round == 0 {
            // Let the failure pause begin, so that later calls skip Redis.
            sleep(Duration::from_millis(100)).await;
        }
    }
    for (index, statuses) in during.iter().enumerate() {
        assert_only_ok_and_429(statuses);
        assert_eq!(
            count(statuses, StatusCode::OK),
            10,
            "replica {index} enforces its third of the burst: {statuses:?}"
        );
    }

    for replica in &cluster.replicas {
        replica.redis.set(Mode::Pass);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut after = Vec::new();
    while Instant::now() < deadline && !all_logged(&cluster, "Redis rate limiting responds again") {
        for index in 0..3 {
            after.push(cluster.protected(index, &key.api_key).await);
        }
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        all_logged(&cluster, "Redis rate limiting responds again"),
        "a replica did not go back to Redis"
    );
    for index in 0..30 {
        after.push(cluster.protected(index % 3, &key.api_key).await);
    }
    assert_only_ok_and_429(&after);
    assert_eq!(
        count(&after, StatusCode::OK),
        10,
        "the replicas share the 10 requests left in Redis"
    );
    for (index, replica) in cluster.replicas.iter().enumerate() {
        let fallbacks = logged(replica, "enforcing per-replica limits in process");
        assert_eq!(fallbacks, 1, "replica {index} logs the fallback once");
    }
}

fn logged(replica: &super::Replica, message: &str) -> usize {
    replica
        .server
        .logs
        .lock()
        .expect("log lines")
        .iter()
        .filter(|line| line.contains(message))
        .count()
}

fn all_logged(cluster: &Cluster, message: &str) -> bool {
    cluster
        .replicas
        .iter()
        .all(|replica| logged(replica, message) > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_postgres_keeps_the_last_known_limits() {
    let Some(cluster) = Cluster::start(1, &[("TENET_LIMIT_REFRESH", "1")]).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let key = issue_limited(&cluster, &tenant, 3).await;
    // Caches the key's verification and its limits.
    assert_eq!(cluster.protected(0, &key.api_key).await, StatusCode::OK);

    cluster.replicas[0].postgres.set(Mode::Refuse);
    // Past the refresh interval, so that the next request re-reads the
    // limits and fails.
    sleep(Duration::from_millis(1_500)).await;
    let mut during = Vec::new();
    for _ in 0..4 {
        during.push(cluster.protected(0, &key.api_key).await);
    }

    assert_eq!(
        during,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "the key's burst of 3 still applies"
    );
}

/// Counts the accepted requests that started in `[start, start + window)`
/// for every accepted start, and returns the largest count.
fn busiest_window(accepted: &[Duration], window: Duration) -> usize {
    accepted
        .iter()
        .map(|start| {
            accepted
                .iter()
                .filter(|at| **at >= *start && **at < *start + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_overload_never_admits_a_double_burst() {
    let Some(cluster) = start(3, FLOOD_REDIS_TIMEOUT_MS).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let (rate, burst) = (10_u32, 5_u32);
    let admin = cluster.admin(0);
    let response = admin
        .client
        .post(format!("{}/tenants/{}/keys", admin.base, tenant.id))
        .bearer_auth(&admin.token)
        .json(&json!({"limit": {"rate": rate, "period_seconds": 1, "burst": burst}}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let key: IssuedKeyResponse = response.json().await.expect("issued key JSON");
    warm(&cluster, &key.api_key).await;

    // Twice the allowed rate for 20 seconds, one request every 50 ms, each
    // to the next replica. A request's time is when it was sent, which
    // comes before its decision in Redis.
    let began = Instant::now();
    let mut requests = JoinSet::new();
    for index in 0..400_u32 {
        let url = cluster.replicas[index as usize % cluster.replicas.len()]
            .server
            .url("/protected");
        let request = cluster.client.get(url).header("X-API-Key", &key.api_key);
        let due = began + Duration::from_millis(u64::from(index) * 50);
        requests.spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let sent = began.elapsed();
            request
                .send()
                .await
                .map(|response| (sent, response.status()))
        });
    }
    let mut accepted = Vec::new();
    let mut statuses = Vec::new();
    while let Some(joined) = requests.join_next().await {
        let (sent, status) = joined
            .expect("request task ends")
            .expect("the replica answers");
        if status == StatusCode::OK {
            accepted.push(sent);
        }
        statuses.push(status);
    }
    accepted.sort();

    assert_only_ok_and_429(&statuses);
    // Send times differ from decision times by the request latency, so
    // each bound allows one request of jitter on either side of a window.
    for millis in [100, 500, 1_000, 2_000, 5_000, 10_000, 21_000] {
        let window = Duration::from_millis(millis);
        let bound = u64::from(burst) + u64::from(rate) * millis / 1_000 + 2;
        let busiest = busiest_window(&accepted, window);
        assert!(
            busiest as u64 <= bound,
            "{busiest} accepted within {millis} ms; the limit allows {bound}"
        );
    }
    // The limit admits its rate: over 20 s at least 80% of rate × 20.
    assert!(
        accepted.len() >= 160,
        "only {} of 400 accepted; expected about {}",
        accepted.len(),
        burst + rate * 20
    );
}
