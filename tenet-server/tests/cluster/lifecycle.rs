//! Tenant status changes reach every replica within the revocation bound
//! of one second, also on a replica that lost Redis and so hears of them
//! only through the Postgres tenant events.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tenet_core::api::TenantResponse;
use tokio::time::sleep_until;

use super::Cluster;
use super::helpers::ADMIN_TOKEN;
use super::proxy::Mode;

/// The maximum time a replica may keep an old tenant status.
const STATUS_BOUND: Duration = Duration::from_secs(1);

/// Sends `POST /tenants/{id}/{action}` or `DELETE /tenants/{id}` through
/// replica `index` and waits for a success response.
async fn change(cluster: &Cluster, index: usize, tenant: &TenantResponse, action: &str) {
    let base = cluster.replicas[index]
        .server
        .url(&format!("/tenants/{}", tenant.id));
    let request = match action {
        "delete" => cluster.client.delete(base),
        _ => cluster.client.post(format!("{base}/{action}")),
    };
    let response = request
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    assert!(
        response.status().is_success(),
        "{action} answered {}",
        response.status()
    );
}

/// Checks that every replica returns `expected` for `key` once the bound
/// has passed since `changed`.
async fn assert_everywhere(cluster: &Cluster, key: &str, changed: Instant, expected: StatusCode) {
    sleep_until((changed + STATUS_BOUND).into()).await;
    for replica in 0..cluster.replicas.len() {
        assert_eq!(
            cluster.protected(replica, key).await,
            expected,
            "replica {replica} a second after the change"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_reach_every_replica_within_a_second() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let key = cluster.issue(0, &tenant).await;
    assert_everywhere(&cluster, &key.api_key, Instant::now(), StatusCode::OK).await;

    change(&cluster, 1, &tenant, "suspend").await;
    assert_everywhere(
        &cluster,
        &key.api_key,
        Instant::now(),
        StatusCode::FORBIDDEN,
    )
    .await;

    change(&cluster, 2, &tenant, "resume").await;
    assert_everywhere(&cluster, &key.api_key, Instant::now(), StatusCode::OK).await;

    change(&cluster, 0, &tenant, "delete").await;
    assert_everywhere(
        &cluster,
        &key.api_key,
        Instant::now(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_reaches_a_replica_without_redis() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let tenant = cluster.tenant(0).await;
    let key = cluster.issue(0, &tenant).await;
    assert_everywhere(&cluster, &key.api_key, Instant::now(), StatusCode::OK).await;

    // Replica 2 misses the pub/sub message, so only its poll of the tenant
    // events can tell it.
    cluster.replicas[2].redis.set(Mode::Refuse);
    change(&cluster, 1, &tenant, "suspend").await;
    assert_everywhere(
        &cluster,
        &key.api_key,
        Instant::now(),
        StatusCode::FORBIDDEN,
    )
    .await;

    change(&cluster, 0, &tenant, "resume").await;
    assert_everywhere(&cluster, &key.api_key, Instant::now(), StatusCode::OK).await;
}
