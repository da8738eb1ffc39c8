//! The supervision of the background tasks a service needs: a task that
//! panics, fails or (if critical) ends early fails the server.

use std::future::Future;
use std::sync::Arc;

/// A task that ended when it should not have, and why.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The task's name.
    pub task: String,
    /// Why it ended: its error, "ended", or its panic message.
    pub cause: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} failed: {}", self.task, self.cause)
    }
}

/// The background tasks a service needs (writer, watcher, reporter,
/// dispatcher workers, ack writers). A task that panics, returns an error,
/// or — if critical — ends before [`Supervisor::shutdown`] is a failure: it
/// is logged, and the server serving with [`serve_supervised`](super::serve_supervised) goes
/// NOT_SERVING and exits ≠ 0, so that systemd restarts it. Transient
/// trouble (a busy database, a peer away) is retried inside the tasks.
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<SupervisorState>,
}

#[derive(Default)]
struct SupervisorState {
    failed: tokio_util::sync::CancellationToken,
    first: std::sync::Mutex<Option<TaskFailure>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl Supervisor {
    /// A supervisor with no task yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a task that must run until shutdown: its end before then is a
    /// failure, as are its error and its panic.
    pub fn spawn_critical<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.spawn(name.into(), task, true);
    }

    /// Spawns a task that may end on its own; its error or panic is a
    /// failure.
    pub fn spawn_worker<F>(&self, name: impl Into<String>, task: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.spawn(name.into(), task, false);
    }

    fn spawn<F>(&self, name: String, task: F, critical: bool)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        use futures::FutureExt;
        let supervisor = self.clone();
        tokio::spawn(async move {
            let ended = std::panic::AssertUnwindSafe(task).catch_unwind().await;
            let cause = match ended {
                Ok(Ok(())) if !critical => return,
                Ok(Ok(())) => "ended".to_owned(),
                Ok(Err(error)) => error,
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
            };
            supervisor.fail(TaskFailure { task: name, cause });
        });
    }

    /// Records a failure (unless shutting down); the first one counts.
    pub fn fail(&self, failure: TaskFailure) {
        if self.is_shutting_down() {
            return;
        }
        tracing::error!(task = %failure.task, cause = %failure.cause, "a task the service needs failed; health goes NOT_SERVING and the process exits");
        let mut first = self.inner.first.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(failure);
        self.inner.failed.cancel();
    }

    /// The service is stopping: tasks ending from now on are no failure.
    pub fn shutdown(&self) {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the service is stopping.
    pub fn is_shutting_down(&self) -> bool {
        self.inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes when a task has failed.
    pub async fn failed(&self) {
        self.inner.failed.cancelled().await;
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.inner
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A panic's message, if it has one.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
