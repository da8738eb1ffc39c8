//! The writer's file work in the PXE directory: atomic writes (a temporary
//! file with a random name, created `O_CREAT|O_EXCL|O_NOFOLLOW` with the
//! configured mode and group, then renamed over the name; under names nothing
//! is at, a file without a name, `O_TMPFILE`, linked in whole), deletions,
//! defusing a read config that cannot be deleted, spreading a round's work
//! over a bounded number of blocking threads, and what start-up finds.
//! No file is opened through a symlink: creation is exclusive, an existing
//! file is opened `O_NOFOLLOW`, and rename and unlink act on the name itself.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rustix::fs::{AtFlags, Mode, OFlags};
use tracing::{error, warn};

use super::error::WriterError;
use super::ops::FileOps;
use crate::depot::marker::{self, Marker};

pub use crate::domain::TMP_PREFIX;

/// `O_NOFOLLOW` (std has no constant for it and the crate uses no libc):
/// the value on this architecture.
#[cfg(any(
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "powerpc",
    target_arch = "powerpc64"
))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "powerpc",
    target_arch = "powerpc64"
)))]
const O_NOFOLLOW: i32 = 0o400000;

/// The default mode of every PXE config: the TFTP server runs as another user.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Bytes of a file start-up reads to find a marker.
const HEAD: u64 = 512;

/// Who may read the written files: their mode, and a group to give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAccess {
    /// The mode (0644 or 0640).
    pub mode: u32,
    /// The group id, if the files get one (opsi: `opsiadmin`).
    pub group: Option<u32>,
}

impl Default for FileAccess {
    fn default() -> Self {
        Self {
            mode: DEFAULT_FILE_MODE,
            group: None,
        }
    }
}

/// A command's file work in two steps: its temporary files (invisible to
/// TFTP clients, which ask for config names), then the renames or links that
/// make them visible and the deletions. The first may run while the round is
/// being journaled; the second only after.
pub type Staged = Result<Temps, WriterError>;

/// A command's staged content, not visible under any config name yet.
#[derive(Debug)]
pub enum Temps {
    /// Temporary names in the directory, one per write, each renamed over
    /// its name.
    Named(Vec<PathBuf>),
    /// One file without a name (`O_TMPFILE`) holding the content of every
    /// write, linked in under each name. For names nothing is at (a new
    /// client's): a link is cheaper than a rename and the watch sees one
    /// `IN_CREATE` instead of a pair of move events; a crash before the link
    /// leaves nothing behind.
    Unnamed(fs::File),
}

/// Commands of one round that may stage a file without a name: each holds an
/// open descriptor until its links, and a round has up to 1,024 commands
/// (a service's default limit is 1,024 descriptors in all). The rest of the
/// round uses temporary names.
pub const UNNAMED_PER_ROUND: usize = 128;

/// Set once the file system or the system refused a file without a name
/// (no `O_TMPFILE` support, no `/proc`): named temporaries from then on.
static UNNAMED_OFF: AtomicBool = AtomicBool::new(false);

/// The process's umask, read once (`/proc/self/status`); `None` if unknown.
fn umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
    })
}

/// Whether a file created with `mode` needs it set again: the umask took
/// bits from it (or the umask is unknown). Saves a `fchmod` per config.
fn umask_narrows(mode: u32) -> bool {
    umask().is_none_or(|mask| mode & mask != 0)
}

/// Runs `work` on every item, spread over up to `threads` blocking
/// threads; one result per item, in order (a failed thread fails its items).
async fn spread<T, R>(
    items: Vec<T>,
    threads: usize,
    dir: &Path,
    work: impl Fn(T) -> Result<R, WriterError> + Send + Sync + 'static,
) -> Vec<Result<R, WriterError>>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let total = items.len();
    let chunk = total.div_ceil(threads.max(1)).max(1);
    let work = Arc::new(work);
    let mut items = items.into_iter();
    let mut tasks = Vec::new();
    loop {
        let part: Vec<T> = items.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let work = work.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter().map(|i| work(i)).collect::<Vec<_>>()
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

/// The first step of every command: its temporary files.
pub async fn stage_all(
    dir: Arc<PathBuf>,
    access: FileAccess,
    ops: Arc<Vec<FileOps>>,
    threads: usize,
) -> Vec<Staged> {
    let at = dir.clone();
    let staged = spread((0..ops.len()).collect(), threads, &at, move |i| {
        stage_at(&dir, None, access, &ops[i], i)
    });
    staged.await
}

/// What one command's file work did: the names it was to delete that were
/// gone already (no `IN_DELETE` will come for them).
pub type Published = Result<Vec<String>, WriterError>;

/// The second step of every command staged without error: renames and
/// deletions.
pub async fn publish_all(
    dir: Arc<PathBuf>,
    ops: Arc<Vec<FileOps>>,
    staged: Vec<Staged>,
    threads: usize,
) -> Vec<Published> {
    let at = dir.clone();
    let items: Vec<(usize, Staged)> = staged.into_iter().enumerate().collect();
    spread(items, threads, &at, move |(i, staged)| {
        publish(&dir, &ops[i], staged?)
    })
    .await
}

/// Runs every command's file operations, both steps, spread over up to
/// `threads` blocking threads; one result per command, in order.
#[cfg(test)]
pub async fn run_file_ops(
    dir: Arc<PathBuf>,
    access: FileAccess,
    ops: Vec<FileOps>,
    threads: usize,
) -> Vec<Published> {
    let ops = Arc::new(ops);
    let staged = stage_all(dir.clone(), access, ops.clone(), threads).await;
    publish_all(dir, ops, staged, threads).await
}

/// A fresh temporary name: the prefix and 64 random bits.
fn temporary(dir: &Path) -> PathBuf {
    dir.join(format!("{TMP_PREFIX}-{:016x}", rand::random::<u64>()))
}

/// One command's file work: every temporary file first (so a failure leaves
/// the old config whole), then the renames, then the deletions.
pub fn apply(dir: &Path, access: FileAccess, ops: &FileOps) -> Published {
    let tmps = stage(dir, access, ops)?;
    publish(dir, ops, tmps)
}

/// Writes the staged content of `ops`; on an error nothing is left.
///
/// A client's names carry one content: the first is written, the others
/// are hard links of it (one inode, one write; a read through any name is
/// a read of the config, and every name is deleted after it).
pub fn stage(dir: &Path, access: FileAccess, ops: &FileOps) -> Staged {
    stage_at(dir, None, access, ops, 0)
}

/// A handle on the PXE directory for one round's file work: files without
/// a name are created and linked in relative to it, not by walking the
/// whole path each time. Opened per round, so a directory recreated since
/// the last one is the one written to; `None` if it cannot be opened (the
/// paths are used).
pub fn round_dir(dir: &Path) -> Option<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(dir, flags, Mode::empty()).ok()
}

