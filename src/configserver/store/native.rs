//! SQLite connections of the store's own (rusqlite, as the depot's
//! journal), each on a thread of its own: a read or a whole write
//! transaction is one hand-off to a thread and its result one message back
//! — or, small and with nothing waiting, none (`run_here`).
//!
//! Through sqlx every statement is a round trip to the connection's thread
//! and back, and its rows come through a channel, waking the reading task
//! per row on an idle configserver; sqlx also pings each pool connection
//! on its way back into the pool (sqlx-core 0.9 `return_to_pool`), one more
//! round trip. A one-client action write took ~10 such hand-offs and a
//! trickle's configserver ~57 context switches per action
//! (docs/BENCHMARKS.md, tenth pass).
//!
//! Readers are read-only; each statement is its own read transaction (WAL:
//! it sees every commit before it began). The writer shares the file with
//! sqlx's writer connection, which the store keeps for the other writes:
//! `db::Store` lets one of the two write at a time (its write gate), so
//! neither waits in SQLite's busy handler.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::error::{Result, StoreError};

/// Prepared statements kept per connection (see [`connect`]).
const STATEMENT_CACHE: usize = 64;

/// Work run on one of the threads.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the connections may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Read only.
    Read,
    /// Read and write (one connection: SQLite has one writer at a time).
    Write,
}

/// Connections, each on a thread of its own, sharing one queue.
pub(super) struct Native {
    /// `None` once closed: the threads end when the queue's sender is gone.
    jobs: Mutex<Option<flume::Sender<Job>>>,
    /// One per thread, fired when it has closed its connection.
    closed: Mutex<Vec<oneshot::Receiver<()>>>,
    /// Jobs queued or running.
    busy: Arc<AtomicUsize>,
    /// The connections, each used by its thread or by [`Native::run_here`].
    conns: Mutex<Vec<Arc<Mutex<Connection>>>>,
}

impl Native {
    /// Opens `n` connections to the SQLite file at `path` (which must exist,
    /// migrated) and starts a thread for each.
    pub(super) fn open(
        path: &Path,
        n: usize,
        access: Access,
        busy_timeout: Duration,
    ) -> Result<Arc<Self>> {
        // One queue, each job woken to one waiting thread (a queue behind a
        // mutex woke two: the receiver, then the next one for the lock).
        let (send, receive) = flume::unbounded::<Job>();
        let mut closed = Vec::with_capacity(n);
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let conn = Arc::new(Mutex::new(connect(path, access, busy_timeout)?));
            conns.push(Arc::clone(&conn));
            let receive = receive.clone();
            let (done, on_done) = oneshot::channel();
            closed.push(on_done);
            std::thread::Builder::new()
                .name(match access {
                    Access::Read => format!("store-read-{i}"),
                    Access::Write => "store-write".to_owned(),
                })
                .spawn(move || {
                    serve(&conn, &receive);
                    drop(conn);
                    let _ = done.send(());
                })
                .map_err(|e| StoreError::Native(format!("starting a store thread: {e}")))?;
        }
        Ok(Arc::new(Self {
            jobs: Mutex::new(Some(send)),
            closed: Mutex::new(closed),
            busy: Arc::new(AtomicUsize::new(0)),
            conns: Mutex::new(conns),
        }))
    }

    /// Runs `work` on the calling thread if a connection is free and no
    /// work is queued (a small transaction on an idle store: no hand-off to
    /// a thread and back, ~110 and ~150 µs in a trickle, docs/BENCHMARKS.md
    /// tenth pass); else gives `work` back.
    pub(super) fn run_here<T, F>(&self, work: F) -> Result<Result<T>, F>
    where
        F: FnOnce(&mut Connection) -> Result<T>,
    {
        if !self.idle() {
            return Err(work);
        }
        let conns = lock(&self.conns).clone();
        for conn in conns {
            if let Ok(mut conn) = conn.try_lock() {
                let _busy = Busy::new(&self.busy);
                return Ok(work(&mut conn));
            }
        }
        Err(work)
    }

    /// Runs `work` on a free connection and returns its result. Once
    /// handed over it runs to its end, even if the caller goes away.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        // Counted from now until the work has ended, or the job is dropped
        // unrun (the store closed).
        let busy = Busy::new(&self.busy);
        let job: Job = Box::new(move |conn| {
            let out = work(conn);
            drop(busy);
            let _ = reply.send(out);
        });
        let sent = match &*lock(&self.jobs) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Native("the store is closed".into()));
        }
        answer
            .await
            .map_err(|_| StoreError::Native("a store thread ended during its work".into()))?
    }

    /// Whether no work is queued or running (a hint: it may change at once).
    pub(super) fn idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
    }

    /// Closes every connection, after the work already queued.
    pub(super) async fn close(&self) {
        lock(&self.jobs).take();
        lock(&self.conns).clear();
        let closed = std::mem::take(&mut *lock(&self.closed));
        for done in closed {
            let _ = done.await;
        }
    }
}

