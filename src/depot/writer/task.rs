//! The writer task and its handle. Handlers and the read watcher send
//! commands; the task takes them in batches, plans them against its state in
//! order (`super::state`), runs a round's file work on a bounded number of
//! blocking threads (`super::files`) and commits the outcomes. One owner
//! means no locks and no lost update between a push, a removal and a read of
//! the same client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::error::WriterError;
use super::files;
use super::messages::{ConfigPage, ReadEvent, Rendered, SetOutcome, WatchEvent};
use super::state::{Committed, Op, Round, SetPlan, State};
use crate::domain::Fqdn;
use crate::metrics::{DepotLabel, Metrics, WriteLabels};

/// Commands waiting for the writer; handlers wait here when it is busy.
const CHANNEL_CAPACITY: usize = 16_384;
/// Commands taken from the channel at once.
const MAX_BATCH: usize = 1024;

enum Command {
    Set {
        config: Rendered,
        reply: oneshot::Sender<Result<SetOutcome, WriterError>>,
    },
    Remove {
        fqdn: Fqdn,
        revision: u64,
        reply: oneshot::Sender<Result<bool, WriterError>>,
    },
    List {
        after: Option<String>,
        limit: usize,
        product: Option<String>,
        reply: oneshot::Sender<ConfigPage>,
    },
    Watch(WatchEvent),
}

/// Where the answer to a planned command goes.
enum Reply {
    Set(oneshot::Sender<Result<SetOutcome, WriterError>>),
    Remove(oneshot::Sender<Result<bool, WriterError>>),
    /// A read: nobody waits for it.
    None,
}

impl Reply {
    /// Sends the committed answer to whoever waits for it. A set is always
    /// planned with a set reply and a removal with a removal reply.
    fn answer(self, committed: Committed) {
        match (self, committed) {
            (Reply::Set(tx), Committed::Set(result)) => {
                let _ = tx.send(result);
            }
            (Reply::Remove(tx), Committed::Remove(result)) => {
                let _ = tx.send(result);
            }
            _ => {}
        }
    }
}

/// How a write went, for the metrics.
#[derive(Debug, Clone, Copy)]
enum WriteResult {
    Ok,
    IoError,
}

impl WriteResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::IoError => "io_error",
        }
    }
}

/// A handle to send commands to the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// Writes (or replaces) a client's config.
    pub async fn set(&self, config: Rendered) -> Result<SetOutcome, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Set { config, reply }).await?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Removes a client's config; true if one was held.
    pub async fn remove(&self, fqdn: Fqdn, revision: u64) -> Result<bool, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove {
            fqdn,
            revision,
            reply,
        })
        .await?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// A page of held configs after the FQDN `after`.
    pub async fn list(
        &self,
        after: Option<String>,
        limit: usize,
        product: Option<String>,
    ) -> Result<ConfigPage, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::List {
            after,
            limit,
            product,
            reply,
        })
        .await?;
        rx.await.map_err(|_| WriterError::Stopped)
    }

    /// Passes a watcher event to the writer.
    pub async fn watch_event(&self, event: WatchEvent) -> Result<(), WriterError> {
        self.send(Command::Watch(event)).await
    }

    async fn send(&self, command: Command) -> Result<(), WriterError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| WriterError::Stopped)
    }
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The PXE directory.
    pub pxe_dir: PathBuf,
    /// Blocking threads used for one batch's file I/O.
    pub io_threads: usize,
    /// The depot id, for metrics and logs.
    pub depot_id: String,
}

/// Starts the writer task. Read events go to `reads`; when that channel is
/// full the writer waits for room (a read is never dropped).
pub fn spawn(
    options: WriterOptions,
    reads: mpsc::Sender<ReadEvent>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let writer = Writer {
        dir: Arc::new(options.pxe_dir),
        io_threads: options.io_threads.max(1),
        state: State::default(),
        reads,
        depot: DepotLabel {
            depot: options.depot_id,
        },
        metrics,
    };
    let task = tokio::spawn(writer.run(rx));
    (WriterHandle { tx }, task)
}