/// [`stage`] for the command at `position` in its round, relative to the
/// round's handle on `dir` if it has one: past [`UNNAMED_PER_ROUND`],
/// temporary names only.
pub fn stage_at(
    dir: &Path,
    at: Option<BorrowedFd<'_>>,
    access: FileAccess,
    ops: &FileOps,
    position: usize,
) -> Staged {
    if position < UNNAMED_PER_ROUND
        && let Some(content) = unnamed_content(ops)
    {
        match write_unnamed(dir, Target::new(dir, at, "."), content.as_bytes(), access) {
            Ok(Some(file)) => return Ok(Temps::Unnamed(file)),
            Ok(None) => {}
            // Named after the file it was to be (the directory's own path
            // is a failed file-work thread's: the writer tells them apart).
            Err(source) => {
                return Err(WriterError::Io {
                    path: dir.join(&ops.writes[0].0),
                    source,
                });
            }
        }
    }
    stage_named(dir, access, ops).map(Temps::Named)
}

/// The one content of a command whose writes may be a file without a name:
/// every name is new and all carry the same content.
fn unnamed_content(ops: &FileOps) -> Option<&Arc<str>> {
    let (_, first) = ops.writes.first()?;
    (ops.new_names
        && !UNNAMED_OFF.load(Ordering::Relaxed)
        && ops.writes.iter().all(|(_, c)| Arc::ptr_eq(c, first)))
    .then_some(first)
}

/// Writes `content` to a new file without a name in `dir`; `None` where the
/// file system cannot (the caller writes a named temporary instead).
fn write_unnamed(
    dir: &Path,
    target: Target<'_>,
    content: &[u8],
    access: FileAccess,
) -> io::Result<Option<fs::File>> {
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(
        target.at,
        target.path.as_ref(),
        flags,
        Mode::from_bits_truncate(access.mode),
    ) {
        Ok(fd) => fd,
        // No O_TMPFILE here (EOPNOTSUPP; EISDIR or EINVAL from kernels or
        // file systems that do not know it).
        Err(e)
            if matches!(
                e,
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL
            ) =>
        {
            UNNAMED_OFF.store(true, Ordering::Relaxed);
            warn!(dir = %dir.display(), error = %e, "files without a name are not supported here; configs are written under temporary names");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let mut file = fs::File::from(fd);
    file.write_all(content)?;
    set_access(&file, access)?;
    Ok(Some(file))
}

/// Gives a file just created the group and mode of `access`.
fn set_access(file: &fs::File, access: FileAccess) -> io::Result<()> {
    if let Some(gid) = access.group {
        std::os::unix::fs::fchown(file, None, Some(gid))?;
    }
    // The process umask may have narrowed the mode; the TFTP server runs as
    // another user and must be able to read the file.
    if umask_narrows(access.mode) {
        file.set_permissions(Permissions::from_mode(access.mode))?;
    }
    Ok(())
}

/// Links the file without a name in under `path`. Where a file is at that
/// name after all (planted, or left by the operator), links it to a
/// temporary name and renames that over it.
fn link_unnamed(dir: &Path, file: &fs::File, to: Target<'_>, path: &Path) -> io::Result<()> {
    match link_fd(file, &to) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => {
            let tmp = temporary(dir);
            link_fd(file, &Target::new(dir, None, &tmp))?;
            fs::rename(&tmp, path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        }
        Err(e) => {
            // No /proc, or a link refused: named temporaries from now on;
            // this command fails and is retried with them.
            let no_proc = e == rustix::io::Errno::NOENT && !Path::new("/proc/self/fd").is_dir();
            if no_proc || e == rustix::io::Errno::XDEV || e == rustix::io::Errno::PERM {
                UNNAMED_OFF.store(true, Ordering::Relaxed);
                warn!(error = %e, "a file without a name cannot be linked in here; configs are written under temporary names");
            }
            Err(e.into())
        }
    }
}

/// Set once a link by descriptor (`AT_EMPTY_PATH`, which needs
/// `CAP_DAC_READ_SEARCH`) was refused: links name the file through
/// `/proc/self/fd` from then on.
static BY_DESCRIPTOR_OFF: AtomicBool = AtomicBool::new(false);

/// A name in the PXE directory as a system call takes it: relative to the
/// round's handle on the directory, or the whole path without one.
struct Target<'a> {
    at: BorrowedFd<'a>,
    path: Cow<'a, Path>,
}

impl<'a> Target<'a> {
    /// `name` in `dir`, relative to `at` if given. An absolute `name` (a
    /// temporary's path) stands for itself either way.
    fn new(
        dir: &'a Path,
        at: Option<BorrowedFd<'a>>,
        name: &'a (impl AsRef<Path> + ?Sized),
    ) -> Self {
        let name = name.as_ref();
        match at {
            Some(at) => Self {
                at,
                path: Cow::Borrowed(name),
            },
            None => Self {
                at: rustix::fs::CWD,
                path: Cow::Owned(dir.join(name)),
            },
        }
    }
}

/// Links the open `file` in under `to`, by its descriptor where the depot
/// may (root: no walk through /proc), else through `/proc/self/fd`.
fn link_fd(file: &fs::File, to: &Target<'_>) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let by_proc = || {
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path.as_str(),
            to.at,
            to.path.as_ref(),
            AtFlags::SYMLINK_FOLLOW,
        )
    };
    if BY_DESCRIPTOR_OFF.load(Ordering::Relaxed) {
        return by_proc();
    }
    match rustix::fs::linkat(file, "", to.at, to.path.as_ref(), AtFlags::EMPTY_PATH) {
        // Without the capability the kernel answers ENOENT, as it does for
        // a missing directory: the other way tells which.
        Err(rustix::io::Errno::NOENT) => {
            let linked = by_proc();
            if linked.is_ok() {
                BY_DESCRIPTOR_OFF.store(true, Ordering::Relaxed);
            }
            linked
        }
        linked => linked,
    }
}

