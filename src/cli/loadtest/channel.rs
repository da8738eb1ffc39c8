//! The one place the load test opens gRPC channels: the configserver's
//! Admin service, a depot's Depot and health services, through the crate's
//! one channel builder (`http://` plaintext, `https://` with `--tls-ca`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::AttachKey;
use crate::cli::error::CliError;
use crate::domain::{Endpoint, Secret};
use crate::proto;
use crate::transport::{ChannelError, ChannelOptions, Tls, TlsFiles};

/// How long to wait for a server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An Admin client with the admin key attached.
pub type AdminClient = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;
/// A Depot client with the depot's host key attached.
pub type DepotClient = proto::depot_client::DepotClient<InterceptedService<Channel, AttachKey>>;

// Set once from the arguments before any channel opens: every channel of a
// run trusts the same CA, and threading it through each scenario's call
// chain would only repeat it.
static TLS: OnceLock<Option<Arc<Tls>>> = OnceLock::new();

/// Loads the run's TLS files (none: `https://` URLs are refused with a line
/// naming `--tls-ca`). Call once, before the first [`connect`].
pub fn configure(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<(), CliError> {
    let files = TlsFiles {
        cert,
        key,
        ca,
        client_ca: None,
    };
    let tls = (!files.is_empty()).then(|| Tls::load(files)).transpose()?;
    TLS.set(tls)
        .map_err(|_| "the load test's TLS settings were already set".to_owned())?;
    Ok(())
}

/// One HTTP/2 channel to `url` (`what` names the flag or server in errors).
pub async fn connect(url: &str, what: &str) -> Result<Channel, CliError> {
    let url = Endpoint::stored(url, what)?;
    let tls = TLS.get().and_then(Option::as_ref);
    let options = ChannelOptions {
        connect_timeout: CONNECT_TIMEOUT,
        call_timeout: None,
    };
    crate::transport::connect(&url, tls, options)
        .await
        .map_err(|e| match e {
            ChannelError::Connect { url, message } => {
                format!("cannot reach {what} at {url}: {message}").into()
            }
            ChannelError::NoCa { url } => {
                format!("{what} at {url} is https:// but no --tls-ca is given").into()
            }
            other => other.to_string().into(),
        })
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
