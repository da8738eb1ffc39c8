//! The `pxeconf.v1.Admin` gRPC service: bulk writes (each one transaction,
//! its pushes queued as it commits) and status queries.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};

use super::core::{Core, to_the_end};
use super::error::Error;
use super::status::{client_note, delivery, depot_status};
use super::store::{self, DepotRecord, Store, WriteOutcome};
use super::wire;
use crate::domain::{ActionRequest, Client, Fqdn, ValidationError};
use crate::proto::{self, admin_server};
use crate::wire::{convert_each, fqdns};

/// Page size of `ListPending` when the request names none.
const DEFAULT_PAGE: u32 = 1000;
/// The largest page `ListPending` returns.
const MAX_PAGE: u32 = 10_000;

/// Queues a committed write's pushes; its counts for the answer.
async fn queue(core: &Core, outcome: WriteOutcome) -> proto::compat::Written {
    let pushes_queued = outcome.owed.len() as u64;
    core.dispatcher.notify(outcome.owed).await;
    proto::compat::Written {
        affected: outcome.affected,
        pushes_queued,
        waiting: outcome.waiting,
    }
}

/// The handlers.
pub struct AdminService {
    core: Arc<Core>,
}

type WriteResult<T> = Result<Response<T>, Status>;

impl AdminService {
    /// Handlers over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Runs one write of validated `items` and queues the pushes it owes,
    /// to the end even if the caller goes away ([`to_the_end`]).
    async fn write<R, T, F, Fut>(
        &self,
        items: Result<Vec<R>, ValidationError>,
        run: F,
    ) -> WriteResult<T>
    where
        R: Send + 'static,
        T: From<proto::compat::Written>,
        F: FnOnce(Store, Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = store::Result<WriteOutcome>> + Send,
    {
        let items = items.map_err(Error::from)?;
        let core = Arc::clone(&self.core);
        let written = to_the_end(async move {
            let outcome = run(core.store.clone(), items).await?;
            Ok(queue(&core, outcome).await)
        })
        .await?;
        Ok(Response::new(T::from(written)))
    }

    /// A client's status, or why there is none.
    async fn client_status(&self, id: Fqdn) -> Result<proto::GetClientStatusResponse, Error> {
        let store = &self.core.store;
        let client = store
            .client(id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("client", id.as_str()))?;
        let pocs = store.product_on_clients(id.as_str(), false).await?;
        let depot = store.depot_of(id.as_str()).await?;
        let depot_known = match &depot {
            Some(d) => store.depot_exists(d).await?,
            None => false,
        };
        // Newest action first (the store's one rule): the first is pushed,
        // the others wait for its read.
        let mut with_action = pocs
            .iter()
            .filter(|p| p.action_request != ActionRequest::None.as_str())
            .map(|p| p.product_id.clone());
        let active_product_id = with_action.next();
        let waiting_product_ids = with_action.collect();
        let note = client_note(
            &client,
            active_product_id.is_some(),
            depot.as_deref().map(|d| (d, depot_known)),
        );
        let runtime = self.core.dispatcher.runtime();
        let deliveries = store
            .pushes_of_client(id.as_str())
            .await?
            .into_iter()
            .map(|p| {
                let rt = runtime.get(&p.depot_id);
                delivery(p, rt)
            })
            .collect();
        let mut host = proto::Host::from(&client);
        host.opsi_host_key.clear();
        Ok(proto::GetClientStatusResponse {
            host: Some(host),
            product_on_clients: pocs.into_iter().map(Into::into).collect(),
            depot_id: depot.unwrap_or_default(),
            note,
            deliveries,
            active_product_id: active_product_id.unwrap_or_default(),
            waiting_product_ids,
        })
    }

    /// One page of what a depot is owed or holds, or of its blocked configs.
    async fn pending(
        &self,
        r: proto::ListPendingRequest,
    ) -> Result<proto::ListPendingResponse, Error> {
        let depot = Fqdn::parse(&r.depot_id, "depot_id")?;
        // A token is the last client id of a page: an FQDN, or nothing —
        // compared as stored (lower case, no trailing dot), or a token in
        // another spelling would repeat or skip rows.
        let after = match r.page_token.as_str() {
            "" => String::new(),
            token => Fqdn::parse(token, "page_token")?.as_str().to_owned(),
        };
        let limit = match r.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let rows = self
            .core
            .store
            .pending_of_depot(depot.as_str(), &after, limit + 1, r.blocked)
            .await?;
        // An empty page of a depot that does not exist is a mistyped id,
        // not "nothing pending".
        if rows.is_empty() && !self.core.store.depot_exists(depot.as_str()).await? {
            return Err(Error::Store(store::StoreError::NotFound {
                what: "depot",
                id: depot.to_string(),
            }));
        }
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
        let next_page_token = match pending.last() {
            Some(last) if more => last.client_id.clone(),
            _ => String::new(),
        };
        Ok(proto::ListPendingResponse {
            pending,
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    #[instrument(skip_all, fields(count = request.get_ref().depots.len()))]
    async fn upsert_depots(
        &self,
        request: Request<proto::UpsertDepotsRequest>,
    ) -> WriteResult<proto::UpsertDepotsResponse> {
        let depots: Vec<DepotRecord> =
            convert_each(request.into_inner().depots, "depots", DepotRecord::try_from)
                .map_err(Error::from)?;
        self.core
            .keys
            .refuse_admin_key(&depots, "depots")
            .map_err(Error::from)?;
        let core = Arc::clone(&self.core);
        let written = to_the_end(async move {
            let outcome = core.store.upsert_depots(&depots).await?;
            core.refresh_keys_after_write().await;
            for d in depots {
                info!(depot = %d.id, endpoint = %d.endpoint, "depot registered");
                core.dispatcher.depot_upserted(d).await;
            }
            Ok(queue(&core, outcome).await)
        })
        .await?;
        Ok(Response::new(written.into()))
    }

    #[instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn delete_depots(
        &self,
        request: Request<proto::DeleteDepotsRequest>,
    ) -> WriteResult<proto::DeleteDepotsResponse> {
        let ids = fqdns(request.into_inner().ids, "ids").map_err(Error::from)?;
        let core = Arc::clone(&self.core);
        let written = to_the_end(async move {
            let outcome = core.store.delete_depots(&ids).await?;
            core.refresh_keys_after_write().await;
            for id in &ids {
                core.dispatcher.depot_deleted(id.as_str());
            }
            Ok(queue(&core, outcome).await)
        })
        .await?;
        Ok(Response::new(written.into()))
    }

    #[instrument(skip_all, fields(count = request.get_ref().clients.len()))]
    async fn upsert_clients(
        &self,
        request: Request<proto::UpsertClientsRequest>,
    ) -> WriteResult<proto::UpsertClientsResponse> {
        let clients = convert_each(request.into_inner().clients, "clients", Client::try_from);
        self.write(clients, |s, c| async move { s.upsert_clients(&c).await })
            .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn delete_clients(
        &self,
        request: Request<proto::DeleteClientsRequest>,
    ) -> WriteResult<proto::DeleteClientsResponse> {
        let ids = fqdns(request.into_inner().ids, "ids");
        self.write(ids, |s, ids| async move { s.delete_clients(&ids).await })
            .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().products.len()))]
    async fn upsert_products(
        &self,
        request: Request<proto::UpsertProductsRequest>,
    ) -> WriteResult<proto::UpsertProductsResponse> {
        let products = convert_each(request.into_inner().products, "products", TryFrom::try_from);
        self.write(products, |s, p| async move { s.upsert_products(&p).await })
            .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().products.len()))]
    async fn delete_products(
        &self,
        request: Request<proto::DeleteProductsRequest>,
    ) -> WriteResult<proto::DeleteProductsResponse> {
        let keys = convert_each(request.into_inner().products, "products", wire::product_key);
        self.write(keys, |s, k| async move { s.delete_products(&k).await })
            .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_on_depots.len()))]
    async fn upsert_product_on_depots(
        &self,
        request: Request<proto::UpsertProductOnDepotsRequest>,
    ) -> WriteResult<proto::UpsertProductOnDepotsResponse> {
        let pods = request.into_inner().product_on_depots;
        let pods = convert_each(pods, "product_on_depots", TryFrom::try_from);
        self.write(
            pods,
            |s, p| async move { s.upsert_product_on_depots(&p).await },
        )
        .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_on_depots.len()))]
    async fn delete_product_on_depots(
        &self,
        request: Request<proto::DeleteProductOnDepotsRequest>,
    ) -> WriteResult<proto::DeleteProductOnDepotsResponse> {
        let keys = request.into_inner().product_on_depots;
        let keys = convert_each(keys, "product_on_depots", wire::pod_key);
        self.write(
            keys,
            |s, k| async move { s.delete_product_on_depots(&k).await },
        )
        .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().configs.len()))]
    async fn upsert_configs(
        &self,
        request: Request<proto::UpsertConfigsRequest>,
    ) -> WriteResult<proto::UpsertConfigsResponse> {
        let configs = convert_each(request.into_inner().configs, "configs", TryFrom::try_from);
        self.write(configs, |s, c| async move { s.upsert_configs(&c).await })
            .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().config_states.len()))]
    async fn upsert_config_states(
        &self,
        request: Request<proto::UpsertConfigStatesRequest>,
    ) -> WriteResult<proto::UpsertConfigStatesResponse> {
        let states = request.into_inner().config_states;
        let states = convert_each(states, "config_states", TryFrom::try_from);
        self.write(
            states,
            |s, st| async move { s.upsert_config_states(&st).await },
        )
        .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().config_states.len()))]
    async fn delete_config_states(
        &self,
        request: Request<proto::DeleteConfigStatesRequest>,
    ) -> WriteResult<proto::DeleteConfigStatesResponse> {
        let keys = request.into_inner().config_states;
        let keys = convert_each(keys, "config_states", wire::config_state_key);
        self.write(keys, |s, k| async move { s.delete_config_states(&k).await })
            .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_property_states.len()))]
    async fn upsert_product_property_states(
        &self,
        request: Request<proto::UpsertProductPropertyStatesRequest>,
    ) -> WriteResult<proto::UpsertProductPropertyStatesResponse> {
        let states = request.into_inner().product_property_states;
        let states = convert_each(states, "product_property_states", TryFrom::try_from);
        self.write(states, |s, st| async move {
            s.upsert_property_states(&st).await
        })
        .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_property_states.len()))]
    async fn delete_product_property_states(
        &self,
        request: Request<proto::DeleteProductPropertyStatesRequest>,
    ) -> WriteResult<proto::DeleteProductPropertyStatesResponse> {
        let keys = request.into_inner().product_property_states;
        let keys = convert_each(keys, "product_property_states", TryFrom::try_from);
        self.write(
            keys,
            |s, k| async move { s.delete_property_states(&k).await },
        )
        .await
    }

    #[instrument(skip_all, fields(count = request.get_ref().action_requests.len()))]
    async fn set_action_requests(
        &self,
        request: Request<proto::SetActionRequestsRequest>,
    ) -> WriteResult<proto::SetActionRequestsResponse> {
        let actions = request.into_inner().action_requests;
        let actions = convert_each(actions, "action_requests", TryFrom::try_from);
        let given = actions.as_ref().map_or(0, Vec::len);
        let response: Response<proto::SetActionRequestsResponse> = self
            .write(
                actions,
                |s, a| async move { s.set_action_requests(&a).await },
            )
            .await?;
        // Logged once the pushes are handed on: a log write is no step of
        // the way to the depot.
        info!(
            actions = given,
            pushes = response.get_ref().pushes_queued,
            waiting = response.get_ref().waiting,
            "action requests set"
        );
        Ok(response)
    }

    #[instrument(skip_all, fields(count = request.get_ref().product_on_clients.len()))]
    async fn delete_product_on_clients(
        &self,
        request: Request<proto::DeleteProductOnClientsRequest>,
    ) -> WriteResult<proto::DeleteProductOnClientsResponse> {
        let keys = request.into_inner().product_on_clients;
        let keys = convert_each(keys, "product_on_clients", wire::poc_key);
        self.write(
            keys,
            |s, k| async move { s.delete_product_on_clients(&k).await },
        )
        .await
    }

    #[instrument(skip_all)]
    async fn import_inventory(
        &self,
        request: Request<tonic::Streaming<proto::ImportInventoryRequest>>,
    ) -> Result<Response<proto::ImportInventoryResponse>, Status> {
        let answer = super::import::import(&self.core, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    #[instrument(skip_all, fields(fqdn = %request.get_ref().fqdn))]
    async fn get_client_status(
        &self,
        request: Request<proto::GetClientStatusRequest>,
    ) -> Result<Response<proto::GetClientStatusResponse>, Status> {
        let id = Fqdn::parse(&request.get_ref().fqdn, "fqdn").map_err(Error::from)?;
        Ok(Response::new(self.client_status(id).await?))
    }

    async fn list_depots(
        &self,
        _request: Request<proto::ListDepotsRequest>,
    ) -> Result<Response<proto::ListDepotsResponse>, Status> {
        let depots = self.core.store.depots().await.map_err(Error::from)?;
        let counts = self.core.store.depot_counts().await.map_err(Error::from)?;
        let runtime = self.core.dispatcher.runtime();
        // Replicas: the depots another one pushes to, and which one.
        let others: HashMap<String, String> = match self.core.dispatcher.holder() {
            // The list without it rather than no list.
            Some(own) => match self.core.store.lease_holders().await {
                Ok(holders) => holders.into_iter().filter(|(_, h)| h != own).collect(),
                Err(error) => {
                    warn!(%error, "reading the depot leases failed; pushed_by left empty");
                    HashMap::new()
                }
            },
            None => HashMap::new(),
        };
        let depots = depots
            .into_iter()
            .map(|d| {
                let pushed_by = others.get(d.id.as_str()).cloned().unwrap_or_default();
                proto::DepotStatus {
                    pushed_by,
                    ..depot_status(d, &runtime, &counts)
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
        Ok(Response::new(self.pending(request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use admin_server::Admin as _;
    use tonic::Code;

    use super::*;
    use crate::configserver::core::test_core;

    fn depot(id: &str, endpoint: &str) -> proto::DepotInfo {
        proto::DepotInfo {
            id: id.into(),
            endpoint: endpoint.into(),
            host_key: format!("key-of-{id}-0123456789abcdef0123456789"),
            description: String::new(),
        }
    }

    #[tokio::test]
    async fn depot_keys_are_long_printable_ascii_and_unique() {
        let (_dir, core) = test_core().await;
        let admin = AdminService::new(core.clone());
        let upsert = |depots: Vec<proto::DepotInfo>| {
            let admin = &admin;
            async move {
                admin
                    .upsert_depots(Request::new(proto::UpsertDepotsRequest { depots }))
                    .await
            }
        };
        let with_key = |id: &str, key: &str| proto::DepotInfo {
            host_key: key.into(),
            ..depot(id, "http://127.0.0.1:9")
        };
        let long = "k".repeat(32);
        for (key, why) in [
            ("depot-key-1", "32 to 256"),
            (&"k".repeat(257)[..], "32 to 256"),
            (&format!("{long}ü")[..], "printable ASCII"),
            (&format!("{long} x")[..], "printable ASCII"),
            (&format!("{long}\n")[..], "printable ASCII"),
        ] {
            let bad = upsert(vec![with_key("d1.example.org", key)])
                .await
                .unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument, "{key:?}");
            assert!(
                bad.message().starts_with("depots[0].host_key: "),
                "{}",
                bad.message()
            );
            assert!(bad.message().contains(why), "{}", bad.message());
            assert!(!bad.message().contains(&long), "the key is never echoed");
        }
        upsert(vec![with_key("d1.example.org", &long)])
            .await
            .unwrap();
        // The same depot again with its own key is fine.
        upsert(vec![with_key("d1.example.org", &long)])
            .await
            .unwrap();
        // Another depot with that key, in a later call or the same one, is not.
        let taken = upsert(vec![with_key("d2.example.org", &long)])
            .await
            .unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists);
        assert!(
            taken.message().contains("d2.example.org"),
            "{}",
            taken.message()
        );
        assert!(!taken.message().contains(&long));
        let other = "o".repeat(40);
        let taken = upsert(vec![
            with_key("d3.example.org", &other),
            with_key("d4.example.org", &other),
        ])
        .await
        .unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists);
        let ids: Vec<String> = core
            .store
            .depots()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id.to_string())
            .collect();
        assert_eq!(
            ids,
            ["d1.example.org"],
            "nothing of a refused call is written"
        );
    }

    #[tokio::test]
    async fn bad_input_names_the_field_and_writes_nothing() {
        let (_dir, core) = test_core().await;
        let admin = AdminService::new(core.clone());
        let request = proto::UpsertDepotsRequest {
            depots: vec![
                depot("d1.example.org", "http://d1.example.org:50051"),
                depot("d2.example.org", "d2.example.org:50051"),
            ],
        };
        let bad = admin
            .upsert_depots(Request::new(request))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(
            bad.message().contains("depots[1].endpoint"),
            "{}",
            bad.message()
        );
        assert!(core.store.depots().await.unwrap().is_empty());

        let request = proto::ListPendingRequest {
            depot_id: "not a depot".into(),
            ..Default::default()
        };
        let bad = admin.list_pending(Request::new(request)).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().starts_with("depot_id: "), "{}", bad.message());
    }

    #[tokio::test]
    async fn depots_are_listed_with_their_runtime_and_unknown_clients_are_not_found() {
        let (_dir, core) = test_core().await;
        let admin = AdminService::new(core);
        let request = proto::UpsertDepotsRequest {
            depots: vec![depot("d1.example.org", "http://127.0.0.1:9/")],
        };
        let written = admin.upsert_depots(Request::new(request)).await.unwrap();
        assert_eq!(written.get_ref().affected, 1);
        let listed = admin
            .list_depots(Request::new(proto::ListDepotsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .depots;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].endpoint, "http://127.0.0.1:9");
        assert_eq!(
            (listed[0].queued, listed[0].capability.as_str()),
            (0, "unknown")
        );

        let request = proto::GetClientStatusRequest {
            fqdn: "ghost.example.org".into(),
        };
        let missing = admin
            .get_client_status(Request::new(request))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert!(missing.message().contains("ghost.example.org"));
    }
}
