//! A server's transport settings, validated: TLS (loaded), how callers
//! prove who they are, and the connection limits.

use std::fmt;
use std::sync::Arc;

use super::limits::Limits;
use super::tls::Tls;

/// How a caller of a server's own service (the Depot service, or the
/// ConfigServer service depots call) proves who it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// The bearer key (`authorization: Bearer …`).
    #[default]
    Key,
    /// A client certificate from the client CA (on the configserver, one
    /// naming the depot, SAN dNSName).
    Cert,
    /// Both.
    Both,
}

impl ClientAuth {
    /// Whether the bearer key is checked.
    pub fn needs_key(self) -> bool {
        matches!(self, ClientAuth::Key | ClientAuth::Both)
    }

    /// Whether a client certificate is required.
    pub fn needs_cert(self) -> bool {
        matches!(self, ClientAuth::Cert | ClientAuth::Both)
    }

    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Key => "key",
            ClientAuth::Cert => "cert",
            ClientAuth::Both => "both",
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server's transport: TLS (none: plaintext on every hop), how callers
/// authenticate, and the limits on its connections.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// The loaded TLS configuration, if any file was set.
    pub tls: Option<Arc<Tls>>,
    /// How callers prove who they are.
    pub client_auth: ClientAuth,
    /// Connection and call limits.
    pub limits: Limits,
}

impl Transport {
    /// Plaintext, bearer keys, default limits (loopback labs and tests).
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// Whether this server speaks TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.server().is_some())
    }
}
