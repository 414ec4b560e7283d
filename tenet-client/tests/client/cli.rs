//! The `tenet` binary against a real server.

use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::helpers::{ADMIN_TOKEN, TestServer, closed_port};

/// Returns `tenet` with the server's URL and token in the environment.
fn tenet(server_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenet"));
    command
        .env("TENET_URL", server_url)
        .env("TENET_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

async fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args).output().await.expect("tenet runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("JSON on standard output")
}

/// Asserts a failure with `code` and one `tenet: ` line on standard error.
fn assert_fails(output: &Output, code: i32) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {text}");
    assert_eq!(text.lines().count(), 1, "stderr: {text}");
    assert!(text.starts_with("tenet: "), "stderr: {text}");
    assert!(!text.contains("panicked"), "stderr: {text}");
    text
}

#[tokio::test]
async fn walk_through_tenants_and_keys() {
    let server = TestServer::start().await;
    let url = server.url();

    let created = run(tenet(&url), &["tenants", "create", "Acme", "--json"]).await;
    assert!(created.status.success(), "{}", stderr(&created));
    let tenant = json(&created)["id"].as_str().expect("tenant id").to_owned();

    let tenants = run(tenet(&url), &["tenants", "list"]).await;
    assert!(tenants.status.success(), "{}", stderr(&tenants));
    assert!(stdout(&tenants).starts_with("ID"), "{}", stdout(&tenants));
    assert!(stdout(&tenants).contains(&tenant));
    assert!(stdout(&tenants).contains("Acme"));

    let issued = run(
        tenet(&url),
        &["keys", "issue", &tenant, "--name", "billing", "--json"],
    )
    .await;
    assert!(issued.status.success(), "{}", stderr(&issued));
    let issued = json(&issued);
    let key = issued["api_key"].as_str().expect("api key").to_owned();
    let key_id = issued["id"].as_str().expect("key id").to_owned();
    let prefix = issued["prefix"].as_str().expect("prefix").to_owned();

    let keys = run(tenet(&url), &["keys", "list", &tenant]).await;
    assert!(keys.status.success(), "{}", stderr(&keys));
    assert!(stdout(&keys).contains(&prefix));
    assert!(stdout(&keys).contains("billing"));
    assert!(!stdout(&keys).contains(&key));

    let verified = run(tenet(&url), &["verify", &key, "--json"]).await;
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert_eq!(json(&verified)["tenant_id"], tenant.as_str());
    assert_eq!(json(&verified)["key_id"], key_id.as_str());

    let revoked = run(tenet(&url), &["keys", "revoke", &tenant, &key_id]).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains(&key_id));

    let rejected = run(tenet(&url), &["verify", &key]).await;
    let message = assert_fails(&rejected, 1);
    assert!(message.contains("rejected: key_revoked"), "{message}");
    assert!(!message.contains(&key), "{message}");
}

#[tokio::test]
async fn issue_prints_the_key_once_in_a_table() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await.expect("created");

    let issued = run(
        tenet(&server.url()),
        &["keys", "issue", &tenant.id.to_string()],
    )
    .await;

    assert!(issued.status.success(), "{}", stderr(&issued));
    let text = stdout(&issued);
    let key_line = text
        .lines()
        .find(|line| line.starts_with("api key:"))
        .expect("api key line");
    assert!(key_line.contains("tnt_"), "{text}");
    assert!(stderr(&issued).contains("cannot show it again"));
}

#[tokio::test]
async fn rotate_prints_the_new_key() {
    let server = TestServer::start().await;
    let (tenant, old) = server.tenant_with_key().await;
    let args = [
        "keys",
        "rotate",
        &tenant.id.to_string(),
        &old.id.to_string(),
        "--grace",
        "60",
        "--json",
    ];

    let output = run(tenet(&server.url()), &args).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let rotated = json(&output);
    assert_eq!(rotated["old_key"]["id"], old.id.to_string());
    assert!(rotated["old_key"]["expires_at"].is_string(), "{rotated}");
    let new_key = rotated["new_key"]["api_key"].as_str().expect("new key");
    assert_ne!(new_key, old.api_key);
}

#[tokio::test]
async fn verify_reads_the_key_from_stdin() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    let mut command = tenet(&server.url());
    command
        .args(["verify", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut child = command.spawn().expect("tenet runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(format!("{}\n", issued.api_key).as_bytes())
        .await
        .expect("key written");
    drop(stdin);
    let output = child.wait_with_output().await.expect("tenet exits");

    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains(&tenant.id.to_string()));
}

#[tokio::test]
async fn token_flag_overrides_the_environment() {
    let server = TestServer::start().await;
    let mut command = tenet(&server.url());
    command.env("TENET_ADMIN_TOKEN", "wrong-token");

    let wrong = run(
        tenet_with_env_token(&server.url(), "wrong-token"),
        &["tenants", "list"],
    )
    .await;
    let right = run(command, &["tenants", "list", "--token", ADMIN_TOKEN]).await;

    let message = assert_fails(&wrong, 1);
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("wrong-token"), "{message}");
    assert!(right.status.success(), "{}", stderr(&right));
}

fn tenet_with_env_token(server_url: &str, token: &str) -> Command {
    let mut command = tenet(server_url);
    command.env("TENET_ADMIN_TOKEN", token);
    command
}

