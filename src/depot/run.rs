//! A running depot: its validated settings, start-up (journal, PXE
//! directory against it, writer, read watcher, configserver tasks, all
//! supervised) and serving the gRPC routes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::core::DepotCore;
use super::crypt::Salt;
use super::error::{BUNDLE_RESULTS, StartError};
use super::marker::Marker;
use super::render::Renderer;
use super::service;
use super::startup;
use super::template::{TemplateConfig, Templates};
use super::upstream::client::Upstream;
use super::upstream::report::{REPORT_RESULTS, Reads, Reporting};
use super::watch::{self, TestHook};
use super::writer::{
    self, Batch, ClientRecord, FileAccess, Journal, Look, ReadEvent, ReadKey, State, WRITE_RESULTS,
    WatchEvent, WriterOptions,
};
use crate::domain::{Fqdn, Secret};
use crate::metrics::{DepotResults, Metrics};
use crate::server::{ServeError, ServeOptions, Supervisor};
use crate::transport::Transport;

/// The longest a stopping depot waits for its read reports (a caller's
/// shorter grace period cuts it first); what is not sent stays journaled.
const REPORT_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// The configservers' gRPC URLs (replicas, tried in order), for legacy
    /// look-ups, read reports and reconciliation; none: no upstream.
    pub configservers: Vec<String>,
    /// This depot's host key: required from callers, presented to the configserver.
    pub host_key: Option<Secret>,
    /// Legacy-only mode: `SetPxeConfig` answers UNIMPLEMENTED.
    pub legacy: bool,
    /// Whether `BatchSetPxeConfigs` is served (false: UNIMPLEMENTED, as
    /// depots before it answered).
    pub batches: bool,
    /// Blocking threads for file I/O.
    pub io_threads: usize,
    /// A fixed salt for boot image password hashes, for tests that compare
    /// written files byte for byte; `None` (always, in production) draws a
    /// random salt per depot run.
    pub salt: Option<Salt>,
    /// The directory of the depot's journal (never inside the PXE directory).
    pub state_dir: PathBuf,
    /// The mode and group of written files.
    pub file_access: FileAccess,
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
    reporting: Option<Reporting>,
    stop: CancellationToken,
    supervisor: Supervisor,
    metrics: Arc<Metrics>,
}

