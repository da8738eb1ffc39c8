//! The batched ack writer: push results from every worker go to the store
//! in one transaction per batch, so a busy dispatcher writes a few large
//! transactions instead of one per push.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::configserver::store::{Ack, Store, StoreError};
use crate::server::Supervisor;

/// Results waiting for the writer before workers wait (back-pressure).
pub(super) const ACK_QUEUE: usize = 4096;
/// The most results written in one transaction.
const ACK_BATCH: usize = 4096;
/// First and longest wait before retrying a failed write.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// Failed tries of a batch before its results are tried one at a time.
const ISOLATE_AFTER: u32 = 3;
/// The shortest wait between tries of a batch the store keeps refusing when
/// a new result arrives during a longer one.
const JOINED_RETRY: Duration = Duration::from_secs(1);
/// Results tried alone that all failed, none taken, before the store is
/// taken to be down rather than refusing them.
const DOWN_AFTER: usize = 8;

/// What workers send the writer.
pub(super) enum AckMsg {
    /// A push result to record.
    Ack(Ack),
    /// Answered once every result sent before it is in the store (or
    /// dropped as refused for good: see [`isolate`]).
    Flush(oneshot::Sender<()>),
}

/// The sending side, for workers.
#[derive(Clone)]
pub(super) struct AckSender(mpsc::Sender<AckMsg>);

impl AckSender {
    /// Hands a result to the writer, waiting while it is behind. Fails only
    /// while the configserver shuts down (the outbox still owes what was not
    /// recorded, so nothing is lost).
    pub(super) async fn send(&self, ack: Ack) -> Result<(), ()> {
        self.0.send(AckMsg::Ack(ack)).await.map_err(|_| ())
    }

    /// Waits until every result sent before this call is in the store (or
    /// dropped as refused for good, its push still owed: a worker that then
    /// lets the delivery go may push it again, which the depot answers
    /// without writing twice).
    pub(super) async fn flush(&self) -> Result<(), ()> {
        let (tx, rx) = oneshot::channel();
        self.0.send(AckMsg::Flush(tx)).await.map_err(|_| ())?;
        rx.await.map_err(|_| ())
    }
}

/// Starts the writer under `supervisor`; it stops when every sender is gone
/// (the configserver stops), and its end before that stops the configserver.
pub(super) fn spawn(store: Store, supervisor: &Supervisor) -> AckSender {
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    supervisor.spawn_critical("push result writer", async move {
        write_acks(store, rx).await;
        Ok(())
    });
    AckSender(tx)
}

/// Writes push results in batches: one transaction for whatever piled up,
/// retried until it lands (the results are not lost while the store is down;
/// the workers wait instead). A batch the store keeps refusing — not busy or
/// unreachable, refusing — is tried a result at a time (see [`isolate`]), so
/// that one result it refuses for good does not hold up every later one.
async fn write_acks(store: Store, mut rx: mpsc::Receiver<AckMsg>) {
    let mut received = Vec::with_capacity(ACK_BATCH);
    let mut batch = Vec::with_capacity(ACK_BATCH);
    let mut flushed = Vec::new();
    while rx.recv_many(&mut received, ACK_BATCH).await > 0 {
        let mut delay = RETRY_BACKOFF.0;
        let mut refusals = 0;
        loop {
            for msg in received.drain(..) {
                match msg {
                    AckMsg::Ack(ack) => batch.push(ack),
                    AckMsg::Flush(done) => flushed.push(done),
                }
            }
            if batch.is_empty() {
                break;
            }
            match store.record_acks(&batch).await {
                Ok(()) => {
                    batch.clear();
                    break;
                }
                Err(error) => {
                    error!(%error, acks = batch.len(), "recording push results failed; retrying");
                    // A store that is busy or down is waited for as it is.
                    if !error.is_busy() {
                        refusals += 1;
                    }
                }
            }
            if refusals >= ISOLATE_AFTER && isolate(&store, &mut batch).await {
                continue;
            }
            let room = ACK_BATCH.saturating_sub(batch.len());
            if refusals >= ISOLATE_AFTER {
                wait_or_join(&mut rx, &mut received, room, delay).await;
            } else {
                tokio::time::sleep(delay).await;
            }
            delay = (delay * 2).min(RETRY_BACKOFF.1);
            // What arrived meanwhile joins the retry, while the batch has
            // room: a result refused for good is told apart from a store
            // that refuses everything only beside others the store takes.
            while batch.len() + received.len() < ACK_BATCH
                && let Ok(msg) = rx.try_recv()
            {
                received.push(msg);
            }
        }
        // Every result sent before these is stored, or dropped as refused
        // for good (its push still owed in the outbox).
        flushed.drain(..).for_each(|done| {
            let _ = done.send(());
        });
    }
}

