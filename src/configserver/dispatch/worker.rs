//! One worker task per depot owns that depot's queue: a client appears in it
//! once however often it changes (its bundle is built shortly before it is
//! sent, and built again if the client changed in between, so the newest
//! revision wins), at most `concurrency` pushes are in flight over
//! the depot's one HTTP/2 channel, an unreachable depot is retried with
//! exponential backoff and jitter, and a depot that answers `SetPxeConfig`
//! with UNIMPLEMENTED is served the legacy `SetPxeConfigByFqdn` from then on
//! (probed again after it comes back). Sets go many to one
//! `BatchSetPxeConfigs` call where the depot implements it (one call, one
//! writer round for many clients), else one `SetPxeConfig` each. When it starts, the worker checks
//! what the depot really holds against the outbox (`super::verify`); what
//! becomes of each push is decided in `outcome`.

mod outcome;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span};

use super::acks::AckSender;
use super::push::{
    BatchOutcome, DepotClient, MAX_BATCH, Outcome, PushResult, batchable, connect, push_batch,
    push_one,
};
use super::queue::ClientQueue;
use super::runtime::{Capability, DepotRuntime};
use super::settings::DispatchSettings;
use super::verify::{VerifyFailure, verify};
use crate::configserver::store::{DepotRecord, Loaded, Owed, PushOp, PushPath, Rows, Store};
use crate::domain::Modules;
use crate::metrics::{DepotLabel, Metrics};
use crate::server::Supervisor;

/// Clients whose bundles are built in one store read.
const BATCH: usize = 256;
/// Messages waiting for a worker before their senders wait (back-pressure:
/// a message carries a whole write's clients, so few are ever queued).
const INBOX: usize = 64;
/// How long a depot stays marked legacy before `SetPxeConfig` is tried again.
const LEGACY_RECHECK: Duration = Duration::from_secs(600);
/// Unreachable at least this long, a depot may have been upgraded or
/// replaced meanwhile: what it implements is asked again when it is back.
/// Shorter, it was one push that timed out or a blip; a depot replaced that
/// quickly by one of another kind is found out at its first UNIMPLEMENTED
/// answer, or after `LEGACY_RECHECK`.
const AWAY_FOR_A_CHANGE: Duration = Duration::from_secs(5);
/// Batches in flight per depot when the queue is long: several, so that the
/// depot writes one while the next is on its way, and each still a round of
/// many clients.
const BATCHES_IN_FLIGHT: usize = 4;
/// First and longest wait before retrying a push the depot refused.
const REJECT_BACKOFF: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(600));
/// First and longest wait before retrying clients whose bundles could not
/// be loaded (growing while loads keep failing).
const LOAD_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// First and longest wait before asking the store again what the depot is
/// owed, after that failed when the worker started.
const RESUME_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// Deliveries remembered before the oldest are let go (once the ack writer
/// has stored them): the map would otherwise hold every client the depot
/// ever had, deleted ones too.
const PUSHED_PRUNE_AT: usize = 4096;
/// First and longest wait before checking the depot's holdings again after a
/// failed check.
const VERIFY_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// What every worker uses and nobody changes.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) settings: DispatchSettings,
    pub(super) modules: Modules,
    pub(super) metrics: Arc<Metrics>,
    pub(super) acks: AckSender,
    /// Pushes owed to any depot, found by a worker (a read recorded from an
    /// ABORTED, a check of the depot's holdings); the dispatcher routes them.
    pub(super) owed: mpsc::UnboundedSender<Vec<Owed>>,
    /// Where the worker task runs: its panic stops the configserver.
    pub(super) supervisor: Supervisor,
}

/// What the dispatcher tells a worker.
pub(super) enum Msg {
    /// These clients are owed a push.
    Owed(Vec<String>),
    /// The store says these clients are owed (a reload): no change known,
    /// so a refused client keeps its backoff.
    Reloaded(Vec<String>),
    /// The depot's record changed.
    Update(DepotRecord),
}

/// The dispatcher's side of a worker: its inbox and its published state.
/// Dropping it stops the worker.
pub(super) struct WorkerHandle {
    pub(super) inbox: mpsc::Sender<Msg>,
    pub(super) runtime: watch::Receiver<DepotRuntime>,
}

