//! Pushes to depots. One worker task per depot owns that depot's queue: a
//! client appears in it once however often it changes (the bundle is built
//! when sent, so the newest revision wins), at most `concurrency` pushes are
//! in flight over the depot's one HTTP/2 channel, an unreachable depot is
//! retried with exponential backoff and jitter, and a depot that answers
//! `SetPxeConfig` with UNIMPLEMENTED is served the legacy
//! `SetPxeConfigByFqdn` from then on (probed again after it comes back).
//! Results are written to the store in batches by one ack task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::bundle::{self, Job, Loaded, Rows};
use super::store::{Ack, DepotRecord, Store};
use super::triggers::Owed;
use crate::auth::AttachKey;
use crate::domain::Modules;
use crate::metrics::{DepotLabel, Metrics, PushLabels};
use crate::proto;

/// Clients whose bundles are built in one store read.
const BATCH: usize = 256;
/// How long a depot stays marked legacy before `SetPxeConfig` is tried again.
const LEGACY_RECHECK: Duration = Duration::from_secs(600);
/// First and longest wait before retrying a push the depot refused.
const REJECT_BACKOFF: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(600));

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
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            concurrency: 32,
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
        }
    }
}

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
#[derive(Debug, Clone)]
pub struct DepotRuntime {
    /// Whether the last call reached the depot.
    pub reachable: bool,
    /// The path in use.
    pub capability: Capability,
    /// The last depot-level error.
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
        }
    }
}

enum Msg {
    Owed(Vec<String>),
    Update(DepotRecord),
}

struct WorkerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    runtime: Arc<Mutex<DepotRuntime>>,
}

/// The push dispatcher of the configserver.
pub struct Dispatcher {
    store: Store,
    settings: DispatchSettings,
    modules: Modules,
    metrics: Arc<Metrics>,
    acks: mpsc::UnboundedSender<Ack>,
    workers: Mutex<HashMap<String, WorkerHandle>>,
    stop: CancellationToken,
}

impl Dispatcher {
    /// Starts a worker per stored depot; each first sends what it is owed.
    pub async fn start(
        store: Store,
        settings: DispatchSettings,
        modules: Modules,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, super::store::StoreError> {
        let (acks, acks_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_acks(store.clone(), acks_rx));
        let dispatcher = Arc::new(Self {
            store: store.clone(),
            settings,
            modules,
            metrics,
            acks,
            workers: Mutex::new(HashMap::new()),
            stop,
        });
        for depot in store.depots().await? {
            dispatcher.spawn_worker(depot);
        }
        Ok(dispatcher)
    }

    /// Tells the depots' workers about pushes now owed.
    pub fn notify(&self, owed: Vec<Owed>) {
        let mut by_depot: HashMap<String, Vec<String>> = HashMap::new();
        for o in owed {
            by_depot.entry(o.depot_id).or_default().push(o.client_id);
        }
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for (depot, clients) in by_depot {
            match workers.get(&depot) {
                Some(w) => {
                    let _ = w.tx.send(Msg::Owed(clients));
                }
                None => warn!(
                    depot,
                    clients = clients.len(),
                    "pushes owed to an unknown depot"
                ),
            }
        }
    }

    /// A depot was added or changed.
    pub fn depot_upserted(&self, depot: DepotRecord) {
        let existing = {
            let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            workers.get(depot.id.as_str()).map(|w| w.tx.clone())
        };
        match existing {
            Some(tx) => {
                let _ = tx.send(Msg::Update(depot));
            }
            None => self.spawn_worker(depot),
        }
    }

    /// A depot was deleted: its worker stops.
    pub fn depot_deleted(&self, id: &str) {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.metrics.queue_depth.remove(&DepotLabel {
            depot: id.to_owned(),
        });
    }

    /// What the dispatcher knows of each depot.
    pub fn runtime(&self) -> HashMap<String, DepotRuntime> {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, w)| {
                (
                    id.clone(),
                    w.runtime.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                )
            })
            .collect()
    }

    fn spawn_worker(&self, depot: DepotRecord) {
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = Arc::new(Mutex::new(DepotRuntime::default()));
        let id = depot.id.to_string();
        let span = info_span!("depot", depot = %id);
        let worker = Worker::new(
            depot,
            self.store.clone(),
            self.settings.clone(),
            self.modules,
            self.metrics.clone(),
            self.acks.clone(),
            runtime.clone(),
        );
        let stop = self.stop.clone();
        tokio::spawn(worker.run(rx, stop).instrument(span));
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, WorkerHandle { tx, runtime });
    }
}

