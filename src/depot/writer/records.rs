//! What the writer keeps of a client, and what the journal records: the
//! config it holds (with its content, to write it again), its revision
//! floor, a read whose files are still present.

use std::sync::Arc;
use std::time::SystemTime;

use super::error::SeenState;
use crate::domain::{ActionRequest, Fqdn, ProductId};

/// A config the depot holds, with what it takes to write it again.
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
    /// The file content (a secret: never logged).
    pub content: Arc<str>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client.
    pub fqdn: Fqdn,
    /// Its revision floor.
    pub seen: Option<Seen>,
    /// Its config, if one is held.
    pub held: Option<Held>,
}
