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
async fn rotate_without_grace_prints_revoked() {
    let server = TestServer::start().await;
    let (tenant, old) = server.tenant_with_key().await;
    let tenant_id = tenant.id.to_string();
    let old_id = old.id.to_string();
    let args = ["keys", "rotate", &tenant_id, &old_id, "--grace", "0"];

    let output = run(tenet(&server.url()), &args).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let old_line = text
        .lines()
        .find(|line| line.starts_with("old key"))
        .expect("old key line");
    assert!(
        old_line.starts_with(&format!("old key {old_id} revoked: 20")),
        "{text}"
    );
    assert!(!old_line.contains("expires"), "{text}");
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
async fn empty_url_variable_means_default() {
    let output = run(tenet(""), &["ready"]).await;

    let text = stderr(&output);
    assert_ne!(output.status.code(), Some(2), "stderr: {text}");
    assert!(!text.contains("invalid"), "stderr: {text}");
}

#[tokio::test]
async fn empty_url_flag_is_a_usage_error() {
    let output = run(tenet(""), &["--url", "", "ready"]).await;

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {text}");
    assert!(text.contains("--url"), "stderr: {text}");
}

#[tokio::test]
async fn non_utf8_token_variable_is_named() {
    use std::os::unix::ffi::OsStrExt as _;

    let mut command = tenet(&format!("http://{}", closed_port().await));
    command.env(
        "TENET_ADMIN_TOKEN",
        std::ffi::OsStr::from_bytes(&[0xff; 40]),
    );

    let output = run(command, &["tenants", "list"]).await;

    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {text}");
    assert!(
        text.contains("TENET_ADMIN_TOKEN is not valid UTF-8"),
        "stderr: {text}"
    );
}

#[tokio::test]
async fn invalid_url_is_a_usage_error() {
    for url in ["nope", "ftp://127.0.0.1:8080"] {
        let output = run(tenet(url), &["tenants", "list"]).await;

        let message = assert_fails(&output, 2);
        assert!(message.contains(url), "{message}");
    }
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

/// Runs `tenet verify KEY --json` with `extra` flags and returns its
/// `rate_limit` object.
async fn verified_limit_state(url: &str, key: &str, extra: &[&str]) -> Value {
    let mut args = vec!["verify", key, "--json"];
    args.extend_from_slice(extra);
    let output = run(tenet(url), &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    json(&output)["rate_limit"].clone()
}

#[tokio::test]
async fn verify_checks_limits_without_consuming() {
    let server = TestServer::start().await;
    let url = server.url();
    let tenant = server.admin().create_tenant("Acme").await.expect("created");
    let issue_args = [
        "keys",
        "issue",
        &tenant.id.to_string(),
        "--rate",
        "2",
        "--period",
        "3600",
        "--burst",
        "2",
        "--json",
    ];
    let issued = run(tenet(&url), &issue_args).await;
    assert!(issued.status.success(), "{}", stderr(&issued));
    let key = json(&issued)["api_key"].as_str().expect("key").to_owned();

    let first = verified_limit_state(&url, &key, &[]).await;
    let second = verified_limit_state(&url, &key, &[]).await;
    let consumed = verified_limit_state(&url, &key, &["--consume"]).await;
    let after = verified_limit_state(&url, &key, &[]).await;
    verified_limit_state(&url, &key, &["--consume"]).await;
    let exhausted = verified_limit_state(&url, &key, &[]).await;
    let table = run(tenet(&url), &["verify", &key]).await;

    assert_eq!(first["allowed"], true, "{first}");
    assert_eq!(first["limit"], 2, "{first}");
    assert_eq!(first, second, "a check without --consume counts nothing");
    assert_eq!(consumed["allowed"], true, "{consumed}");
    let before = first["remaining"].as_u64().expect("remaining");
    let remaining = after["remaining"].as_u64().expect("remaining");
    assert_eq!(remaining + 1, before, "{first} then {after}");
    assert_eq!(exhausted["allowed"], false, "{exhausted}");
    assert_eq!(exhausted["code"], "rate_limited", "{exhausted}");
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.contains("allowed:"), "{text}");
    assert!(text.contains("code:"), "{text}");
    assert!(text.contains("rate_limited"), "{text}");
    assert!(text.contains("remaining:"), "{text}");
    assert!(text.contains("reset:"), "{text}");
}

#[tokio::test]
async fn verify_without_token_needs_consume() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;

    let mut without = tenet(&server.url());
    without.env_remove("TENET_ADMIN_TOKEN");
    let rejected = run(without, &["verify", &issued.api_key]).await;
    let mut consuming = tenet(&server.url());
    consuming.env_remove("TENET_ADMIN_TOKEN");
    let counted = run(consuming, &["verify", &issued.api_key, "--consume"]).await;

    let message = assert_fails(&rejected, 2);
    assert!(message.contains("TENET_ADMIN_TOKEN"), "{message}");
    assert!(!message.contains(&issued.api_key), "{message}");
    assert!(counted.status.success(), "{}", stderr(&counted));
    assert!(stdout(&counted).contains(&tenant.id.to_string()));
}

#[tokio::test]
async fn json_verify_prints_rejected_keys_as_json() {
    let server = TestServer::start().await;
    let (tenant, issued) = server.tenant_with_key().await;
    server
        .admin()
        .revoke_key(tenant.id, issued.id)
        .await
        .expect("key revoked");
    let mut anonymous = tenet(&server.url());
    anonymous.env_remove("TENET_ADMIN_TOKEN");

    let checked = run(tenet(&server.url()), &["verify", &issued.api_key, "--json"]).await;
    let consumed = run(
        anonymous,
        &["verify", &issued.api_key, "--consume", "--json"],
    )
    .await;
    let text = run(tenet(&server.url()), &["verify", &issued.api_key]).await;

    // `POST /verify` names the reason; `GET /protected`, which the call
    // without a token uses, returns the uniform 401.
    let cases = [
        ("admin token", &checked, "key_revoked"),
        ("no token", &consumed, "unauthorized"),
    ];
    for (description, output, code) in cases {
        let message = assert_fails(output, 1);
        assert!(message.contains(code), "{description}: {message}");
        assert_eq!(
            json(output),
            serde_json::json!({ "valid": false, "code": code }),
            "{description}"
        );
        assert!(!stdout(output).contains(&issued.api_key), "{description}");
    }
    assert_fails(&text, 1);
    assert!(text.stdout.is_empty(), "{}", stdout(&text));
}

#[tokio::test]
async fn timeout_of_zero_says_at_least_one() {
    let output = run(tenet("http://127.0.0.1:9"), &["ready", "--timeout", "0"]).await;

    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("--timeout"), "{text}");
    assert!(text.contains("must be at least 1 second"), "{text}");
    assert!(!text.contains("18446744073709551615"), "{text}");
}

