//! The writer task and its handle. Handlers and the read watcher send
//! commands; the task takes them in batches, plans them against its state in
//! order (`super::state`), journals each round in one durable transaction,
//! runs its file work on a bounded number of blocking threads
//! (`super::files`) and answers (`execute`). One owner means no locks and
//! no lost update between a push, a removal and a read of the same client.

mod execute;

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound::{Excluded, Unbounded};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::error::WriterError;
use super::files::{self, FileAccess};
use super::journal::{Batch, Journal};
use super::messages::{ConfigPage, ReadEvent, Rendered, SetOutcome, WatchEvent};
use super::ops::{Committed, SetPlan};
use super::placement::Placement;
use super::round::Round;
use super::state::{ReplacedRead, State};
use crate::domain::Fqdn;
use crate::metrics::{DepotLabel, Metrics};

/// Commands waiting for the writer; handlers wait here when it is busy.
const CHANNEL_CAPACITY: usize = 16_384;
/// Commands taken from the channel at once.
const MAX_BATCH: usize = 1024;
/// How often the deletes of defused reads are retried.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

enum Command {
    Set {
        config: Rendered,
        reply: oneshot::Sender<Result<SetOutcome, WriterError>>,
    },
    Remove {
        fqdn: Fqdn,
        revision: u64,
        epoch: Arc<str>,
        reply: oneshot::Sender<Result<bool, WriterError>>,
    },
    List {
        after: Option<String>,
        limit: usize,
        product: Option<String>,
        reply: oneshot::Sender<ConfigPage>,
    },
    Position {
        reply: oneshot::Sender<(Arc<str>, u64)>,
    },
    Retain {
        epoch: Arc<str>,
        keep: HashSet<Fqdn>,
        reply: oneshot::Sender<usize>,
    },
    Watch(WatchEvent),
}

/// Where the answer to a planned command goes.
enum Reply {
    Set(oneshot::Sender<Result<SetOutcome, WriterError>>),
    Remove(oneshot::Sender<Result<bool, WriterError>>),
    /// A read, a rewrite, a sweep or a drop: nobody waits for it.
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

/// A handle to send commands to the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    epoch: watch::Receiver<Arc<str>>,
}

impl WriterHandle {
    /// Writes (or replaces) a client's config.
    pub async fn set(&self, config: Rendered) -> Result<SetOutcome, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Set { config, reply }).await?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Removes a client's config; true if one was held. `revision` 0 and
    /// an empty `epoch` remove unconditionally.
    pub async fn remove(
        &self,
        fqdn: Fqdn,
        revision: u64,
        epoch: Arc<str>,
    ) -> Result<bool, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove {
            fqdn,
            revision,
            epoch,
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

    /// The epoch the depot follows and the highest revision seen in it.
    pub async fn position(&self) -> Result<(Arc<str>, u64), WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Position { reply }).await?;
        rx.await.map_err(|_| WriterError::Stopped)
    }

    /// Drops the configs of other epochs than `epoch` that are not in
    /// `keep` (a new store does not owe them); returns how many are still
    /// there (their files could not be deleted: the caller asks again).
    pub async fn retain(&self, epoch: Arc<str>, keep: HashSet<Fqdn>) -> Result<usize, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Retain { epoch, keep, reply }).await?;
        rx.await.map_err(|_| WriterError::Stopped)
    }

    /// The epoch the depot follows, changing when a push brings a new one.
    pub fn epochs(&self) -> watch::Receiver<Arc<str>> {
        self.epoch.clone()
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
    /// The mode and group of written files.
    pub access: FileAccess,
    /// Our files start-up found and could not remove (temporary files,
    /// configs made to boot locally): deleted by the sweep once they can be,
    /// unless a held config has taken the name meanwhile.
    pub leftovers: Vec<String>,
    /// Held configs' file names start-up could not write (the directory
    /// unwritable or full): written by the sweep once they can be.
    pub unwritten: Vec<String>,
}

/// Prepares the writer over `state` (as the journal kept it): its handle,
/// and the task to run (under a supervisor: it ends only when every handle
/// is gone). Read events go to `reads`; when that channel is full the
/// writer waits for room (a read is never dropped).
pub fn start(
    options: WriterOptions,
    journal: Journal,
    state: State,
    reads: mpsc::Sender<ReadEvent>,
    metrics: Arc<Metrics>,
) -> (
    WriterHandle,
    impl Future<Output = Result<(), String>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (epoch_tx, epoch) = watch::channel(state.epoch().clone());
    let unwritten = (options.unwritten.iter())
        .filter_map(|name| state.owner(name).cloned())
        .collect();
    let writer = Writer {
        dir: Arc::new(options.pxe_dir),
        access: options.access,
        io_threads: options.io_threads.max(1),
        state,
        journal,
        reads,
        epoch: epoch_tx,
        depot: DepotLabel {
            depot: options.depot_id,
        },
        metrics,
        leftovers: options.leftovers.into_iter().collect(),
        unwritten,
        tried_last: None,
        placement: Placement::default(),
        fences: Fences::new(),
        ended: false,
    };
    (WriterHandle { tx, epoch }, writer.run(rx))
}

/// A writer with an empty journal in `state_dir`, its task spawned: for
/// tests of what sits on top of it.
#[cfg(test)]
pub async fn spawn_fresh(
    state_dir: &std::path::Path,
    options: WriterOptions,
    reads: mpsc::Sender<ReadEvent>,
) -> WriterHandle {
    let journal = Journal::open(state_dir).await.unwrap();
    let (handle, task) = start(options, journal, State::default(), reads, Metrics::new());
    tokio::spawn(task);
    handle
}

struct Writer {
    dir: Arc<PathBuf>,
    access: FileAccess,
    io_threads: usize,
    state: State,
    journal: Journal,
    reads: mpsc::Sender<ReadEvent>,
    epoch: watch::Sender<Arc<str>>,
    depot: DepotLabel,
    metrics: Arc<Metrics>,
    /// See [`WriterOptions::leftovers`].
    leftovers: BTreeSet<String>,
    /// Held configs whose files could not be written again (the PXE
    /// directory came back unwritable or full, or the journal could not be
    /// read): written at each sweep until they are. Without this they would
    /// stay held — listed, and a retried push answered as written — with
    /// nothing on disk until a restart.
    unwritten: BTreeSet<Fqdn>,
    /// The client of [`Self::unwritten`] a retry tried last: the next one
    /// tries the one after it, so that a config that can never be written
    /// (its name obstructed) does not stand in for the others.
    tried_last: Option<Fqdn>,
    /// Whether small rounds run in place now.
    placement: Placement,
    /// The fences made (see `files::fence`).
    fences: Fences,
    /// The test hook ended the writer.
    ended: bool,
}

