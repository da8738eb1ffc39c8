//! The writer's state, without I/O: which client holds which config under
//! which file names, the last revision seen per client, and how a command is
//! planned against that state and its outcome committed to it. The task
//! (`super::task`) runs each round's file work between plan and commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::error::{SeenState, WriterError};
use super::messages::{ConfigInfo, ConfigPage, ReadEvent, Rendered, SetOutcome};
use crate::domain::{ActionRequest, Fqdn, ProductId};

/// A config the depot holds.
struct Held {
    product_id: ProductId,
    action_request: ActionRequest,
    revision: u64,
    files: Vec<String>,
    template: String,
    since: SystemTime,
}

/// The last revision the depot saw for a client and what became of it; kept
/// after a read or removal so that a late, older push cannot resurrect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    revision: u64,
    state: SeenState,
}

/// The file work of one command, relative to the PXE directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileOps {
    /// Files to write (atomically), with their content.
    pub writes: Vec<(String, Arc<str>)>,
    /// Files to delete; a missing one is no error.
    pub deletes: Vec<String>,
}

/// A command planned against the state, waiting for its file work.
#[derive(Debug)]
pub enum Op {
    /// Write a client's config, deleting the names it no longer uses.
    Set {
        /// The config.
        config: Rendered,
        /// Names the client held before and gives up now.
        released: Vec<String>,
    },
    /// Delete a client's config.
    Remove {
        /// The client.
        fqdn: Fqdn,
        /// The revision of the removal (0: unversioned).
        revision: u64,
    },
    /// The client read its config: delete all of its files.
    Read {
        /// The client.
        fqdn: Fqdn,
    },
}

impl Op {
    /// The client the command is about.
    pub fn fqdn(&self) -> &Fqdn {
        match self {
            Op::Set { config, .. } => &config.fqdn,
            Op::Remove { fqdn, .. } | Op::Read { fqdn } => fqdn,
        }
    }
}

/// A command with its file work and the round keys it occupies.
#[derive(Debug)]
pub struct Planned {
    op: Op,
    files: FileOps,
    keys: Vec<String>,
}

/// What planning a set came to.
#[derive(Debug)]
pub enum SetPlan {
    /// Files to write.
    Write(Planned),
    /// An answer without file work: a refusal, or the outcome of an exact
    /// repeat of the held revision.
    Answer(Result<SetOutcome, WriterError>),
}

/// What committing a command came to.
#[derive(Debug)]
pub enum Committed {
    /// The answer to a set.
    Set(Result<SetOutcome, WriterError>),
    /// The answer to a removal: whether a config was held.
    Remove(Result<bool, WriterError>),
    /// A read to report, unless the config was gone already.
    Read(Option<ReadEvent>),
}

/// Commands planned together: no two touch the same client or file name, so
/// their file work can run in parallel and commit in any order. `T` is what
/// the caller keeps with each command (its reply channel).
#[derive(Debug)]
pub struct Round<T> {
    keys: HashSet<String>,
    entries: Vec<(Op, FileOps, T)>,
}

impl<T> Default for Round<T> {
    fn default() -> Self {
        Self {
            keys: HashSet::new(),
            entries: Vec::new(),
        }
    }
}

impl<T> Round<T> {
    /// Whether any of `keys` is already taken by a command in the round.
    pub fn touches(&self, keys: &[String]) -> bool {
        keys.iter().any(|k| self.keys.contains(k))
    }

    /// Adds a planned command; the caller checked `touches` first.
    pub fn push(&mut self, planned: Planned, tag: T) {
        self.keys.extend(planned.keys);
        self.entries.push((planned.op, planned.files, tag));
    }

    /// Whether the round holds no command.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the round, handing out its commands in order.
    pub fn take(&mut self) -> Vec<(Op, FileOps, T)> {
        self.keys.clear();
        std::mem::take(&mut self.entries)
    }
}

/// Every config the depot holds, who owns which file name, and the last
/// revision seen per client.
#[derive(Default)]
pub struct State {
    held: BTreeMap<Fqdn, Held>,
    owners: HashMap<String, Fqdn>,
    seen: HashMap<Fqdn, Seen>,
    /// Renames we made whose IN_MOVED_TO has not come back yet: a read of such
    /// a name seen now was a read of the version we replaced.
    unconfirmed_moves: HashMap<String, u32>,
}

