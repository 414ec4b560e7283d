//! The deployment files in deploy/ against the server: metric names in the
//! dashboard and the alerts, environment variables, probes and ports.
//!
//! The Kubernetes checks read the overlays as `kubectl kustomize` renders
//! them, so that patches count. Without kubectl they are skipped, except
//! under `CI=true`, where a skip would hide a broken deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use tenet_server::forwarded::TrustedProxies;
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::{TestServer, protected_status};
use crate::observability::{scrape, series_names};

/// The overlays that deploy/README.md applies.
const OVERLAYS: [&str; 2] = ["dev", "eks"];

/// Variables that the server reads without a flag, so `--help` lists them
/// only in prose.
const ENV_WITHOUT_FLAG: [&str; 2] = ["TENET_KEY_PEPPER", "RUST_LOG"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// Returns every `tenet_[a-z_]+` token in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut start = 0;
    while let Some(offset) = expr[start..].find("tenet_") {
        let begin = start + offset;
        let preceded_by_name = begin > 0 && {
            let before = bytes[begin - 1];
            before.is_ascii_alphanumeric() || before == b'_' || before == b':'
        };
        let mut end = begin + "tenet_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_name && end > begin + "tenet_".len() {
            names.push(expr[begin..end].to_owned());
        }
        start = end;
    }
    names
}

/// Collects the `expr` strings of a Grafana dashboard, at any depth.
fn dashboard_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("expr", Value::String(expr)) => exprs.push(expr.clone()),
                    _ => dashboard_exprs(child, exprs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_exprs(item, exprs)),
        _ => {}
    }
}

/// Collects the `expr` of every rule of a PrometheusRule file.
fn rule_exprs(text: &str) -> Vec<String> {
    let documents = YamlLoader::load_from_str(text).expect("the alert rules are YAML");
    let mut exprs = Vec::new();
    for document in &documents {
        for group in document["spec"]["groups"].as_vec().into_iter().flatten() {
            for rule in group["rules"].as_vec().into_iter().flatten() {
                let expr = rule["expr"].as_str().expect("every rule has an expr");
                exprs.push(expr.to_owned());
            }
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_exported_metrics() {
    let server = TestServer::start().await;
    assert_eq!(
        protected_status(&server, &[("x-api-key", "not-a-key")]).await,
        StatusCode::UNAUTHORIZED
    );
    scrape(&server.client, &server.url("/metrics")).await;
    let exported = series_names(&scrape(&server.client, &server.url("/metrics")).await);

    let monitoring = deploy_dir().join("k8s/monitoring");
    let dashboard: Value = serde_json::from_str(&read(&monitoring.join("dashboards/tenet.json")))
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let dashboard_count = exprs.len();
    exprs.extend(rule_exprs(&read(&monitoring.join("prometheusrule.yaml"))));

    assert!(dashboard_count > 0, "the dashboard has no queries");
    assert!(
        exprs.len() > dashboard_count,
        "the rules have no expressions"
    );
    let used: BTreeSet<String> = exprs.iter().flat_map(|expr| metric_names(expr)).collect();
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:?}; exported: {exported:?}"
    );
}

#[test]
fn metric_names_come_from_expressions_only() {
    let expr =
        r#"sum(rate(tenet_http_requests_total{route="/x"}[5m])) / my_tenet_x + tenet:recorded"#;

    assert_eq!(metric_names(expr), ["tenet_http_requests_total"]);
}

/// Renders one overlay into its objects; `None` without kubectl outside
/// CI.
fn render(overlay: &str) -> Option<Vec<Yaml>> {
    let directory = deploy_dir().join("k8s/overlays").join(overlay);
    let output = match Command::new("kubectl")
        .arg("kustomize")
        .arg(&directory)
        .output()
    {
        Ok(output) => output,
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: kubectl is not available ({err}); install it to check deploy/");
            return None;
        }
        Err(err) => panic!("kubectl is required under CI=true: {err}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        directory.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    Some(YamlLoader::load_from_str(&text).expect("kustomize renders YAML"))
}

/// Reads the Secrets that deploy/k8s/base/secret.template.yaml describes,
/// by name, with their keys.
fn secret_templates() -> BTreeMap<String, BTreeSet<String>> {
    let text = read(&deploy_dir().join("k8s/base/secret.template.yaml"));
    let documents = YamlLoader::load_from_str(&text).expect("the Secret template is YAML");
    documents
        .iter()
        .map(|document| {
            let name = document["metadata"]["name"].as_str().expect("Secret name");
            (name.to_owned(), keys(&document["stringData"]))
        })
        .collect()
}

fn keys(mapping: &Yaml) -> BTreeSet<String> {
    mapping
        .as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| key.as_str().map(str::to_owned))
        .collect()
}

fn find<'a>(objects: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    objects.iter().find(|object| {
        object["kind"].as_str() == Some(kind) && object["metadata"]["name"].as_str() == Some(name)
    })
}

