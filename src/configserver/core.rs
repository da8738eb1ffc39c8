//! The shared state of the configserver's services.

use std::sync::Arc;

use super::dispatch::Dispatcher;
use super::keys::DepotKeys;
use super::store::{Store, StoreError};
use crate::domain::Modules;
use crate::metrics::Metrics;

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

impl Core {
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
