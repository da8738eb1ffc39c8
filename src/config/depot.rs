//! `pxeconf depot` settings: its flags, its TOML file, their defaults, and
//! the validated [`DepotConfig`] the depot starts with.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::common::{
    Common, ConfigError, HOST_KEY_ENV, Shared, TransportArgs, host_key, invalid, parse_endpoint,
    read_file,
};
use crate::auth::EnvKey;
use crate::depot::DepotConfig;
use crate::depot::template::TemplateConfig;
use crate::depot::writer::{DEFAULT_FILE_MODE, FileAccess};
use crate::domain::{Fqdn, TemplateName};
use crate::telemetry::LogFormat;
use crate::transport::ClientAuth;

/// Where a depot listens for gRPC unless told otherwise.
pub const DEFAULT_DEPOT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 50051));
/// Where the TFTP server serves PXE configs from: opsi 4.3's `pxe config
/// dir` (opsipxeconfd.conf @ 4.3.3.4; `/tftpboot/linux/pxelinux.cfg` before
/// 4.3.0.2).
pub const DEFAULT_PXE_DIR: &str = "/tftpboot/opsi/opsi-linux-bootimage/cfg";
/// The template for BIOS clients: opsi 4.3's one `pxe config template`
/// (grub boots BIOS and UEFI clients alike there; 4.2 used pxelinux `install`).
pub const DEFAULT_TEMPLATE_BIOS: &str = "install-grub-x64";
/// The template for 32-bit UEFI clients (elilo): opsi 4.2's `uefi netboot
/// config template x86`; 4.3 has none.
pub const DEFAULT_TEMPLATE_UEFI_X86: &str = "install-elilo-x86";
/// The template for 64-bit UEFI clients (grub), as in opsi 4.2 and 4.3.
pub const DEFAULT_TEMPLATE_UEFI_X64: &str = "install-grub-x64";
/// Blocking threads writing PXE files. With one, every writer round
/// (journal and files) that does not run in place is one hand-off to one
/// thread: on tmpfs and 2 cores that beat four for every round size
/// (docs/BENCHMARKS.md, third pass). More spread a large round's files, for
/// a disk whose writes wait. A small round runs in place on the writer's
/// runtime thread while such rounds are quick (`depot::writer::placement`),
/// whatever this is.
pub const DEFAULT_IO_THREADS: usize = 1;
/// Where the depot keeps its journal (systemd `StateDirectory=pxeconf-depot`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pxeconf-depot";
/// Where group names are looked up.
const GROUP_FILE: &str = "/etc/group";
/// The I/O thread counts a depot accepts.
pub const IO_THREADS_RANGE: RangeInclusive<usize> = 1..=64;

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
    /// Directory the TFTP server serves PXE configs from [default: /tftpboot/opsi/opsi-linux-bootimage/cfg].
    #[arg(long, env = "PXECONF_PXE_DIR")]
    pub pxe_dir: Option<PathBuf>,
    /// Directory holding the PXE templates [default: the PXE directory].
    #[arg(long, env = "PXECONF_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,
    /// Template for BIOS clients [default: install-grub-x64].
    #[arg(long, env = "PXECONF_DEFAULT_TEMPLATE")]
    pub default_template: Option<String>,
    /// Template for 32-bit UEFI clients [default: install-elilo-x86].
    #[arg(long, env = "PXECONF_DEFAULT_TEMPLATE_UEFI_X86")]
    pub default_template_uefi_x86: Option<String>,
    /// Template for 64-bit UEFI clients [default: install-grub-x64].
    #[arg(long, env = "PXECONF_DEFAULT_TEMPLATE_UEFI_X64")]
    pub default_template_uefi_x64: Option<String>,
    /// The configserver's gRPC URL, e.g. http://config.example.org:50050;
    /// repeated (or comma-separated) for several replicas, tried in order
    /// when one is unreachable.
    #[arg(long, env = "PXECONF_CONFIGSERVER", value_delimiter = ',')]
    pub configserver: Vec<String>,
    /// File holding this depot's host key (or set PXECONF_HOST_KEY).
    #[arg(long, env = "PXECONF_HOST_KEY_FILE")]
    pub host_key_file: Option<PathBuf>,
    /// The key in `PXECONF_HOST_KEY`, read with the flags but never a flag
    /// (`ps` would show it); it wins over the key file. Settings built in
    /// process start without one.
    #[arg(skip = EnvKey::read(HOST_KEY_ENV))]
    pub host_key_env: EnvKey,
    /// Legacy-only mode: SetPxeConfig answers UNIMPLEMENTED.
    #[arg(long, env = "PXECONF_LEGACY")]
    pub legacy: bool,
    /// Answers BatchSetPxeConfigs UNIMPLEMENTED, as depots before it did:
    /// for mixed-version tests and comparisons, not for production.
    #[arg(long, hide = true)]
    pub no_batches: bool,
    /// Blocking threads for file I/O; more than one spreads a large round's files [default: 1].
    #[arg(long, env = "PXECONF_IO_THREADS")]
    pub io_threads: Option<usize>,
    /// Directory of the depot's journal, not inside the TFTP root [default: /var/lib/pxeconf-depot].
    #[arg(long, env = "PXECONF_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Group the written PXE files get, e.g. opsiadmin [default: the depot's].
    #[arg(long, env = "PXECONF_FILE_GROUP")]
    pub file_group: Option<String>,
    /// Mode of the written PXE files: 0644 or 0640 [default: 0644].
    #[arg(long, env = "PXECONF_FILE_MODE")]
    pub file_mode: Option<String>,
    /// Prometheus /metrics address, e.g. 127.0.0.1:9151 [default: off].
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

