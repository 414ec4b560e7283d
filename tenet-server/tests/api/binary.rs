//! The real binary: help, invalid flags, restarts on one data directory,
//! and SIGTERM during a request.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::{Command, Output};
use std::time::Instant;

use reqwest::StatusCode;
use tenet_core::api::IssuedKeyResponse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN_TOKEN, Admin, BINARY_TIMEOUT, BinaryServer};
use crate::limits::read_response_head;

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenet-server"));
    command
        .args(args)
        .env_remove("TENET_ADMIN_TOKEN")
        .env_remove("TENET_KEY_PEPPER");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("binary runs")
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).expect("file exists").mode() & 0o777
}

#[test]
fn help_lists_every_setting() {
    let output = run_binary(&["--help"], &[]);

    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    for expected in [
        "--listen",
        "TENET_LISTEN",
        "--data-dir",
        "TENET_DATA_DIR",
        "--admin-token",
        "TENET_ADMIN_TOKEN",
        "--log-format",
        "TENET_LOG_FORMAT",
        "--max-body-bytes",
        "TENET_MAX_BODY_BYTES",
        "--max-header-bytes",
        "TENET_MAX_HEADER_BYTES",
        "--max-connections",
        "TENET_MAX_CONNECTIONS",
        "--header-read-timeout",
        "TENET_HEADER_READ_TIMEOUT",
        "--shutdown-timeout",
        "TENET_SHUTDOWN_TIMEOUT",
        "TENET_KEY_PEPPER",
        "seconds",
        "bytes",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}");
    }
}

#[test]
fn help_hides_the_admin_token_value() {
    let output = run_binary(&["--help"], &[("TENET_ADMIN_TOKEN", ADMIN_TOKEN)]);

    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    assert!(!help.contains(ADMIN_TOKEN));
}

#[test]
fn invalid_flags_exit_2_naming_the_flag() {
    let cases: [(&str, &[&str], &str); 5] = [
        ("unknown flag", &["--no-such-flag"], "--no-such-flag"),
        ("bad address", &["--listen", "nowhere"], "--listen"),
        (
            "zero connections",
            &["--max-connections", "0"],
            "--max-connections",
        ),
        (
            "tiny header limit",
            &["--max-header-bytes", "100"],
            "--max-header-bytes",
        ),
        (
            "unknown log format",
            &["--log-format", "xml"],
            "--log-format",
        ),
    ];

    for (description, args, flag) in cases {
        let output = run_binary(args, &[]);

        assert_eq!(output.status.code(), Some(2), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{description}: {stderr}");
    }
}

#[test]
fn short_admin_token_fails_setup() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let short = "short-admin-token-value";
    let data_dir_arg = data_dir.path().display().to_string();

    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
        &[("TENET_ADMIN_TOKEN", short)],
    );

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--admin-token"), "{stderr}");
    assert!(!stderr.contains(short), "{stderr}");
}

#[test]
fn shared_store_requires_pepper_and_admin_token() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let data_dir = parent.path().join("unused");
    let data_dir_arg = data_dir.display().to_string();
    // Nothing listens on port 1: the settings are checked before connecting.
    let database = ("TENET_DATABASE_URL", "postgres://tenet@127.0.0.1:1/tenet");
    let pepper = (
        "TENET_KEY_PEPPER",
        "shared-pepper-0123456789abcdefghijklmnop",
    );
    let token = ("TENET_ADMIN_TOKEN", ADMIN_TOKEN);
    let cases = [
        ("no pepper", vec![database, token], "TENET_KEY_PEPPER"),
        ("no admin token", vec![database, pepper], "--admin-token"),
    ];

    for (description, env, named) in cases {
        let output = run_binary(
            &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
            &env,
        );

        assert_eq!(output.status.code(), Some(1), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{description}: {stderr}"
        );
        assert!(stderr.contains("missing"), "{description}: {stderr}");
        assert!(stderr.contains(named), "{description}: {stderr}");
        assert!(
            !data_dir.exists(),
            "{description}: created the data directory"
        );
    }
}

