//! One worker task per depot owns that depot's queue: a client appears in it
//! once however often it changes (the bundle is built when sent, so the
//! newest revision wins), at most `concurrency` pushes are in flight over
//! the depot's one HTTP/2 channel, an unreachable depot is retried with
//! exponential backoff and jitter, and a depot that answers `SetPxeConfig`
//! with UNIMPLEMENTED is served the legacy `SetPxeConfigByFqdn` from then on
//! (probed again after it comes back).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::acks::AckSender;
use super::push::{DepotClient, Outcome, PushResult, connect, push_one};
use super::queue::ClientQueue;
use super::runtime::{Capability, DepotRuntime};
use super::settings::DispatchSettings;
use crate::configserver::store::{Ack, DepotRecord, Loaded, PushOp, PushPath, Rows, Store};
use crate::domain::Modules;
use crate::metrics::{DepotLabel, Metrics, PushLabels};

/// Clients whose bundles are built in one store read.
const BATCH: usize = 256;
/// Messages waiting for a worker before their senders wait (back-pressure:
/// a message carries a whole write's clients, so few are ever queued).
const INBOX: usize = 64;
/// How long a depot stays marked legacy before `SetPxeConfig` is tried again.
const LEGACY_RECHECK: Duration = Duration::from_secs(600);
/// First and longest wait before retrying a push the depot refused.
const REJECT_BACKOFF: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(600));
/// Wait before retrying clients whose bundles could not be loaded.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// What every worker uses and nobody changes.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) settings: DispatchSettings,
    pub(super) modules: Modules,
    pub(super) metrics: Arc<Metrics>,
    pub(super) acks: AckSender,
}

/// What the dispatcher tells a worker.
pub(super) enum Msg {
    /// These clients are owed a push.
    Owed(Vec<String>),
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
    /// A push finished.
    Pushed(Outcome),
}

