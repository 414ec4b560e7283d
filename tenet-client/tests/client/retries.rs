//! Retries of idempotent requests, and their debug logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenet_client::Client;
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::{ADMIN_TOKEN, TestServer, closed_port, fast_retries};

/// Log output of the current thread, captured in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures debug logs of this thread until the guard drops. Tests
    /// that use it run on tokio's default current-thread runtime, so every
    /// task they spawn logs here too.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    pub fn retry_lines(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains("retrying request"))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn get_succeeds_once_the_server_starts() {
    let logs = Captured::default();
    let _guard = logs.install();
    let addr = closed_port().await;
    let client = Client::builder(&format!("http://{addr}"))
        .credential(ADMIN_TOKEN)
        .retry_policy(fast_retries(40))
        .build()
        .expect("valid client");

    let late_server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        TestServer::start_on(addr, &[]).await
    });
    let listed = client.list_tenants().await;
    let server = late_server.await.expect("server task");

    let listed = listed.expect("succeeds after retries");
    assert!(listed.tenants.is_empty());
    let retries = logs.retry_lines();
    assert!(!retries.is_empty(), "{}", logs.text());
    assert!(retries[0].contains("attempt=1"), "{}", retries[0]);
    assert!(retries[0].contains("path=tenants"), "{}", retries[0]);
    assert!(retries[0].contains("refused"), "{}", retries[0]);
    assert!(!logs.text().contains(ADMIN_TOKEN));
    drop(server);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let logs = Captured::default();
    let _guard = logs.install();
    let addr = closed_port().await;
    let client = Client::builder(&format!("http://{addr}"))
        .credential(ADMIN_TOKEN)
        .retry_policy(fast_retries(3))
        .build()
        .expect("valid client");

    let error = client.list_tenants().await.expect_err("nothing listens");

    assert!(error.is_unavailable(), "{error}");
    let retries = logs.retry_lines();
    assert_eq!(retries.len(), 2, "{}", logs.text());
    assert!(retries[0].contains("attempt=1"), "{}", retries[0]);
    assert!(retries[1].contains("attempt=2"), "{}", retries[1]);
    assert!(retries[1].contains("max_attempts=3"), "{}", retries[1]);
    assert!(!logs.text().contains(ADMIN_TOKEN));
}

#[tokio::test]
async fn post_is_never_retried() {
    let logs = Captured::default();
    let _guard = logs.install();
    let addr = closed_port().await;
    let client = Client::builder(&format!("http://{addr}"))
        .credential(ADMIN_TOKEN)
        .retry_policy(fast_retries(5))
        .build()
        .expect("valid client");

    let error = client
        .create_tenant("Acme")
        .await
        .expect_err("nothing listens");

    assert!(error.is_unavailable(), "{error}");
    assert!(logs.retry_lines().is_empty(), "{}", logs.text());
}

#[tokio::test]
async fn timeout_is_not_retried() {
    let logs = Captured::default();
    let _guard = logs.install();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("free port");
    let addr = listener.local_addr().expect("bound address");
    let client = Client::builder(&format!("http://{addr}"))
        .timeout(Duration::from_millis(200))
        .retry_policy(fast_retries(5))
        .build()
        .expect("valid client");

    let error = client.health().await.expect_err("no answer");

    assert!(error.is_timeout(), "{error}");
    assert!(logs.retry_lines().is_empty(), "{}", logs.text());
    drop(listener);
}