#[test]
fn migrate_without_database_url_fails() {
    let output = run_binary(&["migrate"], &[]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
}

#[test]
fn other_pepper_fails_setup() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg];
    let first_pepper = "first-pepper-0123456789abcdefghijklmnopqrstuvwxyz";
    let other_pepper = "other-pepper-0123456789abcdefghijklmnopqrstuvwxyz";
    let first = BinaryServer::start(data_dir.path(), &[("TENET_KEY_PEPPER", first_pepper)]);
    first.stop();

    let output = run_binary(&args, &[("TENET_KEY_PEPPER", other_pepper)]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("pepper"), "{stderr}");
    assert!(!stderr.contains(other_pepper), "{stderr}");
}

#[test]
fn metrics_listener_on_the_main_address_is_refused() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();
    let address = "127.0.0.1:18999";
    let args = [
        "--listen",
        address,
        "--metrics-listen",
        address,
        "--data-dir",
        &data_dir_arg,
    ];

    let output = run_binary(&args, &[]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
    assert!(stderr.contains("also the address of --listen"), "{stderr}");
}

#[test]
fn data_dir_that_is_a_file_is_named() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let file = parent.path().join("not-a-directory");
    fs::write(&file, "").expect("file written");
    let file_arg = file.display().to_string();

    let output = run_binary(&["--listen", "127.0.0.1:0", "--data-dir", &file_arg], &[]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&file_arg), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
}

#[test]
fn start_errors_follow_the_json_log_format() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let file = parent.path().join("not-a-directory");
    fs::write(&file, "").expect("file written");
    let file_arg = file.display().to_string();
    let data_dir_arg = parent.path().join("data").display().to_string();
    let short_pepper = "short-pepper-value";
    let cases = [
        (
            "data directory that is a file",
            file_arg.as_str(),
            vec![],
            "is not a directory",
        ),
        (
            "short pepper",
            data_dir_arg.as_str(),
            vec![("TENET_KEY_PEPPER", short_pepper)],
            "TENET_KEY_PEPPER",
        ),
    ];

    for (description, data_dir, mut env, expected) in cases {
        // The error line bypasses the filter, which here drops every line.
        env.push(("RUST_LOG", "off"));
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
            data_dir,
        ];

        let output = run_binary(&args, &env);

        assert_eq!(output.status.code(), Some(1), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{description}: {stderr}"
        );
        let line: serde_json::Value = serde_json::from_str(&stderr)
            .unwrap_or_else(|err| panic!("{description}: not JSON ({err}): {stderr}"));
        assert_eq!(line["level"], "ERROR", "{description}");
        assert_eq!(
            line["message"], "tenet-server failed to start",
            "{description}"
        );
        assert!(line["timestamp"].is_string(), "{description}: {line}");
        let error = line["error"].as_str().expect("an error field");
        assert!(error.contains(expected), "{description}: {error}");
        assert!(!stderr.contains(short_pepper), "{description}: {stderr}");
    }
}