/// Writes the named temporary files of `ops`; on an error none is left.
fn stage_named(dir: &Path, access: FileAccess, ops: &FileOps) -> Result<Vec<PathBuf>, WriterError> {
    let mut tmps: Vec<PathBuf> = Vec::with_capacity(ops.writes.len());
    for (i, (_, content)) in ops.writes.iter().enumerate() {
        let tmp = temporary(dir);
        let same = ops.writes[..i]
            .iter()
            .position(|(_, earlier)| Arc::ptr_eq(earlier, content));
        let written = match same {
            Some(j) => link_or_write(&tmps[j], &tmp, content, access),
            None => write_new(&tmp, content.as_bytes(), access),
        };
        if let Err(source) = written {
            for t in tmps.iter().chain(std::iter::once(&tmp)) {
                let _ = fs::remove_file(t);
            }
            return Err(WriterError::Io { path: tmp, source });
        }
        tmps.push(tmp);
    }
    Ok(tmps)
}

/// Renames the staged temporary files over their names, then deletes; on
/// a failed rename the temporaries left are removed, and so are the names
/// renamed already.
pub fn publish(dir: &Path, ops: &FileOps, temps: Temps) -> Published {
    publish_at(dir, None, ops, temps)
}

/// [`publish`] relative to the round's handle on `dir`, if it has one.
pub fn publish_at(
    dir: &Path,
    at: Option<BorrowedFd<'_>>,
    ops: &FileOps,
    temps: Temps,
) -> Published {
    let tmps = match temps {
        Temps::Named(tmps) => tmps,
        Temps::Unnamed(file) => {
            for (i, (name, _)) in ops.writes.iter().enumerate() {
                let path = dir.join(name);
                let to = Target::new(dir, at, name.as_str());
                if let Err(source) = link_unnamed(dir, &file, to, &path) {
                    unpublish(dir, ops, &ops.writes[..i]);
                    return Err(WriterError::Io { path, source });
                }
            }
            return delete_all(dir, &ops.deletes).inspect_err(|_| unpublish(dir, ops, &ops.writes));
        }
    };
    for (i, (tmp, (name, _))) in tmps.iter().zip(&ops.writes).enumerate() {
        let path = dir.join(name);
        if let Err(source) = fs::rename(tmp, &path) {
            for t in &tmps[i..] {
                let _ = fs::remove_file(t);
            }
            unpublish(dir, ops, &ops.writes[..i]);
            return Err(WriterError::Io { path, source });
        }
    }
    delete_all(dir, &ops.deletes).inspect_err(|_| unpublish(dir, ops, &ops.writes))
}

/// Deletes the names a failed command renamed into place, if the command
/// is undone in the state and the journal (a set): the new config under
/// them would be bootable and known to nobody (no read reported, never
/// deleted). What they held before is gone already (the rename replaced
/// it); the command's retry writes them again. A rewrite keeps what it
/// wrote: its config stays held.
fn unpublish(dir: &Path, ops: &FileOps, landed: &[(String, Arc<str>)]) {
    if !ops.undone_on_failure {
        return;
    }
    for (name, _) in landed {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(file = %name, error = %e, "a PXE config file of a failed write could not be deleted")
            }
        }
    }
}

