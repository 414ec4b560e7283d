//! The bb8 connection manager: session setup, a statement cache per
//! connection, and the last connection error for timeout messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bb8::{ErrorSink, ManageConnection};
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::errors::{Redactor, is_connection_lost};

/// A pooled connection with the statements it has prepared.
///
/// A prepared statement belongs to one server session, so the cache lives
/// and dies with the connection.
///
/// The pool does not ping a connection before handing it out, so the
/// connection tracks whether it can be used again. [`Manager::has_broken`]
/// drops it when a call lost the connection, when a call's future was
/// dropped before it finished (such as at a timeout), or when the driver
/// has seen the server close it.
pub(super) struct Connection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    state: State,
}

/// Whether a [`Connection`] can go back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No call is running, and the last one left the session usable.
    Idle,
    /// A call started and has not finished. A connection still in this
    /// state when it returns to the pool was abandoned mid-call, so its
    /// session may still run a statement or hold a transaction open.
    Busy,
    /// A call failed because the connection was lost.
    Lost,
}

impl Connection {
    /// Returns whether the connection was lost: a call failed with a
    /// connection error, or the driver has seen the server close it. The
    /// check reads local state only and sends nothing.
    pub(super) fn is_lost(&self) -> bool {
        self.state == State::Lost || self.client.is_closed()
    }

    /// Returns the client for statements that the query methods do not
    /// cover, such as a transaction, and marks the connection busy. Unless
    /// [`Connection::release_client`] follows, the pool drops the
    /// connection when it comes back.
    pub(super) fn borrow_client(&mut self) -> &mut Client {
        self.state = State::Busy;
        &mut self.client
    }

    /// Marks a connection borrowed with [`Connection::borrow_client`] as
    /// usable again. Call it only after its last statement succeeded.
    pub(super) fn release_client(&mut self) {
        if self.state == State::Busy {
            self.state = State::Idle;
        }
    }

    /// Sends an empty query, the same check that bb8-postgres runs on
    /// checkout, and marks the connection lost when it fails for any reason.
    pub(super) async fn ping(&mut self) -> Result<(), tokio_postgres::Error> {
        let client = self.borrow_client();
        let result = client.simple_query("").await.map(|_| ());
        self.state = if result.is_ok() {
            State::Idle
        } else {
            State::Lost
        };
        result
    }

    /// Returns the prepared statement for `sql`, preparing it on first use.
    async fn prepare_cached(
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

    /// Records the outcome of a call that marked the connection busy.
    fn settle<T>(
        &mut self,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        self.state = match &result {
            Err(err) if is_connection_lost(err) => State::Lost,
            _ => State::Idle,
        };
        result
    }

    pub(super) async fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.state = State::Busy;
        let result = match self.prepare_cached(sql).await {
            Ok(statement) => self.client.query(&statement, params).await,
            Err(err) => Err(err),
        };
        self.settle(result)
    }

    pub(super) async fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        self.state = State::Busy;
        let result = match self.prepare_cached(sql).await {
            Ok(statement) => self.client.query_opt(&statement, params).await,
            Err(err) => Err(err),
        };
        self.settle(result)
    }

    pub(super) async fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        self.state = State::Busy;
        let result = match self.prepare_cached(sql).await {
            Ok(statement) => self.client.query_one(&statement, params).await,
            Err(err) => Err(err),
        };
        self.settle(result)
    }

    pub(super) async fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.state = State::Busy;
        let result = match self.prepare_cached(sql).await {
            Ok(statement) => self.client.execute(&statement, params).await,
            Err(err) => Err(err),
        };
        self.settle(result)
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
            state: State::Idle,
        })
    }

    async fn is_valid(&self, connection: &mut Connection) -> Result<(), tokio_postgres::Error> {
        self.inner.is_valid(&mut connection.client).await
    }

    /// Drops a connection that was lost or abandoned mid-call. The pool
    /// runs no check on checkout, so this is what keeps such a connection
    /// from being handed out again.
    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.state != State::Idle || self.inner.has_broken(&mut connection.client)
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
