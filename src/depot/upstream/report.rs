//! Read reports: every TFTP read goes to the configserver, retried until it
//! lands or the configserver refuses it for good. Reads come from the
//! writer (journaled before their files went) and, at start-up, from the
//! journal (those not acknowledged before the depot stopped) — sent before
//! the reconciliation, so that the configserver never pushes again a config
//! that was read. An acknowledged read leaves the journal (acks are written
//! in batches). On SIGTERM the depot gives the reports in flight its grace
//! period; what is not sent by then stays in the journal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::client::Upstream;
use crate::depot::links::PushLinks;
use crate::depot::writer::{Journal, ReadEvent, ReadKey};
use crate::metrics::{Metrics, WriteLabels};
use crate::proto;
use crate::server::Supervisor;
use crate::wire::timestamp;

/// Read reports in flight at once.
const REPORT_CONCURRENCY: usize = 16;
/// The first wait before a failed report is sent again; it doubles each time.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one report.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Acknowledgements written to the journal at once.
const ACK_BATCH: usize = 1024;

/// How a read report ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    /// The configserver recorded it.
    Ok,
    /// The configserver refused it for good.
    Refused,
    /// The depot shut down before it landed (it stays in the journal).
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

/// The running reporter: reads to send besides the writer's, and whether
/// the journal's reads are sent and every report is done.
#[derive(Clone)]
pub struct Reporting {
    extra: mpsc::Sender<ReadEvent>,
    in_flight: watch::Receiver<usize>,
    initial: watch::Receiver<bool>,
}

impl Reporting {
    /// Reports a read that is not in the journal (a config the
    /// configserver still lists although the depot has seen it read).
    pub async fn report(&self, read: ReadEvent) {
        let _ = self.extra.send(read).await;
    }

    /// Completes when the reads the journal held at start-up are
    /// acknowledged or refused.
    pub async fn initial_sent(&self) {
        let mut initial = self.initial.clone();
        let _ = initial.wait_for(|done| *done).await;
    }

    /// Completes when no report is in flight (the shutdown's flush).
    pub async fn idle(&self) {
        let mut in_flight = self.in_flight.clone();
        let _ = in_flight.wait_for(|n| *n == 0).await;
    }
}

/// The reads a reporter sends.
pub struct Reads {
    /// The journal's unacknowledged reads, sent first.
    pub initial: Vec<ReadEvent>,
    /// The writer's reads as they happen.
    pub events: mpsc::Receiver<ReadEvent>,
    /// Which push wrote each config read: the read span links to it.
    pub links: Arc<PushLinks>,
}

/// What every report task shares.
#[derive(Clone)]
struct Shared {
    upstream: Upstream,
    links: Arc<PushLinks>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    acks: mpsc::Sender<(ReadKey, bool)>,
    in_flight: Arc<watch::Sender<usize>>,
    slots: Arc<Semaphore>,
}

impl Upstream {
    /// Starts reporting: first the journal's unacknowledged reads, then
    /// every read from the writer and [`Reporting::report`], each retried
    /// until it lands, each in a trace of its own (span `read`);
    /// acknowledgements go to `journal`.
    pub fn start_reporter(
        &self,
        journal: Journal,
        reads: Reads,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        supervisor: &Supervisor,
    ) -> Reporting {
        let Reads {
            initial,
            events: reads,
            links,
        } = reads;
        let (acks_tx, acks) = mpsc::channel(ACK_BATCH);
        let (extra_tx, extra) = mpsc::channel(REPORT_CONCURRENCY);
        let (in_flight_tx, in_flight) = watch::channel(0usize);
        let (initial_tx, initial_rx) = watch::channel(initial.is_empty());
        let shared = Shared {
            upstream: self.clone(),
            links,
            metrics,
            stop,
            acks: acks_tx,
            in_flight: Arc::new(in_flight_tx),
            slots: Arc::new(Semaphore::new(REPORT_CONCURRENCY)),
        };
        let span = info_span!("reporter", depot = %self.depot_id());
        supervisor.spawn_critical(
            "read acknowledgement writer",
            write_acks(journal, acks).instrument(span.clone()),
        );
        if !initial.is_empty() {
            info!(
                reads = initial.len(),
                "re-sending reads not acknowledged before the depot stopped"
            );
        }
        supervisor.spawn_critical(
            "read reporter",
            receive(shared, initial, initial_tx, reads, extra).instrument(span),
        );
        Reporting {
            extra: extra_tx,
            in_flight,
            initial: initial_rx,
        }
    }

