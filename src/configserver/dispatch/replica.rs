//! Several configservers on one PostgreSQL database. Each replica runs a
//! worker only for the depots whose lease it holds ([`hold_leases`]: taken
//! and renewed every second, on the database's clock; a dead replica's
//! leases expire and another takes its depots), and follows the
//! announcements of owed pushes ([`follow_announcements`]: a write on any
//! replica wakes the holder at once). Database trouble is retried here,
//! never fatal: a replica that cannot renew stops its workers before its
//! leases can expire, and after trouble every held depot reloads what it
//! is owed (announcements made meanwhile are lost).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::configserver::store::{Announcement, DepotRecord, Store, StoreError};

/// How long a lease lasts unless renewed: a dead replica's depots move
/// after at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a replica renews its leases (and takes free ones).
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A lease is given up locally this long before it expires in the
/// database, so two replicas never both believe they hold it.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// How long one renewal may take: a database that does not answer must
/// not keep a replica pushing past its leases (the check of the lapse runs
/// after each attempt).
const RENEW_TIMEOUT: Duration = Duration::from_millis(1500);
/// Every this many renewals, held depots reload what they are owed: a
/// backstop for an announcement lost in a reconnect.
const RELOAD_EVERY: u32 = 30;

/// A replica's name in the lease table: host, pid and a random part.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// What the lease and announcement tasks drive (the dispatcher).
pub(super) trait Holder: Send + Sync + 'static {
    /// Stops the workers of depots not in `held`.
    fn keep_only(&self, held: &HashSet<String>);
    /// A held depot: started, or told of its changed record.
    fn lease_held(&self, depot: DepotRecord) -> impl Future<Output = ()> + Send;
    /// Which change of the depots this replica made itself it has seen
    /// (taken before a renewal reads the records; see `depots_seen`).
    fn depots_generation(&self) -> u64 {
        0
    }
    /// Every depot's record as the database had it at the renewal that
    /// began at `generation`: for what other replicas may have changed,
    /// e.g. a depot's key.
    fn depots_seen(&self, _depots: &[DepotRecord], _generation: u64) {}
    /// Hands an announcement to the depot's worker, if it runs here.
    fn announced(
        &self,
        store: &Store,
        announcement: Announcement,
    ) -> impl Future<Output = ()> + Send;
    /// Every held depot reloads what it is owed.
    fn reload(&self, store: &Store) -> impl Future<Output = ()> + Send;
    /// Whether announcements may have been lost.
    fn lost(&self) -> &Lost;
    /// Whether a worker for `depot` runs here (a depot deleted here and
    /// registered again before the next renewal has none, its record
    /// unchanged).
    fn runs(&self, depot: &str) -> bool;
}

/// Set when announcements may have been lost (the listener's connection
/// dropped); the next good renewal reloads every held depot.
#[derive(Default)]
pub(super) struct Lost(AtomicBool);

