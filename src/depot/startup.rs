//! The PXE directory at start-up, against the journal: every held config's
//! files are there with their content (written again if not), our leftovers
//! (temporary files, configs the journal no longer holds, found by their
//! marker when the journal was lost) go, and config-like files that are not
//! ours stay — named in one warning.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::marker::{self, Format, Marker};
use super::writer::{
    FileAccess, FileOps, Found, Look, delete_all, holds, overwrite, read_since_written, scan,
};

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
        Some(format!(
            "{} config-like file(s) in the PXE directory are not pxeconf's (no marker line) and were kept: {}",
            self.foreign.len(),
            shown(&self.foreign)
        ))
    }
}

/// The first [`SHOWN`] of `names` for a log line, and how many more: a
/// directory of 100,000 files must not make a line of megabytes.
pub fn shown(names: &[String]) -> String {
    let first: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
    match names.len().saturating_sub(SHOWN) {
        0 => first.join(", "),
        more => format!("{} and {more} more", first.join(", ")),
    }
}

/// What start-up found in the PXE directory, before it changes anything.
#[derive(Debug, Default)]
pub struct Survey {
    /// Our leftovers to remove: temporary files (no marker) and configs the
    /// journal no longer holds.
    leftovers: Vec<(String, Option<Marker>)>,
    /// Held files (indices into the held list) that do not hold their
    /// content: written again.
    stale: Vec<usize>,
    /// Config-like files that are not ours.
    foreign: Vec<String>,
    /// The versions clients read while the depot was down (access time
    /// past modification time) among the files [`prepare`] will write over
    /// (an older version of a held config: the depot was killed between
    /// journaling the newer one and its rename) or remove (a config the
    /// journal no longer holds), by their markers. Their reads are
    /// journaled before `prepare` runs: once a file is gone, so is the
    /// evidence of its read.
    pub read_while_down: Vec<Marker>,
    /// The files this look set the access time of (another user's), for the
    /// next start (see `Scanned::looks`): journaled before `prepare` runs.
    pub looks: Vec<Look>,
}

/// Surveys `dir` against the journal, changing nothing: `held` are the held
/// files with their content, `defused` the files of reads still to delete
/// (their sweep deletes them). `reads_kept`: access times tell reads (see
/// `Journal::atime_kept`); `earlier` the looks the last start journaled.
/// Blocking.
pub fn survey(
    dir: &Path,
    held: &[(String, Arc<str>)],
    defused: &[String],
    reads_kept: bool,
    earlier: &HashSet<Look>,
) -> std::io::Result<Survey> {
    let mut survey = Survey::default();
    let held_names: HashSet<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
    let defused: HashSet<&str> = defused.iter().map(String::as_str).collect();
    let mut held_markers = std::collections::HashMap::new();
    let scanned = scan(dir, earlier)?;
    survey.looks = scanned.looks;
    // Files start-up's look made look read (another user's): not read.
    let looked = &scanned.looked;
    for found in scanned.found {
        match found {
            Found::Temporary(name) => survey.leftovers.push((name, None)),
            Found::Ours(name, marker) if !held_names.contains(name.as_str()) => {
                if !defused.contains(name.as_str()) {
                    survey.leftovers.push((name, Some(marker)));
                }
            }
            Found::Foreign(name) if !held_names.contains(name.as_str()) => {
                if !defused.contains(name.as_str()) {
                    survey.foreign.push(name);
                }
            }
            Found::Ours(name, marker) => {
                held_markers.insert(name, marker);
            }
            Found::Foreign(_) => {}
        }
    }
    // The version a file's marker names, if a client read it while the
    // depot was down. A config pushed by hand (revision 0) names none; a
    // local-boot file (a read's, defused) boots no action.
    let read = |name: &str, marker: &Marker| {
        (reads_kept
            && marker.revision > 0
            && !marker.local_boot
            && !looked.contains(name)
            && !read_since_written(dir, vec![name.to_owned()]).is_empty())
        .then(|| marker.clone())
    };
    for (name, marker) in &survey.leftovers {
        let version = marker.as_ref().and_then(|m| read(name, m));
        survey.read_while_down.extend(version);
    }
    for (i, (name, content)) in held.iter().enumerate() {
        // One our look made look read is written again, fresh: else the
        // read check after start would take it for a client's read.
        if !looked.contains(name.as_str()) && holds(dir, name, content) {
            continue;
        }
        if let Some(marker) = held_markers.get(name)
            && let Some(version) = read(name, marker)
        {
            // The held version itself (its content differs, not its
            // revision): left for the read check after start, which takes it
            // as the read of the held config.
            if marker::find(content).is_some_and(|m| m.revision == version.revision) {
                continue;
            }
            survey.read_while_down.push(version);
        }
        survey.stale.push(i);
    }
    Ok(survey)
}