/// A TOML value that is one URL (maybe comma-separated) or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
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
    configserver: Option<OneOrMany>,
    host_key_file: Option<PathBuf>,
    legacy: Option<bool>,
    io_threads: Option<usize>,
    state_dir: Option<PathBuf>,
    file_group: Option<String>,
    file_mode: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    otlp_endpoint: Option<String>,
    grace_period: Option<String>,
    // TLS and connection limits (the same keys as the configserver's; spelled
    // out because serde refuses `flatten` with `deny_unknown_fields`).
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

impl DepotFile {
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

/// A validated depot configuration.
#[derive(Debug, Clone)]
pub struct DepotSettings {
    /// Shared server settings.
    pub common: Common,
    /// The depot itself.
    pub depot: DepotConfig,
}

impl DepotArgs {
    /// Merges flags, environment, file and defaults, and validates.
    pub fn resolve(self) -> Result<DepotSettings, ConfigError> {
        let file: DepotFile = read_file(self.config.as_deref())?;
        let given = self.over(file);
        let shared = Shared {
            listen: given.listen.clone(),
            metrics_listen: given.metrics_listen.clone(),
            log_format: given.log_format,
            otlp_endpoint: given.otlp_endpoint.clone(),
            grace_period: given.grace_period.clone(),
        };
        let depot = given.depot()?;
        let common = shared.resolve(DEFAULT_DEPOT_LISTEN)?;
        // Without a key (or client certificates) the Depot service would
        // write a PXE config for anyone who reaches it, and a client would
        // boot whatever installer that config names.
        if depot.host_key.is_none()
            && !depot.transport.client_auth.needs_cert()
            && !common.listen.ip().is_loopback()
        {
            return Err(invalid(
                "host_key_file",
                format!(
                    "is required: the Depot service would take PXE configs from anyone who reaches {} (listen on a loopback address to run without a key, or require client certificates)",
                    common.listen
                ),
            ));
        }
        // The client CA signs every server's certificate: without a
        // configserver to name (or a host key that names the caller), any
        // depot's certificate would do.
        let auth = depot.transport.client_auth;
        let key_names_caller = auth.needs_key() && depot.host_key.is_some();
        if auth.needs_cert() && depot.configservers.is_empty() && !key_names_caller {
            return Err(invalid(
                "client_auth",
                format!(
                    "{auth} needs configserver: a push's client certificate must name the host of a configserver this depot reports to (or use both, with a host key)"
                ),
            ));
        }
        // `both` asks for a key and a certificate: without a key it would
        // take any call with a certificate, i.e. run as `cert` unsaid.
        if auth == ClientAuth::Both && depot.host_key.is_none() {
            return Err(invalid(
                "host_key_file",
                "is required with client_auth = both (without a key, say client_auth = cert)",
            ));
        }
        Ok(DepotSettings { common, depot })
    }