impl Lost {
    pub(super) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Whether a depot's record changed in a way its worker must know.
fn changed(old: &DepotRecord, new: &DepotRecord) -> bool {
    old.endpoint.as_str() != new.endpoint.as_str()
        || old.host_key.expose() != new.host_key.expose()
        || old.description != new.description
}

/// What the lease task remembers between renewals.
#[derive(Default)]
struct Leases {
    /// Until when this replica may act on its leases (local clock).
    valid_until: Option<Instant>,
    /// The held depots' records, to tell their workers of changes.
    known: HashMap<String, DepotRecord>,
    rounds: u32,
    /// The last renewal failed.
    troubled: bool,
}

impl Leases {
    /// One renewal: leases claimed, workers kept to them and held depots
    /// told of changes — all before the leases' local validity ends (else
    /// this replica stops pushing, as when the claim fails). True when the
    /// held depots are due to reload what they are owed (after trouble, or
    /// now and then): the caller runs that apart, so that a slow reload
    /// never holds up the next renewal.
    async fn renew<D: Holder>(&mut self, dispatcher: &D, store: &Store, holder: &str) -> bool {
        let started = Instant::now();
        let generation = dispatcher.depots_generation();
        let claim = async {
            let held = store.claim_leases(holder, LEASE_TTL).await?;
            Ok::<_, StoreError>((held, store.depots().await?))
        };
        let (held, depots) = match tokio::time::timeout(RENEW_TIMEOUT, claim).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                self.failed(dispatcher, &error.to_string());
                return false;
            }
            Err(_) => {
                self.failed(dispatcher, "the database did not answer in time");
                return false;
            }
        };
        let valid_until = started + LEASE_TTL - LEASE_MARGIN;
        self.valid_until = Some(valid_until);
        dispatcher.depots_seen(&depots, generation);
        let applied = self.apply(dispatcher, held, depots);
        if tokio::time::timeout_at(valid_until, applied).await.is_err() {
            self.failed(dispatcher, "applying the leases outlasted them");
            return false;
        }
        self.rounds = self.rounds.wrapping_add(1);
        let lost = dispatcher.lost().take();
        if self.troubled || lost || self.rounds.is_multiple_of(RELOAD_EVERY) {
            if self.troubled {
                info!("the database is back; reloading what the held depots are owed");
            }
            self.troubled = false;
            return true;
        }
        false
    }

    /// Keeps the workers to the `held` depots and tells them of changes.
    async fn apply<D: Holder>(
        &mut self,
        dispatcher: &D,
        held: Vec<String>,
        depots: Vec<DepotRecord>,
    ) {
        let held: HashSet<String> = held.into_iter().collect();
        dispatcher.keep_only(&held);
        self.known.retain(|id, _| held.contains(id));
        for depot in depots.into_iter().filter(|d| held.contains(d.id.as_str())) {
            let id = depot.id.to_string();
            match self.known.get(&id) {
                Some(old) if !changed(old, &depot) && dispatcher.runs(&id) => {}
                Some(_) => dispatcher.lease_held(depot.clone()).await,
                None => {
                    info!(depot = %id, "took the depot's lease");
                    dispatcher.lease_held(depot.clone()).await;
                }
            }
            self.known.insert(id, depot);
        }
    }

    /// A renewal failed: retried next round; once the leases may have
    /// lapsed, this replica stops pushing.
    fn failed<D: Holder>(&mut self, dispatcher: &D, error: &str) {
        if !self.troubled {
            warn!(%error, "renewing depot leases failed; retrying");
        }
        self.troubled = true;
        if self.valid_until.is_some_and(|v| Instant::now() >= v) {
            warn!("depot leases lapsed: pushing nothing until the database is back");
            dispatcher.keep_only(&HashSet::new());
            self.known.clear();
            self.valid_until = None;
        }
    }
}

/// Takes and renews leases until `stop`, keeping the dispatcher's workers
/// to the depots held, every [`RENEW_EVERY`] and at once when `renew_now`
/// is notified (a depot was registered); releases them at the end, then
/// cancels `released`.
pub(super) async fn hold_leases<D: Holder>(
    dispatcher: Weak<D>,
    store: Store,
    holder: String,
    renew_now: Arc<Notify>,
    stop: CancellationToken,
    released: CancellationToken,
) -> Result<(), String> {
    // However this ends (a panic too): the stop's wait is over.
    let _released = released.drop_guard();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leases = Leases::default();
    let mut reloading: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = renew_now.notified() => tick.reset(),
            () = stop.cancelled() => break,
        }
        let Some(dispatcher) = dispatcher.upgrade() else {
            break;
        };
        if leases.renew(&*dispatcher, &store, &holder).await {
            match &reloading {
                // Still at it: asked again at the next renewal.
                Some(running) if !running.is_finished() => dispatcher.lost().set(),
                _ => {
                    let store = store.clone();
                    reloading = Some(tokio::spawn(async move {
                        dispatcher.reload(&store).await;
                    }));
                }
            }
        }
    }
    if let Some(running) = reloading {
        running.abort();
    }
    if let Err(error) = store.release_leases(&holder).await {
        warn!(%error, "releasing depot leases failed; they expire on their own");
    }
    Ok(())
}

