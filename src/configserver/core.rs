//! The shared state of the configserver's services.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::{Instrument, error, info, warn};

use super::dispatch::Dispatcher;
use super::error::Error;
use super::keys::DepotKeys;
use super::store::{ReadReport, Store, StoreError};
use crate::domain::{ClientBundle, Fqdn, Modules, ProductId};
use crate::metrics::Metrics;
use crate::proto;

/// The shared state of the configserver's services.
pub struct Core {
    /// The inventory.
    pub store: Store,
    /// The pushes.
    pub dispatcher: Arc<Dispatcher>,
    /// Licensed modules.
    pub modules: Modules,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Depot keys for the ConfigServer service.
    pub keys: DepotKeys,
}

/// Runs `work` — a store write and what must follow its commit (queueing
/// its pushes, reloading depot keys) — and waits for it. A caller that goes
/// away (its deadline passed, the admin pressed Ctrl-C) does not stop it:
/// the store commits a write it took either way, and on SQLite nothing else
/// would queue the pushes that write owes until a restart. The work stays
/// in the caller's span (its logs, and the trace context its pushes
/// continue).
///
/// It runs in the caller's task, and only what is left of it when the
/// caller goes away is spawned: a task of its own from the start cost
/// every admin call a hand-off to another thread and back (~0.15 ms of an
/// idle action's ~1.7 ms here).
pub async fn to_the_end<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    Finish(Some(Box::pin(work.instrument(tracing::Span::current())))).await
}

/// Work that [`to_the_end`] runs.
type Work<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// A future that is finished in a task of its own if dropped unfinished.
struct Finish<T: Send + 'static>(Option<Work<T>>);

impl<T: Send + 'static> Future for Finish<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Out while it is polled: one that panics is dropped with the
        // panic, not spawned again by `drop`.
        let mut work = self.0.take().expect("polled after it finished");
        match work.as_mut().poll(cx) {
            Poll::Ready(done) => Poll::Ready(done),
            Poll::Pending => {
                self.0 = Some(work);
                Poll::Pending
            }
        }
    }
}

impl<T: Send + 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        if let Some(rest) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = rest.await;
            });
        }
    }
}

impl Core {
    /// Reloads depot keys after a write that changed depots was committed:
    /// the write stands whatever happens here, so a failed reload is no
    /// error for its caller (who would take the write for undone); it is
    /// logged and tried again until it lands.
    pub async fn refresh_keys_after_write(self: &Arc<Self>) {
        let Err(error) = self.refresh_keys().await else {
            return;
        };
        error!(%error, "reloading depot keys after a depot write failed; retrying");
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_millis(100);
            loop {
                tokio::time::sleep(wait).await;
                // The configserver is gone: nothing to refresh.
                let Some(core) = core.upgrade() else { return };
                match core.refresh_keys().await {
                    Ok(()) => {
                        info!("depot keys reloaded");
                        return;
                    }
                    Err(error) => warn!(%error, "reloading depot keys failed; retrying"),
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
        });
    }

    /// Reloads depot keys after depots changed.
    pub async fn refresh_keys(&self) -> Result<(), StoreError> {
        let depots = self.store.depots().await?;
        self.keys.set(
            depots
                .into_iter()
                .map(|d| (d.id.to_string(), d.host_key))
                .collect(),
        );
        Ok(())
    }
}

impl Core {
    /// A depot reconciles: it says which epoch its journal follows and the
    /// highest revision it has seen there; the sequence moves past it (a
    /// restored store must not hand out revisions the depot has seen).
    pub async fn observe_reconciliation(
        &self,
        request: &proto::ListPendingBundlesRequest,
    ) -> Result<(), StoreError> {
        let moved = self
            .store
            .observe_revision(&request.epoch, request.highest_revision)
            .await?;
        if moved {
            warn!(depot = %request.depot_id, highest = request.highest_revision, "the depot has seen revisions past this store's sequence (restored from a backup, or clock skew); the sequence moves past them");
        }
        Ok(())
    }
}

/// A bundle as sent to depots: the wire form, with the store's epoch.
pub(super) fn wire_bundle(store: &Store, bundle: &ClientBundle) -> proto::ClientBundle {
    let mut wire = proto::ClientBundle::from(bundle);
    wire.epoch = store.epoch().to_owned();
    wire
}

/// A depot's read report as the store records it.
pub(super) fn read_report(
    depot: &str,
    client: &Fqdn,
    product: &ProductId,
    request: &proto::ReportPxeConfigReadRequest,
) -> ReadReport {
    ReadReport {
        depot_id: depot.to_owned(),
        client_id: client.to_string(),
        product_id: product.to_string(),
        revision: request.revision,
        epoch: request.epoch.clone(),
        files_present: request.files_present,
        read_at: request.read_at.and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            let nanos = u32::try_from(t.nanos).ok()?;
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
        }),
    }
}

/// Tags a response with the store's epoch (see `status::EPOCH_METADATA`).
pub(super) fn tag_epoch(metadata: &mut tonic::metadata::MetadataMap, epoch: &str) {
    if let Ok(value) = epoch.parse() {
        metadata.insert(crate::status::EPOCH_METADATA, value);
    }
}

/// A core over a fresh database, for handler tests without sockets.
#[cfg(test)]
pub(super) async fn test_core() -> (tempfile::TempDir, Arc<Core>) {
    use super::dispatch::DispatchSettings;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("pxeconf.db")).await.unwrap();
    let metrics = Metrics::new();
    let modules = Modules::default();
    let dispatcher = Dispatcher::start(
        store.clone(),
        DispatchSettings::default(),
        modules,
        metrics.clone(),
        tokio_util::sync::CancellationToken::new(),
        crate::server::Supervisor::new(),
    )
    .await
    .unwrap();
    let core = Core {
        store,
        dispatcher,
        modules,
        metrics,
        keys: DepotKeys::default(),
    };
    (dir, Arc::new(core))
}
