//! Read reports: every TFTP read goes to the configserver, retried until it
//! lands or the configserver refuses it for good.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{Instrument, debug, info_span, warn};

use super::client::Upstream;
use crate::depot::writer::ReadEvent;
use crate::metrics::{Metrics, WriteLabels};
use crate::proto;

/// Read reports in flight at once.
const REPORT_CONCURRENCY: usize = 16;
/// The first wait before a failed report is sent again; it doubles each time.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one report.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How a read report ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    /// The configserver recorded it.
    Ok,
    /// The configserver refused it for good.
    Refused,
    /// The depot shut down before it landed.
    Abandoned,
}

impl Reported {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Abandoned => "abandoned",
        }
    }
}

impl Upstream {
    /// Reports every read to the configserver, retrying each until it lands
    /// (or the configserver refuses it for good).
    pub fn spawn_reporter(
        &self,
        mut reads: mpsc::Receiver<ReadEvent>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let upstream = self.clone();
        let slots = Arc::new(Semaphore::new(REPORT_CONCURRENCY));
        let span = info_span!("reporter", depot = %self.depot_id());
        tokio::spawn(
            async move {
                while let Some(read) = reads.recv().await {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let upstream = upstream.clone();
                    let metrics = metrics.clone();
                    let stop = stop.clone();
                    tokio::spawn(
                        async move {
                            let result = upstream.report(&read, &stop).await;
                            metrics
                                .read_reports
                                .get_or_create(&WriteLabels {
                                    depot: upstream.depot_id().to_string(),
                                    result: result.as_str().to_owned(),
                                })
                                .inc();
                            drop(slot);
                        }
                        .in_current_span(),
                    );
                }
            }
            .instrument(span),
        );
    }

    async fn report(&self, read: &ReadEvent, stop: &CancellationToken) -> Reported {
        let mut delay = FIRST_RETRY;
        loop {
            let result = self
                .client()
                .report_pxe_config_read(proto::ReportPxeConfigReadRequest {
                    fqdn: read.fqdn.to_string(),
                    product_id: read.product_id.to_string(),
                    revision: read.revision,
                    epoch: Default::default(),
                    files_present: Default::default(),
                    read_at: Default::default(),
                })
                .await;
            match result {
                Ok(r) => {
                    let r = r.into_inner();
                    debug!(fqdn = %read.fqdn, action_request = %r.action_request, applied = r.applied, "read reported");
                    return Reported::Ok;
                }
                Err(status)
                    if matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::PermissionDenied
                            | Code::FailedPrecondition
                    ) =>
                {
                    warn!(fqdn = %read.fqdn, %status, "read report refused; not retried");
                    return Reported::Refused;
                }
                Err(status) => {
                    warn!(fqdn = %read.fqdn, %status, retry_in = ?delay, "read report failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return Reported::Abandoned,
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }
}
