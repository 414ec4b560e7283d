//! The baseline server of `load.sh`, run as its binary: the hello world
//! and the key check of `--key-check`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use tenet_core::{MemoryStore, TenantName, Tenet};

/// A running `bare` binary, killed when dropped.
struct Bare {
    child: Child,
    address: String,
}

impl Bare {
    fn start(arguments: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bare"))
            .arg("127.0.0.1:0")
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bare starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("bare prints its address");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, address }
    }

    /// Sends one GET with `headers` and returns the status line and body.
    fn get(&self, headers: &str) -> (String, String) {
        let mut stream = TcpStream::connect(&self.address).expect("connects");
        write!(
            stream,
            "GET /protected HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n{headers}\r\n"
        )
        .expect("sends the request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reads");
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issues one key through an in-memory Tenet.
fn issued_key() -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tenet = Tenet::open(
            Arc::new(MemoryStore::new()),
            tenet_benches::fixture::pepper(),
        )
        .await
        .expect("opens");
        let name = TenantName::parse("Bench").expect("valid name");
        let tenant = tenet.create_tenant(name).await.expect("creates").id;
        let issued = tenet.issue_key(tenant, None).await.expect("issues");
        issued.api_key.expose_secret().to_owned()
    })
}

fn write_key_file(directory: &Path, text: &str) -> String {
    let path = directory.join("keys.txt");
    std::fs::write(&path, text).expect("writes the key file");
    path.to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn hello_world_answers_every_request() {
    let bare = Bare::start(&[]);

    let (status, body) = bare.get("");

    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "hello world\n");
}

#[test]
fn key_check_accepts_file_keys_only() {
    let key = issued_key();
    let directory = tempfile::tempdir().expect("temporary directory");
    let file = write_key_file(directory.path(), &format!("{key}\n"));
    let bare = Bare::start(&["--key-check", &file]);

    let (status, body) = bare.get(&format!("X-API-Key: {key}\r\n"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert!(
        body["tenant_id"].is_string() && body["key_id"].is_string(),
        "{body}"
    );

    let (status, _) = bare.get(&format!("X-API-Key: {}\r\n", issued_key()));
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let (status, _) = bare.get("");
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
}

#[test]
fn key_check_refuses_a_malformed_key_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let file = write_key_file(directory.path(), "not-a-key\n");

    let output = Command::new(env!("CARGO_BIN_EXE_bare"))
        .args(["127.0.0.1:0", "--key-check", &file])
        .output()
        .expect("bare runs");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds a malformed key"), "{stderr}");
}
