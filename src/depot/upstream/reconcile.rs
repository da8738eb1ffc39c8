//! The start-up reconciliation: fetch every bundle this depot should hold
//! (`ListPendingBundles`) and write them through the core, retrying until the
//! configserver answers once in full.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::client::Upstream;
use crate::depot::core::DepotCore;
use crate::depot::error::Error;
use crate::depot::writer::WriterError;
use crate::domain::ClientBundle;
use crate::proto;

/// Bundles applied at once during reconciliation.
const RECONCILE_CONCURRENCY: usize = 64;
/// The first wait before a failed reconciliation is tried again; it doubles
/// each time.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(30);

impl Upstream {
    /// Fetches every bundle this depot should hold and writes them, retrying
    /// until the configserver answers once in full.
    pub fn spawn_reconcile(&self, core: Arc<DepotCore>, stop: CancellationToken) {
        let upstream = self.clone();
        let span = info_span!("reconcile", depot = %self.depot_id());
        tokio::spawn(
            async move {
                let mut delay = FIRST_RETRY;
                loop {
                    match upstream.reconcile_once(&core).await {
                        Ok((written, refused)) => {
                            info!(written, refused, "start-up reconciliation done");
                            return;
                        }
                        Err(status) => {
                            warn!(%status, retry_in = ?delay, "start-up reconciliation failed; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                () = stop.cancelled() => return,
                            }
                            delay = (delay * 2).min(MAX_RETRY);
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One pass: (written, refused), or the status that broke the stream.
    async fn reconcile_once(&self, core: &Arc<DepotCore>) -> Result<(usize, usize), tonic::Status> {
        let stream = self
            .client()
            .list_pending_bundles(proto::ListPendingBundlesRequest {
                depot_id: self.depot_id().to_string(),
                epoch: Default::default(),
                highest_revision: Default::default(),
            })
            .await?
            .into_inner();
        let results: Vec<Result<bool, tonic::Status>> = stream
            .map(|item| {
                let core = core.clone();
                async move { Ok(apply(&core, item?).await) }
            })
            .buffer_unordered(RECONCILE_CONCURRENCY)
            .collect()
            .await;
        let mut written = 0;
        let mut refused = 0;
        for r in results {
            if r? {
                written += 1;
            } else {
                refused += 1;
            }
        }
        Ok((written, refused))
    }
}

/// Writes one pending bundle; false when it was refused (logged). A stale
/// one counts as written: the depot already has something newer.
async fn apply(core: &DepotCore, wire: proto::ClientBundle) -> bool {
    let fqdn = wire.host.as_ref().map(|h| h.id.clone()).unwrap_or_default();
    let applied = match ClientBundle::try_from(wire) {
        Ok(bundle) => core.set(bundle).await,
        Err(e) => Err(Error::from(e)),
    };
    match applied {
        Ok(_) | Err(Error::Writer(WriterError::Stale { .. })) => true,
        Err(error) => {
            warn!(%fqdn, %error, "pending config not written");
            false
        }
    }
}
