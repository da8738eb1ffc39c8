//! Reading opsi's own JSON object dumps for `pxeconf import --format opsi`:
//! `objects` (the object types and attributes python-opsi writes), `read`
//! (files, directories, JSON-RPC answers), `endpoints` (the depots' gRPC
//! URLs opsi does not have), `convert` (objects → an inventory and a
//! summary). Nothing here talks to a server.

mod convert;
mod endpoints;
mod objects;
mod read;

pub use convert::{Converted, KindCount, convert};
pub use endpoints::DepotEndpoints;
pub use objects::Object;
pub use read::{is_opsi_dump, looks_like_opsi, read_objects};