#[tokio::test]
async fn invalid_url_hides_user_info() {
    // A valid URL with user info, and one with an invalid port, which
    // fails to parse at all.
    for url in [
        "http://user:secret@127.0.0.1:9",
        "http://user:secret@127.0.0.1:99999",
    ] {
        let output = run(tenet("http://127.0.0.1:9"), &["ready", "--url", url]).await;

        let message = assert_fails(&output, 2);
        assert!(!message.contains("secret"), "{message}");
        assert!(!message.contains("user:"), "{message}");
        assert!(message.contains("http://***@127.0.0.1:"), "{message}");
    }
}

#[tokio::test]
async fn issue_sends_limit_and_metadata() {
    let server = TestServer::start().await;
    let url = server.url();
    let tenant = server.admin().create_tenant("Acme").await.expect("created");
    let tenant = tenant.id.to_string();
    let args = [
        "keys",
        "issue",
        &tenant,
        "--rate",
        "10",
        "--period",
        "60",
        "--burst",
        "5",
        "--shadow",
        "--metadata",
        r#"{"team":"billing","tier":2}"#,
    ];

    let issued = run(tenet(&url), &args).await;
    let listed = run(tenet(&url), &["keys", "list", &tenant, "--json"]).await;

    assert!(issued.status.success(), "{}", stderr(&issued));
    let text = stdout(&issued);
    assert!(text.contains("10 per 60 s, burst 5 (shadow)"), "{text}");
    assert!(text.contains(r#"{"team":"billing","tier":2}"#), "{text}");
    let keys = json(&listed);
    assert_eq!(keys["keys"][0]["metadata"]["team"], "billing", "{keys}");
    assert_eq!(keys["keys"][0]["metadata"]["tier"], 2, "{keys}");
}

#[tokio::test]
async fn invalid_metadata_fails_before_any_request() {
    let url = format!("http://{}", closed_port().await);
    let tenant = tenet_core::TenantId::generate().to_string();
    let cases = [
        ("not JSON", "{team"),
        ("an array", "[1, 2]"),
        ("a string", r#""billing""#),
        ("null", "null"),
    ];

    for (description, metadata) in cases {
        let output = run(
            tenet(&url),
            &["keys", "issue", &tenant, "--metadata", metadata],
        )
        .await;

        assert_eq!(output.status.code(), Some(2), "{description}");
        let text = stderr(&output);
        assert!(text.contains("--metadata"), "{description}: {text}");
        assert!(!text.contains("unavailable"), "{description}: {text}");
    }
}

#[tokio::test]
async fn key_limit_sets_and_removes() {
    let server = TestServer::start().await;
    let url = server.url();
    let (tenant, issued) = server.tenant_with_key().await;
    let (tenant, key) = (tenant.id.to_string(), issued.id.to_string());
    let set_args = [
        "keys", "limit", &tenant, &key, "--rate", "10", "--period", "60", "--burst", "5",
    ];

    let set = run(tenet(&url), &set_args).await;
    let removed = run(
        tenet(&url),
        &["keys", "limit", &tenant, &key, "--remove", "--json"],
    )
    .await;
    let neither = run(tenet(&url), &["keys", "limit", &tenant, &key]).await;
    let both = run(
        tenet(&url),
        &["keys", "limit", &tenant, &key, "--remove", "--rate", "1"],
    )
    .await;

    assert!(set.status.success(), "{}", stderr(&set));
    assert!(
        stdout(&set).contains("10 per 60 s, burst 5"),
        "{}",
        stdout(&set)
    );
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(json(&removed)["limit"], Value::Null);
    assert_eq!(neither.status.code(), Some(2), "{}", stderr(&neither));
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}

#[tokio::test]
async fn usage_export_and_last_used() {
    let flags = [
        "--usage-flush-interval",
        "1",
        "--key-use-flush-interval",
        "1",
    ];
    let server = TestServer::start_with(&flags).await;
    let url = server.url();
    let (tenant, issued) = server.tenant_with_key().await;
    let tenant = tenant.id.to_string();
    let unused = run(tenet(&url), &["keys", "list", &tenant]).await;
    for _ in 0..2 {
        let verified = run(tenet(&url), &["verify", &issued.api_key, "--consume"]).await;
        assert!(verified.status.success(), "{}", stderr(&verified));
    }
    let now = time::OffsetDateTime::now_utc();
    let format = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339 time")
    };
    let from = format(now - time::Duration::hours(2));
    let to = format(now + time::Duration::hours(2));
    let range = ["--from", from.as_str(), "--to", to.as_str()];

    // The counts reach the store at the next flush, within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let usage = loop {
        let mut args = vec!["usage", tenant.as_str(), "--granularity", "day", "--json"];
        args.extend_from_slice(&range);
        let usage = run(tenet(&url), &args).await;
        assert!(usage.status.success(), "{}", stderr(&usage));
        let usage = json(&usage);
        if usage["totals"]["accepted"] == 2 || std::time::Instant::now() > deadline {
            break usage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut table_args = vec!["usage", tenant.as_str()];
    table_args.extend_from_slice(&range);
    let table = run(tenet(&url), &table_args).await;
    let mut export_args = vec!["usage", "export", tenant.as_str()];
    export_args.extend_from_slice(&range);
    let export = run(tenet(&url), &export_args).await;
    // last_used_at has a flush timer of its own, so it may come later.
    let today = now.date().to_string();
    let used_row = loop {
        let used = run(tenet(&url), &["keys", "list", &tenant]).await;
        assert!(used.status.success(), "{}", stderr(&used));
        let row = stdout(&used).lines().nth(1).expect("key row").to_owned();
        if row.matches(&today).count() >= 2 || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    assert_eq!(usage["totals"]["accepted"], 2, "{usage}");
    assert_eq!(usage["granularity"], "day", "{usage}");
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("START"), "{text}");
    assert!(text.contains(&issued.id.to_string()), "{text}");
    assert!(text.lines().any(|line| line.starts_with("total")), "{text}");
    assert!(export.status.success(), "{}", stderr(&export));
    let lines: Vec<Value> = stdout(&export)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&export));
    assert_eq!(lines[0]["key_id"], issued.id.to_string());
    assert_eq!(lines[0]["accepted"], 2);
    let header = stdout(&unused);
    assert!(header.starts_with("ID"), "{header}");
    assert!(header.contains("LAST USED"), "{header}");
    let unused_row = header.lines().nth(1).expect("key row");
    assert_eq!(unused_row.matches(&today).count(), 1, "{header}");
    assert!(
        used_row.matches(&today).count() >= 2,
        "created and last used: {used_row}"
    );
}

#[tokio::test]
async fn usage_rejects_an_invalid_range() {
    let url = format!("http://{}", closed_port().await);
    let tenant = tenet_core::TenantId::generate().to_string();
    let cases = [
        ("a time without offset", "2026-12-01T00:00:00"),
        ("words", "yesterday"),
    ];

    for (description, from) in cases {
        let args = ["usage", &tenant, "--from", from, "--to", "2026-12-02"];
        let output = run(tenet(&url), &args).await;

        assert_eq!(output.status.code(), Some(2), "{description}");
        assert!(stderr(&output).contains("--from"), "{description}");
    }
}

#[tokio::test]
async fn closed_pipe_ends_quietly() {
    let server = TestServer::start().await;
    server.admin().create_tenant("Acme").await.expect("created");
    let (reader, writer) = std::io::pipe().expect("pipe");
    // The reader is closed before tenet starts, so its first write fails.
    drop(reader);
    let mut command = tenet(&server.url());
    command
        .args(["tenants", "list"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped());

    let output = command.output().await.expect("tenet runs");

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
}

#[tokio::test]
async fn usage_line_shows_global_flags_as_optional() {
    let args = [
        "tenants",
        "get",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "some-token",
    ];

    let output = run(tenet("http://127.0.0.1:9"), &args).await;

    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("Usage: tenet tenants get [OPTIONS] <TENANT>"),
        "{text}"
    );
    assert!(!text.contains("--token <TOKEN>"), "{text}");
    assert!(!text.contains("some-token"), "{text}");
}

#[tokio::test]
async fn empty_token_fails_as_empty() {
    let url = format!("http://{}", closed_port().await);
    let mut from_env = tenet(&url);
    from_env.env("TENET_ADMIN_TOKEN", "");
    let from_flag = tenet(&url);

    let env_output = run(from_env, &["tenants", "list"]).await;
    let flag_output = run(from_flag, &["tenants", "list", "--token", ""]).await;

    let message = assert_fails(&env_output, 2);
    assert!(message.contains("admin token is empty"), "{message}");
    let message = assert_fails(&flag_output, 2);
    assert!(message.contains("admin token is empty"), "{message}");
}
