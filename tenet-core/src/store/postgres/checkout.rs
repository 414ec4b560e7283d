//! Checking out pooled connections without a ping, and the second attempt
//! of a read whose connection was lost.

use bb8::PooledConnection;

use super::PostgresStore;
use super::pool::Manager;
use crate::error::Result;

impl PostgresStore {
    /// Checks out a connection, skipping idle ones that the driver has
    /// already seen closed, such as after `pg_terminate_backend` or a
    /// server restart. The check reads local state and sends nothing.
    pub(super) async fn checkout(&self) -> Result<PooledConnection<'_, Manager>> {
        // The pool drops each skipped connection, so after `pool_size`
        // skips it has room to open a new one.
        for _ in 0..self.options.pool_size {
            let connection = self
                .pool
                .get()
                .await
                .map_err(|err| self.checkout_error(err))?;
            if !connection.is_lost() {
                return Ok(connection);
            }
            tracing::debug!(
                target = %self.target,
                "dropping a Postgres connection that the server closed"
            );
        }
        self.pool
            .get()
            .await
            .map_err(|err| self.checkout_error(err))
    }

    /// Checks out a connection and pings it, skipping connections that fail
    /// the ping, for the retry of a read whose connection was lost.
    ///
    /// The ping costs a round trip but runs only after a lost connection,
    /// when the other idle connections may be closed too (after a server
    /// restart, say) without the driver having seen it yet.
    async fn live_connection(&self) -> Result<PooledConnection<'_, Manager>> {
        for _ in 0..self.options.pool_size {
            let mut connection = self.connection().await?;
            match connection.ping().await {
                Ok(()) => return Ok(connection),
                Err(err) => {
                    tracing::debug!(
                        target = %self.target,
                        error = %self.redactor.describe(&err),
                        "dropping a Postgres connection that failed a ping"
                    );
                }
            }
        }
        self.connection().await
    }

    /// Returns a connection for a second attempt when `first`, a read
    /// that is safe to repeat, failed because `connection` was lost.
    /// Returns `None` when the first attempt's result is final.
    ///
    /// Only reads may be repeated, because a write may have committed
    /// before its connection was lost. Each retry follows the loss of one
    /// connection, which the pool drops, so a Postgres restart logs at most
    /// one warning per pooled connection.
    pub(super) async fn retry_connection<T>(
        &self,
        connection: PooledConnection<'_, Manager>,
        first: &Result<T>,
    ) -> Result<Option<PooledConnection<'_, Manager>>> {
        let Err(err) = first else {
            return Ok(None);
        };
        if !connection.is_lost() {
            return Ok(None);
        }
        drop(connection);
        tracing::warn!(
            target = %self.target,
            error = %err,
            "retrying a Postgres read on another connection because its connection was lost"
        );
        self.live_connection().await.map(Some)
    }
}
