//! The running lab: the configserver and the depots started and stopped,
//! the inventory loaded, actions set, delivery awaited.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use super::depots::{LabDepot, plan_depots, register_depots, write_templates};
use super::inventory::{
    AdminClient, CHUNK, admin_client, client_fqdn, product_of, random_key, seed_clients,
    seed_configs, seed_products,
};
use super::pki::{LabPki, write_key};
use crate::cli::error::CliError;
use crate::configserver::dispatch::DispatchSettings;
use crate::configserver::store::Location;
use crate::configserver::{ConfigServer, ConfigServerConfig, Core};
use crate::depot::Depot;
use crate::domain::{Modules, Secret};
use crate::metrics::Metrics;
use crate::proto;
use crate::server::Background;
use crate::transport::{Tls, Transport};

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
    /// The store; none: a SQLite file in `dir`.
    pub database: Option<Location>,
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
    /// The throwaway CA when the lab runs TLS.
    pub pki: Option<LabPki>,
    admin_key: Secret,
    admin_tls: Option<Arc<Tls>>,
    servers: Vec<Background>,
}

impl Lab {
    /// Starts the configserver and the depots, plaintext (`http://`, the
    /// log says so); nothing is in the inventory yet.
    pub async fn start(options: LabOptions) -> Result<Self, CliError> {
        Self::start_with(options, false).await
    }

    /// Like [`start`](Self::start), but every hop is TLS with certificates
    /// from a throwaway CA in `dir/tls` (what the demo runs).
    pub async fn start_tls(options: LabOptions) -> Result<Self, CliError> {
        Self::start_with(options, true).await
    }

    async fn start_with(options: LabOptions, tls: bool) -> Result<Self, CliError> {
        let templates = write_templates(&options.dir)?;
        let keys = options.dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let pki = tls.then(|| LabPki::new(&options.dir)).transpose()?;
        let transport = |name: &str| match &pki {
            Some(pki) => pki.transport(name, false),
            None => Ok(Transport::plaintext()),
        };
        let admin_tls = pki.as_ref().map(LabPki::client).transpose()?;
        let metrics = Metrics::new();
        let admin_key_file = keys.join("admin.key");
        let admin_key = Secret::new(random_key());
        write_key(&admin_key_file, admin_key.expose())?;
        let cs_transport = transport("configserver.example.org")?;
        let (configserver, core, server) =
            start_configserver(&options, &admin_key, metrics.clone(), cs_transport).await?;
        let mut servers = vec![server];
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{configserver}");

        // Depots are registered before they start, so that their first call
        // to the configserver (start-up reconciliation) is accepted.
        let planned = plan_depots(options.depots, options.legacy, &options.pxe_root, &keys).await?;
        let mut admin = admin_client(&url, admin_tls.as_ref(), &admin_key).await?;
        register_depots(&mut admin, &planned, scheme).await?;
        let mut depots = Vec::new();
        for plan in planned {
            let depot_transport = transport(&plan.id())?;
            let config = plan.config(&templates, &url, options.io_threads, depot_transport)?;
            let depot = Depot::start(config, metrics.clone()).await?;
            let (lab_depot, listener) = plan.into_parts()?;
            servers.push(Background::spawn("depot", move |stop| {
                depot.serve(listener, stop)
            }));
            depots.push(lab_depot);
        }
        Ok(Self {
            options,
            core,
            configserver,
            metrics,
            depots,
            admin_key_file,
            pki,
            admin_key,
            admin_tls,
            servers,
        })
    }

    /// The configserver's URL (`https://` when the lab runs TLS).
    pub fn configserver_url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.configserver)
    }

    /// The TLS a client of the lab needs (the CA as trust), if it runs TLS.
    pub fn client_tls(&self) -> Option<&Arc<Tls>> {
        self.admin_tls.as_ref()
    }

    /// An Admin client.
    pub async fn admin(&self) -> Result<AdminClient, CliError> {
        admin_client(
            &self.configserver_url(),
            self.admin_tls.as_ref(),
            &self.admin_key,
        )
        .await
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
        let depot_ids: Vec<String> = self.depots.iter().map(|d| d.id.clone()).collect();
        seed_products(&mut admin, &depot_ids).await?;
        seed_configs(&mut admin).await?;
        let depot_of = |n: u32| depot_ids[self.depot_index(n)].clone();
        for chunk in (0..clients).collect::<Vec<_>>().chunks(CHUNK) {
            seed_clients(&mut admin, chunk, depot_of).await?;
        }
        Ok(())
    }

    /// The product client n boots.
    pub fn product_of(n: u32) -> &'static str {
        product_of(n)
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
                            product_id: product_of(*n).into(),
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
                    .map(|c| (c.held, c.owed))
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

/// Starts the configserver on a loopback port, `admin_key` guarding Admin.
async fn start_configserver(
    options: &LabOptions,
    admin_key: &Secret,
    metrics: Arc<Metrics>,
    transport: Transport,
) -> Result<(SocketAddr, Arc<Core>, Background), CliError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = ConfigServer::start(
        ConfigServerConfig {
            database: options
                .database
                .clone()
                .unwrap_or_else(|| Location::Sqlite(options.dir.join("pxeconf.db"))),
            host_key: Some(admin_key.clone()),
            modules: Modules {
                uefi: true,
                secureboot: true,
            },
            dispatch: DispatchSettings {
                concurrency: options.concurrency,
                ..DispatchSettings::default()
            },
            transport,
        },
        metrics,
    )
    .await?;
    let core = server.core();
    let background = Background::spawn("configserver", move |stop| server.serve(listener, stop));
    Ok((addr, core, background))
}
