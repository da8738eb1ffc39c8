//! A round: commands planned together, no two touching the same client or
//! file name, so that their file work can run in parallel and commit in any
//! order.

use std::collections::HashSet;

use super::ops::{FileOps, Op, Planned};

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
        let (op, files, keys) = planned.into_parts();
        self.keys.extend(keys);
        self.entries.push((op, files, tag));
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::depot::writer::messages::Rendered;
    use crate::depot::writer::ops::SetPlan;
    use crate::depot::writer::state::State;
    use crate::domain::{ActionRequest, Fqdn, ProductId};

    fn fqdn(name: &str) -> Fqdn {
        Fqdn::parse(&format!("{name}.example.org"), "fqdn").unwrap()
    }

    fn config(client: &str, revision: u64, file: &str) -> Rendered {
        Rendered {
            fqdn: fqdn(client),
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision,
            files: vec![file.to_owned()],
            content: Arc::from("x"),
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

    #[test]
    fn a_round_holds_commands_that_touch_nothing_in_common() {
        let mut state = State::default();
        let (op, _, _) = planned(state.plan_set(config("a", 1, "01-a"))).into_parts();
        state.commit(op, Ok(()), SystemTime::UNIX_EPOCH);
        let mut round: Round<u32> = Round::default();
        assert!(round.is_empty());
        round.push(planned(state.plan_set(config("b", 1, "01-b"))), 7);
        assert!(round.touches(&state.set_keys(&config("b", 2, "01-b"))));
        assert!(round.touches(&state.client_keys(&fqdn("b"))));
        assert!(!round.touches(&state.client_keys(&fqdn("a"))));
        assert!(round.touches(&state.set_keys(&config("c", 1, "01-b"))));
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
}
