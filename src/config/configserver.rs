//! `pxeconf configserver` settings: its flags, its TOML file, their
//! defaults, and the validated settings the configserver starts with. Push
//! defaults are the dispatcher's own ([`DispatchSettings::default`]).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::common::{
    Common, ConfigError, HOST_KEY_ENV, Shared, TransportArgs, host_key, invalid, parse_duration,
    read_file,
};
use crate::auth::EnvKey;
use crate::configserver::dispatch::DispatchSettings;
use crate::configserver::store::Location;
use crate::domain::{Modules, Secret};
use crate::telemetry::LogFormat;
use crate::transport::{ClientAuth, Transport};

/// Where the configserver listens for gRPC unless told otherwise.
pub const DEFAULT_CONFIGSERVER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 50050));
/// The SQLite file unless told otherwise.
pub const DEFAULT_DATABASE: &str = "/var/lib/pxeconf/pxeconf.db";
/// The licensed modules unless told otherwise.
pub const DEFAULT_MODULES: &[&str] = &["uefi", "secureboot"];
/// The push concurrencies the configserver accepts.
pub const PUSH_CONCURRENCY_RANGE: RangeInclusive<usize> = 1..=1024;

/// `pxeconf configserver` flags; each also `PXECONF_<NAME>` and a key in the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigServerArgs {
    /// TOML config file (keys as the flags, with `_`).
    #[arg(long, env = "PXECONF_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50050].
    #[arg(long, env = "PXECONF_LISTEN")]
    pub listen: Option<String>,
    /// The store: a SQLite file, created if missing (a path, or `sqlite:` and
    /// a path), or a PostgreSQL URL `postgres://user:password@host/db` that
    /// several configservers may share [default: /var/lib/pxeconf/pxeconf.db].
    #[arg(long, env = "PXECONF_DATABASE")]
    pub database: Option<String>,
    /// File holding the configserver's host key, required by the Admin service (or set PXECONF_HOST_KEY).
    #[arg(long, env = "PXECONF_HOST_KEY_FILE")]
    pub host_key_file: Option<PathBuf>,
    /// The key in `PXECONF_HOST_KEY`, read with the flags but never a flag
    /// (`ps` would show it); it wins over the key file. Settings built in
    /// process start without one.
    #[arg(skip = EnvKey::read(HOST_KEY_ENV))]
    pub host_key_env: EnvKey,
    /// Licensed modules, comma-separated [default: uefi,secureboot].
    #[arg(long, env = "PXECONF_MODULES", value_delimiter = ',')]
    pub modules: Option<Vec<String>>,
    /// Pushes in flight per depot [default: 128].
    #[arg(long, env = "PXECONF_PUSH_CONCURRENCY")]
    pub push_concurrency: Option<usize>,
    /// Deadline of one push [default: 10s].
    #[arg(long, env = "PXECONF_PUSH_TIMEOUT")]
    pub push_timeout: Option<String>,
    /// Longest wait between retries to an unreachable depot [default: 60s].
    #[arg(long, env = "PXECONF_MAX_BACKOFF")]
    pub max_backoff: Option<String>,
    /// Prometheus /metrics address, e.g. 127.0.0.1:9150 [default: off].
    #[arg(long, env = "PXECONF_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Log format [default: human].
    #[arg(long, env = "PXECONF_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// OTLP/gRPC collector for traces, e.g. http://127.0.0.1:4317 [default: off].
    #[arg(long, env = "PXECONF_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Time calls in flight get after SIGTERM [default: 10s].
    #[arg(long, env = "PXECONF_GRACE_PERIOD")]
    pub grace_period: Option<String>,
    /// TLS and connection limits.
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// The configserver's TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigServerFile {
    listen: Option<String>,
    database: Option<String>,
    host_key_file: Option<PathBuf>,
    modules: Option<Vec<String>>,
    push_concurrency: Option<usize>,
    push_timeout: Option<String>,
    max_backoff: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    otlp_endpoint: Option<String>,
    grace_period: Option<String>,
    // TLS and connection limits (the same keys as the depot's), spelled out
    // rather than a flattened struct: serde refuses `flatten` together with
    // `deny_unknown_fields`, and a misspelt key must stay an error.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    max_connections: Option<usize>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_streams: Option<u32>,
    request_timeout: Option<String>,
}