impl Depot {
    /// Opens the journal, brings the PXE directory in line with it, starts
    /// the writer and the read watcher, and with a configserver the read
    /// reporter (the journal's unacknowledged reads first) and the
    /// reconciliation; every task runs under a supervisor.
    pub async fn start(config: DepotConfig, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let pxe_dir = config.pxe_dir.clone();
        let pxe_err = |source| StartError::PxeDir {
            path: pxe_dir.clone(),
            source,
        };
        check_state_dir(&config.state_dir, &pxe_dir)?;
        if !pxe_dir.exists() {
            std::fs::create_dir_all(&pxe_dir).map_err(pxe_err)?;
            // Said aloud: a mistyped directory would otherwise take every
            // config where no TFTP server looks.
            warn!(pxe_dir = %pxe_dir.display(), "the PXE directory did not exist and was created: the TFTP server must serve it");
        }
        if let Some(gid) = config.file_access.group {
            probe_group(&pxe_dir, gid).map_err(|source| StartError::FileGroup {
                dir: pxe_dir.clone(),
                gid,
                source,
            })?;
        }
        let Restored {
            journal,
            state,
            unreported,
            held_files,
        } = restore(&config.state_dir).await?;
        // Whether access times tell reads; a file read while the depot was
        // down is a read, also one start-up writes over or removes: those
        // reads are journaled before start-up touches the files.
        let reads_kept = journal.atime_kept().await?;
        let held_files = Arc::new(held_files);
        let earlier = journal.looks().await?;
        let mut survey = survey_pxe_dir(&pxe_dir, &state, held_files.clone(), reads_kept, earlier)
            .await
            .map_err(pxe_err)?;
        // Before anything is written: a look at a file that stays another
        // user's (it cannot be written again) must not pass for a read at
        // the next start either.
        journal.set_looks(&survey.looks).await?;
        let read_while_down = std::mem::take(&mut survey.read_while_down);
        let unreported = reads_while_down(&journal, &state, read_while_down, unreported).await?;
        let (leftovers, unwritten) =
            prepare_pxe_dir(&pxe_dir, &state, held_files, survey, config.file_access)
                .await
                .map_err(pxe_err)?;
        journal.compact_async().await?;
        let templates = Templates::new(config.templates.clone())?;
        let supervisor = Supervisor::new();
        let stop = CancellationToken::new();
        let (reads_tx, reads_rx) = mpsc::channel(READS_CAPACITY);
        let options = WriterOptions {
            pxe_dir: pxe_dir.clone(),
            io_threads: config.io_threads,
            depot_id: config.depot_id.to_string(),
            access: config.file_access,
            leftovers,
            unwritten,
        };
        let (writer, task) =
            writer::start(options, journal.clone(), state, reads_tx, metrics.clone());
        supervisor.spawn_critical("writer", task);
        let hook = TestHook::from_env();
        let watcher = watch::start(
            &pxe_dir,
            writer.clone(),
            stop.clone(),
            hook,
            watch::test_lag_from_env(),
        )
        .map_err(pxe_err)?;
        supervisor.spawn_critical("read watcher", watcher);
        // Watched from here on: a file read before (while the depot was
        // down, or whose event a crash lost) shows in its access time.
        if reads_kept {
            writer
                .watch_event(WatchEvent::Started)
                .await
                .map_err(|e| pxe_err(std::io::Error::other(e.to_string())))?;
        }
        let upstream = (!config.configservers.is_empty())
            .then(|| {
                let tls = config.transport.tls.as_ref();
                Upstream::connect(
                    &config.configservers,
                    config.host_key.as_ref(),
                    config.depot_id.clone(),
                    tls,
                )
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
                .with_batches(config.batches)
                .with_metrics(metrics.clone())
                .with_upstream(upstream.clone()),
        );
        let mut depot = Self {
            core,
            config,
            reads: None,
            reporting: None,
            stop,
            supervisor,
            metrics,
        };
        match upstream {
            Some(upstream) => depot.report_to(&upstream, journal, unreported, reads_rx),
            None => depot.keep_reads(journal, unreported, reads_rx),
        }
        // Once started: a depot that did not start leaves no series.
        let results = DepotResults {
            writes: &WRITE_RESULTS,
            bundles: if depot.config.legacy {
                &[]
            } else {
                &BUNDLE_RESULTS
            },
            reports: if depot.config.configservers.is_empty() {
                &[]
            } else {
                &REPORT_RESULTS
            },
        };
        depot
            .metrics
            .announce_depot(depot.config.depot_id.as_str(), &results);
        Ok(depot)
    }

    /// Reads go to the configserver; the reconciliation follows.
    fn report_to(
        &mut self,
        upstream: &Upstream,
        journal: Journal,
        unreported: Vec<ReadEvent>,
        reads: mpsc::Receiver<ReadEvent>,
    ) {
        if self.config.host_key.is_none() {
            warn!("no host key configured: the configserver will refuse this depot's calls");
        }
        let reads = Reads {
            initial: unreported,
            events: reads,
            links: self.core.links(),
        };
        let reporting = upstream.start_reporter(
            journal,
            reads,
            self.metrics.clone(),
            self.stop.clone(),
            &self.supervisor,
        );
        let reconciler =
            upstream.reconciler(self.core.clone(), reporting.clone(), self.stop.clone());
        self.supervisor.spawn_critical("reconciliation", reconciler);
        self.reporting = Some(reporting);
    }

    /// Without a configserver the reads go to whoever takes them (tests),
    /// else to the log; either way they leave the journal.
    fn keep_reads(
        &mut self,
        journal: Journal,
        unreported: Vec<ReadEvent>,
        mut reads: mpsc::Receiver<ReadEvent>,
    ) {
        let (tx, rx) = mpsc::channel(READS_CAPACITY);
        self.supervisor
            .spawn_critical("read forwarder", async move {
                let mut pending = unreported;
                loop {
                    for read in pending.drain(..) {
                        let key = (ReadKey::of(&read), read.files_present);
                        let _ = tx.send(read).await;
                        if let Err(e) = journal.ack_reads(&[key]).await {
                            warn!(error = %e, "a read stays in the journal");
                        }
                    }
                    match reads.recv().await {
                        Some(read) => pending.push(read),
                        None => return Ok(()),
                    }
                }
            });
        self.reads = Some(rx);
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
    /// `shutdown` completes — then the read reports in flight are flushed
    /// (the caller's grace period bounds that) — or until a task the depot
    /// needs fails: health goes NOT_SERVING and the failure is returned.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        if let Some(mut reads) = self.reads.take() {
            // Nobody to report to: keep the channel drained, the log says it.
            tokio::spawn(async move {
                while let Some(read) = reads.recv().await {
                    info!(fqdn = %read.fqdn, product = %read.product_id, revision = read.revision, "read event recorded (no configserver to report to)");
                }
            });
        }
        if self.config.host_key.is_none() && !self.config.transport.client_auth.needs_cert() {
            warn!(depot = %self.core.depot_id, "no host key configured: the Depot service accepts unauthenticated calls");
        }
        let addr = listener.local_addr().ok();
        let shown = addr.map(|a| a.to_string()).unwrap_or_default();
        info!(depot = %self.core.depot_id, addr = %shown, legacy = self.core.is_legacy(), pxe_dir = %self.config.pxe_dir.display(), state_dir = %self.config.state_dir.display(), "depot serving");
        let transport = self.config.transport.clone();
        // With client_auth = cert the key is presented upstream, not required.
        let key = (self.config.host_key.clone()).filter(|_| transport.client_auth.needs_key());
        let (routes, health) = service::routes(self.core.clone(), key).await;
        let options = ServeOptions {
            server: "depot",
            transport,
            metrics: self.metrics.clone(),
            guarded: &["pxeconf.v1.Depot"],
            // Pushes come from the configservers this depot reports to.
            peers: self
                .config
                .configservers
                .iter()
                .filter_map(|url| {
                    Some(
                        url.parse::<http::Uri>()
                            .ok()?
                            .host()?
                            .trim_matches(['[', ']'])
                            .to_owned(),
                    )
                })
                .collect(),
        };
        let result = crate::server::serve_supervised(
            routes,
            health,
            listener,
            options,
            &self.supervisor,
            shutdown,
        )
        .await;
        if result.is_ok()
            && let Some(reporting) = &self.reporting
        {
            info!("flushing read reports");
            if tokio::time::timeout(REPORT_FLUSH, reporting.idle())
                .await
                .is_err()
            {
                warn!("read reports not sent stay in the journal for the next start");
            }
        }
        self.stop.cancel();
        result
    }
}

