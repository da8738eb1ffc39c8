//! Why the writer refused or failed a command.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::domain::Fqdn;

/// What became of the last revision the depot saw for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenState {
    /// It is held: its files are in the PXE directory.
    Held,
    /// The client read it; its files are gone.
    Read,
    /// It was removed.
    Removed,
}

impl SeenState {
    /// The state as written in messages: `held`, `read` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Read => "read",
            Self::Removed => "removed",
        }
    }

    /// The state back from its text; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Held, Self::Read, Self::Removed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for SeenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the writer refused or failed a command.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The command carries an older revision than the one held or seen.
    #[error("stale revision {got} for {fqdn}: revision {held} was already {state}")]
    Stale {
        /// The client.
        fqdn: Fqdn,
        /// The revision in the command.
        got: u64,
        /// The revision the depot has seen.
        held: u64,
        /// What happened to `held`.
        state: SeenState,
        /// The epoch of `held`.
        epoch: String,
        /// The highest revision the depot has seen in the command's epoch.
        highest: u64,
    },
    /// Another client holds one of the file names.
    #[error("PXE config file {name} of {fqdn} already belongs to {owner}")]
    Conflict {
        /// The contested file name.
        name: String,
        /// The client that asked for it.
        fqdn: Fqdn,
        /// The client holding it.
        owner: Fqdn,
    },
    /// The client has neither a MAC address nor a system UUID.
    #[error(
        "{fqdn} has neither a MAC address (00:00:00:… is a placeholder) nor a system UUID to name its PXE config"
    )]
    NoFileNames {
        /// The client.
        fqdn: Fqdn,
    },
    /// A file could not be written or renamed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The writer task is gone (shutting down).
    #[error("the PXE config writer has stopped")]
    Stopped,
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory or a file in it is unusable.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another depot uses the state directory.
    #[error("state directory {path} is in use by another depot (pid {holder})")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The holder's pid as written in the lock file.
        holder: String,
    },
    /// SQLite failed.
    #[error("journal: {0}")]
    Db(#[from] rusqlite::Error),
    /// The blocking thread running a journal call failed.
    #[error("journal: its thread failed: {0}")]
    Thread(String),
    /// A stored row does not parse (edited by hand?).
    #[error("journal row for {fqdn:?} is invalid: {message}")]
    Corrupt {
        /// The client of the row.
        fqdn: String,
        /// What is wrong.
        message: String,
    },
}
