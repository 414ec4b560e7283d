//! The log lines of replicas that start on a shared Postgres schema.

use serde_json::Value;

use super::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_start_logs_no_data_dir_or_notice() {
    // The second replica migrates a schema that the first one created.
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };

    for (index, replica) in cluster.replicas.iter().enumerate() {
        let logs = replica.server.logs.lock().expect("log lines").clone();
        let started = logs
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|event| event["message"] == "tenet-server started")
            .expect("a start line");

        assert_eq!(started["store"], "postgres", "replica {index}");
        assert!(
            started.get("data_dir").is_none(),
            "replica {index}: {started}"
        );
        for line in &logs {
            assert!(!line.contains("already exists"), "replica {index}: {line}");
        }
    }
}
