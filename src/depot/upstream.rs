//! The depot's calls to its configserver: the legacy look-ups behind
//! `SetPxeConfigByFqdn`, read reports (retried until they land), and the
//! start-up reconciliation (`ListPendingBundles`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument, debug, info, info_span, warn};

use super::writer::ReadEvent;
use super::{DepotCore, Error};
use crate::auth::AttachKey;
use crate::domain::opsi::PxeSettings;
use crate::domain::{ClientBundle, Fqdn, Secret};
use crate::metrics::{Metrics, WriteLabels};
use crate::proto::{self, config_server_client::ConfigServerClient};

/// Read reports in flight at once.
const REPORT_CONCURRENCY: usize = 16;
/// Bundles applied at once during reconciliation.
const RECONCILE_CONCURRENCY: usize = 64;

type Client = ConfigServerClient<InterceptedService<Channel, AttachKey>>;

/// A connection to the configserver.
#[derive(Clone)]
pub struct Upstream {
    client: Client,
    depot_id: Fqdn,
}

impl Upstream {
    /// A lazy connection to `url`, presenting `key`.
    pub fn connect(url: &str, key: Option<&Secret>, depot_id: Fqdn) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("invalid URL {url}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        let auth = AttachKey::new(key.unwrap_or(&Secret::default())).map_err(|e| e.to_string())?;
        Ok(Self {
            client: ConfigServerClient::with_interceptor(endpoint.connect_lazy(), auth),
            depot_id,
        })
    }

