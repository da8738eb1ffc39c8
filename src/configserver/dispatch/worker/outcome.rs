//! What the worker does with a push's outcome: record it (through the
//! batched ack writer, or the store for an ABORTED), count it, and decide
//! when the client goes out again.

use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::super::push::{Outcome, PushResult};
use super::super::runtime::Capability;
use super::{AWAY_FOR_A_CHANGE, REJECT_BACKOFF, Worker, jitter};
use crate::configserver::store::{Ack, PushOp, PushPath, UsedTemplate};
use crate::metrics::PushLabels;
use crate::status::Aborted;

/// First and longest wait before retrying a push the depot failed on its
/// side (disk full, read-only directory): short, so that it lands within
/// 30 s of the cause going away.
const LOCAL_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(20));
/// Fresh revisions for one client in a row before its `NEWER_HELD` counts as
/// a refusal (a depot that keeps refusing must not make the store spin).
const MAX_SUPERSEDES: u32 = 3;

impl Worker {
    /// Handles a push's outcome.
    pub(super) async fn handle(&mut self, outcome: Outcome) {
        let Outcome {
            client_id,
            revision,
            op,
            path,
            result,
            template,
        } = outcome;
        self.count(op, path, &result);
        match result {
            PushResult::Delivered => {
                self.delivered(client_id, revision, (op, path), template)
                    .await
            }
            PushResult::Unimplemented => self.unimplemented(client_id),
            PushResult::Unreachable(error) => self.unreachable(client_id, revision, error).await,
            PushResult::Rejected(error) => {
                // An answer, if a refusal: the depot is up (while it is
                // counted down it is probed one push at a time).
                self.reached();
                self.rejected(client_id, revision, error, REJECT_BACKOFF)
                    .await
            }
            PushResult::Unbuilt(error) => {
                self.rejected(client_id, revision, error, REJECT_BACKOFF)
                    .await
            }
            PushResult::Local(error) => {
                self.reached();
                self.rejected(client_id, revision, error, LOCAL_BACKOFF)
                    .await
            }
            PushResult::AlreadyRead if op == PushOp::Set => {
                self.reached();
                self.already_read(client_id, revision).await
            }
            // A removal of a config that was read: nothing is held, as wanted.
            PushResult::AlreadyRead => self.delivered(client_id, revision, (op, path), None).await,
            PushResult::Superseded(aborted) => {
                self.superseded(client_id, revision, op, aborted).await
            }
        }
    }

    /// Handles the outcome of a push over a connection the worker has left
    /// (the depot's endpoint or key changed while it was in flight): it
    /// tells nothing about the depot now — a refusal or an outage there must
    /// not mark the new endpoint legacy, batch-less or down, and a delivery
    /// there is not one to the depot now registered — so the client goes out
    /// again, first, over the current connection. Only a read is a fact
    /// about the client, wherever it was reported: it is recorded.
    pub(super) async fn stale(&mut self, outcome: Outcome) {
        let Outcome {
            client_id,
            revision,
            op,
            path,
            result,
            ..
        } = outcome;
        self.count(op, path, &result);
        if matches!(result, PushResult::AlreadyRead) && op == PushOp::Set {
            return self.already_read(client_id, revision).await;
        }
        debug!(client = %client_id, revision, result = result.label(), "outcome over the depot's previous endpoint; pushing again over the current one");
        self.queue.retry_first(client_id);
    }

    /// Counts a push at the metrics edge, where the labels become text.
    fn count(&self, op: PushOp, path: PushPath, result: &PushResult) {
        let labels = PushLabels {
            depot: self.depot.id.to_string(),
            path: path.as_str().to_owned(),
            op: op.as_str().to_owned(),
            result: result.label().to_owned(),
        };
        self.shared.metrics.pushes.get_or_create(&labels).inc();
    }

    async fn delivered(
        &mut self,
        client_id: String,
        revision: u64,
        (op, path): (PushOp, PushPath),
        template: Option<UsedTemplate>,
    ) {
        self.rejections.remove(&client_id);
        self.superseded.remove(&client_id);
        self.store_failures.remove(&client_id);
        self.pushed.insert(client_id.clone(), revision);
        self.reached();
        if op == PushOp::Set && path == PushPath::New && self.capability == Capability::Unknown {
            self.capability = Capability::New;
        }
        self.runtime.send_modify(|rt| match path {
            PushPath::Legacy => rt.pushes_legacy += 1,
            PushPath::New => rt.pushes_new += 1,
        });
        self.ack(Ack::Delivered {
            client_id: client_id.clone(),
            depot_id: self.depot.id.to_string(),
            revision,
            path,
            template,
        })
        .await;
        self.queue.settle(client_id);
    }

    fn unimplemented(&mut self, client_id: String) {
        self.reached();
        if self.capability != Capability::Legacy {
            info!("depot does not implement SetPxeConfig; falling back to SetPxeConfigByFqdn");
            self.capability = Capability::Legacy;
            self.legacy_since = Some(Instant::now());
        }
        self.queue.retry_first(client_id);
    }

    /// The depot is down: the push waits at the front, and the first failure
    /// of a round sets when the depot is probed next.
    async fn unreachable(&mut self, client_id: String, revision: u64, error: String) {
        self.queue.retry_first(client_id.clone());
        if self.retry_at.is_none() {
            let wait = jitter(self.backoff);
            self.retry_at = Some(tokio::time::Instant::now() + wait);
            self.backoff = (self.backoff * 2).min(self.shared.settings.max_backoff);
            if self.down.is_none() {
                warn!(%error, retry_in = ?wait, "depot unreachable; pushes wait");
            } else {
                debug!(%error, retry_in = ?wait, "depot still unreachable");
            }
            let next = SystemTime::now() + wait;
            self.runtime.send_modify(|rt| rt.next_retry = Some(next));
            self.ack(Ack::Failed {
                client_id,
                depot_id: self.depot.id.to_string(),
                revision,
                error: error.clone(),
                next_attempt_at: next,
            })
            .await;
        }
        self.down.get_or_insert_with(Instant::now);
        self.runtime.send_modify(|rt| {
            rt.reachable = false;
            rt.last_error = error;
        });
    }

