//! The writer's file work in the PXE directory: atomic writes (temporary
//! file, rename, mode 0644), deletions, spreading a round's work over a
//! bounded number of blocking threads, and the start-up clean-up.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::error;

use super::error::WriterError;
use super::state::FileOps;

pub use crate::domain::TMP_PREFIX;

/// The mode of every PXE config: the TFTP server runs as another user.
const FILE_MODE: u32 = 0o644;

/// Runs every command's file operations, spread over up to `threads`
/// blocking threads; one result per command, in order.
pub async fn run_file_ops(
    dir: Arc<PathBuf>,
    ops: Vec<FileOps>,
    threads: usize,
) -> Vec<Result<(), WriterError>> {
    let total = ops.len();
    let chunk = total.div_ceil(threads.max(1)).max(1);
    let mut ops = ops.into_iter();
    let mut tasks = Vec::new();
    loop {
        let part: Vec<FileOps> = ops.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let dir = dir.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.iter().map(|o| apply(&dir, o)).collect::<Vec<_>>()
        }));
    }
    let mut results = Vec::with_capacity(total);
    for task in tasks {
        match task.await {
            Ok(part) => results.extend(part),
            Err(join) => {
                error!(error = %join, "file I/O thread failed");
                while results.len() < total {
                    results.push(Err(WriterError::Io {
                        path: dir.to_path_buf(),
                        source: io::Error::other("file I/O thread failed"),
                    }));
                }
                break;
            }
        }
    }
    results
}

/// One command's file work: every temporary file first (so a failure leaves
/// the old config whole), then the renames, then the deletions.
pub fn apply(dir: &Path, ops: &FileOps) -> Result<(), WriterError> {
    let mut tmps = Vec::with_capacity(ops.writes.len());
    for (name, content) in &ops.writes {
        let tmp = dir.join(format!("{TMP_PREFIX}-{name}"));
        if let Err(source) = write_file(&tmp, content.as_bytes()) {
            for t in tmps.iter().chain(std::iter::once(&tmp)) {
                let _ = fs::remove_file(t);
            }
            return Err(WriterError::Io { path: tmp, source });
        }
        tmps.push(tmp);
    }
    for (tmp, (name, _)) in tmps.iter().zip(&ops.writes) {
        let path = dir.join(name);
        fs::rename(tmp, &path).map_err(|source| WriterError::Io { path, source })?;
    }
    for name in &ops.deletes {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(WriterError::Io { path, source }),
        }
    }
    Ok(())
}

fn write_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.write_all(content)?;
    // The process umask may have narrowed the mode; the TFTP server runs as
    // another user and must be able to read the file.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
}

/// The names among `names` in `dir` read since they were written: their
/// access time passed their modification time (Linux updates atime on the
/// first read after a write, even with relatime).
pub fn read_since_written(dir: &Path, names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| {
            fs::metadata(dir.join(name))
                .is_ok_and(|m| (m.atime(), m.atime_nsec()) > (m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// Whether `name` is one the depot writes: a UUID, `01-` + MAC, or one of
/// its temporary files (the one rule, in `domain`, that template names are
/// checked against too).
pub fn is_managed_name(name: &str) -> bool {
    crate::domain::is_pxe_file_name(name)
}

/// Removes PXE configs left by an earlier run: at start-up the depot holds
/// nothing, and such files would boot a client into a stale action. Other
/// files in the directory are left alone. Returns how many were removed.
pub fn remove_stale(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_managed_name(name) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn managed_names_are_macs_uuids_and_our_temporaries() {
        for name in [
            "01-00-16-3e-aa-bb-cc",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            ".pxeconf-tmp-01-00-16-3e-aa-bb-cc",
        ] {
            assert!(is_managed_name(name), "{name}");
        }
        for name in [
            "pxelinux.0",
            "install",
            "default",
            "01-00-16-3E-AA-BB-CC",
            "01-00-16-3e-aa-bb",
            "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
        ] {
            assert!(!is_managed_name(name), "{name}");
        }
    }

    #[test]
    fn writes_are_renamed_into_place_with_mode_0644_then_deletes_run() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("old"), "old").unwrap();
        let ops = FileOps {
            writes: vec![
                ("a".into(), Arc::from("text\n")),
                ("b".into(), Arc::from("text\n")),
            ],
            deletes: vec!["old".into(), "never-there".into()],
        };
        apply(dir.path(), &ops).unwrap();
        assert_eq!(names(dir.path()), ["a", "b"]);
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "text\n");
        let mode = fs::metadata(dir.path().join("b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
    }

    #[test]
    fn a_failed_write_leaves_the_old_files_whole_and_removes_its_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        // A directory where the second temporary file would go.
        fs::create_dir(dir.path().join(format!("{TMP_PREFIX}-b"))).unwrap();
        let ops = FileOps {
            writes: vec![
                ("a".into(), Arc::from("new")),
                ("b".into(), Arc::from("new")),
            ],
            deletes: vec!["a".into()],
        };
        assert!(matches!(
            apply(dir.path(), &ops),
            Err(WriterError::Io { .. })
        ));
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "old");
        // The temporary of `a` is gone; only the obstacle is left.
        assert_eq!(
            names(dir.path()),
            [format!("{TMP_PREFIX}-b"), "a".to_string()]
        );
    }

    #[test]
    fn stale_configs_go_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "01-00-16-3e-aa-bb-cc",
            ".pxeconf-tmp-x",
            "pxelinux.0",
            "install",
        ] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        fs::create_dir(dir.path().join("7c9e6679-7425-40de-944b-e07fc1f90ae7")).unwrap();
        assert_eq!(remove_stale(dir.path()).unwrap(), 2);
        assert_eq!(
            names(dir.path()),
            [
                "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                "install",
                "pxelinux.0"
            ]
        );
    }

    #[tokio::test]
    async fn a_rounds_work_is_spread_over_threads_with_one_result_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(format!("{TMP_PREFIX}-bad"))).unwrap();
        let ops: Vec<FileOps> = ["a", "b", "bad", "c", "d"]
            .iter()
            .map(|n| FileOps {
                writes: vec![(n.to_string(), Arc::from("x"))],
                deletes: Vec::new(),
            })
            .collect();
        let results = run_file_ops(Arc::new(dir.path().to_path_buf()), ops, 2).await;
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, false, true, true]);
    }
}