/// The wait before retrying a batch the store keeps refusing: `delay`, cut
/// short to [`JOINED_RETRY`] by a result that arrives meanwhile (taken into
/// `received`, up to `room`). A result refused for good can be told apart
/// only beside one the store takes, so a lone one held every later result
/// for the rest of a wait of up to [`RETRY_BACKOFF`]'s longest; a store
/// refusing everything is still tried at most once per [`JOINED_RETRY`].
async fn wait_or_join(
    rx: &mut mpsc::Receiver<AckMsg>,
    received: &mut Vec<AckMsg>,
    room: usize,
    delay: Duration,
) {
    let until = tokio::time::Instant::now() + delay;
    tokio::time::sleep(delay.min(JOINED_RETRY)).await;
    if room == 0 {
        return tokio::time::sleep_until(until).await;
    }
    tokio::select! {
        () = tokio::time::sleep_until(until) => {}
        taken = rx.recv_many(received, room) => {
            // Every sender gone: the configserver stops; wait as before.
            if taken == 0 {
                tokio::time::sleep_until(until).await;
            }
        }
    }
}

/// Tries the results of a batch the store refuses one at a time, in order.
/// Those it takes are recorded. One it refuses — not busy, not unreachable —
/// is tried once more after the pass if the store took others; refused again,
/// it is refused for good (a value it cannot store, a constraint) and dropped,
/// logged: the outbox still has its push as owed (the depot holds a delivered
/// one; the push goes again when the depot's worker next loads what it is
/// owed — at a restart, a reload, the client's next change — which the depot
/// answers without writing twice; a failed one is retried by its worker
/// anyway). The pass stops at [`DOWN_AFTER`] failures in a row (the store
/// went away, or a run of refused ones): those go to the back of the batch,
/// and what was not tried stays. True when the batch changed (some recorded
/// or dropped).
async fn isolate(store: &Store, batch: &mut Vec<Ack>) -> bool {
    let mut untried = std::mem::take(batch).into_iter();
    let mut kept = Vec::new();
    let mut suspects = Vec::new();
    let mut in_a_row: Vec<(Ack, StoreError)> = Vec::new();
    let mut recorded = 0usize;
    for ack in untried.by_ref() {
        match store.record_acks(std::slice::from_ref(&ack)).await {
            Ok(()) => {
                recorded += 1;
                settle(&mut in_a_row, &mut kept, &mut suspects);
            }
            Err(error) => {
                in_a_row.push((ack, error));
                if in_a_row.len() >= DOWN_AFTER {
                    break;
                }
            }
        }
    }
    if in_a_row.len() < DOWN_AFTER {
        settle(&mut in_a_row, &mut kept, &mut suspects);
    }
    let mut dropped = 0usize;
    for (ack, error) in suspects {
        if recorded == 0 {
            kept.push(ack);
            continue;
        }
        match store.record_acks(std::slice::from_ref(&ack)).await {
            Ok(()) => recorded += 1,
            Err(error) if error.is_busy() => kept.push(ack),
            Err(again) => {
                let (client, depot, revision) = ack.key();
                error!(error = %again, first = %error, fqdn = %client, depot = %depot, revision,
                    "the store refuses this push result; dropped (the outbox still has the push as owed)");
                dropped += 1;
            }
        }
    }
    batch.extend(untried);
    batch.extend(kept);
    batch.extend(in_a_row.into_iter().map(|(ack, _)| ack));
    recorded > 0 || dropped > 0
}

/// Failures in a row, ended by a success or by the end of the pass: those
/// the store was busy for are kept, the others are suspected of being
/// refused for good.
fn settle(
    in_a_row: &mut Vec<(Ack, StoreError)>,
    kept: &mut Vec<Ack>,
    suspects: &mut Vec<(Ack, StoreError)>,
) {
    for (ack, error) in in_a_row.drain(..) {
        match error.is_busy() {
            true => kept.push(ack),
            false => suspects.push((ack, error)),
        }
    }
}