    async fn report(&self, read: &ReadEvent, stop: &CancellationToken) -> Reported {
        let mut delay = FIRST_RETRY;
        // Each configserver once at once; then wait before another round.
        let mut failovers = 0;
        loop {
            let result = self
                .client()
                .report_pxe_config_read(crate::telemetry::request(
                    proto::ReportPxeConfigReadRequest {
                        fqdn: read.fqdn.to_string(),
                        product_id: read.product_id.to_string(),
                        revision: read.revision,
                        epoch: read.epoch.to_string(),
                        files_present: read.files_present,
                        read_at: Some(timestamp(read.read_at)),
                    },
                ))
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
                Err(status) if failovers + 1 < self.count() && self.failed(&status) => {
                    failovers += 1;
                }
                Err(status) => {
                    failovers = 0;
                    self.failed(&status);
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

/// Takes reads (the initial ones first) and reports each in its own task,
/// at most [`REPORT_CONCURRENCY`] at once.
async fn receive(
    shared: Shared,
    initial: Vec<ReadEvent>,
    initial_done: watch::Sender<bool>,
    mut reads: mpsc::Receiver<ReadEvent>,
    mut extra: mpsc::Receiver<ReadEvent>,
) -> Result<(), String> {
    if !initial.is_empty() {
        let (done_tx, mut done) = mpsc::channel(initial.len());
        for read in initial {
            spawn_report(&shared, read, Some(done_tx.clone())).await;
        }
        drop(done_tx);
        let shared_initial = initial_done;
        tokio::spawn(async move {
            while done.recv().await.is_some() {}
            shared_initial.send_replace(true);
        });
    }
    loop {
        let read = tokio::select! {
            read = reads.recv() => match read {
                Some(read) => read,
                // The writer is gone: the depot stops.
                None => return Ok(()),
            },
            Some(read) = extra.recv() => read,
        };
        spawn_report(&shared, read, None).await;
    }
}

/// Reports `read` in a task of its own once a slot is free; `done` hears
/// when it is over.
async fn spawn_report(shared: &Shared, read: ReadEvent, done: Option<mpsc::Sender<()>>) {
    shared.in_flight.send_modify(|n| *n += 1);
    let Ok(slot) = shared.slots.clone().acquire_owned().await else {
        return;
    };
    let shared = shared.clone();
    let span = read_span(&read, &shared.links);
    tokio::spawn(
        async move {
            let result = shared.upstream.report(&read, &shared.stop).await;
            shared
                .metrics
                .read_reports
                .get_or_create(&WriteLabels {
                    depot: shared.upstream.depot_id().to_string(),
                    result: result.as_str().to_owned(),
                })
                .inc();
            if result != Reported::Abandoned {
                let _ = shared
                    .acks
                    .send((ReadKey::of(&read), read.files_present))
                    .await;
            }
            drop(slot);
            shared.in_flight.send_modify(|n| *n -= 1);
            if let Some(done) = done {
                let _ = done.send(()).await;
            }
        }
        .instrument(span),
    );
}

/// The span of one read's report: in the reporter's span for the logs, but
/// the root of a trace of its own (the report and the configserver's
/// recording of it are its children), linked to the push that wrote the
/// config when this depot noted it.
fn read_span(read: &ReadEvent, links: &PushLinks) -> tracing::Span {
    let span = info_span!("read", fqdn = %read.fqdn, revision = read.revision);
    if crate::telemetry::exporting() {
        crate::telemetry::set_root(&span);
        if let Some(traceparent) = links.take(&read.fqdn, read.revision) {
            crate::telemetry::add_link_from(&span, &traceparent);
        }
    }
    span
}

/// Writes acknowledgements to the journal in batches, retrying until they
/// land (a lost one only means the read is reported once more).
async fn write_acks(
    journal: Journal,
    mut acks: mpsc::Receiver<(ReadKey, bool)>,
) -> Result<(), String> {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while acks.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let mut delay = FIRST_RETRY;
        while let Err(e) = journal.ack_reads(&batch).await {
            error!(error = %e, "recording read acknowledgements in the journal failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
        batch.clear();
    }
    Ok(())
}
