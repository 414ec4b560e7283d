//! The Postgres test database: where it is, and a fresh schema per test.

use std::env;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use tenet_core::{PostgresOptions, PostgresStore};
use tokio::runtime::RuntimeFlavor;
use tokio_postgres::config::{Config, Host};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// Environment variable with the URL of a database the tests may create
/// and drop schemas in, such as `postgres://postgres@127.0.0.1:5432/test`.
pub const URL_VARIABLE: &str = "TENET_TEST_DATABASE_URL";

/// Returns the test database URL, or `None` when the Postgres tests should
/// be skipped.
///
/// # Panics
///
/// Panics when the variable is unset and `CI=true`, because CI must run
/// the Postgres tests rather than pass without them.
pub fn database_url() -> Option<String> {
    let decision = decide(env::var(URL_VARIABLE).ok(), env::var("CI").ok());
    match decision {
        Ok(Some(url)) => Some(url),
        Ok(None) => {
            print_skip_notice();
            None
        }
        Err(message) => panic!("{message}"),
    }
}

/// Decides from the URL and `CI` variables whether to run, skip or fail.
fn decide(url: Option<String>, ci: Option<String>) -> Result<Option<String>, String> {
    match url.filter(|url| !url.is_empty()) {
        Some(url) => Ok(Some(url)),
        None if ci.as_deref() == Some("true") => Err(format!(
            "{URL_VARIABLE} is missing, and CI=true requires the Postgres tests to run; \
             set it, for example to postgres://postgres@127.0.0.1:5432/test"
        )),
        None => Ok(None),
    }
}

/// Prints the skip notice once per test binary, on stderr directly, so
/// that the test harness's output capture does not hide it.
fn print_skip_notice() {
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping the Postgres tests because {URL_VARIABLE} is not set"
        );
    });
}

/// Connects a plain client for test setup and checks, outside the store.
pub async fn connect_client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {URL_VARIABLE}: {err}"));
    tokio::spawn(connection);
    client
}

/// A schema created for one test and dropped, with everything in it, when
/// the value is dropped, so that tests run in parallel and leave nothing
/// behind.
#[derive(Debug)]
pub struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    /// Creates an empty schema, or returns `None` when the Postgres tests
    /// are skipped.
    pub async fn create() -> Option<Self> {
        let url = database_url()?;
        let name = format!("tenet_test_{}", Uuid::now_v7().simple());
        connect_client(&url)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|err| panic!("cannot create schema {name}: {err}"));
        Some(Self { url, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns store options for this schema, with a pool small enough for
    /// many tests to share one server.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            pool_size: 4,
            schema: Some(self.name.clone()),
            ..PostgresOptions::default()
        }
    }

    /// Connects a store to this schema, without migrating.
    pub async fn connect(&self, options: PostgresOptions) -> PostgresStore {
        PostgresStore::connect(&self.url, options)
            .await
            .unwrap_or_else(|err| panic!("cannot connect a store to {}: {err}", self.name))
    }

    /// Connects a store to this schema, without migrating, whose
    /// connections carry the schema's name as `application_name`, so that a
    /// test can find exactly this store's backends in `pg_stat_activity`.
    pub async fn connect_named(&self, options: PostgresOptions) -> PostgresStore {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}application_name={}", self.url, self.name);
        PostgresStore::connect(&url, options)
            .await
            .unwrap_or_else(|err| panic!("cannot connect a store to {}: {err}", self.name))
    }

    /// Returns the address of the test database's server, for a proxy in
    /// front of it.
    pub async fn server_addr(&self) -> SocketAddr {
        let config: Config = self.url.parse().expect("test database URL parses");
        let Some(Host::Tcp(host)) = config.get_hosts().first() else {
            panic!("{URL_VARIABLE} must name a TCP host");
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap_or_else(|err| panic!("cannot resolve {host}:{port}: {err}"))
            .next()
            .unwrap_or_else(|| panic!("{host}:{port} resolves to no address"))
    }

    /// Connects a store to this schema through `proxy`, which forwards to
    /// [`TestSchema::server_addr`], without migrating.
    pub async fn connect_through(
        &self,
        proxy: SocketAddr,
        options: PostgresOptions,
    ) -> PostgresStore {
        let config: Config = self.url.parse().expect("test database URL parses");
        let user = config.get_user().unwrap_or("postgres");
        let database = config.get_dbname().unwrap_or(user);
        let password = config
            .get_password()
            .map(|password| format!(":{}", String::from_utf8_lossy(password)))
            .unwrap_or_default();
        let url = format!("postgres://{user}{password}@{proxy}/{database}");
        PostgresStore::connect(&url, options)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot connect a store to {} through {proxy}: {err}",
                    self.name
                )
            })
    }

    /// Connects a store to this schema and applies the migrations.
    pub async fn migrated_store(&self) -> PostgresStore {
        let store = self.connect(self.options()).await;
        store.migrate().await.expect("migrations apply");
        store
    }

    /// Connects a plain client whose `search_path` is this schema.
    pub async fn client(&self) -> Client {
        let client = connect_client(&self.url).await;
        client
            .batch_execute(&format!("SET search_path TO {}", self.name))
            .await
            .expect("search_path is set");
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down,
        // so the schema is dropped from a thread with a runtime of its own.
        let url = self.url.clone();
        let name = self.name.clone();
        let drop_schema = move || {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime builds");
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                    tokio::spawn(connection);
                    let statement =
                        format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE");
                    // A store's lookup that is still running when the test
                    // ends can take its locks in the other order, and
                    // Postgres then cancels the drop as a deadlock. The
                    // lookup ends soon after, so the drop is tried again.
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        match client.batch_execute(&statement).await {
                            Err(err)
                                if attempts < 5
                                    && err.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) =>
                            {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            result => return result,
                        }
                    }
                })
            })
            .join()
        };

        // While this thread waits, the test runtime must keep driving the
        // store's connections, which may still have to send a ROLLBACK that
        // releases their locks. `block_in_place` hands this worker's tasks
        // to another thread; a current-thread runtime cannot do that.
        let in_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
        let dropped = if in_multi_thread_runtime {
            tokio::task::block_in_place(drop_schema)
        } else {
            drop_schema()
        };

        if !matches!(dropped, Ok(Ok(()))) {
            let message = format!("cannot drop test schema {}: {dropped:?}", self.name);
            if std::thread::panicking() {
                let _ = writeln!(std::io::stderr(), "warning: {message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

mod tests {
    use super::*;

    #[test]
    fn set_url_is_used() {
        let url = "postgres://postgres@127.0.0.1:5432/test".to_owned();

        let decision = decide(Some(url.clone()), Some("true".to_owned()));

        assert_eq!(decision, Ok(Some(url)));
    }

    #[test]
    fn missing_url_skips_outside_ci() {
        assert_eq!(decide(None, None), Ok(None));
        assert_eq!(
            decide(Some(String::new()), Some("false".to_owned())),
            Ok(None)
        );
    }

    #[test]
    fn missing_url_fails_under_ci() {
        let decision = decide(None, Some("true".to_owned()));

        let message = decision.expect_err("CI without a URL must fail");
        assert!(message.contains(URL_VARIABLE), "{message}");
        assert!(message.contains("missing"), "{message}");
    }
}