#[test]
fn refused_generated_pepper_is_not_kept() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg];
    let configured = "configured-pepper-0123456789abcdefghijklmnopqrstuvwxyz";
    let first = BinaryServer::start(data_dir.path(), &[("TENET_KEY_PEPPER", configured)]);
    first.stop();

    // Without the variable, the server generates a pepper, which the store
    // refuses; each start fails the same way and leaves no pepper file.
    for attempt in 0..2 {
        let output = run_binary(&args, &[]);

        assert_eq!(output.status.code(), Some(1), "attempt {attempt}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("pepper"), "{stderr}");
        assert!(
            !data_dir.path().join("pepper").exists(),
            "attempt {attempt} left a pepper file"
        );
    }
    let again = BinaryServer::start(data_dir.path(), &[("TENET_KEY_PEPPER", configured)]);
    again.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_files_are_private() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let data_dir = parent.path().join("data");
    let database = data_dir.join("tenet.db");
    let client = reqwest::Client::new();

    let server = BinaryServer::start(&data_dir, &[]);
    let admin = Admin {
        client: &client,
        base: server.url(""),
        token: fs::read_to_string(data_dir.join("admin-token"))
            .expect("token file")
            .trim_end()
            .to_owned(),
    };
    admin.create_tenant("Acme").await;

    assert_eq!(mode(&data_dir), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let path = data_dir.join(format!("tenet.db{suffix}"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert!(database.exists());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_data_dir_is_warned_and_tightened() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("mode is set");
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("tenet.db{suffix}"));
        fs::File::create(&path).expect("file is created");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("mode is set");
    }

    let server = BinaryServer::start(dir, &[]);
    let warnings: Vec<serde_json::Value> = server
        .logs
        .lock()
        .expect("log lines")
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["level"] == "WARN")
        .collect();
    server.stop();

    assert_eq!(
        mode(dir),
        0o755,
        "the server leaves the directory's mode alone"
    );
    let dir_warning = warnings
        .iter()
        .find(|event| event["path"] == dir.display().to_string())
        .expect("the directory is warned about");
    let message = dir_warning["message"].as_str().expect("message");
    assert!(message.contains("chmod 700"), "{message}");
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("tenet.db{suffix}"));
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        assert!(
            warnings
                .iter()
                .any(|event| event["path"] == path.display().to_string()),
            "no warning names {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_tenants_keys_and_revocations() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let data_dir = parent.path().join("data");
    let token_file = data_dir.join("admin-token");
    let pepper_file = data_dir.join("pepper");
    let client = reqwest::Client::new();

    let first = BinaryServer::start(&data_dir, &[]);
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&pepper_file), 0o600);
    let token = fs::read_to_string(&token_file).expect("token file");
    let token = token.trim_end().to_owned();
    let pepper = fs::read(&pepper_file).expect("pepper file");
    let admin = Admin {
        client: &client,
        base: first.url(""),
        token: token.clone(),
    };
    let tenant = admin.create_tenant("Acme").await;
    let active = admin.issue_key(&tenant).await;
    let revoked = admin.issue_key(&tenant).await;
    admin.revoke_key(&tenant, &revoked).await;
    assert_eq!(protected(&client, &first, &active).await, StatusCode::OK);
    first.assert_logs_exclude(&token);
    first.assert_logs_exclude(&active.api_key);
    first.assert_logs_exclude(&revoked.api_key);
    first.stop();

    let second = BinaryServer::start(&data_dir, &[]);
    let admin = Admin {
        client: &client,
        base: second.url(""),
        token: token.clone(),
    };

    assert_eq!(admin.tenants().await, vec![tenant.clone()]);
    let keys = admin.keys(&tenant).await;
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .any(|k| k.id == active.id && k.revoked_at.is_none())
    );
    assert!(
        keys.iter()
            .any(|k| k.id == revoked.id && k.revoked_at.is_some())
    );
    assert_eq!(protected(&client, &second, &active).await, StatusCode::OK);
    assert_eq!(
        protected(&client, &second, &revoked).await,
        StatusCode::UNAUTHORIZED
    );
    let token_after = fs::read_to_string(&token_file).expect("token file");
    assert_eq!(token_after.trim_end(), token);
    assert_eq!(fs::read(&pepper_file).expect("pepper file"), pepper);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&pepper_file), 0o600);
    second.assert_logs_exclude(&token);
    second.assert_logs_exclude(&active.api_key);
    second.assert_logs_exclude(&revoked.api_key);
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let mut server = BinaryServer::start(data_dir.path(), &[("TENET_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let body = br#"{"name":"Late"}"#;
    let head = format!(
        "POST /tenants HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        body.len()
    );

    // hyper sends 100 Continue when the handler starts reading the body,
    // so after it the request is in flight inside the handler.
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("head sent");
    let interim = read_response_head(&mut stream).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");

    server.terminate();
    wait_until_refused(server.addr).await;
    stream.write_all(body).await.expect("body sent");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("response read");
    let response = String::from_utf8_lossy(&response);

    assert!(response.starts_with("HTTP/1.1 201 "), "{response}");
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

async fn protected(
    client: &reqwest::Client,
    server: &BinaryServer,
    key: &IssuedKeyResponse,
) -> StatusCode {
    client
        .get(server.url("/protected"))
        .header("x-api-key", &key.api_key)
        .send()
        .await
        .expect("request sent")
        .status()
}

/// Waits until the server no longer accepts connections, which shows that
/// it has handled the signal.
async fn wait_until_refused(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + BINARY_TIMEOUT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the server kept accepting");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[test]
fn silent_postgres_fails_start_naming_the_cause() {
    // Accepts TCP connections through the kernel's backlog but never
    // speaks the Postgres protocol.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "postgres://tenet@{}/tenet",
        silent.local_addr().expect("address")
    );
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();

    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
        &[
            ("TENET_DATABASE_URL", &url),
            ("TENET_DATABASE_CONNECT_TIMEOUT_MS", "300"),
            (
                "TENET_KEY_PEPPER",
                "shared-pepper-0123456789abcdefghijklmnop",
            ),
            ("TENET_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not complete"), "{stderr}");
    assert!(!stderr.contains("busy"), "{stderr}");
}

/// Returns the names of the entries in `dir`, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("readable directory")
        .map(|entry| {
            let entry = entry.expect("directory entry");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn failed_start_writes_no_files() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").expect("port bound");
    let occupied_addr = occupied.local_addr().expect("bound address").to_string();
    let cases = [
        (
            "short admin token",
            "127.0.0.1:0",
            vec![("TENET_ADMIN_TOKEN", "short-admin-token-value")],
            "--admin-token",
        ),
        (
            "admin token with a space",
            "127.0.0.1:0",
            vec![(
                "TENET_ADMIN_TOKEN",
                "admin token 0123456789abcdefghijklmnopqrstuvwxyz",
            )],
            "--admin-token",
        ),
        (
            "port in use",
            occupied_addr.as_str(),
            vec![],
            "failed to listen",
        ),
    ];

    for (description, listen, env, named) in cases {
        let parent = tempfile::tempdir().expect("temporary directory");
        let data_dir = parent.path().join("data");
        let data_dir_arg = data_dir.display().to_string();

        let output = run_binary(&["--listen", listen, "--data-dir", &data_dir_arg], &env);

        assert_eq!(output.status.code(), Some(1), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{description}: {stderr}");
        assert!(
            !data_dir.exists(),
            "{description}: wrote {:?}",
            entries(&data_dir)
        );
    }
}

/// Returns the name and contents of each file in `dir`, sorted by name.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    entries(dir)
        .into_iter()
        .map(|name| {
            let contents = fs::read(dir.join(&name)).expect("readable file");
            (name, contents)
        })
        .collect()
}

#[test]
fn invalid_secret_file_changes_nothing() {
    let valid_token = "valid-admin-token-0123456789abcdefghijklmnop\n";
    let cases = [
        (
            "empty pepper file",
            vec![("pepper", "")],
            "invalid pepper file",
        ),
        (
            "short pepper file with a valid token file",
            vec![("pepper", "short-pepper\n"), ("admin-token", valid_token)],
            "the key pepper is 12 bytes long",
        ),
        (
            "short admin token file",
            vec![("admin-token", "short\n")],
            "invalid admin token file",
        ),
        (
            "admin token file with a space",
            vec![(
                "admin-token",
                "admin token 0123456789abcdefghijklmnopqrstuvwxyz\n",
            )],
            "invalid admin token file",
        ),
    ];

    for (description, files, expected) in cases {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        for (name, contents) in &files {
            let path = data_dir.path().join(name);
            fs::write(&path, contents).expect("file written");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("mode is set");
        }
        let before = snapshot(data_dir.path());
        let data_dir_arg = data_dir.path().display().to_string();

        let output = run_binary(
            &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
            &[],
        );

        assert_eq!(output.status.code(), Some(1), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{description}: {stderr}"
        );
        assert!(stderr.contains(expected), "{description}: {stderr}");
        let mut names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        assert_eq!(entries(data_dir.path()), names, "{description}");
        assert_eq!(snapshot(data_dir.path()), before, "{description}");
    }
}

#[test]
fn invalid_token_file_beside_database_leaves_no_pepper() {
    // An empty database file contains no admin token digest, so the
    // server would use the token in the file.
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let token_file = data_dir.path().join("admin-token");
    fs::write(data_dir.path().join("tenet.db"), b"").expect("database file written");
    fs::write(&token_file, "short\n").expect("token file written");
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).expect("mode is set");
    let data_dir_arg = data_dir.path().display().to_string();

    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
        &[],
    );

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid admin token file"), "{stderr}");
    assert!(
        !data_dir.path().join("pepper").exists(),
        "wrote {:?}",
        entries(data_dir.path())
    );
    assert_eq!(fs::read(&token_file).expect("token file"), b"short\n");
}

#[test]
fn invalid_secret_file_of_running_server_names_it() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();
    let pepper_file = data_dir.path().join("pepper");
    let first = BinaryServer::start(data_dir.path(), &[]);
    let first_pid = first.pid();
    let pepper = fs::read(&pepper_file).expect("pepper file");
    // A server at its first start may not have written its pepper yet,
    // which reads like this empty file.
    fs::write(&pepper_file, b"").expect("pepper file emptied");

    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
        &[],
    );

    fs::write(&pepper_file, &pepper).expect("pepper file restored");
    first.stop();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another tenet-server (process {first_pid})"
        )),
        "{stderr}"
    );
}

