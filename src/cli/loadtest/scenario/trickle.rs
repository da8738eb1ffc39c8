//! `trickle`: single actions at a fixed rate on an otherwise idle system,
//! one Admin call each, and per client the time from the call to its config
//! on disk (self-contained: this process's own inotify watch sees the
//! depot putting it in place, microsecond resolution) and to the configserver recording
//! the depot's ack (ms resolution, from the Admin API). Nothing is polled in
//! a loop while the actions go out: the watch is event-driven and the pacing
//! sleeps.
//!
//! The generator keeps out of what it measures: the actions go out from a
//! runtime of one thread with an Admin channel of its own (its request
//! passes from the call to the connection's task without waking a second
//! thread), and the watch blocks in `read` on a thread of its own, so an
//! arrival is timed the moment the kernel reports it, not when a busy
//! runtime gets to it (docs/BENCHMARKS.md, eleventh pass).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use serde::Serialize;

use super::super::alone;
use super::super::channel::{self, AdminClient};
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
    let clients: Vec<String> = cohort.members.iter().map(|m| m.fqdn.clone()).collect();
    let (admin_at, product_id, progress) = (target.admin_at.clone(), product.clone(), bar.clone());
    let sent = alone::on_own_thread("the trickle", move || async move {
        let (url, key) = admin_at;
        let admin = channel::admin(&url, &key).await?;
        send_paced(admin, &clients, &product_id, rate, &progress).await
    })
    .await;
    bar.finish_and_clear();
    let (admin_calls, started) = sent?;
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

/// When each action's call started: the clock (for the ack's time, which the
/// configserver gives by the clock) and the monotonic instant.
type Started = Vec<(SystemTime, Instant)>;

/// One action per client at `rate` per second, each in its own Admin call
/// (the pacing sleeps); the calls' latencies, and when each started.
async fn send_paced(
    admin: AdminClient,
    clients: &[String],
    product: &str,
    rate: f64,
    bar: &ProgressBar,
) -> Result<(Latencies, Started), CliError> {
    let call = |i: usize| {
        let mut admin = admin.clone();
        let request = proto::SetActionRequestsRequest {
            action_requests: vec![proto::ActionRequest {
                client_id: clients[i].clone(),
                product_id: product.to_owned(),
                action_request: "setup".into(),
            }],
        };
        async move {
            let written = admin.set_action_requests(request).await?.into_inner();
            super::stop_if_waiting(&mut admin, &[clients[i].as_str()], 1, written.waiting).await
        }
    };
    paced(clients.len(), rate, call, bar).await
}

/// `calls` calls of `call(i)` one at a time, started `1 / rate` s apart
/// (the pacing sleeps; a call that takes longer delays the next): their
/// latencies, and when each started. Only the call is timed: its request
/// is built before the clock starts, `bar` moves after it stops (a
/// terminal's redraw is not the server's time).
async fn paced<F, Fut>(
    calls: usize,
    rate: f64,
    call: F,
    bar: &ProgressBar,
) -> Result<(Latencies, Started), CliError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latencies = Latencies::new();
    let mut started = Vec::with_capacity(calls);
    for i in 0..calls {
        pace.tick().await;
        let pending = call(i);
        let (sys, t) = (SystemTime::now(), Instant::now());
        pending.await?;
        latencies.record(t.elapsed());
        started.push((sys, t));
        bar.inc(1);
    }
    Ok((latencies, started))
}

/// The most calls the trickle's baseline makes (enough for its p99; more
/// would only lengthen a long trickle's run).
pub const IDLE_CALLS_MAX: u32 = 200;

/// The trickle's baseline: a no-op RPC on an otherwise idle system.
#[derive(Debug, Serialize)]
pub struct IdleRpc {
    /// Calls made, one at a time.
    pub calls: u32,
    /// Calls per second asked for (the trickle's rate).
    pub rate: f64,
    /// Call latency.
    pub latency_ms: Option<Percentiles>,
}

/// Health `Check` calls at the configserver, paced and sent as the
/// trickle's actions are (one at a time at `rate`, from a runtime of one
/// thread with a channel of its own): what one RPC hop costs on an idle
/// system. An action on its way to disk makes two such hops (the Admin
/// call, the push to its depot) besides its work.
pub async fn idle_noop(target: &Target, calls: u32, rate: f64) -> Result<IdleRpc, CliError> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let url = target.admin_at.0.clone();
    let (latencies, _) = alone::on_own_thread("the idle no-op baseline", move || async move {
        let client = HealthClient::new(channel::connect(&url, "the configserver").await?);
        let call = |_| {
            let mut client = client.clone();
            let request = HealthCheckRequest {
                service: "pxeconf.v1.Admin".into(),
            };
            async move {
                client.check(request).await?;
                Ok(())
            }
        };
        paced(calls as usize, rate, call, &ProgressBar::hidden()).await
    })
    .await?;
    Ok(IdleRpc {
        calls,
        rate,
        latency_ms: latencies.percentiles(),
    })
}

/// Configs appearing in the depots' PXE directories (renamed over a name, or
/// linked in under a new one), as this process's own inotify sees them:
/// (file name, when). The watch's thread blocks in `read` and stops when
/// its watches are removed (the kernel's `IN_IGNORED` wakes it).
struct DiskWatch {
    events: mpsc::Receiver<(String, Instant)>,
    watches: Watches,
    descriptors: Vec<WatchDescriptor>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DiskWatch {
    // An interrupted run drops the watch: its thread ends too.
    fn drop(&mut self) {
        self.stop();
    }
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
        let mut inotify = Inotify::init()?;
        let mut watches = inotify.watches();
        let descriptors = (dirs.iter())
            .map(|dir| watches.add(dir, WatchMask::MOVED_TO | WatchMask::CREATE))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, events) = mpsc::channel();
        let mut watching = descriptors.len();
        let thread = std::thread::Builder::new()
            .name("trickle-watch".into())
            .spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                while watching > 0 {
                    let Ok(read) = inotify.read_events_blocking(&mut buffer) else {
                        return;
                    };
                    let now = Instant::now();
                    for event in read {
                        if event.mask.contains(EventMask::IGNORED) {
                            watching -= 1;
                        } else if event
                            .mask
                            .intersects(EventMask::MOVED_TO | EventMask::CREATE)
                            && let Some(name) = event.name.and_then(|n| n.to_str())
                            && tx.send((name.to_owned(), now)).is_err()
                        {
                            return;
                        }
                    }
                }
            })?;
        Ok(Some(Self {
            events,
            watches,
            descriptors,
            thread: Some(thread),
        }))
    }

    /// Ends the watch: every event it saw is in `events` afterwards.
    fn stop(&mut self) {
        for wd in self.descriptors.drain(..) {
            // A directory gone (its depot stopped) has no watch left.
            let _ = self.watches.remove(wd);
        }
    }

    /// Per client: its call's start → its MAC-named file first appearing
    /// (renamed or linked in) after that start.
    fn latencies(
        mut self,
        names: &Names,
        cohort: &Cohort,
        started: &[(SystemTime, Instant)],
    ) -> Latencies {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
