//! Server configuration: command-line flags, `PXECONF_*` environment
//! variables and a TOML file (`--config`), in that order of precedence, over
//! documented defaults. Everything is parsed and validated here, once,
//! before anything binds; an error is one line naming the setting.
//!
//! `common` holds what both roles share (errors, file reading, parsing, the
//! listen/metrics/log/grace settings, the host key); `depot` and
//! `configserver` hold each role's flags, file and defaults. A setting both
//! roles gain (TLS, say) goes into `common` and is merged by each role.

mod common;
mod configserver;
mod depot;

pub(crate) use common::line_and_column;
pub use common::{
    Common, ConfigError, DEFAULT_GRACE_PERIOD, HOST_KEY_ENV, MAX_CONNECTIONS_RANGE,
    MAX_STREAMS_RANGE, TransportArgs,
};
pub use configserver::{
    ConfigServerArgs, ConfigServerFile, ConfigServerSettings, DEFAULT_CONFIGSERVER_LISTEN,
    DEFAULT_DATABASE, DEFAULT_MODULES, PUSH_CONCURRENCY_RANGE,
};
pub use depot::{
    DEFAULT_DEPOT_LISTEN, DEFAULT_IO_THREADS, DEFAULT_PXE_DIR, DEFAULT_TEMPLATE_BIOS,
    DEFAULT_TEMPLATE_UEFI_X64, DEFAULT_TEMPLATE_UEFI_X86, DepotArgs, DepotFile, DepotSettings,
    IO_THREADS_RANGE,
};
