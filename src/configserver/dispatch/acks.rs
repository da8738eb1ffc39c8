//! The batched ack writer: push results from every worker go to the store
//! in one transaction per batch, so a busy dispatcher writes a few large
//! transactions instead of one per push.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::configserver::store::{Ack, Store};
use crate::server::Supervisor;

/// Results waiting for the writer before workers wait (back-pressure).
pub(super) const ACK_QUEUE: usize = 4096;
/// The most results written in one transaction.
const ACK_BATCH: usize = 4096;
/// First and longest wait before retrying a failed write.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// Failed tries of a batch before its results are tried one at a time.
const ISOLATE_AFTER: u32 = 3;
/// Results tried alone that all failed, none taken, before the store is
/// taken to be down rather than refusing them.
const DOWN_AFTER: usize = 8;

/// What workers send the writer.
pub(super) enum AckMsg {
    /// A push result to record.
    Ack(Ack),
    /// Answered once every result sent before it is in the store.
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

    /// Waits until every result sent before this call is in the store.
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
/// the workers wait instead). A batch that keeps failing is tried a result
/// at a time (see [`isolate`]), so that one result the store refuses for
/// good does not hold up every later one.
async fn write_acks(store: Store, mut rx: mpsc::Receiver<AckMsg>) {
    let mut received = Vec::with_capacity(ACK_BATCH);
    let mut batch = Vec::with_capacity(ACK_BATCH);
    let mut flushed = Vec::new();
    while rx.recv_many(&mut received, ACK_BATCH).await > 0 {
        let mut delay = RETRY_BACKOFF.0;
        let mut failures = 0;
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
                    failures += 1;
                }
            }
            if failures >= ISOLATE_AFTER && isolate(&store, &mut batch).await {
                continue;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_BACKOFF.1);
            // What arrived meanwhile joins the retry: a result refused for
            // good is told apart from a store that is down only beside
            // others the store takes.
            let room = ACK_BATCH.saturating_sub(batch.len()).max(1);
            while received.len() < room
                && let Ok(msg) = rx.try_recv()
            {
                received.push(msg);
            }
        }
        flushed.drain(..).for_each(|done| {
            let _ = done.send(());
        });
    }
}

/// Tries the results of a failing batch one at a time. Those the store
/// takes are recorded; if it took any, those it refused twice are refused for good
/// (a value it cannot store, a constraint) and dropped, logged: the outbox
/// still has their pushes as owed (a delivered one goes again when the
/// depot's worker next loads what it is owed, which the depot answers
/// without writing twice; a failed one is retried by its worker anyway).
/// If the first [`DOWN_AFTER`] all fail the store is taken to be down:
/// nothing is dropped, and they move to the back of the batch so that the
/// next try starts with others. True when the batch
/// changed (some recorded or dropped).
async fn isolate(store: &Store, batch: &mut Vec<Ack>) -> bool {
    let mut refused = Vec::new();
    let mut recorded = 0usize;
    for (tried, ack) in batch.iter().enumerate() {
        if recorded == 0 && tried >= DOWN_AFTER {
            batch.rotate_left(tried);
            return false;
        }
        match store.record_acks(std::slice::from_ref(ack)).await {
            Ok(()) => recorded += 1,
            Err(error) => refused.push((ack.clone(), error)),
        }
    }
    if recorded == 0 {
        return false;
    }
    // Refused before the store came back, they would be taken now: only
    // what it refuses again, now that it takes others, goes.
    let mut again = Vec::new();
    for (ack, _) in refused {
        if let Err(error) = store.record_acks(std::slice::from_ref(&ack)).await {
            again.push((ack, error));
        }
    }
    for (ack, error) in again {
        let (client, depot, revision) = match &ack {
            Ack::Delivered {
                client_id,
                depot_id,
                revision,
                ..
            }
            | Ack::Failed {
                client_id,
                depot_id,
                revision,
                ..
            } => (client_id, depot_id, revision),
        };
        error!(%error, fqdn = %client, depot = %depot, revision, "the store refuses this push result; dropped (the outbox still has the push as owed)");
    }
    batch.clear();
    true
}
