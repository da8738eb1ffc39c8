//! A configserver's life: lock the database (one configserver per file),
//! open the store, start the dispatcher under a supervisor, serve the
//! ConfigServer and Admin services (with reflection and health) until shut
//! down or a task it needs fails, then stop pushing.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::admin::AdminService;
use super::core::Core;
use super::dispatch::{DispatchSettings, Dispatcher};
use super::keys::{DEFAULT_MAX_DEPOT_CALLS, DepotKeys};
use super::service::ConfigServerService;
use super::store::{DbLock, Location, Store, StoreError};
use crate::auth::RequireKey;
use crate::domain::{Modules, Secret};
use crate::metrics::Metrics;
use crate::proto::admin_server::AdminServer;
use crate::proto::config_server_server::ConfigServerServer;
use crate::server::ServeOptions;
use crate::server::{ServeError, Supervisor};
use crate::transport::Transport;

/// How long a stopping replica waits for its depot leases to be released.
const LEASE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a configserver needs to run, validated.
#[derive(Debug, Clone)]
pub struct ConfigServerConfig {
    /// The store: a SQLite file or a PostgreSQL database.
    pub database: Location,
    /// Key required by the Admin service; none: Admin is open.
    pub host_key: Option<Secret>,
    /// Licensed modules.
    pub modules: Modules,
    /// Push behaviour.
    pub dispatch: DispatchSettings,
    /// TLS (also for pushes to `https://` depots), how depots authenticate,
    /// connection limits.
    pub transport: Transport,
}

/// A started configserver: store open, dispatcher running; `serve` adds the
/// gRPC server.
pub struct ConfigServer {
    core: Arc<Core>,
    host_key: Option<Secret>,
    transport: Transport,
    stop: CancellationToken,
    supervisor: Supervisor,
    // Held while serving; dropped (unlocked) when the server is. PostgreSQL
    // needs none: several configservers share one database.
    _lock: Option<DbLock>,
}

impl ConfigServer {
    /// Locks a SQLite database (a second configserver on it is refused,
    /// naming the holder's pid), opens the store and starts pushing what is
    /// owed.
    pub async fn start(
        config: ConfigServerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let lock = config
            .database
            .sqlite_path()
            .map(DbLock::acquire)
            .transpose()?;
        if let Some(path) = config.database.sqlite_path() {
            create_private(path).map_err(|source| StoreError::Dir {
                path: path.display().to_string(),
                source,
            })?;
        }
        let store = Store::connect(&config.database).await?;
        metrics.announce_configserver();
        let stop = CancellationToken::new();
        let supervisor = Supervisor::new();
        let dispatch = DispatchSettings {
            tls: config.transport.tls.clone(),
            ..config.dispatch.clone()
        };
        let max_depot_calls = DEFAULT_MAX_DEPOT_CALLS.max(dispatch.concurrency + 16);
        let dispatcher = Dispatcher::start(
            store.clone(),
            dispatch,
            config.modules,
            metrics.clone(),
            stop.clone(),
            supervisor.clone(),
        )
        .await?;
        let core = Arc::new(Core {
            store,
            dispatcher,
            modules: config.modules,
            metrics,
            keys: DepotKeys::new(max_depot_calls).with_admin_key(config.host_key.clone()),
        });
        core.refresh_keys().await?;
        core.dispatcher.follow_keys(core.keys.clone());
        info!(database = %config.database, epoch = core.store.epoch(), "configserver store open");
        Ok(Self {
            core,
            host_key: config.host_key,
            transport: config.transport,
            stop,
            supervisor,
            _lock: lock,
        })
    }

    /// The shared core (tests and the demo read its store and dispatcher).
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// What ends its pushing and hands its depots over; for after
    /// [`serve`](Self::serve), which a grace period may cut short.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            core: self.core.clone(),
            stop: self.stop.clone(),
        }
    }

    /// Serves ConfigServer, Admin, reflection and health on `listener` until
    /// `shutdown` completes, or a task it needs fails (health NOT_SERVING,
    /// then an error); then stops pushing.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        if self.host_key.is_none() {
            warn!("no host key configured: the Admin service accepts unauthenticated calls");
        }
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), depot_auth = %self.transport.client_auth, "configserver serving");
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(ConfigServerServer::with_interceptor(
            ConfigServerService::new(self.core.clone()),
            self.core.keys.interceptor(self.transport.client_auth),
        ));
        routes.add_service(AdminServer::with_interceptor(
            AdminService::new(self.core.clone()),
            RequireKey::new(self.host_key.clone()),
        ));
        let (routes, health) = crate::server::standard_services(
            routes,
            &["pxeconf.v1.ConfigServer", "pxeconf.v1.Admin"],
        )
        .await;
        let options = ServeOptions {
            server: "configserver",
            transport: self.transport.clone(),
            metrics: self.core.metrics.clone(),
            // The ConfigServer interceptor checks the certificate itself (it
            // must name the depot); Admin callers are operators with the key.
            guarded: &[],
            peers: Vec::new(),
        };
        let result = crate::server::serve_supervised(
            routes,
            health,
            listener,
            options,
            &self.supervisor,
            shutdown,
        )
        .await;
        self.stop.cancel();
        result
    }
}

/// Stops a configserver's pushing once it no longer serves ([`ConfigServer::stopper`]).
pub struct Stopper {
    core: Arc<Core>,
    stop: CancellationToken,
}

impl Stopper {
    /// Stops the pushes and waits (at most [`LEASE_RELEASE_WAIT`]) for the
    /// depot leases to be released: the process ends next, and without the
    /// wait they were mostly left to expire (~5 s without pushes to its
    /// depots). At once without replicas.
    pub async fn stop(self) {
        self.stop.cancel();
        let released = self.core.dispatcher.leases_released();
        if tokio::time::timeout(LEASE_RELEASE_WAIT, released)
            .await
            .is_err()
        {
            warn!("depot leases not released in time; they expire on their own");
        }
    }
}

/// Creates the database file readable by its owner only, before SQLite
/// opens it (SQLite gives its -wal and -shm files the same mode): it holds
/// host keys. An existing one (a restored backup: `.backup` and `cp` write
/// it with the umask's 0644) and its -wal and -shm files lose any access
/// of group and others, as the depot's journal does.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.exists() {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = std::path::Path::new(&name);
            let Ok(meta) = std::fs::metadata(file) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))?;
                warn!(path = %file.display(), mode = format!("{mode:04o}"), "the database file was open to others: now its owner's only");
            }
        }
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
