//! The writer's state, without I/O: which client holds which config under
//! which file names, the last revision seen per client (per epoch of the
//! configserver's store), the reads whose files are still present, and how a
//! command is planned against that state and its outcome committed to it.
//! The task (`super::task`) journals each round and runs its file work
//! between plan and commit; `journaled` restores the state, records it and
//! undoes a commit whose file work failed; `listing` pages through it;
//! `defused` keeps the reads whose files are still present.

mod defused;
pub(super) mod journaled;
mod listing;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use super::error::{SeenState, WriterError};
use super::messages::{ReadEvent, Rendered, SetOutcome};
use super::ops::{Committed, FileOps, Op, Planned, SetPlan};
use super::records::{Defused, Held, KEPT_EPOCHS, Seen};
use crate::depot::marker::Format;
use crate::domain::Fqdn;

/// Every config the depot holds, who owns which file name, the last
/// revision seen per client and the highest per epoch.
///
/// The maps that grow with the clients are B-trees, not hash tables: a hash
/// table doubles in one step, rehashing every entry inside one writer round
/// while that round's calls wait — at 28,672 configs held the round took
/// 18–21 ms, at 57,344 42–44 ms: most of `direct`'s tail (at 100,000
/// configs p99.9 22–25 ms, with B-trees 9–11; docs/BENCHMARKS.md,
/// twenty-seventh pass). A B-tree
/// grows a node at a time; its look-ups cost ~0.5 µs more per set at 10,000
/// held (`cargo bench --bench writer`), under 1 % of a depot's CPU per
/// config.
#[derive(Default)]
pub struct State {
    held: BTreeMap<Fqdn, Held>,
    owners: BTreeMap<String, Fqdn>,
    seen: BTreeMap<Fqdn, Seen>,
    defused: BTreeMap<Fqdn, Defused>,
    /// Renames we made whose IN_MOVED_TO has not come back yet, and deletes
    /// of names a set released (the client's UUID or MAC changed) whose
    /// IN_DELETE has not, oldest first, each with the client's config that
    /// was at that name before it (none: the name was new to the client, or
    /// a rewrite of the same config): a read of such a name seen now was a
    /// read of the version the oldest replaced or released.
    unconfirmed_moves: BTreeMap<String, Moves>,
    /// Our deletes of a name (a removal's, a read's, a sweep's, or those a
    /// failed command may have made) whose IN_DELETE has not come back yet,
    /// oldest first: a read of such a name seen now was
    /// a read of the oldest one's config. (One name can await several: a
    /// client may take a name another's removal freed, and be removed, before
    /// the first delete is seen.)
    unconfirmed_deletes: BTreeMap<String, Deletes>,
    /// The removed configs those deletes are of (`read_at`: when removed),
    /// by removal, until a read of one is reported or its deletes are all
    /// seen — however long the writer takes to get to the events.
    removed: BTreeMap<u64, Removed>,
    /// The number of the next removal.
    next_removal: u64,
    /// Names with a delete of ours that found no file or may not have been
    /// made (no event of ours comes for it), with the fence after it: seen when that fence comes
    /// back (a read of the file seen before that was of the config there:
    /// someone else's delete came first), or when an `IN_DELETE` of the
    /// name finds it the oldest awaited there (that someone else's).
    gone: Vec<(u64, String)>,
    /// Names with a release delete that found no file (see
    /// [`Change::found_nothing`]), with its fence.
    gone_releases: Vec<(u64, String)>,
    /// The epoch of the newest push: the store the depot follows.
    epoch: Arc<str>,
    /// The highest revision seen per epoch.
    highest: HashMap<Arc<str>, u64>,
    /// A push brought a new epoch since the last look.
    epoch_changed: bool,
}

/// A name's renames and release deletes not seen yet, oldest first, with
/// what each replaced.
type Moves = VecDeque<Change>;

/// A name's deletes not seen yet, in the order they were made (or may have
/// been). The kernel reports them in that order: the next `IN_DELETE` of the
/// name is the oldest's (or, if the oldest found no file or was not made,
/// that of someone else's delete before it), and a read seen before it read
/// the file that one deleted.
pub(super) type Deletes = VecDeque<Awaited>;

/// One of our deletes of a name, its `IN_DELETE` not seen yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Awaited {
    /// The removal it was part of (its config's read is reported once, if
    /// still in [`State::removed`]); none: a read's (reported already), a
    /// sweep's, or a failed command's.
    removal: Option<u64>,
    /// It found no file, or may not have been made: seen when this fence
    /// comes back, if an `IN_DELETE` of the name does not come first.
    found_nothing: Option<u64>,
}

/// One of our renames onto a name, or a set's delete of a name it
/// released, and what was there before it.
#[derive(Debug, Clone)]
struct Change {
    /// A delete (its IN_DELETE awaited), not a rename.
    delete: bool,
    /// That delete found no file: it is seen when this fence comes back
    /// (or someone else's `IN_DELETE` of the file does).
    found_nothing: Option<u64>,
    /// What it replaced or deleted.
    was: Move,
}

impl Change {
    fn rename(was: Move) -> Self {
        Self {
            delete: false,
            found_nothing: None,
            was,
        }
    }
}

/// What one of our renames onto a name replaced there, or one of our
/// deletes removed.
#[derive(Debug, Clone)]
enum Move {
    /// None of the client's configs: the name was new to it, or the rename
    /// wrote the held config again.
    Nothing,
    /// The client's config, its read not reported.
    Replaced(Arc<Replaced>),
    /// That config, its read reported (through another of its names).
    Reported,
}

/// What a read of a name with one of our renames onto it not seen yet was.
#[derive(Debug)]
pub enum ReplacedRead {
    /// No rename or release pending, or the oldest replaced none of the
    /// client's configs: a read of what was there before (a removed
    /// config's, if its delete is not seen yet).
    Nothing,
    /// The read of the client's config the oldest rename replaced.
    Read(ReadEvent),
    /// Of that config, whose read was reported already.
    Reported,
}

/// A client's config a set replaced (and each of its names' renames), until
/// a read of it is reported or the renames are seen.
#[derive(Debug)]
struct Replaced {
    fqdn: Fqdn,
    held: Held,
}

/// A removed config whose files' deletes are awaited.
#[derive(Debug)]
struct Removed {
    /// Its read, should one of its files be read before its delete is seen.
    read: ReadEvent,
    /// How many of its deletes are not seen yet.
    awaited: usize,
}

/// Takes from `list` the names whose fence is `n` or earlier.
fn take_due(list: &mut Vec<(u64, String)>, n: u64) -> Vec<String> {
    let (due, waiting): (Vec<_>, _) = std::mem::take(list)
        .into_iter()
        .partition(|(fence, _)| *fence <= n);
    *list = waiting;
    due.into_iter().map(|(_, name)| name).collect()
}

fn client_key(fqdn: &Fqdn) -> String {
    // File names never contain '/', so this cannot collide with one.
    format!("client/{fqdn}")
}

/// Whether revisions of epochs `a` and `b` compare: the same epoch, or one
/// of them none (a bundle made by hand).
fn same_sequence(a: &str, b: &str) -> bool {
    a.is_empty() || b.is_empty() || a == b
}

impl State {
    /// How many configs are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no config is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The epoch the depot follows (empty: none yet).
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The highest revision seen in `epoch`.
    pub fn highest(&self, epoch: &str) -> u64 {
        self.highest.get(epoch).copied().unwrap_or(0)
    }

    /// Every epoch's highest revision, for the journal.
    pub fn highest_all(&self) -> &HashMap<Arc<str>, u64> {
        &self.highest
    }

    /// The new epoch a push brought since the last call, if any.
    pub fn take_epoch_change(&mut self) -> Option<Arc<str>> {
        std::mem::take(&mut self.epoch_changed).then(|| self.epoch.clone())
    }