#[test]
fn corrupt_database_leaves_no_pepper() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        data_dir.path().join("tenet.db"),
        b"not a database file, only text",
    )
    .expect("database file written");
    let data_dir_arg = data_dir.path().display().to_string();

    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
        &[],
    );

    assert_eq!(output.status.code(), Some(1));
    assert!(
        !data_dir.path().join("pepper").exists(),
        "wrote {:?}",
        entries(data_dir.path())
    );
}

#[test]
fn second_server_on_data_dir_fails() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();
    let first = BinaryServer::start(data_dir.path(), &[]);
    let files_before = entries(data_dir.path());

    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir_arg],
        &[],
    );

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&data_dir_arg), "{stderr}");
    assert!(
        stderr.contains(&format!("process {}", first.pid())),
        "{stderr}"
    );
    assert_eq!(entries(data_dir.path()), files_before);

    first.stop();
    let restarted = BinaryServer::start(data_dir.path(), &[]);
    restarted.stop();
}

#[test]
fn sqlite_start_line_names_data_dir() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let server = BinaryServer::start(data_dir.path(), &[]);

    let logs = server.logs.lock().expect("log lines").clone();
    let started = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "tenet-server started")
        .expect("a start line");
    assert_eq!(started["store"], "sqlite");
    assert_eq!(
        started["data_dir"].as_str(),
        Some(data_dir.path().display().to_string().as_str())
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_admin_token_file_is_warned_on_restart() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let dir = data_dir.path();
    let token_file = dir.join("admin-token");
    BinaryServer::start(dir, &[]).stop();
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o644)).expect("mode is set");

    let server = BinaryServer::start(dir, &[]);
    let warned = server
        .logs
        .lock()
        .expect("log lines")
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|event| event["level"] == "WARN" && event["path"] == token_file.display().to_string());
    server.stop();

    assert!(warned, "no warning names {}", token_file.display());
}

