//! The reconciliation: fetch every bundle this depot should hold
//! (`ListPendingBundles`, telling the configserver the epoch the journal
//! follows and the highest revision seen there) and write them through the
//! core, retrying until the configserver answers once in full. It runs at
//! start-up — after the journal's unacknowledged reads are sent — and again
//! whenever a push brings a new epoch (a different database): then the
//! configs of other epochs that the new store does not list are dropped.
//! A listed config the depot has seen read is reported read again, never
//! written again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::client::Upstream;
use super::report::Reporting;
use crate::depot::core::DepotCore;
use crate::depot::error::Error;
use crate::depot::writer::{ReadEvent, SeenState, WriterError};
use crate::domain::{ClientBundle, Fqdn};
use crate::proto;
use crate::status::EPOCH_METADATA;

/// Bundles applied at once during reconciliation.
const RECONCILE_CONCURRENCY: usize = 64;
/// The first wait before a failed reconciliation is tried again; it doubles
/// each time.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The shortest wait before a pass is made again after the depot's own
/// trouble, doubling to [`MAX_HERE_RETRY`]: a file it can never write (an
/// immutable one at a config's name) must not relist everything twice a
/// minute.
const HERE_RETRY: Duration = Duration::from_secs(5);
/// The longest wait before a pass is made again after the depot's own
/// trouble.
const MAX_HERE_RETRY: Duration = Duration::from_secs(300);
/// How long the first pass waits for the journal's unreported reads to be
/// acknowledged. Waiting spares reporting them twice (a listed config the
/// depot saw read is reported again); a read the configserver keeps
/// failing must not hold the pass back for good.
const INITIAL_READS_WAIT: Duration = Duration::from_secs(30);
/// How long the bundle stream may stay silent before the pass is given up
/// and made again: the call's deadline covers only its response headers,
/// and a configserver whose database stalls mid-stream would hold the
/// pass for ever.
const STREAM_SILENCE: Duration = Duration::from_secs(60);

/// What one pass came to.
#[derive(Debug, Default)]
struct Pass {
    written: usize,
    refused: usize,
    read_again: usize,
    listed: HashSet<Fqdn>,
}

/// What became of one listed bundle.
enum Applied {
    Written(Fqdn),
    /// The depot has seen it read: reported read again.
    Read(Fqdn),
    Refused(Option<Fqdn>),
    /// The depot's own trouble (its directory or journal): the pass is
    /// made again, since nothing else pushes a config the configserver
    /// takes for delivered.
    Failed(Fqdn),
}

/// Why a pass did not finish.
enum Unfinished {
    /// The configserver did not answer or refused: another may.
    Upstream(tonic::Status),
    /// The depot's own trouble: no configserver would do better.
    Here(String),
}

impl From<tonic::Status> for Unfinished {
    fn from(status: tonic::Status) -> Self {
        Unfinished::Upstream(status)
    }
}

impl Upstream {
    /// The reconciliation task: once the journal's reads are sent, then
    /// again on each new epoch, until `stop`.
    pub fn reconciler(
        &self,
        core: Arc<DepotCore>,
        reporting: Reporting,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let upstream = self.clone();
        let span = info_span!("reconcile", depot = %self.depot_id());
        async move {
            let mut epochs = core.writer().epochs();
            tokio::select! {
                () = reporting.initial_sent() => {}
                () = tokio::time::sleep(INITIAL_READS_WAIT) => {
                    warn!(waited = ?INITIAL_READS_WAIT, "reads from before the start are not all reported yet; reconciling meanwhile");
                }
                () = stop.cancelled() => return Ok(()),
            }
            loop {
                epochs.borrow_and_update();
                if !upstream.reconcile_until_done(&core, &reporting, &stop).await {
                    return Ok(());
                }
                tokio::select! {
                    changed = epochs.changed() => if changed.is_err() { return Ok(()) },
                    () = stop.cancelled() => return Ok(()),
                }
                info!(epoch = %*epochs.borrow(), "a push came from another configserver database; reconciling with it");
            }
        }
        .instrument(span)
    }

    /// Reconciles, retrying until one pass succeeds; false if stopped.
    async fn reconcile_until_done(
        &self,
        core: &Arc<DepotCore>,
        reporting: &Reporting,
        stop: &CancellationToken,
    ) -> bool {
        let mut delay = FIRST_RETRY;
        // Each configserver once at once; then wait before another round.
        let mut failovers = 0;
        loop {
            let (turn, client) = self.pick();
            let (failed, here) = match self.reconcile_once(client, core, reporting).await {
                Ok(pass) => {
                    info!(
                        written = pass.written,
                        refused = pass.refused,
                        read_again = pass.read_again,
                        "reconciliation done"
                    );
                    return true;
                }
                Err(Unfinished::Upstream(status))
                    if failovers + 1 < self.count() && self.failed(&status, turn) =>
                {
                    failovers += 1;
                    continue;
                }
                Err(Unfinished::Upstream(status)) => {
                    self.failed(&status, turn);
                    (crate::status::Brief(&status).to_string(), false)
                }
                Err(Unfinished::Here(error)) => {
                    // The depot's own trouble (a file it cannot write) may
                    // last: each pass lists every pending bundle again.
                    delay = delay.max(HERE_RETRY);
                    (error, true)
                }
            };
            failovers = 0;
            warn!(error = %failed, retry_in = ?delay, "reconciliation failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return false,
            }
            delay = (delay * 2).min(if here { MAX_HERE_RETRY } else { MAX_RETRY });
        }
    }

