//! Backend faults: a replica keeps answering correctly, and promptly, when
//! Redis or Postgres fails, and recovers by itself.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tenet_core::{ApiKey, Pepper};
use tokio::time::sleep;

use super::proxy::Mode;
use super::{CONNECT_TIMEOUT, Cluster, REDIS_TIMEOUT};

/// Allowance over the configured timeouts for scheduling on a shared,
/// two-core test machine.
const SLACK: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_redis_keeps_verification_working() {
    redis_fault_keeps_verification_working(Mode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswering_redis_keeps_verification_working() {
    redis_fault_keeps_verification_working(Mode::Blackhole).await;
}

/// Verifies cached and uncached keys on two replicas while their Redis
/// fails in `mode`, then checks that they use Redis again once it is back.
async fn redis_fault_keeps_verification_working(mode: Mode) {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let warm = cluster.issue(0, &tenant).await;
    for replica in 0..2 {
        assert_eq!(
            cluster.protected(replica, &warm.api_key).await,
            StatusCode::OK
        );
    }

    for replica in &cluster.replicas {
        replica.redis.set(mode);
    }
    let bound = REDIS_TIMEOUT + SLACK;
    let outage = Instant::now();
    let mut checked = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        // A key issued during the outage is in no cache on replica 1.
        let fresh = cluster.issue(0, &tenant).await;
        for key in [&warm.api_key, &fresh.api_key] {
            for replica in 0..2 {
                let started = Instant::now();
                let status = cluster.protected(replica, key).await;
                let took = started.elapsed();
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "replica {replica} during the outage"
                );
                assert!(
                    took < bound,
                    "replica {replica} took {took:?}, over {bound:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} verifications during the outage"
    );

    for replica in &cluster.replicas {
        let warnings = replica
            .server
            .logs
            .lock()
            .expect("log lines")
            .iter()
            .filter(|line| line.contains("\"WARN\"") && line.contains("Redis"))
            .count();
        assert!(
            warnings <= 4,
            "{warnings} Redis warnings: not once per interval"
        );
    }

    for replica in &cluster.replicas {
        replica.redis.set(Mode::Pass);
    }
    let recovered = wait_for(Duration::from_secs(10), || async {
        let key = cluster.issue(0, &tenant).await;
        redis_has_entry(&cluster, &key.api_key).await
            && cluster.protected(1, &key.api_key).await == StatusCode::OK
    })
    .await;
    assert!(
        recovered,
        "the replicas did not use Redis again after it returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_postgres_serves_cached_keys_and_503_for_the_rest() {
    postgres_fault_serves_cached_keys(Mode::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswering_postgres_serves_cached_keys_and_503_for_the_rest() {
    postgres_fault_serves_cached_keys(Mode::Blackhole).await;
}

/// Checks a replica whose Postgres fails in `mode`: cached keys verify,
/// everything else gets 503 within the configured timeouts, and all
/// recovers once Postgres is back.
async fn postgres_fault_serves_cached_keys(mode: Mode) {
    const STATEMENT_TIMEOUT: Duration = Duration::from_secs(1);
    let statement_timeout = STATEMENT_TIMEOUT.as_millis().to_string();
    let env = [(
        "TENET_DATABASE_STATEMENT_TIMEOUT_MS",
        statement_timeout.as_str(),
    )];
    let Some(cluster) = Cluster::start(1, &env).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let cached = cluster.issue(0, &tenant).await;
    assert_eq!(cluster.protected(0, &cached.api_key).await, StatusCode::OK);
    // A subscription vouches for cached entries only once a poll of the
    // store's events has completed after it started; the poll runs every
    // 250 ms. Tenant status has no copy in Redis, so without this wait it
    // would not be trusted a second into the outage.
    sleep(Duration::from_millis(600)).await;

    cluster.replicas[0].postgres.set(mode);
    // A connection that hangs is given up after both timeouts.
    let bound = CONNECT_TIMEOUT + STATEMENT_TIMEOUT + SLACK;

    // Longer than the revocation bound, so the cached entry is trusted
    // through the live Redis subscription, not only its age.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(2) {
        assert_eq!(cluster.protected(0, &cached.api_key).await, StatusCode::OK);
        sleep(Duration::from_millis(100)).await;
    }

    let stranger = ApiKey::generate();
    let started = Instant::now();
    let status = cluster.protected(0, stranger.expose_secret()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "uncached key");
    assert!(
        started.elapsed() < bound,
        "uncached key took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let response = cluster
        .client
        .post(cluster.replicas[0].server.url("/tenants"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "Late"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < bound,
        "create tenant took {:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "store_unavailable");

    let ready = readyz(&cluster).await;
    assert_eq!(
        ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "/readyz during the outage"
    );

    cluster.replicas[0].postgres.set(Mode::Pass);
    let recovered = wait_for(Duration::from_secs(10), || async {
        readyz(&cluster).await == StatusCode::OK
    })
    .await;
    assert!(recovered, "/readyz did not recover");
    let fresh = cluster.issue(0, &tenant).await;
    assert_eq!(cluster.protected(0, &fresh.api_key).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_postgres_connections_are_replaced() {
    let Some(cluster) = Cluster::start(1, &[]).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let first = cluster.issue(0, &tenant).await;
    assert_eq!(cluster.protected(0, &first.api_key).await, StatusCode::OK);

    let terminated = cluster.terminate_connections(0).await;
    assert!(
        terminated > 0,
        "the replica had no Postgres connection to terminate"
    );

    // The pool does not ping connections on checkout. A write that went
    // out on a terminated connection is not retried, because it may have
    // committed, so it may get 503. The pool drops that connection, so the
    // next write runs on a new one.
    let first_write = cluster.try_issue(0, &tenant).await;
    let second = cluster.issue(0, &tenant).await;

    assert!(
        first_write == StatusCode::CREATED || first_write == StatusCode::SERVICE_UNAVAILABLE,
        "first issue after the termination returned {first_write}"
    );
    assert_eq!(cluster.protected(0, &second.api_key).await, StatusCode::OK);
    let keys = cluster.admin(0).keys(&tenant).await;
    let expected = if first_write == StatusCode::CREATED {
        3
    } else {
        2
    };
    assert_eq!(keys.len(), expected);
}

async fn readyz(cluster: &Cluster) -> StatusCode {
    cluster
        .client
        .get(cluster.replicas[0].server.url("/readyz"))
        .send()
        .await
        .expect("request sent")
        .status()
}

/// Returns whether Redis contains the cache entry of `key`, which the issuing replica
/// writes when it can reach Redis.
async fn redis_has_entry(cluster: &Cluster, key: &str) -> bool {
    let pepper = Pepper::from_config(super::PEPPER).expect("valid test pepper");
    let digest = pepper.digest_presented(key).expect("well-formed key");
    let hex: String = digest
        .as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let client = redis::Client::open(cluster.redis_url.as_str()).expect("valid Redis URL");
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(format!("{}key:{hex}", cluster.prefix))
        .query_async::<i64>(&mut connection)
        .await
        .is_ok_and(|count| count == 1)
}

/// Polls `check` every 200 ms until it returns true or `limit` passes.
async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        sleep(Duration::from_millis(200)).await;
    }
    false
}
