//! Cache and connection pool counters of `Tenet` on Postgres and Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use tenet_core::stats::PoolStatuses;
use tenet_core::{MemoryStore, Pepper, RedisOptions, TenantName, Tenet};
use uuid::Uuid;

use crate::database::TestSchema;

/// Returns the test Redis URL; fails under `CI=true` when it is unset,
/// because CI must not skip these tests silently.
fn redis_url() -> Option<String> {
    match std::env::var("TENET_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("TENET_TEST_REDIS_URL is not set; CI must run the Redis tests")
        }
        Err(_) => {
            eprintln!("skipped: set TENET_TEST_REDIS_URL to run the Redis tests");
            None
        }
    }
}

fn pepper() -> Pepper {
    Pepper::from_config(&Pepper::generate_config()).expect("generated pepper is valid")
}

/// Deletes every Redis key under `prefix`.
async fn delete_keys(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("valid Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis connection");
    let keys: Vec<String> = connection.keys(format!("{prefix}*")).await.expect("KEYS");
    if !keys.is_empty() {
        let _: i64 = connection.del(keys).await.expect("DEL");
    }
}

#[tokio::test]
async fn service_without_pools_reports_none() {
    let tenet = Tenet::open(Arc::new(MemoryStore::new()), pepper())
        .await
        .expect("service opens");

    assert!(tenet.cache_stats().is_none());
    assert_eq!(
        tenet.pool_statuses(),
        PoolStatuses {
            postgres: None,
            redis: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_cache_and_pool_use() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let Some(redis_url) = redis_url() else {
        return;
    };
    let prefix = format!("tenet-test:{}:", Uuid::now_v7());
    let store = schema.migrated_store().await;
    let tenet = Tenet::builder(Arc::new(store), pepper())
        .redis(RedisOptions {
            key_prefix: prefix.clone(),
            ..RedisOptions::new(redis_url.clone())
        })
        .build()
        .await
        .expect("service opens");
    let tenant = tenet
        .create_tenant(TenantName::parse("Acme").expect("valid name"))
        .await
        .expect("tenant is created");

    // Issuing writes the verdict to Redis and publishes an invalidation.
    let issued = tenet
        .issue_key(tenant.id, None)
        .await
        .expect("key is issued");
    for _ in 0..2 {
        tenet
            .verify(issued.api_key.expose_secret())
            .await
            .expect("key verifies");
    }
    let stats = tenet.cache_stats().expect("a Redis service has a cache");

    // An invalidation may drop the entry between the two verifications, so
    // the second one can miss too.
    assert_eq!(stats.local_hits.get() + stats.local_misses.get(), 2);
    assert!(stats.local_misses.get() >= 1);
    assert_eq!(
        stats.redis_hits.get() + stats.redis_misses.get(),
        stats.local_misses.get()
    );
    assert!(stats.redis_hits.get() >= 1);
    assert_eq!(stats.invalidations_published.get(), 1);

    // This replica's own subscriber receives its invalidations too, once it
    // has subscribed; each new key publishes one more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.invalidations_received.get() == 0 {
        assert!(Instant::now() < deadline, "no invalidation was received");
        tenet
            .issue_key(tenant.id, None)
            .await
            .expect("key is issued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pools = tenet.pool_statuses();
    let postgres = pools.postgres.expect("Postgres pool status");
    assert_eq!(postgres.max_size, schema.options().pool_size);
    assert!(postgres.connections >= 1);
    assert!(postgres.in_use() <= postgres.connections);
    assert!(postgres.wait.count() >= 4, "{postgres:?}");
    let redis = pools.redis.expect("Redis pool status");
    assert_eq!(redis.max_size, 32);
    assert!(redis.wait.count() >= 2, "{redis:?}");

    delete_keys(&redis_url, &prefix).await;
}
