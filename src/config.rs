//! Server configuration: command-line flags, `PXECONF_*` environment
//! variables and a TOML file (`--config`), in that order of precedence, over
//! documented defaults. Everything is parsed and validated here, once,
//! before anything binds; an error is one line naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::configserver::dispatch::DispatchSettings;
use crate::depot::DepotConfig;
use crate::depot::template::TemplateConfig;
use crate::domain::{Fqdn, Modules, Secret, TemplateName};
use crate::telemetry::LogFormat;

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

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

fn read_file<T: for<'de> Deserialize<'de> + Default>(
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

fn parse_addr(setting: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            setting,
            format!("{value:?} is not an address like 127.0.0.1:50051"),
        )
    })
}

fn parse_duration(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        invalid(
            setting,
            format!("{value:?} is not a duration like 10s: {e}"),
        )
    })
}

/// Reads the host key: `PXECONF_HOST_KEY` wins, else the key file. Keys are
/// never taken from the command line, where `ps` would show them.
fn host_key(file: Option<PathBuf>) -> Result<Option<Secret>, ConfigError> {
    if let Ok(key) = std::env::var("PXECONF_HOST_KEY") {
        let key = key.trim().to_owned();
        return Ok((!key.is_empty()).then(|| Secret::new(key)));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| invalid("host_key_file", format!("{}: {e}", path.display())))?;
    let key = text.trim().to_owned();
    if key.is_empty() {
        return Err(invalid(
            "host_key_file",
            format!("{} is empty", path.display()),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "host_key_file",
            "the key must be printable ASCII without spaces",
        ));
    }
    Ok(Some(Secret::new(key)))
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

/// `pxeconf depot` flags; each also `PXECONF_<NAME>` and a key in the file.
#[derive(Debug, Clone, Default, Args)]
pub struct DepotArgs {
    /// TOML config file (keys as the flags, with `_`).
    #[arg(long, env = "PXECONF_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50051].
    #[arg(long, env = "PXECONF_LISTEN")]
    pub listen: Option<String>,
    /// This depot's FQDN (required).
    #[arg(long, env = "PXECONF_DEPOT_ID")]
    pub depot_id: Option<String>,
    /// Directory the TFTP server serves PXE configs from [default: /tftpboot/opsi/pxelinux.cfg].
    #[arg(long, env = "PXECONF_PXE_DIR")]
    pub pxe_dir: Option<PathBuf>,
    /// Directory holding the PXE templates [default: the PXE directory].
    #[arg(long, env = "PXECONF_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,
    /// Template for BIOS clients [default: install].
    #[arg(long, env = "PXECONF_DEFAULT_TEMPLATE")]
    pub default_template: Option<String>,
    /// Template for 32-bit UEFI clients [default: install-elilo-x86].
    #[arg(long, env = "PXECONF_DEFAULT_TEMPLATE_UEFI_X86")]
    pub default_template_uefi_x86: Option<String>,
    /// Template for 64-bit UEFI clients [default: install-grub-x64].
    #[arg(long, env = "PXECONF_DEFAULT_TEMPLATE_UEFI_X64")]
    pub default_template_uefi_x64: Option<String>,
    /// The configserver's gRPC URL, e.g. http://config.example.org:50050.
    #[arg(long, env = "PXECONF_CONFIGSERVER")]
    pub configserver: Option<String>,
    /// File holding this depot's host key (or set PXECONF_HOST_KEY).
    #[arg(long, env = "PXECONF_HOST_KEY_FILE")]
    pub host_key_file: Option<PathBuf>,
    /// Legacy-only mode: SetPxeConfig answers UNIMPLEMENTED.
    #[arg(long, env = "PXECONF_LEGACY")]
    pub legacy: bool,
    /// Blocking threads for file I/O [default: 4].
    #[arg(long, env = "PXECONF_IO_THREADS")]
    pub io_threads: Option<usize>,
    /// Prometheus /metrics address, e.g. 127.0.0.1:9151 [default: off].
    #[arg(long, env = "PXECONF_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Log format [default: human].
    #[arg(long, env = "PXECONF_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Time calls in flight get after SIGTERM [default: 10s].
    #[arg(long, env = "PXECONF_GRACE_PERIOD")]
    pub grace_period: Option<String>,
}

/// The depot's TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepotFile {
    listen: Option<String>,
    depot_id: Option<String>,
    pxe_dir: Option<PathBuf>,
    template_dir: Option<PathBuf>,
    default_template: Option<String>,
    default_template_uefi_x86: Option<String>,
    default_template_uefi_x64: Option<String>,
    configserver: Option<String>,
    host_key_file: Option<PathBuf>,
    legacy: Option<bool>,
    io_threads: Option<usize>,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    grace_period: Option<String>,
}

