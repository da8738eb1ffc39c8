//! Reads whose files could not be deleted: defused with a local-boot
//! config, their deletes retried (swept) until the files are gone.

use super::super::messages::ReadEvent;
use super::super::ops::{FileOps, Op, Planned};
use super::super::records::Defused;
use super::State;
use crate::domain::Fqdn;

impl State {
    /// Plans deleting the files of a defused read again.
    pub fn plan_sweep(&self, fqdn: Fqdn) -> Option<Planned> {
        let defused = self.defused.get(&fqdn)?;
        Some(Planned {
            keys: self.client_keys(&fqdn),
            files: FileOps {
                deletes: defused.files.clone(),
                ..FileOps::default()
            },
            op: Op::Sweep { fqdn },
        })
    }

    /// Clients with a defused read.
    pub fn defused_clients(&self) -> Vec<Fqdn> {
        self.defused.keys().cloned().collect()
    }

    /// A read whose files could not all be deleted: the files still there
    /// (defused with a local-boot config) are deleted again later.
    pub fn defuse(&mut self, read: &ReadEvent, files: Vec<String>) {
        if files.is_empty() {
            return;
        }
        self.defused.insert(
            read.fqdn.clone(),
            Defused {
                product_id: read.product_id.clone(),
                action_request: read.action_request,
                revision: read.revision,
                files,
                epoch: read.epoch.clone(),
                read_at: read.read_at,
            },
        );
    }

    /// Names written now are no defused read's any more: its delete must not
    /// take the new config.
    pub(super) fn release_defused(&mut self, names: &[String]) {
        if self.defused.is_empty() {
            return;
        }
        for defused in self.defused.values_mut() {
            defused.files.retain(|f| !names.contains(f));
        }
        // An emptied entry stays until its sweep commits: that reports the
        // files gone.
    }

    /// The defused read's files are gone: reported again, files gone.
    pub(super) fn commit_sweep(&mut self, fqdn: Fqdn) -> Option<ReadEvent> {
        let d = self.defused.remove(&fqdn)?;
        Some(ReadEvent {
            fqdn,
            product_id: d.product_id,
            revision: d.revision,
            action_request: d.action_request,
            epoch: d.epoch,
            files_present: false,
            read_at: d.read_at,
        })
    }
}
