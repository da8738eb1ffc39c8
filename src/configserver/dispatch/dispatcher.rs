//! The push dispatcher: one worker per depot, started for every stored
//! depot and for each one registered later; writes tell it which clients
//! are owed, status queries read each worker's published state. On
//! PostgreSQL several configservers share the database: a worker runs only
//! for the depots whose lease this replica holds (`replica`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::acks;
use super::replica::{self, Holder, Lost};
use super::runtime::DepotRuntime;
use super::settings::DispatchSettings;
use super::worker::{Msg, Shared, Worker, WorkerHandle};
use crate::configserver::keys::DepotKeys;
use crate::configserver::store::{Announcement, DepotRecord, Owed, Store, StoreError};
use crate::domain::Modules;
use crate::metrics::{DepotLabel, Metrics};
use crate::server::Supervisor;

/// The push dispatcher of the configserver.
pub struct Dispatcher {
    shared: Shared,
    workers: Mutex<HashMap<String, WorkerHandle>>,
    stop: CancellationToken,
    /// Several replicas share the database: workers follow the leases.
    replicated: bool,
    /// Announcements may have been lost (see `replica`).
    lost: Lost,
    /// Renews the leases at once (a new depot is claimed now, not at the
    /// next renewal a second later).
    renew_now: Arc<Notify>,
    /// The keys depots authenticate with, kept to the database's (see
    /// [`Dispatcher::follow_keys`]).
    keys: OnceLock<DepotKeys>,
    /// Cancelled once the leases are released after `stop` (replicated).
    released: CancellationToken,
    /// This replica's lease holder id (replicated).
    holder: Option<String>,
}

impl Dispatcher {
    /// Sends the depot's worker what the store says it is owed, as `msg`.
    async fn send_owed(&self, store: &Store, depot_id: String, msg: fn(Vec<String>) -> Msg) {
        match store.owed_clients(&depot_id).await {
            Ok(owed) => {
                let inbox = self.workers().get(&depot_id).map(|w| w.inbox.clone());
                if let Some(inbox) = inbox {
                    let _ = inbox.send(msg(owed)).await;
                }
            }
            Err(error) => {
                warn!(%error, depot = %depot_id, "loading owed pushes failed; reloading later");
                self.lost.set();
            }
        }
    }

    /// This replica's id as a lease holder (`host/pid/…`); `None` without
    /// replicas.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// Completes once this replica's depot leases are released after the
    /// stop (at once without replicas): another replica takes its depots
    /// then, not when the leases expire.
    pub async fn leases_released(&self) {
        if self.replicated {
            self.released.cancelled().await;
        }
    }

    /// Keeps `keys` to the depots' records as each lease renewal reads them,
    /// on a database several configservers share: a depot key changed
    /// through another replica is taken within a second, not at a restart.
    pub fn follow_keys(&self, keys: DepotKeys) {
        let _ = self.keys.set(keys);
    }