/// What the worker's helper tasks report.
enum Event {
    /// A batch of bundles was loaded (or the store failed); `requested` are
    /// the clients asked for.
    Loaded {
        requested: Vec<String>,
        loaded: Result<Vec<Loaded>, String>,
    },
    /// A push over connection `.0` (see `Worker::connection`) finished.
    Pushed(u64, Outcome),
    /// A batch of pushes over connection `.0` finished.
    PushedBatch(u64, BatchOutcome),
    /// The check of the depot's holdings over connection `.0` finished.
    Verified(u64, Result<Vec<Owed>, VerifyFailure>),
    /// Every ack handed to the writer before `prune_pushed` is stored.
    AcksFlushed,
    /// What the store says the depot is owed was read (or the store failed).
    Resumed(Result<Vec<String>, String>),
}

/// Where a step retried until it succeeds stands (the check of the
/// depot's holdings; reading what the depot is owed at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retried {
    /// Due at this time.
    Due(tokio::time::Instant, Duration),
    /// Running.
    Running(Duration),
    /// Done (or impossible: an old depot).
    Done,
}

/// A depot's worker.
pub(super) struct Worker {
    shared: Shared,
    depot: DepotRecord,
    client: Result<DepotClient, String>,
    /// Counts the depot's endpoint (or key) changes: an outcome over an
    /// earlier connection says nothing about the depot at the current one.
    /// Shared with the check of the depot's holdings, which asks the store
    /// only while its listing is still the current endpoint's.
    connection: Arc<AtomicU64>,
    runtime: watch::Sender<DepotRuntime>,
    queue: ClientQueue,
    /// Bundles loaded ahead of sending, so that one store read serves many pushes.
    ready: VecDeque<Loaded>,
    loading: bool,
    sending: usize,
    rejections: HashMap<String, u32>,
    /// Fresh revisions given to a client in a row after `NEWER_HELD`.
    superseded: HashMap<String, u32>,
    /// Per client, how often in a row the store failed to record what its
    /// push came back with (ALREADY_READ, NEWER_HELD): its retry backs off.
    store_failures: HashMap<String, u32>,
    /// The revision this worker delivered per client: its ack may not be
    /// in the store yet, and a late notice of the same revision (another
    /// replica's announcement) must not push it twice.
    pushed: HashMap<String, u64>,
    /// Earlier entries of `pushed`, kept until the ack writer confirms
    /// their acks are in the store (a load then finds them not owed).
    pushed_before: HashMap<String, u64>,
    /// Whether a flush for `pushed_before` is under way.
    pruning: bool,
    verify: Retried,
    /// Reading what the store says the depot is owed, retried until it
    /// succeeds once (the check of the depot's holdings leaves owed pushes
    /// to it).
    resume: Retried,
    /// The wait before retrying the next bundles that fail to load.
    load_wait: Duration,
    capability: Capability,
    legacy_since: Option<Instant>,
    /// Since when the depot answers `BatchSetPxeConfigs` UNIMPLEMENTED
    /// (asked again after `LEGACY_RECHECK`, or when it comes back).
    no_batches_since: Option<Instant>,
    /// Since when the depot is unreachable, if it is.
    down: Option<Instant>,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    events: mpsc::Sender<Event>,
}

