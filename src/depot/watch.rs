//! The read watcher: one inotify instance with one watch on the PXE
//! directory, for every client at once (opsi's per-client watches hit the
//! kernel's 128-instance limit), and one on its parent.
//!
//! `IN_CLOSE_NOWRITE` on a file is a read that ended: the TFTP server opened
//! the file and closed it without writing. `IN_MOVED_TO` comes from our own
//! atomic writes and lets the writer tell a read of a replaced version apart.
//!
//! The watch survives the directory: when it is deleted or moved away, the
//! watcher waits for it to come back (the parent's watch says so at once, a
//! check each second catches the rest), watches the new one and has the
//! writer write every held config again. If the new one cannot be watched
//! the task fails, and with it the depot (health NOT_SERVING, exit ≠ 0).

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::writer::{TMP_PREFIX, WatchEvent, WriterHandle, fence_of};

/// Bytes read from inotify at once: room for ~1000 events per read; the
/// kernel queue holds the rest.
const EVENT_BUFFER: usize = 64 * 1024;
/// How often the watcher checks that it watches the directory at the path.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The environment variable of the test hook (test-only: see
/// docs/RELIABILITY.md): `watcher` or `writer` makes that task end, and
/// `writer-panic` the writer panic, when a file named [`TEST_TRIGGER`] is
/// read in the PXE directory.
pub const TEST_HOOK_ENV: &str = "PXECONF_TEST_END_TASK";
/// The file whose read fires the test hook.
pub const TEST_TRIGGER: &str = "pxeconf-test-end-task";

/// The environment variable of the second test hook (test-only, see
/// docs/RELIABILITY.md): the watcher hands each event on this many
/// milliseconds after it came, in order, so that a test can make a push land
/// between a client's read and the writer hearing of it — the window of a
/// busy watcher, which a test cannot hit otherwise.
pub const TEST_LAG_ENV: &str = "PXECONF_TEST_WATCH_LAG_MS";

/// The events' lag the environment asks for, read once at start-up.
pub fn test_lag_from_env() -> Option<Duration> {
    let millis = std::env::var(TEST_LAG_ENV).ok()?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// The inotify events as the watcher takes them.
type Events = std::pin::Pin<
    Box<dyn futures::Stream<Item = io::Result<inotify::Event<std::ffi::OsString>>> + Send>,
>;

/// `events`, each handed on `lag` after it came: a task takes them as they
/// come (so the lags do not add up) and the stream returned waits out each.
fn lagged(mut events: Events, lag: Duration) -> Events {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if tx.send((tokio::time::Instant::now() + lag, event)).is_err() {
                return;
            }
        }
    });
    Box::pin(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).then(|(due, event)| async move {
            tokio::time::sleep_until(due).await;
            event
        }),
    )
}

/// Which task the test hook ends, read once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestHook {
    /// None (always, outside tests).
    #[default]
    Off,
    /// The watcher.
    Watcher,
    /// The writer.
    Writer,
    /// The writer, by a panic.
    WriterPanic,
}

impl TestHook {
    /// The hook the environment asks for.
    pub fn from_env() -> Self {
        match std::env::var(TEST_HOOK_ENV).as_deref() {
            Ok("watcher") => Self::Watcher,
            Ok("writer") => Self::Writer,
            Ok("writer-panic") => Self::WriterPanic,
            _ => Self::Off,
        }
    }
}

/// `MOVED_FROM` is not used, but keeps each rename's `MOVED_TO` an event of
/// its own: the kernel merges an event into the one queued last when mask,
/// watch and name match (not the rename's cookie), so two renames onto one
/// name with nothing between were one `MOVED_TO`, and the writer waited for
/// a second one for good (every later read of that name looked like a read
/// of a replaced version). The temporary name's `MOVED_FROM` comes between.
///
/// `CREATE` is to a config linked in under a new name (a file without a
/// name, see the writer's files) what `MOVED_TO` is to one renamed over an
/// old one: the point after which a read of the name is a read of it. Two
/// `IN_CREATE` of one name always have its removal between them.
///
/// `DELETE` orders our removals as `MOVED_TO` orders replacements: a read
/// seen before a removed file's `IN_DELETE` was a read of the removed config.
const DIR_MASK: WatchMask = WatchMask::CLOSE_NOWRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CREATE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// The directory as watched: its watch and its identity (device, inode).
struct Watched {
    wd: WatchDescriptor,
    id: (u64, u64),
}

