//! The lab's generated inventory — client and depot names, hosts with
//! MACs and UUIDs derived from their number, two netboot products — and the
//! Admin writes that load it.

use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::AttachKey;
use crate::cli::error::CliError;
use crate::domain::{Endpoint, Secret};
use crate::proto;
use crate::transport::{ChannelOptions, Tls};

/// The netboot products of the lab: id, product version, package version,
/// template (empty: the depot's default for the boot mode).
const PRODUCTS: [(&str, &str, &str, &str); 2] = [
    ("win10-x64", "10.0.19045", "2", ""),
    ("ubuntu-ipxe", "22.04", "1", "install-ipxe"),
];

/// Admin RPCs carry at most this many items (one transaction each).
pub(super) const CHUNK: usize = 5000;

/// An Admin client with the admin key attached.
pub type AdminClient = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;

/// An Admin client of the configserver at `url` (TLS from `tls` for https).
pub(super) async fn admin_client(
    url: &str,
    tls: Option<&Arc<Tls>>,
    key: &Secret,
) -> Result<AdminClient, CliError> {
    let endpoint = Endpoint::parse(url, "configserver")?;
    let channel = crate::transport::connect(&endpoint, tls, ChannelOptions::default()).await?;
    Ok(proto::admin_client::AdminClient::with_interceptor(
        channel,
        AttachKey::new(key)?,
    ))
}

/// Client n's FQDN.
pub fn client_fqdn(n: u32) -> String {
    format!("client{n:06}.example.org")
}

/// Depot i's FQDN (1-based).
pub fn depot_fqdn(i: usize) -> String {
    format!("depot{i}.example.org")
}

/// A fresh random host key.
pub(super) fn random_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Client n: a locally administered MAC and a version-4-shaped UUID derived
/// from n, and a random host key.
pub fn host(n: u32) -> proto::Host {
    let b = n.to_be_bytes();
    proto::Host {
        id: client_fqdn(n),
        hardware_address: format!("02:50:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]),
        system_uuid: format!("5a1e0000-0000-4000-8000-{n:012x}"),
        ip_address: format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
        opsi_host_key: random_key(),
    }
}

/// Client n's MAC-named PXE file.
pub fn mac_file(n: u32) -> String {
    let h = host(n);
    format!("01-{}", h.hardware_address.replace(':', "-"))
}

/// The product client n boots: every tenth gets the iPXE one.
pub(super) fn product_of(n: u32) -> &'static str {
    if n % 10 == 9 {
        "ubuntu-ipxe"
    } else {
        "win10-x64"
    }
}

/// The products, installed on every depot with a property default each.
pub(super) async fn seed_products(
    admin: &mut AdminClient,
    depot_ids: &[String],
) -> Result<(), CliError> {
    admin
        .upsert_products(proto::UpsertProductsRequest {
            products: PRODUCTS
                .iter()
                .map(|(id, pv, pkv, template)| product(id, pv, pkv, template))
                .collect(),
        })
        .await?;
    let mut pods = Vec::new();
    let mut defaults = Vec::new();
    for depot_id in depot_ids {
        for (p, pv, pkv, _) in PRODUCTS {
            pods.push(proto::ProductOnDepot {
                depot_id: depot_id.clone(),
                product_id: p.into(),
                product_version: pv.into(),
                package_version: pkv.into(),
            });
            defaults.push(proto::ProductPropertyState {
                object_id: depot_id.clone(),
                product_id: p.into(),
                property_id: "lang".into(),
                values: vec!["de_DE".into()],
            });
        }
    }
    admin
        .upsert_product_on_depots(proto::UpsertProductOnDepotsRequest {
            product_on_depots: pods,
        })
        .await?;
    admin
        .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
            product_property_states: defaults,
        })
        .await?;
    Ok(())
}

/// The defaults of the configs a PXE config reads.
pub(super) async fn seed_configs(admin: &mut AdminClient) -> Result<(), CliError> {
    admin
        .upsert_configs(proto::UpsertConfigsRequest {
            configs: vec![
                config(
                    "clientconfig.configserver.url",
                    "https://config.example.org:4447",
                ),
                config("clientconfig.dhcpd.filename", "linux/pxelinux.0"),
                config("opsi-linux-bootimage.append", "nomodeset"),
            ],
        })
        .await?;
    Ok(())
}

/// Clients `chunk`, each on the depot `depot_of` names and every fifth
/// booting UEFI (grub).
pub(super) async fn seed_clients(
    admin: &mut AdminClient,
    chunk: &[u32],
    depot_of: impl Fn(u32) -> String,
) -> Result<(), CliError> {
    admin
        .upsert_clients(proto::UpsertClientsRequest {
            clients: chunk.iter().map(|n| host(*n)).collect(),
        })
        .await?;
    let mut states = Vec::with_capacity(chunk.len() * 2);
    for &n in chunk {
        states.push(proto::ConfigState {
            object_id: client_fqdn(n),
            config_id: "clientconfig.depot.id".into(),
            values: vec![depot_of(n)],
        });
        if n % 5 == 4 {
            states.push(proto::ConfigState {
                object_id: client_fqdn(n),
                config_id: "clientconfig.dhcpd.filename".into(),
                values: vec!["linux/pxelinux.cfg/shimx64.efi.signed".into()],
            });
        }
    }
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: states,
        })
        .await?;
    Ok(())
}

fn product(id: &str, pv: &str, pkv: &str, template: &str) -> proto::Product {
    proto::Product {
        id: id.into(),
        product_version: pv.into(),
        package_version: pkv.into(),
        pxe_config_template: template.into(),
    }
}

fn config(id: &str, default: &str) -> proto::Config {
    proto::Config {
        id: id.into(),
        default_values: vec![default.into()],
        description: String::new(),
    }
}
