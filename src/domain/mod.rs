//! Validated domain types. Wire messages become these at each role's edge,
//! once; the core never sees an unvalidated MAC, FQDN, UUID or template name.
//! Names both roles share (the opsi config ids, the derivation of a client's
//! PXE settings) live here too, so the depot side needs nothing from the
//! configserver side.

mod client;
mod endpoint;
mod error;
mod ids;
pub mod limits;
pub mod opsi;

pub use client::{
    ActionRequest, BootMode, Client, ClientBundle, Modules, NetbootProduct, Secret, is_secret_param,
};
pub use endpoint::Endpoint;
pub use error::{MAX_VIOLATIONS, ValidationError};
pub use ids::{Fqdn, Mac, ProductId, SystemUuid, TMP_PREFIX, TemplateName, is_pxe_file_name};
