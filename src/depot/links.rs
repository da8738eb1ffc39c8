//! Which trace wrote each held config, so that the span of its read can
//! link to it: the read happens minutes or days after the push, in a trace
//! of its own (read → report → the action becomes `none`), and the link
//! leads from there back to the push (admin call → push → render → write).
//!
//! Kept in memory only, and only while traces are exported: the journal
//! does not carry it (a field in every held record, written on every set,
//! for a link). So a read links to its push when the config was pushed
//! since the depot started; a read of a config the journal restored, or
//! one pushed while traces were off, has no link.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::domain::Fqdn;

/// client → the revision last written and the `traceparent` of its push:
/// at most one entry per client written since the start (a read takes it;
/// a removal leaves it until the client's next set overwrites it).
#[derive(Debug, Default)]
pub struct PushLinks {
    // A B-tree: a hash table's doubling would hold every handler behind the
    // lock while it rehashes (see the writer's `State`).
    written: Mutex<BTreeMap<Fqdn, (u64, String)>>,
}

impl PushLinks {
    /// Notes that the current span (a push's handler) wrote `revision` of
    /// `fqdn`'s config; nothing when traces are not exported.
    pub fn note(&self, fqdn: &Fqdn, revision: u64) {
        if !crate::telemetry::exporting() {
            return;
        }
        let Some(traceparent) = crate::telemetry::current_traceparent() else {
            return;
        };
        if let Ok(mut written) = self.written.lock() {
            written.insert(fqdn.clone(), (revision, traceparent));
        }
    }

    /// The `traceparent` of the push that wrote the `revision` of `fqdn`
    /// that was read, if noted; forgotten then (a config is read once), as
    /// is a note of an older revision.
    pub fn take(&self, fqdn: &Fqdn, revision: u64) -> Option<String> {
        let mut written = self.written.lock().ok()?;
        match written.get(fqdn) {
            // A read of an older revision than the one written since: the
            // note belongs to the newer one.
            Some((noted, _)) if *noted > revision => None,
            Some((noted, _)) if *noted == revision => written.remove(fqdn).map(|(_, tp)| tp),
            Some(_) => {
                written.remove(fqdn);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_takes_the_note_of_its_revision_once() {
        let links = PushLinks::default();
        let fqdn = Fqdn::parse("client1.example.org", "fqdn").unwrap();
        let note = |revision: u64| {
            links
                .written
                .lock()
                .unwrap()
                .insert(fqdn.clone(), (revision, format!("tp{revision}")));
        };
        note(5);
        assert_eq!(links.take(&fqdn, 4), None, "an older read keeps the note");
        assert_eq!(links.take(&fqdn, 5), Some("tp5".into()));
        assert_eq!(links.take(&fqdn, 5), None, "taken once");
        note(6);
        assert_eq!(links.take(&fqdn, 7), None);
        assert!(
            links.written.lock().unwrap().is_empty(),
            "a stale note goes"
        );
    }
}