    /// These flags, each one not given taken from `file`.
    fn over(self, mut file: DepotFile) -> Self {
        Self {
            transport: self.transport.or(file.transport()),
            config: self.config,
            listen: self.listen.or(file.listen),
            depot_id: self.depot_id.or(file.depot_id),
            pxe_dir: self.pxe_dir.or(file.pxe_dir),
            template_dir: self.template_dir.or(file.template_dir),
            default_template: self.default_template.or(file.default_template),
            default_template_uefi_x86: self
                .default_template_uefi_x86
                .or(file.default_template_uefi_x86),
            default_template_uefi_x64: self
                .default_template_uefi_x64
                .or(file.default_template_uefi_x64),
            configserver: match (self.configserver, file.configserver) {
                (flags, _) if !flags.is_empty() => flags,
                (_, Some(OneOrMany::One(url))) => url.split(',').map(str::to_owned).collect(),
                (_, Some(OneOrMany::Many(urls))) => urls,
                (_, None) => Vec::new(),
            },
            host_key_file: self.host_key_file.or(file.host_key_file),
            host_key_env: self.host_key_env,
            legacy: self.legacy || file.legacy.unwrap_or(false),
            no_batches: self.no_batches,
            io_threads: self.io_threads.or(file.io_threads),
            state_dir: self.state_dir.or(file.state_dir),
            file_group: self.file_group.or(file.file_group),
            file_mode: self.file_mode.or(file.file_mode),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            log_format: self.log_format.or(file.log_format),
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
            grace_period: self.grace_period.or(file.grace_period),
        }
    }

    /// The depot's own settings, validated, defaults filled in.
    fn depot(self) -> Result<DepotConfig, ConfigError> {
        let depot_id = self
            .depot_id
            .as_deref()
            .ok_or_else(|| invalid("depot_id", "is required (--depot-id or PXECONF_DEPOT_ID)"))?;
        let depot_id =
            Fqdn::parse(depot_id, "depot_id").map_err(|e| invalid("depot_id", e.message))?;
        let pxe_dir = self
            .pxe_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PXE_DIR));
        let templates = self.templates(&pxe_dir)?;
        let configservers = self
            .configserver
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
            .map(|c| parse_endpoint("configserver", c).map(|c| c.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if self.legacy && configservers.is_empty() {
            return Err(invalid(
                "legacy",
                "needs configserver: a legacy-only depot looks everything up there",
            ));
        }
        let io_threads = self.io_threads.unwrap_or(DEFAULT_IO_THREADS);
        if !IO_THREADS_RANGE.contains(&io_threads) {
            return Err(invalid(
                "io_threads",
                format!(
                    "must be between {} and {}",
                    IO_THREADS_RANGE.start(),
                    IO_THREADS_RANGE.end()
                ),
            ));
        }
        let transport = self.transport.resolve()?;
        if configservers.iter().any(|c| c.starts_with("https://"))
            && transport.tls.as_ref().is_none_or(|t| t.client().is_none())
        {
            return Err(invalid(
                "tls_ca",
                "is required to verify an https:// configserver",
            ));
        }
        Ok(DepotConfig {
            depot_id,
            pxe_dir,
            templates,
            configservers,
            // Readable by its group (opsi's `opsiadmin`) at most: with it anyone
            // may push PXE configs, and so name the installer a client boots.
            host_key: host_key(&self.host_key_env, self.host_key_file.as_deref(), 0o007)?,
            legacy: self.legacy,
            batches: !self.no_batches,
            io_threads,
            salt: None,
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            file_access: FileAccess {
                mode: file_mode(self.file_mode.as_deref())?,
                group: self
                    .file_group
                    .as_deref()
                    .map(|g| group_id(g, std::path::Path::new(GROUP_FILE)))
                    .transpose()?,
            },
            transport,
        })
    }

    /// The template directory (the PXE directory unless set) and the
    /// template per boot mode.
    fn templates(&self, pxe_dir: &std::path::Path) -> Result<TemplateConfig, ConfigError> {
        let dir = (self.template_dir.clone()).unwrap_or_else(|| pxe_dir.to_owned());
        let template = |setting, value: &Option<String>, default| {
            let name = template(setting, value.as_deref(), default)?;
            inside(&dir, setting, name)
        };
        Ok(TemplateConfig {
            bios: template(
                "default_template",
                &self.default_template,
                DEFAULT_TEMPLATE_BIOS,
            )?,
            uefi_x86: template(
                "default_template_uefi_x86",
                &self.default_template_uefi_x86,
                DEFAULT_TEMPLATE_UEFI_X86,
            )?,
            uefi_x64: template(
                "default_template_uefi_x64",
                &self.default_template_uefi_x64,
                DEFAULT_TEMPLATE_UEFI_X64,
            )?,
            dir,
        })
    }
}

/// The mode of written files: 0644 (everyone reads: the TFTP server runs as
/// another user) or 0640 (with `file_group`: only that group reads).
fn file_mode(value: Option<&str>) -> Result<u32, ConfigError> {
    match value.map(str::trim) {
        None => Ok(DEFAULT_FILE_MODE),
        Some("0644" | "644") => Ok(0o644),
        Some("0640" | "640") => Ok(0o640),
        Some(other) => Err(invalid(
            "file_mode",
            format!("{other:?} is not 0644 or 0640"),
        )),
    }
}

/// The id of group `name` (or a number) from `groups` (`/etc/group`); a
/// group that does not exist is a configuration error.
fn group_id(name: &str, groups: &std::path::Path) -> Result<u32, ConfigError> {
    let name = name.trim();
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string(groups).map_err(|e| {
        invalid(
            "file_group",
            format!("cannot read {}: {e}", groups.display()),
        )
    })?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let group = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (group == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            invalid(
                "file_group",
                format!("no group named {name:?} in {}", groups.display()),
            )
        })
}

