//! The depot role: receives PXE configs (bundles, or FQDNs to look up),
//! writes them into the TFTP directory, deletes each after its one read and
//! reports the read.

pub mod render;
pub mod service;
pub mod template;
pub mod upstream;
pub mod watch;
pub mod wire;
pub mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::{ClientBundle, Fqdn, Secret};
use crate::metrics::Metrics;
use render::{RenderError, Renderer};
use template::{TemplateConfig, TemplateError, Templates};
use writer::{ReadEvent, Rendered, SetOutcome, WriterError, WriterHandle, WriterOptions};

/// What a depot needs to run, validated.
#[derive(Debug, Clone)]
pub struct DepotConfig {
    /// This depot's FQDN.
    pub depot_id: Fqdn,
    /// The directory the TFTP server serves PXE configs from.
    pub pxe_dir: PathBuf,
    /// Templates and per-boot-mode defaults.
    pub templates: TemplateConfig,
    /// The configserver's gRPC URL, for legacy look-ups and read reports.
    pub configserver: Option<String>,
    /// This depot's host key: required from callers, presented to the configserver.
    pub host_key: Option<Secret>,
    /// Legacy-only mode: `SetPxeConfig` answers UNIMPLEMENTED.
    pub legacy: bool,
    /// Blocking threads for file I/O.
    pub io_threads: usize,
}

/// Why a depot request failed. The mapping to gRPC codes is in `service`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input.
    #[error(transparent)]
    Invalid(#[from] crate::domain::ValidationError),
    /// A template could not be used.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Rendering was refused.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The writer refused or failed.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// The bundle names another depot.
    #[error("bundle is for depot {bundle}, this is {this}")]
    WrongDepot {
        /// The depot the bundle names.
        bundle: Fqdn,
        /// This depot.
        this: Fqdn,
    },
    /// The bundle asks to boot nothing.
    #[error("{fqdn} has no netboot action request for {product}")]
    NoAction {
        /// The client.
        fqdn: Fqdn,
        /// The product.
        product: String,
    },
    /// The legacy path needs a configserver.
    #[error(
        "no configserver is configured; legacy look-ups by FQDN are impossible (start the depot with --configserver)"
    )]
    NoConfigServer,
    /// This depot runs in legacy-only mode.
    #[error("this depot runs in legacy mode; use SetPxeConfigByFqdn")]
    LegacyOnly,
    /// A look-up at the configserver failed.
    #[error("look-up {rpc} for {fqdn} at the configserver failed: {status}")]
    Lookup {
        /// The look-up RPC.
        rpc: &'static str,
        /// The client.
        fqdn: String,
        /// What the configserver answered.
        status: tonic::Status,
    },
}

/// Why a depot could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The PXE directory is unusable.
    #[error("PXE directory {path}: {source}")]
    PxeDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The template directory is unusable.
    #[error(transparent)]
    Templates(#[from] TemplateError),
    /// The configserver URL or host key is unusable.
    #[error("configserver: {0}")]
    ConfigServer(String),
}

/// The depot's shared core: render a bundle, hand it to the writer.
pub struct DepotCore {
    /// This depot's id.
    pub depot_id: Fqdn,
    legacy: bool,
    templates: Templates,
    renderer: Renderer,
    writer: WriterHandle,
    upstream: Option<upstream::Upstream>,
}

impl DepotCore {
    /// Renders and writes a client's config.
    pub async fn set(&self, bundle: ClientBundle) -> Result<SetOutcome, Error> {
        if let Some(bundle_depot) = &bundle.depot_id
            && bundle_depot != &self.depot_id
        {
            return Err(Error::WrongDepot {
                bundle: bundle_depot.clone(),
                this: self.depot_id.clone(),
            });
        }
        if bundle.action_request == crate::domain::ActionRequest::None {
            return Err(Error::NoAction {
                fqdn: bundle.client.fqdn.clone(),
                product: bundle.product.id.to_string(),
            });
        }
        let files = bundle.client.pxe_file_names();
        if files.is_empty() {
            return Err(WriterError::NoFileNames {
                fqdn: bundle.client.fqdn.clone(),
            }
            .into());
        }
        let template = self.templates.load(self.templates.choose(&bundle))?;
        let content = self.renderer.render(&template.text, &bundle)?;
        let outcome = self
            .writer
            .set(Rendered {
                fqdn: bundle.client.fqdn,
                product_id: bundle.product.id,
                action_request: bundle.action_request,
                revision: bundle.revision,
                files,
                content: content.into(),
                template: template.name.clone(),
            })
            .await?;
        Ok(outcome)
    }

