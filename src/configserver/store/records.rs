//! What callers of the store hand in and get back: inventory records, push
//! rows and the outcomes of writes. No SQL here.

use std::time::SystemTime;

use crate::domain::Endpoint;
use crate::domain::{ActionRequest, Fqdn, ProductId, Secret, TemplateName};

/// A depot server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepotRecord {
    /// Its FQDN.
    pub id: Fqdn,
    /// Its gRPC URL.
    pub endpoint: Endpoint,
    /// The shared secret for calls both ways.
    pub host_key: Secret,
    /// Free text.
    pub description: String,
}

/// A netboot product in one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    /// Product id.
    pub id: ProductId,
    /// Product version.
    pub product_version: String,
    /// Package version.
    pub package_version: String,
    /// Its own PXE template, if any.
    pub template: Option<TemplateName>,
}

/// The version of a product on a depot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductOnDepotRecord {
    /// The depot.
    pub depot_id: Fqdn,
    /// The product.
    pub product_id: ProductId,
    /// Product version.
    pub product_version: String,
    /// Package version.
    pub package_version: String,
}

/// A config and its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRecord {
    /// Config id, e.g. `clientconfig.depot.id`.
    pub id: String,
    /// Default values.
    pub default_values: Vec<String>,
    /// Free text.
    pub description: String,
}

/// One object's values of one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStateRecord {
    /// The object (client).
    pub object_id: Fqdn,
    /// The config.
    pub config_id: String,
    /// Its values.
    pub values: Vec<String>,
}

/// One object's values of one product property (a depot's are defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyStateRecord {
    /// The client or depot.
    pub object_id: Fqdn,
    /// The product.
    pub product_id: ProductId,
    /// The property.
    pub property_id: String,
    /// Its values.
    pub values: Vec<String>,
}

/// A requested action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// The client.
    pub client_id: Fqdn,
    /// The netboot product.
    pub product_id: ProductId,
    /// The action.
    pub action: ActionRequest,
}

/// A product-on-client row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PocRecord {
    /// The client.
    pub client_id: String,
    /// The product.
    pub product_id: String,
    /// Action request.
    pub action_request: String,
    /// Action progress.
    pub action_progress: String,
    /// Installed product version.
    pub product_version: String,
    /// Installed package version.
    pub package_version: String,
}

/// A depot's counts in `ListDepots`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepotCounts {
    /// Pushes owed to it.
    pub owed: u64,
    /// Configs delivered to it and not read.
    pub held: u64,
    /// Configs of its clients that cannot be built (a removal of an old
    /// one may be owed as well).
    pub blocked: u64,
}

/// A push owed: the dispatcher of `depot_id` should (re)send `client_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owed {
    /// The depot.
    pub depot_id: String,
    /// The client.
    pub client_id: String,
}

/// What a write did.
#[derive(Debug, Default, Clone)]
pub struct WriteOutcome {
    /// Rows inserted, updated or deleted.
    pub affected: u64,
    /// Pushes now owed, for the dispatcher.
    pub owed: Vec<Owed>,
    /// Of the clients the write changed, those with a netboot action no
    /// depot can be sent a config for: no registered depot, or the product
    /// is not on it.
    pub waiting: u64,
}

/// What a push row asks of its depot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushOp {
    /// Hold a PXE config for the client.
    Set,
    /// Hold none.
    Remove,
}

impl PushOp {
    /// `set` or `remove`, as stored and labelled.
    pub fn as_str(self) -> &'static str {
        match self {
            PushOp::Set => "set",
            PushOp::Remove => "remove",
        }
    }

    /// The stored text back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "set" => Some(PushOp::Set),
            "remove" => Some(PushOp::Remove),
            _ => None,
        }
    }
}

/// Which RPC carried a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushPath {
    /// `SetPxeConfig` with a whole bundle (and `RemovePxeConfig`).
    New,
    /// `SetPxeConfigByFqdn`: the depot looks the client up itself.
    Legacy,
}