/// A template name, `default` when not given.
fn template(
    setting: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<TemplateName, ConfigError> {
    TemplateName::parse(value.unwrap_or(default), setting).map_err(|e| invalid(setting, e.message))
}

/// `name`, if it is in the template directory `dir`: every push needing a
/// default elsewhere would be refused (opsi 4.2's absolute paths carried
/// over with another `template_dir`).
fn inside(
    dir: &std::path::Path,
    setting: &'static str,
    name: TemplateName,
) -> Result<TemplateName, ConfigError> {
    let path = std::path::Path::new(name.as_str());
    let canonical = || std::fs::canonicalize(dir).is_ok_and(|root| path.starts_with(root));
    if !path.is_absolute() || path.starts_with(dir) || canonical() {
        return Ok(name);
    }
    Err(invalid(
        setting,
        format!(
            "{} is outside the template directory {} (give a name relative to it, or set template_dir)",
            name.as_str(),
            dir.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A depot with a key (in the environment), everything else default.
    fn args() -> DepotArgs {
        DepotArgs {
            depot_id: Some("depot1.example.org".into()),
            host_key_env: EnvKey::given(HOST_KEY_ENV, "depot-key-0123456789abcdef0123456789"),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let settings = args().resolve().unwrap();
        assert_eq!(settings.common.listen.to_string(), "0.0.0.0:50051");
        let depot = settings.depot;
        assert!(depot.host_key.is_some());
        let depot = DepotArgs {
            host_key_env: EnvKey::default(),
            listen: Some("127.0.0.1:50051".into()),
            ..args()
        }
        .resolve()
        .unwrap()
        .depot;
        assert_eq!(depot.pxe_dir, PathBuf::from(DEFAULT_PXE_DIR));
        assert_eq!(depot.templates.dir, depot.pxe_dir);
        assert_eq!(depot.templates.bios.as_str(), DEFAULT_TEMPLATE_BIOS);
        assert_eq!(depot.io_threads, DEFAULT_IO_THREADS);
        assert_eq!(depot.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(depot.file_access, FileAccess::default());
        assert!(depot.configservers.is_empty() && depot.host_key.is_none());
    }

    #[test]
    fn a_default_template_outside_the_template_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let with = |name: &str| DepotArgs {
            template_dir: Some(dir.path().to_owned()),
            default_template_uefi_x64: Some(name.into()),
            ..args()
        };
        let refused = with("/tftpboot/linux/pxelinux.cfg/install-elilo-x64")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(refused.contains("default_template_uefi_x64"), "{refused}");
        let inside = dir.path().join("install-elilo-x64");
        let settings = with(inside.to_str().unwrap()).resolve().unwrap();
        assert_eq!(
            settings.depot.templates.uefi_x64.as_str(),
            inside.to_str().unwrap()
        );
        assert!(with("install-elilo-x64").resolve().is_ok());
    }

    #[test]
    fn a_depot_without_a_key_listens_only_on_loopback() {
        let keyless = DepotArgs {
            host_key_env: EnvKey::default(),
            ..args()
        };
        let refused = keyless.clone().resolve().unwrap_err().to_string();
        assert!(
            refused.contains("host_key_file") && refused.contains("0.0.0.0:50051"),
            "{refused}"
        );
        for listen in ["127.0.0.1:50051", "[::1]:50051"] {
            let settings = DepotArgs {
                listen: Some(listen.into()),
                ..keyless.clone()
            }
            .resolve()
            .unwrap();
            assert!(settings.depot.host_key.is_none());
        }
    }

    #[test]
    fn the_key_in_the_environment_is_an_input_and_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("depot.key");
        std::fs::write(&file, "from-file-0123456789abcdef0123456789\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let with_file = DepotArgs {
            host_key_file: Some(file),
            host_key_env: EnvKey::default(),
            ..args()
        };
        let key = with_file.clone().resolve().unwrap().depot.host_key.unwrap();
        assert_eq!(key.expose(), "from-file-0123456789abcdef0123456789");
        let with_env = DepotArgs {
            host_key_env: EnvKey::given(HOST_KEY_ENV, "from-env-0123456789abcdef0123456789"),
            ..with_file
        };
        let key = with_env.resolve().unwrap().depot.host_key.unwrap();
        assert_eq!(key.expose(), "from-env-0123456789abcdef0123456789");
    }

    #[test]
    fn the_configserver_url_is_checked_and_normalized() {
        let ok = DepotArgs {
            configserver: vec![
                "http://config.example.org:50050/".into(),
                "http://replica.example.org:50050".into(),
            ],
            ..args()
        };
        assert_eq!(
            ok.resolve().unwrap().depot.configservers,
            [
                "http://config.example.org:50050",
                "http://replica.example.org:50050"
            ]
        );
        let bad = DepotArgs {
            configserver: vec!["config:50050".into()],
            ..args()
        };
        let err = bad.resolve().unwrap_err().to_string();
        assert!(
            err.starts_with("configserver: \"config:50050\" is not a URL"),
            "{err}"
        );
        // A legacy-only depot looks everything up at its configserver.
        let lonely = DepotArgs {
            legacy: true,
            ..args()
        };
        let err = lonely.resolve().unwrap_err().to_string();
        assert!(err.starts_with("legacy: needs configserver"), "{err}");
    }

    #[test]
    fn file_mode_and_group_are_checked_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let groups = dir.path().join("group");
        std::fs::write(
            &groups,
            "root:x:0:\nopsiadmin:x:992:adminuser\npcpatch:x:991:\n",
        )
        .unwrap();
        assert_eq!(group_id("opsiadmin", &groups).unwrap(), 992);
        assert_eq!(group_id("1234", &groups).unwrap(), 1234);
        let missing = group_id("nosuch", &groups).unwrap_err().to_string();
        assert!(
            missing.starts_with("file_group: no group named \"nosuch\""),
            "{missing}"
        );
        assert!(!missing.contains('\n'), "one line: {missing}");
        assert_eq!(file_mode(Some("0640")).unwrap(), 0o640);
        assert_eq!(file_mode(None).unwrap(), 0o644);
        let bad = file_mode(Some("0777")).unwrap_err().to_string();
        assert!(bad.starts_with("file_mode: "), "{bad}");
        let settings = DepotArgs {
            file_mode: Some("0640".into()),
            file_group: Some("0".into()),
            state_dir: Some(dir.path().join("state")),
            ..args()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            settings.depot.file_access,
            FileAccess {
                mode: 0o640,
                group: Some(0)
            }
        );
        assert_eq!(settings.depot.state_dir, dir.path().join("state"));
    }
}
