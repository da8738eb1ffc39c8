//! Load generated from a runtime of one thread of its own, so that the
//! generator keeps out of what it measures: on the process's shared
//! runtime a call, its channel's buffer task and its connection's task
//! wake each other across two threads (a context switch each, tens of µs
//! on a small VM, and CPU taken from the servers); on one thread they hand
//! over without a switch (docs/BENCHMARKS.md, eleventh pass).

use tokio_util::sync::CancellationToken;

use crate::cli::error::CliError;

/// Runs the future `make` returns on a runtime of one thread of its own
/// and waits for it. Channels it uses must be opened inside it (a channel's
/// tasks run on the runtime that opened it). Dropping the returned future
/// (an interrupted run) stops it at its next wait.
pub async fn on_own_thread<T, F, Fut>(what: &'static str, make: F) -> Result<T, CliError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, CliError>>,
{
    let stop = CancellationToken::new();
    let _stop_when_dropped = stop.clone().drop_guard();
    let done = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{what}: its runtime did not start: {e}"))?;
        runtime.block_on(async move {
            tokio::select! {
                done = make() => done,
                () = stop.cancelled() => Err(format!("{what} was interrupted").into()),
            }
        })
    })
    .await;
    done.map_err(|e| format!("{what}: its thread failed: {e}"))?
}
