//! A command as the writer plans it: its file work, the round keys it
//! occupies, and what committing it came to.

use std::sync::Arc;

use super::error::WriterError;
use super::messages::{ReadEvent, Rendered, SetOutcome};
use crate::domain::Fqdn;

/// The file work of one command, relative to the PXE directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileOps {
    /// Files to write (atomically), with their content.
    pub writes: Vec<(String, Arc<str>)>,
    /// Files to delete; a missing one is no error.
    pub deletes: Vec<String>,
    /// Whether the command is undone in the state when its file work fails
    /// (a set): the names it renamed already are deleted again, not left
    /// holding a config the state does not know. A rewrite is not undone —
    /// its config stays held — so what it wrote stays.
    pub undone_on_failure: bool,
    /// Whether no config holds any of the names written (a new client's):
    /// they are linked in rather than renamed over.
    pub new_names: bool,
}

/// A command planned against the state, waiting for its file work.
#[derive(Debug)]
pub enum Op {
    /// Write a client's config, deleting the names it no longer uses.
    Set {
        /// The config.
        config: Rendered,
        /// Names the client held before and gives up now.
        released: Vec<String>,
    },
    /// Delete a client's config.
    Remove {
        /// The client.
        fqdn: Fqdn,
        /// The revision of the removal (0: unversioned).
        revision: u64,
        /// Its epoch.
        epoch: Arc<str>,
    },
    /// The client read its config: delete all of its files.
    Read {
        /// The client.
        fqdn: Fqdn,
    },
    /// Write a held config's files again (the directory was recreated).
    Rewrite {
        /// The client.
        fqdn: Fqdn,
    },
    /// Retry deleting the files of a defused read.
    Sweep {
        /// The client.
        fqdn: Fqdn,
    },
}

impl Op {
    /// The client the command is about.
    pub fn fqdn(&self) -> &Fqdn {
        match self {
            Op::Set { config, .. } => &config.fqdn,
            Op::Remove { fqdn, .. }
            | Op::Read { fqdn }
            | Op::Rewrite { fqdn }
            | Op::Sweep { fqdn } => fqdn,
        }
    }

    /// Whether the command changes what the journal keeps (a rewrite or a
    /// sweep only repeats file work).
    pub fn is_journaled(&self) -> bool {
        matches!(self, Op::Set { .. } | Op::Remove { .. } | Op::Read { .. })
    }
}

/// A command with its file work and the round keys it occupies.
#[derive(Debug)]
pub struct Planned {
    pub(super) op: Op,
    pub(super) files: FileOps,
    pub(super) keys: Vec<String>,
}

impl Planned {
    /// The command, its file work and its keys.
    pub fn into_parts(self) -> (Op, FileOps, Vec<String>) {
        (self.op, self.files, self.keys)
    }

    /// The file work.
    pub fn files(&self) -> &FileOps {
        &self.files
    }
}

/// What planning a set came to.
#[derive(Debug)]
pub enum SetPlan {
    /// Files to write.
    Write(Planned),
    /// An answer without file work: a refusal, or the outcome of an exact
    /// repeat of the held revision.
    Answer(Result<SetOutcome, WriterError>),
}

/// What committing a command came to.
#[derive(Debug)]
pub enum Committed {
    /// The answer to a set.
    Set(Result<SetOutcome, WriterError>),
    /// The answer to a removal: whether a config was held.
    Remove(Result<bool, WriterError>),
    /// A read to report, unless the config was gone already.
    Read(Option<ReadEvent>),
    /// A rewrite or a sweep: nothing to answer; a sweep that emptied a
    /// defused read reports it again (files gone now).
    Repeat(Option<ReadEvent>),
}