#[tokio::test]
async fn missing_token_fails_before_any_request() {
    let mut command = tenet(&format!("http://{}", closed_port().await));
    command.env_remove("TENET_ADMIN_TOKEN");

    let output = run(command, &["tenants", "list"]).await;

    let message = assert_fails(&output, 2);
    assert!(message.contains("TENET_ADMIN_TOKEN"), "{message}");
}

#[tokio::test]
async fn issue_sends_scopes_and_ttl() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await.expect("created");
    let args = [
        "keys",
        "issue",
        &tenant.id.to_string(),
        "--scope",
        "billing:read",
        "--scope",
        "billing:write",
        "--ttl",
        "3600",
        "--json",
    ];

    let issued = run(tenet(&server.url()), &args).await;
    let keys = run(
        tenet(&server.url()),
        &["keys", "list", &tenant.id.to_string()],
    )
    .await;

    assert!(issued.status.success(), "{}", stderr(&issued));
    let issued = json(&issued);
    assert_eq!(
        issued["scopes"],
        serde_json::json!(["billing:read", "billing:write"])
    );
    assert!(issued["expires_at"].is_string(), "{issued}");
    assert!(stdout(&keys).contains("billing:read billing:write"));
}

#[tokio::test]
async fn invalid_scope_fails_with_the_server_code() {
    let server = TestServer::start().await;
    let tenant = server.admin().create_tenant("Acme").await.expect("created");

    let output = run(
        tenet(&server.url()),
        &[
            "keys",
            "issue",
            &tenant.id.to_string(),
            "--scope",
            "not a scope",
        ],
    )
    .await;

    let message = assert_fails(&output, 1);
    assert!(message.contains("400"), "{message}");
}

#[tokio::test]
async fn unreachable_server_fails_with_one_line() {
    let url = format!("http://{}", closed_port().await);

    let output = run(tenet(&url), &["tenants", "list", "--json"]).await;

    let message = assert_fails(&output, 1);
    assert!(message.contains("server unavailable"), "{message}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn unknown_tenant_fails_with_the_server_code() {
    let server = TestServer::start().await;
    let unknown = tenet_core::TenantId::generate().to_string();

    let output = run(tenet(&server.url()), &["tenants", "get", &unknown]).await;

    let message = assert_fails(&output, 1);
    assert!(message.contains("404 tenant_not_found"), "{message}");
}

#[tokio::test]
async fn limits_set_and_get() {
    let server = TestServer::start().await;
    let url = server.url();
    let created = run(tenet(&url), &["tenants", "create", "Acme", "--json"]).await;
    let tenant = json(&created)["id"].as_str().expect("tenant id").to_owned();

    let set = run(
        tenet(&url),
        &[
            "limits",
            "set",
            &tenant,
            "--rate",
            "100",
            "--period",
            "60",
            "--burst",
            "20",
            "--monthly-quota",
            "5000",
            "--json",
        ],
    )
    .await;
    let got = run(tenet(&url), &["limits", "get", &tenant]).await;
    let incomplete = run(tenet(&url), &["limits", "set", &tenant, "--rate", "5"]).await;

    assert!(set.status.success(), "{}", stderr(&set));
    assert_eq!(json(&set)["limit"]["burst"], 20);
    assert_eq!(json(&set)["monthly_quota"], 5000);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(
        stdout(&got).contains("100 per 60 s, burst 20"),
        "{}",
        stdout(&got)
    );
    assert!(stdout(&got).contains("5000"), "{}", stdout(&got));
    assert_eq!(incomplete.status.code(), Some(2), "{}", stderr(&incomplete));
}

#[tokio::test]
async fn tenant_lifecycle_commands() {
    let server = TestServer::start().await;
    let url = server.url();
    let created = run(tenet(&url), &["tenants", "create", "Acme", "--json"]).await;
    let tenant = json(&created)["id"].as_str().expect("tenant id").to_owned();

    let renamed = run(tenet(&url), &["tenants", "rename", &tenant, "Acme Europe"]).await;
    assert!(renamed.status.success(), "{}", stderr(&renamed));
    assert!(
        stdout(&renamed).contains("Acme Europe"),
        "{}",
        stdout(&renamed)
    );

    let suspended = run(tenet(&url), &["tenants", "suspend", &tenant, "--json"]).await;
    assert!(suspended.status.success(), "{}", stderr(&suspended));
    assert_eq!(json(&suspended)["status"], "suspended");

    let resumed = run(tenet(&url), &["tenants", "resume", &tenant]).await;
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stdout(&resumed).contains("active"), "{}", stdout(&resumed));

    let deleted = run(tenet(&url), &["tenants", "delete", &tenant]).await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(stdout(&deleted).contains(&tenant), "{}", stdout(&deleted));

    let audit = run(tenet(&url), &["tenants", "audit", &tenant]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
    let text = stdout(&audit);
    assert!(text.starts_with("AT"), "{text}");
    for action in [
        "create_tenant",
        "rename_tenant",
        "suspend_tenant",
        "resume_tenant",
        "delete_tenant",
    ] {
        assert!(text.contains(action), "{action} missing from {text}");
    }

    let audit_json = run(tenet(&url), &["tenants", "audit", &tenant, "--json"]).await;
    assert_eq!(json(&audit_json)["entries"][0]["actor"], "admin");

    let gone = run(tenet(&url), &["tenants", "suspend", &tenant]).await;
    let message = assert_fails(&gone, 1);
    assert!(message.contains("404 tenant_not_found"), "{message}");
}
