//! Several `tenet-server` processes sharing the test Postgres and Redis,
//! each reaching them through its own [`proxy::Proxy`] so that a test can
//! fault one replica's link.
//!
//! Every cluster gets a fresh Postgres schema and Redis key prefix, removed
//! when it is dropped, so that nothing is left behind. These tests assert
//! time bounds, so they are a test binary of their own: cargo runs test
//! binaries one after another, and no other test competes with them for
//! the cores.

mod agreement;
mod faults;
mod lifecycle;
// The API tests' server helpers; this binary uses only some of them.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod limits;
mod proxy;
mod startup;

use std::env;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use tenet_core::api::{IssuedKeyResponse, TenantResponse};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Admin, BinaryServer};
use proxy::Proxy;

const DATABASE_VARIABLE: &str = "TENET_TEST_DATABASE_URL";
const REDIS_VARIABLE: &str = "TENET_TEST_REDIS_URL";
const PEPPER: &str = "cluster-test-pepper-0123456789abcdefghijklmnop";

/// The time a replica waits for a Postgres connection before responding
/// with 503. It is short, so that fault tests finish quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The Redis timeout the replicas run with (the server's default).
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// The test Postgres and Redis.
struct Backends {
    database_url: String,
    redis_url: String,
}

/// Returns the backends, or `None` to skip when they are not configured.
///
/// # Panics
///
/// When a variable is missing and `CI=true`: CI must run these tests.
fn backends() -> Option<Backends> {
    let database_url = env::var(DATABASE_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty());
    let redis_url = env::var(REDIS_VARIABLE).ok().filter(|url| !url.is_empty());
    match (database_url, redis_url) {
        (Some(database_url), Some(redis_url)) => Some(Backends {
            database_url,
            redis_url,
        }),
        _ if env::var("CI").as_deref() == Ok("true") => panic!(
            "{DATABASE_VARIABLE} and {REDIS_VARIABLE} must both be set: CI=true requires \
             the replica tests to run against real Postgres and Redis"
        ),
        _ => {
            eprintln!(
                "note: skipping a replica test; set {DATABASE_VARIABLE} and {REDIS_VARIABLE}"
            );
            None
        }
    }
}

/// One replica: the server process and its links to the backends.
pub(crate) struct Replica {
    pub server: BinaryServer,
    pub postgres: Proxy,
    pub redis: Proxy,
    /// The Postgres `application_name` of this replica's connections.
    pub application_name: String,
    _data_dir: tempfile::TempDir,
}

/// Lets one cluster run at a time: their assertions are about time, and
/// several clusters at once starve each other of the test machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A running cluster of replicas.
pub(crate) struct Cluster {
    pub replicas: Vec<Replica>,
    pub client: reqwest::Client,
    database_url: String,
    redis_url: String,
    schema: String,
    prefix: String,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `count` replicas with extra environment variables, or
    /// returns `None` when the backends are not configured.
    pub async fn start(count: usize, extra_env: &[(&str, &str)]) -> Option<Self> {
        let backends = backends()?;
        let turn = ONE_AT_A_TIME.lock().await;
        let id = Uuid::now_v7().simple().to_string();
        let schema = format!("tenet_cluster_{id}");
        let prefix = format!("tenet-test:{id}:");
        let admin = connect(&backends.database_url).await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("test schema created");

        let postgres_upstream = postgres_address(&backends.database_url).await;
        let redis_upstream = redis_address(&backends.redis_url).await;
        let mut cluster = Self {
            replicas: Vec::with_capacity(count),
            // Below the server's idle timeout, so the client never reuses a
            // connection that the server is closing.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            database_url: backends.database_url,
            redis_url: backends.redis_url,
            schema,
            prefix,
            _turn: turn,
        };

        for index in 0..count {
            let postgres = Proxy::start(postgres_upstream).await;
            let redis = Proxy::start(redis_upstream).await;
            let application_name = format!("tenet_test_{id}_{index}");
            let database_url = cluster.proxied_database_url(postgres.addr, &application_name);
            let redis_url = format!("redis://{}/", redis.addr);
            let connect_timeout = CONNECT_TIMEOUT.as_millis().to_string();
            let mut env = vec![
                ("TENET_DATABASE_URL", database_url.as_str()),
                ("TENET_DATABASE_SCHEMA", cluster.schema.as_str()),
                (
                    "TENET_DATABASE_CONNECT_TIMEOUT_MS",
                    connect_timeout.as_str(),
                ),
                ("TENET_REDIS_URL", redis_url.as_str()),
                ("TENET_REDIS_KEY_PREFIX", cluster.prefix.as_str()),
                ("TENET_ADMIN_TOKEN", ADMIN_TOKEN),
                ("TENET_KEY_PEPPER", PEPPER),
                ("RUST_LOG", "info"),
            ];
            env.extend_from_slice(extra_env);

            let data_dir = tempfile::tempdir().expect("temporary data directory");
            let server = BinaryServer::start(data_dir.path(), &env);
            cluster.replicas.push(Replica {
                server,
                postgres,
                redis,
                application_name,
                _data_dir: data_dir,
            });
        }
        Some(cluster)
    }