/// The journal in `state_dir`, the writer's state as it kept it, and the
/// reads it still has to report.
async fn restore(state_dir: &Path) -> Result<Restored, StartError> {
    // Compacted once start-up has looked up older versions of configs read
    // while the depot was down (`reads_while_down`).
    let journal = Journal::open_uncompacted(state_dir).await?;
    let contents = journal.load().await?;
    // The content of what is held is needed once, to check the files; the
    // state keeps none of it.
    let held_files = contents
        .clients
        .iter()
        .flat_map(ClientRecord::held_files)
        .collect();
    let state = State::restore(
        contents.clients,
        contents.defused,
        contents.epoch,
        contents.highest,
    );
    Ok(Restored {
        journal,
        state,
        unreported: contents.unreported,
        held_files,
    })
}

/// What the journal gave back at start.
struct Restored {
    journal: Journal,
    state: State,
    /// Reads still to report.
    unreported: Vec<ReadEvent>,
    /// Every held file name with the content it must have.
    held_files: Vec<(String, std::sync::Arc<str>)>,
}

/// `path` resolved a component at a time, as the kernel would: symlinks
/// of the part that exists followed, `..` taken from what it resolved to;
/// the rest (the state directory may not exist yet) as written. A state
/// directory reached through a link or `..` into the PXE directory is
/// inside it.
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if let Ok(real) = out.canonicalize() {
                    out = real;
                }
            }
        }
    }
    out
}

/// The state directory must not be the PXE directory or inside it (the
/// TFTP server would serve the journal, host keys and all).
fn check_state_dir(state_dir: &Path, pxe_dir: &Path) -> Result<(), StartError> {
    if resolved(state_dir).starts_with(resolved(pxe_dir)) {
        return Err(StartError::StateDir {
            path: state_dir.to_owned(),
            why: format!(
                "is inside the PXE directory {}; the TFTP server would serve the journal",
                pxe_dir.display()
            ),
        });
    }
    Ok(())
}

/// Surveys the PXE directory against the journal, changing nothing
/// (blocking work).
async fn survey_pxe_dir(
    dir: &Path,
    state: &State,
    held: Arc<Vec<(String, Arc<str>)>>,
    reads_kept: bool,
    earlier: std::collections::HashSet<Look>,
) -> std::io::Result<startup::Survey> {
    let defused = state.defused_names();
    let path = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        startup::survey(&path, &held, &defused, reads_kept, &earlier)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Brings the PXE directory in line with the journal as `survey` found it;
/// returns our leftovers that could not be removed and the held files that
/// could not be written again (both for the writer's sweeps).
async fn prepare_pxe_dir(
    dir: &Path,
    state: &State,
    held: Arc<Vec<(String, Arc<str>)>>,
    survey: startup::Survey,
    access: FileAccess,
) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let path = dir.to_owned();
    let prepared =
        tokio::task::spawn_blocking(move || startup::prepare(&path, &held, survey, access))
            .await
            .map_err(std::io::Error::other)??;
    if prepared.removed > 0 || prepared.rewritten > 0 {
        info!(removed = prepared.removed, rewritten = prepared.rewritten, held = state.len(), dir = %dir.display(), "PXE directory brought in line with the journal");
    }
    if let Some(warning) = prepared.foreign_warning() {
        warn!(dir = %dir.display(), "{warning}");
    }
    if !prepared.kept.is_empty() {
        warn!(dir = %dir.display(), files = prepared.kept.len(), names = %startup::shown(&prepared.kept), "stale files of this depot could not be removed; configs among them boot locally until they can be");
    }
    if !prepared.stuck.is_empty() {
        error!(dir = %dir.display(), files = prepared.stuck.len(), names = %startup::shown(&prepared.stuck), "stale PXE config files of this depot could neither be removed nor made to boot locally; a client may still boot them");
        // The error names the first few: every one, for whoever looks.
        debug!(dir = %dir.display(), names = ?prepared.stuck, "stale PXE config files that may still boot");
    }
    if !prepared.unwritten.is_empty() {
        error!(dir = %dir.display(), files = prepared.unwritten.len(), names = %startup::shown(&prepared.unwritten), "held PXE config files could not be written again; trying again at each sweep");
    }
    let leftovers = prepared.kept.into_iter().chain(prepared.stuck).collect();
    Ok((leftovers, prepared.unwritten))
}

