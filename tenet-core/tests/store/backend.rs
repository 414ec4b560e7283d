//! The backends the suite runs against, each opened fresh per test.

use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;
use tenet_core::{MemoryStore, PostgresStore, SqliteStore, Store};

use crate::database::TestSchema;

/// A store opened for one test, with what it needs to stay alive and to
/// be opened again.
pub struct TestStore {
    // Declared first so that it drops before the directory or schema.
    store: Arc<dyn Store>,
    location: Location,
}

enum Location {
    Memory,
    Sqlite { path: PathBuf, _dir: TempDir },
    Postgres(TestSchema),
}

impl TestStore {
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Opens a second, independent handle on the same data: a new SQLite
    /// connection to the file, or a new Postgres pool on the schema.
    ///
    /// # Panics
    ///
    /// Panics for the memory store, whose data lives in its one handle.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.location {
            Location::Memory => panic!("a memory store cannot be reopened"),
            Location::Sqlite { path, .. } => Arc::new(
                SqliteStore::open(path)
                    .await
                    .expect("the SQLite file opens again"),
            ),
            Location::Postgres(schema) => Arc::new(schema.migrated_store().await),
        }
    }
}

pub async fn memory() -> Option<TestStore> {
    Some(TestStore {
        store: Arc::new(MemoryStore::new()),
        location: Location::Memory,
    })
}

pub async fn sqlite() -> Option<TestStore> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tenet.sqlite3");
    let store = SqliteStore::open(&path).await.expect("SQLite store opens");
    Some(TestStore {
        store: Arc::new(store),
        location: Location::Sqlite { path, _dir: dir },
    })
}

/// Opens a migrated store in a fresh schema, or returns `None` when the
/// Postgres tests are skipped.
pub async fn postgres() -> Option<TestStore> {
    let schema = TestSchema::create().await?;
    let store: PostgresStore = schema.migrated_store().await;
    Some(TestStore {
        store: Arc::new(store),
        location: Location::Postgres(schema),
    })
}