#[test]
fn empty_environment_variables_count_as_unset() {
    let empty = [
        ("TENET_DATABASE_URL", ""),
        ("TENET_METRICS_LISTEN", ""),
        ("TENET_LOG_FORMAT", ""),
        ("TENET_SKIP_MIGRATIONS", ""),
        ("TENET_REDIS_URL", ""),
        ("TENET_KEY_PEPPER", ""),
    ];

    // With TENET_DATABASE_URL unset, `migrate` fails on the missing URL
    // (status 1) rather than on parsing (status 2) or connecting.
    let output = run_binary(&["migrate"], &empty);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing --database-url"), "{stderr}");

    let data_dir = tempfile::tempdir().expect("temporary directory");
    let server = BinaryServer::start(data_dir.path(), &empty);
    let logs = server.logs.lock().expect("log lines").clone();
    let started = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "tenet-server started")
        .expect("a start line");
    assert_eq!(started["store"], "sqlite");
    assert!(started.get("metrics_address").is_none(), "{started}");
    assert!(data_dir.path().join("pepper").exists());
    server.stop();
}

#[test]
fn skip_migrations_accepts_boolean_words() {
    for value in ["true", "false", "1", "0", "yes", "no", "on", "off", "YES"] {
        let output = run_binary(&["migrate"], &[("TENET_SKIP_MIGRATIONS", value)]);

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{value}: {stderr}");
        assert!(
            stderr.contains("missing --database-url"),
            "{value}: {stderr}"
        );
    }

    let output = run_binary(&["migrate"], &[("TENET_SKIP_MIGRATIONS", "maybe")]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--skip-migrations"), "{stderr}");
    assert!(stderr.contains("maybe"), "{stderr}");
}

#[test]
fn non_utf8_variables_exit_2_naming_them() {
    use std::os::unix::ffi::OsStrExt as _;

    let value = std::ffi::OsStr::from_bytes(&[0xff; 40]);

    for name in ["TENET_KEY_PEPPER", "TENET_ADMIN_TOKEN"] {
        // With TENET_DATABASE_URL unset, `migrate` fails on the missing URL
        // (status 1) unless a setting fails parsing first (status 2).
        let output = Command::new(env!("CARGO_BIN_EXE_tenet-server"))
            .arg("migrate")
            .env_remove("TENET_ADMIN_TOKEN")
            .env_remove("TENET_DATABASE_URL")
            .env_remove("TENET_KEY_PEPPER")
            .env(name, value)
            .output()
            .expect("binary runs");

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} is not valid UTF-8")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn invalid_env_value_names_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_tenet-server"))
        .env("TENET_LISTEN", "nonsense")
        .output()
        .expect("binary runs");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'--listen <ADDR>' from 'TENET_LISTEN'"),
        "{stderr}"
    );
}

