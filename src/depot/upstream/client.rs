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

    /// The configserver calls go to now: its turn (pass it to
    /// [`Self::failed`] if the call fails) and a client of it (clones
    /// share the channel).
    pub fn pick(&self) -> (usize, Client) {
        let turn = self.current.load(Ordering::Relaxed);
        (turn, self.clients[turn % self.clients.len()].1.clone())
    }

    /// How many configservers there are to try.
    pub fn count(&self) -> usize {
        self.clients.len()
    }

    /// A call made at `turn` failed with `status`: if the configserver was
    /// unreachable and there is another, calls go to the next one from now
    /// on. True if the call is worth repeating there at once. Only the
    /// first failure of a turn moves on: calls in flight at a dead one that
    /// fail later (after their timeouts) must not move the calls off the
    /// one that took over — with two, back to the dead one.
    pub fn failed(&self, status: &tonic::Status, turn: usize) -> bool {
        if !unreachable(status) || self.clients.len() < 2 {
            return false;
        }
        let next = turn.wrapping_add(1);
        if (self.current)
            .compare_exchange(turn, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let (from, to) = (turn % self.clients.len(), next % self.clients.len());
            warn!(
                from = %self.clients[from].0,
                to = %self.clients[to].0,
                status = %crate::status::Brief(status),
                "configserver unreachable; failing over"
            );
        }
        true
    }

    /// This depot's id, as the configserver knows it.
    pub fn depot_id(&self) -> &Fqdn {
        &self.depot_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls in flight at a dead configserver that fail one after another
    /// move the calls off it once: with two, the later failures used to
    /// move them back to the dead one each time.
    #[tokio::test]
    async fn only_the_first_failure_of_a_turn_fails_over() {
        let urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"].map(String::from);
        let depot = Fqdn::parse("depot.example.org", "depot").unwrap();
        let upstream = Upstream::connect(&urls, None, depot, None).unwrap();
        let down = tonic::Status::unavailable("connection refused");
        let turns: Vec<usize> = (0..4).map(|_| upstream.pick().0).collect();
        assert!(turns.iter().all(|t| t % 2 == 0), "all at the first");
        for turn in &turns {
            assert!(upstream.failed(&down, *turn), "worth repeating");
        }
        let (now, _) = upstream.pick();
        assert_eq!(now % 2, 1, "at the second, not back at the first");
        // A failure there moves on (back to the first: the only other).
        assert!(upstream.failed(&down, now));
        assert_eq!(upstream.pick().0 % 2, 0);
        // An answer that is a refusal moves nothing.
        let (now, _) = upstream.pick();
        assert!(!upstream.failed(&tonic::Status::permission_denied("no"), now));
        assert_eq!(upstream.pick().0, now);
    }
}
