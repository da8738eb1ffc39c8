//! The one way pxeconf opens a channel to a peer: `http://` is plaintext
//! (and says so in the log), `https://` is TLS with the process's trusted CA
//! and, when it has one, its certificate as the client certificate. The TLS
//! configuration is taken at every (re)connect, so a reload reaches clients
//! too.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Uri};
use tracing::warn;

use super::tls::Tls;
use crate::domain::Endpoint;

/// How long connecting (TCP and TLS handshake) may take, unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// With a call in flight, an HTTP/2 ping goes this long after the last
/// frame read (at once for a call on a connection silent longer), so that a
/// dead connection — a peer gone, or a firewall that forgot it and drops
/// its packets without a word — is found and replaced within seconds, not
/// after calls waited out their deadlines on it. No pings on a connection
/// without calls: servers of other gRPC implementations (a legacy depot)
/// answer those with GOAWAY `too_many_pings`.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a channel behaves.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// Deadline of each call, if any.
    pub call_timeout: Option<Duration>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: None,
        }
    }
}

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The URL cannot be used.
    #[error("{url}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// An `https://` peer, but no CA to verify it with.
    #[error("{url} is https:// but no tls_ca is set to verify it with")]
    NoCa {
        /// The URL.
        url: String,
    },
    /// Connecting failed (only [`connect`], which connects at once).
    #[error("cannot reach {url}: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// The error and its causes.
        message: String,
    },
}

/// A lazily connecting channel to `endpoint`. TLS settings come from `tls`
/// (required for `https://`); plaintext `http://` is logged as unencrypted.
pub fn channel(
    endpoint: &Endpoint,
    tls: Option<&Arc<Tls>>,
    options: ChannelOptions,
) -> Result<Channel, ChannelError> {
    let (builder, connector) = prepare(endpoint, tls, options)?;
    Ok(match connector {
        Some(connector) => builder.connect_with_connector_lazy(connector),
        None => builder.connect_lazy(),
    })
}

/// Like [`channel`], but connects now, so that an unreachable peer is an
/// error here (operator verbs say so in one line).
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&Arc<Tls>>,
    options: ChannelOptions,
) -> Result<Channel, ChannelError> {
    let (builder, connector) = prepare(endpoint, tls, options)?;
    let connected = match connector {
        Some(connector) => builder.connect_with_connector(connector).await,
        None => builder.connect().await,
    };
    connected.map_err(|e| ChannelError::Connect {
        url: endpoint.to_string(),
        message: causes(&e),
    })
}

type Connector = tower::util::BoxCloneSyncService<
    Uri,
    TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    std::io::Error,
>;

/// The tonic endpoint, and for `https://` the connector doing TCP + TLS.
fn prepare(
    endpoint: &Endpoint,
    tls: Option<&Arc<Tls>>,
    options: ChannelOptions,
) -> Result<(tonic::transport::Endpoint, Option<Connector>), ChannelError> {
    let url = endpoint.as_str();
    let bad = |message: String| ChannelError::Url {
        url: endpoint.to_string(),
        message,
    };
    let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    let host = uri.host().ok_or_else(|| bad("no host".into()))?;
    // An IPv6 literal comes bracketed; the certificate names it bare.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let (scheme_port, connector) = if endpoint.is_tls() {
        let tls = tls
            .filter(|t| t.client().is_some())
            .ok_or_else(|| ChannelError::NoCa {
                url: url.to_owned(),
            })?;
        let name = ServerName::try_from(host.clone()).map_err(|e| {
            bad(format!(
                "host {host:?} cannot be checked against a certificate: {e}"
            ))
        })?;
        (443, Some(tls_connector(tls.clone(), name)))
    } else {
        warn!(peer = url, "plaintext gRPC: this hop is unencrypted");
        (80, None)
    };
    let port = uri.port_u16().unwrap_or(scheme_port);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // TLS is the connector's business: tonic itself sees http://, with the
    // real authority for the :authority header.
    let mut builder = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    if let Some(timeout) = options.call_timeout {
        builder = builder.timeout(timeout);
    }
    Ok((builder, connector))
}

/// TCP to the URI's authority, then TLS against `name` with the client
/// configuration current at that moment.
fn tls_connector(tls: Arc<Tls>, name: ServerName<'static>) -> Connector {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |uri: Uri| {
        let (tls, name) = (tls.clone(), name.clone());
        async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| std::io::Error::other("no authority"))?;
            let config = tls
                .client()
                .ok_or_else(|| std::io::Error::other("no TLS client configuration"))?;
            let tcp = tokio::net::TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            let stream = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        }
    }))
}

/// An error and its causes on one line: tonic's connect error on its own
/// says only "transport error".
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    crate::status::with_causes(error.to_string(), error.source())
}