    /// The bundle for `fqdn`, assembled from the fine-grained look-ups a
    /// legacy depot makes (one RPC each); `None` when the client has no
    /// netboot action.
    pub async fn lookup_bundle(
        &self,
        fqdn: &Fqdn,
        revision: u64,
    ) -> Result<Option<ClientBundle>, Error> {
        let mut c = self.client.clone();
        let lookup = |rpc: &'static str| {
            let fqdn = fqdn.to_string();
            move |status: tonic::Status| Error::Lookup { rpc, fqdn, status }
        };
        let host = c
            .get_host(proto::GetHostRequest {
                id: fqdn.to_string(),
            })
            .await
            .map_err(lookup("GetHost"))?
            .into_inner();
        let poc = c
            .get_netboot_product_on_clients(proto::GetNetbootProductOnClientsRequest {
                client_id: fqdn.to_string(),
            })
            .await
            .map_err(lookup("GetNetbootProductOnClients"))?
            .into_inner()
            .product_on_clients
            .into_iter()
            .next();
        let Some(poc) = poc else { return Ok(None) };
        let pod = c
            .get_product_on_depot(proto::GetProductOnDepotRequest {
                depot_id: self.depot_id.to_string(),
                product_id: poc.product_id.clone(),
            })
            .await
            .map_err(lookup("GetProductOnDepot"))?
            .into_inner();
        let product = c
            .get_product(proto::GetProductRequest {
                id: pod.product_id.clone(),
                product_version: pod.product_version.clone(),
                package_version: pod.package_version.clone(),
            })
            .await
            .map_err(lookup("GetProduct"))?
            .into_inner();
        let configs = c
            .get_config_states(proto::GetConfigStatesRequest {
                client_id: fqdn.to_string(),
                config_ids: Vec::new(),
            })
            .await
            .map_err(lookup("GetConfigStates"))?
            .into_inner()
            .config_states;
        let properties = c
            .get_product_property_states(proto::GetProductPropertyStatesRequest {
                client_id: fqdn.to_string(),
                product_id: poc.product_id.clone(),
            })
            .await
            .map_err(lookup("GetProductPropertyStates"))?
            .into_inner()
            .product_property_states;
        let modules = c
            .get_modules(proto::GetModulesRequest {})
            .await
            .map_err(lookup("GetModules"))?
            .into_inner();
        let settings = PxeSettings::derive(|id| {
            configs
                .iter()
                .find(|s| s.config_id == id)
                .map_or(&[], |s| s.values.as_slice())
        });
        let wire = proto::ClientBundle {
            host: Some(host),
            product_on_client: Some(poc),
            product_on_depot: Some(pod),
            product: Some(product),
            depot_id: self.depot_id.to_string(),
            service_address: settings.service_address,
            boot_mode: proto::BootMode::from(settings.boot_mode) as i32,
            bootimage_append: settings.bootimage_append,
            product_property_states: properties,
            modules: Some(modules),
            revision,
        };
        Ok(Some(ClientBundle::try_from(wire)?))
    }

    /// Reports every read to the configserver, retrying each until it lands
    /// (or the configserver refuses it for good).
    pub fn spawn_reporter(
        &self,
        mut reads: mpsc::UnboundedReceiver<ReadEvent>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let upstream = self.clone();
        let slots = Arc::new(Semaphore::new(REPORT_CONCURRENCY));
        let span = info_span!("reporter", depot = %self.depot_id);
        tokio::spawn(
            async move {
                while let Some(read) = reads.recv().await {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let upstream = upstream.clone();
                    let metrics = metrics.clone();
                    let stop = stop.clone();
                    tokio::spawn(
                        async move {
                            let result = upstream.report(&read, &stop).await;
                            metrics
                                .read_reports
                                .get_or_create(&WriteLabels {
                                    depot: upstream.depot_id.to_string(),
                                    result: result.to_owned(),
                                })
                                .inc();
                            drop(slot);
                        }
                        .in_current_span(),
                    );
                }
            }
            .instrument(span),
        );
    }

    async fn report(&self, read: &ReadEvent, stop: &CancellationToken) -> &'static str {
        let mut delay = Duration::from_millis(200);
        loop {
            let mut c = self.client.clone();
            let result = c
                .report_pxe_config_read(proto::ReportPxeConfigReadRequest {
                    fqdn: read.fqdn.to_string(),
                    product_id: read.product_id.to_string(),
                    revision: read.revision,
                })
                .await;
            match result {
                Ok(r) => {
                    let r = r.into_inner();
                    debug!(fqdn = %read.fqdn, action_request = %r.action_request, applied = r.applied, "read reported");
                    return "ok";
                }
                Err(status)
                    if matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::PermissionDenied
                            | Code::FailedPrecondition
                    ) =>
                {
                    warn!(fqdn = %read.fqdn, %status, "read report refused; not retried");
                    return "refused";
                }
                Err(status) => {
                    warn!(fqdn = %read.fqdn, %status, retry_in = ?delay, "read report failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return "abandoned",
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Fetches every bundle this depot should hold and writes them, retrying
    /// until the configserver answers once in full.
    pub fn spawn_reconcile(&self, core: Arc<DepotCore>, stop: CancellationToken) {
        let upstream = self.clone();
        let span = info_span!("reconcile", depot = %self.depot_id);
        tokio::spawn(
            async move {
                let mut delay = Duration::from_millis(200);
                loop {
                    match upstream.reconcile_once(&core).await {
                        Ok((written, refused)) => {
                            info!(written, refused, "start-up reconciliation done");
                            return;
                        }
                        Err(status) => {
                            warn!(%status, retry_in = ?delay, "start-up reconciliation failed; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                () = stop.cancelled() => return,
                            }
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    async fn reconcile_once(&self, core: &Arc<DepotCore>) -> Result<(usize, usize), tonic::Status> {
        let mut c = self.client.clone();
        let stream = c
            .list_pending_bundles(proto::ListPendingBundlesRequest {
                depot_id: self.depot_id.to_string(),
            })
            .await?
            .into_inner();
        let results: Vec<Result<bool, tonic::Status>> = stream
            .map(|item| {
                let core = core.clone();
                async move {
                    let wire = item?;
                    let fqdn = wire.host.as_ref().map(|h| h.id.clone()).unwrap_or_default();
                    let applied = match ClientBundle::try_from(wire) {
                        Ok(bundle) => core.set(bundle).await,
                        Err(e) => Err(Error::from(e)),
                    };
                    match applied {
                        Ok(_) | Err(Error::Writer(super::writer::WriterError::Stale { .. })) => {
                            Ok(true)
                        }
                        Err(error) => {
                            warn!(%fqdn, %error, "pending config not written");
                            Ok(false)
                        }
                    }
                }
            })
            .buffer_unordered(RECONCILE_CONCURRENCY)
            .collect()
            .await;
        let mut written = 0;
        let mut refused = 0;
        for r in results {
            if r? {
                written += 1;
            } else {
                refused += 1;
            }
        }
        Ok((written, refused))
    }
}
