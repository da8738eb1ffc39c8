//! The SQLite database: one writer connection serialises writes, a small
//! pool serves reads. The store's other modules add methods to [`Store`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::error::{Result, StoreError};

/// How long a statement waits for a lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections (WAL readers do not block the writer).
const READERS: u32 = 4;

/// A write transaction.
pub(super) type WriteTx = Transaction<'static, Sqlite>;

/// The SQLite store.
#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    epoch: Arc<str>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        // One writer: SQLite takes one at a time anyway, and queueing in the
        // pool is cheaper than SQLITE_BUSY retries.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let epoch: String = sqlx::query_scalar("SELECT value FROM identity WHERE key = 'epoch'")
            .fetch_one(&write)
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            write,
            read,
            epoch: epoch.into(),
        })
    }

    /// The store's epoch: a random id made with the database (a restored
    /// copy keeps it; a new database has another).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Closes the connections (a copy of the files is consistent after this).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// The read pool.
    pub(super) fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// A write transaction on the one writer connection.
    pub(super) async fn begin(&self) -> Result<WriteTx> {
        Ok(self.write.begin().await?)
    }
}
