//! What the load test runs against: a configserver's Admin service and the
//! depots it uses, each on the new or the legacy path; in self-contained
//! mode also what only a local site offers (PXE directories, depot keys and
//! metrics, TFTP servers).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::channel::AdminClient;
use super::scrape::MetricsUrl;
use crate::cli::error::CliError;
use crate::domain::Secret;
use crate::proto;

/// A depot the load test pushes to.
#[derive(Debug, Clone)]
pub struct TargetDepot {
    /// Its id.
    pub id: String,
    /// Its gRPC URL, as registered.
    pub endpoint: String,
    /// Whether it takes the legacy path.
    pub legacy: bool,
    /// Its `/metrics`, if known.
    pub metrics: Option<MetricsUrl>,
    /// Its PXE directory, if on this machine.
    pub pxe_dir: Option<PathBuf>,
    /// Its host key file, if known (for `direct`).
    pub key_file: Option<PathBuf>,
    /// A TFTP server serving its PXE directory, if any.
    pub tftp: Option<SocketAddr>,
    /// Its process id, when it is a child of the run (self-contained).
    pub pid: Option<u32>,
}

/// The configserver and the depots.
pub struct Target {
    /// The Admin client.
    pub admin: AdminClient,
    /// The configserver's URL and admin key, for a client of its own on
    /// another runtime (`trickle`).
    pub admin_at: (String, Secret),
    /// The configserver's `/metrics`, if known.
    pub metrics: Option<MetricsUrl>,
    /// The depots used, new-path ones first.
    pub depots: Vec<TargetDepot>,
    /// Where the raw file-pair baseline runs, if anywhere.
    pub baseline_dir: Option<PathBuf>,
}

impl Target {
    /// Indices of the depots on one path.
    pub fn depots_on(&self, legacy: bool) -> Vec<usize> {
        (0..self.depots.len())
            .filter(|&i| self.depots[i].legacy == legacy)
            .collect()
    }

    /// Per depot id: (delivered and unread, queued), from `ListDepots`.
    pub async fn depot_counts(&self) -> Result<Vec<(u64, u64)>, CliError> {
        let listed = self
            .admin
            .clone()
            .list_depots(proto::ListDepotsRequest {})
            .await?
            .into_inner()
            .depots;
        Ok(self
            .depots
            .iter()
            .map(|d| {
                listed
                    .iter()
                    .find(|s| s.id == d.id)
                    .map_or((0, 0), |s| (s.delivered, s.queued))
            })
            .collect())
    }

    /// The configserver's legacy look-ups so far, if its metrics are known.
    pub async fn lookups(&self) -> Option<f64> {
        let metrics = self.metrics.as_ref()?;
        metrics.sum("pxeconf_lookups_total", &[]).await.ok()
    }
}
