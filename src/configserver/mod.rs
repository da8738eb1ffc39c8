//! The configserver role: owns the inventory, pushes a `ClientBundle` per
//! client to the responsible depot (falling back to the legacy path per
//! depot), and serves the look-ups legacy depots make.
//!
//! - `server`: start-up and serving ([`ConfigServer`]); `core`: the state
//!   the services share ([`Core`]); `keys`: which depot is calling.
//! - `admin`, `status`: the Admin service and its status answers; `import`:
//!   its one-transaction import;
//!   `service`: the ConfigServer service depots call; `wire`: the Admin
//!   records' conversions; `error`: the one mapping to gRPC codes.
//! - `store`: SQLite, all of the SQL; `dispatch`: the pushes.

pub mod admin;
mod core;
pub mod dispatch;
mod error;
mod import;
mod keys;
mod server;
pub mod service;
mod status;
pub mod store;
pub mod wire;

pub use self::core::Core;
pub use error::Error;
pub use keys::{CallerDepot, DepotKeys};
pub use server::{ConfigServer, ConfigServerConfig, Stopper};