    /// Returns the management API of replica `index`.
    pub fn admin(&self, index: usize) -> Admin<'_> {
        Admin {
            client: &self.client,
            base: format!("http://{}", self.replicas[index].server.addr),
            token: ADMIN_TOKEN.to_owned(),
        }
    }

    /// Creates a tenant through replica `index`.
    pub async fn tenant(&self, index: usize) -> TenantResponse {
        self.admin(index).create_tenant("Acme").await
    }

    /// Issues a key through replica `index`.
    pub async fn issue(&self, index: usize, tenant: &TenantResponse) -> IssuedKeyResponse {
        self.admin(index).issue_key(tenant).await
    }

    /// Issues a key through replica `index` and returns the response
    /// status, whatever it is.
    pub async fn try_issue(&self, index: usize, tenant: &TenantResponse) -> StatusCode {
        let admin = self.admin(index);
        self.client
            .post(format!("{}/tenants/{}/keys", admin.base, tenant.id))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST /tenants/{}/keys failed: {err}", tenant.id))
            .status()
    }

    /// Calls `/protected` on replica `index` with `key`.
    pub async fn protected(&self, index: usize, key: &str) -> StatusCode {
        self.try_protected(index, key)
            .await
            .unwrap_or_else(|err| panic!("GET /protected on replica {index} failed: {err}"))
    }

    /// Calls `/protected`, returning transport errors instead of failing.
    pub async fn try_protected(&self, index: usize, key: &str) -> reqwest::Result<StatusCode> {
        let response = self
            .client
            .get(self.replicas[index].server.url("/protected"))
            .header("X-API-Key", key)
            .send()
            .await?;
        Ok(response.status())
    }

    /// Closes every Postgres connection of replica `index` from the server
    /// side, as a failover or an operator's `pg_terminate_backend` would,
    /// waits up to 5 s for each backend to exit, and returns how many
    /// exited.
    pub async fn terminate_connections(&self, index: usize) -> i64 {
        let client = connect(&self.database_url).await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
                 FROM pg_stat_activity WHERE application_name = $1",
                &[&self.replicas[index].application_name],
            )
            .await
            .expect("terminate the replica's connections");
        row.get(0)
    }

    fn proxied_database_url(&self, proxy: SocketAddr, application_name: &str) -> String {
        let config: tokio_postgres::Config = self
            .database_url
            .parse()
            .expect("valid TENET_TEST_DATABASE_URL");
        let user = config.get_user().unwrap_or("postgres");
        let database = config.get_dbname().unwrap_or(user);
        let password = config
            .get_password()
            .map(|password| format!(":{}", String::from_utf8_lossy(password)))
            .unwrap_or_default();
        format!(
            "postgres://{user}{password}@{proxy}/{database}?application_name={application_name}"
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop the replicas before removing what they use.
        self.replicas.clear();
        let database_url = self.database_url.clone();
        let redis_url = self.redis_url.clone();
        let schema = self.schema.clone();
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(remove_backend_state(
                &database_url,
                &redis_url,
                &schema,
                &prefix,
            ));
        });
        if cleanup.join().is_err() && !std::thread::panicking() {
            panic!(
                "removing the cluster's schema {} or Redis keys failed",
                self.schema
            );
        }
    }
}

async fn remove_backend_state(database_url: &str, redis_url: &str, schema: &str, prefix: &str) {
    let client = connect(database_url).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("test schema dropped");

    let redis = redis::Client::open(redis_url).expect("valid Redis URL");
    let mut connection = redis
        .get_multiplexed_async_connection()
        .await
        .expect("Redis connection for cleanup");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .expect("DEL");
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {DATABASE_VARIABLE}: {err}"));
    tokio::spawn(connection);
    client
}

async fn postgres_address(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("valid TENET_TEST_DATABASE_URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    resolve(&host, port).await
}

async fn redis_address(url: &str) -> SocketAddr {
    let client = redis::Client::open(url).expect("valid TENET_TEST_REDIS_URL");
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => resolve(host, *port).await,
        other => panic!("the replica tests need Redis over TCP, not {other:?}"),
    }
}

async fn resolve(host: &str, port: u16) -> SocketAddr {
    tokio::net::lookup_host((host, port))
        .await
        .expect("backend host resolves")
        .next()
        .expect("backend host has an address")
}
