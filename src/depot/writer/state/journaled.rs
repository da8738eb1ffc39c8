//! The state as the journal keeps it: restored at start-up, one client's
//! record after a commit, and a snapshot taken before a commit to undo it
//! when its file work fails.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::ops::Op;
use super::super::records::{ClientRecord, Defused, Held, Seen};
use super::{Deletes, Moves, State};
use crate::depot::marker::Format;
use crate::domain::Fqdn;

/// A client's part of the state before a commit, to undo it.
#[derive(Debug)]
pub struct Snapshot {
    fqdn: Fqdn,
    held: Option<Held>,
    seen: Option<Seen>,
    defused: Option<Defused>,
    owners: Vec<(String, Option<Fqdn>)>,
    moves: Vec<(String, Option<Moves>)>,
    deletes: Vec<(String, Option<Deletes>)>,
    /// The number a removal committed next takes.
    removal: Option<u64>,
}

impl Snapshot {
    /// The client.
    pub fn fqdn(&self) -> &Fqdn {
        &self.fqdn
    }

    /// The format of the config it held, if one.
    pub fn held_format(&self) -> Option<Format> {
        self.held.as_ref().map(|h| h.format)
    }
}

impl State {
    /// The state the journal kept: clients, defused reads, the current
    /// epoch and the highest revision per epoch.
    pub fn restore(
        clients: Vec<ClientRecord>,
        defused: Vec<(Fqdn, Defused)>,
        epoch: Arc<str>,
        highest: HashMap<Arc<str>, u64>,
    ) -> Self {
        let mut state = State {
            epoch,
            highest,
            defused: defused.into_iter().collect(),
            ..State::default()
        };
        for record in clients {
            if let Some(seen) = record.seen {
                state.seen.insert(record.fqdn.clone(), seen);
            }
            if let Some(held) = record.held {
                for name in &held.files {
                    state.owners.insert(name.clone(), record.fqdn.clone());
                }
                state.held.insert(record.fqdn, held);
            }
        }
        // A name a set took over from a defused read is released in memory
        // only (the journal keeps the read's list until its sweep): after a
        // crash in between, the sweep must not delete the held config.
        let owners = &state.owners;
        for defused in state.defused.values_mut() {
            defused.files.retain(|f| !owners.contains_key(f));
        }
        // A journal of a version that kept every epoch.
        state.forget_old_epochs();
        state
    }

    /// What the journal keeps of `fqdn` now; `content` is the held config's
    /// when it is new (a set), else the journal keeps the one it has.
    pub fn record(&self, fqdn: &Fqdn, content: Option<Arc<str>>) -> ClientRecord {
        let held = self.held.get(fqdn).cloned();
        ClientRecord {
            fqdn: fqdn.clone(),
            seen: self.seen.get(fqdn).cloned(),
            content: content.filter(|_| held.is_some()),
            held,
        }
    }

    /// The files of defused reads.
    pub fn defused_names(&self) -> Vec<String> {
        self.defused
            .values()
            .flat_map(|d| d.files.clone())
            .collect()
    }

    /// The client's part of the state, before `op` commits.
    pub fn snapshot(&self, op: &Op) -> Snapshot {
        let fqdn = op.fqdn().clone();
        let mut names = self.client_keys(&fqdn);
        names.remove(0);
        if let Op::Set { config, .. } = op {
            names.extend(config.files.iter().cloned());
        }
        Snapshot {
            held: self.held.get(&fqdn).cloned(),
            seen: self.seen.get(&fqdn).cloned(),
            defused: self.defused.get(&fqdn).cloned(),
            owners: names
                .iter()
                .map(|n| (n.clone(), self.owners.get(n).cloned()))
                .collect(),
            moves: names
                .iter()
                .map(|n| (n.clone(), self.unconfirmed_moves.get(n).cloned()))
                .collect(),
            deletes: names
                .iter()
                .map(|n| (n.clone(), self.unconfirmed_deletes.get(n).cloned()))
                .collect(),
            // A removal takes a number only if it removes a held config.
            removal: (matches!(op, Op::Remove { .. }) && self.held.contains_key(&fqdn))
                .then_some(self.next_removal),
            fqdn,
        }
    }

    /// Undoes a commit: the client's part as in `snapshot`.
    pub fn rollback(&mut self, snapshot: Snapshot) {
        let Snapshot {
            fqdn,
            held,
            seen,
            defused,
            owners,
            moves,
            deletes,
            removal,
        } = snapshot;
        for (name, n) in deletes {
            match n {
                Some(n) => self.unconfirmed_deletes.insert(name, n),
                None => self.unconfirmed_deletes.remove(&name),
            };
        }
        if let Some(removal) = removal {
            self.removed.remove(&removal);
        }
        for (name, owner) in owners {
            match owner {
                Some(o) => self.owners.insert(name, o),
                None => self.owners.remove(&name),
            };
        }
        for (name, n) in moves {
            match n {
                Some(n) => self.unconfirmed_moves.insert(name, n),
                None => self.unconfirmed_moves.remove(&name),
            };
        }
        match held {
            Some(h) => self.held.insert(fqdn.clone(), h),
            None => self.held.remove(&fqdn),
        };
        match seen {
            Some(s) => self.seen.insert(fqdn.clone(), s),
            None => self.seen.remove(&fqdn),
        };
        match defused {
            Some(d) => self.defused.insert(fqdn, d),
            None => self.defused.remove(&fqdn),
        };
    }
}
