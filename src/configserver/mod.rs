//! The configserver role: owns the inventory, pushes a `ClientBundle` per
//! client to the responsible depot (falling back to the legacy path per
//! depot), and serves the look-ups legacy depots make.

pub mod admin;
pub mod bundle;
pub mod dispatch;
pub mod service;
pub mod store;
pub mod triggers;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};
use tracing::{info, warn};

use crate::auth::{bearer_token, keys_equal, unauthenticated};
use crate::domain::{Modules, Secret, ValidationError};
use crate::metrics::Metrics;
use dispatch::{DispatchSettings, Dispatcher};
use store::{Store, StoreError};

/// What a configserver needs to run, validated.
#[derive(Debug, Clone)]
pub struct ConfigServerConfig {
    /// The SQLite file.
    pub database: PathBuf,
    /// Key required by the Admin service; none: Admin is open.
    pub host_key: Option<Secret>,
    /// Licensed modules.
    pub modules: Modules,
    /// Push behaviour.
    pub dispatch: DispatchSettings,
}

/// Why a configserver request failed. The mapping to gRPC codes is below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A depot asked about another depot's business.
    #[error("depot {caller} may not act for depot {target}")]
    WrongDepot {
        /// The authenticated depot.
        caller: String,
        /// The depot named in the request.
        target: String,
    },
    /// The request cannot be served in the current state.
    #[error("{0}")]
    Precondition(String),
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Invalid(_) => Status::invalid_argument(message),
            Error::Store(StoreError::NotFound { .. }) => Status::not_found(message),
            Error::Store(StoreError::Conflict(_)) => Status::failed_precondition(message),
            Error::WrongDepot { .. } => Status::permission_denied(message),
            Error::Precondition(_) => Status::failed_precondition(message),
            // Database trouble is ours: the detail goes to the log.
            Error::Store(_) => {
                tracing::error!(error = %message, "configserver internal error");
                Status::internal("internal error on the configserver; its log has the detail")
            }
        }
    }
}

/// The depot a ConfigServer call was authenticated as.
#[derive(Debug, Clone)]
pub struct CallerDepot(pub String);

/// Depot host keys, to tell which depot is calling.
#[derive(Clone, Default)]
pub struct DepotKeys(Arc<RwLock<Vec<(String, Secret)>>>);

impl DepotKeys {
    /// Replaces the known keys.
    pub fn set(&self, keys: Vec<(String, Secret)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The depot whose key `token` is. Every key is compared, in constant
    /// time each, so timing tells nothing about which one almost matched.
    fn depot_for(&self, token: &str) -> Option<String> {
        let keys = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (id, key) in keys.iter() {
            if !key.is_empty() && keys_equal(token, key.expose()) {
                found = Some(id.clone());
            }
        }
        found
    }

    /// A server interceptor admitting registered depots.
    pub fn interceptor(&self) -> impl tonic::service::Interceptor + Clone + use<> {
        let keys = self.clone();
        move |mut request: Request<()>| -> Result<Request<()>, Status> {
            let token = bearer_token(&request).ok_or_else(|| unauthenticated(true))?;
            let depot = keys
                .depot_for(token)
                .ok_or_else(|| unauthenticated(false))?;
            request.extensions_mut().insert(CallerDepot(depot));
            Ok(request)
        }
    }
}

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

/// A started configserver: store open, dispatcher running; `serve` adds the
/// gRPC server.
pub struct ConfigServer {
    core: Arc<Core>,
    host_key: Option<Secret>,
    stop: CancellationToken,
}

impl ConfigServer {
    /// Opens the store and starts pushing what is owed.
    pub async fn start(
        config: ConfigServerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let store = Store::open(&config.database).await?;
        let stop = CancellationToken::new();
        let dispatcher = Dispatcher::start(
            store.clone(),
            config.dispatch.clone(),
            config.modules,
            metrics.clone(),
            stop.clone(),
        )
        .await?;
        let core = Arc::new(Core {
            store,
            dispatcher,
            modules: config.modules,
            metrics,
            keys: DepotKeys::default(),
        });
        core.refresh_keys().await?;
        info!(database = %config.database.display(), "configserver store open");
        Ok(Self {
            core,
            host_key: config.host_key,
            stop,
        })
    }

    /// The shared core (tests and the demo read its store and dispatcher).
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// Serves ConfigServer, Admin, reflection and health on `listener` until
    /// `shutdown` completes; then stops pushing.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        if self.host_key.is_none() {
            warn!("no host key configured: the Admin service accepts unauthenticated calls");
        }
        info!(addr = ?listener.local_addr().ok(), "configserver serving");
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(
            crate::proto::config_server_server::ConfigServerServer::with_interceptor(
                service::ConfigServerService::new(self.core.clone()),
                self.core.keys.interceptor(),
            ),
        );
        routes.add_service(crate::proto::admin_server::AdminServer::with_interceptor(
            admin::AdminService::new(self.core.clone()),
            crate::auth::RequireKey::new(self.host_key.clone()),
        ));
        let routes = crate::server::with_standard_services(
            routes,
            &["pxeconf.v1.ConfigServer", "pxeconf.v1.Admin"],
        )
        .await;
        let result =
            crate::server::serve_routes(routes, listener, self.core.metrics.clone(), shutdown)
                .await;
        self.stop.cancel();
        result
    }
}
