//! Waiting for clients to reach a state without competing with the servers
//! for CPU: a cheap aggregate (`ListDepots` counts) is polled a few times a
//! second until it says the cohort is through, then every client is
//! confirmed with `GetClientStatus`, whose times (the configserver's clock,
//! millisecond resolution) are what the latencies are computed from.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use indicatif::ProgressBar;

use super::inventory::Member;
use super::target::Target;
use crate::cli::error::CliError;
use crate::proto;
use proto::DeliveryState as S;

/// How often the aggregate is polled.
const HINT_INTERVAL: Duration = Duration::from_millis(250);
/// Without the aggregate saying so, clients are confirmed this often anyway:
/// on a remote site always (its counts include its real clients); in a
/// self-contained run only once the aggregate has stood still that long
/// (the run's own clients are all it counts — a sweep of status calls
/// every 5 s during a long bulk loaded the configserver being measured).
const CONFIRM_INTERVAL: Duration = Duration::from_secs(5);
/// Status calls in flight while confirming.
const STATUS_CONCURRENCY: usize = 16;

/// What the load test waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The config is on the client's depot (acknowledged).
    Delivered,
    /// The config was read and the action request is `none`.
    ReadAndNone,
}

/// A client's state as the Admin API shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reached {
    /// When the configserver recorded the depot's ack.
    pub delivered_at: Option<SystemTime>,
    /// When the depot saw the read.
    pub read_at: Option<SystemTime>,
    /// When the configserver recorded the read and turned the action
    /// `none` (µs; absent from configservers older than this field).
    pub read_recorded_at: Option<SystemTime>,
}

/// The depots' counts before an action, to wait against.
pub struct Baseline(Vec<(u64, u64)>);

impl Baseline {
    /// The counts now: take them before the actions (or reads) start.
    pub async fn take(target: &Target) -> Result<Self, CliError> {
        Ok(Self(target.depot_counts().await?))
    }

    /// Waits until every member reached `goal` or `timeout` passed; one
    /// entry per member, `None` where it did not. `bar` counts the aggregate.
    pub async fn wait_for(
        &self,
        target: &Target,
        members: &[Member],
        product: &str,
        goal: Goal,
        bar: &ProgressBar,
        timeout: Duration,
    ) -> Result<Vec<Option<Reached>>, CliError> {
        let deadline = Instant::now() + timeout;
        let mut depots: Vec<usize> = members.iter().map(|m| m.depot).collect();
        depots.sort_unstable();
        depots.dedup();
        let mut reached: Vec<Option<Reached>> = vec![None; members.len()];
        let mut last_confirm = Instant::now();
        // Self-contained: the roles are this run's children.
        let own_counts = target.depots.iter().all(|d| d.pid.is_some());
        let (mut last_through, mut moved_at) = (None, Instant::now());
        loop {
            let through = self.through(&target.depot_counts().await?, &depots, goal);
            if last_through != Some(through) {
                (last_through, moved_at) = (Some(through), Instant::now());
            }
            bar.set_position(through.min(members.len() as u64));
            let hinted = through >= members.len() as u64;
            let due = last_confirm.elapsed() >= CONFIRM_INTERVAL
                && (!own_counts || moved_at.elapsed() >= CONFIRM_INTERVAL);
            if hinted || due || Instant::now() > deadline {
                confirm(target, members, product, goal, &mut reached).await?;
                last_confirm = Instant::now();
                if reached.iter().all(Option::is_some) || Instant::now() > deadline {
                    return Ok(reached);
                }
            }
            tokio::time::sleep(HINT_INTERVAL).await;
        }
    }

    /// How many clients of `depots` the counts show through to `goal`.
    fn through(&self, counts: &[(u64, u64)], depots: &[usize], goal: Goal) -> u64 {
        depots
            .iter()
            .map(|&i| match goal {
                Goal::Delivered => counts[i].0.saturating_sub(self.0[i].0),
                Goal::ReadAndNone => self.0[i].0.saturating_sub(counts[i].0),
            })
            .sum()
    }
}

/// Asks for the state of every member not yet confirmed.
async fn confirm(
    target: &Target,
    members: &[Member],
    product: &str,
    goal: Goal,
    reached: &mut [Option<Reached>],
) -> Result<(), CliError> {
    let open: Vec<usize> = (0..members.len())
        .filter(|&i| reached[i].is_none())
        .collect();
    let results: Vec<(usize, Result<Option<Reached>, tonic::Status>)> = futures::stream::iter(open)
        .map(|i| {
            let mut admin = target.admin.clone();
            let member = &members[i];
            let depot = target.depots[member.depot].id.as_str();
            async move {
                let status = admin
                    .get_client_status(proto::GetClientStatusRequest {
                        fqdn: member.fqdn.clone(),
                    })
                    .await;
                let r = status.map(|s| reached_by(&s.into_inner(), depot, product, goal));
                (i, r)
            }
        })
        .buffer_unordered(STATUS_CONCURRENCY)
        .collect()
        .await;
    for (i, r) in results {
        reached[i] = r?;
    }
    Ok(())
}

/// Whether a client's status shows `goal` reached for `product` on `depot`.
pub fn reached_by(
    status: &proto::GetClientStatusResponse,
    depot: &str,
    product: &str,
    goal: Goal,
) -> Option<Reached> {
    let delivery = status
        .deliveries
        .iter()
        .find(|d| d.depot_id == depot && d.operation == "set" && d.product_id == product)?;
    let time =
        |t: &Option<prost_types::Timestamp>| t.as_ref().and_then(|t| SystemTime::try_from(*t).ok());
    let state = S::try_from(delivery.state).unwrap_or(S::Unspecified);
    let reached = Reached {
        delivered_at: time(&delivery.delivered_at),
        read_at: time(&delivery.read_at),
        read_recorded_at: time(&delivery.read_recorded_at),
    };
    match goal {
        Goal::Delivered => (matches!(state, S::Delivered | S::Read)
            && reached.delivered_at.is_some())
        .then_some(reached),
        Goal::ReadAndNone => {
            let pending = status.product_on_clients.iter().any(|p| {
                p.product_id == product && !matches!(p.action_request.as_str(), "" | "none")
            });
            (state == S::Read && !pending && reached.read_at.is_some()).then_some(reached)
        }
    }
}

/// `later - earlier`, zero if the clocks say otherwise.
pub fn between(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}
