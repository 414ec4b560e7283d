//! The HTTP server of Tenet: tenants and API keys for SaaS backends.
//!
//! A thin hyper 1 server over [`tenet_core`], which contains all the logic.
//! It speaks HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on one port, and
//! keeps its data in one SQLite file in the data directory.
//!
//! ```no_run
//! # async fn run() -> Result<(), tenet_server::Error> {
//! use clap::Parser;
//! use tenet_server::{App, Config};
//!
//! let config = Config::parse_from(["tenet-server", "--listen", "127.0.0.1:0"]);
//! let app = App::build(config).await?;
//! println!("listening on {}", app.local_addr());
//! app.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`config`]: flags and environment variables;
//! - [`setup`]: checked settings, the data directory, store, pepper, admin
//!   token and the shared [`setup::State`];
//! - [`data_dir`]: the lock that keeps a second server off a SQLite data
//!   directory;
//! - [`server`]: the accept loop, connection limits and graceful shutdown;
//! - [`flush`]: periodic writes of usage counts and `last_used_at`;
//! - [`lifecycle`]: signals, the drain delay and readiness during shutdown;
//! - [`service`]: one request: routing, the request id, panic safety,
//!   request metrics and the request log line;
//! - [`request_id`]: the `X-Request-Id` of each request;
//! - [`metrics`]: the Prometheus metrics of `/metrics`;
//! - [`routes`]: the router and one module per resource;
//! - [`auth`]: the admin token check and API-key extraction;
//! - [`limiting`]: rate limits, monthly quotas and the limit of failed
//!   authentications, in Redis or in process;
//! - [`body`]: JSON request bodies within the size limit;
//! - [`response`]: JSON responses;
//! - [`error`]: the crate's one error type and its HTTP mapping;
//! - [`secret_file`]: the generated pepper and admin token files;
//! - [`logging`]: the tracing subscriber.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

pub mod auth;
pub mod body;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod flush;
pub mod forwarded;
pub mod lifecycle;
pub mod limiting;
pub mod logging;
pub mod metrics;
pub mod request_id;
pub mod response;
pub mod routes;
pub mod secret_file;
pub mod server;
pub mod service;
pub mod setup;

pub use config::{Config, LogFormat};
pub use error::Error;

/// Applies pending Postgres migrations and returns; the `migrate`
/// subcommand, for a deployment job that runs before the replicas start.
pub async fn migrate(config: &Config) -> Result<(), Error> {
    let store = setup::connect_postgres(config)
        .await?
        .ok_or(Error::Missing {
            setting: "--database-url (TENET_DATABASE_URL)",
            reason: "`migrate` applies Postgres migrations; the embedded SQLite store \
                 migrates itself when it opens",
        })?;
    setup::migrate_postgres(&store).await
}

/// A server that is set up and bound, ready to serve.
#[derive(Debug)]
pub struct App {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The `--metrics-listen` listener and its address.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    state: Arc<setup::State>,
    store_kind: setup::StoreKind,
    /// The lock on the SQLite data directory, held until the server stops.
    _data_dir_lock: Option<data_dir::DataDirLock>,
}

impl App {
    /// Checks the settings and the secret files in the data directory,
    /// binds the listening sockets, locks the data directory, opens the
    /// store, and resolves the pepper and the admin token.
    ///
    /// The steps run in this order so that a start that fails on a setting,
    /// a secret file or a port in use has written no file. Port 0 binds a
    /// free port; [`App::local_addr`] and [`App::metrics_addr`] return the
    /// bound addresses.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let mut settings = setup::Settings::check(&config)?;
        settings.read_secret_files(&config)?;
        let store_kind = settings.store_kind();