/// A depot's worker.
pub(super) struct Worker {
    shared: Shared,
    depot: DepotRecord,
    client: Result<DepotClient, String>,
    runtime: watch::Sender<DepotRuntime>,
    queue: ClientQueue,
    /// Bundles loaded ahead of sending, so that one store read serves many pushes.
    ready: VecDeque<Loaded>,
    loading: bool,
    sending: usize,
    rejections: HashMap<String, u32>,
    capability: Capability,
    legacy_since: Option<Instant>,
    down: bool,
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
        // One slot per helper task that can be running: the pushes in flight
        // and the one load, so a helper never waits to report.
        let (events_tx, events) = mpsc::channel(shared.settings.concurrency + 1);
        let (runtime_tx, runtime) = watch::channel(DepotRuntime::default());
        let span = info_span!("depot", depot = %depot.id);
        let worker = Self {
            client: connect(&depot, &shared.settings),
            backoff: shared.settings.min_backoff,
            shared,
            depot,
            runtime: runtime_tx,
            queue: ClientQueue::default(),
            ready: VecDeque::new(),
            loading: false,
            sending: 0,
            rejections: HashMap::new(),
            capability: Capability::Unknown,
            legacy_since: None,
            down: false,
            retry_at: None,
            events: events_tx,
        };
        tokio::spawn(worker.run(inbox, events, stop).instrument(span));
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
        self.resume().await;
        loop {
            self.launch();
            self.publish();
            let retry_at = self.retry_at;
            tokio::select! {
                msg = inbox.recv() => match msg {
                    None => break,
                    Some(Msg::Owed(clients)) => clients.into_iter().for_each(|c| self.queue.enqueue(c)),
                    Some(Msg::Update(depot)) => self.update(depot),
                },
                // The worker holds a sender itself, so this never ends.
                Some(event) = events.recv() => match event {
                    Event::Loaded { requested, loaded } => self.loaded(requested, loaded),
                    Event::Pushed(outcome) => {
                        self.sending -= 1;
                        self.handle(outcome).await;
                    }
                },
                () = async { tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)).await }, if retry_at.is_some() => {
                    self.retry_at = None;
                }
                Some(client) = self.queue.next_due(), if self.queue.has_delayed() => {
                    self.queue.enqueue(client);
                }
                () = stop.cancelled() => break,
            }
        }
        debug!("dispatch worker stopped");
    }

    /// Queues what the store says is owed to the depot.
    async fn resume(&mut self) {
        match self.shared.store.owed_clients(self.depot.id.as_str()).await {
            Ok(owed) => {
                if !owed.is_empty() {
                    info!(owed = owed.len(), "resuming pushes owed to the depot");
                }
                owed.into_iter().for_each(|c| self.queue.enqueue(c));
            }
            Err(error) => error!(%error, "loading owed pushes failed"),
        }
    }

    fn update(&mut self, depot: DepotRecord) {
        if depot.endpoint != self.depot.endpoint || depot.host_key != self.depot.host_key {
            info!(endpoint = %depot.endpoint, "depot endpoint or key changed; reconnecting");
            self.client = connect(&depot, &self.shared.settings);
            self.capability = Capability::Unknown;
            self.down = false;
            self.retry_at = None;
            self.backoff = self.shared.settings.min_backoff;
            // Whatever waited for the old endpoint gets a fresh try.
            self.queue.wake_delayed();
        }
        self.depot = depot;
    }

    /// Loads the next batch ahead when few bundles are ready, and sends
    /// ready bundles while there is room.
    fn launch(&mut self) {
        if self.client.is_ok() {
            self.load_ahead();
            self.send_ready();
        }
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
        tokio::spawn(async move {
            let loaded = store
                .load_bundles(&depot, &batch, Rows::Owed, modules)
                .await
                .map_err(|e| e.to_string());
            let _ = events
                .send(Event::Loaded {
                    requested: batch,
                    loaded,
                })
                .await;
        });
    }

    /// Sends ready bundles: full concurrency when the depot is up, a single
    /// probe once the backoff has run out when it is down.
    fn send_ready(&mut self) {
        let Ok(client) = &self.client else { return };
        let limit = if self.down {
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
        while self.sending < limit {
            let Some(loaded) = self.ready.pop_front() else {
                break;
            };
            self.sending += 1;
            let events = self.events.clone();
            let push = push_one(client.clone(), loaded, self.capability);
            tokio::spawn(
                async move {
                    let _ = events.send(Event::Pushed(push.await)).await;
                }
                .in_current_span(),
            );
        }
    }

    fn loaded(&mut self, requested: Vec<String>, loaded: Result<Vec<Loaded>, String>) {
        self.loading = false;
        match loaded {
            Ok(loaded) => {
                let found: HashSet<&str> = loaded.iter().map(|l| l.client_id.as_str()).collect();
                let gone: Vec<String> = requested
                    .into_iter()
                    .filter(|c| !found.contains(c.as_str()))
                    .collect();
                self.ready.extend(loaded);
                // Delivered meanwhile, or no longer owed to this depot.
                gone.into_iter().for_each(|c| self.queue.settle(c));
            }
            Err(error) => {
                error!(%error, "loading bundles failed; retrying");
                for client in requested {
                    self.queue.retry_load(client, LOAD_RETRY);
                }
            }
        }
    }

    async fn handle(&mut self, outcome: Outcome) {
        let Outcome {
            client_id,
            revision,
            op,
            path,
            result,
        } = outcome;
        self.count(op, path, &result);
        match result {
            PushResult::Delivered => self.delivered(client_id, revision, op, path).await,
            PushResult::Unimplemented => self.unimplemented(client_id),
            PushResult::Unreachable(error) => self.unreachable(client_id, revision, error).await,
            PushResult::Rejected(error) => self.rejected(client_id, revision, error).await,
        }
    }

    /// Counts a push at the metrics edge, where the labels become text.
    fn count(&self, op: PushOp, path: PushPath, result: &PushResult) {
        let labels = PushLabels {
            depot: self.depot.id.to_string(),
            path: path.as_str().to_owned(),
            op: op.as_str().to_owned(),
            result: result.label().to_owned(),
        };
        self.shared.metrics.pushes.get_or_create(&labels).inc();
    }

    async fn delivered(&mut self, client_id: String, revision: u64, op: PushOp, path: PushPath) {
        self.rejections.remove(&client_id);
        self.reached();
        if op == PushOp::Set && path == PushPath::New && self.capability == Capability::Unknown {
            self.capability = Capability::New;
        }
        self.runtime.send_modify(|rt| match path {
            PushPath::Legacy => rt.pushes_legacy += 1,
            PushPath::New => rt.pushes_new += 1,
        });
        self.ack(Ack::Delivered {
            client_id: client_id.clone(),
            depot_id: self.depot.id.to_string(),
            revision,
            path,
        })
        .await;
        self.queue.settle(client_id);
    }

    fn unimplemented(&mut self, client_id: String) {
        self.reached();
        if self.capability != Capability::Legacy {
            info!("depot does not implement SetPxeConfig; falling back to SetPxeConfigByFqdn");
            self.capability = Capability::Legacy;
            self.legacy_since = Some(Instant::now());
        }
        self.queue.retry_first(client_id);
    }

    /// The depot is down: the push waits at the front, and the first failure
    /// of a round sets when the depot is probed next.
    async fn unreachable(&mut self, client_id: String, revision: u64, error: String) {
        self.queue.retry_first(client_id.clone());
        if self.retry_at.is_none() {
            let wait = jitter(self.backoff);
            self.retry_at = Some(tokio::time::Instant::now() + wait);
            self.backoff = (self.backoff * 2).min(self.shared.settings.max_backoff);
            if !self.down {
                warn!(%error, retry_in = ?wait, "depot unreachable; pushes wait");
            } else {
                debug!(%error, retry_in = ?wait, "depot still unreachable");
            }
            let next = SystemTime::now() + wait;
            self.runtime.send_modify(|rt| rt.next_retry = Some(next));
            self.ack(Ack::Failed {
                client_id,
                depot_id: self.depot.id.to_string(),
                revision,
                error: error.clone(),
                next_attempt_at: next,
            })
            .await;
        }
        self.down = true;
        self.runtime.send_modify(|rt| {
            rt.reachable = false;
            rt.last_error = error;
        });
    }

    /// The depot refused this client: it is retried on its own backoff.
    async fn rejected(&mut self, client_id: String, revision: u64, error: String) {
        let attempts = self.rejections.entry(client_id.clone()).or_insert(0);
        let wait = (REJECT_BACKOFF.0 * 2u32.saturating_pow(*attempts)).min(REJECT_BACKOFF.1);
        *attempts += 1;
        warn!(client = %client_id, revision, %error, retry_in = ?wait, "push refused");
        self.ack(Ack::Failed {
            client_id: client_id.clone(),
            depot_id: self.depot.id.to_string(),
            revision,
            error,
            next_attempt_at: SystemTime::now() + wait,
        })
        .await;
        self.queue.retry_after(client_id, wait);
    }

    /// Hands a result to the ack writer, waiting while it is behind.
    async fn ack(&self, ack: Ack) {
        // Gone only while the configserver shuts down; the outbox still
        // owes what was not recorded, so nothing is lost.
        let _ = self.shared.acks.send(ack).await;
    }

    /// The depot answered: it is up.
    fn reached(&mut self) {
        if self.down {
            info!("depot reachable again");
            self.down = false;
            // It may have been upgraded or replaced while away.
            self.capability = Capability::Unknown;
        }
        self.backoff = self.shared.settings.min_backoff;
        self.retry_at = None;
        self.runtime.send_modify(|rt| {
            rt.reachable = true;
            rt.last_contact = Some(SystemTime::now());
            rt.next_retry = None;
        });
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
        self.runtime.send_if_modified(|rt| {
            let changed = rt.queued != queued || rt.capability != capability;
            rt.queued = queued;
            rt.capability = capability;
            changed
        });
    }
}

/// ±20 % so that many configservers' retries do not line up.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..1.2))
}
