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
/// the workers wait instead).
async fn write_acks(store: Store, mut rx: mpsc::Receiver<AckMsg>) {
    let mut received = Vec::with_capacity(ACK_BATCH);
    let mut batch = Vec::with_capacity(ACK_BATCH);
    let mut flushed = Vec::new();
    while rx.recv_many(&mut received, ACK_BATCH).await > 0 {
        for msg in received.drain(..) {
            match msg {
                AckMsg::Ack(ack) => batch.push(ack),
                AckMsg::Flush(done) => flushed.push(done),
            }
        }
        let mut delay = RETRY_BACKOFF.0;
        while !batch.is_empty()
            && let Err(error) = store.record_acks(&batch).await
        {
            error!(%error, acks = batch.len(), "recording push results failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_BACKOFF.1);
        }
        batch.clear();
        flushed.drain(..).for_each(|done| {
            let _ = done.send(());
        });
    }
}
