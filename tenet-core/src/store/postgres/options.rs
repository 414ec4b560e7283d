//! Settings of the Postgres connection pool.

use std::time::Duration;

use crate::error::{Error, Result};

/// Pool and session settings for [`super::PostgresStore`].
///
/// `PostgresOptions::default()` gives 16 connections, a 2 s connect
/// timeout, a 5 s statement timeout and the server's default `search_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Maximum number of open connections. Must be at least 1.
    pub pool_size: u32,

    /// Maximum time to wait for a connection, whether an idle one from the
    /// pool or a new one being opened. Also the TCP connect timeout, unless
    /// the URL sets `connect_timeout`. Must be greater than zero.
    pub connect_timeout: Duration,

    /// Server-side limit on each statement, set on every new connection
    /// with `SET statement_timeout`; rounded down to milliseconds, and zero
    /// disables it. A statement that hits it fails with
    /// [`Error::Unavailable`]. Migrations run without it.
    pub statement_timeout: Duration,

    /// Schema that contains Tenet's tables, set as the only entry of
    /// `search_path` on every connection. `None` keeps the server's default
    /// (usually `public`). The schema must exist:
    /// [`super::PostgresStore::connect`] fails with
    /// [`crate::Error::Config`], naming it, otherwise.
    pub schema: Option<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            schema: None,
        }
    }
}

impl PostgresOptions {
    /// Checks the values that the pool would otherwise reject with a panic.
    pub(super) fn validate(&self) -> Result<()> {
        if self.pool_size == 0 {
            return Err(Error::Config(
                "the Postgres pool size is 0; set it to at least 1".to_owned(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config(
                "the Postgres connect timeout is 0; set it to a positive duration".to_owned(),
            ));
        }
        if let Some(schema) = &self.schema {
            if schema.is_empty() || schema.contains('\0') {
                return Err(Error::Config(format!(
                    "the Postgres schema name {schema:?} is invalid; use a non-empty name \
                     without NUL characters"
                )));
            }
        }
        Ok(())
    }

    /// Returns the SQL that every new connection runs before its first use.
    pub(super) fn session_setup(&self) -> String {
        let millis = self.statement_timeout.as_millis();
        let mut sql = format!("SET statement_timeout = {millis}");
        if let Some(schema) = &self.schema {
            sql.push_str("; SET search_path TO ");
            sql.push_str(&quote_identifier(schema));
        }
        sql
    }
}

/// Quotes an SQL identifier, doubling any embedded double quote, so that
/// any schema name is used as written.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_setup_quotes_the_schema() {
        let options = PostgresOptions {
            statement_timeout: Duration::from_millis(1500),
            schema: Some("a\"b; DROP".to_owned()),
            ..PostgresOptions::default()
        };

        assert_eq!(
            options.session_setup(),
            "SET statement_timeout = 1500; SET search_path TO \"a\"\"b; DROP\""
        );
    }

    #[test]
    fn session_setup_keeps_default_search_path() {
        let options = PostgresOptions::default();

        assert_eq!(options.session_setup(), "SET statement_timeout = 5000");
    }

    #[test]
    fn validate_rejects_values_the_pool_cannot_use() {
        let cases = [
            PostgresOptions {
                pool_size: 0,
                ..PostgresOptions::default()
            },
            PostgresOptions {
                connect_timeout: Duration::ZERO,
                ..PostgresOptions::default()
            },
            PostgresOptions {
                schema: Some(String::new()),
                ..PostgresOptions::default()
            },
            PostgresOptions {
                schema: Some("a\0b".to_owned()),
                ..PostgresOptions::default()
            },
        ];

        for options in cases {
            assert!(
                matches!(options.validate(), Err(Error::Config(_))),
                "accepted {options:?}"
            );
        }
    }
}
