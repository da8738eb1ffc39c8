//! The PXE directory at start-up, against the journal: every held config's
//! files are there with their content (written again if not), our leftovers
//! (temporary files, configs the journal no longer holds, found by their
//! marker when the journal was lost) go, and config-like files that are not
//! ours stay — named in one warning.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::marker::{self, Format, Marker};
use super::writer::{FileAccess, FileOps, Found, delete_all, holds, overwrite, scan};

/// Names shown in the warning about operator files; the rest are counted.
const SHOWN: usize = 20;

/// What start-up did in the PXE directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Held configs' files written again (missing or changed).
    pub rewritten: usize,
    /// Our leftovers removed.
    pub removed: usize,
    /// Our leftovers that could not be removed and boot no action:
    /// temporary files, and configs overwritten to boot locally (kept,
    /// named in a warning: a stale file must not keep the depot from
    /// starting, nor boot its action again).
    pub kept: Vec<String>,
    /// Our leftovers that could neither be removed nor defused (kept,
    /// named in a warning).
    pub stuck: Vec<String>,
    /// Config-like files that are not ours, kept.
    pub foreign: Vec<String>,
    /// Held configs' files that could not be written again (the directory
    /// unwritable or full): named in an error line; the writer writes them
    /// at its sweeps until it can. One such file must not keep the depot
    /// from starting: down, it would see and report no read of the others.
    pub unwritten: Vec<String>,
}

impl Prepared {
    /// The one warning line about operator files, if any.
    pub fn foreign_warning(&self) -> Option<String> {
        if self.foreign.is_empty() {
            return None;
        }
        let shown: Vec<&str> = self
            .foreign
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect();
        let more = self.foreign.len().saturating_sub(SHOWN);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "{} config-like file(s) in the PXE directory are not pxeconf's (no marker line) and were kept: {}{tail}",
            self.foreign.len(),
            shown.join(", ")
        ))
    }
}

/// Brings `dir` in line with the journal: `held` are the held files with
/// their content, `defused` the files of reads still to delete (their
/// sweep deletes them). Blocking.
pub fn prepare(
    dir: &Path,
    held: &[(String, Arc<str>)],
    defused: &[String],
    access: FileAccess,
) -> std::io::Result<Prepared> {
    let mut prepared = Prepared::default();
    let held_names: HashSet<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
    let defused: HashSet<&str> = defused.iter().map(String::as_str).collect();
    let mut leftovers = Vec::new();
    for found in scan(dir)? {
        match found {
            Found::Temporary(name) => leftovers.push((name, None)),
            Found::Ours(name, marker) if !held_names.contains(name.as_str()) => {
                if !defused.contains(name.as_str()) {
                    leftovers.push((name, Some(marker)));
                }
            }
            Found::Foreign(name) if !held_names.contains(name.as_str()) => {
                if !defused.contains(name.as_str()) {
                    prepared.foreign.push(name);
                }
            }
            Found::Ours(..) | Found::Foreign(_) => {}
        }
    }
    for (name, marker) in leftovers {
        match delete_all(dir, std::slice::from_ref(&name)) {
            Ok(()) => prepared.removed += 1,
            // A config the journal no longer holds was read (or removed): if
            // the depot died between journaling the read and defusing the
            // file it could not delete, the file still boots the action.
            Err(_) => match marker.map(|m| defuse(dir, &name, &m)) {
                None | Some(Ok(())) => prepared.kept.push(name),
                Some(Err(_)) => prepared.stuck.push(name),
            },
        }
    }
    for (name, content) in held {
        if holds(dir, name, content) {
            continue;
        }
        let ops = FileOps {
            writes: vec![(name.clone(), content.clone())],
            ..FileOps::default()
        };
        match super::writer::apply(dir, access, &ops) {
            Ok(()) => prepared.rewritten += 1,
            Err(_) => prepared.unwritten.push(name.clone()),
        }
    }
    Ok(prepared)
}

/// Overwrites our file `name` with a local-boot config in its format,
/// unless it is one already.
fn defuse(dir: &Path, name: &str, marker: &Marker) -> std::io::Result<()> {
    let bytes = std::fs::read(dir.join(name))?;
    let content = String::from_utf8_lossy(&bytes);
    let local = marker::local_boot(Format::of(&content), &marker.fqdn, marker.revision);
    if content == local {
        return Ok(());
    }
    overwrite(dir, name, &local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::depot::marker;
    use crate::domain::Fqdn;

    #[test]
    fn held_files_come_back_ours_go_and_the_operators_stay() {
        let dir = tempfile::tempdir().unwrap();
        let fqdn = Fqdn::parse("pc1.example.org", "f").unwrap();
        let held_content: Arc<str> = marker::stamp("default held\n", &fqdn, 3).into();
        let held = vec![
            ("01-02-00-00-00-00-01".to_owned(), held_content.clone()),
            (
                "00000000-0000-4000-8000-000000000001".to_owned(),
                held_content.clone(),
            ),
        ];
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        // One held file changed on disk, the other missing.
        w("01-02-00-00-00-00-01", "default tampered\n");
        // Our leftovers: a temporary file and a config no longer held.
        w(".pxeconf-tmp-00ff", "x");
        w(
            "01-02-00-00-00-00-02",
            &marker::stamp("default old\n", &fqdn, 1),
        );
        // A defused read still to delete (its sweep does that).
        w(
            "01-02-00-00-00-00-03",
            &marker::local_boot(marker::Format::Pxelinux, &fqdn, 2),
        );
        // The operator's files.
        w("01-02-00-00-00-00-04", "default operator\n");
        w("pxelinux.0", "loader");
        let prepared = prepare(
            dir.path(),
            &held,
            &["01-02-00-00-00-00-03".to_owned()],
            FileAccess::default(),
        )
        .unwrap();
        assert_eq!(prepared.rewritten, 2);
        assert_eq!(prepared.removed, 2);
        assert!(prepared.stuck.is_empty());
        assert_eq!(prepared.foreign, ["01-02-00-00-00-00-04"]);
        let warning = prepared.foreign_warning().unwrap();
        assert!(warning.contains("01-02-00-00-00-00-04"), "{warning}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "00000000-0000-4000-8000-000000000001",
                "01-02-00-00-00-00-01",
                "01-02-00-00-00-00-03",
                "01-02-00-00-00-00-04",
                "pxelinux.0"
            ]
        );
        for (name, content) in &held {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(name)).unwrap(),
                **content
            );
        }
        assert_eq!(Prepared::default().foreign_warning(), None);
    }

    /// A held file that cannot be written (a non-empty directory at its
    /// name) is named for the writer's sweep; the others are written and
    /// start-up goes on. Before, it failed start-up as a whole.
    #[test]
    fn a_held_file_that_cannot_be_written_is_left_to_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let fqdn = Fqdn::parse("pc1.example.org", "f").unwrap();
        let content: Arc<str> = marker::stamp("default held\n", &fqdn, 3).into();
        let (blocked, free) = ("01-02-00-00-00-00-01", "01-02-00-00-00-00-02");
        std::fs::create_dir(dir.path().join(blocked)).unwrap();
        std::fs::write(dir.path().join(blocked).join("x"), "x").unwrap();
        let held = [blocked, free].map(|n| (n.to_owned(), content.clone()));
        let prepared = prepare(dir.path(), &held, &[], FileAccess::default()).unwrap();
        assert_eq!(prepared.unwritten, [blocked]);
        assert_eq!(prepared.rewritten, 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(free)).unwrap(),
            *content
        );
    }
}