/// Brings `dir` in line with the journal as `survey` (of the same `held`)
/// found it: our leftovers go, stale held files are written again.
/// Blocking.
pub fn prepare(
    dir: &Path,
    held: &[(String, Arc<str>)],
    survey: Survey,
    access: FileAccess,
) -> std::io::Result<Prepared> {
    let mut prepared = Prepared {
        foreign: survey.foreign,
        ..Prepared::default()
    };
    for (name, marker) in survey.leftovers {
        match delete_all(dir, std::slice::from_ref(&name)) {
            Ok(_) => prepared.removed += 1,
            // A config the journal no longer holds was read (or removed): if
            // the depot died between journaling the read and defusing the
            // file it could not delete, the file still boots the action.
            Err(_) => match marker.map(|m| defuse(dir, &name, &m)) {
                None | Some(Ok(())) => prepared.kept.push(name),
                Some(Err(_)) => prepared.stuck.push(name),
            },
        }
    }
    for (name, content) in survey.stale.into_iter().filter_map(|i| held.get(i)) {
        let ops = FileOps {
            writes: vec![(name.clone(), content.clone())],
            ..FileOps::default()
        };
        match super::writer::apply(dir, access, &ops) {
            Ok(_) => prepared.rewritten += 1,
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
        let prepared = survey_and_prepare(dir.path(), &held, &["01-02-00-00-00-00-03".to_owned()]);
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

    #[test]
    fn a_log_line_names_the_first_files_and_counts_the_rest() {
        let names: Vec<String> = (0..100_000).map(|n| format!("01-{n:012x}")).collect();
        assert_eq!(shown(&names[..2]), "01-000000000000, 01-000000000001");
        let line = shown(&names);
        assert!(line.ends_with(", 01-000000000013 and 99980 more"), "{line}");
        assert!(line.len() < 400);
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
        let prepared = survey_and_prepare(dir.path(), &held, &[]);
        assert_eq!(prepared.unwritten, [blocked]);
        assert_eq!(prepared.rewritten, 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(free)).unwrap(),
            *content
        );
    }

    fn survey_and_prepare(dir: &Path, held: &[(String, Arc<str>)], defused: &[String]) -> Prepared {
        let found = survey(dir, held, defused, true, &HashSet::new()).unwrap();
        prepare(dir, held, found, FileAccess::default()).unwrap()
    }

    /// Marks `path` read after it was written (access time past
    /// modification time), as a client's read while the depot was down.
    fn read_later(path: &Path) {
        let now = std::time::SystemTime::now();
        let times = std::fs::FileTimes::new()
            .set_accessed(now)
            .set_modified(now - std::time::Duration::from_secs(10));
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_times(times).unwrap();
    }

    /// Files start-up writes over or removes that a client read while the
    /// depot was down are reads of the versions their markers name: an
    /// older version of a held config (killed between journaling the newer
    /// one and its rename), a config no longer held. The held version
    /// itself, read, is left for the read check after start; files not read
    /// and configs pushed by hand (revision 0) are no reads.
    #[test]
    fn files_read_while_down_that_start_up_replaces_or_removes_are_reads() {
        let dir = tempfile::tempdir().unwrap();
        let fqdn = |n: u32| Fqdn::parse(&format!("pc{n}.example.org"), "f").unwrap();
        let stamp = |n: u32, revision| -> Arc<str> {
            marker::stamp(&format!("default r{revision}\n"), &fqdn(n), revision).into()
        };
        let w = |name: &str, text: &str, read: bool| {
            std::fs::write(dir.path().join(name), text).unwrap();
            if read {
                read_later(&dir.path().join(name));
            }
        };
        // pc1 holds revision 5; revision 4 is on disk, read.
        w("01-02-00-00-00-00-01", &stamp(1, 4), true);
        // pc2 holds revision 7; 6 is on disk, not read.
        w("01-02-00-00-00-00-02", &stamp(2, 6), false);
        // pc3 holds revision 9, on disk with other content, read.
        w(
            "01-02-00-00-00-00-03",
            &format!("{}tampered\n", stamp(3, 9)),
            true,
        );
        // pc4's revision 2 and a hand-pushed config, no longer held, read.
        w("01-02-00-00-00-00-04", &stamp(4, 2), true);
        w("01-02-00-00-00-00-05", &stamp(5, 0), true);
        let held =
            [(1, 5), (2, 7), (3, 9)].map(|(n, r)| (format!("01-02-00-00-00-00-0{n}"), stamp(n, r)));
        let surveyed =
            |reads_kept| survey(dir.path(), &held, &[], reads_kept, &HashSet::new()).unwrap();
        let found = surveyed(true);
        let mut read: Vec<(String, u64)> = (found.read_while_down.iter())
            .map(|m| (m.fqdn.clone(), m.revision))
            .collect();
        read.sort();
        assert_eq!(
            read,
            [
                ("pc1.example.org".to_owned(), 4),
                ("pc4.example.org".to_owned(), 2)
            ]
        );
        // The survey changed nothing; the files go or are written over after.
        assert!(std::fs::read_to_string(dir.path().join("01-02-00-00-00-00-04")).is_ok());
        prepare(dir.path(), &held, found, FileAccess::default()).unwrap();
        let on_disk =
            |n: u32| std::fs::read_to_string(dir.path().join(format!("01-02-00-00-00-00-0{n}")));
        assert_eq!(*on_disk(1).unwrap(), *stamp(1, 5));
        assert_eq!(*on_disk(2).unwrap(), *stamp(2, 7));
        assert!(
            on_disk(3).unwrap().ends_with("tampered\n"),
            "left for the read check"
        );
        assert!(on_disk(4).is_err() && on_disk(5).is_err());
        // Without access times that tell reads, nothing is a read; nor is a
        // local-boot file (a read's, defused) read since.
        w("01-02-00-00-00-00-01", &stamp(1, 4), true);
        assert!(surveyed(false).read_while_down.is_empty());
        let clean = tempfile::tempdir().unwrap();
        let local = clean.path().join("01-02-00-00-00-00-06");
        std::fs::write(
            &local,
            marker::local_boot(marker::Format::Pxelinux, fqdn(6), 3),
        )
        .unwrap();
        read_later(&local);
        assert!(
            survey(clean.path(), &[], &[], true, &HashSet::new())
                .unwrap()
                .read_while_down
                .is_empty()
        );
    }
}