#[test]
fn port_in_use_names_the_flag() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").expect("port bound");
    let occupied_addr = occupied.local_addr().expect("bound address").to_string();
    let cases = [
        (
            "main listener by flag",
            vec!["--listen", occupied_addr.as_str()],
            vec![],
            "the address of --listen: ",
        ),
        (
            "main listener by variable",
            vec![],
            vec![("TENET_LISTEN", occupied_addr.as_str())],
            "the address of --listen from TENET_LISTEN: ",
        ),
        (
            "metrics listener by flag",
            vec![
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                occupied_addr.as_str(),
            ],
            vec![],
            "the address of --metrics-listen: ",
        ),
        (
            "metrics listener by variable",
            vec!["--listen", "127.0.0.1:0"],
            vec![("TENET_METRICS_LISTEN", occupied_addr.as_str())],
            "the address of --metrics-listen from TENET_METRICS_LISTEN: ",
        ),
    ];

    for (description, flags, env, named) in cases {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let data_dir_arg = data_dir.path().display().to_string();
        let mut args: Vec<&str> = flags.clone();
        args.extend(["--data-dir", data_dir_arg.as_str()]);

        let output = run_binary(&args, &env);

        assert_eq!(output.status.code(), Some(1), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&occupied_addr), "{description}: {stderr}");
        assert!(stderr.contains(named), "{description}: {stderr}");
        if env.is_empty() {
            assert!(!stderr.contains("TENET_"), "{description}: {stderr}");
        }
    }
}

