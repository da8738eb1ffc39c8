//! The depot's calls to its configserver:
//! - `client`: the connection;
//! - `lookup`: the legacy look-ups behind `SetPxeConfigByFqdn` (used by the core);
//! - `report`: read reports, retried until they land;
//! - `reconcile`: the start-up reconciliation (`ListPendingBundles`), which
//!   writes through the core.

pub mod client;
mod lookup;
mod reconcile;
pub mod report;

pub use client::Upstream;
