//! Test servers on 127.0.0.1 port 0 and client shortcuts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use tenet_client::{Client, RetryPolicy};
use tenet_core::api::{IssueKeyRequest, IssuedKeyResponse, TenantResponse};
use tenet_server::{App, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Admin token of every test server.
pub const ADMIN_TOKEN: &str = "client-test-admin-token-0123456789abcdefghij";

/// Key pepper of every test server.
const PEPPER: &str = "client-test-pepper-0123456789abcdefghijklmnopqrstu";

/// A real `tenet-server` running in this process with a temporary data
/// directory; it shuts down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tenet_server::Error>>>,
    _data_dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra command-line flags.
    pub async fn start_with(flags: &[&str]) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(any_port, flags).await
    }

    /// Starts a server on a given address, such as one a client already
    /// tries to reach.
    pub async fn start_on(addr: SocketAddr, flags: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut args = vec![
            "tenet-server".to_owned(),
            "--listen".to_owned(),
            addr.to_string(),
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
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));

        Self {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
            _data_dir: data_dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns a client that presents the admin token.
    pub fn admin(&self) -> Client {
        Client::new(&self.url(), ADMIN_TOKEN).expect("valid client")
    }

    /// Returns a client without a credential.
    pub fn anonymous(&self) -> Client {
        Client::builder(&self.url()).build().expect("valid client")
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task ends without panicking")
                .expect("usage counts and key uses written at shutdown");
        }
    }

    /// Creates a tenant and issues it a key with `scope`.
    pub async fn tenant_with_scoped_key(&self, scope: &str) -> (TenantResponse, IssuedKeyResponse) {
        let admin = self.admin();
        let tenant = admin.create_tenant("Acme").await.expect("tenant created");
        let issued = admin
            .issue_key(
                tenant.id,
                &IssueKeyRequest {
                    scopes: vec![scope.to_owned()],
                    ..IssueKeyRequest::default()
                },
            )
            .await
            .expect("key issued");
        (tenant, issued)
    }

    /// Creates a tenant and issues it a key.
    pub async fn tenant_with_key(&self) -> (TenantResponse, IssuedKeyResponse) {
        let admin = self.admin();
        let tenant = admin.create_tenant("Acme").await.expect("tenant created");
        let issued = admin
            .issue_key(tenant.id, &IssueKeyRequest::default())
            .await
            .expect("key issued");
        (tenant, issued)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Returns an address on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("free port");
    listener.local_addr().expect("bound address")
}

/// Retries quickly, so that retry tests stay short.
pub fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    }
}
