//! `trickle`: single actions at a fixed rate on an otherwise idle system,
//! one Admin call each, and per client the time from the call to its config
//! on disk (self-contained: this process's own inotify watch sees the
//! depot putting it in place, microsecond resolution) and to the configserver recording
//! the depot's ack (ms resolution, from the Admin API). Nothing is polled in
//! a loop while the actions go out: the watch is event-driven and the pacing
//! sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use indicatif::ProgressBar;
use inotify::{EventMask, Inotify, WatchMask};
use serde::Serialize;
use tokio::sync::mpsc;

use super::super::inventory::Cohort;
use super::super::names::Names;
use super::super::stats::{Latencies, Percentiles};
use super::super::target::Target;
use super::super::track::{self, Baseline, Goal};
use crate::cli::error::CliError;
use crate::proto;

/// One trickle run.
#[derive(Debug, Serialize)]
pub struct TrickleResult {
    /// `new` or `legacy`.
    pub path: &'static str,
    /// Clients, one action each.
    pub clients: u32,
    /// Actions per second asked for.
    pub rate: f64,
    /// Of them, acknowledged by their depot.
    pub delivered: u64,
    /// The Admin call alone.
    pub admin_call_ms: Option<Percentiles>,
    /// Admin call start → the config in place on the depot (renamed or linked in).
    pub to_disk_ms: Option<Percentiles>,
    /// Admin call start → the ack recorded at the configserver (ms resolution).
    pub to_ack_ms: Option<Percentiles>,
}

/// Runs `trickle` for `cohort` at `rate` actions per second.
pub async fn run(
    target: &Target,
    names: &Names,
    cohort: &Cohort,
    rate: f64,
    timeout: Duration,
    quiet: bool,
) -> Result<TrickleResult, CliError> {
    let product = names.product();
    let watch = DiskWatch::start(target, cohort)?;
    let what = format!("trickle, {} path: actions set", cohort.path());
    let bar = super::super::progress::bar(cohort.members.len() as u64, &what, quiet);
    let baseline = Baseline::take(target).await?;
    let (admin_calls, started) = send_paced(target, cohort, &product, rate, &bar).await?;
    bar.finish_and_clear();
    let bar = super::super::progress::bar(cohort.members.len() as u64, "trickle: delivered", quiet);
    let reached = baseline
        .wait_for(
            target,
            &cohort.members,
            &product,
            Goal::Delivered,
            &bar,
            timeout,
        )
        .await?;
    bar.finish_and_clear();
    let mut to_ack = Latencies::new();
    for (r, (sys, _)) in reached.iter().zip(&started) {
        if let Some(at) = r.and_then(|r| r.delivered_at) {
            to_ack.record(track::between(*sys, at));
        }
    }
    let to_disk = watch.map(|watch| watch.latencies(names, cohort, &started));
    Ok(TrickleResult {
        path: cohort.path(),
        clients: cohort.members.len() as u32,
        rate,
        delivered: to_ack.count(),
        admin_call_ms: admin_calls.percentiles(),
        to_disk_ms: to_disk.and_then(|l| l.percentiles()),
        to_ack_ms: to_ack.percentiles(),
    })
}

/// One action per member at `rate` per second, each in its own Admin call
/// (the pacing sleeps); the calls' latencies, and when each started.
async fn send_paced(
    target: &Target,
    cohort: &Cohort,
    product: &str,
    rate: f64,
    bar: &ProgressBar,
) -> Result<(Latencies, Vec<(SystemTime, Instant)>), CliError> {
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut admin = target.admin.clone();
    let mut admin_calls = Latencies::new();
    let mut started = Vec::with_capacity(cohort.members.len());
    for m in &cohort.members {
        pace.tick().await;
        let (sys, t) = (SystemTime::now(), Instant::now());
        admin
            .set_action_requests(proto::SetActionRequestsRequest {
                action_requests: vec![proto::ActionRequest {
                    client_id: m.fqdn.clone(),
                    product_id: product.to_owned(),
                    action_request: "setup".into(),
                }],
            })
            .await?;
        admin_calls.record(t.elapsed());
        started.push((sys, t));
        bar.inc(1);
    }
    Ok((admin_calls, started))
}

/// Configs appearing in the depots' PXE directories (renamed over a name, or
/// linked in under a new one), as this process's own inotify sees them:
/// (file name, when).
struct DiskWatch {
    events: mpsc::UnboundedReceiver<(String, Instant)>,
    task: tokio::task::JoinHandle<()>,
}

impl DiskWatch {
    /// Watches the cohort's depots' directories, if they are on this machine.
    fn start(target: &Target, cohort: &Cohort) -> Result<Option<Self>, CliError> {
        let mut dirs: Vec<_> = cohort
            .members
            .iter()
            .map(|m| target.depots[m.depot].pxe_dir.clone())
            .collect();
        dirs.sort();
        dirs.dedup();
        let Some(dirs) = dirs.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let inotify = Inotify::init()?;
        for dir in &dirs {
            inotify
                .watches()
                .add(dir, WatchMask::MOVED_TO | WatchMask::CREATE)?;
        }
        let mut stream = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let now = Instant::now();
                if event
                    .mask
                    .intersects(EventMask::MOVED_TO | EventMask::CREATE)
                    && let Some(name) = event.name.and_then(|n| n.to_str().map(str::to_owned))
                    && tx.send((name, now)).is_err()
                {
                    return;
                }
            }
        });
        Ok(Some(Self { events, task }))
    }

    /// Per client: its call's start → its MAC-named file first appearing
    /// (renamed or linked in) after that start.
    fn latencies(
        mut self,
        names: &Names,
        cohort: &Cohort,
        started: &[(SystemTime, Instant)],
    ) -> Latencies {
        self.task.abort();
        let by_file: HashMap<String, usize> = cohort
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (names.mac_file(m.n), i))
            .collect();
        let mut first: Vec<Option<Instant>> = vec![None; cohort.members.len()];
        while let Ok((name, at)) = self.events.try_recv() {
            if let Some(&i) = by_file.get(&name)
                && at >= started[i].1
                && first[i].is_none()
            {
                first[i] = Some(at);
            }
        }
        let mut latencies = Latencies::new();
        for (at, (_, start)) in first.iter().zip(started) {
            if let Some(at) = at {
                latencies.record(*at - *start);
            }
        }
        latencies
    }
}
