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

use super::client::{Upstream, unreachable};
use crate::depot::links::PushLinks;
use crate::depot::writer::{Journal, ReadEvent, ReadKey};
use crate::metrics::{Metrics, WriteLabels};
use crate::proto;
use crate::server::Supervisor;
use crate::status::reason_of;
use crate::wire::timestamp;

/// Read reports in flight at once.
const REPORT_CONCURRENCY: usize = 16;
/// The first wait before a failed report is sent again; it doubles each time.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one report the configserver
/// answered with an error.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between two tries while no configserver answers: a
/// configserver back from an outage hears from this depot within it.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(5);
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

/// Every result `pxeconf_read_reports_total` can show, each created at zero
/// when a depot that reports starts.
pub const REPORT_RESULTS: [&str; 3] = [
    Reported::Ok.as_str(),
    Reported::Refused.as_str(),
    Reported::Abandoned.as_str(),
];

impl Reported {
    const fn as_str(self) -> &'static str {
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
    gate: Arc<Gate>,
}

/// Whether the configservers answer, as this depot's reports find it.
/// While none does, one report at a time tries again (after a wait that
/// doubles up to [`MAX_PROBE_WAIT`]) and the others wait for its answer:
/// when a configserver is back they all go within that wait — not each
/// after a backoff of its own, which had grown to 30 s in a long outage
/// while the reports that arrived meanwhile queued behind them.
struct Gate {
    open: watch::Sender<bool>,
    /// Held by the one report that tries while the gate is closed.
    turn: tokio::sync::Mutex<()>,
    /// The wait before the next try while closed.
    wait: std::sync::Mutex<Duration>,
}

/// How a report may go.
enum Pass<'a> {
    /// The configservers answer.
    Open,
    /// None did: this report tries for all that wait.
    Turn(tokio::sync::MutexGuard<'a, ()>),
    /// The depot stops.
    Stopped,
}

impl Gate {
    fn new() -> Self {
        Self {
            open: watch::channel(true).0,
            turn: tokio::sync::Mutex::new(()),
            wait: std::sync::Mutex::new(FIRST_RETRY),
        }
    }

