//! The depot role: receives PXE configs (bundles, or FQDNs to look up),
//! writes them into the TFTP directory, deletes each after its one read and
//! reports the read.
//!
//! - `run`: settings, start-up and serving;
//! - `service`: the thin gRPC handlers; `error`: errors and their statuses;
//! - `core`: a bundle checked against this depot, rendered, handed to the writer;
//! - `template`, `render`, `crypt`: template choice, rendering, password hashes;
//! - `writer`: the one owner of the configs held, and its journal; `watch`:
//!   the read watcher; `marker`: the line that says a file is ours;
//!   `startup`: the PXE directory brought in line with the journal;
//! - `upstream`: calls to the configserver; `wire`: the depot's own messages;
//!   `links`: which push wrote each held config (the read span's link).

mod core;
pub mod crypt;
mod error;
pub mod links;
pub mod marker;
pub mod render;
mod run;
pub mod service;
mod startup;
pub mod template;
pub mod upstream;
pub mod watch;
pub mod wire;
pub mod writer;

pub use self::core::DepotCore;
pub use error::{Error, StartError};
pub use run::{Depot, DepotConfig};