#[test]
fn setup_errors_name_the_variable_only_when_set() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let data_dir_arg = data_dir.path().display().to_string();
    // Both listeners are checked before either is bound, so nothing
    // listens on this port.
    let address = "127.0.0.1:19520";
    let cases = [
        (
            "admin token by flag",
            vec!["--listen", "127.0.0.1:0", "--admin-token", "x"],
            vec![],
            "invalid --admin-token: the admin token is 1 character long;",
        ),
        (
            "admin token by variable",
            vec!["--listen", "127.0.0.1:0"],
            vec![("TENET_ADMIN_TOKEN", "x")],
            "invalid --admin-token from TENET_ADMIN_TOKEN: the admin token is 1 character \
             long;",
        ),
        (
            "metrics address by flags",
            vec!["--listen", address, "--metrics-listen", address],
            vec![],
            "invalid --metrics-listen: 127.0.0.1:19520 is also the address of --listen;",
        ),
        (
            "metrics address by variables",
            vec![],
            vec![("TENET_LISTEN", address), ("TENET_METRICS_LISTEN", address)],
            "invalid --metrics-listen from TENET_METRICS_LISTEN: 127.0.0.1:19520 is also \
             the address of --listen from TENET_LISTEN;",
        ),
        (
            "database URL by flag",
            vec!["--database-url", "postgres://tenet:sekrit@db:99999/tenet"],
            vec![],
            "invalid --database-url: invalid Postgres URL:",
        ),
        (
            "database URL by variable",
            vec![],
            vec![("TENET_DATABASE_URL", "notaurl")],
            "invalid --database-url from TENET_DATABASE_URL: invalid Postgres URL:",
        ),
        (
            "Redis URL by flag",
            vec![
                "--database-url",
                "postgres://postgres@127.0.0.1:5432/test",
                "--redis-url",
                "redis://:sekrit@cache:port",
            ],
            vec![],
            "invalid --redis-url: invalid Redis URL:",
        ),
    ];

    for (description, flags, env, expected) in cases {
        let mut args = flags.clone();
        args.extend(["--data-dir", data_dir_arg.as_str()]);

        let output = run_binary(&args, &env);

        assert_eq!(output.status.code(), Some(1), "{description}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{description}: {stderr}"
        );
        assert!(stderr.contains(expected), "{description}: {stderr}");
        assert!(!stderr.contains("sekrit"), "{description}: {stderr}");
        if env.is_empty() {
            assert!(!stderr.contains("TENET_"), "{description}: {stderr}");
        }
    }
}

#[test]
fn rust_log_that_is_not_utf8_is_warned() {
    use std::os::unix::ffi::OsStrExt as _;

    let data_dir = tempfile::tempdir().expect("temporary directory");
    let rust_log = std::ffi::OsStr::from_bytes(b"tenet_server=\xff");

    let server = BinaryServer::start_with_os_env(data_dir.path(), &[("RUST_LOG", rust_log)]);
    let logs = server.logs.lock().expect("log lines").join("\n");
    server.stop();

    assert!(logs.contains("RUST_LOG is not valid UTF-8"), "{logs}");
}

#[test]
fn empty_or_invalid_rust_log_keeps_info_lines() {
    for (rust_log, warned) in [("", false), ("tenet_server=debug,foo=bar", true)] {
        let data_dir = tempfile::tempdir().expect("temporary directory");

        // `start` waits for the info line that the server logs at start.
        let server = BinaryServer::start(data_dir.path(), &[("RUST_LOG", rust_log)]);

        let logs = server.logs.lock().expect("log lines").join("\n");
        assert_eq!(
            logs.contains("RUST_LOG is invalid"),
            warned,
            "RUST_LOG={rust_log:?}: {logs}"
        );
        server.stop();
    }
}

#[test]
fn invalid_rust_log_warning_names_the_directive() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let rust_log = "info,foo=notalevel,tenet_server=debug";

    let server = BinaryServer::start(data_dir.path(), &[("RUST_LOG", rust_log)]);
    let logs = server.logs.lock().expect("log lines").clone();
    server.stop();

    let warning = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("RUST_LOG is invalid"))
        })
        .expect("a warning about RUST_LOG");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["rust_log"], rust_log, "{warning}");
    assert_eq!(warning["directive"], "foo=notalevel", "{warning}");
    let error = warning["error"].as_str().expect("an error field");
    assert!(error.contains("level"), "{error}");
    let message = warning["message"].as_str().expect("a message");
    assert!(
        message.contains(r#"the filter "info" is used instead"#),
        "{message}"
    );
}
