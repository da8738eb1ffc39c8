//! The push dispatcher: one worker per depot, started for every stored
//! depot and for each one registered later; writes tell it which clients
//! are owed, status queries read each worker's published state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::acks;
use super::runtime::DepotRuntime;
use super::settings::DispatchSettings;
use super::worker::{Msg, Shared, Worker, WorkerHandle};
use crate::configserver::store::{DepotRecord, Owed, Store, StoreError};
use crate::domain::Modules;
use crate::metrics::{DepotLabel, Metrics};
use crate::server::Supervisor;

/// The push dispatcher of the configserver.
pub struct Dispatcher {
    shared: Shared,
    workers: Mutex<HashMap<String, WorkerHandle>>,
    stop: CancellationToken,
}

impl Dispatcher {
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
        let dispatcher = Arc::new(Self {
            shared,
            workers: Mutex::new(HashMap::new()),
            stop,
        });
        let depots = store.depots().await?;
        let mut workers = dispatcher.workers();
        for depot in depots {
            let id = depot.id.to_string();
            workers.insert(id, dispatcher.spawn_worker(depot));
        }
        drop(workers);
        supervisor.spawn_worker(
            "dispatch router",
            route_owed(Arc::downgrade(&dispatcher), owed_rx),
        );
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
                None => warn!(
                    depot,
                    clients = clients.len(),
                    "pushes owed to an unknown depot"
                ),
            }
        }
    }

    /// A depot was added or changed.
    pub async fn depot_upserted(&self, depot: DepotRecord) {
        let inbox = {
            let mut workers = self.workers();
            match workers.get(depot.id.as_str()) {
                Some(w) => w.inbox.clone(),
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
