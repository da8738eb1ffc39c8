//! The batched ack writer: push results from every worker go to the store
//! in one transaction per batch, so a busy dispatcher writes a few large
//! transactions instead of one per push.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::error;

use crate::configserver::store::{Ack, Store};
use crate::server::Supervisor;

/// Results waiting for the writer before workers wait (back-pressure).
pub(super) const ACK_QUEUE: usize = 4096;
/// The most results written in one transaction.
const ACK_BATCH: usize = 4096;
/// First and longest wait before retrying a failed write.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// The sending side, for workers.
pub(super) type AckSender = mpsc::Sender<Ack>;

/// Starts the writer under `supervisor`; it stops when every sender is gone
/// (the configserver stops), and its end before that stops the configserver.
pub(super) fn spawn(store: Store, supervisor: &Supervisor) -> AckSender {
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    supervisor.spawn_critical("push result writer", async move {
        write_acks(store, rx).await;
        Ok(())
    });
    tx
}

/// Writes push results in batches: one transaction for whatever piled up,
/// retried until it lands (the results are not lost while the store is down;
/// the workers wait instead).
async fn write_acks(store: Store, mut rx: mpsc::Receiver<Ack>) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let mut delay = RETRY_BACKOFF.0;
        while let Err(error) = store.record_acks(&batch).await {
            error!(%error, acks = batch.len(), "recording push results failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_BACKOFF.1);
        }
        batch.clear();
    }
}