/// The name of fence `n`: a file the writer creates and deletes in the PXE
/// directory after a round whose deletes found no file (or whose file work
/// failed part-way: those made may have found none). The kernel queues
/// a directory's events in order, so when the fence's `IN_DELETE` is
/// handled, so are the events of everything before it — a client's read of
/// a file that was gone by the time we deleted it (someone else deleted it
/// first) among them. A temporary name: start-up removes one a crash left.
pub fn fence_name(n: u64) -> String {
    format!("{TMP_PREFIX}-fence-{n}")
}

/// The fence number of the file `name`, if it is a fence.
pub fn fence_of(name: &str) -> Option<u64> {
    name.strip_prefix(TMP_PREFIX)?
        .strip_prefix("-fence-")?
        .parse()
        .ok()
}

/// Creates and deletes fence `n` in `dir`. Someone else's delete of it
/// serves as well: it too comes after everything before the fence.
pub fn fence(dir: &Path, n: u64) -> io::Result<()> {
    let path = dir.join(fence_name(n));
    fs::File::create(&path)?;
    match fs::remove_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        removed => removed,
    }
}

/// Of a command's `deletes`, those its file work, failing with `error`,
/// may have made: those before the one it failed at ([`delete_all`] stops
/// there); none if it failed before its deletes (staging, linking,
/// renaming: the error names a file it writes); all if where is not known
/// (the error names `dir` itself: its thread failed).
pub fn deletes_made<'a>(dir: &Path, deletes: &'a [String], error: &WriterError) -> &'a [String] {
    match error {
        WriterError::Io { path, .. } if path.as_path() != dir => {
            let at = deletes.iter().position(|n| dir.join(n) == *path);
            &deletes[..at.unwrap_or(0)]
        }
        _ => deletes,
    }
}

/// Deletes `names`; a missing one is no error — unless `dir` itself is
/// missing (moved away, unmounted): a file that may come back with it is
/// not deleted, and a removal must not be taken as done. Returns the
/// missing ones.
pub fn delete_all(dir: &Path, names: &[String]) -> Published {
    let mut gone = Vec::new();
    for name in names {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir_missing(dir) => {
                return Err(WriterError::Io { path, source: e });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => gone.push(name.clone()),
            Err(source) => return Err(WriterError::Io { path, source }),
        }
    }
    Ok(gone)
}

/// Whether `dir` is gone (a name's NotFound then says nothing of the name):
/// moved away, or a symlink whose target is. (A mount point whose file
/// system was unmounted is an empty directory: not seen here.)
fn dir_missing(dir: &Path) -> bool {
    fs::metadata(dir).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
}

/// Links `path` to the staged `first` (`link` neither follows a symlink nor
/// replaces an existing name, like `O_EXCL|O_NOFOLLOW`); where the file
/// system has no hard links, writes it instead.
fn link_or_write(first: &Path, path: &Path, content: &str, access: FileAccess) -> io::Result<()> {
    match fs::hard_link(first, path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            write_new(path, content.as_bytes(), access)
        }
        linked => linked,
    }
}

/// Creates `path` (never through a symlink, never over an existing file)
/// with `content`, the mode and group of `access`.
fn write_new(path: &Path, content: &[u8], access: FileAccess) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(O_NOFOLLOW)
        .mode(access.mode)
        .open(path)?;
    file.write_all(content)?;
    set_access(&file, access)
}

/// Overwrites the existing file `name` in place (a read-only directory
/// still lets its files be written) with `content`; never through a symlink.
pub fn overwrite(dir: &Path, name: &str, content: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(O_NOFOLLOW)
        .open(dir.join(name))?;
    file.write_all(content.as_bytes())
}

/// Defuses the files of a read that could not all be deleted: each one
/// still there becomes `local` (a local-boot config). Returns the names
/// still present; an error is logged (the file may still boot the action).
pub fn defuse(dir: &Path, names: &[String], local: &str) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            match fs::symlink_metadata(dir.join(name)) {
                // The directory is away: its files may come back with it,
                // to be deleted then (the sweep's retries).
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir_missing(dir) => return true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
                _ => {}
            }
            if let Err(error) = overwrite(dir, name, local) {
                error!(file = %name, %error, "a read PXE config can neither be deleted nor defused; the client may boot it again");
            }
            true
        })
        .cloned()
        .collect()
}

/// The names among `names` in `dir` read since they were written: their
/// access time passed their modification time (Linux updates atime on the
/// first read after a write, even with relatime). Only a regular file at
/// the name itself counts: a directory or symlink there (a held file not
/// written again yet) is no config a client read.
pub fn read_since_written(dir: &Path, names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| {
            fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_file() && looks_read(&m))
        })
        .collect()
}

/// Whether a file's access time is past its modification time: read since
/// written.
fn looks_read(m: &fs::Metadata) -> bool {
    (m.atime(), m.atime_nsec()) > (m.mtime(), m.mtime_nsec())
}

/// Whether `name` is one the depot writes: a UUID, `01-` + MAC, or one of
/// its temporary files (the one rule, in `domain`, that template names are
/// checked against too).
pub fn is_managed_name(name: &str) -> bool {
    crate::domain::is_pxe_file_name(name)
}

