//! The `pxeconf.v1.ConfigServer` gRPC service, called by depots: the legacy
//! look-ups (each counted by RPC name), whole bundles, read reports and the
//! start-up reconciliation stream.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info, instrument, warn};

use super::core::{Core, to_the_end};
use super::error::Error;
use super::keys::CallerDepot;
use super::store::{Job, Rows, Store};
use crate::domain::limits::{MAX_ID, MAX_ITEMS, shown};
use crate::domain::opsi::PXE_CONFIGS;
use crate::domain::{Fqdn, Modules, ProductId, ValidationError};
use crate::metrics::RpcLabel;
use crate::proto::{self, config_server_server};

/// The handlers.
pub struct ConfigServerService {
    core: Arc<Core>,
}

impl ConfigServerService {
    /// Handlers over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Fails with PERMISSION_DENIED unless `client` exists and belongs to
    /// `depot`; the message names neither the client's depot nor its data,
    /// and an unknown client is refused alike (no probing for names).
    async fn own_client(&self, depot: &CallerDepot, client: &Fqdn) -> Result<(), Error> {
        if self
            .core
            .store
            .is_client_of(client.as_str(), depot.id())
            .await?
        {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "{client} is not a client of this depot"
            )))
        }
    }

    /// Counts a look-up answered: found, or NOT_FOUND. A refused, malformed
    /// or failed call is no look-up served (`auth_failures` and the latency
    /// histogram's `code` show those): a prober's calls, or a depot's
    /// retries after a busy database, would otherwise read as a chatty path.
    fn count<T>(&self, rpc: &str, answer: &Result<T, Status>) {
        if let Err(status) = answer
            && status.code() != Code::NotFound
        {
            return;
        }
        self.core
            .metrics
            .lookups
            .get_or_create(&RpcLabel {
                rpc: rpc.to_owned(),
            })
            .inc();
    }
}

/// Bundles of the start-up stream built per store read, and sent ahead of
/// the depot reading them.
const STREAM_BATCH: usize = 256;