/// Writes push results in batches: one transaction for whatever piled up.
async fn write_acks(store: Store, mut rx: mpsc::UnboundedReceiver<Ack>) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 4096).await > 0 {
        let mut delay = Duration::from_millis(100);
        while let Err(error) = store.record_acks(&batch).await {
            error!(%error, acks = batch.len(), "recording push results failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        batch.clear();
    }
}

type DepotClient = proto::depot_client::DepotClient<InterceptedService<Channel, AttachKey>>;

fn connect(depot: &DepotRecord, timeout: Duration) -> Result<DepotClient, String> {
    let endpoint = Endpoint::from_shared(depot.endpoint.clone())
        .map_err(|e| format!("invalid endpoint {}: {e}", depot.endpoint))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let auth = AttachKey::new(&depot.host_key).map_err(|e| e.to_string())?;
    Ok(proto::depot_client::DepotClient::with_interceptor(
        endpoint.connect_lazy(),
        auth,
    ))
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

/// The result of one push.
struct Outcome {
    client_id: String,
    revision: u64,
    op: &'static str,
    path: &'static str,
    result: PushResult,
}

enum PushResult {
    Delivered,
    /// The depot does not implement `SetPxeConfig`.
    Unimplemented,
    /// The depot could not be reached or could not take calls.
    Unreachable(String),
    /// The depot refused this client's push; or no bundle could be built.
    Rejected(String),
}

struct Worker {
    depot: DepotRecord,
    client: Result<DepotClient, String>,
    store: Store,
    settings: DispatchSettings,
    modules: Modules,
    metrics: Arc<Metrics>,
    acks: mpsc::UnboundedSender<Ack>,
    runtime: Arc<Mutex<DepotRuntime>>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Clients being loaded, loaded and waiting to be sent, or being sent.
    in_flight: HashSet<String>,
    /// Bundles loaded ahead of sending, so that one store read serves many pushes.
    ready: VecDeque<Loaded>,
    loading: bool,
    sending: usize,
    /// Clients that changed while in flight: queued again when they return.
    again: HashSet<String>,
    delayed: DelayQueue<String>,
    delayed_keys: HashMap<String, delay_queue::Key>,
    rejections: HashMap<String, u32>,
    capability: Capability,
    legacy_since: Option<Instant>,
    down: bool,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    results_tx: mpsc::UnboundedSender<Event>,
    results_rx: Option<mpsc::UnboundedReceiver<Event>>,
}

impl Worker {
    fn new(
        depot: DepotRecord,
        store: Store,
        settings: DispatchSettings,
        modules: Modules,
        metrics: Arc<Metrics>,
        acks: mpsc::UnboundedSender<Ack>,
        runtime: Arc<Mutex<DepotRuntime>>,
    ) -> Self {
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let client = connect(&depot, settings.timeout);
        Self {
            backoff: settings.min_backoff,
            depot,
            client,
            store,
            settings,
            modules,
            metrics,
            acks,
            runtime,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashSet::new(),
            ready: VecDeque::new(),
            loading: false,
            sending: 0,
            again: HashSet::new(),
            delayed: DelayQueue::new(),
            delayed_keys: HashMap::new(),
            rejections: HashMap::new(),
            capability: Capability::Unknown,
            legacy_since: None,
            down: false,
            retry_at: None,
            results_tx,
            results_rx: Some(results_rx),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, stop: CancellationToken) {
        let mut results = self.results_rx.take().expect("results receiver");
        if let Err(error) = &self.client {
            error!(%error, "depot endpoint unusable; pushes wait until it is fixed");
        }
        match self.store.owed_clients(self.depot.id.as_str()).await {
            Ok(owed) => {
                if !owed.is_empty() {
                    info!(owed = owed.len(), "resuming pushes owed to the depot");
                }
                owed.into_iter().for_each(|c| self.enqueue(c));
            }
            Err(error) => error!(%error, "loading owed pushes failed"),
        }
        loop {
            self.launch();
            self.publish();
            let retry_at = self.retry_at;
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Msg::Owed(clients)) => clients.into_iter().for_each(|c| self.enqueue(c)),
                    Some(Msg::Update(depot)) => self.update(depot),
                },
                Some(event) = results.recv() => match event {
                    Event::Loaded { requested, loaded } => self.loaded(requested, loaded),
                    Event::Pushed(outcome) => {
                        self.sending -= 1;
                        self.handle(outcome);
                    }
                },
                () = async { tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)).await }, if retry_at.is_some() => {
                    self.retry_at = None;
                }
                Some(expired) = self.delayed.next(), if !self.delayed.is_empty() => {
                    let client = expired.into_inner();
                    self.delayed_keys.remove(&client);
                    self.enqueue(client);
                }
                () = stop.cancelled() => break,
            }
        }
        debug!("dispatch worker stopped");
    }

    fn update(&mut self, depot: DepotRecord) {
        if depot.endpoint != self.depot.endpoint || depot.host_key != self.depot.host_key {
            info!(endpoint = %depot.endpoint, "depot endpoint or key changed; reconnecting");
            self.client = connect(&depot, self.settings.timeout);
            self.capability = Capability::Unknown;
            self.down = false;
            self.retry_at = None;
            self.backoff = self.settings.min_backoff;
            // Whatever waited for the old endpoint gets a fresh try.
            let waiting: Vec<String> = self.delayed_keys.keys().cloned().collect();
            waiting.into_iter().for_each(|c| self.enqueue(c));
        }
        self.depot = depot;
    }

    fn enqueue(&mut self, client: String) {
        if self.in_flight.contains(&client) {
            self.again.insert(client);
            return;
        }
        if let Some(key) = self.delayed_keys.remove(&client) {
            self.delayed.remove(&key);
        }
        if self.queued.insert(client.clone()) {
            self.queue.push_back(client);
        }
    }

    fn requeue_front(&mut self, client: String) {
        if self.queued.insert(client.clone()) {
            self.queue.push_front(client);
        }
    }

    /// Loads the next batch ahead when few bundles are ready, and sends
    /// ready bundles while there is room: full concurrency when the depot is
    /// up, a single probe once the backoff has run out when it is down.
    fn launch(&mut self) {
        let Ok(client) = &self.client else { return };
        if !self.loading && self.ready.len() < self.settings.concurrency && !self.queue.is_empty() {
            let batch: Vec<String> = self.queue.drain(..BATCH.min(self.queue.len())).collect();
            for c in &batch {
                self.queued.remove(c);
                self.in_flight.insert(c.clone());
            }
            self.loading = true;
            let (store, depot, modules, events) = (
                self.store.clone(),
                self.depot.id.to_string(),
                self.modules,
                self.results_tx.clone(),
            );
            tokio::spawn(async move {
                let loaded = bundle::load(&store, &depot, &batch, Rows::Owed, modules)
                    .await
                    .map_err(|e| e.to_string());
                let _ = events.send(Event::Loaded {
                    requested: batch,
                    loaded,
                });
            });
        }
        let limit = if self.down {
            usize::from(self.retry_at.is_none() && self.sending == 0)
        } else {
            self.settings.concurrency
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
            let events = self.results_tx.clone();
            let push = push_one(client.clone(), loaded, self.capability);
            tokio::spawn(
                async move {
                    let _ = events.send(Event::Pushed(push.await));
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
                for client in gone {
                    self.in_flight.remove(&client);
                    if self.again.remove(&client) {
                        self.enqueue(client);
                    }
                }
            }
            Err(error) => {
                error!(%error, "loading bundles failed; retrying");
                for client in requested {
                    self.in_flight.remove(&client);
                    self.again.remove(&client);
                    self.delay(client, Duration::from_secs(1));
                }
            }
        }
    }

    fn delay(&mut self, client: String, wait: Duration) {
        let key = self.delayed.insert(client.clone(), wait);
        self.delayed_keys.insert(client, key);
    }

    fn handle(&mut self, outcome: Outcome) {
        let Outcome {
            client_id,
            revision,
            op,
            path,
            result,
        } = outcome;
        self.in_flight.remove(&client_id);
        let label = |result: &str| PushLabels {
            depot: self.depot.id.to_string(),
            path: path.to_owned(),
            op: op.to_owned(),
            result: result.to_owned(),
        };
        match result {
            PushResult::Delivered => {
                self.metrics.pushes.get_or_create(&label("ok")).inc();
                self.rejections.remove(&client_id);
                self.reached();
                if op == "set" && path == "new" && self.capability == Capability::Unknown {
                    self.capability = Capability::New;
                }
                {
                    let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
                    if path == "legacy" {
                        rt.pushes_legacy += 1;
                    } else {
                        rt.pushes_new += 1;
                    }
                }
                let _ = self.acks.send(Ack::Delivered {
                    client_id: client_id.clone(),
                    depot_id: self.depot.id.to_string(),
                    revision,
                    path,
                });
            }
            PushResult::Unimplemented => {
                self.metrics
                    .pushes
                    .get_or_create(&label("unimplemented"))
                    .inc();
                self.reached();
                if self.capability != Capability::Legacy {
                    info!(
                        "depot does not implement SetPxeConfig; falling back to SetPxeConfigByFqdn"
                    );
                    self.capability = Capability::Legacy;
                    self.legacy_since = Some(Instant::now());
                }
                self.requeue_front(client_id.clone());
            }
            PushResult::Unreachable(error) => {
                self.metrics
                    .pushes
                    .get_or_create(&label("unavailable"))
                    .inc();
                self.requeue_front(client_id.clone());
                if self.retry_at.is_none() {
                    let wait = jitter(self.backoff);
                    self.retry_at = Some(tokio::time::Instant::now() + wait);
                    self.backoff = (self.backoff * 2).min(self.settings.max_backoff);
                    if !self.down {
                        warn!(%error, retry_in = ?wait, "depot unreachable; pushes wait");
                    } else {
                        debug!(%error, retry_in = ?wait, "depot still unreachable");
                    }
                    let _ = self.acks.send(Ack::Failed {
                        client_id: client_id.clone(),
                        depot_id: self.depot.id.to_string(),
                        revision,
                        error: error.clone(),
                        next_attempt_at: SystemTime::now() + wait,
                    });
                    let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
                    rt.next_retry = Some(SystemTime::now() + wait);
                }
                self.down = true;
                let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
                rt.reachable = false;
                rt.last_error = error;
            }
            PushResult::Rejected(error) => {
                self.metrics.pushes.get_or_create(&label("rejected")).inc();
                let attempts = self.rejections.entry(client_id.clone()).or_insert(0);
                let wait =
                    (REJECT_BACKOFF.0 * 2u32.saturating_pow(*attempts)).min(REJECT_BACKOFF.1);
                *attempts += 1;
                warn!(client = %client_id, revision, %error, retry_in = ?wait, "push refused");
                let _ = self.acks.send(Ack::Failed {
                    client_id: client_id.clone(),
                    depot_id: self.depot.id.to_string(),
                    revision,
                    error,
                    next_attempt_at: SystemTime::now() + wait,
                });
                if !self.again.contains(&client_id) {
                    self.delay(client_id.clone(), wait);
                }
            }
        }
        if self.again.remove(&client_id) {
            self.enqueue(client_id);
        }
    }

    /// The depot answered: it is up.
    fn reached(&mut self) {
        if self.down {
            info!("depot reachable again");
            self.down = false;
            // It may have been upgraded or replaced while away.
            self.capability = Capability::Unknown;
        }
        self.backoff = self.settings.min_backoff;
        self.retry_at = None;
        let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        rt.reachable = true;
        rt.last_contact = Some(SystemTime::now());
        rt.next_retry = None;
    }

    fn publish(&self) {
        let queued = self.queue.len() + self.in_flight.len() + self.delayed.len();
        // in_flight covers the ready bundles too.
        self.metrics
            .queue_depth
            .get_or_create(&DepotLabel {
                depot: self.depot.id.to_string(),
            })
            .set(queued as i64);
        let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        rt.queued = queued;
        rt.capability = self.capability;
    }
}