    /// The legacy path: looks the client up at the configserver and writes
    /// its config; removes it when the client has no netboot action.
    pub async fn set_by_fqdn(&self, fqdn: Fqdn, revision: u64) -> Result<SetOutcome, Error> {
        let upstream = self.upstream.as_ref().ok_or(Error::NoConfigServer)?;
        match upstream.lookup_bundle(&fqdn, revision).await? {
            Some(bundle) => self.set(bundle).await,
            None => {
                self.writer.remove(fqdn, revision).await?;
                Ok(SetOutcome {
                    files: Vec::new(),
                    template: String::new(),
                    revision,
                })
            }
        }
    }

    /// The writer, for removal and listing.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// Whether `SetPxeConfig` is switched off.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }
}

/// A started depot: the writer and the read watcher run; `serve` adds the
/// gRPC server.
pub struct Depot {
    core: Arc<DepotCore>,
    config: DepotConfig,
    reads: Option<mpsc::UnboundedReceiver<ReadEvent>>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Depot {
    /// Prepares the PXE directory (creating it, removing stale configs),
    /// starts the writer and the read watcher.
    pub async fn start(config: DepotConfig, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let pxe_dir = config.pxe_dir.clone();
        let pxe_err = |source| StartError::PxeDir {
            path: pxe_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&pxe_dir).map_err(pxe_err)?;
        let templates = Templates::new(config.templates.clone())?;
        let dir = pxe_dir.clone();
        let removed = tokio::task::spawn_blocking(move || writer::remove_stale(&dir))
            .await
            .map_err(|e| pxe_err(std::io::Error::other(e)))?
            .map_err(pxe_err)?;
        if removed > 0 {
            info!(removed, dir = %pxe_dir.display(), "removed PXE configs left by an earlier run");
        }
        let (reads_tx, reads_rx) = mpsc::unbounded_channel();
        let (writer, _writer_task) = writer::spawn(
            WriterOptions {
                pxe_dir: pxe_dir.clone(),
                io_threads: config.io_threads,
                depot_id: config.depot_id.to_string(),
            },
            reads_tx,
            metrics.clone(),
        );
        let stop = CancellationToken::new();
        watch::spawn(&pxe_dir, writer.clone(), stop.clone()).map_err(pxe_err)?;
        let upstream = config
            .configserver
            .as_deref()
            .map(|url| {
                upstream::Upstream::connect(url, config.host_key.as_ref(), config.depot_id.clone())
            })
            .transpose()
            .map_err(StartError::ConfigServer)?;
        let core = Arc::new(DepotCore {
            depot_id: config.depot_id.clone(),
            legacy: config.legacy,
            templates,
            renderer: Renderer::new(),
            writer,
            upstream: upstream.clone(),
        });
        let mut reads = Some(reads_rx);
        if let Some(upstream) = upstream {
            if config.host_key.is_none() {
                warn!("no host key configured: the configserver will refuse this depot's calls");
            }
            if let Some(reads) = reads.take() {
                upstream.spawn_reporter(reads, metrics.clone(), stop.clone());
            }
            upstream.spawn_reconcile(core.clone(), stop.clone());
        }
        Ok(Self {
            core,
            config,
            reads,
            stop,
            metrics,
        })
    }

    /// The read events, for a caller that handles them itself (tests; a
    /// depot without configserver). Taken once.
    pub fn take_reads(&mut self) -> Option<mpsc::UnboundedReceiver<ReadEvent>> {
        self.reads.take()
    }

    /// The shared core.
    pub fn core(&self) -> Arc<DepotCore> {
        self.core.clone()
    }

    /// Serves the Depot service, reflection and health on `listener` until
    /// `shutdown` completes.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        if let Some(mut reads) = self.reads.take() {
            // Nobody to report to: keep the channel drained, the log says it.
            tokio::spawn(async move {
                while let Some(read) = reads.recv().await {
                    info!(fqdn = %read.fqdn, product = %read.product_id, revision = read.revision, "read event recorded (no configserver to report to)");
                }
            });
        }
        if self.config.host_key.is_none() {
            warn!(depot = %self.core.depot_id, "no host key configured: the Depot service accepts unauthenticated calls");
        }
        let addr = listener.local_addr().ok();
        info!(depot = %self.core.depot_id, addr = ?addr, legacy = self.core.legacy, pxe_dir = %self.config.pxe_dir.display(), "depot serving");
        let routes = service::routes(self.core.clone(), self.config.host_key.clone()).await;
        let result =
            crate::server::serve_routes(routes, listener, self.metrics.clone(), shutdown).await;
        self.stop.cancel();
        result
    }
}