/// A validated depot configuration.
#[derive(Debug, Clone)]
pub struct DepotSettings {
    /// Shared server settings.
    pub common: Common,
    /// The depot itself.
    pub depot: DepotConfig,
}

fn template(
    setting: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<TemplateName, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned());
    TemplateName::parse(&value, setting).map_err(|e| invalid(setting, e.message))
}

/// Checks a gRPC URL enough to fail early on typos.
pub fn check_url(setting: &'static str, url: &str) -> Result<String, ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        return Err(invalid(
            setting,
            format!("{url:?} is not a URL like http://host:50050"),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn common(
    listen: Option<String>,
    default_listen: &str,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    grace: Option<String>,
) -> Result<Common, ConfigError> {
    Ok(Common {
        listen: parse_addr("listen", listen.as_deref().unwrap_or(default_listen))?,
        metrics_listen: metrics_listen
            .filter(|m| !m.is_empty())
            .map(|m| parse_addr("metrics_listen", &m))
            .transpose()?,
        log_format: log_format.unwrap_or_default(),
        grace_period: parse_duration("grace_period", grace.as_deref().unwrap_or("10s"))?,
    })
}

impl DepotArgs {
    /// Merges flags, environment, file and defaults, and validates.
    pub fn resolve(self) -> Result<DepotSettings, ConfigError> {
        let file: DepotFile = read_file(self.config.as_deref())?;
        let depot_id = self
            .depot_id
            .or(file.depot_id)
            .ok_or_else(|| invalid("depot_id", "is required (--depot-id or PXECONF_DEPOT_ID)"))?;
        let depot_id =
            Fqdn::parse(&depot_id, "depot_id").map_err(|e| invalid("depot_id", e.message))?;
        let pxe_dir = self
            .pxe_dir
            .or(file.pxe_dir)
            .unwrap_or_else(|| PathBuf::from("/tftpboot/opsi/pxelinux.cfg"));
        let template_dir = self
            .template_dir
            .or(file.template_dir)
            .unwrap_or_else(|| pxe_dir.clone());
        let templates = TemplateConfig {
            dir: template_dir,
            bios: template(
                "default_template",
                self.default_template.or(file.default_template),
                "install",
            )?,
            uefi_x86: template(
                "default_template_uefi_x86",
                self.default_template_uefi_x86
                    .or(file.default_template_uefi_x86),
                "install-elilo-x86",
            )?,
            uefi_x64: template(
                "default_template_uefi_x64",
                self.default_template_uefi_x64
                    .or(file.default_template_uefi_x64),
                "install-grub-x64",
            )?,
        };
        let configserver = self
            .configserver
            .or(file.configserver)
            .filter(|c| !c.is_empty())
            .map(|c| check_url("configserver", &c))
            .transpose()?;
        let io_threads = self.io_threads.or(file.io_threads).unwrap_or(4);
        if !(1..=64).contains(&io_threads) {
            return Err(invalid("io_threads", "must be between 1 and 64"));
        }
        Ok(DepotSettings {
            common: common(
                self.listen.or(file.listen),
                "0.0.0.0:50051",
                self.metrics_listen.or(file.metrics_listen),
                self.log_format.or(file.log_format),
                self.grace_period.or(file.grace_period),
            )?,
            depot: DepotConfig {
                depot_id,
                pxe_dir,
                templates,
                configserver,
                host_key: host_key(self.host_key_file.or(file.host_key_file))?,
                legacy: self.legacy || file.legacy.unwrap_or(false),
                io_threads,
                salt: None,
            },
        })
    }
}

/// `pxeconf configserver` flags; each also `PXECONF_<NAME>` and a key in the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigServerArgs {
    /// TOML config file (keys as the flags, with `_`).
    #[arg(long, env = "PXECONF_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50050].
    #[arg(long, env = "PXECONF_LISTEN")]
    pub listen: Option<String>,
    /// SQLite database file, created if missing [default: /var/lib/pxeconf/pxeconf.db].
    #[arg(long, env = "PXECONF_DATABASE")]
    pub database: Option<PathBuf>,
    /// File holding the configserver's host key, required by the Admin service (or set PXECONF_HOST_KEY).
    #[arg(long, env = "PXECONF_HOST_KEY_FILE")]
    pub host_key_file: Option<PathBuf>,
    /// Licensed modules, comma-separated [default: uefi,secureboot].
    #[arg(long, env = "PXECONF_MODULES", value_delimiter = ',')]
    pub modules: Option<Vec<String>>,
    /// Pushes in flight per depot [default: 32].
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
    /// Time calls in flight get after SIGTERM [default: 10s].
    #[arg(long, env = "PXECONF_GRACE_PERIOD")]
    pub grace_period: Option<String>,
}