/// Hands announcements of owed pushes to the workers until `stop`.
pub(super) async fn follow_announcements<D: Holder>(
    dispatcher: Weak<D>,
    store: Store,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut listener = loop {
        match store.listen_owed().await {
            Ok(Some(listener)) => break listener,
            Ok(None) => return Ok(()),
            Err(error) => warn!(%error, "listening for owed pushes failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(RENEW_EVERY) => {}
            () = stop.cancelled() => return Ok(()),
        }
    };
    loop {
        let received = tokio::select! {
            received = listener.try_recv() => received,
            () = stop.cancelled() => break,
        };
        let Some(dispatcher) = dispatcher.upgrade() else {
            break;
        };
        match received {
            Ok(Some(notification)) => {
                dispatcher
                    .announced(&store, Announcement::from_notification(&notification))
                    .await;
            }
            // The connection dropped (it reconnects on the next call).
            Ok(None) => dispatcher.lost().set(),
            Err(error) => {
                dispatcher.lost().set();
                warn!(%error, "listening for owed pushes failed; retrying");
                drop(dispatcher);
                tokio::select! {
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{Endpoint, Fqdn, Secret};

    /// A dispatcher that takes `slow` to tell a worker of its depot.
    struct Slow {
        slow: Duration,
        kept: Mutex<Vec<usize>>,
        lost: Lost,
    }

    impl Holder for Slow {
        fn keep_only(&self, held: &HashSet<String>) {
            self.kept.lock().unwrap().push(held.len());
        }

        async fn lease_held(&self, _: DepotRecord) {
            tokio::time::sleep(self.slow).await;
        }

        async fn announced(&self, _: &Store, _: Announcement) {}

        async fn reload(&self, _: &Store) {}

        fn lost(&self) -> &Lost {
            &self.lost
        }

        fn runs(&self, _: &str) -> bool {
            true
        }
    }

    const DEPOT: &str = "depot1.example.org";

    /// A store on disk (in `dir`) with one depot registered; its record.
    async fn one_depot(dir: &std::path::Path) -> (Store, DepotRecord) {
        let store = Store::open(&dir.join("db")).await.unwrap();
        let record = DepotRecord {
            id: Fqdn::parse(DEPOT, "id").unwrap(),
            endpoint: Endpoint::parse("http://127.0.0.1:1", "endpoint").unwrap(),
            host_key: Secret::new("host-key-0123456789abcdef0123456789"),
            description: String::new(),
        };
        store
            .upsert_depots(std::slice::from_ref(&record))
            .await
            .unwrap();
        (store, record)
    }

    #[tokio::test]
    async fn a_renewal_that_outlasts_its_leases_stops_pushing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = one_depot(dir.path()).await;
        let quick = Slow {
            slow: Duration::ZERO,
            kept: Mutex::default(),
            lost: Lost::default(),
        };
        let mut leases = Leases::default();
        // A quick renewal keeps the depot's worker; no reload is due yet.
        assert!(!leases.renew(&quick, &store, "h").await);
        assert_eq!(*quick.kept.lock().unwrap(), [1]);

        let slow = Slow {
            slow: Duration::from_secs(60),
            ..quick
        };
        let mut leases = Leases::default();
        let started = Instant::now();
        assert!(!leases.renew(&slow, &store, "h").await);
        let took = started.elapsed();
        assert!(
            took >= LEASE_TTL - LEASE_MARGIN && took < LEASE_TTL,
            "returned after {took:?}, when the leases' local validity ended"
        );
        assert_eq!(
            *slow.kept.lock().unwrap(),
            [1, 1, 0],
            "held, then nothing: its workers stop before the leases lapse"
        );
        assert!(leases.known.is_empty() && leases.troubled);
    }

    /// Runs a worker per held depot as the dispatcher does (its own map is
    /// tested through real processes in `tests/it/replicas.rs`).
    #[derive(Default)]
    struct Workers {
        running: Mutex<HashSet<String>>,
        lost: Lost,
    }

    impl Holder for Workers {
        fn keep_only(&self, held: &HashSet<String>) {
            self.running.lock().unwrap().retain(|d| held.contains(d));
        }

        async fn lease_held(&self, depot: DepotRecord) {
            self.running.lock().unwrap().insert(depot.id.to_string());
        }

        async fn announced(&self, _: &Store, _: Announcement) {}

        async fn reload(&self, _: &Store) {}

        fn lost(&self) -> &Lost {
            &self.lost
        }

        fn runs(&self, depot: &str) -> bool {
            self.running.lock().unwrap().contains(depot)
        }
    }

    /// A depot deleted on the replica holding its lease and registered
    /// again, its record unchanged, before the next renewal: the renewal
    /// starts its worker again (it knew the record, so it had taken the
    /// depot for running, and nothing pushed to it while the lease was
    /// renewed).
    #[tokio::test]
    async fn a_depot_deleted_and_registered_again_at_once_gets_its_worker_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, record) = one_depot(dir.path()).await;
        let workers = Workers::default();
        let mut leases = Leases::default();
        leases.renew(&workers, &store, "h").await;
        assert!(workers.runs(DEPOT), "held: a worker runs");
        // What the Admin API's DeleteDepots and UpsertDepots do.
        store
            .delete_depots(std::slice::from_ref(&record.id))
            .await
            .unwrap();
        workers.running.lock().unwrap().remove(DEPOT);
        store
            .upsert_depots(std::slice::from_ref(&record))
            .await
            .unwrap();
        leases.renew(&workers, &store, "h").await;
        assert!(
            workers.runs(DEPOT),
            "the lease is held yet no worker pushes to the depot"
        );
    }
}
