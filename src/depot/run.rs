//! A running depot: its validated settings, start-up (PXE directory clean-up,
//! writer, read watcher, configserver tasks) and serving the gRPC routes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::core::DepotCore;
use super::crypt::Salt;
use super::error::StartError;
use super::render::Renderer;
use super::service;
use super::template::{TemplateConfig, Templates};
use super::upstream::client::Upstream;
use super::watch;
use super::writer::{self, ReadEvent, WriterOptions};
use crate::domain::{Fqdn, Secret};
use crate::metrics::Metrics;
use crate::server::ServeOptions;
use crate::transport::Transport;

/// Read events waiting to be reported. When the reporter falls this far
/// behind (the configserver is down), the writer waits for room: a read is
/// never dropped, and new writes queue behind it.
const READS_CAPACITY: usize = 16_384;

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
    /// A fixed salt for boot image password hashes, for tests that compare
    /// written files byte for byte; `None` (always, in production) draws a
    /// random salt per depot run.
    pub salt: Option<Salt>,
    /// TLS (also for an `https://` configserver), how callers authenticate,
    /// connection limits.
    pub transport: Transport,
}

/// A started depot: the writer and the read watcher run; `serve` adds the
/// gRPC server.
pub struct Depot {
    core: Arc<DepotCore>,
    config: DepotConfig,
    reads: Option<mpsc::Receiver<ReadEvent>>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Depot {
    /// Prepares the PXE directory (creating it, removing stale configs),
    /// starts the writer and the read watcher, and with a configserver the
    /// read reporter and the start-up reconciliation.
    pub async fn start(config: DepotConfig, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let pxe_dir = config.pxe_dir.clone();
        let pxe_err = |source| StartError::PxeDir {
            path: pxe_dir.clone(),
            source,
        };
        prepare_pxe_dir(&pxe_dir).await.map_err(pxe_err)?;
        let templates = Templates::new(config.templates.clone())?;
        let (reads_tx, reads_rx) = mpsc::channel(READS_CAPACITY);
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
                let tls = config.transport.tls.as_ref();
                Upstream::connect(url, config.host_key.as_ref(), config.depot_id.clone(), tls)
            })
            .transpose()
            .map_err(StartError::ConfigServer)?;
        let renderer = match &config.salt {
            Some(salt) => Renderer::with_salt(salt.clone()),
            None => Renderer::new(),
        };
        let core = Arc::new(
            DepotCore::new(config.depot_id.clone(), templates, renderer, writer)
                .with_legacy(config.legacy)
                .with_upstream(upstream.clone()),
        );
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
    /// depot without configserver). Taken once. The writer waits while the
    /// channel is full, so a taker must keep reading it.
    pub fn take_reads(&mut self) -> Option<mpsc::Receiver<ReadEvent>> {
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
        info!(depot = %self.core.depot_id, addr = ?addr, legacy = self.core.is_legacy(), pxe_dir = %self.config.pxe_dir.display(), "depot serving");
        let transport = self.config.transport.clone();
        // With client_auth = cert the key is presented upstream, not required.
        let key = (self.config.host_key.clone()).filter(|_| transport.client_auth.needs_key());
        let routes = service::routes(self.core.clone(), key).await;
        let options = ServeOptions {
            server: "depot",
            transport,
            metrics: self.metrics.clone(),
            guarded: &["pxeconf.v1.Depot"],
        };
        let result = crate::server::serve_routes(routes, listener, options, shutdown).await;
        self.stop.cancel();
        result
    }
}

/// Creates the PXE directory and removes configs an earlier run left there.
async fn prepare_pxe_dir(pxe_dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(pxe_dir)?;
    let dir = pxe_dir.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || writer::remove_stale(&dir))
        .await
        .map_err(std::io::Error::other)??;
    if removed > 0 {
        info!(removed, dir = %pxe_dir.display(), "removed PXE configs left by an earlier run");
    }
    Ok(())
}
