//! The `pxeconf.v1.Depot` gRPC service: thin handlers over `DepotCore`
//! (statuses are chosen in `super::error`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{Span, instrument};

use super::core::DepotCore;
use super::error::Error;
use crate::auth::RequireKey;
use crate::domain::{ClientBundle, Fqdn, Secret};
use crate::proto::{self, depot_server};

/// Page size of `ListPxeConfigs` when the request names none.
const DEFAULT_PAGE: usize = 1000;
/// The largest page `ListPxeConfigs` returns.
const MAX_PAGE: usize = 10_000;

/// The Depot service with its auth check, plus reflection and health.
pub async fn routes(core: Arc<DepotCore>, host_key: Option<Secret>) -> tonic::service::Routes {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(depot_server::DepotServer::with_interceptor(
        DepotService::new(core),
        RequireKey::new(host_key),
    ));
    crate::server::with_standard_services(routes, &["pxeconf.v1.Depot"]).await
}

/// The gRPC handlers.
pub struct DepotService {
    core: Arc<DepotCore>,
}

impl DepotService {
    /// The handlers over `core`, without auth (`routes` adds it).
    pub fn new(core: Arc<DepotCore>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl depot_server::Depot for DepotService {
    #[instrument(skip_all, fields(depot = %self.core.depot_id, fqdn, revision))]
    async fn set_pxe_config(
        &self,
        request: Request<proto::ClientBundle>,
    ) -> Result<Response<proto::SetPxeConfigResponse>, Status> {
        if self.core.is_legacy() {
            return Err(Error::LegacyOnly.into());
        }
        let wire = request.into_inner();
        let span = Span::current();
        span.record("revision", wire.revision);
        if let Some(host) = &wire.host {
            span.record("fqdn", host.id.as_str());
        }
        let bundle = ClientBundle::try_from(wire).map_err(Error::from)?;
        let outcome = self.core.set(bundle).await?;
        Ok(Response::new(outcome.into()))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id, fqdn = %request.get_ref().fqdn, revision = request.get_ref().revision))]
    async fn set_pxe_config_by_fqdn(
        &self,
        request: Request<proto::SetPxeConfigByFqdnRequest>,
    ) -> Result<Response<proto::SetPxeConfigResponse>, Status> {
        let request = request.into_inner();
        let fqdn = Fqdn::parse(&request.fqdn, "fqdn").map_err(Error::from)?;
        let outcome = self.core.set_by_fqdn(fqdn, request.revision).await?;
        Ok(Response::new(outcome.into()))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id, fqdn = %request.get_ref().fqdn, revision = request.get_ref().revision))]
    async fn remove_pxe_config(
        &self,
        request: Request<proto::RemovePxeConfigRequest>,
    ) -> Result<Response<proto::RemovePxeConfigResponse>, Status> {
        let request = request.into_inner();
        let fqdn = Fqdn::parse(&request.fqdn, "fqdn").map_err(Error::from)?;
        let removed = self
            .core
            .writer()
            .remove(fqdn, request.revision)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::RemovePxeConfigResponse { removed }))
    }

    #[instrument(skip_all, fields(depot = %self.core.depot_id))]
    async fn list_pxe_configs(
        &self,
        request: Request<proto::ListPxeConfigsRequest>,
    ) -> Result<Response<proto::ListPxeConfigsResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = Some(request.page_token).filter(|t| !t.is_empty());
        let product =
            Some(request.product_id.trim().to_ascii_lowercase()).filter(|p| !p.is_empty());
        let page = self
            .core
            .writer()
            .list(after, limit, product)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::ListPxeConfigsResponse {
            configs: page.configs.into_iter().map(Into::into).collect(),
            next_page_token: page.next_after.unwrap_or_default(),
            total: page.total as u64,
        }))
    }
}
