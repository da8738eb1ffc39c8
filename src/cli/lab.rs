//! An in-process site for `demo` and `loadtest`: a configserver on an
//! SQLite file and depots (the last ones legacy-only), each on a loopback
//! port with its own PXE directory, plus a generated inventory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::error::CliError;
use crate::auth::AttachKey;
use crate::configserver::dispatch::DispatchSettings;
use crate::configserver::{ConfigServer, ConfigServerConfig, Core};
use crate::depot::template::TemplateConfig;
use crate::depot::{Depot, DepotConfig};
use crate::domain::{Fqdn, Modules, Secret, TemplateName};
use crate::metrics::Metrics;
use crate::proto;
use crate::server::Background;

/// The templates that ship with pxeconf (contrib/templates).
pub const TEMPLATES: &[(&str, &str)] = &[
    ("install", include_str!("../../contrib/templates/install")),
    (
        "install-grub-x64",
        include_str!("../../contrib/templates/install-grub-x64"),
    ),
    (
        "install-elilo-x86",
        include_str!("../../contrib/templates/install-elilo-x86"),
    ),
    (
        "install-ipxe",
        include_str!("../../contrib/templates/install-ipxe"),
    ),
];

/// Admin RPCs carry at most this many items (one transaction each).
const CHUNK: usize = 5000;

/// An Admin client with the admin key attached.
pub type AdminClient = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;

/// What to start.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Where the database, keys and templates go.
    pub dir: PathBuf,
    /// Where the depots' PXE directories go (a tmpfs for load tests).
    pub pxe_root: PathBuf,
    /// Depots in all.
    pub depots: usize,
    /// How many of them (the last ones) are legacy-only.
    pub legacy: usize,
    /// Pushes in flight per depot.
    pub concurrency: usize,
    /// Blocking I/O threads per depot.
    pub io_threads: usize,
}

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

/// A running lab.
pub struct Lab {
    /// The options it was started with.
    pub options: LabOptions,
    /// The configserver's shared state.
    pub core: Arc<Core>,
    /// Its address.
    pub configserver: SocketAddr,
    /// The metrics of every server in the lab (one registry).
    pub metrics: Arc<Metrics>,
    /// The depots.
    pub depots: Vec<LabDepot>,
    /// The admin key file.
    pub admin_key_file: PathBuf,
    admin_key: Secret,
    servers: Vec<crate::server::Background>,
}

/// Client n's FQDN.
pub fn client_fqdn(n: u32) -> String {
    format!("client{n:06}.example.org")
}

/// Depot i's FQDN (1-based).
pub fn depot_fqdn(i: usize) -> String {
    format!("depot{i}.example.org")
}