    /// One pass: every listed bundle applied; then, in a new epoch, what it
    /// does not list dropped.
    async fn reconcile_once(
        &self,
        mut client: super::client::Client,
        core: &Arc<DepotCore>,
        reporting: &Reporting,
    ) -> Result<Pass, Unfinished> {
        let (epoch, highest) = (core.writer().position().await)
            .map_err(|e| Unfinished::Here(format!("the depot's writer: {e}")))?;
        let response = client
            .list_pending_bundles(proto::ListPendingBundlesRequest {
                depot_id: self.depot_id().to_string(),
                epoch: epoch.to_string(),
                highest_revision: highest,
            })
            .await?;
        let store_epoch = response
            .metadata()
            .get(EPOCH_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let silent = || tonic::Status::deadline_exceeded("the bundle stream stayed silent");
        // The silence is timed from each wait for the next bundle, not from
        // the last one given: applies held up by the depot's own directory
        // must not read as a silent configserver. The first error ends it.
        let bundles = futures::stream::unfold(response.into_inner(), |mut stream| async move {
            match tokio::time::timeout(STREAM_SILENCE, stream.next()).await {
                Ok(item) => item.map(|item| (item, stream)),
                Err(_) => Some((Err(silent()), stream)),
            }
        });
        let applied: Vec<Applied> = bundles
            .map(|item| async move { Ok::<_, tonic::Status>(apply(core, reporting, item?).await) })
            .buffer_unordered(RECONCILE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut pass = Pass::default();
        let mut failed = 0;
        for a in applied {
            match a {
                Applied::Failed(f) => {
                    failed += 1;
                    pass.listed.insert(f);
                }
                Applied::Written(f) => {
                    pass.written += 1;
                    pass.listed.insert(f);
                }
                Applied::Read(f) => {
                    pass.read_again += 1;
                    pass.listed.insert(f);
                }
                Applied::Refused(f) => {
                    pass.refused += 1;
                    pass.listed.extend(f);
                }
            }
        }
        if !store_epoch.is_empty() {
            let kept = (core.writer())
                .retain(Arc::from(store_epoch.as_str()), pass.listed.clone())
                .await
                .map_err(|e| Unfinished::Here(format!("the depot's writer: {e}")))?;
            // Not done until they are gone: nothing else asks again before
            // the next epoch, and they are configs nobody owes any more.
            if kept > 0 {
                return Err(Unfinished::Here(format!(
                    "{kept} config(s) the configserver's database does not owe could not be removed yet"
                )));
            }
        }
        if failed > 0 {
            return Err(Unfinished::Here(format!(
                "{failed} pending config(s) could not be written (the depot's log says why)"
            )));
        }
        Ok(pass)
    }
}

/// Writes one pending bundle. A stale one is what the depot has already
/// moved past; one the depot has seen read is reported read again (the
/// configserver still lists it: a restored database, a lost report).
async fn apply(core: &DepotCore, reporting: &Reporting, wire: proto::ClientBundle) -> Applied {
    // The client, if its name is one: a bundle refused for another field
    // still keeps what the depot holds of the client (it is listed).
    let listed = wire
        .host
        .as_ref()
        .and_then(|h| Fqdn::parse(&h.id, "host.id").ok());
    let epoch = wire.epoch.clone();
    let bundle = match ClientBundle::try_from(wire) {
        Ok(bundle) => bundle,
        Err(e) => {
            let fqdn = listed.as_ref().map(ToString::to_string).unwrap_or_default();
            warn!(%fqdn, error = %e, "pending config not written");
            return Applied::Refused(listed);
        }
    };
    let fqdn = bundle.client.fqdn.clone();
    let read = ReadEvent {
        fqdn: fqdn.clone(),
        product_id: bundle.product.id.clone(),
        revision: bundle.revision,
        action_request: bundle.action_request,
        epoch: Arc::from(epoch.as_str()),
        files_present: false,
        read_at: SystemTime::now(),
    };
    match core.set(bundle, &epoch).await {
        Ok(_) => Applied::Written(fqdn),
        Err(Error::Writer(WriterError::Stale {
            state: SeenState::Read,
            ..
        })) => {
            reporting.report(read).await;
            Applied::Read(fqdn)
        }
        Err(Error::Writer(WriterError::Stale { .. })) => Applied::Written(fqdn),
        Err(error @ Error::Writer(WriterError::Io { .. } | WriterError::Stopped)) => {
            warn!(%fqdn, %error, "pending config not written; the pass is made again");
            Applied::Failed(fqdn)
        }
        Err(error) => {
            warn!(%fqdn, %error, "pending config not written");
            Applied::Refused(Some(fqdn))
        }
    }
}