/// The configserver's TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigServerFile {
    listen: Option<String>,
    database: Option<PathBuf>,
    host_key_file: Option<PathBuf>,
    modules: Option<Vec<String>>,
    push_concurrency: Option<usize>,
    push_timeout: Option<String>,
    max_backoff: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    grace_period: Option<String>,
}

/// A validated configserver configuration.
#[derive(Debug, Clone)]
pub struct ConfigServerSettings {
    /// Shared server settings.
    pub common: Common,
    /// The SQLite file.
    pub database: PathBuf,
    /// Key required by the Admin service.
    pub host_key: Option<Secret>,
    /// Licensed modules.
    pub modules: Modules,
    /// Push behaviour.
    pub dispatch: DispatchSettings,
}

impl ConfigServerArgs {
    /// Merges flags, environment, file and defaults, and validates.
    pub fn resolve(self) -> Result<ConfigServerSettings, ConfigError> {
        let file: ConfigServerFile = read_file(self.config.as_deref())?;
        let mut modules = Modules::default();
        for m in self
            .modules
            .or(file.modules)
            .unwrap_or_else(|| vec!["uefi".into(), "secureboot".into()])
        {
            match m.trim() {
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
        let concurrency = self
            .push_concurrency
            .or(file.push_concurrency)
            .unwrap_or(32);
        if !(1..=1024).contains(&concurrency) {
            return Err(invalid("push_concurrency", "must be between 1 and 1024"));
        }
        let defaults = DispatchSettings::default();
        let timeout = self
            .push_timeout
            .or(file.push_timeout)
            .map(|t| parse_duration("push_timeout", &t))
            .transpose()?
            .unwrap_or(defaults.timeout);
        let max_backoff = self
            .max_backoff
            .or(file.max_backoff)
            .map(|t| parse_duration("max_backoff", &t))
            .transpose()?
            .unwrap_or(defaults.max_backoff);
        Ok(ConfigServerSettings {
            common: common(
                self.listen.or(file.listen),
                "0.0.0.0:50050",
                self.metrics_listen.or(file.metrics_listen),
                self.log_format.or(file.log_format),
                self.grace_period.or(file.grace_period),
            )?,
            database: self
                .database
                .or(file.database)
                .unwrap_or_else(|| PathBuf::from("/var/lib/pxeconf/pxeconf.db")),
            host_key: host_key(self.host_key_file.or(file.host_key_file))?,
            modules,
            dispatch: DispatchSettings {
                concurrency,
                timeout,
                min_backoff: defaults.min_backoff,
                max_backoff: max_backoff.max(defaults.min_backoff),
            },
        })
    }
}