/// ±20 % so that many configservers' retries do not line up.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..1.2))
}

async fn push_one(mut client: DepotClient, loaded: Loaded, capability: Capability) -> Outcome {
    let Loaded {
        client_id,
        revision,
        job,
    } = loaded;
    let (op, path, call) = match job {
        Err(error) => {
            return Outcome {
                client_id,
                revision,
                op: "set",
                path: "new",
                result: PushResult::Rejected(error),
            };
        }
        Ok(Job::Remove) => {
            let r = client
                .remove_pxe_config(proto::RemovePxeConfigRequest {
                    fqdn: client_id.clone(),
                    revision,
                })
                .await
                .map(|_| ());
            (
                "remove",
                if capability == Capability::Legacy {
                    "legacy"
                } else {
                    "new"
                },
                r,
            )
        }
        Ok(Job::Set(bundle)) if capability == Capability::Legacy => {
            let r = client
                .set_pxe_config_by_fqdn(proto::SetPxeConfigByFqdnRequest {
                    fqdn: client_id.clone(),
                    revision,
                })
                .await
                .map(|_| ());
            drop(bundle);
            ("set", "legacy", r)
        }
        Ok(Job::Set(bundle)) => {
            let r = client
                .set_pxe_config(proto::ClientBundle::from(bundle.as_ref()))
                .await
                .map(|_| ());
            ("set", "new", r)
        }
    };
    let result = match call {
        Ok(()) => PushResult::Delivered,
        Err(status) => classify(&status, path),
    };
    Outcome {
        client_id,
        revision,
        op,
        path,
        result,
    }
}

fn classify(status: &tonic::Status, path: &str) -> PushResult {
    match status.code() {
        // The depot already holds a newer revision or has seen this one read.
        Code::Aborted => PushResult::Delivered,
        Code::Unimplemented if path == "new" => PushResult::Unimplemented,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::Unimplemented => {
            PushResult::Unreachable(format!("{:?}: {}", status.code(), status.message()))
        }
        _ => PushResult::Rejected(format!("{:?}: {}", status.code(), status.message())),
    }
}
