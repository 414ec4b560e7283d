//! Command-line and environment configuration.
//!
//! Every flag has an environment fallback; a flag given on the command line
//! wins. The key pepper is read from `TENET_KEY_PEPPER` only, never from a
//! flag, so that it does not show in the process list.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Environment variable that contains the key pepper.
pub const PEPPER_ENV: &str = "TENET_KEY_PEPPER";

/// Smallest request head limit that hyper accepts for HTTP/1, in bytes.
pub const MIN_HEADER_BYTES: u64 = 8192;

/// Configuration of one `tenet-server` process.
///
/// `Debug` hides the admin token and the pepper.
#[derive(Clone, Parser)]
#[command(
    name = "tenet-server",
    version,
    about = "HTTP server for Tenet: tenants and API keys for SaaS backends.",
    long_about = "HTTP server for Tenet: tenants and API keys for SaaS backends.\n\n\
        The key pepper is read from the TENET_KEY_PEPPER environment variable \
        only. When it is unset, the server reads <data-dir>/pepper, or \
        generates that file on the first start."
)]
pub struct Config {
    /// Sets the address and port to listen on.
    #[arg(
        long,
        env = "TENET_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Sets the directory for the SQLite database, the generated pepper and
    /// the generated admin token; created with mode 0700 if missing.
    #[arg(
        long,
        env = "TENET_DATA_DIR",
        value_name = "DIR",
        default_value = "./tenet-data"
    )]
    pub data_dir: PathBuf,

    /// Sets the bearer token of the management API (at least 32 bytes).
    /// When unset, the server generates one on the first start and writes
    /// it to the file admin-token in the data directory.
    #[arg(
        long,
        env = "TENET_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Sets the log line format on standard output. The RUST_LOG
    /// environment variable sets the filter (default "info").
    #[arg(long, env = "TENET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Sets the largest accepted request body, in bytes; larger bodies get
    /// 413.
    #[arg(
        long,
        env = "TENET_MAX_BODY_BYTES",
        value_name = "BYTES",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u64).range(1..=1_073_741_824)
    )]
    pub max_body_bytes: u64,

    /// Sets the largest accepted HTTP/1 request head (request line and
    /// headers) and HTTP/2 header list, in bytes (at least 8192); larger
    /// heads get 431.
    #[arg(
        long,
        env = "TENET_MAX_HEADER_BYTES",
        value_name = "BYTES",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u64).range(MIN_HEADER_BYTES..=16_777_216)
    )]
    pub max_header_bytes: u64,

    /// Sets the maximum number of open client connections; further
    /// connections wait in the listen backlog.
    #[arg(
        long,
        env = "TENET_MAX_CONNECTIONS",
        value_name = "COUNT",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,

    /// Sets how long a client may take to send a request head, in seconds;
    /// the connection is closed after that.
    #[arg(
        long,
        env = "TENET_HEADER_READ_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_read_timeout: u64,

    /// Sets how long in-flight requests may take to finish after SIGINT or
    /// SIGTERM, in seconds; connections still open then are dropped.
    #[arg(
        long,
        env = "TENET_SHUTDOWN_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub shutdown_timeout: u64,

    /// The key pepper's text, from `TENET_KEY_PEPPER` (see
    /// [`Config::load`]); `None` reads or generates `<data-dir>/pepper`.
    #[arg(skip)]
    pub key_pepper: Option<String>,
}

/// Format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Parses the command line and the environment, and reads the pepper
    /// from `TENET_KEY_PEPPER`.
    ///
    /// Exits the process with clap's message and code 2 on an invalid flag,
    /// and with code 0 after `--help` or `--version`.
    pub fn load() -> Self {
        let mut config = Self::parse();
        config.key_pepper = std::env::var(PEPPER_ENV).ok();
        config
    }

    /// Returns the header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout)
    }

    /// Returns the shutdown drain timeout as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "Some(..)" } else { "None" };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("admin_token", &redacted(self.admin_token.is_some()))
            .field("log_format", &self.log_format)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("key_pepper", &redacted(self.key_pepper.is_some()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_definition_is_valid() {
        Config::command().debug_assert();
    }

    #[test]
    fn debug_hides_secrets() {
        let mut config =
            Config::parse_from(["tenet-server", "--admin-token", "secret-admin-token"]);
        config.key_pepper = Some("secret-pepper".to_owned());

        let debug = format!("{config:?}");

        assert!(!debug.contains("secret-admin-token"));
        assert!(!debug.contains("secret-pepper"));
    }
}
