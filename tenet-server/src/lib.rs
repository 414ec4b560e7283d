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
//! app.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`config`]: flags and environment variables;
//! - [`setup`]: the data directory, store, pepper, admin token and the
//!   shared [`setup::State`];
//! - [`server`]: the accept loop, connection limits and graceful shutdown;
//! - [`service`]: one request: routing, panic safety, the request log line;
//! - [`routes`]: the router and one module per resource;
//! - [`auth`]: the admin token check and API-key extraction;
//! - [`body`]: JSON request bodies within the size limit;
//! - [`response`]: JSON responses;
//! - [`error`]: the crate's one error type and its HTTP mapping;
//! - [`secret_file`]: the generated pepper and admin token files;
//! - [`logging`]: the tracing subscriber.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod logging;
pub mod response;
pub mod routes;
pub mod secret_file;
pub mod server;
pub mod service;
pub mod setup;

pub use config::{Config, LogFormat};
pub use error::Error;

/// A server that is set up and bound, ready to serve.
#[derive(Debug)]
pub struct App {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<setup::State>,
    store_kind: setup::StoreKind,
}

impl App {
    /// Prepares the data directory, opens the store, resolves the pepper
    /// and the admin token, and binds the listening socket.
    ///
    /// Port 0 binds a free port; [`App::local_addr`] returns it.
    pub async fn build(config: Config) -> Result<Self, Error> {
        let (state, store_kind) = setup::build_state(&config).await?;

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                address: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            address: config.listen,
            source,
        })?;

        Ok(Self {
            config,
            listener,
            local_addr,
            state: Arc::new(state),
            store_kind,
        })
    }

    /// Returns the address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting connections
    /// and lets in-flight requests finish within the shutdown timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            address = %self.local_addr,
            store = self.store_kind.as_str(),
            data_dir = %self.config.data_dir.display(),
            "tenet-server started"
        );

        server::serve(self.listener, self.state, &self.config, shutdown).await;

        tracing::info!(address = %self.local_addr, "tenet-server stopped");
    }
}