/// One piece of work queued or running, counted in [`Native::idle`]'s
/// counter for as long as it lives (also when the work panics).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A mutex whose holder cannot leave its data half-changed (a take or a
/// send): a poisoned one is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection with the settings of sqlx's (`db::Store::open` says why).
fn connect(path: &Path, access: Access, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_NO_MUTEX
        | match access {
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
            Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
    let conn = Connection::open_with_flags(path, flags)?;
    // Every statement the hot writes and loads prepare stays prepared: they
    // use close to the default of 16 (read from the code, not counted at
    // run time), and a cache that cycles prepares each statement again on
    // every write.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "temp_store", "memory")?;
    if access == Access::Write {
        // Per connection, as sqlx's writer has it: WAL's commits without an
        // fsync each (a crash of the machine may lose the last ones, never
        // corrupt the file).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", false)?;
    }
    Ok(conn)
}

/// Runs jobs until the queue is closed.
fn serve(conn: &Mutex<Connection>, jobs: &flume::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        job(&mut lock(conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_on_their_own_connections_and_close_leaves_none_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
            )
            .unwrap();
        let readers = Native::open(&path, 2, Access::Read, Duration::from_secs(1)).unwrap();
        let read = || {
            readers
                .run(|conn| Ok(conn.query_row("SELECT sum(x) FROM t", [], |r| r.get::<_, i64>(0))?))
        };
        assert_eq!(read().await.unwrap(), 1);
        // A commit after the connections opened is seen by the next read.
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let (a, b) = tokio::join!(read(), read());
        assert_eq!((a.unwrap(), b.unwrap()), (3, 3));
        // Read-only: a write through them fails.
        let write = readers
            .run(|conn| Ok(conn.execute("INSERT INTO t VALUES (9)", [])?))
            .await;
        assert!(write.is_err(), "{write:?}");
        readers.close().await;
        assert!(read().await.is_err(), "closed");
        // The last connection to close checkpoints and removes the WAL: with
        // a reader left open it would stay.
        drop(writer);
        assert!(!dir.path().join("a.db-wal").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_work_runs_on_the_calling_thread_only_while_nothing_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .unwrap();
        let writer = Native::open(&path, 1, Access::Write, Duration::from_secs(1)).unwrap();
        let here = std::thread::current().id();
        let on = |native: &Native| {
            native
                .run_here(|_| Ok(std::thread::current().id()))
                .map(|ran| ran.unwrap())
        };
        assert_eq!(on(&writer).ok(), Some(here), "idle: run here");
        // Work waiting on the thread: given back, to be queued behind it.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let queued = tokio::spawn({
            let writer = Arc::clone(&writer);
            async move {
                writer
                    .run(move |_| {
                        wait.recv().ok();
                        Ok(std::thread::current().id())
                    })
                    .await
            }
        });
        while writer.idle() {
            tokio::task::yield_now().await;
        }
        assert!(on(&writer).is_err(), "busy: given back");
        release.send(()).unwrap();
        let there = queued.await.unwrap().unwrap();
        assert_ne!(there, here, "queued work runs on the store's thread");
        // The store's thread lets go of the connection just after it has
        // answered (a race the CI machine lost once).
        let mut again = on(&writer);
        for _ in 0..1000 {
            if again.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            again = on(&writer);
        }
        assert_eq!(again.ok(), Some(here), "idle again");
    }
}