    /// Waits until a report may go: at once while the gate is open; else
    /// until this report's turn has waited its wait, or another's try got
    /// an answer.
    async fn pass(&self, stop: &CancellationToken) -> Pass<'_> {
        let mut open = self.open.subscribe();
        loop {
            if *open.borrow_and_update() {
                return Pass::Open;
            }
            tokio::select! {
                turn = self.turn.lock() => {
                    if *self.open.borrow() {
                        return Pass::Open;
                    }
                    let wait = *self.wait.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => return Pass::Turn(turn),
                        _ = open.wait_for(|open| *open) => return Pass::Open,
                        () = stop.cancelled() => return Pass::Stopped,
                    }
                }
                _ = open.changed() => {}
                () = stop.cancelled() => return Pass::Stopped,
            }
        }
    }

    /// A configserver answered (whatever it said): every report may go.
    fn answered(&self, waiting: usize) {
        *self
            .wait
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = FIRST_RETRY;
        if self
            .open
            .send_if_modified(|open| !std::mem::replace(open, true))
        {
            info!(
                reports = waiting,
                "a configserver answers again; the read reports waiting go"
            );
        }
    }

    /// No configserver answered a report; `turn` if it tried for all.
    fn unanswered(&self, turn: bool, status: &tonic::Status) {
        if turn {
            let mut wait = self
                .wait
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *wait = (*wait * 2).min(MAX_PROBE_WAIT);
            debug!(status = %crate::status::Brief(status), retry_in = ?*wait, "no configserver answers yet");
        } else if self
            .open
            .send_if_modified(|open| std::mem::replace(open, false))
        {
            warn!(status = %crate::status::Brief(status), "no configserver answers read reports; one at a time tries again until one does");
        }
    }
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
            gate: Arc::new(Gate::new()),
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

    /// Sends `read` until a configserver records or refuses it, through
    /// `gate` while none answers.
    async fn report(&self, read: &ReadEvent, shared: &Shared) -> Reported {
        let mut delay = FIRST_RETRY;
        // This report's own failures without an answer through an open gate.
        let mut silent_delay = FIRST_RETRY;
        loop {
            let turn = match shared.gate.pass(&shared.stop).await {
                Pass::Open => None,
                Pass::Turn(turn) => Some(turn),
                Pass::Stopped => return Reported::Abandoned,
            };
            let result = self.send_read(read).await;
            let silent = matches!(&result, Err(status) if no_answer(status));
            if !silent {
                shared.gate.answered(*shared.in_flight.borrow());
            }
            match result {
                Ok(r) => {
                    debug!(fqdn = %read.fqdn, action_request = %r.action_request, applied = r.applied, "read reported");
                    return Reported::Ok;
                }
                Err(status) if refused_for_good(&status) => {
                    warn!(fqdn = %read.fqdn, status = %crate::status::Brief(&status), "read report refused; not retried");
                    return Reported::Refused;
                }
                Err(status) if silent => {
                    shared.gate.unanswered(turn.is_some(), &status);
                    // Not at once through a gate another's answer opened
                    // meanwhile: a configserver answering only some calls
                    // must not make this one a busy loop.
                    if turn.is_none() {
                        tokio::select! {
                            () = tokio::time::sleep(silent_delay) => {}
                            () = shared.stop.cancelled() => return Reported::Abandoned,
                        }
                        silent_delay = (silent_delay * 2).min(MAX_PROBE_WAIT);
                    }
                }
                Err(status) => {
                    drop(turn);
                    warn!(fqdn = %read.fqdn, status = %crate::status::Brief(&status), retry_in = ?delay, "read report failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shared.stop.cancelled() => return Reported::Abandoned,
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        }
    }

    /// One try of `read`: each configserver once while they are
    /// unreachable.
    async fn send_read(
        &self,
        read: &ReadEvent,
    ) -> Result<proto::ReportPxeConfigReadResponse, tonic::Status> {
        let mut failovers = 0;
        loop {
            let (turn, mut client) = self.pick();
            let result = client
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
                Ok(r) => return Ok(r.into_inner()),
                Err(status) if failovers + 1 < self.count() && self.failed(&status, turn) => {
                    failovers += 1;
                }
                Err(status) => {
                    // The next try starts at the next configserver.
                    self.failed(&status, turn);
                    return Err(status);
                }
            }
        }
    }
}

/// Whether `status` says no configserver answered: unreachable, and not a
/// status one sent (those carry a reason — a busy database is an answer,
/// and its report backs off on its own rather than through the gate).
fn no_answer(status: &tonic::Status) -> bool {
    unreachable(status) && reason_of(status).is_none()
}

/// Whether the configserver itself (a status with pxeconf's reason) said
/// the report is wrong or not this depot's: it is dropped. The same codes
/// from something in between (a proxy's 403 reads as PERMISSION_DENIED)
/// are retried — a dropped read leaves the client's action set, and the
/// client runs it again at its next boot.
fn refused_for_good(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::NotFound | Code::PermissionDenied | Code::FailedPrecondition
    ) && reason_of(status).is_some()
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
            let result = shared.upstream.report(&read, &shared).await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Reports that wait at `gate` until it lets them go; each turn is a
    /// try that fails, counted in `tries`.
    fn waiting(
        gate: &Arc<Gate>,
        stop: &CancellationToken,
        tries: &Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<bool> {
        let (gate, stop, tries) = (gate.clone(), stop.clone(), tries.clone());
        tokio::spawn(async move {
            loop {
                match gate.pass(&stop).await {
                    Pass::Open => return true,
                    Pass::Stopped => return false,
                    Pass::Turn(turn) => {
                        tries.fetch_add(1, Ordering::SeqCst);
                        gate.unanswered(true, &tonic::Status::unavailable("down"));
                        drop(turn);
                    }
                }
            }
        })
    }

    #[test]
    fn only_the_configservers_own_refusal_drops_a_read() {
        use crate::status::{Problem, Reason};
        let own = Problem::new(Reason::WrongDepot, "not a client of this depot").into_status();
        assert!(refused_for_good(&own));
        let gone = Problem::new(Reason::NotFound, "no such client").into_status();
        assert!(refused_for_good(&gone));
        // What an ingress answering 403 or 400 becomes: no pxeconf reason.
        assert!(!refused_for_good(&tonic::Status::permission_denied(
            "forbidden"
        )));
        assert!(!refused_for_good(&tonic::Status::invalid_argument(
            "bad request"
        )));
        let key = Problem::new(Reason::Unauthenticated, "wrong key").into_status();
        assert!(!refused_for_good(&key));
    }

    #[test]
    fn a_busy_configserver_is_an_answer_and_a_refused_connection_none() {
        use crate::status::{Problem, Reason};
        let busy = Problem::new(Reason::DatabaseBusy, "busy").into_status();
        assert_eq!(busy.code(), Code::Unavailable);
        assert!(!no_answer(&busy));
        assert!(no_answer(&tonic::Status::unavailable("tcp connect error")));
        assert!(!no_answer(&tonic::Status::internal("a bug")));
    }

    #[tokio::test(start_paused = true)]
    async fn while_no_configserver_answers_one_report_tries_and_an_answer_lets_all_go() {
        let gate = Arc::new(Gate::new());
        let stop = CancellationToken::new();
        assert!(matches!(gate.pass(&stop).await, Pass::Open));
        gate.unanswered(false, &tonic::Status::unavailable("down"));
        let tries = Arc::new(AtomicUsize::new(0));
        let reports: Vec<_> = (0..3).map(|_| waiting(&gate, &stop, &tries)).collect();
        // One try after 0.2, 0.6, 1.4, 3.0, 6.2, 11.2, 16.2 s — not one per
        // report, and never more than 5 s apart.
        tokio::time::sleep(Duration::from_millis(16_100)).await;
        assert_eq!(tries.load(Ordering::SeqCst), 6);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(tries.load(Ordering::SeqCst), 7);
        let answered = tokio::time::Instant::now();
        gate.answered(3);
        for report in reports {
            assert!(report.await.unwrap());
        }
        assert_eq!(answered.elapsed(), Duration::ZERO, "all went at once");
        assert_eq!(tries.load(Ordering::SeqCst), 7);

        // Closed again, the wait starts over; stopping lets the waiting go.
        gate.unanswered(false, &tonic::Status::unavailable("down"));
        let reports: Vec<_> = (0..2).map(|_| waiting(&gate, &stop, &tries)).collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(tries.load(Ordering::SeqCst), 8);
        stop.cancel();
        for report in reports {
            assert!(!report.await.unwrap());
        }
    }
}