impl Worker {
    /// Starts the worker of `depot`; it first sends what the depot is owed
    /// and stops with `stop` or when its handle is dropped.
    pub(super) fn spawn(
        depot: DepotRecord,
        shared: Shared,
        stop: CancellationToken,
    ) -> WorkerHandle {
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        // One slot per helper task that can be running: the pushes in flight,
        // the one load, and the one read of what the depot is owed, so a
        // helper never waits to report.
        let (events_tx, events) = mpsc::channel(shared.settings.concurrency + 3);
        let (runtime_tx, runtime) = watch::channel(DepotRuntime::default());
        // A root: the worker outlives the call that registered its depot,
        // and its pushes belong to the calls that set their actions.
        let span = info_span!(parent: None, "depot", depot = %depot.id);
        let worker = Self {
            client: connect(&depot, &shared.settings),
            connection: Arc::default(),
            backoff: shared.settings.min_backoff,
            shared,
            depot,
            runtime: runtime_tx,
            queue: ClientQueue::default(),
            ready: VecDeque::new(),
            loading: false,
            sending: 0,
            rejections: HashMap::new(),
            superseded: HashMap::new(),
            store_failures: HashMap::new(),
            pushed: HashMap::new(),
            pushed_before: HashMap::new(),
            pruning: false,
            verify: Retried::Due(tokio::time::Instant::now(), VERIFY_RETRY.0),
            resume: Retried::Due(tokio::time::Instant::now(), RESUME_RETRY.0),
            load_wait: LOAD_RETRY.0,
            capability: Capability::Unknown,
            legacy_since: None,
            no_batches_since: None,
            down: None,
            retry_at: None,
            events: events_tx,
        };
        let supervisor = worker.shared.supervisor.clone();
        // Ends when its depot is deleted or the configserver stops; a panic
        // stops the configserver.
        supervisor.spawn_worker(
            format!("dispatch worker of {}", worker.depot.id),
            async move {
                worker.run(inbox, events, stop).await;
                Ok(())
            }
            .instrument(span),
        );
        WorkerHandle {
            inbox: inbox_tx,
            runtime,
        }
    }

    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Msg>,
        mut events: mpsc::Receiver<Event>,
        stop: CancellationToken,
    ) {
        if let Err(error) = &self.client {
            error!(%error, "depot endpoint unusable; pushes wait until it is fixed");
        }
        loop {
            self.launch();
            self.publish();
            self.prune_pushed();
            let retry_at = self.retry_at;
            let verify_at = match self.verify {
                Retried::Due(at, _) => Some(at),
                _ => None,
            };
            let resume_at = match self.resume {
                Retried::Due(at, _) => Some(at),
                _ => None,
            };
            tokio::select! {
                msg = inbox.recv() => match msg {
                    // The depot was deleted: its gauge goes, after the last
                    // `publish` (the dispatcher's removal may come before it).
                    None => {
                        self.shared.metrics.queue_depth.remove(&DepotLabel {
                            depot: self.depot.id.to_string(),
                        });
                        break;
                    }
                    Some(Msg::Owed(clients)) => clients.into_iter().for_each(|c| self.queue.enqueue(c)),
                    Some(Msg::Reloaded(clients)) => clients.into_iter().for_each(|c| self.queue.reload(c)),
                    Some(Msg::Update(depot)) => self.update(depot),
                },
                // The worker holds a sender itself, so this never ends.
                Some(event) = events.recv() => match event {
                    Event::Loaded { requested, loaded } => self.loaded(requested, loaded),
                    Event::Pushed(connection, outcome) => {
                        self.sending -= 1;
                        match connection == self.connection() {
                            true => self.handle(outcome).await,
                            false => self.stale(outcome).await,
                        }
                    }
                    Event::PushedBatch(connection, batch) => self.handle_batch(connection, batch).await,
                    Event::Verified(connection, result) => self.verified(connection, result),
                    Event::Resumed(owed) => self.resumed(owed),
                    Event::AcksFlushed => {
                        self.pruning = false;
                        self.pushed_before.clear();
                    }
                },
                () = async { tokio::time::sleep_until(verify_at.unwrap_or_else(tokio::time::Instant::now)).await }, if verify_at.is_some() => {
                    self.start_verify();
                }
                () = async { tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)).await }, if retry_at.is_some() => {
                    self.retry_at = None;
                }
                () = async { tokio::time::sleep_until(resume_at.unwrap_or_else(tokio::time::Instant::now)).await }, if resume_at.is_some() => {
                    self.start_resume();
                }
                Some(client) = self.queue.next_due(), if self.queue.has_delayed() => {
                    self.queue.enqueue(client);
                }
                () = stop.cancelled() => break,
            }
        }
        debug!("dispatch worker stopped");
    }

    /// Whether this worker delivered `revision` to `client` and the store
    /// may not have the ack yet.
    fn delivered_already(&self, client: &str, revision: u64) -> bool {
        self.pushed.get(client) == Some(&revision)
            || self.pushed_before.get(client) == Some(&revision)
    }

    /// Lets the older deliveries go once their acks are stored: called
    /// between events, when every delivery handled so far has handed its
    /// ack to the writer, so the flush covers each entry it lets go.
    fn prune_pushed(&mut self) {
        if self.pruning || self.pushed.len() < PUSHED_PRUNE_AT {
            return;
        }
        self.pruning = true;
        self.pushed_before = std::mem::take(&mut self.pushed);
        let acks = self.shared.acks.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            // Fails only while the configserver stops: nothing to let go then.
            if acks.flush().await.is_ok() {
                let _ = events.send(Event::AcksFlushed).await;
            }
        });
    }

    /// Reads what the store says is owed to the depot, in a task of its
    /// own (a slow store holds up no event).
    fn start_resume(&mut self) {
        let Retried::Due(_, wait) = self.resume else {
            return;
        };
        self.resume = Retried::Running(wait);
        let (store, depot) = (self.shared.store.clone(), self.depot.id.to_string());
        report(
            self.events.clone(),
            async move { Event::Resumed(store.owed_clients(&depot).await.map_err(|e| e.to_string())) },
            |why| Event::Resumed(Err(why)),
        );
    }

    /// Queues what the store says is owed to the depot; while reading it
    /// fails it is read again, waiting longer each time (nothing else would
    /// send what was owed before the worker started: SQLite has no periodic
    /// reload, and the check of the depot's holdings leaves owed pushes to
    /// this).
    fn resumed(&mut self, owed: Result<Vec<String>, String>) {
        let Retried::Running(wait) = self.resume else {
            return;
        };
        match owed {
            Ok(owed) => {
                self.resume = Retried::Done;
                if !owed.is_empty() {
                    info!(owed = owed.len(), "resuming pushes owed to the depot");
                }
                owed.into_iter().for_each(|c| self.queue.enqueue(c));
            }
            Err(error) => {
                error!(%error, retry_in = ?wait, "loading owed pushes failed; retrying");
                let next = (wait * 2).min(RESUME_RETRY.1);
                self.resume = Retried::Due(tokio::time::Instant::now() + jitter(wait), next);
            }
        }
    }

    fn update(&mut self, depot: DepotRecord) {
        if depot.endpoint != self.depot.endpoint || depot.host_key != self.depot.host_key {
            info!(endpoint = %depot.endpoint, "depot endpoint or key changed; reconnecting");
            self.client = connect(&depot, &self.shared.settings);
            self.connection.fetch_add(1, Ordering::Relaxed);
            // What was delivered, refused or superseded over the old
            // connection tells nothing about the new one.
            self.pushed.clear();
            self.pushed_before.clear();
            self.rejections.clear();
            self.superseded.clear();
            self.store_failures.clear();
            self.capability = Capability::Unknown;
            self.no_batches_since = None;
            self.down = None;
            self.retry_at = None;
            self.backoff = self.shared.settings.min_backoff;
            // Whatever waited for the old endpoint gets a fresh try.
            self.queue.wake_delayed();
            // Another depot may answer there: check what it holds, at once
            // (a check still running lists the old one: it is done again).
            if !matches!(self.verify, Retried::Running(_)) {
                self.verify = Retried::Due(tokio::time::Instant::now(), VERIFY_RETRY.0);
            }
        }
        self.depot = depot;
    }

    /// Loads the next batch ahead when few bundles are ready, and sends
    /// ready bundles while there is room.
    fn launch(&mut self) {
        if self.client.is_ok() {
            self.load_ahead();
            self.send_ready();
            // Bundles found stale went back to be loaded again.
            self.load_ahead();
        }
    }

    /// The next ready bundle that is still current. A bundle waits in
    /// `ready` until there is room — while the depot is down, for as long
    /// as it is down — and one whose client changed meanwhile goes back to
    /// be loaded again, first in line: sent, it would put the old config
    /// (an action since cancelled, a client since deleted or moved) on the
    /// depot, and the change would follow only behind everything queued.
    fn next_ready(&mut self) -> Option<Loaded> {
        let mut stale = Vec::new();
        let next = loop {
            let Some(loaded) = self.ready.pop_front() else {
                break None;
            };
            if !self.queue.changed(&loaded.client_id) {
                break Some(loaded);
            }
            debug!(client = %loaded.client_id, revision = loaded.revision, "changed since loaded; loading it again");
            stale.push(loaded.client_id);
        };
        // Each goes first: the last one found first, so they keep their order.
        stale
            .into_iter()
            .rev()
            .for_each(|c| self.queue.retry_first(c));
        next
    }

    fn load_ahead(&mut self) {
        if self.loading
            || self.ready.len() >= self.shared.settings.concurrency
            || !self.queue.has_waiting()
        {
            return;
        }
        let batch = self.queue.take(BATCH);
        self.loading = true;
        let (store, depot, modules, events) = (
            self.shared.store.clone(),
            self.depot.id.to_string(),
            self.shared.modules,
            self.events.clone(),
        );
        let requested = batch.clone();
        report(
            events,
            async move {
                let loaded = store
                    .load_bundles(&depot, &batch, Rows::Owed, modules)
                    .await
                    .map_err(|e| e.to_string());
                Event::Loaded {
                    requested: batch,
                    loaded,
                }
            },
            move |why| Event::Loaded {
                requested,
                loaded: Err(why),
            },
        );
    }

    /// Sends ready bundles: full concurrency when the depot is up, a single
    /// probe once the backoff has run out when it is down.
    fn send_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let Ok(client) = self.client.clone() else {
            return;
        };
        let limit = if self.down.is_some() {
            usize::from(self.retry_at.is_none() && self.sending == 0)
        } else {
            self.shared.settings.concurrency
        };
        if self.capability == Capability::Legacy
            && self
                .legacy_since
                .is_some_and(|t| t.elapsed() > LEGACY_RECHECK)
        {
            self.capability = Capability::Unknown;
        }
        if self
            .no_batches_since
            .is_some_and(|t| t.elapsed() > LEGACY_RECHECK)
        {
            self.no_batches_since = None;
        }
        let batches = self.capability != Capability::Legacy && self.no_batches_since.is_none();
        // A long queue goes out in a few batches at once, a short one as it
        // comes (a single action is a batch of one).
        let most = (limit / BATCHES_IN_FLIGHT).clamp(1, MAX_BATCH);
        while self.sending < limit {
            let Some(loaded) = self.next_ready() else {
                break;
            };
            let events = self.events.clone();
            let connection = self.connection();
            let epoch = self.shared.store.epoch().to_owned();
            if batches && batchable(&loaded) {
                let room = most.min(limit - self.sending);
                let mut batch = vec![loaded];
                while batch.len() < room
                    && let Some(next) = self.next_ready()
                {
                    if !batchable(&next) {
                        self.ready.push_front(next);
                        break;
                    }
                    batch.push(next);
                }
                self.sending += batch.len();
                let sent: Vec<(String, u64)> = (batch.iter())
                    .map(|l| (l.client_id.clone(), l.revision))
                    .collect();
                let push = push_batch(client.clone(), batch, self.capability, epoch);
                report(
                    events,
                    async move { Event::PushedBatch(connection, push.await) },
                    move |why| {
                        let outcomes = (sent.into_iter())
                            .map(|(client_id, revision)| failed_push(client_id, revision, &why))
                            .collect();
                        Event::PushedBatch(
                            connection,
                            BatchOutcome {
                                outcomes,
                                refused: false,
                            },
                        )
                    },
                );
                continue;
            }
            self.sending += 1;
            let (client_id, revision) = (loaded.client_id.clone(), loaded.revision);
            let push = push_one(client.clone(), loaded, self.capability, epoch);
            report(
                events,
                async move { Event::Pushed(connection, push.await) },
                move |why| Event::Pushed(connection, failed_push(client_id, revision, &why)),
            );
        }
    }

    /// A batch's outcomes, each handled as its own push's.
    async fn handle_batch(&mut self, connection: u64, batch: BatchOutcome) {
        self.sending -= batch.outcomes.len();
        if connection != self.connection() {
            for outcome in batch.outcomes {
                self.stale(outcome).await;
            }
            return;
        }
        for outcome in batch.outcomes {
            self.handle(outcome).await;
        }
        // After the outcomes: a depot back from an outage resets what is
        // known about it (`reached`), and this refusal is news from now.
        if batch.refused && self.no_batches_since.is_none() {
            info!(
                "depot does not implement BatchSetPxeConfigs; pushing one SetPxeConfig per client"
            );
            self.no_batches_since = Some(Instant::now());
        }
    }

    fn loaded(&mut self, requested: Vec<String>, loaded: Result<Vec<Loaded>, String>) {
        self.loading = false;
        match loaded {
            Ok(loaded) => {
                self.load_wait = LOAD_RETRY.0;
                let found: HashSet<&str> = loaded.iter().map(|l| l.client_id.as_str()).collect();
                let mut gone: Vec<String> = requested
                    .into_iter()
                    .filter(|c| !found.contains(c.as_str()))
                    .collect();
                for l in loaded {
                    match self.delivered_already(&l.client_id, l.revision) {
                        true => gone.push(l.client_id),
                        false => self.ready.push_back(l),
                    }
                }
                // Delivered meanwhile, or no longer owed to this depot.
                gone.into_iter().for_each(|c| self.queue.settle(c));
            }
            Err(error) => {
                let wait = jitter(self.load_wait);
                error!(%error, retry_in = ?wait, "loading bundles failed; retrying");
                self.load_wait = (self.load_wait * 2).min(LOAD_RETRY.1);
                for client in requested {
                    self.queue.retry_load(client, wait);
                }
            }
        }
    }

    /// Starts the check of what the depot holds (once at a time).
    fn start_verify(&mut self) {
        let Retried::Due(_, wait) = self.verify else {
            return;
        };
        let Ok(client) = &self.client else {
            // An unusable endpoint: checked again when it changes.
            self.verify = Retried::Done;
            return;
        };
        self.verify = Retried::Running(wait);
        let (connections, connection) = (self.connection.clone(), self.connection());
        let check = verify(
            client.clone(),
            self.shared.store.clone(),
            self.shared.acks.clone(),
            self.depot.id.to_string(),
            move || connections.load(Ordering::Relaxed) == connection,
        );
        let events = self.events.clone();
        report(
            events,
            async move { Event::Verified(connection, check.await) },
            move |why| Event::Verified(connection, Err(VerifyFailure::Failed(why))),
        );
    }

    /// The check is done: what it found is owed; a failed one is retried,
    /// and one of an endpoint the depot has left is done again at the
    /// current one.
    fn verified(&mut self, connection: u64, result: Result<Vec<Owed>, VerifyFailure>) {
        let wait = match self.verify {
            Retried::Running(wait) => wait,
            _ => VERIFY_RETRY.0,
        };
        if connection != self.connection() {
            debug!("the depot's holdings were listed at its previous endpoint; checking again");
            // What it committed is owed whatever the endpoint: the next
            // check finds those rows owed already and returns none of them
            // (on SQLite nothing else would queue them until a restart).
            if let Ok(owed) = result {
                self.notify(owed);
            }
            self.verify = Retried::Due(tokio::time::Instant::now(), VERIFY_RETRY.0);
            return;
        }
        match result {
            // The depot answered: it is up (a moved one shows it at once).
            Ok(owed) => {
                self.reached();
                self.verify = Retried::Done;
                self.notify(owed);
            }
            Err(VerifyFailure::Unsupported) => {
                self.reached();
                info!("the depot cannot list its configs; its holdings are not checked");
                self.verify = Retried::Done;
            }
            // Seen above; here only if the change came between the two looks.
            Err(VerifyFailure::Moved) => {
                self.verify = Retried::Due(tokio::time::Instant::now(), VERIFY_RETRY.0);
            }
            Err(VerifyFailure::Failed(error)) => self.verify_again(&error, wait),
            Err(VerifyFailure::Unanswered(error, started)) => {
                self.verify_again(&error, wait);
                // A depot nothing was pushed to yet shows why it is not
                // reachable (`ListDepots`), not only after a push failed —
                // unless it answered a push since the check started.
                self.runtime.send_if_modified(|rt| {
                    if rt.last_contact.is_some_and(|at| at >= started) {
                        return false;
                    }
                    rt.reachable = false;
                    rt.last_error = error;
                    true
                });
            }
        }
    }

    /// A failed check is tried again after `wait`, doubling.
    fn verify_again(&mut self, error: &str, wait: Duration) {
        debug!(%error, retry_in = ?wait, "checking the depot's holdings failed; retrying");
        let next = (wait * 2).min(VERIFY_RETRY.1);
        self.verify = Retried::Due(tokio::time::Instant::now() + jitter(wait), next);
    }

    /// Pushes found owed: this depot's are queued here, others go through
    /// the dispatcher.
    fn notify(&mut self, owed: Vec<Owed>) {
        let depot = self.depot.id.as_str();
        let (mine, others): (Vec<Owed>, Vec<Owed>) =
            owed.into_iter().partition(|o| o.depot_id == depot);
        for o in mine {
            // Found owed again: whatever was delivered is to be sent again.
            self.pushed.remove(&o.client_id);
            self.pushed_before.remove(&o.client_id);
            self.queue.enqueue(o.client_id);
        }
        if !others.is_empty() {
            let _ = self.shared.owed.send(others);
        }
    }

    /// The current connection (see the field).
    fn connection(&self) -> u64 {
        self.connection.load(Ordering::Relaxed)
    }

    /// Publishes the queue depth and path in use.
    fn publish(&self) {
        // The queue's in-flight clients cover the ready bundles too.
        let queued = self.queue.len();
        self.shared
            .metrics
            .queue_depth
            .get_or_create(&DepotLabel {
                depot: self.depot.id.to_string(),
            })
            .set(queued as i64);
        let capability = self.capability;
        let batches = self.no_batches_since.is_none();
        let remembered = self.pushed.len() + self.pushed_before.len();
        self.runtime.send_if_modified(|rt| {
            let changed = rt.queued != queued
                || rt.capability != capability
                || rt.batches != batches
                || rt.remembered != remembered;
            rt.queued = queued;
            rt.capability = capability;
            rt.batches = batches;
            rt.remembered = remembered;
            changed
        });
    }
}

