//! What the dispatcher knows about a depot right now. Each worker owns its
//! depot's [`DepotRuntime`] and publishes it through a `watch` channel;
//! status queries read the latest value without locking the worker.

use std::time::SystemTime;

/// Which RPC a depot gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Not known yet: `SetPxeConfig` is tried.
    Unknown,
    /// The depot implements `SetPxeConfig`.
    New,
    /// The depot answered UNIMPLEMENTED: `SetPxeConfigByFqdn`.
    Legacy,
}

impl Capability {
    /// `unknown`, `new` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Unknown => "unknown",
            Capability::New => "new",
            Capability::Legacy => "legacy",
        }
    }
}

/// What the dispatcher knows about a depot right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepotRuntime {
    /// Whether the last call reached the depot.
    pub reachable: bool,
    /// The path in use.
    pub capability: Capability,
    /// The last depot-level error, until the depot answers again.
    pub last_error: String,
    /// The last answer from the depot.
    pub last_contact: Option<SystemTime>,
    /// Clients queued, in flight or waiting for a retry.
    pub queued: usize,
    /// Successful pushes on the new path.
    pub pushes_new: u64,
    /// Successful pushes on the legacy path.
    pub pushes_legacy: u64,
    /// When an unreachable depot is tried next.
    pub next_retry: Option<SystemTime>,
    /// Whether new-path pushes go in `BatchSetPxeConfigs` calls (false
    /// while the depot is known not to take them).
    pub batches: bool,
    /// Deliveries the worker remembers because their acks may not be in the
    /// store yet (a late notice of the same revision is not pushed twice);
    /// bounded, not one per client ever delivered.
    pub remembered: usize,
}

impl Default for DepotRuntime {
    fn default() -> Self {
        Self {
            reachable: true,
            capability: Capability::Unknown,
            last_error: String::new(),
            last_contact: None,
            queued: 0,
            pushes_new: 0,
            pushes_legacy: 0,
            next_retry: None,
            batches: true,
            remembered: 0,
        }
    }
}

impl DepotRuntime {
    /// The capability operators are shown: a depot served the legacy path
    /// before it was re-probed counts as legacy until the probe answers.
    pub fn shown_capability(&self) -> Capability {
        if self.capability == Capability::Unknown && self.pushes_legacy > 0 {
            Capability::Legacy
        } else {
            self.capability
        }
    }
}