impl ConfigServerFile {
    /// The file's TLS and limit keys.
    fn transport(&mut self) -> TransportArgs {
        TransportArgs {
            tls_cert: self.tls_cert.take(),
            tls_key: self.tls_key.take(),
            tls_ca: self.tls_ca.take(),
            tls_client_ca: self.tls_client_ca.take(),
            client_auth: self.client_auth.take(),
            max_connections: self.max_connections.take(),
            handshake_timeout: self.handshake_timeout.take(),
            idle_timeout: self.idle_timeout.take(),
            max_streams: self.max_streams.take(),
            request_timeout: self.request_timeout.take(),
        }
    }
}

/// A validated configserver configuration.
#[derive(Debug, Clone)]
pub struct ConfigServerSettings {
    /// Shared server settings.
    pub common: Common,
    /// The store: a SQLite file or a PostgreSQL database.
    pub database: Location,
    /// Key required by the Admin service.
    pub host_key: Option<Secret>,
    /// Licensed modules.
    pub modules: Modules,
    /// Push behaviour.
    pub dispatch: DispatchSettings,
    /// TLS, how depots authenticate, connection limits.
    pub transport: Transport,
}

impl ConfigServerArgs {
    /// Merges flags, environment, file and defaults, and validates.
    pub fn resolve(self) -> Result<ConfigServerSettings, ConfigError> {
        let file: ConfigServerFile = read_file(self.config.as_deref())?;
        let given = self.over(file);
        let modules = modules(given.modules.as_deref())?;
        let dispatch = given.dispatch()?;
        let database = Location::checked(given.database.as_deref().unwrap_or(DEFAULT_DATABASE))
            .map_err(|message| invalid("database", message))?;
        let common = Shared {
            listen: given.listen,
            metrics_listen: given.metrics_listen,
            log_format: given.log_format,
            otlp_endpoint: given.otlp_endpoint.clone(),
            grace_period: given.grace_period,
        }
        .resolve(DEFAULT_CONFIGSERVER_LISTEN)?;
        let transport = given.transport.resolve()?;
        let host_key = host_key(&given.host_key_env, given.host_key_file.as_deref(), 0o077)?;
        // Without a key the Admin service would take anyone's writes.
        if host_key.is_none() && !common.listen.ip().is_loopback() {
            return Err(invalid(
                "host_key_file",
                format!(
                    "is required: the Admin service would be open to anyone who reaches {} (listen on a loopback address to run without a key)",
                    common.listen
                ),
            ));
        }
        Ok(ConfigServerSettings {
            common,
            database,
            host_key,
            modules,
            dispatch,
            transport,
        })
    }

    /// These flags, each one not given taken from `file`.
    fn over(self, mut file: ConfigServerFile) -> Self {
        Self {
            transport: self.transport.or(file.transport()),
            config: self.config,
            listen: self.listen.or(file.listen),
            database: self.database.or(file.database),
            host_key_file: self.host_key_file.or(file.host_key_file),
            host_key_env: self.host_key_env,
            modules: self.modules.or(file.modules),
            push_concurrency: self.push_concurrency.or(file.push_concurrency),
            push_timeout: self.push_timeout.or(file.push_timeout),
            max_backoff: self.max_backoff.or(file.max_backoff),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            log_format: self.log_format.or(file.log_format),
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
            grace_period: self.grace_period.or(file.grace_period),
        }
    }

