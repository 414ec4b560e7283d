//! Test servers, in process and as the real binary, and API shortcuts.

use std::env;
use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::Value;
use tenet_core::api::{IssuedKeyResponse, KeyResponse, TenantResponse};
use tenet_server::{App, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Admin token of every in-process test server.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdefghijklmnop";

/// Key pepper of every in-process test server.
const PEPPER: &str = "test-pepper-0123456789abcdefghijklmnopqrstuvwxyz";

/// Upper bound for a test's wait on the server binary.
pub const BINARY_TIMEOUT: Duration = Duration::from_secs(60);

/// A server running in this process on 127.0.0.1 with a temporary data
/// directory; it shuts down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The `--metrics-listen` address, when the flags set one.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tenet_server::Error>>>,
    /// `None` only after [`TestServer::stop_keeping_data`] took it.
    data_dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with the default limits.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra command-line flags.
    pub async fn start_with(flags: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        Self::start_in(data_dir, flags).await
    }

    /// Starts a server on an existing data directory, such as one that
    /// [`TestServer::stop_keeping_data`] returned, with extra flags.
    pub async fn start_in(data_dir: tempfile::TempDir, flags: &[&str]) -> Self {
        let mut args = vec![
            "tenet-server".to_owned(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
            "--admin-token".to_owned(),
            ADMIN_TOKEN.to_owned(),
        ];
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let mut config = Config::try_parse_from(args).expect("valid test flags");
        config.key_pepper = Some(PEPPER.to_owned());

        let app = App::build(config).await.expect("server starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));

        Self {
            addr,
            metrics_addr,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            task: Some(task),
            data_dir: Some(data_dir),
        }
    }

    /// Returns the absolute URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until it has drained and written what
    /// it counted in memory.
    pub async fn stop(self) {
        self.stop_reporting()
            .await
            .expect("usage counts and key uses written at shutdown");
    }

    /// Stops the server like [`TestServer::stop`] and returns the result
    /// of its final write.
    pub async fn stop_reporting(mut self) -> Result<(), tenet_server::Error> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task ends without panicking"),
            None => Ok(()),
        }
    }

    /// Stops the server like [`TestServer::stop`] and returns its data
    /// directory, so that a new server can start on the same data.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let data_dir = self.data_dir.take().expect("the data directory is kept");
        self.stop().await;
        data_dir
    }

    /// Returns an admin API shortcut bound to this server.
    pub fn admin(&self) -> Admin<'_> {
        Admin {
            client: &self.client,
            base: format!("http://{}", self.addr),
            token: ADMIN_TOKEN.to_owned(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Shortcuts for the management API, asserting success.
pub struct Admin<'a> {
    pub client: &'a reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Admin<'_> {
    pub async fn create_tenant(&self, name: &str) -> TenantResponse {
        let response = self
            .client
            .post(format!("{}/tenants", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("tenant JSON")
    }

    pub async fn issue_key(&self, tenant: &TenantResponse) -> IssuedKeyResponse {
        let response = self
            .client
            .post(format!("{}/tenants/{}/keys", self.base, tenant.id))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("issued key JSON")
    }

    pub async fn revoke_key(&self, tenant: &TenantResponse, key: &IssuedKeyResponse) {
        let response = self
            .client
            .delete(format!(
                "{}/tenants/{}/keys/{}",
                self.base, tenant.id, key.id
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Lists every tenant, following `next_cursor` to the last page.
    pub async fn tenants(&self) -> Vec<TenantResponse> {
        let rows = self.list_all("/tenants", "tenants").await;
        serde_json::from_value(Value::Array(rows)).expect("tenant list")
    }

    /// Lists every key of a tenant, following `next_cursor` to the last
    /// page.
    pub async fn keys(&self, tenant: &TenantResponse) -> Vec<KeyResponse> {
        let path = format!("/tenants/{}/keys", tenant.id);
        let rows = self.list_all(&path, "keys").await;
        serde_json::from_value(Value::Array(rows)).expect("key list")
    }

    async fn list_all(&self, path: &str, field: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut page_path = format!("{path}?limit=100");
        loop {
            let mut body = self.get_json(&page_path).await;
            let page = body[field].as_array_mut().expect("a list field");
            rows.append(page);
            match body["next_cursor"].as_str() {
                Some(cursor) => page_path = format!("{path}?limit=100&cursor={cursor}"),
                None => return rows,
            }
        }
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("JSON body")
    }
}

/// Sends `GET /protected` with the given headers and returns the status.
pub async fn protected_status(server: &TestServer, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = server.client.get(server.url("/protected"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent").status()
}

/// The real `tenet-server` binary, started with JSON debug logs on
/// 127.0.0.1:0 and no drain delay unless `env` sets one.
pub struct BinaryServer {
    pub addr: SocketAddr,
    /// Every log line the process wrote so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    child: Child,
    _log_reader: std::thread::JoinHandle<()>,
}

impl BinaryServer {
    /// Starts the binary on `data_dir` with the given environment, and
    /// waits for its start line.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let env: Vec<(&str, &OsStr)> = env
            .iter()
            .map(|(name, value)| (*name, OsStr::new(value)))
            .collect();
        Self::start_with_os_env(data_dir, &env)
    }

    /// Starts the binary like [`BinaryServer::start`], with environment
    /// values that need not be UTF-8.
    pub fn start_with_os_env(data_dir: &Path, env: &[(&str, &OsStr)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tenet-server"));
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("TENET_ADMIN_TOKEN")
            .env_remove("TENET_KEY_PEPPER")
            .env("RUST_LOG", "debug")
            .env("TENET_DRAIN_DELAY", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("binary starts");

        let stdout = child.stdout.take().expect("piped stdout");
        let (addresses, address) = mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&logs);
        let log_reader = std::thread::spawn(move || forward_logs(stdout, addresses, lines));
        let addr = address
            .recv_timeout(BINARY_TIMEOUT)
            .expect("the binary logs its start line");

        Self {
            addr,
            logs,
            child,
            _log_reader: log_reader,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM through `kill(1)`.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGINT, as Ctrl-C at a terminal does, through `kill(1)`.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Returns the exit status when the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waitable child")
    }

    /// Waits until a log line contains `text`, within [`BINARY_TIMEOUT`].
    pub fn wait_for_line(&self, text: &str) {
        let deadline = Instant::now() + BINARY_TIMEOUT;
        loop {
            let logged = self
                .logs
                .lock()
                .expect("log lines")
                .iter()
                .any(|line| line.contains(text));
            if logged {
                return;
            }
            assert!(Instant::now() < deadline, "no log line contains {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit, within [`BINARY_TIMEOUT`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BINARY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable child") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and asserts a clean exit.
    pub fn stop(mut self) {
        self.terminate();
        let status = self.wait();
        assert_eq!(status.code(), Some(0), "exit status {status}");
    }

    /// Asserts that no log line so far contains `secret`.
    pub fn assert_logs_exclude(&self, secret: &str) {
        let logs = self.logs.lock().expect("log lines");
        assert!(!logs.is_empty(), "the server logged nothing");
        for line in logs.iter() {
            assert!(
                !line.contains(secret),
                "a log line contains a secret: {line}"
            );
        }
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads JSON log lines, sends the address of the start line, and keeps
/// and echoes every line.
fn forward_logs(
    stdout: ChildStdout,
    addresses: mpsc::Sender<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        println!("server: {line}");
        lines.lock().expect("log lines").push(line.clone());
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event["message"] == "tenet-server started"
            && let Some(addr) = event["address"].as_str().and_then(|a| a.parse().ok())
        {
            let _ = addresses.send(addr);
        }
    }
}

const DATABASE_VARIABLE: &str = "TENET_TEST_DATABASE_URL";

/// A fresh Postgres schema for one test.
pub struct TestSchema {
    pub database_url: String,
    pub name: String,
}

impl TestSchema {
    /// Creates the schema, or returns `None` to skip the test when
    /// `TENET_TEST_DATABASE_URL` is not set.
    ///
    /// # Panics
    ///
    /// When the variable is missing and `CI=true`.
    pub async fn create() -> Option<Self> {
        let Some(database_url) = env::var(DATABASE_VARIABLE)
            .ok()
            .filter(|url| !url.is_empty())
        else {
            assert_ne!(
                env::var("CI").as_deref(),
                Ok("true"),
                "{DATABASE_VARIABLE} must be set when CI=true"
            );
            eprintln!("note: skipping a Postgres test; set {DATABASE_VARIABLE}");
            return None;
        };
        let name = format!("tenet_api_{}", Uuid::now_v7().simple());
        connect(&database_url)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("test schema created");
        Some(Self { database_url, name })
    }

    /// Runs `sql` on the test database, outside the server's connections.
    pub async fn execute(&self, sql: &str) {
        connect(&self.database_url)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
}

impl Drop for TestSchema {
    /// Drops the schema, also after a failed test. The drop runs on a
    /// runtime of its own, because the test's runtime may be shutting down.
    fn drop(&mut self) {
        let database_url = self.database_url.clone();
        let statement = format!("DROP SCHEMA {} CASCADE", self.name);
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                connect(&database_url)
                    .await
                    .batch_execute(&statement)
                    .await
                    .expect("test schema dropped");
            });
        });
        if cleanup.join().is_err() && !std::thread::panicking() {
            panic!("dropping the test schema {} failed", self.name);
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {DATABASE_VARIABLE}: {err}"));
    tokio::spawn(connection);
    client
}

/// Connects to `addr` and sends the head of a `POST /tenants` that
/// promises 100 bytes of body, and one byte of it. The request stays in
/// flight until the server times out the body or the connection closes.
pub async fn stalled_request(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;

    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let head = format!(
        "POST /tenants HTTP/1.1\r\nHost: tenet\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("request head sent");
    stream
}
