//! The depot's connection to its configserver, presenting the host key
//! (and, over `https://`, its certificate when it has one).

use std::sync::Arc;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::AttachKey;
use crate::domain::{Endpoint, Fqdn, Secret};
use crate::proto::config_server_client::ConfigServerClient;
use crate::transport::{ChannelOptions, Tls};

/// The deadline of one call to the configserver.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The configserver's gRPC client with the depot's key attached.
pub type Client = ConfigServerClient<InterceptedService<Channel, AttachKey>>;

/// A connection to the configserver.
#[derive(Clone)]
pub struct Upstream {
    client: Client,
    depot_id: Fqdn,
}

impl Upstream {
    /// A lazy connection to `url`, presenting `key`; `tls` is needed for an
    /// `https://` URL.
    pub fn connect(
        url: &str,
        key: Option<&Secret>,
        depot_id: Fqdn,
        tls: Option<&Arc<Tls>>,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::parse(url, "configserver").map_err(|e| e.to_string())?;
        let options = ChannelOptions {
            call_timeout: Some(CALL_TIMEOUT),
            ..ChannelOptions::default()
        };
        let channel =
            crate::transport::channel(&endpoint, tls, options).map_err(|e| e.to_string())?;
        let auth = AttachKey::new(key.unwrap_or(&Secret::default())).map_err(|e| e.to_string())?;
        Ok(Self {
            client: ConfigServerClient::with_interceptor(channel, auth),
            depot_id,
        })
    }

    /// A client for one call (clones share the channel).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// This depot's id, as the configserver knows it.
    pub fn depot_id(&self) -> &Fqdn {
        &self.depot_id
    }
}