/// The writer's fences (see `files::fence`).
#[derive(Debug)]
struct Fences {
    /// This run's fences are numbered above this.
    start: u64,
    /// The number of the next fence: deletes that find no file now are
    /// seen when it (or a later one) comes back. Each attempt takes one.
    next: u64,
    /// A fence is owed: a delete found no file (or failed file work may
    /// have made some) since the last one was made (or the last attempt
    /// failed).
    owed: bool,
}

impl Fences {
    fn new() -> Self {
        // Numbered from the start's time, so that the delete of a fence an
        // earlier run left passes none of this run's.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let start = now.map_or(0, |d| d.as_micros() as u64);
        Self {
            start,
            next: start + 1,
            owed: false,
        }
    }

    /// Whether fence `n` is one this run made (not one an earlier run left,
    /// or a file someone else named like one).
    fn ours(&self, n: u64) -> bool {
        self.start < n && n < self.next
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Result<(), String> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Start-up has just tried the leftovers, and left the files of
        // defused reads to the sweep: the first sweep comes at once only for
        // those.
        let first = match self.state.defused_clients().is_empty() {
            true => SWEEP_EVERY,
            false => Duration::ZERO,
        };
        let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + first, SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let mut round = Round::default();
                    for command in batch.drain(..) {
                        self.plan(command, &mut round).await;
                    }
                    self.execute(&mut round).await;
                }
                _ = sweep.tick(), if !self.state.defused_clients().is_empty() || !self.leftovers.is_empty() || !self.unwritten.is_empty() || self.fences.owed => {
                    if self.fences.owed {
                        self.fence().await;
                    }
                    self.sweep().await;
                    self.sweep_leftovers().await;
                    if !self.unwritten.is_empty() {
                        self.rewrite_unwritten(true).await;
                    }
                }
            }
            if self.ended {
                return Err("ended by the test hook PXECONF_TEST_END_TASK=writer".into());
            }
            self.metrics
                .pending_configs
                .get_or_create(&self.depot)
                .set(self.state.len() as i64);
            if let Some(epoch) = self.state.take_epoch_change() {
                self.epoch.send_replace(epoch);
            }
        }
        debug!("writer stopped");
        Ok(())
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
                epoch,
                reply,
            } => {
                self.make_room(round, &self.state.client_keys(&fqdn)).await;
                match self.state.plan_remove(fqdn, revision, epoch) {
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
            Command::Position { reply } => {
                self.execute(round).await;
                let epoch = self.state.epoch().clone();
                let highest = self.state.highest(&epoch);
                let _ = reply.send((epoch, highest));
            }
            Command::Retain { epoch, keep, reply } => {
                self.execute(round).await;
                let _ = reply.send(self.retain(epoch, &keep).await);
            }
            Command::Watch(event) => self.watch(event, round).await,
        }
    }

    async fn watch(&mut self, event: WatchEvent, round: &mut Round<Reply>) {
        match event {
            WatchEvent::Moved(name) => self.state.moved(&name),
            WatchEvent::Deleted(name) => self.state.deleted(&name),
            WatchEvent::Fence(n) if self.fences.ours(n) => self.state.fence_passed(n),
            WatchEvent::Fence(n) => debug!(n, "a fence this run did not make"),
            WatchEvent::Read(name) => self.plan_read(name, round).await,
            WatchEvent::Overflow => {
                self.execute(round).await;
                warn!("inotify queue overflowed; rechecking held PXE configs for reads");
                self.state.forget_moves();
                self.recheck_reads().await;
            }
            WatchEvent::Started => {
                self.execute(round).await;
                self.recheck_reads().await;
            }
            WatchEvent::Rewatched => {
                self.execute(round).await;
                // Renames and deletes in the old directory, or in the new
                // one before its watch, never come back.
                self.state.forget_moves();
                self.rewrite_all().await;
            }
            WatchEvent::TestEnd { panic } => {
                assert!(
                    !panic,
                    "the writer panicked: test hook PXECONF_TEST_END_TASK=writer-panic"
                );
                self.ended = true;
            }
        }
    }

    async fn plan_read(&mut self, name: String, round: &mut Round<Reply>) {
        let Some(fqdn) = self.state.owner(&name).cloned() else {
            return self.read_removed(&name).await;
        };
        if self.state.is_replaced(&name) {
            return self.read_replaced(&name).await;
        }
        if round.touches(&self.state.client_keys(&fqdn)) {
            self.execute(round).await;
            if self.state.owner(&name) != Some(&fqdn) {
                // The round removed it (the read came first) or read it.
                return self.read_removed(&name).await;
            }
            if self.state.is_replaced(&name) {
                return self.read_replaced(&name).await;
            }
        }
        round.push(self.state.plan_read(fqdn), Reply::None);
    }

    /// A read of a name whose rename of ours is not seen yet: the client
    /// read the config that rename replaced, which is reported (the one
    /// written since stays held); the configserver judges whether it booted
    /// the action as set now. A client booting a version it read just
    /// before a new one landed (a property changed, the depot's check pushed
    /// again) has consumed its action as much as with the newest: dropping
    /// that read would boot the action a second time.
    async fn read_replaced(&mut self, name: &str) {
        match self.state.read_replaced(name, std::time::SystemTime::now()) {
            ReplacedRead::Read(read) => {
                info!(fqdn = %read.fqdn, product = %read.product_id, revision = read.revision, file = %name, "PXE config read just before a newer version replaced it");
                self.report_read(read).await;
            }
            ReplacedRead::Reported => {
                debug!(file = %name, "read of a replaced PXE config version reported already")
            }
            // The rename replaced none of the client's configs: what was
            // there was a removed config's, if anything.
            ReplacedRead::Nothing => self.read_removed_config(name).await,
        }
    }

    /// A read of a file no config holds: if it was a removed config's and
    /// the delete was not seen yet, the client read that config before it
    /// went — a read like any other (journaled, then handed on), which the
    /// configserver accepts from the depot the config was removed from.
    async fn read_removed(&mut self, name: &str) {
        if self.state.is_replaced(name) {
            // A rename onto the name is not seen yet: the client read the
            // version that rename replaced, if it replaced one.
            return self.read_replaced(name).await;
        }
        self.read_removed_config(name).await;
    }

    /// [`Self::read_removed`] once no rename onto `name` is pending or the
    /// oldest replaced nothing of the client's.
    async fn read_removed_config(&mut self, name: &str) {
        let Some(read) = self.state.read_removed(name, std::time::SystemTime::now()) else {
            return;
        };
        info!(fqdn = %read.fqdn, product = %read.product_id, revision = read.revision, file = %name, "PXE config read just before its removal");
        self.report_read(read).await;
    }

    /// Journals a read the writer's rounds do not carry, then hands it on.
    async fn report_read(&mut self, read: ReadEvent) {
        self.metrics.tftp_reads.get_or_create(&self.depot).inc();
        self.journal(Arc::new(Batch {
            reads: vec![read.clone()],
            ..Batch::default()
        }))
        .await;
        if self.reads.send(read).await.is_err() {
            warn!("read events have no receiver any more; the read stays in the journal");
        }
    }

    /// Executes the round if any of `keys` is already in it.
    async fn make_room(&mut self, round: &mut Round<Reply>, keys: &[String]) {
        if round.touches(keys) {
            self.execute(round).await;
        }
    }

    /// Drops configs of other epochs that a new store does not owe;
    /// returns how many are still held.
    async fn retain(&mut self, epoch: Arc<str>, keep: &HashSet<Fqdn>) -> usize {
        let drop = self.state.not_owed(&epoch, keep);
        let mut round = Round::default();
        for fqdn in &drop {
            if let Ok(planned) = self.state.plan_remove(fqdn.clone(), 0, epoch.clone()) {
                round.push(planned, Reply::None);
            }
        }
        if !drop.is_empty() {
            warn!(dropped = drop.len(), %epoch, "configs of another configserver database dropped: the new one does not owe them");
        }
        self.execute(&mut round).await;
        // A removal whose files stayed was undone: the config is still held.
        self.state.not_owed(&epoch, keep).len()
    }

    /// The PXE directory was recreated: every held config is written again.
    async fn rewrite_all(&mut self) {
        warn!(
            configs = self.state.len(),
            "PXE directory recreated; writing the held configs again"
        );
        self.unwritten = self.state.held_clients().into_iter().collect();
        self.rewrite_unwritten(false).await;
    }

    /// Writes the held configs of [`Self::unwritten`] again, with their
    /// content from the journal (read whole: a rewrite is rare); those that
    /// still cannot be written stay for the next sweep, logged when their
    /// number changes (a `retry` of the sweep's, silent while it does not).
    /// A retry first tries one of them: while that fails (a full or
    /// read-only directory) it goes no further — 100,000 configs would
    /// otherwise cost a read of the whole journal and 100,000 failed writes
    /// every two seconds of the outage.
    async fn rewrite_unwritten(&mut self, retry: bool) {
        if retry {
            // Removed or read since: nothing of theirs to write.
            let state = &self.state;
            self.unwritten.retain(|fqdn| state.holds(fqdn));
            let before = self.unwritten.len();
            if before == 0 {
                return;
            }
            if !self.rewrite_one().await {
                return;
            }
            // It was the last: the journal need not be read whole.
            if self.unwritten.is_empty() {
                info!(configs = before, dir = %self.dir.display(), "held configs written again at last");
                return;
            }
        }
        let contents = match self.journal.load().await {
            Ok(contents) => contents,
            Err(error) => {
                error!(%error, configs = self.unwritten.len(), "held configs are to be written again, but the journal cannot be read; trying again at the next sweep");
                return;
            }
        };
        let clients = std::mem::take(&mut self.unwritten);
        let mut round = Round::default();
        for record in contents.clients {
            if clients.contains(&record.fqdn)
                && let (Some(_), Some(content)) = (&record.held, record.content)
                && let Some(planned) = self.state.plan_rewrite(record.fqdn, content)
            {
                round.push(planned, Reply::None);
            }
        }
        self.execute(&mut round).await;
        match self.unwritten.len() {
            0 if retry => {
                info!(configs = clients.len(), dir = %self.dir.display(), "held configs written again at last")
            }
            0 => {}
            left if left != clients.len() || !retry => {
                error!(left, dir = %self.dir.display(), "held configs could not be written again; trying again at each sweep")
            }
            _ => {}
        }
    }

    /// Writes one config of [`Self::unwritten`] again, the one after the
    /// one tried last; false when it still cannot be written (or the
    /// journal cannot be read: the full pass logs that).
    async fn rewrite_one(&mut self) -> bool {
        let next = match &self.tried_last {
            Some(last) => self
                .unwritten
                .range::<Fqdn, _>((Excluded(last), Unbounded))
                .next(),
            None => None,
        };
        let Some(fqdn) = next.or_else(|| self.unwritten.first()).cloned() else {
            return true;
        };
        self.tried_last = Some(fqdn.clone());
        let content = match self.journal.held_content(fqdn.clone()).await {
            Ok(content) => content,
            Err(_) => return true,
        };
        self.unwritten.remove(&fqdn);
        let mut round = Round::default();
        if let Some(planned) = content.and_then(|c| self.state.plan_rewrite(fqdn.clone(), c)) {
            round.push(planned, Reply::None);
        }
        self.execute(&mut round).await;
        !self.unwritten.contains(&fqdn)
    }

    /// Retries deleting the files of defused reads.
    async fn sweep(&mut self) {
        let mut round = Round::default();
        for fqdn in self.state.defused_clients() {
            if let Some(planned) = self.state.plan_sweep(fqdn) {
                round.push(planned, Reply::None);
            }
        }
        self.execute(&mut round).await;
    }

    /// Retries deleting start-up's leftovers; a name a held config took
    /// meanwhile is that config's now and stays.
    async fn sweep_leftovers(&mut self) {
        let state = &self.state;
        self.leftovers.retain(|name| state.owner(name).is_none());
        if self.leftovers.is_empty() {
            return;
        }
        let names: Vec<String> = self.leftovers.iter().cloned().collect();
        let dir = self.dir.clone();
        let deleted = match tokio::task::spawn_blocking(move || {
            let mut deleted = Vec::new();
            for name in names {
                match files::delete_all(&dir, std::slice::from_ref(&name)) {
                    Ok(_) => deleted.push(name),
                    Err(error) => {
                        debug!(%error, "a stale file start-up could not remove still cannot be")
                    }
                }
            }
            deleted
        })
        .await
        {
            Ok(deleted) => deleted,
            Err(error) => {
                error!(%error, "removing stale files failed; trying again at the next sweep");
                Vec::new()
            }
        };
        if deleted.is_empty() {
            return;
        }
        deleted.iter().for_each(|name| {
            self.leftovers.remove(name);
        });
        info!(files = ?deleted, left = self.leftovers.len(), dir = %self.dir.display(), "stale files start-up could not remove are gone");
    }

    /// Reads may have been missed (the kernel dropped events, or the depot
    /// was down): a file read since it was written counts as read now.
    async fn recheck_reads(&mut self) {
        let mut names = self.state.file_names();
        // A held config not written yet has something else at its names (an
        // older version start-up could not write over, whose read start-up
        // reported as that version's): a read of that is not the held
        // config's.
        let unwritten = &self.unwritten;
        names.retain(|n| self.state.owner(n).is_none_or(|f| !unwritten.contains(f)));
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
            epoch: Arc::from("e1"),
        }
    }

    fn options(dir: &std::path::Path) -> WriterOptions {
        WriterOptions {
            pxe_dir: dir.to_path_buf(),
            io_threads: 1,
            depot_id: "depot1.example.org".into(),
            access: FileAccess::default(),
            leftovers: Vec::new(),
            unwritten: Vec::new(),
        }
    }

    /// A non-empty directory where a file is: neither a rename over it nor
    /// an unlink of it works (even for root).
    fn obstruct(path: &std::path::Path) {
        let _ = std::fs::remove_file(path);
        std::fs::create_dir(path).unwrap();
        std::fs::write(path.join("x"), "x").unwrap();
    }

    /// A writer in `dir` holding client 1's config, its rename seen; its
    /// reads, and the config's file name.
    async fn holding_client1(
        dir: &std::path::Path,
    ) -> (WriterHandle, mpsc::Receiver<ReadEvent>, String) {
        let (reads_tx, reads) = mpsc::channel(8);
        let writer = spawn_fresh(&dir.join("state"), options(dir), reads_tx).await;
        let name = writer.set(config(1)).await.unwrap().files[0].clone();
        writer
            .watch_event(WatchEvent::Moved(name.clone()))
            .await
            .unwrap();
        (writer, reads, name)
    }

    /// Removes client 1's config at `revision`; it was held.
    async fn remove_client1(writer: &WriterHandle, revision: u64) {
        let removed = writer.remove(config(1).fqdn, revision, Arc::from("e1"));
        assert!(removed.await.unwrap());
    }

    /// Client 2 takes `name` at revision 3 (its rename not seen yet).
    async fn client2_takes(writer: &WriterHandle, name: &str) {
        let other = Rendered {
            files: vec![name.to_owned()],
            revision: 3,
            ..config(2)
        };
        writer.set(other).await.unwrap();
    }

    /// Removes client 2's config at revision 4; it was held.
    async fn remove_client2(writer: &WriterHandle) {
        let removed = writer.remove(config(2).fqdn, 4, Arc::from("e1"));
        assert!(removed.await.unwrap());
    }

    /// Hands `events` to the writer as the watcher would, in order.
    async fn feed(writer: &WriterHandle, events: impl IntoIterator<Item = WatchEvent>) {
        for event in events {
            writer.watch_event(event).await.unwrap();
        }
    }

    async fn next(reads: &mut mpsc::Receiver<ReadEvent>) -> ReadEvent {
        tokio::time::timeout(Duration::from_secs(10), reads.recv())
            .await
            .expect("a read was lost")
            .unwrap()
    }

    #[tokio::test]
    async fn leftovers_go_once_they_can_unless_a_held_config_took_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let pxe = dir.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        let taken = config(1).files[0].clone();
        let (free, blocked) = ("01-02-00-00-00-00-09", "01-02-00-00-00-00-0a");
        let leftovers = [taken.as_str(), free, blocked];
        for name in leftovers {
            std::fs::write(pxe.join(name), "exit\n").unwrap();
        }
        // One of them cannot go yet (a non-empty directory at its name).
        obstruct(&pxe.join(blocked));
        let options = WriterOptions {
            leftovers: leftovers.map(String::from).to_vec(),
            ..options(&pxe)
        };
        let (reads_tx, _reads) = mpsc::channel(8);
        let writer = spawn_fresh(&dir.path().join("state"), options, reads_tx).await;
        // A held config takes one name before the first sweep.
        writer.set(config(1)).await.unwrap();
        let held = || std::fs::read_to_string(pxe.join(&taken)).unwrap();
        tokio::time::sleep(SWEEP_EVERY + Duration::from_millis(500)).await;
        assert_eq!(held(), "config\n");
        assert!(!pxe.join(free).exists());
        // The obstacle goes: the next sweep removes that one too.
        std::fs::remove_dir_all(pxe.join(blocked)).unwrap();
        std::fs::write(pxe.join(blocked), "exit\n").unwrap();
        tokio::time::sleep(SWEEP_EVERY + Duration::from_millis(500)).await;
        assert!(!pxe.join(blocked).exists());
        assert_eq!(held(), "config\n");
    }

    /// A removal while the PXE directory is away (moved, or a symlink's
    /// target moved) fails: it was answered done, and the directory came
    /// back with the config in it, bootable and its read ignored. Made
    /// again once the directory is back, it lands.
    #[tokio::test]
    async fn a_removal_while_the_directory_is_away_fails_and_lands_once_it_is_back() {
        for symlinked in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (real, away) = (dir.path().join("real"), dir.path().join("away"));
            std::fs::create_dir(&real).unwrap();
            let pxe = match symlinked {
                true => {
                    let link = dir.path().join("pxe");
                    std::os::unix::fs::symlink(&real, &link).unwrap();
                    link
                }
                false => real.clone(),
            };
            let (reads_tx, _reads) = mpsc::channel(8);
            let writer = spawn_fresh(&dir.path().join("state"), options(&pxe), reads_tx).await;
            let name = writer.set(config(1)).await.unwrap().files[0].clone();
            feed(&writer, [WatchEvent::Moved(name.clone())]).await;
            std::fs::rename(&real, &away).unwrap();
            let removed = writer.remove(config(1).fqdn, 2, Arc::from("e1")).await;
            assert!(removed.is_err(), "symlinked {symlinked}: {removed:?}");
            std::fs::rename(&away, &real).unwrap();
            feed(&writer, [WatchEvent::Rewatched]).await;
            assert!(pxe.join(&name).exists(), "still held");
            remove_client1(&writer, 2).await;
            assert!(!pxe.join(&name).exists());
        }
    }

    /// A read seen as the directory goes away is reported, its files kept
    /// to be deleted by the sweep once the directory is back (they were
    /// taken for gone, and came back bootable with it).
    #[tokio::test]
    async fn a_read_while_the_directory_is_away_has_its_files_deleted_once_it_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let (pxe, away) = (dir.path().join("pxe"), dir.path().join("away"));
        std::fs::create_dir(&pxe).unwrap();
        let (reads_tx, mut reads) = mpsc::channel(8);
        let writer = spawn_fresh(&dir.path().join("state"), options(&pxe), reads_tx).await;
        let name = writer.set(config(1)).await.unwrap().files[0].clone();
        feed(&writer, [WatchEvent::Moved(name.clone())]).await;
        std::fs::rename(&pxe, &away).unwrap();
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        let read = next(&mut reads).await;
        assert_eq!((read.fqdn, read.revision), (config(1).fqdn, 1));
        assert!(read.files_present, "kept for the sweep");
        std::fs::rename(&away, &pxe).unwrap();
        feed(&writer, [WatchEvent::Rewatched]).await;
        tokio::time::sleep(SWEEP_EVERY + Duration::from_millis(500)).await;
        assert!(!pxe.join(&name).exists());
    }

    #[tokio::test]
    async fn a_read_seen_before_the_delete_of_a_removal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        // The client reads as the removal goes: its read event comes after
        // the removal but before the removal's IN_DELETE.
        remove_client1(&writer, 2).await;
        assert!(!dir.path().join(&name).exists());
        feed(&writer, [0, 1].map(|_| WatchEvent::Read(name.clone()))).await;
        let read = next(&mut reads).await;
        assert_eq!((read.fqdn, read.revision), (config(1).fqdn, 1));
        feed(
            &writer,
            [WatchEvent::Deleted(name.clone()), WatchEvent::Read(name)],
        )
        .await;
        // The writer handled every event before it answers the listing.
        writer.list(None, 10, None).await.unwrap();
        assert!(reads.try_recv().is_err(), "one read, reported once");
    }

    #[tokio::test]
    async fn a_read_of_a_version_replaced_before_a_removal_is_not_the_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        // Revision 2 replaces 1 and is removed; the client's read of 1 comes
        // before revision 2's rename event and the removal's IN_DELETE.
        let second = Rendered {
            revision: 2,
            ..config(1)
        };
        writer.set(second).await.unwrap();
        remove_client1(&writer, 3).await;
        feed(
            &writer,
            [
                WatchEvent::Read(name.clone()),
                WatchEvent::Read(name.clone()),
                WatchEvent::Moved(name.clone()),
                WatchEvent::Deleted(name),
            ],
        )
        .await;
        assert_eq!(next(&mut reads).await.revision, 1, "the read of revision 1");
        writer.list(None, 10, None).await.unwrap();
        assert!(
            reads.try_recv().is_err(),
            "one read, reported once and never as the removed revision 2's"
        );
    }

    #[tokio::test]
    async fn a_read_seen_before_a_newer_versions_rename_is_reported_and_the_newer_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        // Revision 2 lands while the client reads revision 1: its read event
        // comes before the rename's.
        let second = Rendered {
            revision: 2,
            content: Arc::from("second\n"),
            ..config(1)
        };
        writer.set(second).await.unwrap();
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        let read = next(&mut reads).await;
        assert_eq!((read.fqdn, read.revision), (config(1).fqdn, 1));
        // Revision 2 stays held and on disk for the configserver to judge.
        feed(&writer, [WatchEvent::Moved(name.clone())]).await;
        let page = writer.list(None, 10, None).await.unwrap();
        assert_eq!(
            page.configs.iter().map(|c| c.revision).collect::<Vec<_>>(),
            [2]
        );
        let on_disk = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        assert_eq!(on_disk, "second\n");
        assert!(reads.try_recv().is_err(), "one read");
    }

    /// Our own watch on the PXE directory, for the fences the writer makes.
    fn fence_watch(dir: &std::path::Path) -> inotify::Inotify {
        let inotify = inotify::Inotify::init().unwrap();
        inotify
            .watches()
            .add(dir, inotify::WatchMask::DELETE)
            .unwrap();
        inotify
    }

    /// The one fence the writer made since the last look (it has finished
    /// its rounds once it answers a listing).
    async fn made_fence(writer: &WriterHandle, watch: &mut inotify::Inotify) -> u64 {
        writer.list(None, 10, None).await.unwrap();
        let mut buffer = [0u8; 4096];
        let fences: Vec<u64> = match watch.read_events(&mut buffer) {
            Ok(events) => events
                .filter_map(|e| files::fence_of(e.name?.to_str()?))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(fences.len(), 1, "one fence after the round: {fences:?}");
        fences[0]
    }

    /// A file of someone else's at `name` is read: no read of ours is
    /// reported.
    async fn a_foreign_read_is_none_of_ours(
        writer: &WriterHandle,
        reads: &mut mpsc::Receiver<ReadEvent>,
        dir: &std::path::Path,
        name: &str,
    ) {
        std::fs::write(dir.join(name), "someone else's\n").unwrap();
        feed(writer, [WatchEvent::Read(name.to_owned())]).await;
        // The writer handled every event before it answers the listing.
        writer.list(None, 10, None).await.unwrap();
        assert!(
            reads.try_recv().is_err(),
            "a file put there after a delete that found none is no read of ours"
        );
    }

    /// A writer holding client 1's config, its file gone unseen (no event
    /// fed), then removed; its reads, the file name and the fence made.
    async fn removed_unseen(
        dir: &std::path::Path,
    ) -> (WriterHandle, mpsc::Receiver<ReadEvent>, String, u64) {
        let (writer, reads, name) = holding_client1(dir).await;
        let mut watch = fence_watch(dir);
        std::fs::remove_file(dir.join(&name)).unwrap();
        remove_client1(&writer, 2).await;
        let fence = made_fence(&writer, &mut watch).await;
        (writer, reads, name, fence)
    }

    /// Client 2 takes `name` and is removed (its file deleted) before
    /// `fence` is handled; then a read of the name is client 2's.
    async fn client2_read_after(
        writer: &WriterHandle,
        reads: &mut mpsc::Receiver<ReadEvent>,
        name: &str,
        fence: u64,
    ) {
        client2_takes(writer, name).await;
        feed(writer, [WatchEvent::Moved(name.to_owned())]).await;
        remove_client2(writer).await;
        let events = [WatchEvent::Fence(fence), WatchEvent::Read(name.to_owned())];
        feed(writer, events).await;
        let read = next(reads).await;
        assert_eq!(read.fqdn, config(2).fqdn, "client 2's delete still awaited");
    }

    #[tokio::test]
    async fn a_removal_whose_file_was_gone_awaits_its_fence_only() {
        let dir = tempfile::tempdir().unwrap();
        // Gone before the removal (as a held config's never written again
        // after its directory was recreated): no IN_DELETE of ours comes.
        let (writer, mut reads, name, fence) = removed_unseen(dir.path()).await;
        // A fence of an earlier run (or a file named like one) passes nothing.
        feed(&writer, [WatchEvent::Fence(fence + 1_000_000)]).await;
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        assert_eq!(next(&mut reads).await.fqdn, config(1).fqdn, "still awaited");
        // Once more, and the fence comes back first this time.
        let (writer, mut reads, name, fence) = removed_unseen(&dir.path().join("again")).await;
        feed(&writer, [WatchEvent::Fence(fence)]).await;
        a_foreign_read_is_none_of_ours(&writer, &mut reads, &dir.path().join("again"), &name).await;
    }

    #[tokio::test]
    async fn a_read_before_someone_elses_delete_of_a_removed_config_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // The client read the file, then someone else deleted it; both
        // events are still queued when the removal finds no file.
        let (writer, mut reads, name, fence) = removed_unseen(dir.path()).await;
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        let read = next(&mut reads).await;
        assert_eq!((read.fqdn, read.revision), (config(1).fqdn, 1));
        // The rest of the queue: their delete, then the fence, which must
        // not count client 2's delete of the name as client 1's.
        feed(&writer, [WatchEvent::Deleted(name.clone())]).await;
        client2_read_after(&writer, &mut reads, &name, fence).await;
    }

    #[tokio::test]
    async fn after_a_reported_read_the_fence_still_counts_its_delete() {
        let dir = tempfile::tempdir().unwrap();
        // Gone unseen (as while the depot was down); a read of the name
        // before the fence is taken for client 1's.
        let (writer, mut reads, name, fence) = removed_unseen(dir.path()).await;
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        assert_eq!(next(&mut reads).await.fqdn, config(1).fqdn);
        client2_read_after(&writer, &mut reads, &name, fence).await;
    }

    #[tokio::test]
    async fn someone_elses_delete_and_the_fence_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name, fence) = removed_unseen(dir.path()).await;
        // Their IN_DELETE sees client 1's delete; client 2 takes the name
        // and is removed before the fence is handled.
        feed(&writer, [WatchEvent::Deleted(name.clone())]).await;
        client2_read_after(&writer, &mut reads, &name, fence).await;
    }

    #[tokio::test]
    async fn a_released_name_whose_file_was_gone_awaits_its_fence_only() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        let mut watch = fence_watch(dir.path());
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        // Revision 2 has another MAC: its set releases (deletes) the name.
        let second = Rendered {
            revision: 2,
            files: vec!["01-02-00-00-00-00-77".into()],
            ..config(1)
        };
        writer.set(second).await.unwrap();
        feed(&writer, [WatchEvent::Moved("01-02-00-00-00-00-77".into())]).await;
        let fence = made_fence(&writer, &mut watch).await;
        feed(&writer, [WatchEvent::Fence(fence)]).await;
        a_foreign_read_is_none_of_ours(&writer, &mut reads, dir.path(), &name).await;
    }

    #[tokio::test]
    async fn a_removed_configs_read_is_reported_when_another_client_took_the_name_since() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        // Client 1 is removed and client 2 takes its file name; client 1's
        // read comes before the removal's IN_DELETE and client 2's IN_CREATE.
        remove_client1(&writer, 2).await;
        client2_takes(&writer, &name).await;
        feed(
            &writer,
            [
                WatchEvent::Read(name.clone()),
                WatchEvent::Deleted(name.clone()),
                WatchEvent::Moved(name),
            ],
        )
        .await;
        let read = next(&mut reads).await;
        assert_eq!((read.fqdn, read.revision), (config(1).fqdn, 1));
        let page = writer.list(None, 10, None).await.unwrap();
        assert_eq!(
            page.configs[0].fqdn,
            config(2).fqdn,
            "client 2's stays held"
        );
    }

    #[tokio::test]
    async fn reads_of_a_name_two_removed_clients_held_in_turn_are_each_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        // Client 1 is removed, client 2 takes its file name and is removed
        // too, all before the writer sees any of their events: a read
        // before client 1's IN_DELETE is client 1's, one after client 2's
        // rename and before its IN_DELETE client 2's.
        remove_client1(&writer, 2).await;
        client2_takes(&writer, &name).await;
        remove_client2(&writer).await;
        feed(
            &writer,
            [
                WatchEvent::Read(name.clone()),
                WatchEvent::Deleted(name.clone()),
                WatchEvent::Moved(name.clone()),
                WatchEvent::Read(name.clone()),
                WatchEvent::Deleted(name),
            ],
        )
        .await;
        let first = next(&mut reads).await;
        assert_eq!((first.fqdn, first.revision), (config(1).fqdn, 1));
        let second = next(&mut reads).await;
        assert_eq!((second.fqdn, second.revision), (config(2).fqdn, 3));
    }

    /// Before the IN_DELETE of client 1's read config (ours, or someone
    /// else's) is handled, client 1 gets revision 2 at the same name and is
    /// removed; revision 2 is read before its delete: that read is reported.
    async fn revision_2_read_after_an_unseen_delete(
        writer: &WriterHandle,
        reads: &mut mpsc::Receiver<ReadEvent>,
        name: String,
    ) {
        let second = Rendered {
            revision: 2,
            ..config(1)
        };
        writer.set(second).await.unwrap();
        remove_client1(writer, 3).await;
        let events = [
            WatchEvent::Deleted(name.clone()),
            WatchEvent::Moved(name.clone()),
            WatchEvent::Read(name.clone()),
            WatchEvent::Deleted(name),
        ];
        feed(writer, events).await;
        let read = next(reads).await;
        assert_eq!((read.fqdn, read.revision), (config(1).fqdn, 2));
    }

    #[tokio::test]
    async fn a_reads_delete_is_not_taken_for_a_later_removals() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        assert_eq!(next(&mut reads).await.revision, 1);
        revision_2_read_after_an_unseen_delete(&writer, &mut reads, name).await;
    }

    #[tokio::test]
    async fn a_reads_delete_that_found_no_file_awaits_someone_elses() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reads, name) = holding_client1(dir.path()).await;
        // Someone else deleted the file after the client read it; their
        // IN_DELETE is not handled before client 1 is set again at the name
        // and removed.
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        feed(&writer, [WatchEvent::Read(name.clone())]).await;
        assert_eq!(next(&mut reads).await.revision, 1);
        revision_2_read_after_an_unseen_delete(&writer, &mut reads, name).await;
    }

    #[tokio::test]
    async fn a_full_reads_channel_holds_the_writer_and_loses_no_read() {
        let dir = tempfile::tempdir().unwrap();
        let (reads_tx, mut reads) = mpsc::channel(1);
        let writer = spawn_fresh(&dir.path().join("state"), options(dir.path()), reads_tx).await;
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
            seen.push(next(&mut reads).await.fqdn.to_string());
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
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state"], "only the journal is left");
    }

    #[tokio::test]
    async fn a_failed_write_is_undone_in_the_state_and_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let pxe = dir.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        let (reads_tx, _reads) = mpsc::channel(16);
        let writer = spawn_fresh(&state_dir, options(&pxe), reads_tx).await;
        writer.set(config(1)).await.unwrap();
        let mut newer = config(1);
        newer.revision = 2;
        newer.content = Arc::from("newer\n");
        obstruct(&pxe.join(&newer.files[0]));
        let failed = writer.set(newer.clone()).await;
        assert!(matches!(failed, Err(WriterError::Io { .. })), "{failed:?}");
        let page = writer.list(None, 10, None).await.unwrap();
        assert_eq!(page.configs[0].revision, 1, "the state is as before");
        drop(writer);
        // The journal says the same: revision 2 was never held. (The writer
        // task lets the journal go once it sees its handles gone.)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let journal = loop {
            match Journal::open(&state_dir).await {
                Ok(journal) => break journal,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let contents = journal.load().await.unwrap();
        let held = contents.clients[0].held.as_ref().unwrap();
        let content = contents.clients[0].content.as_deref();
        assert_eq!((held.revision, content), (1, Some("config\n")));
    }

    #[tokio::test]
    async fn a_write_failing_at_its_second_name_leaves_its_first_unbootable() {
        let dir = tempfile::tempdir().unwrap();
        let pxe = dir.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        let (reads_tx, mut reads) = mpsc::channel(16);
        let writer = spawn_fresh(&dir.path().join("state"), options(&pxe), reads_tx).await;
        writer.set(config(1)).await.unwrap();
        let mut newer = config(1);
        newer.revision = 2;
        newer.content = Arc::from("newer\n");
        newer
            .files
            .push("7c9e6679-7425-40de-944b-e07fc1f90ae7".into());
        obstruct(&pxe.join(&newer.files[1]));
        let failed = writer.set(newer.clone()).await;
        assert!(matches!(failed, Err(WriterError::Io { .. })), "{failed:?}");
        let page = writer.list(None, 10, None).await.unwrap();
        assert_eq!(page.configs[0].revision, 1, "the state is as before");
        // The first name was renamed before the second failed: revision 2,
        // which nobody holds, must not be there to boot.
        let first = std::fs::read_to_string(pxe.join(&newer.files[0]));
        assert!(
            !first.as_deref().unwrap_or_default().contains("newer"),
            "{first:?}"
        );
        // Once the obstacle is gone the retry lands whole.
        std::fs::remove_dir_all(pxe.join(&newer.files[1])).unwrap();
        writer.set(newer.clone()).await.unwrap();
        for name in &newer.files {
            let text = std::fs::read_to_string(pxe.join(name)).unwrap();
            assert!(text.contains("newer"), "{name}: {text}");
        }
        assert!(reads.try_recv().is_err(), "no read was seen");
    }

    /// Sets `n` configs while the journal refuses every client row: none
    /// is answered and no file is visible; once the journal takes rows
    /// again, all are answered, on disk and journaled.
    async fn a_refused_round_waits_invisible(n: u32, io_threads: usize) {
        let dir = tempfile::tempdir().unwrap();
        let pxe = dir.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        journal.with_conn(|c| {
            c.execute_batch(
                "CREATE TABLE refuse (x);
                 INSERT INTO refuse VALUES (1);
                 CREATE TRIGGER refuse BEFORE INSERT ON client_log
                 WHEN EXISTS (SELECT 1 FROM refuse)
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
        });
        let (reads_tx, _reads) = mpsc::channel(16);
        let options = WriterOptions {
            io_threads,
            ..options(&pxe)
        };
        let (writer, task) = start(
            options,
            journal.clone(),
            State::default(),
            reads_tx,
            Metrics::new(),
        );
        tokio::spawn(task);
        let mut sets = tokio::task::JoinSet::new();
        for i in 0..n {
            let writer = writer.clone();
            sets.spawn(async move { writer.set(config(i)).await });
        }
        // The writer retries (after 100 ms, then 200 ms): still nothing.
        let waited = tokio::time::timeout(Duration::from_millis(400), sets.join_next()).await;
        assert!(
            waited.is_err(),
            "a set was answered before its round was journaled"
        );
        // Temporary files may wait; no config name may.
        let visible: Vec<_> = std::fs::read_dir(&pxe)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with(files::TMP_PREFIX))
            .collect();
        assert!(visible.is_empty(), "visible before journaled: {visible:?}");
        journal.with_conn(|c| c.execute("DELETE FROM refuse", []));
        while let Some(set) = sets.join_next().await {
            set.unwrap().unwrap();
        }
        for i in 0..n {
            let name = &config(i).files[0];
            assert_eq!(std::fs::read_to_string(pxe.join(name)).unwrap(), "config\n");
        }
        let left = std::fs::read_dir(&pxe).unwrap().count();
        assert_eq!(left, n as usize, "no temporary file is left");
        assert_eq!(journal.load().await.unwrap().clients.len(), n as usize);
    }

    #[tokio::test]
    async fn a_small_round_the_journal_refuses_waits_invisible_and_lands_later() {
        a_refused_round_waits_invisible(3, 4).await;
    }

    #[tokio::test]
    async fn a_large_round_the_journal_refuses_waits_invisible_and_lands_later() {
        // More than one thread's round: the files are staged on several.
        a_refused_round_waits_invisible(100, 4).await;
    }

    #[tokio::test]
    async fn a_read_that_cannot_be_deleted_is_reported_with_its_files_and_swept_later() {
        let dir = tempfile::tempdir().unwrap();
        let (reads_tx, mut reads) = mpsc::channel(16);
        let writer = spawn_fresh(&dir.path().join("state"), options(dir.path()), reads_tx).await;
        let outcome = writer.set(config(1)).await.unwrap();
        let name = outcome.files[0].clone();
        writer
            .watch_event(WatchEvent::Moved(name.clone()))
            .await
            .unwrap();
        obstruct(&dir.path().join(&name));
        writer
            .watch_event(WatchEvent::Read(name.clone()))
            .await
            .unwrap();
        let read = next(&mut reads).await;
        assert!(read.files_present, "{read:?}");
        let page = writer.list(None, 10, None).await.unwrap();
        assert_eq!(
            page.configs[0].state,
            super::super::messages::HeldState::ReadFilePresent
        );
        // A second read of it is no read: nothing is held.
        writer
            .watch_event(WatchEvent::Read(name.clone()))
            .await
            .unwrap();
        // The obstacle goes; the sweep deletes and reports the files gone.
        std::fs::remove_dir_all(dir.path().join(&name)).unwrap();
        std::fs::write(dir.path().join(&name), "local boot\n").unwrap();
        let again = next(&mut reads).await;
        assert_eq!((again.revision, again.files_present), (1, false));
        assert!(!dir.path().join(&name).exists());
        assert_eq!(writer.list(None, 10, None).await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn a_read_whose_deletes_failed_part_way_leaves_a_later_removal_its_read() {
        let dir = tempfile::tempdir().unwrap();
        let (reads_tx, mut reads) = mpsc::channel(16);
        let writer = spawn_fresh(&dir.path().join("state"), options(dir.path()), reads_tx).await;
        let (name, stuck) = ("01-02-00-00-00-00-01", "01-02-00-00-00-00-02");
        let two = Rendered {
            files: vec![name.to_owned(), stuck.to_owned()],
            ..config(1)
        };
        writer.set(two).await.unwrap();
        feed(
            &writer,
            [name, stuck].map(|n| WatchEvent::Moved(n.to_owned())),
        )
        .await;
        // The read deletes the first name, not the second.
        obstruct(&dir.path().join(stuck));
        feed(&writer, [WatchEvent::Read(name.to_owned())]).await;
        assert!(next(&mut reads).await.files_present);
        // Before that delete's IN_DELETE is handled, client 2 takes the
        // name and is removed; it is read before its delete.
        client2_takes(&writer, name).await;
        remove_client2(&writer).await;
        let events = [
            WatchEvent::Deleted(name.to_owned()),
            WatchEvent::Moved(name.to_owned()),
            WatchEvent::Read(name.to_owned()),
            WatchEvent::Deleted(name.to_owned()),
        ];
        feed(&writer, events).await;
        let read = next(&mut reads).await;
        assert_eq!((read.fqdn, read.revision), (config(2).fqdn, 3));
    }

    /// The PXE directory recreated unwritable for a moment (root made it;
    /// the depot's user gets it a moment later): the held config the
    /// rewrite could not write is written at a sweep once it can be. Before,
    /// it stayed held — listed, a retried push answered as written — with
    /// nothing on disk until a restart.
    #[tokio::test]
    async fn a_rewrite_that_fails_when_the_directory_comes_back_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let pxe = dir.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        let (reads_tx, _reads) = mpsc::channel(8);
        let writer = spawn_fresh(&dir.path().join("state"), options(&pxe), reads_tx).await;
        let name = writer.set(config(1)).await.unwrap().files[0].clone();
        std::fs::remove_dir_all(&pxe).unwrap();
        std::fs::create_dir(&pxe).unwrap();
        obstruct(&pxe.join(&name));
        writer.watch_event(WatchEvent::Rewatched).await.unwrap();
        writer.list(None, 10, None).await.unwrap();
        assert!(pxe.join(&name).is_dir(), "not written while it cannot be");
        std::fs::remove_dir_all(pxe.join(&name)).unwrap();
        let path = pxe.join(&name);
        for _ in 0..100 {
            if path.is_file() {
                break;
            }
            tokio::time::sleep(SWEEP_EVERY / 10).await;
        }
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("config\n"),
            "held, but not on disk"
        );
        assert_eq!(writer.list(None, 10, None).await.unwrap().total, 1);
    }

    /// A retry tries one config first and goes no further while it fails;
    /// one that can never be written (its name obstructed for good) does not
    /// stand in for the others: the next retry tries the next one, and once
    /// one is written the rest follow.
    #[tokio::test]
    async fn a_config_that_can_never_be_written_holds_up_no_other_retry() {
        let dir = tempfile::tempdir().unwrap();
        let pxe = dir.path().join("pxe");
        std::fs::create_dir(&pxe).unwrap();
        let (reads_tx, _reads) = mpsc::channel(8);
        let writer = spawn_fresh(&dir.path().join("state"), options(&pxe), reads_tx).await;
        let mut names = Vec::new();
        for n in 1..=3 {
            names.push(writer.set(config(n)).await.unwrap().files[0].clone());
        }
        std::fs::remove_dir_all(&pxe).unwrap();
        std::fs::create_dir(&pxe).unwrap();
        for name in &names {
            obstruct(&pxe.join(name));
        }
        writer.watch_event(WatchEvent::Rewatched).await.unwrap();
        writer.list(None, 10, None).await.unwrap();
        // Client 1, first in order, can never be written; 2 and 3 can now.
        for name in &names[1..] {
            std::fs::remove_dir_all(pxe.join(name)).unwrap();
        }
        for _ in 0..100 {
            if names[1..].iter().all(|n| pxe.join(n).is_file()) {
                break;
            }
            tokio::time::sleep(SWEEP_EVERY / 10).await;
        }
        for name in &names[1..] {
            assert!(pxe.join(name).is_file(), "{name} held, but not on disk");
        }
        assert!(pxe.join(&names[0]).is_dir());
    }
}