    /// Push behaviour: the dispatcher's defaults, with what was given.
    fn dispatch(&self) -> Result<DispatchSettings, ConfigError> {
        let defaults = DispatchSettings::default();
        let concurrency = self.push_concurrency.unwrap_or(defaults.concurrency);
        if !PUSH_CONCURRENCY_RANGE.contains(&concurrency) {
            return Err(invalid(
                "push_concurrency",
                format!(
                    "must be between {} and {}",
                    PUSH_CONCURRENCY_RANGE.start(),
                    PUSH_CONCURRENCY_RANGE.end()
                ),
            ));
        }
        let duration = |setting, value: &Option<String>, default| {
            value
                .as_deref()
                .map(|v| parse_duration(setting, v))
                .transpose()
                .map(|d| d.unwrap_or(default))
        };
        let timeout = duration("push_timeout", &self.push_timeout, defaults.timeout)?;
        // A zero deadline fails every push before it leaves.
        if timeout.is_zero() {
            return Err(invalid("push_timeout", "must be longer than 0s"));
        }
        let max_backoff = duration("max_backoff", &self.max_backoff, defaults.max_backoff)?;
        Ok(DispatchSettings {
            concurrency,
            timeout,
            min_backoff: defaults.min_backoff,
            max_backoff: max_backoff.max(defaults.min_backoff),
            tls: None,
        })
    }
}

/// The licensed modules by name; unset is [`DEFAULT_MODULES`].
fn modules(names: Option<&[String]>) -> Result<Modules, ConfigError> {
    let defaults: Vec<String> = DEFAULT_MODULES.iter().map(|m| m.to_string()).collect();
    let mut modules = Modules::default();
    for name in names.unwrap_or(&defaults) {
        match name.trim() {
            "uefi" => modules.uefi = true,
            "secureboot" => modules.secureboot = true,
            "" => {}
            other => {
                return Err(invalid(
                    "modules",
                    format!("unknown module {other:?} (known: uefi, secureboot)"),
                ));
            }
        }
    }
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_named_constants_and_the_dispatchers() {
        // Without a key only a loopback listener is allowed.
        let err = ConfigServerArgs::default()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("host_key_file: is required"), "{err}");
        let settings = ConfigServerArgs {
            listen: Some("127.0.0.1:50050".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(settings.common.listen.to_string(), "127.0.0.1:50050");
        assert_eq!(settings.database, Location::parse(DEFAULT_DATABASE));
        assert!(settings.modules.uefi && settings.modules.secureboot);
        assert!(settings.host_key.is_none());
        let defaults = DispatchSettings::default();
        assert_eq!(settings.dispatch.concurrency, defaults.concurrency);
        assert_eq!(settings.dispatch.timeout, defaults.timeout);
        assert_eq!(settings.dispatch.max_backoff, defaults.max_backoff);
    }

    #[test]
    fn the_backoff_never_drops_below_its_start() {
        let settings = ConfigServerArgs {
            listen: Some("[::1]:50050".into()),
            max_backoff: Some("1ms".into()),
            modules: Some(vec!["uefi".into(), " ".into()]),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let defaults = DispatchSettings::default();
        assert_eq!(settings.dispatch.max_backoff, defaults.min_backoff);
        assert!(settings.modules.uefi && !settings.modules.secureboot);
    }

    #[test]
    fn a_bad_address_is_shown_beside_one_of_the_configservers_ports() {
        let bad = |listen: Option<&str>, metrics: Option<&str>| {
            ConfigServerArgs {
                listen: listen.map(str::to_owned),
                metrics_listen: metrics.map(str::to_owned),
                ..Default::default()
            }
            .resolve()
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            bad(Some("127.0.0.1:99999"), None),
            "listen: \"127.0.0.1:99999\" is not an address like 127.0.0.1:50050"
        );
        assert_eq!(
            bad(Some("127.0.0.1:50050"), Some("nine")),
            "metrics_listen: \"nine\" is not an address like 127.0.0.1:9150"
        );
    }
}
