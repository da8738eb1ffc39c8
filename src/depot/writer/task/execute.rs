//! Executing a round: commit its commands to the state, journal what
//! changed (durably, before any file becomes visible or goes), run the file
//! work, undo the commands whose file work failed (journaling that too),
//! defuse reads whose files could not be deleted, then answer and hand on
//! the reads.

use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, error, info, warn};

use super::super::error::{JournalError, WriterError};
use super::super::files;
use super::super::journal::{Batch, Journal, ReadKey};
use super::super::messages::{ReadEvent, WriteResult};
use super::super::ops::{Committed, FileOps, Op};
use super::super::placement::PAUSE;
use super::super::round::Round;
use super::super::state::journaled::Snapshot;
use super::{Reply, Writer};
use crate::depot::marker::{self, Format};
use crate::metrics::WriteLabels;

/// First and longest wait before the journal is tried again.
const JOURNAL_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Rounds of up to this many commands run in one go: in place (see
/// `placement`) or on one blocking thread.
const ONE_THREAD_ROUND: usize = 32;

/// Journals a round on the calling thread (the writer's, in place, or a
/// blocking one), after a step of compacting the log if it has grown:
/// between rounds, as an undo inside one reads rows it must find.
fn journal_round(journal: &Journal, batch: &Batch) -> Result<(), JournalError> {
    if let Err(error) = journal.compact_if_grown() {
        warn!(%error, "compacting the journal failed; it stays as it is");
    }
    journal.commit(batch)
}

/// A command of the round, committed or waiting for its file work.
enum Pending {
    /// Committed before the file work (journaled commands).
    Done {
        snapshot: Box<Snapshot>,
        committed: Committed,
        files: Vec<String>,
    },
    /// Committed after it (rewrites and sweeps: nothing to journal first),
    /// with the names its file work deletes.
    Later(Op, Vec<String>),
}

impl Writer {
    /// Runs the round: commits, journals, file work, undo, answers, reads.
    pub(super) async fn execute(&mut self, round: &mut Round<Reply>) {
        if round.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut batch = Batch::default();
        let epoch_before = self.state.epoch().clone();
        let highest_before = self.state.highest(&epoch_before);
        let mut entries = Vec::new();
        let mut ops = Vec::new();
        for (op, file_ops, reply) in round.take() {
            let pending = self.commit_first(op, &file_ops, now, &mut batch);
            entries.push((pending, reply));
            ops.push(file_ops);
        }
        let epoch = self.state.epoch().clone();
        if *epoch != *epoch_before {
            batch.epoch = Some(epoch.clone());
        }
        let highest = self.state.highest(&epoch);
        if batch.epoch.is_some() || highest != highest_before {
            batch.highest = vec![(epoch, highest)];
        }
        // A fence still owed (its last attempt failed) goes before this
        // round's deletes: their events must not come before it.
        if self.fences.owed && ops.iter().any(|o| !o.deletes.is_empty()) {
            self.fence().await;
        }
        let results = self.journal_and_files(Arc::new(batch), Arc::new(ops)).await;
        let mut after = Batch::default();
        let mut reads = Vec::new();
        for ((pending, reply), result) in entries.into_iter().zip(results) {
            if let Some(read) = self.finish(pending, reply, result, now, &mut after).await {
                reads.push(read);
            }
        }
        // Made before anything else can wait (the journal may): until it is
        // back, a file someone puts at such a name is taken for ours.
        if self.fences.owed {
            self.fence().await;
        }
        self.journal(Arc::new(after)).await;
        for read in reads {
            if self.reads.send(read).await.is_err() {
                warn!("read events have no receiver any more; the read stays in the journal");
            }
        }
    }

    /// Commits a journaled command at once (its file work is undone if it
    /// fails), noting what the journal must record; others wait.
    fn commit_first(
        &mut self,
        op: Op,
        file_ops: &FileOps,
        now: SystemTime,
        batch: &mut Batch,
    ) -> Pending {
        if !op.is_journaled() {
            return Pending::Later(op, file_ops.deletes.clone());
        }
        let fqdn = op.fqdn().clone();
        let snapshot = Box::new(self.state.snapshot(&op));
        let content = match &op {
            Op::Set { config, .. } => Some(config.content.clone()),
            _ => None,
        };
        let committed = self.state.commit(op, Ok(()), now);
        batch.clients.push(self.state.record(&fqdn, content));
        if let Committed::Read(Some(read)) = &committed {
            batch.reads.push(read.clone());
        }
        Pending::Done {
            snapshot,
            committed,
            files: file_ops.deletes.clone(),
        }
    }

    /// The file work of one command is done: answer it, or undo it; a read
    /// whose files stayed is defused. Returns the read to hand on.
    async fn finish(
        &mut self,
        pending: Pending,
        reply: Reply,
        result: files::Published,
        now: SystemTime,
        after: &mut Batch,
    ) -> Option<ReadEvent> {
        match pending {
            Pending::Later(op, deletes) => {
                let fqdn = op.fqdn().clone();
                // A sweep's deletes (or some of them, if it failed) are
                // awaited like a read's.
                match &result {
                    Ok(gone) => self.state.awaits_deletes(&deletes, gone, self.fences.next),
                    Err(error) => self.await_unknown(&deletes, error),
                }
                self.fences.owed |= matches!(&result, Ok(gone) if !gone.is_empty());
                if let Err(error) = &result {
                    if matches!(op, Op::Rewrite { .. }) {
                        // Counted and logged by the rewrite; tried again.
                        debug!(%fqdn, %error, "PXE config files not written again");
                        self.unwritten.insert(fqdn.clone());
                    } else {
                        warn!(%fqdn, %error, "PXE config files not deleted yet");
                    }
                }
                match self.state.commit(op, result.map(|_| ()), now) {
                    Committed::Repeat(Some(read)) => {
                        info!(%fqdn, revision = read.revision, "files of a read PXE config deleted at last");
                        after.swept.push(ReadKey::of(&read));
                        Some(read)
                    }
                    _ => None,
                }
            }
            Pending::Done {
                snapshot,
                committed,
                files,
            } => match (committed, result) {
                (Committed::Read(Some(read)), Err(error)) => {
                    // Those it may have deleted are awaited.
                    self.await_unknown(&files, &error);
                    let format = snapshot.held_format().unwrap_or(Format::Pxelinux);
                    Some(self.defuse(read, format, files, &error, after).await)
                }
                (Committed::Read(read), Ok(gone)) => {
                    // Its deletes' events (or someone else's, where ours
                    // found no file) are not of a later removal's.
                    self.state.awaits_deletes(&files, &gone, self.fences.next);
                    self.fences.owed |= !gone.is_empty();
                    if let Some(read) = &read {
                        self.metrics.tftp_reads.get_or_create(&self.depot).inc();
                        info!(fqdn = %read.fqdn, product = %read.product_id, revision = read.revision, "PXE config read by the client");
                    }
                    read
                }
                (committed, Ok(gone)) => {
                    // A delete that found no file brings no IN_DELETE: a
                    // removal's or a release's is awaited no more.
                    let awaited = match committed {
                        Committed::Set(Ok(_)) => Some(true),
                        Committed::Remove(Ok(true)) => Some(false),
                        _ => None,
                    };
                    if let Some(release) = awaited {
                        for name in &gone {
                            self.state.found_gone(name, release, self.fences.next);
                            self.fences.owed = true;
                        }
                    }
                    if matches!(committed, Committed::Set(Ok(_))) {
                        // Its files are written now, whatever a rewrite left.
                        self.unwritten.remove(snapshot.fqdn());
                    }
                    self.answered(&committed);
                    reply.answer(committed);
                    None
                }
                (committed, Err(error)) => {
                    self.undo(*snapshot, &committed, &error, after);
                    // Some of its deletes may have been made: awaited as
                    // above (the undone state awaits none of them).
                    self.await_unknown(&files, &error);
                    reply.answer(match committed {
                        Committed::Set(_) => Committed::Set(Err(error)),
                        Committed::Remove(_) => Committed::Remove(Err(error)),
                        other => other,
                    });
                    None
                }
            },
        }
    }

    /// The deletes of `deletes` that file work failing with `error` may
    /// have made ([`files::deletes_made`]) are awaited until an `IN_DELETE`
    /// of the name or the next fence (each may have found no file).
    fn await_unknown(&mut self, deletes: &[String], error: &WriterError) {
        let made = files::deletes_made(&self.dir, deletes, error);
        self.state.awaits_deletes(made, made, self.fences.next);
        self.fences.owed |= !made.is_empty();
    }

    /// Makes the fence owed (see `files::fence`); tried again at the next
    /// round or sweep if it cannot be made.
    pub(super) async fn fence(&mut self) {
        let n = self.fences.next;
        // Deletes that find no file from now on wait for a later fence.
        self.fences.next += 1;
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || files::fence(&dir, n)).await {
            Ok(Ok(())) => self.fences.owed = false,
            Ok(Err(error)) => {
                warn!(%error, "no fence could be made in the PXE directory; deletes that found no file stay awaited until one can")
            }
            Err(error) => warn!(%error, "making a fence failed; tried again later"),
        }
    }

    /// Logs and counts a command that went through.
    fn answered(&self, committed: &Committed) {
        match committed {
            Committed::Set(Ok(outcome)) => {
                self.count_write(WriteResult::Ok);
                debug!(revision = outcome.revision, files = ?outcome.files, "PXE config written");
            }
            Committed::Remove(Ok(removed)) => debug!(removed, "PXE config removed"),
            _ => {}
        }
    }

    /// The file work of a committed set or removal failed: the state goes
    /// back to what it was (a failed removal keeps every file, so a retry
    /// deletes the rest), and so does the journal.
    fn undo(
        &mut self,
        snapshot: Snapshot,
        committed: &Committed,
        error: &WriterError,
        after: &mut Batch,
    ) {
        let fqdn = snapshot.fqdn().clone();
        self.state.rollback(snapshot);
        // The journal still has the old config's content (compaction waits
        // for the next round): the record names it by revision and time.
        after.clients.push(self.state.record(&fqdn, None));
        match committed {
            Committed::Set(_) => {
                self.count_write(WriteResult::IoError);
                warn!(%fqdn, %error, "PXE config not written");
            }
            _ => warn!(%fqdn, %error, "PXE config not removed"),
        }
    }

    /// A read whose files could not all be deleted is still a read (the
    /// client is booting its action): the files still there are overwritten
    /// with a local-boot config and deleted later.
    async fn defuse(
        &mut self,
        mut read: ReadEvent,
        format: Format,
        files: Vec<String>,
        error: &WriterError,
        after: &mut Batch,
    ) -> ReadEvent {
        error!(fqdn = %read.fqdn, %error, "read PXE config could not be deleted; defusing it with a local-boot config and retrying the delete");
        self.metrics.tftp_reads.get_or_create(&self.depot).inc();
        let dir = self.dir.clone();
        let local = marker::local_boot(format, &read.fqdn, read.revision);
        let present = tokio::task::spawn_blocking(move || files::defuse(&dir, &files, &local))
            .await
            .unwrap_or_default();
        read.files_present = !present.is_empty();
        if read.files_present {
            after.defused.push((ReadKey::of(&read), present.clone()));
            self.state.defuse(&read, present);
        }
        read
    }

    /// Journals the round and does its file work: the temporary files may
    /// be written before the journal has the round (nothing is visible
    /// yet), the renames and deletions only after. One result per command.
    ///
    /// A small round (a push on an idle depot, or `direct` load) runs in
    /// one go, journal included: in place on the writer's thread while such
    /// rounds are quick and need no fsync (see `placement`), else on one
    /// blocking thread (one hand-off there and one back). A large one
    /// spreads its files over `io_threads` threads while another journals
    /// it.
    async fn journal_and_files(
        &mut self,
        batch: Arc<Batch>,
        ops: Arc<Vec<FileOps>>,
    ) -> Vec<files::Published> {
        let (dir, access) = (self.dir.clone(), self.access);
        if ops.len() <= ONE_THREAD_ROUND || self.io_threads == 1 {
            let journal = self.journal.clone();
            let (work, b) = (ops.clone(), batch.clone());
            let workers = tokio::runtime::Handle::try_current()
                .map_or(1, |runtime| runtime.metrics().num_workers());
            let in_place = ops.len() <= ONE_THREAD_ROUND
                && self.placement.in_place(Instant::now(), workers)
                // An fsync (a read, a removal) or compacting the journal
                // takes longer than a round's file work; so may waiting for
                // another user of the journal (an acknowledgement's commit).
                && !batch.needs_fsync()
                && self.journal.free_for_a_quick_round();
            let work = move || {
                // Only files without a name are made relative to it.
                let handle = (work.iter().any(|o| o.new_names))
                    .then(|| files::round_dir(&dir))
                    .flatten();
                let at = handle.as_ref().map(|h| h.as_fd());
                let staged: Vec<_> = (work.iter().enumerate())
                    .map(|(i, o)| files::stage_at(&dir, at, access, o, i))
                    .collect();
                match journal_round(&journal, &b) {
                    Ok(()) => Ok(work
                        .iter()
                        .zip(staged)
                        .map(|(o, staged)| files::publish_at(&dir, at, o, staged?))
                        .collect()),
                    Err(error) => Err((error, staged)),
                }
            };
            let done = if in_place {
                let started = Instant::now();
                // A panic fails the round as a failed blocking thread would.
                let done = std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                    let what = crate::server::panic_message(panic.as_ref());
                    format!("the writer's file work panicked: {what}")
                });
                let ended = Instant::now();
                let ran = self.placement.ran(started, ended);
                if ran.slow {
                    info!(
                        took_ms = ended.duration_since(started).as_millis() as u64,
                        rounds_on_blocking_thread_for_s = PAUSE.as_secs(),
                        "a round's file work was slow; rounds run on a blocking thread for a while"
                    );
                }
                if ran.yield_now {
                    tokio::task::yield_now().await;
                }
                done
            } else {
                tokio::task::spawn_blocking(work)
                    .await
                    .map_err(|join| join.to_string())
            };
            return match done {
                Ok(Ok(results)) => results,
                Ok(Err((error, staged))) => {
                    error!(%error, "the depot's journal cannot be written; the writer waits");
                    self.journal(batch).await;
                    files::publish_all(self.dir.clone(), ops, staged, 1).await
                }
                Err(failed) => {
                    // Whether the journal has the round is unknown: every
                    // command is undone, and the undo is journaled.
                    error!(error = %failed, "the writer's file work failed; the round's commands are undone");
                    (0..ops.len())
                        .map(|_| {
                            Err(WriterError::Io {
                                path: self.dir.to_path_buf(),
                                source: std::io::Error::other("the writer's file work failed"),
                            })
                        })
                        .collect()
                }
            };
        }
        let staging = files::stage_all(dir, access, ops.clone(), self.io_threads);
        let journal = self.journal.clone();
        let b = batch.clone();
        let journaling = tokio::task::spawn_blocking(move || journal_round(&journal, &b));
        let (journaled, staged) = tokio::join!(journaling, staging);
        match journaled {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                error!(%error, "the depot's journal cannot be written; the writer waits");
                self.journal(batch).await;
            }
            Err(join) => {
                error!(error = %join, "the journal's thread failed; the round is journaled again");
                self.journal(batch).await;
            }
        }
        files::publish_all(self.dir.clone(), ops, staged, self.io_threads).await
    }

    /// Writes `batch` to the journal, retrying until it lands: nothing goes
    /// on before it (a read not journaled must not be deleted, a config not
    /// journaled must not appear).
    pub(super) async fn journal(&self, batch: Arc<Batch>) {
        if batch.is_empty() {
            return;
        }
        let mut delay = JOURNAL_RETRY.0;
        while let Err(error) = self.journal.commit_async(batch.clone()).await {
            error!(%error, retry_in = ?delay, "the depot's journal cannot be written; the writer waits");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(JOURNAL_RETRY.1);
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
}