/// The watcher's state.
struct Watcher {
    dir: PathBuf,
    name: Option<std::ffi::OsString>,
    watches: Watches,
    watched: Option<Watched>,
    parent: Option<WatchDescriptor>,
    writer: WriterHandle,
    hook: TestHook,
}

fn identity(path: &Path) -> io::Result<(u64, u64)> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// Starts watching `dir`; the watch is in place when this returns, so no
/// read after it is missed. Returns the task to run: it forwards events to
/// the writer until `stop` fires, and fails if the directory cannot be
/// watched again after it was recreated. `lag`: see [`TEST_LAG_ENV`].
pub fn start(
    dir: &Path,
    writer: WriterHandle,
    stop: CancellationToken,
    hook: TestHook,
    lag: Option<Duration>,
) -> io::Result<impl Future<Output = Result<(), String>> + Send + 'static> {
    let inotify = Inotify::init()?;
    let mut watches = inotify.watches();
    let wd = watches.add(dir, DIR_MASK)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .and_then(|p| {
            watches
                .add(
                    p,
                    WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
                )
                .ok()
        });
    let mut stream: Events = Box::pin(inotify.into_event_stream(vec![0u8; EVENT_BUFFER])?);
    if let Some(lag) = lag {
        stream = lagged(stream, lag);
    }
    let watcher = Watcher {
        dir: dir.to_owned(),
        name: dir.file_name().map(OsStr::to_owned),
        watched: Some(Watched {
            wd,
            id: identity(dir)?,
        }),
        watches,
        parent,
        writer,
        hook,
    };
    Ok(watcher.run(stream, stop))
}

impl Watcher {
    async fn run(mut self, mut stream: Events, stop: CancellationToken) -> Result<(), String> {
        let dir = self.dir.display().to_string();
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = check.tick() => {
                    self.check().await?;
                    continue;
                }
                event = stream.next() => event,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(error)) => return Err(format!("inotify read failed on {dir}: {error}")),
                None => return Err(format!("the inotify stream on {dir} ended")),
            };
            let name = event.name.as_deref();
            if self.watched.as_ref().is_some_and(|w| w.wd == event.wd) {
                if self.hooked(event.mask, name).await? {
                    continue;
                }
                if let Some(forward) = self.forward(event.mask, name)
                    && self.writer.watch_event(forward).await.is_err()
                {
                    return Ok(());
                }
            } else if Some(&event.wd) == self.parent.as_ref()
                && event.mask.contains(EventMask::ISDIR)
                && name.is_some()
                && name == self.name.as_deref()
            {
                self.check().await?;
            } else if event.mask.contains(EventMask::Q_OVERFLOW) {
                let _ = self.writer.watch_event(WatchEvent::Overflow).await;
            }
        }
    }

    /// The test hook: true if the event was its trigger.
    async fn hooked(&self, mask: EventMask, name: Option<&OsStr>) -> Result<bool, String> {
        if self.hook == TestHook::Off
            || !mask.contains(EventMask::CLOSE_NOWRITE)
            || name != Some(OsStr::new(TEST_TRIGGER))
        {
            return Ok(false);
        }
        match self.hook {
            TestHook::Watcher => Err("ended by the test hook PXECONF_TEST_END_TASK=watcher".into()),
            hook => {
                let panic = hook == TestHook::WriterPanic;
                let _ = self.writer.watch_event(WatchEvent::TestEnd { panic }).await;
                Ok(true)
            }
        }
    }

    /// What an inotify event on the directory means to the writer, if
    /// anything; the directory going away drops the watch.
    fn forward(&mut self, mask: EventMask, name: Option<&OsStr>) -> Option<WatchEvent> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return Some(WatchEvent::Overflow);
        }
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
            if self.watched.take().is_some() {
                warn!(dir = %self.dir.display(), "the PXE directory was removed or moved; waiting for it to come back");
            }
            return None;
        }
        if mask.contains(EventMask::ISDIR) {
            return None;
        }
        event_for(mask, name?.to_str()?)
    }

    /// Watches the directory at the path again if it is not the one
    /// watched (gone, or replaced); fails if it exists and cannot be
    /// watched.
    async fn check(&mut self) -> Result<(), String> {
        let id = match identity(&self.dir) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("PXE directory {}: {e}", self.dir.display())),
        };
        if self.watched.as_ref().is_some_and(|w| w.id == id) {
            return Ok(());
        }
        if let Some(old) = self.watched.take() {
            let _ = self.watches.remove(old.wd);
        }
        let wd = self.watches.add(&self.dir, DIR_MASK).map_err(|e| {
            error!(dir = %self.dir.display(), error = %e, "the recreated PXE directory cannot be watched");
            format!("cannot watch the recreated PXE directory {}: {e}", self.dir.display())
        })?;
        self.watched = Some(Watched { wd, id });
        info!(dir = %self.dir.display(), "PXE directory back; watching it again");
        if self
            .writer
            .watch_event(WatchEvent::Rewatched)
            .await
            .is_err()
        {
            debug!("the writer is gone");
        }
        Ok(())
    }
}

