//! An in-process site for `demo`, `loadtest` and the tests: a configserver
//! on an SQLite file and depots (the last ones legacy-only), each on a
//! loopback port with its own PXE directory, plus a generated inventory.

mod depots;
mod inventory;
mod site;

pub use depots::{LabDepot, TEMPLATES};
pub use inventory::{AdminClient, client_fqdn, depot_fqdn, host, mac_file};
pub use site::{Lab, LabOptions};
