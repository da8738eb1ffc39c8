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