    /// The depot refused this client: it is retried on its own backoff
    /// (`backoff`: first and longest wait).
    async fn rejected(
        &mut self,
        client_id: String,
        revision: u64,
        error: String,
        backoff: (Duration, Duration),
    ) {
        let attempts = self.rejections.entry(client_id.clone()).or_insert(0);
        // With jitter: a depot-wide refusal (a template not synced yet)
        // refuses every client of a bulk in one go, and they came back in
        // one go each time.
        let wait = jitter(backoff.0 * 2u32.saturating_pow(*attempts)).min(backoff.1);
        *attempts += 1;
        warn!(client = %client_id, revision, %error, retry_in = ?wait, "push refused");
        self.ack(Ack::Failed {
            client_id: client_id.clone(),
            depot_id: self.depot.id.to_string(),
            revision,
            error,
            next_attempt_at: SystemTime::now() + wait,
        })
        .await;
        self.queue.retry_after(client_id, wait);
    }

    /// Hands a result to the ack writer, waiting while it is behind.
    async fn ack(&self, ack: Ack) {
        // Gone only while the configserver shuts down; the outbox still
        // owes what was not recorded, so nothing is lost.
        let _ = self.shared.acks.send(ack).await;
    }

    /// The depot answered: it is up.
    pub(super) fn reached(&mut self) {
        if let Some(since) = self.down.take() {
            info!("depot reachable again");
            // It may have been upgraded or replaced while away — not while
            // one push timed out and others were answered (on a busy
            // legacy depot that reset its fallback at every timeout).
            if since.elapsed() >= AWAY_FOR_A_CHANGE {
                self.capability = Capability::Unknown;
                self.no_batches_since = None;
            }
        }
        self.backoff = self.shared.settings.min_backoff;
        self.retry_at = None;
        self.runtime.send_modify(|rt| {
            rt.reachable = true;
            rt.last_contact = Some(SystemTime::now());
            rt.next_retry = None;
            rt.last_error.clear();
        });
    }

    /// The client read that revision or a newer one: recorded exactly as the
    /// read report would be, never as delivered.
    async fn already_read(&mut self, client_id: String, revision: u64) {
        let depot = self.depot.id.to_string();
        match self
            .shared
            .store
            .record_already_read(&depot, &client_id, revision)
            .await
        {
            Ok(outcome) => {
                info!(client = %client_id, revision, applied = outcome.applied, action_request = %outcome.action_request, "depot answered ALREADY_READ; recorded as the client's read");
                self.rejections.remove(&client_id);
                self.store_failures.remove(&client_id);
                self.queue.settle(client_id);
                self.notify(outcome.owed);
            }
            Err(error) => {
                let wait = self.store_failed(&client_id);
                warn!(client = %client_id, %error, retry_in = ?wait, "recording an ALREADY_READ failed; pushing again later");
                self.queue.retry_load(client_id, wait);
            }
        }
    }

    /// The depot has seen a newer revision: the sequence moves past it and
    /// the client goes out again with a fresh one.
    async fn superseded(&mut self, client_id: String, revision: u64, op: PushOp, aborted: Aborted) {
        self.reached();
        let reason = aborted.reason.as_str();
        if self.superseded.get(&client_id).copied().unwrap_or(0) >= MAX_SUPERSEDES {
            let error = format!(
                "ABORTED {reason}: the depot keeps refusing fresh revisions (it holds revision {})",
                aborted.revision
            );
            self.rejected(client_id, revision, error, REJECT_BACKOFF)
                .await;
            return;
        }
        let note = format!(
            "ABORTED {reason} for revision {revision}: the depot has revision {} (highest seen {}); pushed again with a fresh revision",
            aborted.revision, aborted.highest
        );
        let depot = self.depot.id.to_string();
        let result = self
            .shared
            .store
            .supersede(&depot, &client_id, revision, aborted.highest, &note)
            .await;
        match result {
            Ok(fresh) => {
                // Counted once the store moved past: a store that could not
                // is no refusal of a fresh revision by the depot (counted,
                // its failures parked the client for good once it recovered).
                *self.superseded.entry(client_id.clone()).or_insert(0) += 1;
                self.store_failures.remove(&client_id);
                warn!(client = %client_id, op = op.as_str(), revision, depot_revision = aborted.revision, highest = aborted.highest, fresh, reason, "depot has seen a newer revision; the store's sequence moves past it and pushes again");
                self.queue.settle(client_id.clone());
                self.queue.enqueue(client_id);
            }
            Err(error) => {
                let wait = self.store_failed(&client_id);
                warn!(client = %client_id, %error, retry_in = ?wait, "moving past a depot's revision failed; pushing again later");
                self.queue.retry_load(client_id, wait);
            }
        }
    }

    /// How long `client` waits after the store failed to record what its
    /// push came back with: doubling per client from the first of
    /// `LOCAL_BACKOFF` to its longest, with jitter — a store that cannot
    /// write must not cost a load, a depot call and a warning per client
    /// every second.
    fn store_failed(&mut self, client: &str) -> Duration {
        let failures = self.store_failures.entry(client.to_owned()).or_insert(0);
        let wait = (LOCAL_BACKOFF.0 * 2u32.saturating_pow(*failures)).min(LOCAL_BACKOFF.1);
        *failures += 1;
        jitter(wait)
    }
}