/// What [`scan`] found in the PXE directory.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The config-like files, in name order.
    pub found: Vec<Found>,
    /// Those whose look set their access time past their modification time
    /// (see [`open_unseen`]), or whose access time is still the one an
    /// earlier start's look left: to a check, they look read; they were not.
    pub looked: HashSet<String>,
    /// Those files as this look leaves them, for the next start: one that
    /// cannot be written again fresh (a read-only or full directory) is
    /// still another user's file its access time past its modification
    /// time then.
    pub looks: Vec<Look>,
}

/// A file start-up looked at, its access time past its modification time
/// by that look alone: while its access time stays that, nothing read it
/// since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Look {
    dev: u64,
    ino: u64,
    atime: (i64, i64),
}

impl Look {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            atime: (m.atime(), m.atime_nsec()),
        }
    }

    fn file(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// One line of text, as the journal keeps it.
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.dev, self.ino, self.atime.0, self.atime.1
        )
    }

    /// A line of [`Self::to_line`]; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        let look = Self {
            dev: parts.next()?.parse().ok()?,
            ino: parts.next()?.parse().ok()?,
            atime: (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?),
        };
        parts.next().is_none().then_some(look)
    }
}

/// A config-like file found in the PXE directory at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// One of our temporary files.
    Temporary(String),
    /// A file with our marker.
    Ours(String, Marker),
    /// A config-like name without our marker: the operator's.
    Foreign(String),
}

/// The config-like regular files in `dir` (symlinks and directories are
/// never ours), with what their first lines say.
pub fn scan(dir: &Path, earlier: &HashSet<Look>) -> io::Result<Scanned> {
    let mut found = Vec::new();
    let mut looked = HashSet::new();
    let mut last_looks = HashMap::new();
    // A config's names are links to one file: the look at the first name
    // read makes the others look read too.
    let mut looked_files = HashSet::new();
    // Names whose file no stat came with their read.
    let mut without_stat = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_managed_name(&name) || !entry.file_type()?.is_file() {
            continue;
        }
        if name.starts_with(TMP_PREFIX) {
            found.push(Found::Temporary(name));
            continue;
        }
        let head = head(&dir.join(&name), earlier, !looked_files.is_empty()).ok();
        if let Some(look) = head.as_ref().and_then(|h| h.marked) {
            looked_files.insert(look.file());
            looked.insert(name.clone());
        }
        // Each looked file's access time as our last read of it left it
        // (with `strictatime` the read of each name moves it), stat'ed
        // right after that read — unless it moved since our previous read
        // (a client read it in between): then the look stays the one before,
        // so that the next start sees that read.
        if let Some(head) = &head
            && let Some(meta) = &head.after
            && looked_files.contains(&(meta.dev(), meta.ino()))
        {
            looked.insert(name.clone());
            let look = Look::of(meta);
            let ours = match (last_looks.get(&look.file()), head.before) {
                (Some(last), Some(before)) => *last == before,
                _ => true,
            };
            if ours {
                last_looks.insert(look.file(), look);
            }
        }
        if head.as_ref().is_none_or(|h| h.after.is_none()) {
            without_stat.push(name.clone());
        }
        match head.as_ref().and_then(|h| marker::find(&h.text)) {
            Some(m) => found.push(Found::Ours(name, m)),
            None => found.push(Found::Foreign(name)),
        }
    }
    // The other names of a looked file, by the file's own device and inode
    // (a directory entry's inode number is not that everywhere: FUSE, some
    // overlays): those the scan has no stat of (read before the first
    // look, or not read) get one, only when there was such a look.
    if !looked_files.is_empty() {
        for name in without_stat {
            if !looked.contains(&name)
                && let Ok(meta) = fs::symlink_metadata(dir.join(&name))
                && looked_files.contains(&(meta.dev(), meta.ino()))
            {
                looked.insert(name);
            }
        }
    }
    let looks = last_looks.into_values().collect();
    found.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    Ok(Scanned {
        found,
        looked,
        looks,
    })
}

/// Opens a file to read without following a symlink and, where the depot
/// may (it owns the file, or is root), without setting its access time: a
/// file's atime past its mtime is how a read is found that inotify did not
/// report (`read_since_written`), so the depot's own reads must not look
/// like one. (Its close is an IN_CLOSE_NOWRITE like a TFTP read: start-up
/// reads files before the watcher starts.) Also returns whether reading it
/// will look like a read all the same: another user's file (the
/// operator's, or ours from a run as another user), read as anyone reads
/// it, that was not read since written, or whose access time is still the
/// one `earlier` (an earlier start's look) left: then its look as it stands.
/// The last: such a file's look as it stands, marked or not.
fn open_unseen(
    path: &Path,
    earlier: &HashSet<Look>,
) -> io::Result<(fs::File, Option<Look>, Option<Look>)> {
    let noatime = rustix::fs::OFlags::NOATIME.bits() as i32;
    match OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | noatime)
        .open(path)
    {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(O_NOFOLLOW)
                .open(path)?;
            // Opening sets no access time; the first read will.
            let meta = file.metadata()?;
            let look = Look::of(&meta);
            let marked = !looks_read(&meta) || earlier.contains(&look);
            Ok((file, marked.then_some(look), Some(look)))
        }
        opened => opened.map(|file| (file, None, None)),
    }
}

