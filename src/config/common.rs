//! What the settings of both roles share: the error, reading the TOML file,
//! parsing addresses, durations and URLs, the host key, and the settings
//! every server has (listen address, metrics, log format, grace period).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{EnvKey, KeyError, KeyOrigin};
use crate::domain::{Endpoint, Secret};
use crate::telemetry::LogFormat;
use crate::transport::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS,
    DEFAULT_REQUEST_TIMEOUT,
};
use crate::transport::{ClientAuth, Limits, Tls, TlsFiles, Transport};

/// The environment variable that may hold a server's host key instead of
/// its key file (it wins over the file).
pub const HOST_KEY_ENV: &str = "PXECONF_HOST_KEY";

/// How long calls in flight get after SIGTERM, unless set.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// A setting that cannot be used, named as in the TOML file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A setting is missing or invalid.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting's name (TOML key; flag `--` + key with `-`).
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A setting that is missing or invalid.
pub(super) fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Reads a role's TOML file; no file is every key unset.
pub(super) fn read_file<T: for<'de> Deserialize<'de> + Default>(
    path: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        // toml's message spans several lines; the first names the problem.
        message: e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned()
            + &e.span()
                .map(|s| {
                    let (line, column) = line_and_column(&text, s.start);
                    format!(" (at line {line} column {column})")
                })
                .unwrap_or_default(),
    })
}

/// The 1-based line and column of byte `at` of `text`, for a parser's
/// error an operator finds in an editor.
pub(crate) fn line_and_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..at.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
}

/// An address like `127.0.0.1:PORT` (`port` the example's: the setting's
/// usual one).
pub(super) fn parse_addr(
    setting: &'static str,
    value: &str,
    port: u16,
) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            setting,
            format!("{value:?} is not an address like 127.0.0.1:{port}"),
        )
    })
}

/// The longest duration a setting takes: a deadline this far off is none,
/// and one past the clock's range overflowed when added to the time now
/// (every connection's handler panicked).
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration like `10s` or `1m 30s`, at most 30 days.
pub(super) fn parse_duration(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    // humantime's own words ("expected number at 0") name no fix.
    let d = humantime::parse_duration(value).map_err(|_| {
        invalid(
            setting,
            format!("{value:?} is not a duration like 10s, 500ms or 1m 30s"),
        )
    })?;
    if d > MAX_DURATION {
        return Err(invalid(
            setting,
            format!("{value:?} is longer than 30 days"),
        ));
    }
    Ok(d)
}

/// A peer's gRPC URL, checked by the one validator every entry point uses.
pub(super) fn parse_endpoint(setting: &'static str, value: &str) -> Result<Endpoint, ConfigError> {
    Endpoint::parse(value, setting).map_err(|e| invalid(setting, e.message))
}

