//! `boot`: every client of a cohort reads its MAC-named config the way a
//! booting PXE client does — over TFTP (tftpd-hpa in self-contained mode,
//! `--tftp` against a site), else by opening and closing the file, which is
//! what the depot's watch sees of a TFTP server — and the time from the read
//! to its action request turning `none` at the configserver.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;

use super::super::inventory::Cohort;
use super::super::names::Names;
use super::super::stats::{Latencies, Percentiles};
use super::super::target::Target;
use super::super::track::{self, Baseline, Goal};
use crate::cli::error::CliError;

/// Tries of one TFTP read (tftpd-hpa may still be starting).
const TFTP_TRIES: u32 = 10;

/// How a config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMethod {
    /// Over TFTP.
    Tftp,
    /// Open and close on the depot's directory (no TFTP server here).
    OpenClose,
}

/// One boot run.
#[derive(Debug, Serialize)]
pub struct BootResult {
    /// `new` or `legacy`.
    pub path: &'static str,
    /// Clients that read.
    pub clients: u32,
    /// How they read.
    pub read_method: ReadMethod,
    /// Reads that returned the config.
    pub reads_ok: u64,
    /// Seconds the reads took.
    pub read_seconds: f64,
    /// Reads per second.
    pub reads_per_second: f64,
    /// Of them, clients whose action request is now `none`.
    pub turned_none: u64,
    /// Per client: read done → the configserver recorded the read and turned
    /// the action `none` (its clock, µs; none from a configserver too old to
    /// say when).
    pub latency_ms: Option<Percentiles>,
}

/// Where one client's config is read from.
#[derive(Clone)]
enum Source {
    Tftp(SocketAddr, String),
    File(PathBuf),
}

/// The read method `target` allows for `cohort`, if any.
pub fn method(target: &Target, cohort: &Cohort) -> Option<ReadMethod> {
    let depots = || cohort.members.iter().map(|m| &target.depots[m.depot]);
    if depots().all(|d| d.tftp.is_some()) {
        Some(ReadMethod::Tftp)
    } else if depots().all(|d| d.pxe_dir.is_some()) {
        Some(ReadMethod::OpenClose)
    } else {
        None
    }
}

/// Runs `boot` for a cohort whose configs are delivered.
pub async fn run(
    target: &Target,
    names: &Names,
    cohort: &Cohort,
    concurrency: usize,
    timeout: Duration,
    quiet: bool,
) -> Result<BootResult, CliError> {
    let read_method =
        method(target, cohort).ok_or("boot needs a TFTP server per depot (--tftp)")?;
    let sources = sources(target, names, cohort, read_method);
    let what = format!("boot, {} path: configs read", cohort.path());
    let bar = super::super::progress::bar(sources.len() as u64, &what, quiet);
    let baseline = Baseline::take(target).await?;
    let start = Instant::now();
    let read_at = read_all(sources, concurrency, &bar).await;
    let read_seconds = start.elapsed().as_secs_f64().max(1e-3);
    bar.finish_and_clear();
    let reads_ok = read_at.iter().flatten().count() as u64;

    let what = format!("boot, {} path: actions none", cohort.path());
    let bar = super::super::progress::bar(cohort.members.len() as u64, &what, quiet);
    let product = names.product();
    let reached = baseline
        .wait_for(
            target,
            &cohort.members,
            &product,
            Goal::ReadAndNone,
            &bar,
            timeout,
        )
        .await?;
    bar.finish_and_clear();
    let mut latencies = Latencies::new();
    for (r, read) in reached.iter().zip(&read_at) {
        if let (Some(at), Some(read)) = (r.and_then(|r| r.read_recorded_at), read) {
            latencies.record(track::between(*read, at));
        }
    }
    Ok(BootResult {
        path: cohort.path(),
        clients: cohort.members.len() as u32,
        read_method,
        reads_ok,
        read_seconds,
        reads_per_second: reads_ok as f64 / read_seconds,
        turned_none: reached.iter().flatten().count() as u64,
        latency_ms: latencies.percentiles(),
    })
}

/// Where each member's config is read from.
fn sources(target: &Target, names: &Names, cohort: &Cohort, method: ReadMethod) -> Vec<Source> {
    cohort
        .members
        .iter()
        .map(|m| {
            let depot = &target.depots[m.depot];
            let file = names.mac_file(m.n);
            match (method, depot.tftp, &depot.pxe_dir) {
                (ReadMethod::Tftp, Some(addr), _) => Source::Tftp(addr, file),
                (_, _, Some(dir)) => Source::File(dir.join(file)),
                _ => unreachable!("method() checked every depot"),
            }
        })
        .collect()
}

/// Reads every config, `concurrency` at once, in order; when each read
/// completed (`None`: it failed).
async fn read_all(
    sources: Vec<Source>,
    concurrency: usize,
    bar: &ProgressBar,
) -> Vec<Option<SystemTime>> {
    futures::stream::iter(sources)
        .map(|source| {
            let bar = bar.clone();
            async move {
                // Timed on the reading thread as the read returns: on the
                // runtime, after the hand-back, a busy generator timed it
                // late, later than the configserver's record of it.
                let done =
                    tokio::task::spawn_blocking(move || read(&source).map(|()| SystemTime::now()))
                        .await;
                bar.inc(1);
                done.ok().and_then(Result::ok)
            }
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// Reads one config. Blocking.
fn read(source: &Source) -> std::io::Result<()> {
    match source {
        Source::File(path) => std::fs::File::open(path).map(drop),
        Source::Tftp(addr, name) => {
            let mut last = None;
            for _ in 0..TFTP_TRIES {
                match crate::cli::tftp::fetch(*addr, name, Duration::from_millis(500)) {
                    Ok(data) if !data.is_empty() => return Ok(()),
                    Ok(_) => last = Some(std::io::Error::other("empty config")),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| std::io::Error::other("TFTP read failed")))
        }
    }
}
