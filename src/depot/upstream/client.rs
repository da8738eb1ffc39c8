//! The depot's connection to its configserver, presenting the host key.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::AttachKey;
use crate::domain::{Fqdn, Secret};
use crate::proto::config_server_client::ConfigServerClient;

/// How long connecting to the configserver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one call to the configserver.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 keep-alive ping interval on the channel.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The configserver's gRPC client with the depot's key attached.
pub type Client = ConfigServerClient<InterceptedService<Channel, AttachKey>>;

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
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE);
        let auth = AttachKey::new(key.unwrap_or(&Secret::default())).map_err(|e| e.to_string())?;
        Ok(Self {
            client: ConfigServerClient::with_interceptor(endpoint.connect_lazy(), auth),
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
