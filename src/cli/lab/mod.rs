//! An in-process site for `demo`, `loadtest` and the tests: a configserver
//! on an SQLite file and depots (the last ones legacy-only), each on a
//! loopback port with its own PXE directory, plus a generated inventory;
//! plaintext, or TLS from a throwaway CA (`pki`).

mod depots;
mod inventory;
pub mod pki;
mod site;

pub use depots::{LabDepot, TEMPLATES};
pub use inventory::{AdminClient, client_fqdn, depot_fqdn, host, mac_file};
pub use pki::{LabPki, write_key};
pub use site::{Lab, LabOptions};
