//! Why a store operation failed.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database failed, on one of the store's own SQLite connections.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A thread of the store's own SQLite connections is gone.
    #[error("database: {0}")]
    Native(String),
    /// Migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database file's directory could not be created.
    #[error("database directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Something a request refers to does not exist.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// The kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A value only one client may hold (a MAC, a system UUID) is another's.
    #[error("{what} {value} of client {id} is already used by client {other}")]
    AlreadyExists {
        /// What the value is, e.g. `hardware address`.
        what: &'static str,
        /// The value.
        value: String,
        /// The client written.
        id: String,
        /// The client holding it already.
        other: String,
    },
    /// Another process holds the database (a second configserver on one file).
    #[error(
        "database {path} is in use by another configserver (pid {holder}, lock file {lock}); one configserver per database"
    )]
    Locked {
        /// The database file.
        path: String,
        /// The lock file beside it.
        lock: String,
        /// The holder's pid as written in the lock file ("unknown" if unreadable).
        holder: String,
    },
    /// The lock file beside the database could not be used.
    #[error("database lock file {path}: {source}")]
    LockFile {
        /// The lock file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A value that must be unique is already taken (a depot's host key).
    #[error("{what} {id}: {message}")]
    Duplicate {
        /// The kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
        /// What is taken (never the secret itself).
        message: String,
    },
    /// A host id is another kind of host's: a client and a depot never
    /// share one (opsi keeps every host in one table).
    #[error("{what} {id}: the id is a {other}'s")]
    HostIdTaken {
        /// The kind of host written.
        what: &'static str,
        /// Its id.
        id: String,
        /// The kind of host that has the id.
        other: &'static str,
    },
    /// Stored data that no longer parses (edited by hand?).
    #[error("stored {what} {id:?} is invalid: {message}")]
    Corrupt {
        /// The kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
        /// What is wrong.
        message: String,
    },
}

impl StoreError {
    /// Whether SQLite was busy or locked, PostgreSQL unreachable, restarting
    /// or failing over, or no connection was free in time: a retry can
    /// succeed (callers answer UNAVAILABLE, never INTERNAL).
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                // Each engine's codes by its own rules: a PostgreSQL SQLSTATE
                // read as an SQLite code can look busy (42501, a missing
                // grant, is 0xA605: SQLITE_BUSY's low byte).
                if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // Connection exceptions (08…), shutdown and recovery
                    // (57P…), serialization and deadlock (40…).
                    ["08", "57P", "40"].iter().any(|p| pg.code().starts_with(p))
                } else if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their
                    // extended codes.
                    e.code()
                        .and_then(|code| code.parse::<i32>().ok())
                        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
                } else {
                    false
                }
            }
            StoreError::Db(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => true,
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    /// Stored data of `what` `id` that does not parse.
    pub(super) fn corrupt(what: &'static str, id: &str, message: impl ToString) -> Self {
        StoreError::Corrupt {
            what,
            id: id.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
