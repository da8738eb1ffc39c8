//! The legacy look-ups behind `SetPxeConfigByFqdn`: the fine-grained RPCs an
//! opsi depot makes, one per item, assembled into the bundle the new path
//! receives whole. The PXE settings are derived by the one function both
//! paths share (`domain::opsi::PxeSettings::derive`).

use super::client::{Client, Upstream};
use crate::depot::error::Error;
use crate::domain::opsi::PxeSettings;
use crate::domain::{ClientBundle, Fqdn};
use crate::proto;

impl Upstream {
    /// The bundle for `fqdn`, assembled from the fine-grained look-ups a
    /// legacy depot makes (one RPC each); `None` when the client has no
    /// netboot action.
    pub async fn lookup_bundle(
        &self,
        fqdn: &Fqdn,
        revision: u64,
    ) -> Result<Option<ClientBundle>, Error> {
        // An unreachable configserver: the look-ups start over on the next.
        let mut tries = self.count();
        loop {
            tries -= 1;
            let (turn, client) = self.pick();
            match self.lookup_once(client, fqdn, revision).await {
                Err(Error::Lookup { status, .. }) if tries > 0 && self.failed(&status, turn) => {}
                result => return result,
            }
        }
    }

    /// [`Self::lookup_bundle`] at one configserver.
    async fn lookup_once(
        &self,
        client: Client,
        fqdn: &Fqdn,
        revision: u64,
    ) -> Result<Option<ClientBundle>, Error> {
        let mut lookup = Lookup { client, fqdn };
        let host = lookup.host().await?;
        // The files are named after this host: one for another client than
        // asked would boot that client, with a config the caller never set.
        if Fqdn::parse(&host.id, "host.id").ok().as_ref() != Some(fqdn) {
            return Err(Error::LookupMismatch {
                rpc: "GetHost",
                asked: fqdn.clone(),
            });
        }
        let Some(poc) = lookup.netboot_product_on_client().await? else {
            return Ok(None);
        };
        let pod = lookup
            .product_on_depot(self.depot_id(), &poc.product_id)
            .await?;
        let product = lookup.product(&pod).await?;
        let configs = lookup.config_states().await?;
        let properties = lookup.property_states(&poc.product_id).await?;
        let modules = lookup.modules().await?;
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
            depot_id: self.depot_id().to_string(),
            service_address: settings.service_address,
            boot_mode: proto::BootMode::from(settings.boot_mode) as i32,
            bootimage_append: settings.bootimage_append,
            product_property_states: properties,
            modules: Some(modules),
            revision,
            epoch: Default::default(),
        };
        let bundle = ClientBundle::try_from(wire).map_err(|error| Error::LookupInvalid {
            fqdn: fqdn.clone(),
            error,
        })?;
        Ok(Some(bundle))
    }
}

/// The look-ups for one client.
struct Lookup<'a> {
    client: Client,
    fqdn: &'a Fqdn,
}

impl Lookup<'_> {
    /// The error for a failed look-up `rpc`.
    fn failed(&self, rpc: &'static str) -> impl FnOnce(tonic::Status) -> Error + use<> {
        let fqdn = self.fqdn.to_string();
        move |status| Error::Lookup { rpc, fqdn, status }
    }

    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetHost"))]
    async fn host(&mut self) -> Result<proto::Host, Error> {
        let request = proto::GetHostRequest {
            id: self.fqdn.to_string(),
        };
        let failed = self.failed("GetHost");
        Ok(self
            .client
            .get_host(crate::telemetry::request(request))
            .await
            .map_err(failed)?
            .into_inner()
            .into())
    }

    /// The client's (first) netboot product with an action, if any.
    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetNetbootProductOnClients"))]
    async fn netboot_product_on_client(&mut self) -> Result<Option<proto::ProductOnClient>, Error> {
        let request = proto::GetNetbootProductOnClientsRequest {
            client_id: self.fqdn.to_string(),
        };
        let failed = self.failed("GetNetbootProductOnClients");
        let response = self
            .client
            .get_netboot_product_on_clients(crate::telemetry::request(request))
            .await
            .map_err(failed)?;
        Ok(response.into_inner().product_on_clients.into_iter().next())
    }

    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetProductOnDepot"))]
    async fn product_on_depot(
        &mut self,
        depot_id: &Fqdn,
        product_id: &str,
    ) -> Result<proto::ProductOnDepot, Error> {
        let request = proto::GetProductOnDepotRequest {
            depot_id: depot_id.to_string(),
            product_id: product_id.to_owned(),
        };
        let failed = self.failed("GetProductOnDepot");
        let response = self
            .client
            .get_product_on_depot(crate::telemetry::request(request))
            .await
            .map_err(failed)?;
        Ok(response.into_inner().into())
    }

    /// The product in the version installed on the depot.
    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetProduct"))]
    async fn product(&mut self, pod: &proto::ProductOnDepot) -> Result<proto::Product, Error> {
        let request = proto::GetProductRequest {
            id: pod.product_id.clone(),
            product_version: pod.product_version.clone(),
            package_version: pod.package_version.clone(),
        };
        let failed = self.failed("GetProduct");
        Ok(self
            .client
            .get_product(crate::telemetry::request(request))
            .await
            .map_err(failed)?
            .into_inner()
            .into())
    }

    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetConfigStates"))]
    async fn config_states(&mut self) -> Result<Vec<proto::ConfigState>, Error> {
        let request = proto::GetConfigStatesRequest {
            client_id: self.fqdn.to_string(),
            config_ids: Vec::new(),
        };
        let failed = self.failed("GetConfigStates");
        let response = self
            .client
            .get_config_states(crate::telemetry::request(request))
            .await
            .map_err(failed)?;
        Ok(response.into_inner().config_states)
    }

    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetProductPropertyStates"))]
    async fn property_states(
        &mut self,
        product_id: &str,
    ) -> Result<std::collections::HashMap<String, String>, Error> {
        let request = proto::GetProductPropertyStatesRequest {
            client_id: self.fqdn.to_string(),
            product_id: product_id.to_owned(),
        };
        let failed = self.failed("GetProductPropertyStates");
        let response = self
            .client
            .get_product_property_states(crate::telemetry::request(request))
            .await
            .map_err(failed)?;
        Ok(response.into_inner().product_property_states)
    }

    #[tracing::instrument(name = "lookup", skip_all, fields(rpc = "GetModules"))]
    async fn modules(&mut self) -> Result<proto::Modules, Error> {
        let failed = self.failed("GetModules");
        let response = self
            .client
            .get_modules(crate::telemetry::request(proto::GetModulesRequest {}))
            .await
            .map_err(failed)?;
        Ok(response.into_inner().into())
    }
}