fn random_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn write_key(path: &Path, key: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl Lab {
    /// Starts the configserver and the depots; nothing is in the inventory yet.
    pub async fn start(options: LabOptions) -> Result<Self, CliError> {
        let dir = &options.dir;
        let templates = dir.join("templates");
        let keys = dir.join("keys");
        std::fs::create_dir_all(&templates)?;
        std::fs::create_dir_all(&keys)?;
        for (name, text) in TEMPLATES {
            std::fs::write(templates.join(name), text)?;
        }
        let metrics = Metrics::new();
        let admin_key = random_key();
        let admin_key_file = keys.join("admin.key");
        write_key(&admin_key_file, &admin_key)?;

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let configserver = listener.local_addr()?;
        let server = ConfigServer::start(
            ConfigServerConfig {
                database: dir.join("pxeconf.db"),
                host_key: Some(Secret::new(admin_key.clone())),
                modules: Modules {
                    uefi: true,
                    secureboot: true,
                },
                dispatch: DispatchSettings {
                    concurrency: options.concurrency,
                    ..DispatchSettings::default()
                },
            },
            metrics.clone(),
        )
        .await?;
        let core = server.core();
        let mut servers = vec![Background::spawn("configserver", move |stop| {
            server.serve(listener, stop)
        })];

        // Depots are registered before they start, so that their first call
        // to the configserver (start-up reconciliation) is accepted.
        let mut planned = Vec::new();
        for i in 1..=options.depots {
            let key = random_key();
            let key_file = keys.join(format!("depot{i}.key"));
            write_key(&key_file, &key)?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            planned.push((i, key, key_file, listener));
        }
        let admin_client = admin_client(configserver, &Secret::new(admin_key.clone())).await?;
        let mut admin = admin_client;
        admin
            .upsert_depots(proto::UpsertDepotsRequest {
                depots: planned
                    .iter()
                    .map(|(i, key, _, listener)| {
                        Ok(proto::DepotInfo {
                            id: depot_fqdn(*i),
                            endpoint: format!("http://{}", listener.local_addr()?),
                            host_key: key.clone(),
                            description: if *i > options.depots - options.legacy.min(options.depots)
                            {
                                "legacy-only depot".into()
                            } else {
                                String::new()
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, std::io::Error>>()?,
            })
            .await?;

        let mut depots = Vec::new();
        for (i, key, key_file, listener) in planned {
            let id = depot_fqdn(i);
            let legacy = i > options.depots - options.legacy.min(options.depots);
            let pxe_dir = options.pxe_root.join(format!("depot{i}"));
            let addr = listener.local_addr()?;
            let template = |n: &str| TemplateName::parse(n, "template").map_err(|e| e.to_string());
            let depot = Depot::start(
                DepotConfig {
                    depot_id: Fqdn::parse(&id, "depot_id").map_err(|e| e.to_string())?,
                    pxe_dir: pxe_dir.clone(),
                    templates: TemplateConfig {
                        dir: templates.clone(),
                        bios: template("install")?,
                        uefi_x86: template("install-elilo-x86")?,
                        uefi_x64: template("install-grub-x64")?,
                    },
                    configserver: Some(format!("http://{configserver}")),
                    host_key: Some(Secret::new(key)),
                    legacy,
                    io_threads: options.io_threads,
                },
                metrics.clone(),
            )
            .await?;
            servers.push(Background::spawn("depot", move |stop| {
                depot.serve(listener, stop)
            }));
            depots.push(LabDepot {
                id,
                addr,
                pxe_dir,
                legacy,
                key_file,
            });
        }
        Ok(Self {
            options,
            core,
            configserver,
            metrics,
            depots,
            admin_key_file,
            admin_key: Secret::new(admin_key),
            servers,
        })
    }

    /// An Admin client.
    pub async fn admin(&self) -> Result<AdminClient, CliError> {
        admin_client(self.configserver, &self.admin_key).await
    }

    /// The depot client n belongs to (0-based index).
    pub fn depot_index(&self, n: u32) -> usize {
        n as usize % self.depots.len()
    }

    /// Adds two netboot products on every depot, the PXE configs' defaults,
    /// and `clients` clients spread over the depots: every fifth boots UEFI
    /// (grub), every tenth gets an iPXE product.
    pub async fn seed(&self, clients: u32) -> Result<(), CliError> {
        let mut admin = self.admin().await?;
        admin
            .upsert_products(proto::UpsertProductsRequest {
                products: vec![
                    product("win10-x64", "10.0.19045", "2", ""),
                    product("ubuntu-ipxe", "22.04", "1", "install-ipxe"),
                ],
            })
            .await?;
        let mut pods = Vec::new();
        let mut defaults = Vec::new();
        for d in &self.depots {
            for (p, pv, pkv) in [
                ("win10-x64", "10.0.19045", "2"),
                ("ubuntu-ipxe", "22.04", "1"),
            ] {
                pods.push(proto::ProductOnDepot {
                    depot_id: d.id.clone(),
                    product_id: p.into(),
                    product_version: pv.into(),
                    package_version: pkv.into(),
                });
                defaults.push(proto::ProductPropertyState {
                    object_id: d.id.clone(),
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
        admin
            .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
                product_property_states: defaults,
            })
            .await?;
        for chunk in (0..clients).collect::<Vec<_>>().chunks(CHUNK) {
            admin
                .upsert_clients(proto::UpsertClientsRequest {
                    clients: chunk.iter().map(|n| host(*n)).collect(),
                })
                .await?;
            let mut states = Vec::with_capacity(chunk.len() * 2);
            for n in chunk {
                states.push(proto::ConfigState {
                    object_id: client_fqdn(*n),
                    config_id: "clientconfig.depot.id".into(),
                    values: vec![self.depots[self.depot_index(*n)].id.clone()],
                });
                if n % 5 == 4 {
                    states.push(proto::ConfigState {
                        object_id: client_fqdn(*n),
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
        }
        Ok(())
    }

    /// The product client n boots.
    pub fn product_of(n: u32) -> &'static str {
        if n % 10 == 9 {
            "ubuntu-ipxe"
        } else {
            "win10-x64"
        }
    }

    /// Sets `action` for `clients`, in chunks of one transaction each;
    /// returns the pushes queued.
    pub async fn set_actions(&self, clients: &[u32], action: &str) -> Result<u64, CliError> {
        let mut admin = self.admin().await?;
        let mut queued = 0;
        for chunk in clients.chunks(CHUNK) {
            let response = admin
                .set_action_requests(proto::SetActionRequestsRequest {
                    action_requests: chunk
                        .iter()
                        .map(|n| proto::ActionRequest {
                            client_id: client_fqdn(*n),
                            product_id: Self::product_of(*n).into(),
                            action_request: action.into(),
                        })
                        .collect(),
                })
                .await?;
            queued += response.into_inner().pushes_queued;
        }
        Ok(queued)
    }

    /// Per depot (in order): configs delivered and unread, pushes owed.
    pub async fn delivery_counts(&self) -> Result<Vec<(u64, u64)>, CliError> {
        let counts = self.core.store.depot_counts().await?;
        Ok(self
            .depots
            .iter()
            .map(|d| {
                counts
                    .get(&d.id)
                    .map(|(owed, delivered)| (*delivered, *owed))
                    .unwrap_or((0, 0))
            })
            .collect())
    }

    /// Waits until `expected` configs are delivered and nothing is owed,
    /// calling `progress` with the delivered count as it grows.
    pub async fn wait_delivered(
        &self,
        expected: u64,
        timeout: Duration,
        mut progress: impl FnMut(u64),
    ) -> Result<Duration, CliError> {
        let start = Instant::now();
        loop {
            let counts = self.delivery_counts().await?;
            let delivered: u64 = counts.iter().map(|c| c.0).sum();
            let owed: u64 = counts.iter().map(|c| c.1).sum();
            progress(delivered);
            if delivered >= expected && owed == 0 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "only {delivered} of {expected} configs delivered after {timeout:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops every server and waits for them.
    pub async fn shutdown(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

async fn admin_client(configserver: SocketAddr, key: &Secret) -> Result<AdminClient, CliError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{configserver}"))?
        .connect()
        .await?;
    Ok(proto::admin_client::AdminClient::with_interceptor(
        channel,
        AttachKey::new(key)?,
    ))
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