struct Writer {
    dir: Arc<PathBuf>,
    io_threads: usize,
    state: State,
    reads: mpsc::Sender<ReadEvent>,
    depot: DepotLabel,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut round = Round::default();
            for command in batch.drain(..) {
                self.plan(command, &mut round).await;
            }
            self.execute(&mut round).await;
            self.metrics
                .pending_configs
                .get_or_create(&self.depot)
                .set(self.state.len() as i64);
        }
        debug!("writer stopped");
    }

    /// Plans one command into `round`, executing the round first when the
    /// command touches something the round already touches (the state is
    /// consulted only after that: executing may have changed it).
    async fn plan(&mut self, command: Command, round: &mut Round<Reply>) {
        match command {
            Command::Set { config, reply } => {
                self.make_room(round, &self.state.set_keys(&config)).await;
                match self.state.plan_set(config) {
                    SetPlan::Write(planned) => round.push(planned, Reply::Set(reply)),
                    SetPlan::Answer(answer) => {
                        let _ = reply.send(answer);
                    }
                }
            }
            Command::Remove {
                fqdn,
                revision,
                reply,
            } => {
                self.make_room(round, &self.state.client_keys(&fqdn)).await;
                match self.state.plan_remove(fqdn, revision) {
                    Ok(planned) => round.push(planned, Reply::Remove(reply)),
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::List {
                after,
                limit,
                product,
                reply,
            } => {
                // A listing must see every command sent before it.
                self.execute(round).await;
                let _ = reply.send(self.state.page(after.as_deref(), limit, product.as_deref()));
            }
            Command::Watch(WatchEvent::Moved(name)) => self.state.moved(&name),
            Command::Watch(WatchEvent::Read(name)) => self.plan_read(name, round).await,
            Command::Watch(WatchEvent::Overflow) => {
                self.execute(round).await;
                self.recheck_after_overflow().await;
            }
        }
    }

    async fn plan_read(&mut self, name: String, round: &mut Round<Reply>) {
        let Some(fqdn) = self.state.owner(&name).cloned() else {
            return;
        };
        if self.state.is_replaced(&name) {
            // The client read the version we have since replaced; the new one
            // stays for its next boot.
            debug!(%fqdn, file = %name, "read of a replaced PXE config version ignored");
            return;
        }
        if round.touches(&self.state.client_keys(&fqdn)) {
            self.execute(round).await;
            if self.state.owner(&name) != Some(&fqdn) || self.state.is_replaced(&name) {
                return;
            }
        }
        round.push(self.state.plan_read(fqdn), Reply::None);
    }

    /// Executes the round if any of `keys` is already in it.
    async fn make_room(&mut self, round: &mut Round<Reply>, keys: &[String]) {
        if round.touches(keys) {
            self.execute(round).await;
        }
    }

    /// Runs the round's file I/O on at most `io_threads` blocking threads,
    /// commits each command's outcome and answers it, then hands on the reads
    /// (waiting for room in the reads channel).
    async fn execute(&mut self, round: &mut Round<Reply>) {
        if round.is_empty() {
            return;
        }
        let mut commands = Vec::new();
        let mut ops = Vec::new();
        for (op, files, reply) in round.take() {
            commands.push((op, reply));
            ops.push(files);
        }
        let results = files::run_file_ops(self.dir.clone(), ops, self.io_threads).await;
        let mut reads = Vec::new();
        for ((op, reply), result) in commands.into_iter().zip(results) {
            reads.extend(self.commit(op, result, reply));
        }
        for read in reads {
            if self.reads.send(read).await.is_err() {
                warn!("read events have no receiver any more; a read goes unreported");
            }
        }
    }

    /// Commits one command, logs and counts it, and answers it; returns the
    /// read to report, if it was one.
    fn commit(
        &mut self,
        op: Op,
        result: Result<(), WriterError>,
        reply: Reply,
    ) -> Option<ReadEvent> {
        let fqdn = op.fqdn().clone();
        if let (Op::Read { .. }, Err(error)) = (&op, &result) {
            error!(%fqdn, %error, "read PXE config could not be deleted; the client may boot it again");
        }
        let committed = self.state.commit(op, result, SystemTime::now());
        match &committed {
            Committed::Set(Ok(outcome)) => {
                self.count_write(WriteResult::Ok);
                debug!(%fqdn, revision = outcome.revision, files = ?outcome.files, "PXE config written");
            }
            Committed::Set(Err(error)) => {
                self.count_write(WriteResult::IoError);
                warn!(%fqdn, %error, "PXE config not written");
            }
            Committed::Remove(Ok(removed)) => debug!(%fqdn, removed, "PXE config removed"),
            // The files may be partly gone; none is forgotten, so a retry
            // deletes the rest.
            Committed::Remove(Err(error)) => warn!(%fqdn, %error, "PXE config not removed"),
            Committed::Read(Some(read)) => {
                self.metrics.tftp_reads.get_or_create(&self.depot).inc();
                info!(%fqdn, product = %read.product_id, revision = read.revision, "PXE config read by the client");
            }
            Committed::Read(None) => {}
        }
        match committed {
            Committed::Read(read) => read,
            answer => {
                reply.answer(answer);
                None
            }
        }
    }

    fn count_write(&self, result: WriteResult) {
        self.metrics
            .config_writes
            .get_or_create(&WriteLabels {
                depot: self.depot.depot.clone(),
                result: result.as_str().to_owned(),
            })
            .inc();
    }

    /// After the kernel dropped events, reads may have been missed: a file
    /// read since it was written counts as read now.
    async fn recheck_after_overflow(&mut self) {
        warn!("inotify queue overflowed; rechecking held PXE configs for reads");
        self.state.forget_moves();
        let names = self.state.file_names();
        let dir = self.dir.clone();
        let read = match tokio::task::spawn_blocking(move || files::read_since_written(&dir, names))
            .await
        {
            Ok(read) => read,
            Err(error) => {
                error!(%error, "rechecking PXE configs for reads failed; reads missed in the overflow stay unseen");
                Vec::new()
            }
        };
        let mut round = Round::default();
        for name in read {
            self.plan_read(name, &mut round).await;
        }
        self.execute(&mut round).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{ActionRequest, ProductId};

    fn config(n: u32) -> Rendered {
        Rendered {
            fqdn: Fqdn::parse(&format!("client{n}.example.org"), "fqdn").unwrap(),
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision: 1,
            files: vec![format!("01-02-00-00-00-00-{n:02x}")],
            content: Arc::from("config\n"),
            template: "install".into(),
        }
    }

    #[tokio::test]
    async fn a_full_reads_channel_holds_the_writer_and_loses_no_read() {
        let dir = tempfile::tempdir().unwrap();
        let (reads_tx, mut reads) = mpsc::channel(1);
        let options = WriterOptions {
            pxe_dir: dir.path().to_path_buf(),
            io_threads: 1,
            depot_id: "depot1.example.org".into(),
        };
        let (writer, _task) = spawn(options, reads_tx, Metrics::new());
        for n in 0..3 {
            let outcome = writer.set(config(n)).await.unwrap();
            // The watcher saw our rename: a read now is a read of this version.
            let name = outcome.files[0].clone();
            writer.watch_event(WatchEvent::Moved(name)).await.unwrap();
        }
        for n in 0..3 {
            let name = config(n).files[0].clone();
            writer.watch_event(WatchEvent::Read(name)).await.unwrap();
        }
        // Room for one read: the writer waits with the others, so a listing
        // sent after them cannot be answered yet.
        let held_up = tokio::time::timeout(Duration::from_millis(200), writer.list(None, 10, None));
        assert!(
            held_up.await.is_err(),
            "the writer went on past a full channel"
        );
        let mut seen = Vec::new();
        for _ in 0..3 {
            let read = tokio::time::timeout(Duration::from_secs(5), reads.recv())
                .await
                .expect("a read was lost")
                .unwrap();
            seen.push(read.fqdn.to_string());
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "client0.example.org",
                "client1.example.org",
                "client2.example.org"
            ]
        );
        let page = writer.list(None, 10, None).await.unwrap();
        assert_eq!(page.total, 0);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
