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

/// Prefix of the writer's temporary files; never a PXE config name.
pub const TMP_PREFIX: &str = ".pxeconf-tmp-";

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
        let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
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
/// its temporary files.
pub fn is_managed_name(name: &str) -> bool {
    if name.starts_with(TMP_PREFIX) {
        return true;
    }
    let is_mac_name = name.len() == 20
        && name.starts_with("01-")
        && name[3..].split('-').all(|o| {
            o.len() == 2
                && o.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    let is_uuid_name = crate::domain::SystemUuid::parse(name, "").is_ok_and(|u| u.as_str() == name);
    is_mac_name || is_uuid_name
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