/// The server's host key: `env` (read from [`HOST_KEY_ENV`]) wins, else the
/// key file, by the rules of [`crate::auth::load_key`]; it must be
/// [`crate::auth::SERVER_KEY_LENGTH`] long. A key file whose mode has any
/// bit of `refused` (`0o077`: group or others may read it; `0o007`: others)
/// is refused.
pub(super) fn host_key(
    env: &EnvKey,
    file: Option<&Path>,
    refused: u32,
) -> Result<Option<Secret>, ConfigError> {
    let from_env = env.is_set();
    // Name the setting the operator has to fix.
    let setting = |e: &KeyError| match e {
        KeyError::Unprintable {
            origin: KeyOrigin::Env(_),
        }
        | KeyError::Length {
            origin: KeyOrigin::Env(_),
        } => "host_key",
        _ => "host_key_file",
    };
    let key =
        crate::auth::load_server_key(env, file).map_err(|e| invalid(setting(&e), e.to_string()))?;
    if let (false, Some(path)) = (from_env, file) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| invalid("host_key_file", format!("{}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & refused != 0 {
            let who = if refused & 0o070 != 0 {
                "group or others"
            } else {
                "others"
            };
            return Err(invalid(
                "host_key_file",
                format!(
                    "{} may be read by {who} (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
    }
    Ok(key)
}

/// The settings every server takes, as given: each role fills them from its
/// flags (clap has merged the environment in) or else its file.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// gRPC listen address.
    pub listen: Option<String>,
    /// `/metrics` listen address; empty is off.
    pub metrics_listen: Option<String>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Drain time on SIGTERM.
    pub grace_period: Option<String>,
    /// OTLP/gRPC collector for traces; empty is off.
    pub otlp_endpoint: Option<String>,
}

impl Shared {
    /// Validates, with `default_listen` (the role's port) when unset.
    pub fn resolve(self, default_listen: SocketAddr) -> Result<Common, ConfigError> {
        Ok(Common {
            listen: self
                .listen
                .map(|l| parse_addr("listen", &l, default_listen.port()))
                .transpose()?
                .unwrap_or(default_listen),
            metrics_listen: self
                .metrics_listen
                .filter(|m| !m.is_empty())
                // The examples of the help: 9150 for the configserver, 9151
                // for a depot.
                .map(|m| {
                    let port = if default_listen.port() == 50050 {
                        9150
                    } else {
                        9151
                    };
                    parse_addr("metrics_listen", &m, port)
                })
                .transpose()?,
            log_format: self.log_format.unwrap_or_default(),
            grace_period: self
                .grace_period
                .map(|g| parse_duration("grace_period", &g))
                .transpose()?
                .unwrap_or(DEFAULT_GRACE_PERIOD),
            otlp_endpoint: self
                .otlp_endpoint
                .filter(|e| !e.is_empty())
                .map(|e| parse_otlp_endpoint(&e))
                .transpose()?,
        })
    }
}

/// The connection caps a server accepts.
pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// The per-connection stream caps a server accepts.
pub const MAX_STREAMS_RANGE: std::ops::RangeInclusive<u32> = 1..=100_000;

// ---- TLS and connection limits (both roles; flags, env, TOML keys alike) ----

/// TLS and connection-limit settings, as given; both roles take them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TransportArgs {
    /// PEM certificate chain of this server (also its client certificate towards peers);
    /// with --tls-key, gRPC is served over TLS [default: plaintext].
    #[arg(long, env = "PXECONF_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PXECONF_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates trusted for the https:// peers this server calls.
    #[arg(long, env = "PXECONF_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM CA certificates callers' client certificates are verified with (mTLS).
    #[arg(long, env = "PXECONF_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How callers of this server's own service authenticate: key, cert or both [default: key].
    #[arg(long, env = "PXECONF_CLIENT_AUTH", value_enum)]
    pub client_auth: Option<ClientAuth>,
    /// Open connections at most (lowered to fit the open-file limit) [default: 1024].
    #[arg(long, env = "PXECONF_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time from accept to TLS done and first call started [default: 10s].
    #[arg(long, env = "PXECONF_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<String>,
    /// A connection without a call for this long is closed [default: 5m].
    #[arg(long, env = "PXECONF_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Concurrent calls per connection [default: 1024].
    #[arg(long, env = "PXECONF_MAX_STREAMS")]
    pub max_streams: Option<u32>,
    /// Server-side deadline of one call [default: 60s].
    #[arg(long, env = "PXECONF_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
}

impl TransportArgs {
    /// These settings, each one not given taken from `file`.
    pub(super) fn or(self, file: TransportArgs) -> Self {
        Self {
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_ca: self.tls_ca.or(file.tls_ca),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            client_auth: self.client_auth.or(file.client_auth),
            max_connections: self.max_connections.or(file.max_connections),
            handshake_timeout: self.handshake_timeout.or(file.handshake_timeout),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            max_streams: self.max_streams.or(file.max_streams),
            request_timeout: self.request_timeout.or(file.request_timeout),
        }
    }

    /// Validates; the TLS files are read and checked now.
    pub(super) fn resolve(self) -> Result<Transport, ConfigError> {
        let limits = self.limits()?;
        let files = TlsFiles {
            cert: self.tls_cert,
            key: self.tls_key,
            ca: self.tls_ca,
            client_ca: self.tls_client_ca,
        };
        let client_auth = self.client_auth.unwrap_or_default();
        if client_auth.needs_cert() && files.client_ca.is_none() {
            return Err(invalid(
                "client_auth",
                format!("{client_auth} needs tls_client_ca (and tls_cert, tls_key)"),
            ));
        }
        // Else a CA given for mTLS would verify a certificate only when one
        // is presented, require none and name no caller by it: callers
        // would need only the key, and nothing would say so.
        if files.client_ca.is_some() && !client_auth.needs_cert() {
            return Err(invalid(
                "tls_client_ca",
                format!(
                    "takes effect only with client_auth = cert or both (it is {client_auth}): set one, or drop tls_client_ca"
                ),
            ));
        }
        let tls = if files.is_empty() {
            None
        } else {
            Some(Tls::load_serving(files).map_err(|e| match e {
                crate::transport::TlsError::Read { setting, .. }
                | crate::transport::TlsError::Invalid { setting, .. } => {
                    let message = e.to_string();
                    let message = message
                        .strip_prefix(&format!("{setting}: "))
                        .unwrap_or(&message)
                        .to_owned();
                    invalid(setting, message)
                }
            })?)
        };
        Ok(Transport {
            tls,
            client_auth,
            limits,
        })
    }

    fn limits(&self) -> Result<Limits, ConfigError> {
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !MAX_CONNECTIONS_RANGE.contains(&max_connections) {
            return Err(invalid(
                "max_connections",
                format!(
                    "must be between {} and {}",
                    MAX_CONNECTIONS_RANGE.start(),
                    MAX_CONNECTIONS_RANGE.end()
                ),
            ));
        }
        let max_streams = self.max_streams.unwrap_or(DEFAULT_MAX_STREAMS);
        if !MAX_STREAMS_RANGE.contains(&max_streams) {
            return Err(invalid(
                "max_streams",
                format!(
                    "must be between {} and {}",
                    MAX_STREAMS_RANGE.start(),
                    MAX_STREAMS_RANGE.end()
                ),
            ));
        }
        let duration = |setting, value: &Option<String>, default: Duration| {
            let d = value
                .as_deref()
                .map(|v| parse_duration(setting, v))
                .transpose()?
                .unwrap_or(default);
            if d.is_zero() {
                return Err(invalid(setting, "must be longer than 0s"));
            }
            Ok(d)
        };
        Ok(Limits {
            max_connections,
            handshake_timeout: duration(
                "handshake_timeout",
                &self.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
            idle_timeout: duration("idle_timeout", &self.idle_timeout, DEFAULT_IDLE_TIMEOUT)?,
            max_streams,
            request_timeout: duration(
                "request_timeout",
                &self.request_timeout,
                DEFAULT_REQUEST_TIMEOUT,
            )?,
        })
    }
}

/// Settings shared by both servers.
#[derive(Debug, Clone)]
pub struct Common {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
    /// How long calls in flight may take after SIGTERM.
    pub grace_period: Duration,
    /// OTLP/gRPC collector traces go to, if any (off: no tracing layer at all).
    pub otlp_endpoint: Option<String>,
}

/// An OTLP endpoint must be an `http://` URL of a host, without user name
/// or password. `https://` is refused here, saying so: the exporter is built
/// without TLS, and refused it only when the process started, naming a
/// Cargo feature.
fn parse_otlp_endpoint(endpoint: &str) -> Result<String, ConfigError> {
    let refused = |why: &str| Err(invalid("otlp_endpoint", why.to_owned()));
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => {
            // Not quoted: the part before the `@` may be a password.
            refused("a URL with a user name or password is not taken")
        }
        Ok(uri) if uri.scheme_str() == Some("https") => refused(
            "https:// is not supported: send to a collector over http:// (one on this host or its network, e.g. an OpenTelemetry Collector that forwards over TLS)",
        ),
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
            Ok(endpoint.to_string())
        }
        _ => Err(invalid(
            "otlp_endpoint",
            format!("{endpoint:?} is not an http:// URL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_value_is_named_by_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("depot.toml");
        std::fs::write(
            &path,
            "# a comment\nlisten = \"0.0.0.0:50051\"\nlog_format = \"xml\"\n",
        )
        .unwrap();
        // A role's file in small (the roles' own types live above this module).
        #[derive(Debug, Deserialize, Default)]
        #[allow(dead_code)]
        struct File {
            listen: Option<String>,
            log_format: Option<Format>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Format {
            Human,
            Json,
        }
        let err = read_file::<File>(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("unknown variant `xml`"), "{err}");
        assert!(err.ends_with("(at line 3 column 14)"), "{err}");
        assert_eq!(line_and_column("ab\ncé\nd", 6), (2, 3));
        let bad = parse_duration("grace_period", "-1s")
            .unwrap_err()
            .to_string();
        assert_eq!(
            bad,
            "grace_period: \"-1s\" is not a duration like 10s, 500ms or 1m 30s"
        );
    }

    #[test]
    fn shared_settings_fall_back_to_the_defaults() {
        let default: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let common = Shared::default().resolve(default).unwrap();
        assert_eq!(common.listen, default);
        assert_eq!(common.metrics_listen, None);
        assert_eq!(common.grace_period, DEFAULT_GRACE_PERIOD);
        let off = Shared {
            metrics_listen: Some(String::new()),
            grace_period: Some("1m 30s".into()),
            ..Default::default()
        }
        .resolve(default)
        .unwrap();
        assert_eq!(off.metrics_listen, None);
        assert_eq!(off.grace_period, Duration::from_secs(90));
    }

    #[test]
    fn a_bad_host_key_names_the_setting_to_fix() {
        let env = EnvKey::given(HOST_KEY_ENV, "has space");
        let err = host_key(&env, None, 0o077).unwrap_err().to_string();
        assert_eq!(
            err,
            "host_key: PXECONF_HOST_KEY: the key must be printable ASCII without spaces"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "\n").unwrap();
        let err = host_key(&EnvKey::default(), Some(&empty), 0o077)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("host_key_file: key file "), "{err}");
        // Too short to be guessed at no cost: refused, naming the length.
        let short = dir.path().join("short.key");
        std::fs::write(&short, "admin-secret\n").unwrap();
        let err = host_key(&EnvKey::default(), Some(&short), 0o077)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("host_key_file: key file "), "{err}");
        assert!(err.contains("32 to 256"), "{err}");
    }

    #[test]
    fn a_private_key_file_must_stay_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("configserver.key");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = host_key(&EnvKey::default(), Some(&file), 0o077)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("host_key_file: ")
                && err.contains("mode 644")
                && err.ends_with("chmod 600 it"),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            host_key(&EnvKey::default(), Some(&file), 0o077)
                .unwrap()
                .is_some()
        );
        // The depot's may be its group's (opsi's `opsiadmin`), never
        // everyone's: any local user could push configs with it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = host_key(&EnvKey::default(), Some(&file), 0o007)
            .unwrap_err()
            .to_string();
        assert!(err.contains("read by others (mode 644)"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            host_key(&EnvKey::default(), Some(&file), 0o007)
                .unwrap()
                .is_some()
        );
    }
}
