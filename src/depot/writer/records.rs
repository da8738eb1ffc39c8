//! What the writer keeps of a client, and what the journal records: the
//! config it holds (its content stays in the journal, which writes it again),
//! its revision floor, a read whose files are still present.

use std::sync::Arc;
use std::time::SystemTime;

use super::error::SeenState;
use crate::depot::marker::Format;
use crate::domain::{ActionRequest, Fqdn, ProductId};

/// How many epochs' highest revisions the depot keeps, the current one
/// among them. Each store a depot was ever pushed from is an epoch (every
/// authenticated caller can name one); beyond this many the one pushed
/// longest ago goes (revisions are the store's clock), in memory and in the
/// journal alike. Only a store that pushes again after that many others
/// did misses its old figure: its next stale push reports the client's own.
pub const KEPT_EPOCHS: usize = 16;

/// A config the depot holds. Its content is not kept in memory (100,000
/// held configs would carry ~60 MB of it): the journal has it, for the rare
/// rewrite and undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The netboot product.
    pub product_id: ProductId,
    /// The action request.
    pub action_request: ActionRequest,
    /// Its revision (0: unversioned).
    pub revision: u64,
    /// File names.
    pub files: Vec<String>,
    /// The template used.
    pub template: String,
    /// When it was written.
    pub since: SystemTime,
    /// The format of its content (how a read that cannot be deleted is
    /// defused).
    pub format: Format,
    /// The epoch it was pushed in.
    pub epoch: Arc<str>,
}

/// The last revision the depot saw for a client and what became of it; kept
/// after a read or removal so that a late, older push cannot resurrect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The revision.
    pub revision: u64,
    /// Held, read or removed.
    pub state: SeenState,
    /// The epoch of the revision: revisions of other epochs do not compare.
    pub epoch: Arc<str>,
}

/// A read config whose files could not be deleted: overwritten with a
/// local-boot config, the delete is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defused {
    /// The netboot product.
    pub product_id: ProductId,
    /// The action request it carried.
    pub action_request: ActionRequest,
    /// The revision read.
    pub revision: u64,
    /// Files still present.
    pub files: Vec<String>,
    /// The epoch of the revision.
    pub epoch: Arc<str>,
    /// When the read was seen.
    pub read_at: SystemTime,
}

/// What the journal keeps of one client.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client.
    pub fqdn: Fqdn,
    /// Its revision floor.
    pub seen: Option<Seen>,
    /// Its config, if one is held.
    pub held: Option<Held>,
    /// The held config's content (a secret: never logged): loaded from the
    /// journal, and given when a record is written with a new one (a set).
    /// `None` on a record of a held config: the journal keeps the content
    /// it has for that config.
    pub content: Option<Arc<str>>,
}

impl ClientRecord {
    /// The held config's file names, each with the content it must have.
    pub fn held_files(&self) -> Vec<(String, Arc<str>)> {
        match (&self.held, &self.content) {
            (Some(held), Some(content)) => held
                .files
                .iter()
                .map(|f| (f.clone(), content.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

// The content holds host keys: a record's Debug shows its length only.
impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("fqdn", &self.fqdn)
            .field("seen", &self.seen)
            .field("held", &self.held)
            .field(
                "content",
                &self
                    .content
                    .as_ref()
                    .map(|c| format!("<{} bytes>", c.len())),
            )
            .finish()
    }
}