/// Config ids asked for: at most [`MAX_ITEMS`], each a bounded token.
fn check_config_ids(ids: &[String]) -> Result<(), ValidationError> {
    if ids.len() > MAX_ITEMS {
        return Err(ValidationError::new(
            "config_ids",
            format!("at most {MAX_ITEMS} items ({} given)", ids.len()),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if id.len() > MAX_ID || id.chars().any(char::is_control) {
            return Err(ValidationError::new(
                format!("config_ids[{i}]"),
                format!("invalid config id {}", shown(id)),
            ));
        }
    }
    Ok(())
}

type BundleStream = Pin<Box<dyn Stream<Item = Result<proto::ClientBundle, Status>> + Send>>;

/// Sends the bundles `depot` should hold for `clients`, a batch at a time,
/// until done, the store fails (the error ends the stream) or the depot
/// hangs up.
async fn stream_bundles(
    store: Store,
    depot: Fqdn,
    clients: Vec<String>,
    modules: Modules,
    tx: mpsc::Sender<Result<proto::ClientBundle, Status>>,
) {
    for chunk in clients.chunks(STREAM_BATCH) {
        let loaded = match store
            .load_bundles(depot.as_str(), chunk, Rows::Held, modules)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(Status::from(Error::from(e)))).await;
                return;
            }
        };
        for l in loaded {
            match l.job {
                Ok(Job::Set(b)) => {
                    if tx
                        .send(Ok(super::core::wire_bundle(&store, &b)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Job::Remove) => {}
                Err(why) => {
                    warn!(client = %l.client_id, %why, "pending config left out of reconciliation")
                }
            }
        }
    }
}

#[tonic::async_trait]
impl config_server_server::ConfigServer for ConfigServerService {
    #[instrument(skip_all, fields(fqdn = %request.get_ref().id))]
    async fn get_host(
        &self,
        request: Request<proto::GetHostRequest>,
    ) -> Result<Response<proto::GetHostResponse>, Status> {
        let answer = async {
            let depot = CallerDepot::of(&request)?;
            let id = Fqdn::parse(&request.get_ref().id, "id").map_err(Error::from)?;
            self.own_client(&depot, &id).await?;
            let client = self
                .core
                .store
                .client(id.as_str())
                .await
                .map_err(Error::from)?
                .ok_or_else(|| Error::not_found("client", id.as_str()))?;
            Ok(Response::new(proto::Host::from(&client).into()))
        }
        .await;
        self.count("GetHost", &answer);
        answer
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().client_id))]
    async fn get_netboot_product_on_clients(
        &self,
        request: Request<proto::GetNetbootProductOnClientsRequest>,
    ) -> Result<Response<proto::GetNetbootProductOnClientsResponse>, Status> {
        let answer = async {
            let depot = CallerDepot::of(&request)?;
            let id = Fqdn::parse(&request.get_ref().client_id, "client_id").map_err(Error::from)?;
            self.own_client(&depot, &id).await?;
            let pocs = self
                .core
                .store
                .product_on_clients(id.as_str(), true)
                .await
                .map_err(Error::from)?;
            Ok(Response::new(proto::GetNetbootProductOnClientsResponse {
                product_on_clients: pocs.into_iter().map(Into::into).collect(),
            }))
        }
        .await;
        self.count("GetNetbootProductOnClients", &answer);
        answer
    }

    #[instrument(skip_all, fields(depot = %request.get_ref().depot_id, product = %request.get_ref().product_id))]
    async fn get_product_on_depot(
        &self,
        request: Request<proto::GetProductOnDepotRequest>,
    ) -> Result<Response<proto::GetProductOnDepotResponse>, Status> {
        let answer = async {
            let caller = CallerDepot::of(&request)?;
            let r = request.into_inner();
            let depot = Fqdn::parse(&r.depot_id, "depot_id").map_err(Error::from)?;
            let product = ProductId::parse(&r.product_id, "product_id").map_err(Error::from)?;
            if depot.as_str() != caller.id() {
                return Err(Error::WrongDepot {
                    caller: caller.to_string(),
                    target: depot.to_string(),
                }
                .into());
            }
            let (product_version, package_version) = self
                .core
                .store
                .product_on_depot(depot.as_str(), product.as_str())
                .await
                .map_err(Error::from)?
                .ok_or_else(|| {
                    Error::not_found("product on depot", format!("{product} on {depot}"))
                })?;
            Ok(Response::new(proto::GetProductOnDepotResponse {
                depot_id: depot.to_string(),
                product_id: product.to_string(),
                product_version,
                package_version,
            }))
        }
        .await;
        self.count("GetProductOnDepot", &answer);
        answer
    }

    #[instrument(skip_all, fields(product = %request.get_ref().id))]
    async fn get_product(
        &self,
        request: Request<proto::GetProductRequest>,
    ) -> Result<Response<proto::GetProductResponse>, Status> {
        let answer = async {
            let depot = CallerDepot::of(&request)?;
            let r = request.into_inner();
            let id = ProductId::parse(&r.id, "id").map_err(Error::from)?;
            // A depot reads the product versions installed on it, nothing else.
            let installed = self
                .core
                .store
                .product_on_depot(depot.id(), id.as_str())
                .await
                .map_err(Error::from)?;
            if installed.as_ref() != Some(&(r.product_version.clone(), r.package_version.clone())) {
                return Err(Error::Denied(format!(
                    "product {id} {} is not installed on this depot",
                    shown(&format!("{}-{}", r.product_version, r.package_version))
                ))
                .into());
            }
            let product = self
                .core
                .store
                .product(id.as_str(), &r.product_version, &r.package_version)
                .await
                .map_err(Error::from)?
                .ok_or_else(|| {
                    Error::not_found(
                        "product",
                        format!("{id} {}-{}", r.product_version, r.package_version),
                    )
                })?;
            Ok(Response::new(proto::GetProductResponse {
                id: product.id.to_string(),
                product_version: product.product_version,
                package_version: product.package_version,
                pxe_config_template: product.template.map(|t| t.to_string()).unwrap_or_default(),
            }))
        }
        .await;
        self.count("GetProduct", &answer);
        answer
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().client_id))]
    async fn get_config_states(
        &self,
        request: Request<proto::GetConfigStatesRequest>,
    ) -> Result<Response<proto::GetConfigStatesResponse>, Status> {
        let answer = async {
            let depot = CallerDepot::of(&request)?;
            let r = request.into_inner();
            let id = Fqdn::parse(&r.client_id, "client_id").map_err(Error::from)?;
            check_config_ids(&r.config_ids).map_err(Error::from)?;
            self.own_client(&depot, &id).await?;
            let wanted: Vec<&str> = if r.config_ids.is_empty() {
                PXE_CONFIGS.to_vec()
            } else {
                r.config_ids.iter().map(String::as_str).collect()
            };
            let values = self
                .core
                .store
                .config_values(id.as_str(), &wanted)
                .await
                .map_err(Error::from)?;
            Ok(Response::new(proto::GetConfigStatesResponse {
                config_states: values
                    .into_iter()
                    .map(|(config_id, values)| proto::ConfigState {
                        object_id: id.to_string(),
                        config_id,
                        values,
                    })
                    .collect(),
            }))
        }
        .await;
        self.count("GetConfigStates", &answer);
        answer
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().client_id, product = %request.get_ref().product_id))]
    async fn get_product_property_states(
        &self,
        request: Request<proto::GetProductPropertyStatesRequest>,
    ) -> Result<Response<proto::GetProductPropertyStatesResponse>, Status> {
        let answer = async {
            let depot = CallerDepot::of(&request)?;
            let r = request.into_inner();
            let id = Fqdn::parse(&r.client_id, "client_id").map_err(Error::from)?;
            let product = ProductId::parse(&r.product_id, "product_id").map_err(Error::from)?;
            self.own_client(&depot, &id).await?;
            let states = self
                .core
                .store
                .property_values(id.as_str(), product.as_str(), depot.id())
                .await
                .map_err(Error::from)?;
            Ok(Response::new(proto::GetProductPropertyStatesResponse {
                product_property_states: states.into_iter().collect(),
            }))
        }
        .await;
        self.count("GetProductPropertyStates", &answer);
        answer
    }

    async fn get_modules(
        &self,
        _request: Request<proto::GetModulesRequest>,
    ) -> Result<Response<proto::GetModulesResponse>, Status> {
        let answer = async {
            // Only an admitted depot gets here; the modules are no client's data.
            let _depot = CallerDepot::of(&_request)?;
            Ok(Response::new(
                proto::Modules::from(self.core.modules).into(),
            ))
        }
        .await;
        self.count("GetModules", &answer);
        answer
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().fqdn))]
    async fn get_client_bundle(
        &self,
        request: Request<proto::GetClientBundleRequest>,
    ) -> Result<Response<proto::ClientBundle>, Status> {
        let depot = CallerDepot::of(&request)?;
        let id = Fqdn::parse(&request.get_ref().fqdn, "fqdn").map_err(Error::from)?;
        let loaded = self
            .core
            .store
            .load_bundles(depot.id(), &[id.to_string()], Rows::Held, self.core.modules)
            .await
            .map_err(Error::from)?;
        match loaded.into_iter().next().map(|l| l.job) {
            Some(Ok(Job::Set(b))) => Ok(Response::new(super::core::wire_bundle(
                &self.core.store,
                &b,
            ))),
            Some(Err(why)) => Err(Error::Precondition(why).into()),
            _ if !self
                .core
                .store
                .is_client_of(id.as_str(), depot.id())
                .await
                .map_err(Error::from)? =>
            {
                Err(Error::Denied(format!("{id} is not a client of this depot")).into())
            }
            _ => Err(Error::Precondition(format!(
                "{id} has no pending PXE config on depot {depot}"
            ))
            .into()),
        }
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().fqdn, revision = request.get_ref().revision))]
    async fn report_pxe_config_read(
        &self,
        request: Request<proto::ReportPxeConfigReadRequest>,
    ) -> Result<Response<proto::ReportPxeConfigReadResponse>, Status> {
        let depot = CallerDepot::of(&request)?;
        let r = request.into_inner();
        let id = Fqdn::parse(&r.fqdn, "fqdn").map_err(Error::from)?;
        let product = ProductId::parse(&r.product_id, "product_id").map_err(Error::from)?;
        let report = super::core::read_report(depot.id(), &id, &product, &r);
        // What the read owes (the next action, an `always` pushed again) is
        // queued even if the depot gives up waiting meanwhile: it is not
        // owed again when the depot reports the read a second time.
        let core = Arc::clone(&self.core);
        let outcome = to_the_end(async move {
            let mut outcome = core.store.record_read(&report).await?;
            core.dispatcher
                .notify(std::mem::take(&mut outcome.owed))
                .await;
            Ok(outcome)
        })
        .await?;
        if outcome.applied {
            info!(%depot, action_request = %outcome.action_request, repushed = outcome.repushed, "PXE config read reported");
        } else if !self
            .core
            .store
            .is_client_of(id.as_str(), depot.id())
            .await
            .map_err(Error::from)?
        {
            // A report that changed nothing tells a foreign depot nothing,
            // not even the client's action request.
            return Err(Error::Denied(format!("{id} is not a client of this depot")).into());
        }
        Ok(Response::new(proto::ReportPxeConfigReadResponse {
            action_request: outcome.action_request,
            repushed: outcome.repushed,
            applied: outcome.applied,
        }))
    }

    type ListPendingBundlesStream = BundleStream;

    #[instrument(skip_all, fields(depot = %request.get_ref().depot_id))]
    async fn list_pending_bundles(
        &self,
        request: Request<proto::ListPendingBundlesRequest>,
    ) -> Result<Response<Self::ListPendingBundlesStream>, Status> {
        let caller = CallerDepot::of(&request)?;
        let depot = Fqdn::parse(&request.get_ref().depot_id, "depot_id").map_err(Error::from)?;
        if depot.as_str() != caller.id() {
            return Err(Error::WrongDepot {
                caller: caller.to_string(),
                target: depot.to_string(),
            }
            .into());
        }
        self.core
            .observe_reconciliation(request.get_ref())
            .await
            .map_err(Error::from)?;
        let clients = self
            .core
            .store
            .held_clients(depot.as_str())
            .await
            .map_err(Error::from)?;
        info!(
            bundles = clients.len(),
            "depot reconciles its pending configs"
        );
        let (tx, rx) = mpsc::channel(STREAM_BATCH);
        let (store, modules) = (self.core.store.clone(), self.core.modules);
        // The stream holds the caller's in-flight slot until it ends.
        let stream = stream_bundles(store, depot, clients, modules, tx);
        tokio::spawn(async move { (stream.await, drop(caller)) }.in_current_span());
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as BundleStream);
        super::core::tag_epoch(response.metadata_mut(), self.core.store.epoch());
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use config_server_server::ConfigServer as _;
    use tonic::Code;

    use super::*;
    use crate::configserver::core::test_core;

    fn as_depot<T>(message: T, depot: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(CallerDepot::new(depot));
        request
    }

    #[tokio::test]
    async fn a_depot_may_not_act_for_another() {
        let (_dir, core) = test_core().await;
        let service = ConfigServerService::new(core);
        let request = proto::ListPendingBundlesRequest {
            depot_id: "d2.example.org".into(),
            epoch: Default::default(),
            highest_revision: Default::default(),
        };
        let refused = service
            .list_pending_bundles(as_depot(request, "d1.example.org"))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(
            refused.message().contains("d2.example.org"),
            "{}",
            refused.message()
        );
        // Without an identity (no interceptor ran) nothing is served.
        let request = Request::new(proto::GetClientBundleRequest {
            fqdn: "c.example.org".into(),
        });
        let refused = service.get_client_bundle(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn bad_input_names_the_field_and_unknown_clients_are_denied_alike() {
        let (_dir, core) = test_core().await;
        let service = ConfigServerService::new(core);
        let bad = service
            .get_product_on_depot(as_depot(
                proto::GetProductOnDepotRequest {
                    depot_id: "d1.example.org".into(),
                    product_id: "no spaces".into(),
                },
                "d1.example.org",
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(
            bad.message().starts_with("product_id: "),
            "{}",
            bad.message()
        );
        let bad = service
            .get_host(as_depot(
                proto::GetHostRequest { id: "-x-".into() },
                "d1.example.org",
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().starts_with("id: "), "{}", bad.message());
        let missing = service
            .get_host(as_depot(
                proto::GetHostRequest {
                    id: "ghost.example.org".into(),
                },
                "d1.example.org",
            ))
            .await
            .unwrap_err();
        // An unknown client is refused like another depot's: a depot cannot
        // probe which names exist.
        assert_eq!(missing.code(), Code::PermissionDenied);
        assert_eq!(
            missing.message(),
            "ghost.example.org is not a client of this depot"
        );
        let none = service
            .get_client_bundle(as_depot(
                proto::GetClientBundleRequest {
                    fqdn: "ghost.example.org".into(),
                },
                "d1.example.org",
            ))
            .await
            .unwrap_err();
        assert_eq!(none.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_client_belongs_to_the_depot_its_config_names_in_any_spelling() {
        use crate::configserver::store::ConfigStateRecord;
        use crate::domain::{Client, Secret};
        let (_dir, core) = test_core().await;
        let client = |id: &str| Client {
            fqdn: Fqdn::parse(id, "id").unwrap(),
            mac: None,
            uuid: None,
            ip_address: String::new(),
            host_key: Secret::new("0123456789abcdef0123456789abcdef"),
        };
        let store = &core.store;
        store
            .upsert_clients(&[client("pc1.example.org"), client("pc2.example.org")])
            .await
            .unwrap();
        store
            .upsert_config_states(&[ConfigStateRecord {
                object_id: Fqdn::parse("pc1.example.org", "id").unwrap(),
                config_id: crate::domain::opsi::DEPOT_ID.into(),
                values: vec!["D1.Example.ORG.".into()],
            }])
            .await
            .unwrap();
        let service = ConfigServerService::new(core);
        let get = |id: &str, depot: &str| {
            service.get_host(as_depot(proto::GetHostRequest { id: id.into() }, depot))
        };
        let host = get("pc1.example.org", "d1.example.org").await.unwrap();
        assert_eq!(host.get_ref().id, "pc1.example.org");
        for (id, depot) in [
            ("pc1.example.org", "d2.example.org"),
            ("pc2.example.org", "d1.example.org"),
        ] {
            let denied = get(id, depot).await.unwrap_err();
            assert_eq!(denied.code(), Code::PermissionDenied, "{id} as {depot}");
            assert!(
                !denied.message().contains("d1.example"),
                "{}",
                denied.message()
            );
        }
    }
}
