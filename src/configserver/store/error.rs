//! Why a store operation failed.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
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