/// Whether a file written in `dir` can be given group `gid`: tried on a file
/// of our own rather than guessed — chown(2) lets a process give a file it
/// owns one of its groups, any group with CAP_CHOWN, and the group the file
/// has already (a setgid directory's). Else the depot started cleanly and
/// every write failed (EPERM), retried for good. A directory it cannot
/// create a file in (read-only, full) is not tried: the depot starts as
/// before, serving reads, its writes failing on their own terms. A probe
/// left by a crash is a temporary name, which start-up removes.
fn probe_group(dir: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(
        "{}-group-probe-{:016x}",
        crate::domain::TMP_PREFIX,
        rand::random::<u64>()
    ));
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(error) => {
            warn!(dir = %dir.display(), %error, gid, "cannot create a file in the PXE directory to try its group on; not tried");
            return Ok(());
        }
    };
    let given = std::os::unix::fs::fchown(&file, None, Some(gid));
    drop(file);
    let _ = std::fs::remove_file(&path);
    given
}

/// The reads of the versions `markers` name, which clients read while the
/// depot was down and start-up then wrote over or removed: journaled as
/// reads and reported with `unreported` (a read known already is not). A
/// version the journal no longer has cannot be told (its product, epoch):
/// its read is logged and lost.
async fn reads_while_down(
    journal: &Journal,
    state: &State,
    markers: Vec<Marker>,
    mut unreported: Vec<ReadEvent>,
) -> Result<Vec<ReadEvent>, StartError> {
    let mut versions: Vec<(String, u64)> =
        markers.into_iter().map(|m| (m.fqdn, m.revision)).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.is_empty() {
        return Ok(unreported);
    }
    let asked = versions.len();
    let found = journal.held_versions(versions).await?;
    if found.len() < asked {
        warn!(
            lost = asked - found.len(),
            "PXE configs read while the depot was down name versions its journal no longer has; those reads cannot be reported"
        );
    }
    let now = std::time::SystemTime::now();
    let known = |read: &ReadEvent| {
        state.saw_read(&read.fqdn, read.revision)
            || (unreported.iter()).any(|r| {
                (&r.fqdn, r.revision, &r.epoch) == (&read.fqdn, read.revision, &read.epoch)
            })
    };
    let reads: Vec<ReadEvent> = (found.into_iter())
        .map(|(fqdn, held)| ReadEvent::of_held(fqdn, held, now))
        .filter(|read| !known(read))
        .collect();
    if reads.is_empty() {
        return Ok(unreported);
    }
    for read in &reads {
        info!(fqdn = %read.fqdn, product = %read.product_id, revision = read.revision, "PXE config read while the depot was down, before start-up wrote over or removed it");
    }
    let batch = Batch {
        reads: reads.clone(),
        ..Batch::default()
    };
    journal.commit_async(Arc::new(batch)).await?;
    unreported.extend(reads);
    Ok(unreported)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory reached through a symlink or `..` into the PXE
    /// directory is inside it (the TFTP server would serve the journal);
    /// it need not exist yet.
    #[test]
    fn a_state_directory_inside_the_pxe_directory_by_any_path_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pxe = tmp.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        std::os::unix::fs::symlink(&pxe, tmp.path().join("link")).unwrap();
        for inside in [
            pxe.join("state"),
            tmp.path().join("link/state/deeper"),
            tmp.path().join("other/../pxe/state"),
            pxe.clone(),
        ] {
            assert!(
                check_state_dir(&inside, &pxe).is_err(),
                "{} was let in",
                inside.display()
            );
        }
        assert!(check_state_dir(&tmp.path().join("state"), &pxe).is_ok());
        assert!(check_state_dir(&tmp.path().join("pxe-state"), &pxe).is_ok());
    }
}