/// Finds the pod templates of workloads that run the tenet-server image,
/// each with the workload's kind and name.
fn server_pods(objects: &[Yaml]) -> Vec<(String, &Yaml)> {
    objects
        .iter()
        .filter(|object| {
            matches!(
                object["kind"].as_str(),
                Some("Deployment" | "Job" | "StatefulSet")
            )
        })
        .filter(|object| {
            server_containers(&object["spec"]["template"]["spec"])
                .next()
                .is_some()
        })
        .map(|object| {
            let label = format!(
                "{}/{}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            );
            (label, &object["spec"]["template"]["spec"])
        })
        .collect()
}

fn server_containers(pod: &Yaml) -> impl Iterator<Item = &Yaml> {
    pod["containers"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter(|container| {
            container["image"]
                .as_str()
                .is_some_and(|image| image.contains("tenet-server"))
        })
}

/// Lists the variables that `--help` shows as `[env: NAME...]`.
fn variables_in_help() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_tenet-server"))
        .arg("--help")
        .output()
        .expect("binary runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn manifests_set_only_variables_the_server_reads() {
    let mut known = variables_in_help();
    assert!(known.contains("TENET_LISTEN"), "{known:?}");
    known.extend(ENV_WITHOUT_FLAG.map(str::to_owned));
    let secrets = secret_templates();

    for overlay in OVERLAYS {
        let Some(objects) = render(overlay) else {
            return;
        };
        let pods = server_pods(&objects);
        assert!(
            pods.len() >= 2,
            "{overlay}: no server Deployment and Job: {pods:?}"
        );

        for (workload, pod) in pods {
            for container in server_containers(pod) {
                let mut set = BTreeSet::new();
                for variable in container["env"].as_vec().into_iter().flatten() {
                    set.insert(variable["name"].as_str().expect("env name").to_owned());
                }
                for source in container["envFrom"].as_vec().into_iter().flatten() {
                    if let Some(name) = source["configMapRef"]["name"].as_str() {
                        let config_map = find(&objects, "ConfigMap", name)
                            .unwrap_or_else(|| panic!("{overlay} {workload}: no ConfigMap {name}"));
                        set.extend(keys(&config_map["data"]));
                    }
                    if let Some(name) = source["secretRef"]["name"].as_str() {
                        let secret = secrets.get(name).unwrap_or_else(|| {
                            panic!("{overlay} {workload}: no template of Secret {name}")
                        });
                        set.extend(secret.iter().cloned());
                    }
                }

                assert!(!set.is_empty(), "{overlay} {workload}: no environment");
                let unread: Vec<&String> = set.difference(&known).collect();
                assert!(
                    unread.is_empty(),
                    "{overlay} {workload} sets {unread:?}, which the server does not read"
                );
            }
        }
    }
}

/// Returns the port of an `ADDR:PORT` listen address.
fn port_of(address: &str) -> i64 {
    let (_, port) = address.rsplit_once(':').expect("ADDR:PORT");
    port.parse().expect("numeric port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_ports_match_the_server() {
    let server = TestServer::start().await;

    for overlay in OVERLAYS {
        let Some(objects) = render(overlay) else {
            return;
        };
        let config = &find(&objects, "ConfigMap", "tenet-config").expect("tenet-config")["data"];
        let deployment = find(&objects, "Deployment", "tenet").expect("tenet Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = server_containers(pod)
            .next()
            .expect("tenet-server container");
        let ports: BTreeMap<&str, i64> = container["ports"]
            .as_vec()
            .expect("container ports")
            .iter()
            .map(|port| {
                (
                    port["name"].as_str().expect("port name"),
                    port["containerPort"].as_i64().expect("port"),
                )
            })
            .collect();

        let listen = config["TENET_LISTEN"].as_str().expect("TENET_LISTEN");
        let metrics_listen = config["TENET_METRICS_LISTEN"]
            .as_str()
            .expect("TENET_METRICS_LISTEN");
        assert_eq!(
            ports.get("http"),
            Some(&port_of(listen)),
            "{overlay}: http port"
        );
        assert_eq!(
            ports.get("metrics"),
            Some(&port_of(metrics_listen)),
            "{overlay}: metrics port"
        );

        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let http_get = &container[probe]["httpGet"];
            assert_eq!(http_get["path"].as_str(), Some(path), "{overlay}: {probe}");
            let port = http_get["port"].as_str().expect("named probe port");
            assert!(ports.contains_key(port), "{overlay}: {probe} port {port}");
            let response = server
                .client
                .get(server.url(path))
                .send()
                .await
                .expect("request sent");
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{overlay}: {probe} {path}"
            );
        }

        for service in objects
            .iter()
            .filter(|object| object["kind"].as_str() == Some("Service"))
        {
            let selector = &service["spec"]["selector"]["app.kubernetes.io/name"];
            if selector.as_str() != Some("tenet") {
                continue;
            }
            for port in service["spec"]["ports"].as_vec().expect("Service ports") {
                let target = port["targetPort"].as_str().expect("named target port");
                assert!(
                    ports.contains_key(target),
                    "{overlay}: Service target port {target}"
                );
            }
        }

        let drain: i64 = config["TENET_DRAIN_DELAY"]
            .as_str()
            .expect("drain delay")
            .parse()
            .expect("seconds");
        let shutdown: i64 = config["TENET_SHUTDOWN_TIMEOUT"]
            .as_str()
            .expect("shutdown timeout")
            .parse()
            .expect("seconds");
        let grace = pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("grace period");
        assert!(
            grace > drain + shutdown,
            "{overlay}: grace period {grace} s <= {drain} s + {shutdown} s"
        );
    }
}

#[test]
fn service_monitor_scrapes_the_metrics_port() {
    let Some(objects) = render("eks") else { return };

    let monitor = find(&objects, "ServiceMonitor", "tenet").expect("ServiceMonitor");
    let selector = keys(&monitor["spec"]["selector"]["matchLabels"]);
    let service = objects
        .iter()
        .filter(|object| object["kind"].as_str() == Some("Service"))
        .find(|service| {
            selector.iter().all(|label| {
                service["metadata"]["labels"][label.as_str()]
                    == monitor["spec"]["selector"]["matchLabels"][label.as_str()]
            })
        })
        .expect("a Service that the ServiceMonitor selects");
    let service_ports: BTreeSet<&str> = service["spec"]["ports"]
        .as_vec()
        .expect("Service ports")
        .iter()
        .filter_map(|port| port["name"].as_str())
        .collect();

    for endpoint in monitor["spec"]["endpoints"].as_vec().expect("endpoints") {
        let port = endpoint["port"].as_str().expect("endpoint port");
        assert!(
            service_ports.contains(port),
            "the Service has no port {port}"
        );
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    }
}

/// Lists the subcommands under `Commands:` in `--help`.
fn subcommands_in_help() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_tenet-server"))
        .arg("--help")
        .output()
        .expect("binary runs");
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    help.lines()
        .skip_while(|line| line.trim_end() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn migration_job_runs_a_subcommand_of_the_server() {
    let subcommands = subcommands_in_help();
    assert!(subcommands.contains("help"), "{subcommands:?}");

    for overlay in OVERLAYS {
        let Some(objects) = render(overlay) else {
            return;
        };
        let job = find(&objects, "Job", "tenet-migrate").expect("migration Job");
        let container = server_containers(&job["spec"]["template"]["spec"])
            .next()
            .expect("tenet-server container");
        let args: Vec<&str> = container["args"]
            .as_vec()
            .expect("Job args")
            .iter()
            .filter_map(Yaml::as_str)
            .collect();

        assert_eq!(args, ["migrate"], "{overlay}");
        assert!(subcommands.contains("migrate"), "{subcommands:?}");
    }
}

#[test]
fn fallback_replica_count_is_the_autoscaler_maximum() {
    let Some(objects) = render("eks") else { return };

    let autoscalers: Vec<&Yaml> = objects
        .iter()
        .filter(|object| object["kind"].as_str() == Some("HorizontalPodAutoscaler"))
        .collect();
    let config = objects
        .iter()
        .find(|object| {
            object["kind"].as_str() == Some("ConfigMap")
                && !object["data"]["TENET_REPLICAS"].is_badvalue()
        })
        .expect("a ConfigMap that sets TENET_REPLICAS");

    assert_eq!(autoscalers.len(), 1, "one HorizontalPodAutoscaler");
    let maximum = autoscalers[0]["spec"]["maxReplicas"]
        .as_i64()
        .expect("maxReplicas");
    assert_eq!(
        config["data"]["TENET_REPLICAS"].as_str(),
        Some(maximum.to_string().as_str()),
        "TENET_REPLICAS must equal the HPA's maxReplicas, so that a Redis outage \
         admits at most each limit"
    );
}

#[test]
fn load_balancers_pass_client_addresses() {
    let Some(objects) = render("eks") else { return };

    let config = find(&objects, "ConfigMap", "tenet-config").expect("ConfigMap tenet-config");
    let trusted = config["data"]["TENET_TRUSTED_PROXIES"]
        .as_str()
        .expect("TENET_TRUSTED_PROXIES is set")
        .parse::<TrustedProxies>()
        .unwrap_or_else(|err| panic!("TENET_TRUSTED_PROXIES: {err}"));
    assert!(!trusted.is_empty(), "TENET_TRUSTED_PROXIES lists no range");

    let balancers: Vec<&Yaml> = objects
        .iter()
        .filter(|object| {
            object["kind"].as_str() == Some("Service")
                && object["spec"]["type"].as_str() == Some("LoadBalancer")
        })
        .collect();
    assert!(!balancers.is_empty(), "no LoadBalancer Service");
    for service in balancers {
        let name = service["metadata"]["name"].as_str().unwrap_or_default();
        let attributes = service["metadata"]["annotations"]
            ["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
            .as_str()
            .unwrap_or_default();
        assert!(
            attributes
                .split(',')
                .any(|attribute| attribute.trim() == "preserve_client_ip.enabled=true"),
            "Service {name} must preserve client addresses, or its layer-4 load \
             balancer either hides them or passes on X-Forwarded-For headers that \
             clients wrote: {attributes:?}"
        );
    }
}
