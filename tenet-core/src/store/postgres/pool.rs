//! The bb8 connection manager: session setup, a statement cache per
//! connection, and the last connection error for timeout messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bb8::{ErrorSink, ManageConnection};
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::errors::Redactor;

/// A pooled connection with the statements it has prepared.
///
/// A prepared statement belongs to one server session, so the cache lives
/// and dies with the connection.
pub(super) struct Connection {
    pub(super) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Connection {
    /// Returns the prepared statement for `sql`, preparing it on first use.
    pub(super) async fn prepare_cached(
        &mut self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(super) async fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.client.query(&statement, params).await
    }

    pub(super) async fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub(super) async fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.client.query_one(&statement, params).await
    }

    pub(super) async fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.client.execute(&statement, params).await
    }
}

/// The most recent failure to open or check a connection, redacted.
///
/// bb8 retries failed connects until its timeout and then reports only
/// "timed out"; this keeps the reason for that timeout's message.
#[derive(Debug, Clone, Default)]
pub(super) struct LastConnectError(Arc<Mutex<Option<String>>>);

impl LastConnectError {
    pub(super) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, text: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = text;
    }
}

/// Opens connections through bb8-postgres and runs the session setup
/// (`statement_timeout`, `search_path`) on each before the pool hands it
/// out.
#[derive(Debug)]
pub(super) struct Manager {
    inner: PostgresConnectionManager<NoTls>,
    session_setup: String,
    last_error: LastConnectError,
}

impl Manager {
    pub(super) fn new(
        config: tokio_postgres::Config,
        session_setup: String,
        last_error: LastConnectError,
    ) -> Self {
        Self {
            inner: PostgresConnectionManager::new(config, NoTls),
            session_setup,
            last_error,
        }
    }
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Connection, tokio_postgres::Error> {
        let client = self.inner.connect().await?;
        client.batch_execute(&self.session_setup).await?;
        self.last_error.set(None);
        Ok(Connection {
            client,
            statements: HashMap::new(),
        })
    }

    async fn is_valid(&self, connection: &mut Connection) -> Result<(), tokio_postgres::Error> {
        self.inner.is_valid(&mut connection.client).await
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        self.inner.has_broken(&mut connection.client)
    }
}

/// Receives the errors of connects and connection checks that bb8 retries
/// on its own, logs them at debug level and keeps the last one.
#[derive(Debug, Clone)]
pub(super) struct ConnectErrorSink {
    pub(super) last_error: LastConnectError,
    pub(super) redactor: Redactor,
}

impl ErrorSink<tokio_postgres::Error> for ConnectErrorSink {
    fn sink(&self, err: tokio_postgres::Error) {
        let text = self.redactor.describe(&err);
        tracing::debug!(error = %text, "Postgres connection attempt failed");
        self.last_error.set(Some(text));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<tokio_postgres::Error>> {
        Box::new(self.clone())
    }
}