/// The first bytes of a file (see [`open_unseen`]) as text. Lossy: the cut
/// at [`HEAD`] may split a character (an umlaut in a template), and the
/// marker line before it must still be found.
/// Also the file's look, before it, if the look sets its access time (see
/// [`open_unseen`]).
/// With `stat_after` (or when the read is such a look), also another
/// user's file's look just before the read and its metadata right after.
fn head(path: &Path, earlier: &HashSet<Look>, stat_after: bool) -> io::Result<Head> {
    let (file, marked, before) = open_unseen(path, earlier)?;
    let mut bytes = Vec::with_capacity(HEAD as usize);
    let mut reader = (&file).take(HEAD);
    reader.read_to_end(&mut bytes)?;
    // The text stands without it: a failed stat only loses the look.
    let after = (stat_after || marked.is_some())
        .then(|| file.metadata().ok())
        .flatten();
    Ok(Head {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        marked,
        before,
        after,
    })
}

/// What [`head`] read of a file.
struct Head {
    /// The first bytes, as text.
    text: String,
    /// The look the read made, if it sets the access time (see
    /// [`open_unseen`]).
    marked: Option<Look>,
    /// Another user's file's look just before the read.
    before: Option<Look>,
    /// The metadata right after the read, when asked for.
    after: Option<fs::Metadata>,
}

