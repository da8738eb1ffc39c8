//! The operator's verbs against a running configserver's Admin service:
//! `import`, `set-action`, `status`, `depots`, `pending`. Each prints a table,
//! or JSON with `--json`; the bulk verbs show a progress bar when stderr is a
//! terminal and stay quiet in pipes. A failure is one line: the gRPC code and
//! the configserver's message, or what could not be reached.

mod bulk;
mod connect;
mod import;
mod opsi;
mod output;
mod verbs;
mod views;

pub use connect::{ADMIN_KEY_ENV, Connection, DEFAULT_SERVER};
pub use import::{Format, ImportArgs, import};
pub use verbs::{
    DepotsArgs, PendingArgs, SetActionArgs, StatusArgs, depots, pending, set_action, status,
};
