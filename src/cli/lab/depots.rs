//! The lab's depots before they start: the shipped templates written out, a
//! key file and a loopback port each, registered at the configserver first
//! (so their start-up calls are accepted), and the config each starts with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

use super::inventory::{AdminClient, depot_fqdn, random_key};
use super::pki::write_key;
use crate::cli::error::CliError;
use crate::config::{DEFAULT_TEMPLATE_BIOS, DEFAULT_TEMPLATE_UEFI_X64, DEFAULT_TEMPLATE_UEFI_X86};
use crate::depot::DepotConfig;
use crate::depot::template::TemplateConfig;
use crate::domain::{Fqdn, Secret, TemplateName};
use crate::proto;
use crate::transport::Transport;

/// The templates that ship with pxeconf (contrib/templates).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "install",
        include_str!("../../../contrib/templates/install"),
    ),
    (
        "install-grub-x64",
        include_str!("../../../contrib/templates/install-grub-x64"),
    ),
    (
        "install-elilo-x86",
        include_str!("../../../contrib/templates/install-elilo-x86"),
    ),
    (
        "install-ipxe",
        include_str!("../../../contrib/templates/install-ipxe"),
    ),
];

/// One depot of the lab.
pub struct LabDepot {
    /// Its id.
    pub id: String,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its PXE directory.
    pub pxe_dir: PathBuf,
    /// Whether it is legacy-only.
    pub legacy: bool,
    /// Its host key file.
    pub key_file: PathBuf,
}

/// Writes the shipped templates into `dir/templates`; returns that directory.
pub(super) fn write_templates(dir: &Path) -> std::io::Result<PathBuf> {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates)?;
    for (name, text) in TEMPLATES {
        std::fs::write(templates.join(name), text)?;
    }
    Ok(templates)
}

/// A depot of the lab before it starts.
pub(super) struct PlannedDepot {
    id: String,
    key: String,
    key_file: PathBuf,
    pxe_dir: PathBuf,
    legacy: bool,
    listener: TcpListener,
}

impl PlannedDepot {
    /// Its id.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// What it starts with: `configserver` is the URL it calls, `transport`
    /// its TLS (see [`LabPki`]).
    pub fn config(
        &self,
        templates: &Path,
        configserver: &str,
        io_threads: usize,
        transport: Transport,
    ) -> Result<DepotConfig, CliError> {
        let template = |n: &str| TemplateName::parse(n, "template").map_err(|e| e.to_string());
        Ok(DepotConfig {
            depot_id: Fqdn::parse(&self.id, "depot_id").map_err(|e| e.to_string())?,
            pxe_dir: self.pxe_dir.clone(),
            templates: TemplateConfig {
                dir: templates.to_owned(),
                bios: template(DEFAULT_TEMPLATE_BIOS)?,
                uefi_x86: template(DEFAULT_TEMPLATE_UEFI_X86)?,
                uefi_x64: template(DEFAULT_TEMPLATE_UEFI_X64)?,
            },
            configservers: vec![configserver.to_owned()],
            host_key: Some(Secret::new(self.key.clone())),
            legacy: self.legacy,
            batches: true,
            io_threads,
            salt: None,
            // Beside the PXE directory, never inside it.
            state_dir: self.pxe_dir.with_extension("state"),
            file_access: Default::default(),
            transport,
        })
    }

    /// What the lab shows of it, and the listener to serve on.
    pub fn into_parts(self) -> std::io::Result<(LabDepot, TcpListener)> {
        let depot = LabDepot {
            id: self.id,
            addr: self.listener.local_addr()?,
            pxe_dir: self.pxe_dir,
            legacy: self.legacy,
            key_file: self.key_file,
        };
        Ok((depot, self.listener))
    }
}

/// `count` depots, the last `legacy` of them legacy-only, each with a key
/// file in `keys`, a PXE directory under `pxe_root` and a loopback port.
pub(super) async fn plan_depots(
    count: usize,
    legacy: usize,
    pxe_root: &Path,
    keys: &Path,
) -> Result<Vec<PlannedDepot>, CliError> {
    let mut planned = Vec::new();
    for i in 1..=count {
        let key = random_key();
        let key_file = keys.join(format!("depot{i}.key"));
        write_key(&key_file, &key)?;
        planned.push(PlannedDepot {
            id: depot_fqdn(i),
            key,
            key_file,
            pxe_dir: pxe_root.join(format!("depot{i}")),
            legacy: i > count - legacy.min(count),
            listener: TcpListener::bind("127.0.0.1:0").await?,
        });
    }
    Ok(planned)
}

/// Registers the planned depots at the configserver, endpoints (`scheme`
/// `http` or `https`) and keys.
pub(super) async fn register_depots(
    admin: &mut AdminClient,
    planned: &[PlannedDepot],
    scheme: &str,
) -> Result<(), CliError> {
    let depots = planned
        .iter()
        .map(|d| {
            Ok(proto::DepotInfo {
                id: d.id.clone(),
                endpoint: format!("{scheme}://{}", d.listener.local_addr()?),
                host_key: d.key.clone(),
                description: if d.legacy {
                    "legacy-only depot".into()
                } else {
                    String::new()
                },
            })
        })
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    admin
        .upsert_depots(proto::UpsertDepotsRequest { depots })
        .await?;
    Ok(())
}
