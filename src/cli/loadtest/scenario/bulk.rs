//! `bulk`: a cohort's `setup` actions in a few Admin calls, then every
//! config acknowledged by its depot. Throughput counts acknowledged configs
//! only; a client's latency runs from the start of the Admin call that
//! carried its action to the configserver recording its depot's ack.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::super::inventory::{Cohort, Member};
use super::super::stats::{Latencies, Percentiles};
use super::super::target::Target;
use super::super::track::{self, Baseline, Goal, Reached};
use crate::cli::error::CliError;
use crate::proto;

/// The most actions in one Admin call (the configserver takes 100,000, but
/// a 4 MiB message holds about 40,000).
const MAX_PER_CALL: usize = 20_000;

/// One bulk run.
#[derive(Debug, Serialize)]
pub struct BulkResult {
    /// `new` or `legacy`.
    pub path: &'static str,
    /// Clients.
    pub clients: u32,
    /// Of them, acknowledged by their depot.
    pub delivered: u64,
    /// Admin calls that carried the actions.
    pub admin_calls: u32,
    /// Seconds the Admin calls took.
    pub admin_seconds: f64,
    /// Seconds from the first call to the last ack recorded.
    pub seconds: f64,
    /// Acknowledged configs per second over that time.
    pub clients_per_second: f64,
    /// Per client: its Admin call's start → its ack recorded (ms resolution).
    pub latency_ms: Option<Percentiles>,
    /// Legacy look-ups the configserver served, per client.
    pub lookups_per_client: Option<f64>,
}

/// Sets `action` for `members` in `calls` Admin calls (more if one would be
/// too large); returns when each member's call started, the time spent and
/// the calls made.
pub async fn set_actions(
    target: &Target,
    members: &[Member],
    product: &str,
    action: &str,
    calls: u32,
) -> Result<(Vec<SystemTime>, Duration, u32), CliError> {
    let per_call = members
        .len()
        .div_ceil(calls.max(1) as usize)
        .clamp(1, MAX_PER_CALL);
    let mut admin = target.admin.clone();
    let mut started = Vec::with_capacity(members.len());
    let start = Instant::now();
    let mut made = 0;
    for chunk in members.chunks(per_call) {
        made += 1;
        let now = SystemTime::now();
        started.extend(std::iter::repeat_n(now, chunk.len()));
        let written = admin
            .set_action_requests(proto::SetActionRequestsRequest {
                action_requests: chunk
                    .iter()
                    .map(|m| proto::ActionRequest {
                        client_id: m.fqdn.clone(),
                        product_id: product.to_owned(),
                        action_request: action.to_owned(),
                    })
                    .collect(),
            })
            .await?
            .into_inner();
        if written.waiting > 0 {
            let mut depots = std::collections::HashSet::new();
            let asked: Vec<&str> = chunk
                .iter()
                .filter(|m| depots.insert(m.depot))
                .map(|m| m.fqdn.as_str())
                .collect();
            super::stop_if_waiting(&mut admin, &asked, chunk.len(), written.waiting).await?;
        }
    }
    Ok((started, start.elapsed(), made))
}

/// Runs `bulk` for `cohort`; also returns what each client reached.
pub async fn run(
    target: &Target,
    cohort: &Cohort,
    product: &str,
    calls: u32,
    timeout: Duration,
    quiet: bool,
) -> Result<(BulkResult, Vec<Option<Reached>>), CliError> {
    let lookups_before = target.lookups().await;
    let bar = super::super::progress::bar(
        cohort.members.len() as u64,
        &format!("bulk, {} path: configs delivered", cohort.path()),
        quiet,
    );
    let baseline = Baseline::take(target).await?;
    let t0 = SystemTime::now();
    let wall = Instant::now();
    let set = set_actions(target, &cohort.members, product, "setup", calls).await;
    if set.is_err() {
        bar.finish_and_clear();
    }
    let (started, admin_time, made) = set?;
    let reached = baseline
        .wait_for(
            target,
            &cohort.members,
            product,
            Goal::Delivered,
            &bar,
            timeout,
        )
        .await?;
    bar.finish_and_clear();
    let (latencies, last) = latencies(&reached, &started);
    let delivered = latencies.count();
    // The ack times are the configserver's, in milliseconds; the wall time
    // (which includes noticing) stands in when none came back.
    let seconds = last
        .map_or(wall.elapsed(), |l| track::between(t0, l))
        .as_secs_f64()
        .max(1e-3);
    let lookups = match (lookups_before, target.lookups().await) {
        (Some(b), Some(a)) => Some((a - b) / cohort.members.len() as f64),
        _ => None,
    };
    let result = BulkResult {
        path: cohort.path(),
        clients: cohort.members.len() as u32,
        delivered,
        admin_calls: made,
        admin_seconds: admin_time.as_secs_f64(),
        seconds,
        clients_per_second: delivered as f64 / seconds,
        latency_ms: latencies.percentiles(),
        lookups_per_client: lookups,
    };
    Ok((result, reached))
}

/// Per client: its call's start → its ack; and the last ack.
fn latencies(
    reached: &[Option<Reached>],
    started: &[SystemTime],
) -> (Latencies, Option<SystemTime>) {
    let mut latencies = Latencies::new();
    let mut last = None;
    for (r, start) in reached.iter().zip(started) {
        if let Some(at) = r.and_then(|r| r.delivered_at) {
            latencies.record(track::between(*start, at));
            last = last.max(Some(at));
        }
    }
    (latencies, last)
}
