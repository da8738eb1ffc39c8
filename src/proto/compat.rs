//! The per-RPC messages that repeat a shared v1 message field for field
//! (`GetHostResponse` is `Host`, every Admin write's response is v1's
//! `WriteResponse`), converted both ways. The struct literals name every
//! field, so a field added to one message and not its twin fails to compile;
//! tests/it/contract.rs checks the wire side against the released baseline.

use super::*;

/// Both directions between two messages with the same fields.
macro_rules! same_fields {
    ($a:ident <=> $b:ident { $($field:ident),+ $(,)? }) => {
        impl From<$a> for $b {
            fn from(m: $a) -> Self {
                Self { $($field: m.$field),+ }
            }
        }
        impl From<$b> for $a {
            fn from(m: $b) -> Self {
                Self { $($field: m.$field),+ }
            }
        }
    };
}

same_fields!(Host <=> GetHostResponse { id, hardware_address, system_uuid, ip_address, opsi_host_key });
same_fields!(ProductOnDepot <=> GetProductOnDepotResponse {
    depot_id,
    product_id,
    product_version,
    package_version,
});
same_fields!(Product <=> GetProductResponse {
    id,
    product_version,
    package_version,
    pxe_config_template,
});
same_fields!(Modules <=> GetModulesResponse { uefi, secureboot });
same_fields!(SetPxeConfigResponse <=> SetPxeConfigByFqdnResponse {
    files,
    template,
    revision,
    template_reason,
});

/// What every Admin write answers (v1's `WriteResponse`, and `waiting`):
/// each write RPC has its own response message with these fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Rows inserted, updated or deleted.
    pub affected: u64,
    /// Pushes to depots queued by the write.
    pub pushes_queued: u64,
    /// Of the clients the write changed, those whose netboot action no depot
    /// can be sent a config for.
    pub waiting: u64,
}

macro_rules! write_responses {
    ($($t:ident),+ $(,)?) => {
        $(
            impl From<Written> for $t {
                fn from(w: Written) -> Self {
                    Self { affected: w.affected, pushes_queued: w.pushes_queued, waiting: w.waiting }
                }
            }
            impl From<$t> for Written {
                fn from(r: $t) -> Self {
                    Self { affected: r.affected, pushes_queued: r.pushes_queued, waiting: r.waiting }
                }
            }
        )+
    };
}

write_responses!(
    UpsertDepotsResponse,
    DeleteDepotsResponse,
    UpsertClientsResponse,
    DeleteClientsResponse,
    UpsertProductsResponse,
    DeleteProductsResponse,
    UpsertProductOnDepotsResponse,
    DeleteProductOnDepotsResponse,
    UpsertConfigsResponse,
    UpsertConfigStatesResponse,
    DeleteConfigStatesResponse,
    UpsertProductPropertyStatesResponse,
    DeleteProductPropertyStatesResponse,
    SetActionRequestsResponse,
    DeleteProductOnClientsResponse,
);