fn client_key(fqdn: &Fqdn) -> String {
    // File names never contain '/', so this cannot collide with one.
    format!("client/{fqdn}")
}

impl State {
    /// How many configs are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The round keys of a client: itself and the files it holds.
    pub fn client_keys(&self, fqdn: &Fqdn) -> Vec<String> {
        let mut keys = vec![client_key(fqdn)];
        if let Some(h) = self.held.get(fqdn) {
            keys.extend(h.files.iter().cloned());
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
        };
        let keys = self.set_keys(&config);
        SetPlan::Write(Planned {
            op: Op::Set { config, released },
            files,
            keys,
        })
    }

    /// Plans removing a client's config; refused when `revision` is older
    /// than the one seen.
    pub fn plan_remove(&self, fqdn: Fqdn, revision: u64) -> Result<Planned, WriterError> {
        if let Some(err) = self.check_revision(&fqdn, revision) {
            return Err(err);
        }
        let deletes = self.held_files(&fqdn);
        Ok(Planned {
            keys: self.client_keys(&fqdn),
            op: Op::Remove { fqdn, revision },
            files: FileOps {
                writes: Vec::new(),
                deletes,
            },
        })
    }

    /// The client holding file `name`, if any.
    pub fn owner(&self, name: &str) -> Option<&Fqdn> {
        self.owners.get(name)
    }

    /// Whether a read of `name` now would be a read of a version we have
    /// since replaced (our rename has not been seen yet).
    pub fn is_replaced(&self, name: &str) -> bool {
        self.unconfirmed_moves.contains_key(name)
    }

    /// Plans consuming a client's config after its read: all its files go.
    pub fn plan_read(&self, fqdn: Fqdn) -> Planned {
        Planned {
            keys: self.client_keys(&fqdn),
            files: FileOps {
                writes: Vec::new(),
                deletes: self.held_files(&fqdn),
            },
            op: Op::Read { fqdn },
        }
    }

