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
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default(),
    })
}

/// An address like `127.0.0.1:50051`.
pub(super) fn parse_addr(setting: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            setting,
            format!("{value:?} is not an address like 127.0.0.1:50051"),
        )
    })
}

/// A duration like `10s` or `1m 30s`.
pub(super) fn parse_duration(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        invalid(
            setting,
            format!("{value:?} is not a duration like 10s: {e}"),
        )
    })
}

/// A peer's gRPC URL, checked by the one validator every entry point uses.
pub(super) fn parse_endpoint(setting: &'static str, value: &str) -> Result<Endpoint, ConfigError> {
    Endpoint::parse(value, setting).map_err(|e| invalid(setting, e.message))
}

/// The server's host key: `env` (read from [`HOST_KEY_ENV`]) wins, else the
/// key file, by the rules of [`crate::auth::load_key`].
pub(super) fn host_key(env: &EnvKey, file: Option<&Path>) -> Result<Option<Secret>, ConfigError> {
    crate::auth::load_key(env, file).map_err(|e| {
        // Name the setting the operator has to fix.
        let setting = match &e {
            KeyError::Unprintable {
                origin: KeyOrigin::Env(_),
            } => "host_key",
            _ => "host_key_file",
        };
        invalid(setting, e.to_string())
    })
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
}

impl Shared {
    /// Validates, with `default_listen` (the role's port) when unset.
    pub fn resolve(self, default_listen: SocketAddr) -> Result<Common, ConfigError> {
        Ok(Common {
            listen: self
                .listen
                .map(|l| parse_addr("listen", &l))
                .transpose()?
                .unwrap_or(default_listen),
            metrics_listen: self
                .metrics_listen
                .filter(|m| !m.is_empty())
                .map(|m| parse_addr("metrics_listen", &m))
                .transpose()?,
            log_format: self.log_format.unwrap_or_default(),
            grace_period: self
                .grace_period
                .map(|g| parse_duration("grace_period", &g))
                .transpose()?
                .unwrap_or(DEFAULT_GRACE_PERIOD),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = host_key(&env, None).unwrap_err().to_string();
        assert_eq!(
            err,
            "host_key: PXECONF_HOST_KEY: the key must be printable ASCII without spaces"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "\n").unwrap();
        let err = host_key(&EnvKey::default(), Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("host_key_file: key file "), "{err}");
    }
}
