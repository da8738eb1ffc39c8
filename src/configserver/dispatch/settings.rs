//! How the configserver pushes to depots, and the defaults: the one place
//! each default is written down.

use std::sync::Arc;
use std::time::Duration;

use crate::transport::Tls;

/// Pushes in flight per depot unless configured otherwise. More in flight
/// make larger writer rounds on the depot (one journal transaction and one
/// hand-off to the file threads for more configs): bulk over 4 depots is
/// faster at 128 than at 32, and the depots spend less CPU per config
/// (docs/BENCHMARKS.md, "Push concurrency").
pub const DEFAULT_PUSH_CONCURRENCY: usize = 128;
/// Deadline of one push unless configured otherwise.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before retrying an unreachable depot unless configured otherwise.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between retries unless configured otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How the configserver pushes to depots.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Pushes in flight per depot.
    pub concurrency: usize,
    /// Deadline of one push.
    pub timeout: Duration,
    /// First wait before retrying an unreachable depot.
    pub min_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// TLS for `https://` depots (the configserver's own, set at start).
    pub tls: Option<Arc<Tls>>,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_PUSH_CONCURRENCY,
            timeout: DEFAULT_PUSH_TIMEOUT,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            tls: None,
        }
    }
}