        let (listener, local_addr) = bind(config.setting_name("listen"), config.listen).await?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(bind(config.setting_name("metrics_listen"), address).await?),
            None => None,
        };

        let data_dir_lock = setup::lock_data_dir(&config, store_kind)?;
        let state = setup::build_state(&config, settings).await?;

        Ok(Self {
            config,
            listener,
            local_addr,
            metrics_listener,
            state: Arc::new(state),
            store_kind,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// Returns the address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the `--metrics-listen` address, when one is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, address)| *address)
    }

    /// Serves until SIGINT or SIGTERM, then shuts down.
    ///
    /// SIGTERM makes `/readyz` return 503 at once, and the server keeps
    /// serving for `--drain-delay` before it stops accepting; SIGINT stops
    /// accepting at once. Either way in-flight requests then get up to
    /// `--shutdown-timeout` to finish. The signal handlers are installed
    /// before this returns its future, so that no signal is missed. Call it
    /// inside a tokio runtime, which the handlers need.
    ///
    /// A further signal after the server stopped accepting closes the
    /// connections that still have requests in flight, without waiting
    /// for the shutdown timeout. Usage counts are written either way, and
    /// an error means they could not be (see [`App::run_until`]).
    pub fn run_until_signal(self) -> impl Future<Output = Result<(), Error>> {
        let signals = lifecycle::Signals::install();
        let state = Arc::clone(&self.state);
        let drain_delay = self.config.drain_delay();
        let (handover, handed_over) = oneshot::channel();
        let shutdown = async move {
            let signals =
                lifecycle::stop_after_signal(signals, &state.lifecycle, drain_delay).await;
            let _ = handover.send(signals);
        };
        let force = async move {
            match handed_over.await {
                Ok(signals) => lifecycle::force_after_signal(signals).await,
                Err(_dropped) => std::future::pending().await,
            }
        };
        self.run_until_forced(shutdown, force)
    }

    /// Serves until `shutdown` resolves, then stops accepting connections
    /// and lets in-flight requests finish within the shutdown timeout.
    /// `/readyz` returns 503 from the moment `shutdown` resolves.
    ///
    /// Last, it writes the usage counts and key uses still in memory, and
    /// returns [`Error::FinalWrite`] when the store fails that write for
    /// [`flush::FINAL_WRITE_RETRY_FOR`]: those counts are then lost.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.run_until_forced(shutdown, std::future::pending())
            .await
    }

    /// Serves like [`App::run_until`], and stops waiting for in-flight
    /// requests when `force` resolves during the shutdown.
    async fn run_until_forced(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        // Only SQLite keeps anything in the data directory.
        let data_dir = (self.store_kind == setup::StoreKind::Sqlite)
            .then(|| tracing::field::display(self.config.data_dir.display()));
        tracing::info!(
            address = %self.local_addr,
            metrics_address = self.metrics_addr().map(tracing::field::display),
            store = self.store_kind.as_str(),
            data_dir,
            "tenet-server started"
        );

        // Both listeners stop together, when `shutdown` resolves.
        let (stop, stopped) = watch::channel(false);
        let trigger = async {
            shutdown.await;
            self.state.lifecycle.start_draining();
            stop.send_replace(true);
        };
        let flusher = flush::Flusher::spawn(
            self.state.tenet.clone(),
            self.config.usage_flush_interval(),
            self.config.key_use_flush_interval(),
        );
        let wait_for_stop = |mut stopped: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        // Both listeners' drains end together too, when `force` resolves.
        // Its sender outlives the listeners, so a closed channel never ends
        // their wait.
        let (force_all, forced) = watch::channel(false);
        let wait_for_force = |mut forced: watch::Receiver<bool>| async move {
            if forced.wait_for(|force| *force).await.is_err() {
                std::future::pending::<()>().await;
            }
        };

        let main = server::serve(
            self.listener,
            service::Surface::Main,
            Arc::clone(&self.state),
            &self.config,
            wait_for_stop(stopped.clone()),
            wait_for_force(forced.clone()),
        );
        let metrics = async {
            if let Some((listener, _)) = self.metrics_listener {
                server::serve(
                    listener,
                    service::Surface::Metrics,
                    Arc::clone(&self.state),
                    &self.config,
                    wait_for_stop(stopped.clone()),
                    wait_for_force(forced.clone()),
                )
                .await;
            }
        };
        let serving = async {
            tokio::join!(trigger, main, metrics);
        };
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            () = &mut serving => {}
            () = force => {
                force_all.send_replace(true);
                serving.await;
            }
        }

        // No request is running any more, so this write includes every count.
        let written = flusher.finish().await;

        tracing::info!(address = %self.local_addr, "tenet-server stopped");
        written
    }
}

/// Binds a listening socket and returns it with its bound address.
/// `setting` names the flag that set `address`, for the error message.
async fn bind(setting: String, address: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        setting: setting.clone(),
        address,
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
