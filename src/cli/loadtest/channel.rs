//! The one place the load test opens gRPC channels: the configserver's
//! Admin service, a depot's Depot and health services. TLS options (issue 9)
//! go here, and only here.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::AttachKey;
use crate::cli::error::CliError;
use crate::domain::{Endpoint, Secret};
use crate::proto;

/// How long to wait for a server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An Admin client with the admin key attached.
pub type AdminClient = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;
/// A Depot client with the depot's host key attached.
pub type DepotClient = proto::depot_client::DepotClient<InterceptedService<Channel, AttachKey>>;

/// One HTTP/2 channel to `url` (`what` names the flag or server in errors).
pub async fn connect(url: &str, what: &str) -> Result<Channel, CliError> {
    let url = Endpoint::parse(url, what)?;
    tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{what} {url}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {what} at {url}: {e}").into())
}

/// An Admin client of the configserver at `url`.
pub async fn admin(url: &str, key: &Secret) -> Result<AdminClient, CliError> {
    let channel = connect(url, "the configserver").await?;
    let attach = AttachKey::new(key).map_err(|e| format!("admin key: {e}"))?;
    Ok(proto::admin_client::AdminClient::with_interceptor(
        channel, attach,
    ))
}

/// A Depot client of the depot at `url`.
pub async fn depot(url: &str, key: &Secret) -> Result<DepotClient, CliError> {
    let channel = connect(url, "the depot").await?;
    let attach = AttachKey::new(key).map_err(|e| format!("depot key: {e}"))?;
    Ok(proto::depot_client::DepotClient::with_interceptor(
        channel, attach,
    ))
}