/// Runs a helper task whose event the worker waits for (a load, a push, a
/// check): a panic in it still reports, with the event `failed` makes, so
/// that the worker's counts of work in flight come down and the work is
/// retried, not lost with the task.
fn report(
    events: mpsc::Sender<Event>,
    task: impl Future<Output = Event> + Send + 'static,
    failed: impl FnOnce(String) -> Event + Send + 'static,
) {
    tokio::spawn(
        async move {
            let event = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(event) => event,
                Err(_) => {
                    error!("a dispatch task panicked; its work is retried");
                    failed("the configserver's dispatch task failed".to_owned())
                }
            };
            let _ = events.send(event).await;
        }
        .in_current_span(),
    );
}

/// A push whose task failed before it had an outcome: retried as a
/// depot-side failure is (soon, on its own backoff).
fn failed_push(client_id: String, revision: u64, why: &str) -> Outcome {
    Outcome {
        client_id,
        revision,
        op: PushOp::Set,
        path: PushPath::New,
        result: PushResult::Local(why.to_owned()),
        template: None,
    }
}

/// ±20 % so that many configservers' retries do not line up.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_helper_task_that_panics_still_reports_its_work_as_failed() {
        let (events, mut rx) = mpsc::channel(4);
        report(events.clone(), async { panic!("a bug in a push") }, |why| {
            Event::Pushed(7, failed_push("a.example.org".into(), 3, &why))
        });
        // Without the report the worker would wait for good: bounded here.
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        match got.expect("the panicked task reported") {
            Some(Event::Pushed(7, outcome)) => {
                assert_eq!(
                    (outcome.client_id.as_str(), outcome.revision),
                    ("a.example.org", 3)
                );
                assert!(matches!(outcome.result, PushResult::Local(_)));
            }
            _ => panic!("expected the failed push"),
        }
        // A task that does not panic reports its own event.
        report(events, async { Event::AcksFlushed }, |_| unreachable!());
        assert!(matches!(rx.recv().await, Some(Event::AcksFlushed)));
    }
}