impl PushPath {
    /// `new` or `legacy`, as stored and labelled.
    pub fn as_str(self) -> &'static str {
        match self {
            PushPath::New => "new",
            PushPath::Legacy => "legacy",
        }
    }

    /// The stored text back; `None` for anything else (e.g. never delivered).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "new" => Some(PushPath::New),
            "legacy" => Some(PushPath::Legacy),
            _ => None,
        }
    }
}

/// A push row as the dispatcher and status queries see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// The client.
    pub client_id: String,
    /// The depot.
    pub depot_id: String,
    /// Set or remove.
    pub op: PushOp,
    /// The product (for a set).
    pub product_id: String,
    /// The wanted revision.
    pub revision: u64,
    /// The revision the depot acknowledged.
    pub delivered_revision: u64,
    /// The revision the client read.
    pub read_revision: u64,
    /// The path of the last delivery; none before the first.
    pub path: Option<PushPath>,
    /// Failed attempts since the last success or change.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// When the next retry is due.
    pub next_attempt_at: Option<SystemTime>,
    /// Last change.
    pub updated_at: SystemTime,
    /// Last delivery.
    pub delivered_at: Option<SystemTime>,
    /// The read, as the depot saw it.
    pub read_at: Option<SystemTime>,
    /// When the configserver recorded the read (and turned the action
    /// `none` in the same transaction, unless `always`); µs precision.
    pub read_recorded_at: Option<SystemTime>,
    /// Why the client's config cannot be pushed here until the inventory
    /// changes (a terminal failure); empty if nothing blocks it.
    pub blocked: String,
    /// The template the depot used for the delivered config.
    pub template: String,
    /// Why the depot chose that template.
    pub template_reason: String,
    /// The read's files are still on the depot (defused, delete retried).
    pub read_files_present: bool,
}

/// The template a depot used for a config, as its answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedTemplate {
    /// The template, relative to the depot's template directory.
    pub name: String,
    /// Why the depot chose it.
    pub reason: String,
}

/// The result of a push, recorded in batches.
#[derive(Debug, Clone)]
pub enum Ack {
    /// The depot holds (or removed) the revision.
    Delivered {
        /// The client.
        client_id: String,
        /// The depot.
        depot_id: String,
        /// The revision delivered.
        revision: u64,
        /// The RPC that carried it.
        path: PushPath,
        /// The template the depot says it used for a set, and why.
        template: Option<UsedTemplate>,
    },
    /// The push failed; retry later.
    Failed {
        /// The client.
        client_id: String,
        /// The depot.
        depot_id: String,
        /// The revision tried.
        revision: u64,
        /// Why.
        error: String,
        /// When the retry is due.
        next_attempt_at: SystemTime,
    },
}

impl Ack {
    /// The client, depot and revision the result is about.
    pub fn key(&self) -> (&str, &str, u64) {
        match self {
            Ack::Delivered {
                client_id,
                depot_id,
                revision,
                ..
            }
            | Ack::Failed {
                client_id,
                depot_id,
                revision,
                ..
            } => (client_id, depot_id, *revision),
        }
    }
}

/// A depot's report of a TFTP read.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    /// The reporting depot.
    pub depot_id: String,
    /// The client.
    pub client_id: String,
    /// The product it booted.
    pub product_id: String,
    /// The revision it read.
    pub revision: u64,
    /// The epoch of that revision; empty: any (a report made by hand).
    pub epoch: String,
    /// The depot could not delete the files yet (it defused them).
    pub files_present: bool,
    /// When the depot saw the read; `None`: now.
    pub read_at: Option<SystemTime>,
}

/// The outcome of a read report.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// The action request now.
    pub action_request: String,
    /// The config was pushed again (`always`).
    pub repushed: bool,
    /// The report changed something.
    pub applied: bool,
    /// Pushes now owed.
    pub owed: Vec<Owed>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_paths_round_trip_through_their_stored_text() {
        for op in [PushOp::Set, PushOp::Remove] {
            assert_eq!(PushOp::parse(op.as_str()), Some(op));
        }
        for path in [PushPath::New, PushPath::Legacy] {
            assert_eq!(PushPath::parse(path.as_str()), Some(path));
        }
        assert_eq!(PushOp::parse("delete"), None);
        assert_eq!(PushPath::parse(""), None);
    }
}
