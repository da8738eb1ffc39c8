//! The `pxeconf.v1.Admin` gRPC service: bulk writes (each one transaction,
//! its pushes queued as it commits) and status queries.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use super::dispatch::{Capability, DepotRuntime};
use super::store::{DepotRecord, PushRecord, WriteOutcome, from_ms};
use super::wire;
use super::{Core, Error};
use crate::domain::{Client, Fqdn};
use crate::proto::{self, admin_server};
use crate::wire::{convert_each, fqdns, timestamp};

/// Page size of `ListPending` when the request names none.
const DEFAULT_PAGE: u32 = 1000;
/// The largest page `ListPending` returns.
const MAX_PAGE: u32 = 10_000;

/// The handlers.
pub struct AdminService {
    core: Arc<Core>,
}

impl AdminService {
    /// Handlers over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Queues the write's pushes and answers with its counts.
    fn done(&self, outcome: WriteOutcome) -> Response<proto::WriteResponse> {
        let pushes_queued = outcome.owed.len() as u64;
        self.core.dispatcher.notify(outcome.owed);
        Response::new(proto::WriteResponse {
            affected: outcome.affected,
            pushes_queued,
        })
    }
}

/// The state of a push row, as operators see it. A push owed to an
/// unreachable depot is failed with the depot's error, whether or not it was
/// tried itself.
fn delivery(p: PushRecord, runtime: Option<&DepotRuntime>) -> proto::Delivery {
    use proto::DeliveryState as S;
    let owed = p.revision > p.delivered_revision;
    let depot_down = runtime.filter(|rt| owed && !rt.reachable);
    let error = match depot_down {
        Some(rt) if p.last_error.is_empty() => rt.last_error.clone(),
        _ if owed => p.last_error,
        _ => String::new(),
    };
    let state = if p.op == "remove" {
        if owed { S::Queued } else { S::Removed }
    } else if p.read_revision >= p.revision {
        S::Read
    } else if !owed {
        S::Delivered
    } else if !error.is_empty() {
        S::Failed
    } else {
        S::Queued
    };
    let next_retry = match depot_down {
        // An unreachable depot is retried on its own schedule, not the row's.
        Some(rt) => rt.next_retry.map(timestamp),
        None => p
            .next_attempt_at
            .filter(|_| owed)
            .map(|ms| timestamp(from_ms(ms))),
    };
    proto::Delivery {
        depot_id: p.depot_id,
        state: state as i32,
        operation: p.op,
        revision: p.revision,
        delivered_revision: p.delivered_revision,
        product_id: p.product_id,
        updated_at: Some(timestamp(from_ms(p.updated_at))),
        delivered_at: p.delivered_at.map(|ms| timestamp(from_ms(ms))),
        read_at: p.read_at.map(|ms| timestamp(from_ms(ms))),
        error,
        next_retry,
        attempts: p.attempts,
        path: p.path,
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    #[instrument(skip_all, fields(count = request.get_ref().depots.len()))]
    async fn upsert_depots(
        &self,
        request: Request<proto::UpsertDepotsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let depots: Vec<DepotRecord> =
            convert_each(request.into_inner().depots, "depots", DepotRecord::try_from)
                .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_depots(&depots)
            .await
            .map_err(Error::from)?;
        self.core.refresh_keys().await.map_err(Error::from)?;
        for d in depots {
            info!(depot = %d.id, endpoint = %d.endpoint, "depot registered");
            self.core.dispatcher.depot_upserted(d);
        }
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn delete_depots(
        &self,
        request: Request<proto::DeleteByIdRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let ids = fqdns(request.into_inner().ids, "ids").map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_depots(&ids)
            .await
            .map_err(Error::from)?;
        self.core.refresh_keys().await.map_err(Error::from)?;
        for id in &ids {
            self.core.dispatcher.depot_deleted(id.as_str());
        }
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().clients.len()))]
    async fn upsert_clients(
        &self,
        request: Request<proto::UpsertClientsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let clients: Vec<Client> =
            convert_each(request.into_inner().clients, "clients", Client::try_from)
                .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_clients(&clients)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn delete_clients(
        &self,
        request: Request<proto::DeleteByIdRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let ids = fqdns(request.into_inner().ids, "ids").map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_clients(&ids)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().products.len()))]
    async fn upsert_products(
        &self,
        request: Request<proto::UpsertProductsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let products = convert_each(request.into_inner().products, "products", TryFrom::try_from)
            .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_products(&products)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().products.len()))]
    async fn delete_products(
        &self,
        request: Request<proto::DeleteProductsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let keys = convert_each(request.into_inner().products, "products", wire::product_key)
            .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_products(&keys)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_on_depots.len()))]
    async fn upsert_product_on_depots(
        &self,
        request: Request<proto::UpsertProductOnDepotsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let pods = convert_each(
            request.into_inner().product_on_depots,
            "product_on_depots",
            TryFrom::try_from,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_product_on_depots(&pods)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_on_depots.len()))]
    async fn delete_product_on_depots(
        &self,
        request: Request<proto::DeleteProductOnDepotsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let keys = convert_each(
            request.into_inner().product_on_depots,
            "product_on_depots",
            wire::pod_key,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_product_on_depots(&keys)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().configs.len()))]
    async fn upsert_configs(
        &self,
        request: Request<proto::UpsertConfigsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let configs = convert_each(request.into_inner().configs, "configs", TryFrom::try_from)
            .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_configs(&configs)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().config_states.len()))]
    async fn upsert_config_states(
        &self,
        request: Request<proto::UpsertConfigStatesRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let states = convert_each(
            request.into_inner().config_states,
            "config_states",
            TryFrom::try_from,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_config_states(&states)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().config_states.len()))]
    async fn delete_config_states(
        &self,
        request: Request<proto::DeleteConfigStatesRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let keys = convert_each(
            request.into_inner().config_states,
            "config_states",
            wire::config_state_key,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_config_states(&keys)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_property_states.len()))]
    async fn upsert_product_property_states(
        &self,
        request: Request<proto::UpsertProductPropertyStatesRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let states = convert_each(
            request.into_inner().product_property_states,
            "product_property_states",
            TryFrom::try_from,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .upsert_property_states(&states)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_property_states.len()))]
    async fn delete_product_property_states(
        &self,
        request: Request<proto::DeleteProductPropertyStatesRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let keys = convert_each(
            request.into_inner().product_property_states,
            "product_property_states",
            TryFrom::try_from,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_property_states(&keys)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().action_requests.len()))]
    async fn set_action_requests(
        &self,
        request: Request<proto::SetActionRequestsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let actions = convert_each(
            request.into_inner().action_requests,
            "action_requests",
            TryFrom::try_from,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .set_action_requests(&actions)
            .await
            .map_err(Error::from)?;
        info!(
            actions = actions.len(),
            pushes = outcome.owed.len(),
            "action requests set"
        );
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_on_clients.len()))]
    async fn delete_product_on_clients(
        &self,
        request: Request<proto::DeleteProductOnClientsRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let keys = convert_each(
            request.into_inner().product_on_clients,
            "product_on_clients",
            wire::poc_key,
        )
        .map_err(Error::from)?;
        let outcome = self
            .core
            .store
            .delete_product_on_clients(&keys)
            .await
            .map_err(Error::from)?;
        Ok(self.done(outcome))
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().fqdn))]
    async fn get_client_status(
        &self,
        request: Request<proto::GetClientStatusRequest>,
    ) -> Result<Response<proto::ClientStatus>, Status> {
        let id = Fqdn::parse(&request.get_ref().fqdn, "fqdn").map_err(Error::from)?;
        let store = &self.core.store;
        let client = store
            .client(id.as_str())
            .await
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::Store(super::store::StoreError::NotFound {
                    what: "client",
                    id: id.to_string(),
                })
            })?;
        let pocs = store
            .product_on_clients(id.as_str(), false)
            .await
            .map_err(Error::from)?;
        let depot = store.depot_of(id.as_str()).await.map_err(Error::from)?;
        let depot_known = match &depot {
            Some(d) => store.depot_exists(d).await.map_err(Error::from)?,
            None => false,
        };
        let active = pocs.iter().any(|p| p.action_request != "none");
        let note = match (&depot, depot_known) {
            _ if !active => "no netboot action request".to_owned(),
            (None, _) => {
                "no depot: clientconfig.depot.id has no value for this client and no default"
                    .to_owned()
            }
            (Some(d), false) => format!("depot {d} is not registered"),
            _ if client.mac.is_none() && client.uuid.is_none() => {
                "neither MAC address nor system UUID: the depot cannot name a PXE config file"
                    .to_owned()
            }
            _ => String::new(),
        };
        let runtime = self.core.dispatcher.runtime();
        let deliveries = store
            .pushes_of_client(id.as_str())
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(|p| {
                let rt = runtime.get(&p.depot_id);
                delivery(p, rt)
            })
            .collect();
        let mut host = proto::Host::from(&client);
        host.opsi_host_key.clear();
        Ok(Response::new(proto::ClientStatus {
            host: Some(host),
            product_on_clients: pocs.into_iter().map(Into::into).collect(),
            depot_id: depot.unwrap_or_default(),
            note,
            deliveries,
        }))
    }

    async fn list_depots(
        &self,
        _request: Request<proto::ListDepotsRequest>,
    ) -> Result<Response<proto::ListDepotsResponse>, Status> {
        let depots = self.core.store.depots().await.map_err(Error::from)?;
        let counts = self.core.store.depot_counts().await.map_err(Error::from)?;
        let runtime: HashMap<String, DepotRuntime> = self.core.dispatcher.runtime();
        let depots = depots
            .into_iter()
            .map(|d| {
                let id = d.id.to_string();
                let rt = runtime.get(&id).cloned().unwrap_or_default();
                let (owed, delivered) = counts.get(&id).copied().unwrap_or((0, 0));
                proto::DepotStatus {
                    id,
                    endpoint: d.endpoint,
                    description: d.description,
                    reachable: rt.reachable,
                    capability: if rt.capability == Capability::Unknown && rt.pushes_legacy > 0 {
                        Capability::Legacy.as_str().to_owned()
                    } else {
                        rt.capability.as_str().to_owned()
                    },
                    queued: owed,
                    delivered,
                    last_error: rt.last_error,
                    last_contact: rt.last_contact.map(timestamp),
                    pushes_new: rt.pushes_new,
                    pushes_legacy: rt.pushes_legacy,
                }
            })
            .collect();
        Ok(Response::new(proto::ListDepotsResponse { depots }))
    }

    #[instrument(skip_all, fields(depot = %request.get_ref().depot_id))]
    async fn list_pending(
        &self,
        request: Request<proto::ListPendingRequest>,
    ) -> Result<Response<proto::ListPendingResponse>, Status> {
        let r = request.into_inner();
        let depot = Fqdn::parse(&r.depot_id, "depot_id").map_err(Error::from)?;
        let limit = match r.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let rows = self
            .core
            .store
            .pending_of_depot(depot.as_str(), &r.page_token, limit + 1)
            .await
            .map_err(Error::from)?;
        let more = rows.len() > limit as usize;
        let runtime = self.core.dispatcher.runtime();
        let rt = runtime.get(depot.as_str());
        let pending: Vec<proto::PendingPush> = rows
            .into_iter()
            .take(limit as usize)
            .map(|p| proto::PendingPush {
                client_id: p.client_id.clone(),
                delivery: Some(delivery(p, rt)),
            })
            .collect();
        let next_page_token = if more {
            pending
                .last()
                .map(|p| p.client_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListPendingResponse {
            pending,
            next_page_token,
        }))
    }
}
