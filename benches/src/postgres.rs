//! Scratch Postgres schemas for the benchmarks that need a database.

use tenet_core::{PostgresOptions, PostgresStore};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// Environment variable with the URL of a database the benchmarks may
/// create and drop schemas in, such as
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const DATABASE_URL_VARIABLE: &str = "TENET_TEST_DATABASE_URL";

/// Returns the benchmark database URL, or `None` when it is unset or
/// empty and the Postgres benchmarks are skipped.
pub fn database_url() -> Option<String> {
    std::env::var(DATABASE_URL_VARIABLE)
        .ok()
        .filter(|url| !url.is_empty())
}

/// A schema of its own for one benchmark run.
///
/// Call [`ScratchSchema::drop_schema`] when done; a run that panics before
/// that leaves a `tenet_bench_*` schema behind.
#[derive(Debug)]
pub struct ScratchSchema {
    client: Client,
    url: String,
    name: String,
}

impl ScratchSchema {
    /// Connects to `url` and creates an empty schema with a unique name.
    ///
    /// Must run inside a tokio runtime, which drives the connection.
    pub async fn create(url: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("warning: the scratch schema's Postgres connection failed: {err}");
            }
        });

        let name = format!("tenet_bench_{}", Uuid::now_v7().simple());
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await?;
        Ok(Self {
            client,
            url: url.to_owned(),
            name,
        })
    }

    /// Returns the schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens a [`PostgresStore`] on this schema with `pool_size`
    /// connections and applies the migrations.
    pub async fn store(&self, pool_size: u32) -> tenet_core::Result<PostgresStore> {
        let options = PostgresOptions {
            pool_size,
            schema: Some(self.name.clone()),
            ..PostgresOptions::default()
        };
        let store = PostgresStore::connect(&self.url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Drops the schema and everything in it.
    pub async fn drop_schema(self) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
    }
}
