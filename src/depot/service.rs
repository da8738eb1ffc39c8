//! The `pxeconf.v1.Depot` gRPC service: thin handlers over `DepotCore`, and
//! the one place depot errors become gRPC statuses.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{Span, error, instrument};

use super::render::RenderError;
use super::template::TemplateError;
use super::writer::WriterError;
use super::{DepotCore, Error};
use crate::auth::RequireKey;
use crate::domain::{ClientBundle, Fqdn, Secret};
use crate::proto::{self, depot_server};

/// Page size of `ListPxeConfigs` when the request names none.
const DEFAULT_PAGE: usize = 1000;
/// The largest page `ListPxeConfigs` returns.
const MAX_PAGE: usize = 10_000;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::Invalid(_) => Status::invalid_argument(message),
            Error::Template(TemplateError::Escapes { .. }) => Status::invalid_argument(message),
            Error::Template(TemplateError::Missing { .. }) => Status::failed_precondition(message),
            Error::Render(RenderError::UefiNotLicensed { .. }) => {
                Status::failed_precondition(message)
            }
            Error::Writer(WriterError::Stale { .. }) => Status::aborted(message),
            Error::Writer(WriterError::Conflict { .. }) => Status::already_exists(message),
            Error::Writer(WriterError::NoFileNames { .. })
            | Error::WrongDepot { .. }
            | Error::NoAction { .. }
            | Error::NoConfigServer => Status::failed_precondition(message),
            Error::Writer(WriterError::Stopped) => Status::unavailable(message),
            Error::LegacyOnly => Status::unimplemented(message),
            Error::Lookup { ref status, .. } => match status.code() {
                tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
                    Status::failed_precondition(message)
                }
                _ => Status::unavailable(message),
            },
            // File system trouble is ours, not the caller's: the detail goes
            // to the log, the caller learns that it happened.
            Error::Writer(WriterError::Io { .. })
            | Error::Template(TemplateError::Io { .. } | TemplateError::Dir { .. })
            | Error::Render(RenderError::Hash(_)) => {
                error!(error = %message, "depot internal error");
                Status::internal("internal error on the depot; the depot log has the detail")
            }
        }
    }
}

/// The Depot service with its auth check, plus reflection and health.
pub async fn routes(core: Arc<DepotCore>, host_key: Option<Secret>) -> tonic::service::Routes {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(depot_server::DepotServer::with_interceptor(
        DepotService { core },
        RequireKey::new(host_key),
    ));
    crate::server::with_standard_services(routes, &["pxeconf.v1.Depot"]).await
}

/// The gRPC handlers.
pub struct DepotService {
    core: Arc<DepotCore>,
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