/// Whether file `name` in `dir` holds exactly `content`. A file that cannot
/// be read unseen (see [`open_unseen`]) is not read, and holds nothing: it
/// is written again, fresh.
pub fn holds(dir: &Path, name: &str, content: &str) -> bool {
    let Ok((file, None, _)) = open_unseen(&dir.join(name), &HashSet::new()) else {
        return false;
    };
    let mut text = String::new();
    file.take(content.len() as u64 + 1)
        .read_to_string(&mut text)
        .is_ok_and(|_| text == content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_survives_its_journal_line_and_nothing_else_passes_for_one() {
        let look = Look {
            dev: 2049,
            ino: 12,
            atime: (1_700_000_000, 999),
        };
        assert_eq!(Look::parse(&look.to_line()), Some(look));
        for bad in ["", "1 2 3", "1 2 3 4 5", "a 2 3 4", "1  2 3 4"] {
            assert_eq!(Look::parse(bad), None, "{bad:?}");
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A directory with a file in it where a config would go: its rename
    /// fails (even for root).
    fn obstacle(dir: &Path, name: &str) {
        fs::create_dir(dir.join(name)).unwrap();
        fs::write(dir.join(name).join("x"), "x").unwrap();
    }

    /// A new client's set: one content under its UUID and MAC names.
    fn new_client(uuid: &str, mac: &str, text: &str) -> FileOps {
        let content: Arc<str> = Arc::from(text);
        FileOps {
            writes: vec![(uuid.into(), content.clone()), (mac.into(), content)],
            new_names: true,
            undone_on_failure: true,
            ..FileOps::default()
        }
    }

    #[test]
    fn a_failed_command_made_the_deletes_before_the_one_it_failed_at_and_none_when_staging_failed()
    {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "c"] {
            fs::write(dir.path().join(name), "old").unwrap();
        }
        obstacle(dir.path(), "b");
        let deletes: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let error = delete_all(dir.path(), &deletes).unwrap_err();
        assert_eq!(deletes_made(dir.path(), &deletes, &error), ["a"]);
        assert!(dir.path().join("c").exists(), "not tried");
        // A new client's file without a name cannot be made (its directory
        // is gone): no delete was made.
        let gone = dir.path().join("gone");
        let ops = FileOps {
            deletes: deletes.clone(),
            ..new_client("uuid-x", "01-x", "text\n")
        };
        let error = apply(&gone, FileAccess::default(), &ops).unwrap_err();
        assert!(
            matches!(&error, WriterError::Io { path, .. } if *path == gone.join("uuid-x")),
            "the unnamed file's error names the file: {error}"
        );
        assert!(deletes_made(&gone, &deletes, &error).is_empty(), "{error}");
        // A failed thread: any of them.
        let thread = WriterError::Io {
            path: dir.path().to_path_buf(),
            source: io::Error::other("file I/O thread failed"),
        };
        assert_eq!(deletes_made(dir.path(), &deletes, &thread), deletes);
    }

    fn write(name: &str) -> FileOps {
        FileOps {
            writes: vec![(name.to_owned(), Arc::from("new\n"))],
            ..FileOps::default()
        }
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
        assert!(is_managed_name(
            &temporary(Path::new("/x"))
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        assert_ne!(temporary(Path::new("/x")), temporary(Path::new("/x")));
    }

    #[test]
    fn writes_are_renamed_into_place_with_mode_and_group_then_deletes_run() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("old"), "old").unwrap();
        let ops = FileOps {
            writes: vec![
                ("a".into(), Arc::from("text\n")),
                ("b".into(), Arc::from("text\n")),
            ],
            deletes: vec!["old".into(), "never-there".into()],
            ..FileOps::default()
        };
        let gid = fs::metadata(dir.path()).unwrap().gid();
        let access = FileAccess {
            mode: 0o640,
            group: Some(gid),
        };
        apply(dir.path(), access, &ops).unwrap();
        assert_eq!(names(dir.path()), ["a", "b"]);
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "text\n");
        let meta = fs::metadata(dir.path().join("b")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), gid);
        apply(dir.path(), FileAccess::default(), &write("c")).unwrap();
        let mode = fs::metadata(dir.path().join("c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, DEFAULT_FILE_MODE);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        obstacle(dir.path(), "b");
        // A rewrite (not undone when it fails: its config stays held)
        // keeps what it wrote.
        let mut ops = FileOps {
            writes: vec![
                ("a".into(), Arc::from("new")),
                ("b".into(), Arc::from("new")),
            ],
            ..FileOps::default()
        };
        assert!(apply(dir.path(), FileAccess::default(), &ops).is_err());
        assert_eq!(names(dir.path()), ["a", "b"], "no temporary left");
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "new");
        // A set is undone: it must not leave the new config under the name
        // renamed before the failure, where nothing would report its read
        // or delete it.
        fs::write(dir.path().join("a"), "old").unwrap();
        ops.undone_on_failure = true;
        match apply(dir.path(), FileAccess::default(), &ops) {
            Err(WriterError::Io { path, .. }) => assert_eq!(path, dir.path().join("b")),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert_eq!(names(dir.path()), ["b"]);
        // The same when a released name cannot be deleted after the renames.
        let released = FileOps {
            writes: vec![("c".into(), Arc::from("new"))],
            deletes: vec!["b".into()],
            undone_on_failure: true,
            new_names: false,
        };
        assert!(apply(dir.path(), FileAccess::default(), &released).is_err());
        assert_eq!(names(dir.path()), ["b"]);
        // Nothing can be created in a directory that is gone.
        let gone = dir.path().join("gone");
        assert!(apply(&gone, FileAccess::default(), &write("x")).is_err());
    }

    #[test]
    fn a_planted_symlink_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let pxe = dir.path().join("pxe");
        fs::create_dir(&pxe).unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, pxe.join("01-02-00-00-00-00-01")).unwrap();
        // Defusing opens the existing file: refused through the symlink.
        let left = defuse(&pxe, &["01-02-00-00-00-00-01".to_owned()], "local\n");
        assert_eq!(left, ["01-02-00-00-00-00-01"]);
        assert!(overwrite(&pxe, "01-02-00-00-00-00-01", "x").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        // A write renames over the link itself.
        apply(&pxe, FileAccess::default(), &write("01-02-00-00-00-00-01")).unwrap();
        let meta = fs::symlink_metadata(pxe.join("01-02-00-00-00-00-01")).unwrap();
        assert!(meta.file_type().is_file(), "the symlink was replaced");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        // A start-up scan does not read through one either.
        std::os::unix::fs::symlink(&target, pxe.join("01-02-00-00-00-00-02")).unwrap();
        let found = scan(&pxe, &HashSet::new()).unwrap().found;
        assert_eq!(found, [Found::Foreign("01-02-00-00-00-00-01".into())]);
    }

    #[test]
    fn a_clients_names_are_one_file_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let content: Arc<str> = Arc::from("set timeout=0\n");
        let other: Arc<str> = Arc::from("set timeout=0\n");
        let ops = FileOps {
            writes: vec![
                ("uuid-a".into(), content.clone()),
                ("01-a".into(), content),
                ("01-b".into(), other),
            ],
            ..FileOps::default()
        };
        apply(dir.path(), FileAccess::default(), &ops).unwrap();
        let ino = |name: &str| fs::metadata(dir.path().join(name)).unwrap().ino();
        assert_eq!(ino("uuid-a"), ino("01-a"), "one inode for one content");
        assert_ne!(ino("01-a"), ino("01-b"), "equal text, another content");
        for name in ["uuid-a", "01-a", "01-b"] {
            let meta = fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, DEFAULT_FILE_MODE);
            assert_eq!(
                fs::read_to_string(dir.path().join(name)).unwrap(),
                "set timeout=0\n"
            );
        }
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn new_names_are_linked_in_from_a_file_without_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let gid = fs::metadata(dir.path()).unwrap().gid();
        let access = FileAccess {
            mode: 0o640,
            group: Some(gid),
        };
        let ops = new_client("uuid-a", "01-a", "set timeout=0\n");
        let staged = stage(dir.path(), access, &ops).unwrap();
        assert!(matches!(staged, Temps::Unnamed(_)), "{staged:?}");
        assert!(
            names(dir.path()).is_empty(),
            "nothing named before the links"
        );
        publish(dir.path(), &ops, staged).unwrap();
        assert_eq!(names(dir.path()), ["01-a", "uuid-a"]);
        let meta = |name: &str| fs::metadata(dir.path().join(name)).unwrap();
        assert_eq!(meta("uuid-a").ino(), meta("01-a").ino(), "one inode");
        assert_eq!(meta("01-a").permissions().mode() & 0o777, 0o640);
        assert_eq!(meta("01-a").gid(), gid);
        assert_eq!(
            meta("01-a").nlink(),
            2,
            "the unnamed file has no other name"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("uuid-a")).unwrap(),
            "set timeout=0\n"
        );
        // Names a config holds are renamed over, from named temporaries.
        let again = FileOps {
            new_names: false,
            ..ops
        };
        let staged = stage(dir.path(), access, &again).unwrap();
        assert!(
            matches!(&staged, Temps::Named(t) if t.len() == 2),
            "{staged:?}"
        );
        publish(dir.path(), &again, staged).unwrap();
        assert_eq!(names(dir.path()), ["01-a", "uuid-a"]);
    }

    #[tokio::test]
    async fn a_round_holds_a_bounded_number_of_files_without_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let n = UNNAMED_PER_ROUND + 20;
        let ops: Vec<FileOps> = (0..n)
            .map(|i| FileOps {
                new_names: true,
                ..write(&format!("01-{i}"))
            })
            .collect();
        let staged = stage_all(
            Arc::new(dir.path().to_path_buf()),
            FileAccess::default(),
            Arc::new(ops),
            2,
        )
        .await;
        let unnamed = staged
            .iter()
            .filter(|s| matches!(s, Ok(Temps::Unnamed(_))))
            .count();
        assert_eq!(unnamed, UNNAMED_PER_ROUND);
        assert_eq!(
            names(dir.path()).len(),
            20,
            "the rest under temporary names"
        );
    }

    #[test]
    fn a_new_name_taken_after_all_is_replaced_and_a_symlink_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("01-a")).unwrap();
        let ops = FileOps {
            writes: vec![("01-a".into(), Arc::from("new\n"))],
            new_names: true,
            ..FileOps::default()
        };
        apply(dir.path(), FileAccess::default(), &ops).unwrap();
        let meta = fs::symlink_metadata(dir.path().join("01-a")).unwrap();
        assert!(meta.file_type().is_file(), "the symlink was replaced");
        assert_eq!(
            fs::read_to_string(dir.path().join("01-a")).unwrap(),
            "new\n"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(names(dir.path()), ["01-a", "precious"], "no temporary left");
        // A name that cannot be replaced (a directory) fails the set, and
        // the name linked before it is deleted again.
        obstacle(dir.path(), "01-b");
        let ops = new_client("uuid-b", "01-b", "new\n");
        match apply(dir.path(), FileAccess::default(), &ops) {
            Err(WriterError::Io { path, .. }) => assert_eq!(path, dir.path().join("01-b")),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert_eq!(names(dir.path()), ["01-a", "01-b", "precious"]);
    }

    #[test]
    fn start_up_tells_ours_from_the_operators() {
        let dir = tempfile::tempdir().unwrap();
        let fqdn = crate::domain::Fqdn::parse("pc1.example.org", "f").unwrap();
        let ours = marker::stamp("default x\n", &fqdn, 5);
        fs::write(dir.path().join("01-00-16-3e-aa-bb-cc"), &ours).unwrap();
        fs::write(dir.path().join(".pxeconf-tmp-1234"), "x").unwrap();
        fs::write(
            dir.path().join("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
            "default op\n",
        )
        .unwrap();
        fs::write(dir.path().join("pxelinux.0"), "loader").unwrap();
        obstacle(dir.path(), "01-00-16-3e-aa-bb-dd");
        let found = scan(dir.path(), &HashSet::new()).unwrap().found;
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.contains(&Found::Temporary(".pxeconf-tmp-1234".into())));
        assert!(found.contains(&Found::Foreign(
            "7c9e6679-7425-40de-944b-e07fc1f90ae7".into()
        )));
        assert!(found.iter().any(
            |f| matches!(f, Found::Ours(n, m) if n == "01-00-16-3e-aa-bb-cc" && m.revision == 5)
        ));
        assert!(holds(dir.path(), "01-00-16-3e-aa-bb-cc", &ours));
        assert!(!holds(dir.path(), "01-00-16-3e-aa-bb-cc", "default x\n"));
        assert!(!holds(dir.path(), "missing", ""));
    }

    #[test]
    fn only_a_regular_file_at_the_name_can_have_been_read() {
        let dir = tempfile::tempdir().unwrap();
        let (file, sub) = ("01-02-00-00-00-00-01", "01-02-00-00-00-00-02");
        std::fs::write(dir.path().join(file), "x").unwrap();
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("x"), "x").unwrap();
        // Read both after their last change: a later access time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read(dir.path().join(file)).unwrap();
        std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .for_each(drop);
        let names = vec![file.to_owned(), sub.to_owned()];
        assert_eq!(read_since_written(dir.path(), names), [file]);
    }

    #[test]
    fn a_character_cut_at_the_head_keeps_a_file_ours() {
        let dir = tempfile::tempdir().unwrap();
        let fqdn = crate::domain::Fqdn::parse("pc1.example.org", "f").unwrap();
        let stamped = marker::stamp("default x\n", &fqdn, 7);
        // A two-byte 'ä' across byte HEAD: the head ends inside it.
        let pad = HEAD as usize - 1 - stamped.len();
        let ours = format!("{stamped}{}ä more\n", "#".repeat(pad));
        assert!(!ours.is_char_boundary(HEAD as usize));
        fs::write(dir.path().join("01-00-16-3e-aa-bb-cc"), &ours).unwrap();
        let found = scan(dir.path(), &HashSet::new()).unwrap().found;
        assert!(
            matches!(&found[..], [Found::Ours(n, m)] if n == "01-00-16-3e-aa-bb-cc" && m.revision == 7),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn a_rounds_work_is_spread_over_threads_with_one_result_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        obstacle(dir.path(), "bad");
        let ops: Vec<FileOps> = ["a", "b", "bad", "c", "d"]
            .iter()
            .map(|n| write(n))
            .collect();
        let dir = Arc::new(dir.path().to_path_buf());
        let results = run_file_ops(dir, FileAccess::default(), ops, 2).await;
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, false, true, true]);
    }
}
