//! What goes into the writer and what comes out of it: rendered configs,
//! outcomes, listings, read events and the watcher's events.

use std::sync::Arc;
use std::time::SystemTime;

use crate::domain::{ActionRequest, Fqdn, ProductId};

/// A rendered config, ready to be written under its file names.
#[derive(Clone)]
pub struct Rendered {
    /// The client.
    pub fqdn: Fqdn,
    /// The netboot product.
    pub product_id: ProductId,
    /// The action request it carries.
    pub action_request: ActionRequest,
    /// Its revision (0: unversioned).
    pub revision: u64,
    /// File names inside the PXE directory (UUID, then MAC).
    pub files: Vec<String>,
    /// The file content (contains the host key: never log it).
    pub content: Arc<str>,
    /// The template used, relative to the template directory.
    pub template: String,
    /// The configserver store's epoch it was pushed in (empty: none).
    pub epoch: Arc<str>,
}

// The content holds the host key and a password hash: never in a log.
impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("fqdn", &self.fqdn)
            .field("product_id", &self.product_id)
            .field("revision", &self.revision)
            .field("files", &self.files)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("template", &self.template)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// What a successful `set` left in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    /// File names written, relative to the PXE directory.
    pub files: Vec<String>,
    /// The template used.
    pub template: String,
    /// The revision now held.
    pub revision: u64,
    /// Whether this call wrote the files (false: a retried push of the
    /// config already held, answered as if written).
    pub written: bool,
}

/// A pending config as listed: never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigInfo {
    /// The client.
    pub fqdn: Fqdn,
    /// The netboot product.
    pub product_id: ProductId,
    /// The action request.
    pub action_request: ActionRequest,
    /// File names.
    pub files: Vec<String>,
    /// The template used.
    pub template: String,
    /// When it was written.
    pub since: SystemTime,
    /// Its revision.
    pub revision: u64,
    /// Held, or read with its files still present.
    pub state: HeldState,
}

/// Where a listed config stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldState {
    /// Written, waiting for the client's read.
    Held,
    /// Read, but its files could not be deleted yet: they were overwritten
    /// with a local-boot config, and the delete is retried.
    ReadFilePresent,
}

/// One page of pending configs.
#[derive(Debug, Clone)]
pub struct ConfigPage {
    /// Entries, ordered by FQDN.
    pub configs: Vec<ConfigInfo>,
    /// The FQDN to continue after, if there is more.
    pub next_after: Option<String>,
    /// All pending configs.
    pub total: usize,
}

/// A TFTP read of a client's config: the client is booting its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    /// The client.
    pub fqdn: Fqdn,
    /// The product it booted.
    pub product_id: ProductId,
    /// The revision it read.
    pub revision: u64,
    /// The action request of that revision.
    pub action_request: ActionRequest,
    /// The epoch the config was pushed in (empty: none).
    pub epoch: Arc<str>,
    /// Its files could not be deleted yet (defused, the delete is retried).
    pub files_present: bool,
    /// When the read was seen.
    pub read_at: SystemTime,
}

impl ReadEvent {
    /// The read of `fqdn`'s config `held`, seen at `read_at`, its files gone.
    pub fn of_held(fqdn: Fqdn, held: super::records::Held, read_at: SystemTime) -> Self {
        Self {
            fqdn,
            product_id: held.product_id,
            revision: held.revision,
            action_request: held.action_request,
            epoch: held.epoch,
            files_present: false,
            read_at,
        }
    }
}

/// What the read watcher tells the writer.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A file was opened and closed without writing: a TFTP read.
    Read(String),
    /// A file was renamed into the directory or linked in under a new name
    /// (our own atomic writes).
    Moved(String),
    /// A file was deleted (our removals among others).
    Deleted(String),
    /// Fence `n` was deleted (`files::fence`): the deletes before it that
    /// found no file are seen.
    Fence(u64),
    /// The kernel dropped events; the writer rechecks the files it holds.
    Overflow,
    /// The depot started: files read while it was down (or whose read
    /// events a crash lost) are reads, found as after an overflow.
    Started,
    /// The PXE directory was recreated and is watched again: every held
    /// config is written again.
    Rewatched,
    /// Test hook only (`PXECONF_TEST_END_TASK=writer` or `writer-panic`): the
    /// writer ends, or panics, as a failing task would.
    TestEnd {
        /// Panic rather than end.
        panic: bool,
    },
}

/// How a write went, for the metrics.
#[derive(Debug, Clone, Copy)]
pub(super) enum WriteResult {
    /// The files are in place.
    Ok,
    /// The file work failed (the config was undone).
    IoError,
}

/// Every result `pxeconf_config_writes_total` can show, each created at
/// zero when the depot starts.
pub const WRITE_RESULTS: [&str; 2] = [WriteResult::Ok.as_str(), WriteResult::IoError.as_str()];

impl WriteResult {
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::IoError => "io_error",
        }
    }
}