    /// Our rename of `name` was seen by the watcher.
    pub fn moved(&mut self, name: &str) {
        if let Some(n) = self.unconfirmed_moves.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.unconfirmed_moves.remove(name);
            }
        }
    }

    /// Forgets renames not seen yet: after the kernel dropped events they
    /// will never be.
    pub fn forget_moves(&mut self) {
        self.unconfirmed_moves.clear();
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
            Op::Remove { fqdn, revision } => {
                Committed::Remove(result.map(|()| self.commit_remove(&fqdn, revision)))
            }
            // A read whose files could not all be deleted is still a read:
            // the client is booting its action.
            Op::Read { fqdn } => Committed::Read(self.commit_read(fqdn)),
        }
    }

    /// A page of held configs after the FQDN `after`, of `product` if given.
    pub fn page(&self, after: Option<&str>, limit: usize, product: Option<&str>) -> ConfigPage {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut configs: Vec<ConfigInfo> = Vec::new();
        let mut next_after = None;
        for (fqdn, held) in self.held.range::<str, _>((start, Bound::Unbounded)) {
            if product.is_some_and(|p| p != held.product_id.as_str()) {
                continue;
            }
            if configs.len() == limit {
                next_after = configs.last().map(|c| c.fqdn.to_string());
                break;
            }
            configs.push(ConfigInfo {
                fqdn: fqdn.clone(),
                product_id: held.product_id.clone(),
                action_request: held.action_request,
                files: held.files.clone(),
                template: held.template.clone(),
                since: held.since,
                revision: held.revision,
            });
        }
        ConfigPage {
            configs,
            next_after,
            total: self.held.len(),
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
            {
                // A retried push of what we hold: answer as if written.
                return Some(Ok(SetOutcome {
                    files: held.files.clone(),
                    template: held.template.clone(),
                    revision: held.revision,
                }));
            }
            if let Some(seen) = self.seen.get(&config.fqdn) {
                let repeat_of_gone =
                    seen.revision == config.revision && seen.state != SeenState::Held;
                if config.revision < seen.revision || repeat_of_gone {
                    return Some(Err(WriterError::Stale {
                        fqdn: config.fqdn.clone(),
                        got: config.revision,
                        held: seen.revision,
                        state: seen.state,
                    }));
                }
            }
        }
        self.check_names(config).map(Err)
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

    fn check_revision(&self, fqdn: &Fqdn, revision: u64) -> Option<WriterError> {
        let seen = self.seen.get(fqdn)?;
        (revision > 0 && revision < seen.revision).then(|| WriterError::Stale {
            fqdn: fqdn.clone(),
            got: revision,
            held: seen.revision,
            state: seen.state,
        })
    }

    fn commit_set(&mut self, config: Rendered, released: &[String], now: SystemTime) -> SetOutcome {
        for name in released {
            self.owners.remove(name);
        }
        for name in &config.files {
            self.owners.insert(name.clone(), config.fqdn.clone());
            *self.unconfirmed_moves.entry(name.clone()).or_default() += 1;
        }
        if config.revision > 0 {
            self.seen.insert(
                config.fqdn.clone(),
                Seen {
                    revision: config.revision,
                    state: SeenState::Held,
                },
            );
        }
        let outcome = SetOutcome {
            files: config.files.clone(),
            template: config.template.clone(),
            revision: config.revision,
        };
        self.held.insert(
            config.fqdn,
            Held {
                product_id: config.product_id,
                action_request: config.action_request,
                revision: config.revision,
                files: config.files,
                template: config.template,
                since: now,
            },
        );
        outcome
    }

    /// Forgets the client's config; true if one was held. A failed removal
    /// never gets here: the files may be partly gone, and keeping all of
    /// them lets a retry delete the rest.
    fn commit_remove(&mut self, fqdn: &Fqdn, revision: u64) -> bool {
        let removed = self.forget(fqdn).is_some();
        if revision > 0 {
            let removal = Seen {
                revision,
                state: SeenState::Removed,
            };
            let seen = self.seen.entry(fqdn.clone()).or_insert(removal);
            if revision >= seen.revision {
                *seen = removal;
            }
        }
        removed
    }

    fn commit_read(&mut self, fqdn: Fqdn) -> Option<ReadEvent> {
        let held = self.forget(&fqdn)?;
        if held.revision > 0 {
            self.seen.insert(
                fqdn.clone(),
                Seen {
                    revision: held.revision,
                    state: SeenState::Read,
                },
            );
        }
        Some(ReadEvent {
            fqdn,
            product_id: held.product_id,
            revision: held.revision,
            action_request: held.action_request,
        })
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
        let p = state.plan_remove(fqdn(client), revision)?;
        match state.commit(p.op, Ok(()), NOW) {
            Committed::Remove(result) => result,
            other => panic!("expected a removal, got {other:?}"),
        }
    }

    fn read(state: &mut State, name: &str) -> Option<ReadEvent> {
        let owner = state.owner(name)?.clone();
        let p = state.plan_read(owner);
        match state.commit(p.op, Ok(()), NOW) {
            Committed::Read(read) => read,
            other => panic!("expected a read, got {other:?}"),
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
        assert_eq!(again, first);
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
        let p = state.plan_remove(fqdn("a"), 2).unwrap();
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
            stale_state(state.plan_remove(fqdn("a"), 1).map(|_| ())),
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
    fn a_round_holds_commands_that_touch_nothing_in_common() {
        let mut state = State::default();
        set(&mut state, config("a", 1, &["01-a"]));
        let mut round: Round<u32> = Round::default();
        assert!(round.is_empty());
        round.push(planned(state.plan_set(config("b", 1, &["01-b"]))), 7);
        assert!(round.touches(&state.set_keys(&config("b", 2, &["01-b"]))));
        assert!(round.touches(&state.client_keys(&fqdn("b"))));
        assert!(!round.touches(&state.client_keys(&fqdn("a"))));
        assert!(round.touches(&state.set_keys(&config("c", 1, &["01-b"]))));
        round.push(state.plan_read(fqdn("a")), 8);
        let entries = round.take();
        assert!(round.is_empty());
        assert!(
            !round.touches(&state.client_keys(&fqdn("b"))),
            "keys cleared"
        );
        let tags: Vec<(&Fqdn, u32)> = entries.iter().map(|(op, _, t)| (op.fqdn(), *t)).collect();
        assert_eq!(tags, [(&fqdn("b"), 7), (&fqdn("a"), 8)]);
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
}
