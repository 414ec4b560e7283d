//! A typed client of the Tenet HTTP API, a tower layer that verifies API
//! keys through it, and the `tenet` command-line tool.
//!
//! ```no_run
//! # async fn run() -> tenet_client::Result<()> {
//! use tenet_client::Client;
//! use tenet_core::api::IssueKeyRequest;
//!
//! let admin = Client::new("http://127.0.0.1:8080", "the-admin-token")?;
//! let tenant = admin.create_tenant("Acme").await?;
//! let issued = admin.issue_key(tenant.id, &IssueKeyRequest::default()).await?;
//!
//! let principal = admin.verify_key(&issued.api_key.as_str().into()).await?;
//! assert_eq!(principal.tenant_id, tenant.id);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`client`]: [`Client`], its builder, and the shared request path;
//! - [`routes`]: one method per route;
//! - [`error`]: the one [`Error`] type;
//! - [`retry`]: the retry policy of idempotent requests;
//! - [`credential`]: the admin token or API key, hidden from `Debug`;
//! - `layer` (feature `tower`): [`VerifyLayer`], which verifies the API key
//!   of each request of a tower service.
//!
//! Requests time out after [`DEFAULT_TIMEOUT`] unless the builder sets
//! another limit. GET, PUT and DELETE requests are retried up to 3 attempts
//! after a 503 or a failed connection; POST requests are never retried.

pub mod client;
pub mod credential;
pub mod error;
#[cfg(feature = "tower")]
pub mod layer;
pub mod principal;
pub mod retry;
pub mod routes;

pub use client::{Client, ClientBuilder, DEFAULT_TIMEOUT};
pub use credential::Credential;
pub use error::{Error, Result, ServerError};
#[cfg(feature = "tower")]
pub use layer::{VerifyLayer, VerifyService};
pub use principal::Principal;
pub use retry::RetryPolicy;