    /// The round keys of a client: itself and the files it holds.
    pub fn client_keys(&self, fqdn: &Fqdn) -> Vec<String> {
        let mut keys = vec![client_key(fqdn)];
        if let Some(h) = self.held.get(fqdn) {
            keys.extend(h.files.iter().cloned());
        }
        if let Some(d) = self.defused.get(fqdn) {
            keys.extend(d.files.iter().cloned());
        }
        keys
    }

    /// The round keys of a set: the client, the files it holds and the files
    /// it is to write.
    pub fn set_keys(&self, config: &Rendered) -> Vec<String> {
        let mut keys = self.client_keys(&config.fqdn);
        keys.extend(config.files.iter().cloned());
        keys
    }

    /// Plans writing `config`: refused when stale, conflicting or nameless;
    /// answered at once when it repeats the held revision.
    pub fn plan_set(&self, config: Rendered) -> SetPlan {
        if let Some(answer) = self.check_set(&config) {
            return SetPlan::Answer(answer);
        }
        let released: Vec<String> = self
            .held
            .get(&config.fqdn)
            .map(|h| {
                h.files
                    .iter()
                    .filter(|f| !config.files.contains(f))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let files = FileOps {
            writes: config
                .files
                .iter()
                .map(|f| (f.clone(), config.content.clone()))
                .collect(),
            deletes: released.clone(),
            undone_on_failure: true,
            new_names: config.files.iter().all(|f| !self.owners.contains_key(f)),
        };
        let keys = self.set_keys(&config);
        SetPlan::Write(Planned {
            op: Op::Set { config, released },
            files,
            keys,
        })
    }

    /// Plans removing a client's config; refused when `revision` is older
    /// than the one seen in the same epoch.
    pub fn plan_remove(
        &self,
        fqdn: Fqdn,
        revision: u64,
        epoch: Arc<str>,
    ) -> Result<Planned, WriterError> {
        if let Some(err) = self.check_revision(&fqdn, revision, &epoch) {
            return Err(err);
        }
        let deletes = self.held_files(&fqdn);
        Ok(Planned {
            keys: self.client_keys(&fqdn),
            op: Op::Remove {
                fqdn,
                revision,
                epoch,
            },
            files: FileOps {
                deletes,
                ..FileOps::default()
            },
        })
    }

    /// The client holding file `name`, if any.
    pub fn owner(&self, name: &str) -> Option<&Fqdn> {
        self.owners.get(name)
    }

    /// Whether the read of `fqdn`'s `revision` is known (journaled).
    pub fn saw_read(&self, fqdn: &Fqdn, revision: u64) -> bool {
        self.seen
            .get(fqdn)
            .is_some_and(|s| s.state == SeenState::Read && s.revision == revision)
    }

    /// Whether a read of `name` now would be a read of a version we have
    /// since replaced or released (our rename or delete has not been seen
    /// yet).
    pub fn is_replaced(&self, name: &str) -> bool {
        self.unconfirmed_moves.contains_key(name)
    }

    /// Plans consuming a client's config after its read: all its files go.
    pub fn plan_read(&self, fqdn: Fqdn) -> Planned {
        Planned {
            keys: self.client_keys(&fqdn),
            files: FileOps {
                deletes: self.held_files(&fqdn),
                ..FileOps::default()
            },
            op: Op::Read { fqdn },
        }
    }

    /// Plans writing a held config's files again, with its `content` (from
    /// the journal).
    pub fn plan_rewrite(&self, fqdn: Fqdn, content: Arc<str>) -> Option<Planned> {
        let held = self.held.get(&fqdn)?;
        Some(Planned {
            keys: self.client_keys(&fqdn),
            files: FileOps {
                writes: held
                    .files
                    .iter()
                    .map(|f| (f.clone(), content.clone()))
                    .collect(),
                ..FileOps::default()
            },
            op: Op::Rewrite { fqdn },
        })
    }

    /// Whether `fqdn`'s config is held.
    pub fn holds(&self, fqdn: &Fqdn) -> bool {
        self.held.contains_key(fqdn)
    }

    /// Clients whose config is held.
    pub fn held_clients(&self) -> Vec<Fqdn> {
        self.held.keys().cloned().collect()
    }

    /// Clients holding a config of another epoch than `epoch` (not none)
    /// and not among `keep`: a new store does not owe them.
    pub fn not_owed(&self, epoch: &str, keep: &std::collections::HashSet<Fqdn>) -> Vec<Fqdn> {
        self.held
            .iter()
            .filter(|(f, h)| !h.epoch.is_empty() && *h.epoch != *epoch && !keep.contains(*f))
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Our rename of `name` was seen by the watcher. Release deletes queued
    /// before it go too: one that found no file brings no event (its fence
    /// may not be back yet).
    pub fn moved(&mut self, name: &str) {
        if let Some(moves) = self.unconfirmed_moves.get_mut(name) {
            while moves.pop_front().is_some_and(|change| change.delete) {}
            if moves.is_empty() {
                self.unconfirmed_moves.remove(name);
            }
        }
    }

    /// A delete of `name` seen by the watcher was a set's release of it, if
    /// the oldest change awaited there is one; true then.
    fn release_deleted(&mut self, name: &str) -> bool {
        let Some(moves) = self.unconfirmed_moves.get_mut(name) else {
            return false;
        };
        if moves.front().is_none_or(|change| !change.delete) {
            return false;
        }
        moves.pop_front();
        if moves.is_empty() {
            self.unconfirmed_moves.remove(name);
        }
        true
    }

    /// A read of `name` seen while a rename onto it is not: the read of the
    /// client's config the oldest such rename replaced, at `now`, once per
    /// replaced config (whichever of its names the client read).
    pub fn read_replaced(&mut self, name: &str, now: SystemTime) -> ReplacedRead {
        let oldest = (self.unconfirmed_moves.get(name))
            .and_then(|m| m.front())
            .map(|change| &change.was);
        let replaced = match oldest {
            None | Some(Move::Nothing) => return ReplacedRead::Nothing,
            Some(Move::Reported) => return ReplacedRead::Reported,
            Some(Move::Replaced(replaced)) => replaced.clone(),
        };
        // Its other names' renames are still awaited (their queues keep
        // their length); a read of one of them is no news any more.
        for file in &replaced.held.files {
            for slot in self.unconfirmed_moves.get_mut(file).into_iter().flatten() {
                if matches!(&slot.was, Move::Replaced(r) if Arc::ptr_eq(r, &replaced)) {
                    slot.was = Move::Reported;
                }
            }
        }
        ReplacedRead::Read(ReadEvent::of_held(
            replaced.fqdn.clone(),
            replaced.held.clone(),
            now,
        ))
    }

    /// Forgets renames and deletes not seen yet: after the kernel dropped
    /// events (or the directory was recreated) they will never be.
    pub fn forget_moves(&mut self) {
        self.unconfirmed_moves.clear();
        self.unconfirmed_deletes.clear();
        self.removed.clear();
        self.gone.clear();
        self.gone_releases.clear();
    }

    /// A file was deleted: if it was a released name's, a removed config's
    /// or a read's, its delete is seen. (The oldest delete of the name
    /// awaited is this one: ours, or, if ours found no file, someone
    /// else's that came first.)
    pub fn deleted(&mut self, name: &str) {
        if self.release_deleted(name) {
            return;
        }
        let Some(deletes) = self.unconfirmed_deletes.get_mut(name) else {
            return;
        };
        let oldest = deletes.pop_front();
        if deletes.is_empty() {
            self.unconfirmed_deletes.remove(name);
        }
        if let Some(removal) = oldest.and_then(|a| a.removal) {
            self.removal_seen(removal);
        }
    }

    /// Our deletes of `names` outside a committed removal or release (a
    /// read's or a sweep's, or those of a command whose file work failed
    /// part-way): their events are awaited, so that none is taken for a
    /// later removal's delete of the same name. Those in `unsure` may have
    /// found no file, or not have been made: each is seen at the first
    /// `IN_DELETE` of the name or when `fence` comes back.
    pub fn awaits_deletes(&mut self, names: &[String], unsure: &[String], fence: u64) {
        for name in names {
            let found_nothing = unsure.contains(name).then_some(fence);
            let deletes = self.unconfirmed_deletes.entry(name.clone()).or_default();
            deletes.push_back(Awaited {
                removal: None,
                found_nothing,
            });
            if found_nothing.is_some() {
                self.gone.push((fence, name.clone()));
            }
        }
    }

    /// The delete of `name` a committed set (`release`) or removal just made
    /// found no file: no IN_DELETE comes for it, so it is seen when `fence`
    /// comes back ([`Self::fence_passed`]). (Its record is the newest for
    /// the name: a round holds one command per name.) Until then a read of
    /// the name is of the config that was there.
    pub fn found_gone(&mut self, name: &str, release: bool, fence: u64) {
        if release {
            let change = (self.unconfirmed_moves.get_mut(name)).and_then(|moves| moves.back_mut());
            if let Some(change) = change.filter(|c| c.delete) {
                change.found_nothing = Some(fence);
                self.gone_releases.push((fence, name.to_owned()));
            }
        } else if let Some(newest) = (self.unconfirmed_deletes.get_mut(name))
            .and_then(|deletes| deletes.back_mut())
            .filter(|a| a.removal.is_some())
        {
            newest.found_nothing = Some(fence);
            self.gone.push((fence, name.to_owned()));
        }
    }

    /// Fence `n` came back: every event from before the deletes it follows
    /// is handled, and those that found no file are seen. A file someone
    /// puts at such a name later is no read of the config that was there.
    pub fn fence_passed(&mut self, n: u64) {
        let mut seen = Vec::new();
        for name in take_due(&mut self.gone, n) {
            let Some(deletes) = self.unconfirmed_deletes.get_mut(&name) else {
                continue;
            };
            // Each marked by a fence back now (unless an event took it).
            deletes.retain(|a| {
                let passed = a.found_nothing.is_some_and(|fence| fence <= n);
                seen.extend(a.removal.filter(|_| passed));
                !passed
            });
            if deletes.is_empty() {
                self.unconfirmed_deletes.remove(&name);
            }
        }
        for removal in seen {
            self.removal_seen(removal);
        }
        for name in take_due(&mut self.gone_releases, n) {
            let Some(moves) = self.unconfirmed_moves.get_mut(&name) else {
                continue;
            };
            // Each marked by a fence back now (unless an event took it).
            moves.retain(|c| c.found_nothing.is_none_or(|fence| fence > n));
            if moves.is_empty() {
                self.unconfirmed_moves.remove(&name);
            }
        }
    }

    /// One of removal `removal`'s deletes is seen: once all are, its
    /// config can no longer be read.
    fn removal_seen(&mut self, removal: u64) {
        if let Some(removed) = self.removed.get_mut(&removal) {
            removed.awaited -= 1;
            if removed.awaited == 0 {
                self.removed.remove(&removal);
            }
        }
    }

    /// A read of `name`, which no config holds: the read of a removed
    /// config, if its delete was not seen yet (the read came first), at
    /// `now` — once per removed config.
    pub fn read_removed(&mut self, name: &str, now: SystemTime) -> Option<ReadEvent> {
        let removal = self.unconfirmed_deletes.get(name)?.front()?.removal?;
        // Its deletes stay awaited: each still brings its event, which
        // must not be taken for a later removal's of the same name.
        let mut read = self.removed.remove(&removal)?.read;
        read.read_at = now;
        Some(read)
    }

    /// Every file name held.
    pub fn file_names(&self) -> Vec<String> {
        self.owners.keys().cloned().collect()
    }

    /// Records the outcome of a planned command's file work, at `now`.
    pub fn commit(
        &mut self,
        op: Op,
        result: Result<(), WriterError>,
        now: SystemTime,
    ) -> Committed {
        match op {
            Op::Set { config, released } => {
                Committed::Set(result.map(|()| self.commit_set(config, &released, now)))
            }
            Op::Remove {
                fqdn,
                revision,
                epoch,
            } => {
                Committed::Remove(result.map(|()| self.commit_remove(&fqdn, revision, epoch, now)))
            }
            // A read whose files could not all be deleted is still a read:
            // the client is booting its action.
            Op::Read { fqdn } => Committed::Read(self.commit_read(fqdn, now)),
            Op::Rewrite { fqdn } => {
                if result.is_ok()
                    && let Some(held) = self.held.get(&fqdn)
                {
                    for name in &held.files {
                        let moves = self.unconfirmed_moves.entry(name.clone()).or_default();
                        moves.push_back(Change::rename(Move::Nothing));
                    }
                }
                Committed::Repeat(None)
            }
            Op::Sweep { fqdn } => Committed::Repeat(match result {
                Ok(()) => self.commit_sweep(fqdn),
                Err(_) => None,
            }),
        }
    }

    fn held_files(&self, fqdn: &Fqdn) -> Vec<String> {
        self.held
            .get(fqdn)
            .map(|h| h.files.clone())
            .unwrap_or_default()
    }

    /// Refusals of a set against the current state: stale, conflicting, no
    /// names; or the answer to an exact repeat of the held revision.
    fn check_set(&self, config: &Rendered) -> Option<Result<SetOutcome, WriterError>> {
        if config.files.is_empty() {
            return Some(Err(WriterError::NoFileNames {
                fqdn: config.fqdn.clone(),
            }));
        }
        if config.revision > 0 {
            if let Some(held) = self.held.get(&config.fqdn)
                && held.revision == config.revision
                && same_sequence(&held.epoch, &config.epoch)
            {
                // A retried push of what we hold: answer as if written.
                return Some(Ok(SetOutcome {
                    files: held.files.clone(),
                    template: held.template.clone(),
                    revision: held.revision,
                    written: false,
                }));
            }
            if let Some(seen) = self.seen.get(&config.fqdn)
                && same_sequence(&seen.epoch, &config.epoch)
            {
                let repeat_of_gone =
                    seen.revision == config.revision && seen.state != SeenState::Held;
                if config.revision < seen.revision || repeat_of_gone {
                    return Some(Err(self.stale(
                        &config.fqdn,
                        config.revision,
                        seen,
                        &config.epoch,
                    )));
                }
            }
        }
        self.check_names(config).map(Err)
    }

    /// The refusal of revision `got` against `seen`.
    fn stale(&self, fqdn: &Fqdn, got: u64, seen: &Seen, epoch: &str) -> WriterError {
        WriterError::Stale {
            fqdn: fqdn.clone(),
            got,
            held: seen.revision,
            state: seen.state,
            epoch: seen.epoch.to_string(),
            highest: self.highest(epoch).max(seen.revision),
        }
    }

    /// A conflict when another client holds one of the config's names.
    fn check_names(&self, config: &Rendered) -> Option<WriterError> {
        config.files.iter().find_map(|name| {
            let owner = self.owners.get(name)?;
            (owner != &config.fqdn).then(|| WriterError::Conflict {
                name: name.clone(),
                fqdn: config.fqdn.clone(),
                owner: owner.clone(),
            })
        })
    }

    fn check_revision(&self, fqdn: &Fqdn, revision: u64, epoch: &str) -> Option<WriterError> {
        let seen = self.seen.get(fqdn)?;
        let older = revision > 0 && revision < seen.revision;
        (older && same_sequence(&seen.epoch, epoch))
            .then(|| self.stale(fqdn, revision, seen, epoch))
    }

    /// Notes a revision seen in `epoch`; a new epoch becomes the current one
    /// (a new store: revisions of the old one do not compare with its). The
    /// first epoch a depot sees is adopted; only a change is news.
    fn observe(&mut self, epoch: &Arc<str>, revision: u64) {
        if epoch.is_empty() {
            return;
        }
        if *epoch != self.epoch {
            self.epoch_changed |= !self.epoch.is_empty();
            self.epoch = epoch.clone();
            // Floors of other epochs compare with nothing any more.
            let current = &self.epoch;
            let held = &self.held;
            self.seen
                .retain(|f, s| same_sequence(&s.epoch, current) || held.contains_key(f));
        }
        let highest = self.highest.entry(epoch.clone()).or_default();
        *highest = (*highest).max(revision);
        self.forget_old_epochs();
    }

    /// Keeps [`KEPT_EPOCHS`] epochs' highest revisions: the current one and
    /// those pushed last (highest revision, then epoch, first) — the rows
    /// the journal keeps.
    pub(super) fn forget_old_epochs(&mut self) {
        while self.highest.len() > KEPT_EPOCHS {
            let current = &self.epoch;
            let Some(oldest) = (self.highest.iter())
                .filter(|(e, _)| *e != current)
                .min_by_key(|&(e, r)| (*r, e.as_ref()))
                .map(|(e, _)| e.clone())
            else {
                return;
            };
            self.highest.remove(&oldest);
        }
    }

    fn commit_set(
        &mut self,
        mut config: Rendered,
        released: &[String],
        now: SystemTime,
    ) -> SetOutcome {
        self.observe(&config.epoch, config.revision);
        // Every push carries its own copy of the epoch; held configs share
        // the current one (100,000 of them would otherwise hold 100,000).
        if config.epoch == self.epoch {
            config.epoch = self.epoch.clone();
        }
        for name in released {
            self.owners.remove(name);
        }
        for name in &config.files {
            self.owners.insert(name.clone(), config.fqdn.clone());
        }
        self.release_defused(&config.files);
        if config.revision > 0 {
            self.seen.insert(
                config.fqdn.clone(),
                Seen {
                    revision: config.revision,
                    state: SeenState::Held,
                    epoch: config.epoch.clone(),
                },
            );
        }
        let outcome = SetOutcome {
            files: config.files.clone(),
            template: config.template.clone(),
            revision: config.revision,
            written: true,
        };
        let replaced = self.held.insert(
            config.fqdn.clone(),
            Held {
                product_id: config.product_id,
                action_request: config.action_request,
                revision: config.revision,
                files: config.files,
                template: config.template,
                since: now,
                format: Format::of(&config.content),
                epoch: config.epoch,
            },
        );
        let replaced = replaced.map(|held| {
            Arc::new(Replaced {
                fqdn: config.fqdn,
                held,
            })
        });
        for name in &outcome.files {
            let was = match &replaced {
                Some(r) if r.held.files.contains(name) => Move::Replaced(r.clone()),
                _ => Move::Nothing,
            };
            let moves = self.unconfirmed_moves.entry(name.clone()).or_default();
            moves.push_back(Change::rename(was));
        }
        // A read of a released name seen before its delete was a read of
        // the version it held.
        for name in released {
            let was = match &replaced {
                Some(r) => Move::Replaced(r.clone()),
                None => Move::Nothing,
            };
            let moves = self.unconfirmed_moves.entry(name.clone()).or_default();
            moves.push_back(Change {
                delete: true,
                found_nothing: None,
                was,
            });
        }
        outcome
    }

    /// Forgets the client's config; true if one was held. A failed removal
    /// never gets here: the files may be partly gone, and keeping all of
    /// them lets a retry delete the rest.
    ///
    /// Removing a client this depot neither holds nor has seen leaves no
    /// trace: a floor (or a highest revision) taken from such a call would
    /// let one bad `RemovePxeConfig` (revision u64::MAX) block the client for
    /// good, and the configserver's sequence with it.
    fn commit_remove(
        &mut self,
        fqdn: &Fqdn,
        revision: u64,
        epoch: Arc<str>,
        now: SystemTime,
    ) -> bool {
        let held = self.forget(fqdn);
        let removed = held.is_some();
        if let Some(held) = held {
            // Each removal on its own: the same client's earlier one (another
            // revision) may still await its deletes too.
            let removal = self.next_removal;
            self.next_removal += 1;
            for name in &held.files {
                let deletes = self.unconfirmed_deletes.entry(name.clone()).or_default();
                deletes.push_back(Awaited {
                    removal: Some(removal),
                    found_nothing: None,
                });
            }
            let awaited = held.files.len();
            let read = ReadEvent::of_held(fqdn.clone(), held, now);
            self.removed.insert(removal, Removed { read, awaited });
        }
        if !removed && !self.seen.contains_key(fqdn) {
            return false;
        }
        self.observe(&epoch, revision);
        if revision > 0 {
            let removal = Seen {
                revision,
                state: SeenState::Removed,
                epoch,
            };
            match self.seen.get(fqdn) {
                Some(seen)
                    if same_sequence(&seen.epoch, &removal.epoch) && seen.revision > revision => {}
                _ => {
                    self.seen.insert(fqdn.clone(), removal);
                }
            }
        }
        removed
    }

    fn commit_read(&mut self, fqdn: Fqdn, now: SystemTime) -> Option<ReadEvent> {
        let held = self.forget(&fqdn)?;
        if held.revision > 0 {
            self.seen.insert(
                fqdn.clone(),
                Seen {
                    revision: held.revision,
                    state: SeenState::Read,
                    epoch: held.epoch.clone(),
                },
            );
        }
        Some(ReadEvent::of_held(fqdn, held, now))
    }

    fn forget(&mut self, fqdn: &Fqdn) -> Option<Held> {
        let held = self.held.remove(fqdn)?;
        for name in &held.files {
            self.owners.remove(name);
        }
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionRequest, ProductId};

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    fn fqdn(name: &str) -> Fqdn {
        Fqdn::parse(&format!("{name}.example.org"), "fqdn").unwrap()
    }

    fn config(client: &str, revision: u64, files: &[&str]) -> Rendered {
        Rendered {
            fqdn: fqdn(client),
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision,
            files: files.iter().map(|f| f.to_string()).collect(),
            content: Arc::from(format!("config of {client} r{revision}\n")),
            template: "install".into(),
            epoch: Arc::from(""),
        }
    }

    fn planned(plan: SetPlan) -> Planned {
        match plan {
            SetPlan::Write(planned) => planned,
            SetPlan::Answer(answer) => panic!("expected a write, got {answer:?}"),
        }
    }

    fn answer(plan: SetPlan) -> Result<SetOutcome, WriterError> {
        match plan {
            SetPlan::Answer(answer) => answer,
            SetPlan::Write(planned) => panic!("expected an answer, got {planned:?}"),
        }
    }

    /// Plans and commits a set whose file work succeeded.
    fn set(state: &mut State, config: Rendered) -> SetOutcome {
        let p = planned(state.plan_set(config));
        match state.commit(p.op, Ok(()), NOW) {
            Committed::Set(Ok(outcome)) => outcome,
            other => panic!("expected a written set, got {other:?}"),
        }
    }

    fn remove(state: &mut State, client: &str, revision: u64) -> Result<bool, WriterError> {
        remove_at(state, client, revision, NOW)
    }

    fn remove_at(
        state: &mut State,
        client: &str,
        revision: u64,
        now: SystemTime,
    ) -> Result<bool, WriterError> {
        let p = state.plan_remove(fqdn(client), revision, Arc::from(""))?;
        match state.commit(p.op, Ok(()), now) {
            Committed::Remove(result) => result,
            other => panic!("expected a removal, got {other:?}"),
        }
    }

    /// Sets `client` at revision `revision` under the one name `file`, and
    /// removes it at the next revision.
    fn set_and_remove(state: &mut State, client: &str, revision: u64, file: &str) {
        set(state, config(client, revision, &[file]));
        assert!(remove(state, client, revision + 1).unwrap());
    }

    fn read(state: &mut State, name: &str) -> Option<ReadEvent> {
        let owner = state.owner(name)?.clone();
        let p = state.plan_read(owner);
        match state.commit(p.op, Ok(()), NOW) {
            Committed::Read(read) => read,
            other => panic!("expected a read, got {other:?}"),
        }
    }

    /// The revision a read of `name` now is the read of, if one whose
    /// rename or delete is not seen yet.
    fn replaced_read(state: &mut State, name: &str) -> Option<u64> {
        replaced_read_at(state, name, NOW)
    }

    fn replaced_read_at(state: &mut State, name: &str, now: SystemTime) -> Option<u64> {
        match state.read_replaced(name, now) {
            ReplacedRead::Read(r) => Some(r.revision),
            _ => None,
        }
    }

    fn io_error() -> WriterError {
        WriterError::Io {
            path: "/pxe/x".into(),
            source: std::io::Error::other("disk full"),
        }
    }

    fn stale_state(result: Result<impl std::fmt::Debug, WriterError>) -> (u64, u64, SeenState) {
        match result {
            Err(WriterError::Stale {
                got, held, state, ..
            }) => (got, held, state),
            other => panic!("expected stale, got {other:?}"),
        }
    }

    #[test]
    fn a_set_writes_every_name_and_then_holds_them() {
        let mut state = State::default();
        let p = planned(state.plan_set(config("a", 1, &["uuid-a", "01-a"])));
        let names: Vec<&str> = p.files.writes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["uuid-a", "01-a"]);
        assert_eq!(&*p.files.writes[0].1, "config of a r1\n");
        assert!(p.files.deletes.is_empty());
        assert_eq!(p.keys, ["client/a.example.org", "uuid-a", "01-a"]);
        let Committed::Set(Ok(outcome)) = state.commit(p.op, Ok(()), NOW) else {
            panic!("not written");
        };
        assert_eq!(outcome.files, ["uuid-a", "01-a"]);
        assert_eq!(
            (outcome.template.as_str(), outcome.revision),
            ("install", 1)
        );
        assert_eq!(state.len(), 1);
        assert_eq!(state.owner("01-a"), Some(&fqdn("a")));
        let mut names = state.file_names();
        names.sort();
        assert_eq!(names, ["01-a", "uuid-a"]);
        assert_eq!(
            state.client_keys(&fqdn("a")),
            ["client/a.example.org", "uuid-a", "01-a"]
        );
    }

    #[test]
    fn a_repeat_of_the_held_revision_is_answered_without_writing() {
        let mut state = State::default();
        let first = set(&mut state, config("a", 3, &["01-a"]));
        let again = answer(state.plan_set(config("a", 3, &["01-a"]))).unwrap();
        assert!(first.written && !again.written, "the repeat wrote nothing");
        assert_eq!(
            SetOutcome {
                written: true,
                ..again
            },
            first
        );
        // Unversioned configs are always written again.
        set(&mut state, config("b", 0, &["01-b"]));
        planned(state.plan_set(config("b", 0, &["01-b"])));
    }

    #[test]
    fn an_older_revision_is_stale_and_says_what_became_of_the_newer() {
        let mut state = State::default();
        set(&mut state, config("a", 5, &["01-a"]));
        let err = answer(state.plan_set(config("a", 4, &["01-a"])));
        assert_eq!(stale_state(err), (4, 5, SeenState::Held));
        // A newer one replaces it.
        set(&mut state, config("a", 6, &["01-a"]));

        read(&mut state, "01-a").unwrap();
        for revision in [5, 6] {
            let err = answer(state.plan_set(config("a", revision, &["01-a"])));
            assert_eq!(stale_state(err), (revision, 6, SeenState::Read));
        }
        let message = answer(state.plan_set(config("a", 6, &["01-a"])))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "stale revision 6 for a.example.org: revision 6 was already read"
        );
        set(&mut state, config("a", 7, &["01-a"]));

        assert!(remove(&mut state, "a", 8).unwrap());
        for revision in [7, 8] {
            let err = answer(state.plan_set(config("a", revision, &["01-a"])));
            assert_eq!(stale_state(err), (revision, 8, SeenState::Removed));
        }
        set(&mut state, config("a", 9, &["01-a"]));
    }

    #[test]
    fn removing_a_client_never_held_leaves_no_floor() {
        let mut state = State::default();
        let p = state
            .plan_remove(fqdn("a"), u64::MAX, Arc::from("e1"))
            .unwrap();
        let Committed::Remove(Ok(false)) = state.commit(p.op, Ok(()), NOW) else {
            panic!("expected a removal of nothing");
        };
        // Neither the client nor the epoch's highest revision is poisoned.
        assert_eq!(state.highest("e1"), 0);
        assert_eq!(set(&mut state, config("a", 3, &["01-a"])).revision, 3);
    }

    #[test]
    fn unversioned_commands_are_never_stale() {
        let mut state = State::default();
        set(&mut state, config("a", 5, &["01-a"]));
        planned(state.plan_set(config("a", 0, &["01-a"])));
        assert!(remove(&mut state, "a", 0).unwrap());
        set(&mut state, config("a", 0, &["01-a"]));
        read(&mut state, "01-a").unwrap();
        // Neither the removal nor the read of revision 0 is remembered: the
        // last versioned event still is.
        assert_eq!(
            stale_state(answer(state.plan_set(config("a", 4, &["01-a"])))),
            (4, 5, SeenState::Held)
        );
    }

    #[test]
    fn a_name_held_by_another_client_conflicts() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["uuid-a", "01-shared"]));
        match answer(state.plan_set(config("b", 1, &["uuid-b", "01-shared"]))) {
            Err(WriterError::Conflict {
                name,
                fqdn: f,
                owner,
            }) => {
                assert_eq!(name, "01-shared");
                assert_eq!((f, owner), (fqdn("b"), fqdn("a")));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // Once `a` lets the name go, `b` may take it.
        set(&mut state, config("a", 2, &["uuid-a"]));
        set(&mut state, config("b", 1, &["uuid-b", "01-shared"]));
        assert_eq!(state.owner("01-shared"), Some(&fqdn("b")));
    }

    #[test]
    fn a_config_without_names_is_refused() {
        let state = State::default();
        assert!(matches!(
            answer(state.plan_set(config("a", 1, &[]))),
            Err(WriterError::NoFileNames { .. })
        ));
    }

    #[test]
    fn names_a_client_no_longer_uses_are_deleted_and_released() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["uuid-old", "01-a"]));
        let p = planned(state.plan_set(config("a", 2, &["uuid-new", "01-a"])));
        assert_eq!(p.files.deletes, ["uuid-old"]);
        assert_eq!(
            p.keys,
            [
                "client/a.example.org",
                "uuid-old",
                "01-a",
                "uuid-new",
                "01-a"
            ]
        );
        state.commit(p.op, Ok(()), NOW);
        assert_eq!(state.owner("uuid-old"), None);
        assert_eq!(state.owner("uuid-new"), Some(&fqdn("a")));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["01-a"]));
        let p = planned(state.plan_set(config("a", 2, &["uuid-a"])));
        let Committed::Set(Err(WriterError::Io { .. })) = state.commit(p.op, Err(io_error()), NOW)
        else {
            panic!("the failure is not answered");
        };
        assert_eq!(state.owner("01-a"), Some(&fqdn("a")));
        assert_eq!(state.owner("uuid-a"), None);
        assert!(!state.is_replaced("uuid-a"));
        let page = state.page(None, 10, None);
        assert_eq!(page.configs[0].revision, 1);
        // Revision 2 was never seen: it may come again.
        planned(state.plan_set(config("a", 2, &["uuid-a"])));
    }

    #[test]
    fn a_removal_deletes_every_file_and_a_failed_one_keeps_them() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["uuid-a", "01-a"]));
        let p = state.plan_remove(fqdn("a"), 2, Arc::from("")).unwrap();
        assert_eq!(p.files.deletes, ["uuid-a", "01-a"]);
        assert!(p.files.writes.is_empty());
        let Committed::Remove(Err(_)) = state.commit(p.op, Err(io_error()), NOW) else {
            panic!("the failure is not answered");
        };
        assert_eq!(state.len(), 1, "a retry must find the files to delete");
        assert!(remove(&mut state, "a", 2).unwrap());
        assert_eq!((state.len(), state.owner("01-a")), (0, None));
        // Nothing held: nothing removed, but the revision is remembered.
        assert!(!remove(&mut state, "a", 3).unwrap());
        assert!(!remove(&mut state, "never", 1).unwrap());
        assert_eq!(
            stale_state(state.plan_remove(fqdn("a"), 1, Arc::from("")).map(|_| ())),
            (1, 3, SeenState::Removed)
        );
    }

    #[test]
    fn a_read_consumes_the_config_and_reports_it() {
        let mut state = State::default();
        set(&mut state, config("a", 4, &["uuid-a", "01-a"]));
        let p = state.plan_read(fqdn("a"));
        assert_eq!(p.files.deletes, ["uuid-a", "01-a"]);
        assert_eq!(p.keys, ["client/a.example.org", "uuid-a", "01-a"]);
        // A read whose files could not be deleted is still a read.
        let Committed::Read(Some(event)) = state.commit(p.op, Err(io_error()), NOW) else {
            panic!("no read event");
        };
        assert_eq!(
            event,
            ReadEvent {
                fqdn: fqdn("a"),
                product_id: ProductId::parse("win10-x64", "p").unwrap(),
                revision: 4,
                action_request: ActionRequest::Setup,
                epoch: Arc::from(""),
                files_present: false,
                read_at: NOW,
            }
        );
        assert_eq!((state.len(), state.owner("uuid-a")), (0, None));
        // A second read of the same client finds nothing to report.
        let p = state.plan_read(fqdn("a"));
        assert!(p.files.deletes.is_empty());
        assert!(matches!(
            state.commit(p.op, Ok(()), NOW),
            Committed::Read(None)
        ));
    }

    #[test]
    fn each_rename_is_unconfirmed_until_the_watcher_sees_it() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["01-a"]));
        set(&mut state, config("a", 2, &["01-a"]));
        assert!(state.is_replaced("01-a"));
        state.moved("01-a");
        assert!(state.is_replaced("01-a"), "one rename still unseen");
        state.moved("01-a");
        assert!(!state.is_replaced("01-a"));
        state.moved("01-a");
        state.moved("unknown");
        assert!(!state.is_replaced("01-a"));
        set(&mut state, config("a", 3, &["01-a"]));
        state.forget_moves();
        assert!(!state.is_replaced("01-a"));
    }

    #[test]
    fn a_read_before_a_rename_is_seen_is_a_read_of_the_config_it_replaced() {
        let mut state = State::default();
        // A name new to the client replaced none of its configs.
        set(&mut state, config("a", 1, &["uuid-a", "01-a"]));
        assert_eq!(replaced_read(&mut state, "01-a"), None);
        state.moved("uuid-a");
        state.moved("01-a");
        // Revision 2 replaces 1 at both names, then 3 replaces 2 at one.
        set(&mut state, config("a", 2, &["uuid-a", "01-a"]));
        set(&mut state, config("a", 3, &["01-a"]));
        assert_eq!(replaced_read(&mut state, "01-a"), Some(1));
        // Its other name's read is the same client's boot, reported once.
        assert_eq!(replaced_read(&mut state, "uuid-a"), None);
        assert_eq!(replaced_read(&mut state, "01-a"), None);
        state.moved("01-a");
        assert_eq!(replaced_read(&mut state, "01-a"), Some(2));
        state.moved("01-a");
        assert!(!state.is_replaced("01-a"));
        // Revision 3 is held throughout: the reads were of the older ones.
        assert_eq!(state.held.get(&fqdn("a")).map(|h| h.revision), Some(3));
        // A rewrite of the held config replaced nothing else.
        let rewrite = state.plan_rewrite(fqdn("a"), Arc::from("x")).unwrap();
        state.commit(rewrite.op, Ok(()), NOW);
        assert!(state.is_replaced("01-a"));
        assert_eq!(replaced_read(&mut state, "01-a"), None);
    }

    #[test]
    fn a_read_of_a_released_name_before_its_delete_is_seen_is_a_read_of_the_config_there() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["uuid-a", "01-a"]));
        state.moved("uuid-a");
        state.moved("01-a");
        // Revision 2 has a new MAC: its set deletes the old MAC's name.
        set(&mut state, config("a", 2, &["uuid-a", "01-b"]));
        assert_eq!(state.owner("01-a"), None);
        assert!(state.is_replaced("01-a"));
        assert_eq!(replaced_read(&mut state, "01-a"), Some(1));
        assert_eq!(replaced_read(&mut state, "uuid-a"), None, "reported once");
        state.moved("uuid-a");
        state.moved("01-b");
        state.deleted("01-a");
        assert!(state.unconfirmed_moves.is_empty());
        // A read after the delete is seen is of nothing of the client's.
        set(&mut state, config("a", 3, &["uuid-a", "01-a"]));
        state.moved("uuid-a");
        state.moved("01-a");
        state.deleted("01-b");
        assert_eq!(replaced_read(&mut state, "01-b"), None);
        // Another set releases 01-a again, and a removal's delete of a name
        // the client held since waits behind the rename back onto it.
        set(&mut state, config("a", 4, &["uuid-a", "01-c"]));
        set(&mut state, config("a", 5, &["uuid-a", "01-a"]));
        assert_eq!(replaced_read(&mut state, "01-a"), Some(3));
        assert!(remove(&mut state, "a", 6).unwrap());
        state.deleted("01-a");
        assert!(
            state.is_replaced("01-a"),
            "the rename back is still awaited"
        );
        state.moved("01-a");
        assert!(!state.is_replaced("01-a"));
        assert_eq!(state.read_removed("01-a", NOW).unwrap().revision, 5);
        // A release delete that found no file brings no event: the next
        // rename onto the name is seen past it.
        set(&mut state, config("b", 1, &["01-x"]));
        set(&mut state, config("b", 2, &["01-y"]));
        set(&mut state, config("b", 3, &["01-x"]));
        state.moved("01-x");
        state.moved("01-x");
        assert!(!state.is_replaced("01-x"));
        // One no rename onto the name follows is awaited until its delete is
        // seen, however late the read's event is handled (a stalled writer)…
        set(&mut state, config("c", 1, &["01-p"]));
        state.moved("01-p");
        set(&mut state, config("c", 2, &["01-q"]));
        state.moved("01-q");
        assert!(state.is_replaced("01-p"));
        let hour_later = NOW + std::time::Duration::from_secs(3600);
        assert_eq!(replaced_read_at(&mut state, "01-p", hour_later), Some(1));
        // A delete that found no file (someone else's came first): a read
        // seen before the fence after it is of the version it held…
        set(&mut state, config("d", 1, &["01-r"]));
        state.moved("01-r");
        set(&mut state, config("d", 2, &["01-s"]));
        state.moved("01-s");
        state.found_gone("01-r", true, 1);
        assert_eq!(replaced_read(&mut state, "01-r"), Some(1));
        // …and once the fence is back, a file put there later (the
        // operator's) is no read of it.
        set(&mut state, config("f", 1, &["01-t"]));
        state.moved("01-t");
        set(&mut state, config("f", 2, &["01-u"]));
        state.moved("01-u");
        state.found_gone("01-t", true, 2);
        state.fence_passed(1);
        assert!(state.is_replaced("01-t"), "its fence is 2");
        state.fence_passed(2);
        assert!(!state.is_replaced("01-t"));
        assert!(matches!(
            state.read_replaced("01-t", NOW),
            ReplacedRead::Nothing
        ));
        assert!(state.gone.is_empty());
    }

    #[test]
    fn a_read_before_a_removals_delete_is_seen_is_a_read_of_the_removed_config() {
        let mut state = State::default();
        set(&mut state, config("a", 4, &["uuid-a", "01-a"]));
        set(&mut state, config("b", 1, &["01-b"]));
        assert!(remove(&mut state, "a", 5).unwrap());
        assert!(remove(&mut state, "b", 2).unwrap());
        // a's read came before its delete: the read of revision 4, once.
        let read = state.read_removed("01-a", NOW).unwrap();
        assert_eq!((read.fqdn, read.revision), (fqdn("a"), 4));
        assert!(state.read_removed("uuid-a", NOW).is_none());
        // b's delete came first: a read after it is of nothing.
        state.deleted("01-b");
        assert!(state.read_removed("01-b", NOW).is_none());
        for name in ["uuid-a", "01-a", "unknown"] {
            state.deleted(name);
        }
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        // A removal whose file work failed leaves nothing to wait for.
        set(&mut state, config("c", 1, &["01-c"]));
        let snapshot = state.snapshot(&state.plan_remove(fqdn("c"), 2, Arc::from("")).unwrap().op);
        assert!(remove(&mut state, "c", 2).unwrap());
        state.rollback(snapshot);
        assert!(state.read_removed("01-c", NOW).is_none());
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        assert_eq!(state.owner("01-c"), Some(&fqdn("c")));
        // Its read is reported however late its event is handled (a writer
        // stalled for an hour) while the delete is not seen…
        set_and_remove(&mut state, "d", 1, "01-d");
        let late = NOW + std::time::Duration::from_secs(3600);
        let read = state.read_removed("01-d", late).unwrap();
        assert_eq!((read.fqdn, read.revision), (fqdn("d"), 1));
        // (Its delete's event still comes, and is still awaited.)
        assert!(state.unconfirmed_deletes.contains_key("01-d"));
        state.deleted("01-d");
        // A delete that found no file brings no event: a read seen before
        // the fence after it is of the removed config (someone else's
        // delete came first)…
        set_and_remove(&mut state, "e", 1, "01-e");
        state.found_gone("01-e", false, 1);
        assert_eq!(state.read_removed("01-e", NOW).unwrap().fqdn, fqdn("e"));
        // …and once the fence is back, a file put there later is not.
        set_and_remove(&mut state, "g", 1, "01-g");
        state.found_gone("01-g", false, 2);
        state.fence_passed(2);
        assert!(state.read_removed("01-g", NOW).is_none());
        state.fence_passed(1);
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        assert!(state.gone.is_empty());
    }

    #[test]
    fn a_second_removal_awaits_both_and_no_removal_expires() {
        let mut state = State::default();
        let hour = std::time::Duration::from_secs(3600);
        set(&mut state, config("a", 1, &["uuid-a", "01-a"]));
        assert!(remove(&mut state, "a", 2).unwrap());
        // Set again under another MAC name, and removed again: the first
        // removal's uuid-a delete is still awaited with the second's.
        set(&mut state, config("a", 3, &["uuid-a", "01-a2"]));
        assert!(remove(&mut state, "a", 4).unwrap());
        for name in ["uuid-a", "01-a2", "01-a"] {
            state.deleted(name);
        }
        let read = state.read_removed("uuid-a", NOW).unwrap();
        assert_eq!(read.revision, 3);
        state.deleted("uuid-a");
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());

        // b, removed an hour before c, still awaits its delete: the writer
        // may have been stalled that long with b's read queued.
        set(&mut state, config("b", 1, &["01-b"]));
        set(&mut state, config("c", 1, &["01-c"]));
        assert!(remove(&mut state, "b", 2).unwrap());
        assert!(remove_at(&mut state, "c", 2, NOW + hour).unwrap());
        assert!(state.unconfirmed_deletes.contains_key("01-b"));
        assert_eq!(
            state.read_removed("01-b", NOW + hour).unwrap().fqdn,
            fqdn("b")
        );
        assert_eq!(
            state.read_removed("01-c", NOW + hour).unwrap().fqdn,
            fqdn("c")
        );
    }

    #[test]
    fn a_name_awaits_the_deletes_of_each_client_that_held_it_in_turn() {
        // b is removed; a takes b's name and is removed before b's delete
        // is seen. The name's events come in that order: b's delete, a's
        // rename, a's delete.
        let mut state = State::default();
        set(&mut state, config("b", 1, &["01-x", "uuid-b"]));
        assert!(remove(&mut state, "b", 2).unwrap());
        set_and_remove(&mut state, "a", 1, "01-x");
        // Seen before b's delete: b's read.
        assert_eq!(state.read_removed("01-x", NOW).unwrap().fqdn, fqdn("b"));
        state.deleted("01-x");
        // Seen after it: a's, however b's other name stands.
        assert_eq!(state.read_removed("01-x", NOW).unwrap().fqdn, fqdn("a"));
        for name in ["01-x", "uuid-b"] {
            state.deleted(name);
        }
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        // Unread, both removed configs go once their deletes are seen.
        set_and_remove(&mut state, "b", 3, "01-y");
        set_and_remove(&mut state, "a", 3, "01-y");
        state.deleted("01-y");
        assert_eq!(state.read_removed("01-y", NOW).unwrap().fqdn, fqdn("a"));
        state.deleted("01-y");
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        set_and_remove(&mut state, "b", 5, "01-z");
        set_and_remove(&mut state, "a", 5, "01-z");
        state.deleted("01-z");
        state.deleted("01-z");
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
    }

    #[test]
    fn each_removal_of_a_client_is_read_on_its_own() {
        // a is removed at revision 1, set again at the same name and removed
        // at revision 3 before any event is handled: the name's events are
        // the first delete, our rename, the second delete.
        let mut state = State::default();
        set_and_remove(&mut state, "a", 1, "01-x");
        set_and_remove(&mut state, "a", 3, "01-x");
        assert_eq!(state.read_removed("01-x", NOW).unwrap().revision, 1);
        state.deleted("01-x");
        assert_eq!(state.read_removed("01-x", NOW).unwrap().revision, 3);
        state.deleted("01-x");
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        // A second read of a reported removed config (a TFTP retry) is of
        // nothing, though the client was set and removed again since.
        set_and_remove(&mut state, "a", 5, "01-y");
        assert_eq!(state.read_removed("01-y", NOW).unwrap().revision, 5);
        set_and_remove(&mut state, "a", 7, "01-z");
        assert!(state.read_removed("01-y", NOW).is_none());
        assert_eq!(state.read_removed("01-z", NOW).unwrap().revision, 7);
    }

    #[test]
    fn a_delete_that_found_no_file_behind_one_that_did_waits_for_its_own_event() {
        // a's delete of 01-x found the file; b's, after b took the name,
        // found none (the file moved away: no IN_DELETE comes for it).
        let mut state = State::default();
        set_and_remove(&mut state, "a", 1, "01-x");
        set_and_remove(&mut state, "b", 1, "01-x");
        state.found_gone("01-x", false, 1);
        // a's IN_DELETE is a's, not b's: a read after it is b's.
        state.deleted("01-x");
        assert_eq!(state.read_removed("01-x", NOW).unwrap().fqdn, fqdn("b"));
        state.fence_passed(1);
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        assert!(state.gone.is_empty());
        // Unread: b's removed config goes at the fence.
        set_and_remove(&mut state, "a", 3, "01-x");
        set_and_remove(&mut state, "b", 3, "01-x");
        state.found_gone("01-x", false, 2);
        state.deleted("01-x");
        state.fence_passed(2);
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
    }

    #[test]
    fn a_mass_removal_and_its_deletes_leave_nothing_behind() {
        // 20,000 configs of an old epoch dropped at once: each removal and
        // each delete costs the client's own names, not every removal's.
        let mut state = State::default();
        let n = 20_000;
        for i in 0..n {
            set(
                &mut state,
                config(
                    &format!("m{i}"),
                    1,
                    &[&format!("01-m{i}"), &format!("uuid-m{i}")],
                ),
            );
        }
        for i in 0..n {
            assert!(remove(&mut state, &format!("m{i}"), 2).unwrap());
        }
        assert_eq!(
            (state.removed.len(), state.unconfirmed_deletes.len()),
            (n, 2 * n)
        );
        for i in 0..n {
            state.deleted(&format!("01-m{i}"));
            state.deleted(&format!("uuid-m{i}"));
        }
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        // Again, with half the files gone before the removals (their fence
        // comes after every IN_DELETE of the others, each of which looks
        // for a delete that found nothing at its name).
        for i in 0..n {
            let files = [format!("01-m{i}"), format!("uuid-m{i}")];
            let names = [files[0].as_str(), files[1].as_str()];
            set(&mut state, config(&format!("m{i}"), 3, &names));
        }
        for i in 0..n {
            assert!(remove(&mut state, &format!("m{i}"), 4).unwrap());
            if i % 2 == 0 {
                state.found_gone(&format!("01-m{i}"), false, 1);
                state.found_gone(&format!("uuid-m{i}"), false, 1);
            }
        }
        for i in (0..n).filter(|i| i % 2 == 1) {
            state.deleted(&format!("01-m{i}"));
            state.deleted(&format!("uuid-m{i}"));
        }
        state.fence_passed(1);
        assert!(state.unconfirmed_deletes.is_empty() && state.removed.is_empty());
        assert!(state.gone.is_empty());
    }

    #[test]
    fn a_restored_defused_read_never_sweeps_a_name_a_held_config_took() {
        // b's set took "01-x" from a's defused read; the journal still has
        // a's list as it was (the crash came before a's sweep).
        let mut state = State::default();
        set(&mut state, config("b", 1, &["01-x"]));
        let b = state.record(&fqdn("b"), None);
        let defused = Defused {
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision: 3,
            files: vec!["01-x".into(), "uuid-a".into()],
            epoch: Arc::from(""),
            read_at: NOW,
        };
        let restored = State::restore(
            vec![b],
            vec![(fqdn("a"), defused)],
            Arc::from(""),
            HashMap::new(),
        );
        assert_eq!(restored.defused_names(), ["uuid-a"]);
        assert_eq!(restored.owner("01-x"), Some(&fqdn("b")));
    }

    #[test]
    fn pages_follow_fqdn_order_and_filter_by_product() {
        let mut state = State::default();
        for (i, client) in ["d", "b", "a", "c"].iter().enumerate() {
            set(
                &mut state,
                config(client, i as u64 + 1, &[&format!("01-{client}")]),
            );
        }
        let mut other = config("e", 1, &["01-e"]);
        other.product_id = ProductId::parse("ubuntu", "p").unwrap();
        set(&mut state, other);
        let first = state.page(None, 2, None);
        let names: Vec<&str> = first.configs.iter().map(|c| c.fqdn.as_str()).collect();
        assert_eq!(names, ["a.example.org", "b.example.org"]);
        assert_eq!(first.next_after.as_deref(), Some("b.example.org"));
        assert_eq!(first.total, 5);
        assert_eq!(first.configs[0].since, NOW);
        let rest = state.page(first.next_after.as_deref(), 10, None);
        let names: Vec<&str> = rest.configs.iter().map(|c| c.fqdn.as_str()).collect();
        assert_eq!(names, ["c.example.org", "d.example.org", "e.example.org"]);
        assert_eq!(rest.next_after, None);
        let ubuntu = state.page(None, 10, Some("ubuntu"));
        assert_eq!(ubuntu.configs.len(), 1);
        assert_eq!(ubuntu.configs[0].fqdn, fqdn("e"));
        assert_eq!(ubuntu.total, 5, "the total counts every product");
    }

    #[test]
    fn pages_merge_held_configs_and_defused_reads_in_fqdn_order() {
        let defused = |revision| Defused {
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision,
            files: vec!["01-x".into()],
            epoch: Arc::from(""),
            read_at: NOW,
        };
        let mut state = State::restore(
            Vec::new(),
            ["b", "d", "f"].map(|c| (fqdn(c), defused(9))).to_vec(),
            Arc::from(""),
            HashMap::new(),
        );
        for client in ["a", "c", "d", "e"] {
            set(&mut state, config(client, 1, &[&format!("01-{client}")]));
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = state.page(after.as_deref(), 2, None);
            seen.extend(
                page.configs
                    .iter()
                    .map(|c| (c.fqdn.to_string(), c.revision)),
            );
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let want = [
            ("a", 1),
            ("b", 9),
            ("c", 1),
            ("d", 1),
            ("d", 9),
            ("e", 1),
            ("f", 9),
        ];
        let want: Vec<(String, u64)> = (want.iter())
            .map(|(c, r)| (format!("{c}.example.org"), *r))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn revisions_compare_within_an_epoch_and_a_new_epoch_is_news() {
        let mut state = State::default();
        let in_epoch = |client, revision, epoch: &str| {
            let mut c = config(client, revision, &[&format!("01-{client}")]);
            c.epoch = Arc::from(epoch);
            c
        };
        set(&mut state, in_epoch("a", 50, "e1"));
        assert_eq!(
            state.take_epoch_change(),
            None,
            "the first epoch is adopted"
        );
        assert_eq!(&**state.epoch(), "e1");
        match answer(state.plan_set(in_epoch("a", 40, "e1"))) {
            Err(WriterError::Stale { epoch, highest, .. }) => {
                assert_eq!((epoch.as_str(), highest), ("e1", 50))
            }
            other => panic!("expected stale, got {other:?}"),
        }
        // Another store: its revisions start afresh.
        set(&mut state, in_epoch("a", 3, "e2"));
        assert_eq!(state.take_epoch_change().as_deref(), Some("e2"));
        assert_eq!(state.take_epoch_change(), None);
        assert_eq!((state.highest("e1"), state.highest("e2")), (50, 3));
        // Configs of the old epoch not owed by the new store.
        set(&mut state, in_epoch("b", 60, "e1"));
        let keep = std::collections::HashSet::from([fqdn("a")]);
        assert_eq!(state.not_owed("e2", &keep), [fqdn("b")]);
    }

    /// Every store that ever pushed is an epoch: the depot keeps the
    /// current one's highest revision and those of the ones pushed last,
    /// [`KEPT_EPOCHS`] in all, however many callers named one.
    #[test]
    fn the_highest_revisions_of_a_bounded_number_of_epochs_are_kept() {
        let mut state = State::default();
        let push = |state: &mut State, epoch: String, revision| {
            let mut c = config("a", revision, &["01-a"]);
            c.epoch = Arc::from(epoch);
            set(state, c);
        };
        for i in 0..40u64 {
            push(&mut state, format!("e{i:02}"), 1_000 + i);
        }
        // The current store's clock behind every other's: it stays.
        push(&mut state, "late".into(), 5);
        assert_eq!(state.highest_all().len(), KEPT_EPOCHS);
        assert_eq!(state.highest("late"), 5);
        let first_kept = 40 - (KEPT_EPOCHS as u64 - 1);
        for i in 0..40u64 {
            let kept = state.highest(&format!("e{i:02}"));
            assert_eq!(kept, if i >= first_kept { 1_000 + i } else { 0 }, "e{i:02}");
        }
        // A journal of an older version, with every epoch: bounded at start.
        let many = (0..40u64)
            .map(|i| (Arc::from(format!("e{i:02}")), 1_000 + i))
            .collect();
        let restored = State::restore(Vec::new(), Vec::new(), Arc::from("e00"), many);
        assert_eq!(restored.highest_all().len(), KEPT_EPOCHS);
        assert_eq!(restored.highest("e00"), 1_000);
        assert_eq!(restored.highest("e39"), 1_039);
        assert_eq!(restored.highest("e24"), 0);
    }
}