/// What an event on the file `name` in the directory means to the writer.
fn event_for(mask: EventMask, name: &str) -> Option<WatchEvent> {
    let name = name.to_owned();
    if name.starts_with(TMP_PREFIX) {
        // Our temporary files; of the writer's fences only the delete.
        mask.contains(EventMask::DELETE)
            .then(|| fence_of(&name))
            .flatten()
            .map(WatchEvent::Fence)
    } else if mask.contains(EventMask::CLOSE_NOWRITE) {
        Some(WatchEvent::Read(name))
    } else if mask.intersects(EventMask::MOVED_TO | EventMask::CREATE) {
        Some(WatchEvent::Moved(name))
    } else if mask.contains(EventMask::DELETE) {
        Some(WatchEvent::Deleted(name))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_one_event_after_the_events_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::init().unwrap();
        inotify.watches().add(dir.path(), DIR_MASK).unwrap();
        let name = "01-02-00-00-00-00-01";
        std::fs::write(dir.path().join(name), "x").unwrap();
        std::fs::read(dir.path().join(name)).unwrap();
        std::fs::remove_file(dir.path().join(name)).unwrap();
        crate::depot::writer::fence(dir.path(), 7).unwrap();
        let mut inotify = inotify;
        let mut buffer = [0u8; 4096];
        let events: Vec<String> = inotify
            .read_events(&mut buffer)
            .unwrap()
            .filter_map(|e| event_for(e.mask, e.name?.to_str()?))
            .map(|e| format!("{e:?}"))
            .collect();
        let tail = &events[events.len() - 2..];
        assert_eq!(
            tail,
            [format!("Deleted({name:?})"), "Fence(7)".to_owned()],
            "the fence comes once, after the events before it: {events:?}"
        );
        assert!(
            !dir.path()
                .join(crate::depot::writer::fence_name(7))
                .exists()
        );
    }

    #[test]
    fn renames_onto_one_name_are_one_event_each() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = Inotify::init().unwrap();
        inotify.watches().add(dir.path(), DIR_MASK).unwrap();
        for i in 0..3 {
            let tmp = dir.path().join(format!("{TMP_PREFIX}-{i}"));
            std::fs::write(&tmp, "x").unwrap();
            std::fs::rename(&tmp, dir.path().join("01-02-00-00-00-00-01")).unwrap();
        }
        let mut inotify = inotify;
        let mut buffer = [0u8; 4096];
        let moved = inotify
            .read_events(&mut buffer)
            .unwrap()
            .filter(|e| e.mask.contains(EventMask::MOVED_TO))
            .count();
        assert_eq!(moved, 3);
    }
}