    /// Starts a worker per stored depot; each first sends what it is owed.
    /// Its tasks run under `supervisor`: a panic, or the ack writer ending
    /// before `stop`, stops the configserver.
    pub async fn start(
        store: Store,
        settings: DispatchSettings,
        modules: Modules,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        supervisor: Supervisor,
    ) -> Result<Arc<Self>, StoreError> {
        let (owed_tx, owed_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            acks: acks::spawn(store.clone(), &supervisor),
            store: store.clone(),
            settings,
            modules,
            metrics,
            owed: owed_tx,
            supervisor: supervisor.clone(),
        };
        let replicated = store.is_postgres();
        let holder = replicated.then(replica::holder_id);
        let dispatcher = Arc::new(Self {
            shared,
            workers: Mutex::new(HashMap::new()),
            stop: stop.clone(),
            replicated,
            lost: Lost::default(),
            renew_now: Arc::new(Notify::new()),
            keys: OnceLock::new(),
            released: CancellationToken::new(),
            holder: holder.clone(),
        });
        supervisor.spawn_worker(
            "dispatch router",
            route_owed(Arc::downgrade(&dispatcher), owed_rx),
        );
        if let Some(holder) = holder {
            info!(%holder, "several configservers may share this database: pushing to the depots whose lease this one holds");
            supervisor.spawn_worker(
                "depot leases",
                replica::hold_leases(
                    Arc::downgrade(&dispatcher),
                    store.clone(),
                    holder,
                    dispatcher.renew_now.clone(),
                    stop.clone(),
                    dispatcher.released.clone(),
                ),
            );
            supervisor.spawn_worker(
                "owed push announcements",
                replica::follow_announcements(Arc::downgrade(&dispatcher), store, stop),
            );
            return Ok(dispatcher);
        }
        let depots = store.depots().await?;
        let mut workers = dispatcher.workers();
        for depot in depots {
            let id = depot.id.to_string();
            workers.insert(id, dispatcher.spawn_worker(depot));
        }
        drop(workers);
        Ok(dispatcher)
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<String, WorkerHandle>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_worker(&self, depot: DepotRecord) -> WorkerHandle {
        Worker::spawn(depot, self.shared.clone(), self.stop.clone())
    }

    /// Tells the depots' workers about pushes now owed; waits while a
    /// worker's inbox is full.
    pub async fn notify(&self, owed: Vec<Owed>) {
        let mut by_depot: HashMap<String, Vec<String>> = HashMap::new();
        for o in owed {
            by_depot.entry(o.depot_id).or_default().push(o.client_id);
        }
        let targets: Vec<_> = {
            let workers = self.workers();
            by_depot
                .into_iter()
                .map(|(depot, clients)| {
                    let inbox = workers.get(&depot).map(|w| w.inbox.clone());
                    (depot, clients, inbox)
                })
                .collect()
        };
        for (depot, clients, inbox) in targets {
            match inbox {
                // A closed inbox: the depot was deleted meanwhile.
                Some(inbox) => {
                    let _ = inbox.send(Msg::Owed(clients)).await;
                }
                // Another replica holds the depot; it was told (NOTIFY).
                None if self.replicated => {
                    debug!(
                        depot,
                        clients = clients.len(),
                        "pushes owed to a depot another replica holds"
                    )
                }
                None => warn!(
                    depot,
                    clients = clients.len(),
                    "pushes owed to an unknown depot"
                ),
            }
        }
    }

    /// A depot was added or changed. With replicas, a new depot gets its
    /// worker on the replica that takes its lease.
    pub async fn depot_upserted(&self, depot: DepotRecord) {
        if self.replicated {
            self.renew_now.notify_one();
        }
        self.start_or_update(depot, !self.replicated).await;
    }

    /// Sends `depot` to its worker, or starts one if `start`.
    async fn start_or_update(&self, depot: DepotRecord, start: bool) {
        let inbox = {
            let mut workers = self.workers();
            match workers.get(depot.id.as_str()) {
                Some(w) => w.inbox.clone(),
                None if !start => return,
                None => {
                    let id = depot.id.to_string();
                    let handle = self.spawn_worker(depot);
                    workers.insert(id, handle);
                    return;
                }
            }
        };
        let _ = inbox.send(Msg::Update(depot)).await;
    }

    /// A depot was deleted: its worker stops.
    pub fn depot_deleted(&self, id: &str) {
        self.workers().remove(id);
        self.shared.metrics.queue_depth.remove(&DepotLabel {
            depot: id.to_owned(),
        });
    }

    /// What the dispatcher knows of each depot.
    pub fn runtime(&self) -> HashMap<String, DepotRuntime> {
        self.workers()
            .iter()
            .map(|(id, w)| (id.clone(), w.runtime.borrow().clone()))
            .collect()
    }
}

impl Holder for Dispatcher {
    /// The depots' keys follow the database (another replica may have
    /// changed one).
    fn depots_generation(&self) -> u64 {
        self.keys.get().map_or(0, DepotKeys::generation)
    }

    fn depots_seen(&self, depots: &[DepotRecord], generation: u64) {
        if let Some(keys) = self.keys.get() {
            keys.follow(depots, generation);
        }
    }

    /// A held depot: started, or told of its changed record.
    async fn lease_held(&self, depot: DepotRecord) {
        self.start_or_update(depot, true).await;
    }

    /// Stops the workers of depots not in `held` (leases lost or lapsed).
    fn keep_only(&self, held: &HashSet<String>) {
        let gone: Vec<String> = self
            .workers()
            .keys()
            .filter(|id| !held.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            info!(depot = %id, "no longer holding the depot's lease; its pushes stop here");
            self.depot_deleted(&id);
        }
    }

    /// Hands an announcement of owed pushes to the depot's worker, if this
    /// replica holds it; one naming no clients reloads what it is owed.
    async fn announced(&self, store: &Store, announcement: Announcement) {
        let Announcement { depot_id, clients } = announcement;
        if !self.workers().contains_key(&depot_id) {
            return;
        }
        if clients.is_empty() {
            // Changes too many to name: as if each were named.
            return self.send_owed(store, depot_id, Msg::Owed).await;
        }
        let owed = clients
            .into_iter()
            .map(|client_id| Owed {
                depot_id: depot_id.clone(),
                client_id,
            })
            .collect();
        self.notify(owed).await;
    }

    /// Every held depot reloads what it is owed; no change is known, so a
    /// refused client keeps its backoff.
    async fn reload(&self, store: &Store) {
        let held: Vec<String> = self.workers().keys().cloned().collect();
        for depot_id in held {
            self.send_owed(store, depot_id, Msg::Reloaded).await;
        }
    }

    fn lost(&self) -> &Lost {
        &self.lost
    }

    fn runs(&self, depot: &str) -> bool {
        self.workers().contains_key(depot)
    }
}

/// Routes pushes a worker found owed to other depots to their workers, while
/// the dispatcher lives.
async fn route_owed(
    dispatcher: Weak<Dispatcher>,
    mut owed: mpsc::UnboundedReceiver<Vec<Owed>>,
) -> Result<(), String> {
    while let Some(batch) = owed.recv().await {
        let Some(dispatcher) = dispatcher.upgrade() else {
            break;
        };
        dispatcher.notify(batch).await;
    }
    Ok(())
}
