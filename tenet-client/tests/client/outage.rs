//! A real 503: the server's Postgres goes away behind a TCP proxy that
//! the test controls, and the server returns `store_unavailable`.
//!
//! These tests need `TENET_TEST_DATABASE_URL`. Without it they are skipped
//! with a notice, unless `CI=true`, which makes them fail instead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tenet_client::Client;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{ADMIN_TOKEN, TestServer, fast_retries};
use crate::retries::Captured;

const DATABASE_VARIABLE: &str = "TENET_TEST_DATABASE_URL";

/// A TCP proxy in front of Postgres that passes traffic, or closes every
/// open and new connection while `passing` is false.
struct Proxy {
    addr: SocketAddr,
    passing: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("free port");
        let addr = listener.local_addr().expect("bound address");
        let (passing, watcher) = watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, watcher.clone()));
            }
        });
        Self {
            addr,
            passing,
            task,
        }
    }

    fn set_passing(&self, passing: bool) {
        self.passing.send_replace(passing);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut passing: watch::Receiver<bool>) {
    if !*passing.borrow_and_update() {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = passing.wait_for(|passing| !passing) => {}
    }
}

/// A server on its own Postgres schema, reached through a [`Proxy`]. The
/// schema is dropped when the test calls [`Outage::finish`].
struct Outage {
    server: TestServer,
    proxy: Proxy,
    database_url: String,
    schema: String,
}

impl Outage {
    /// Returns `None`, after a notice, when Postgres is not configured.
    async fn start() -> Option<Self> {
        let Ok(database_url) = std::env::var(DATABASE_VARIABLE) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{DATABASE_VARIABLE} must be set: CI=true requires the Postgres tests"
            );
            eprintln!("skipped: set {DATABASE_VARIABLE} to run the Postgres outage tests");
            return None;
        };

        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "tenet_client_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        execute(&database_url, &format!("CREATE SCHEMA {schema}")).await;

        let config: tokio_postgres::Config = database_url.parse().expect("valid database URL");
        let upstream = postgres_address(&config).await;
        let proxy = Proxy::start(upstream).await;
        let proxied_url = format!(
            "postgres://{}@{}/{}",
            config.get_user().unwrap_or("postgres"),
            proxy.addr,
            config.get_dbname().unwrap_or("postgres"),
        );
        let server = TestServer::start_with(&[
            "--database-url",
            &proxied_url,
            "--database-schema",
            &schema,
            "--database-connect-timeout-ms",
            "300",
        ])
        .await;

        Some(Self {
            server,
            proxy,
            database_url,
            schema,
        })
    }

    async fn finish(self) {
        self.server.stop().await;
        drop(self.proxy);
        execute(
            &self.database_url,
            &format!("DROP SCHEMA {} CASCADE", self.schema),
        )
        .await;
    }
}

async fn execute(database_url: &str, statement: &str) {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("Postgres at TENET_TEST_DATABASE_URL accepts connections");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(statement)
        .await
        .expect("statement succeeds");
    drop(client);
    let _ = connection.await;
}

async fn postgres_address(config: &tokio_postgres::Config) -> SocketAddr {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("Postgres host resolves")
        .next()
        .expect("Postgres host has an address")
}

#[tokio::test]
async fn store_outage_is_unavailable() {
    let Some(outage) = Outage::start().await else {
        return;
    };
    let client = Client::builder(&outage.server.url())
        .credential(ADMIN_TOKEN)
        .max_attempts(1)
        .build()
        .expect("valid client");
    client.list_tenants().await.expect("store up");

    outage.proxy.set_passing(false);
    let listed = client.list_tenants().await;
    let ready = client.ready().await;
    outage.finish().await;

    let error = listed.expect_err("store down");
    assert!(error.is_unavailable(), "{error}");
    assert_eq!(error.code(), Some("store_unavailable"));
    assert_eq!(error.status().map(|status| status.as_u16()), Some(503));
    let error = ready.expect_err("not ready");
    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn get_retries_through_a_store_outage() {
    let Some(outage) = Outage::start().await else {
        return;
    };
    let logs = Captured::default();
    let guard = logs.install();
    let client = Client::builder(&outage.server.url())
        .credential(ADMIN_TOKEN)
        .retry_policy(fast_retries(40))
        .build()
        .expect("valid client");
    outage.proxy.set_passing(false);

    let passing = outage.proxy.passing.clone();
    let restore = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        passing.send_replace(true);
    });
    let listed = client.list_tenants().await;
    restore.await.expect("restore task");
    drop(guard);
    outage.finish().await;

    assert!(listed.is_ok(), "{listed:?}");
    let retries = logs.retry_lines();
    assert!(!retries.is_empty(), "{}", logs.text());
    assert!(
        retries[0].contains("503 store_unavailable"),
        "{}",
        retries[0]
    );
    assert!(!logs.text().contains(ADMIN_TOKEN));
}
