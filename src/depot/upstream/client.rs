//! The depot's connections to its configservers (several replicas on one
//! database may serve it), presenting the host key (and, over `https://`,
//! its certificate when it has one). Calls go to one of them; when it is
//! unreachable the next one takes the calls (fail-over).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::warn;

use crate::auth::AttachKey;
use crate::domain::{Endpoint, Fqdn, Secret};
use crate::proto::config_server_client::ConfigServerClient;
use crate::transport::{ChannelOptions, Tls};

/// The deadline of one call to the configserver.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The configserver's gRPC client with the depot's key attached.
pub type Client = ConfigServerClient<InterceptedService<Channel, AttachKey>>;

/// Connections to the configservers.
#[derive(Clone)]
pub struct Upstream {
    clients: Arc<[(String, Client)]>,
    /// The one calls go to now.
    current: Arc<AtomicUsize>,
    depot_id: Fqdn,
}

/// Whether `status` says the configserver could not be reached or could
/// not answer now (another may): the call is worth making elsewhere.
pub fn unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

impl Upstream {
    /// Lazy connections to `urls` (at least one), presenting `key`; `tls`
    /// is needed for an `https://` URL.
    pub fn connect(
        urls: &[String],
        key: Option<&Secret>,
        depot_id: Fqdn,
        tls: Option<&Arc<Tls>>,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("no configserver URL".to_owned());
        }
        let auth = AttachKey::new(key.unwrap_or(&Secret::default())).map_err(|e| e.to_string())?;
        let clients = urls
            .iter()
            .map(|url| {
                let endpoint = Endpoint::parse(url, "configserver").map_err(|e| e.to_string())?;
                let options = ChannelOptions {
                    call_timeout: Some(CALL_TIMEOUT),
                    ..ChannelOptions::default()
                };
                let channel = crate::transport::channel(&endpoint, tls, options)
                    .map_err(|e| e.to_string())?;
                let client = ConfigServerClient::with_interceptor(channel, auth.clone());
                Ok((url.clone(), client))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            clients: clients.into(),
            current: Arc::default(),
            depot_id,
        })
    }

    /// A client of the configserver calls go to now (clones share the channel).
    pub fn client(&self) -> Client {
        let at = self.current.load(Ordering::Relaxed) % self.clients.len();
        self.clients[at].1.clone()
    }

    /// How many configservers there are to try.
    pub fn count(&self) -> usize {
        self.clients.len()
    }

    /// A call failed with `status`: if the configserver was unreachable and
    /// there is another, calls go to the next one from now on. True if the
    /// call is worth repeating there at once.
    pub fn failed(&self, status: &tonic::Status) -> bool {
        if !unreachable(status) || self.clients.len() < 2 {
            return false;
        }
        let from = self.current.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let to = (from + 1) % self.clients.len();
        warn!(
            from = %self.clients[from].0,
            to = %self.clients[to].0,
            status = %crate::status::Brief(status),
            "configserver unreachable; failing over"
        );
        true
    }

    /// This depot's id, as the configserver knows it.
    pub fn depot_id(&self) -> &Fqdn {
        &self.depot_id
    }
}
