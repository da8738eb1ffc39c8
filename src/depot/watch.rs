//! The read watcher: one inotify instance with one watch on the PXE
//! directory, for every client at once (opsi's per-client watches hit the
//! kernel's 128-instance limit).
//!
//! `IN_CLOSE_NOWRITE` on a file is a read that ended: the TFTP server opened
//! the file and closed it without writing. `IN_MOVED_TO` comes from our own
//! atomic writes and lets the writer tell a read of a replaced version apart.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::writer::{TMP_PREFIX, WatchEvent, WriterHandle};

/// Bytes read from inotify at once: room for ~1000 events per read; the
/// kernel queue holds the rest.
const EVENT_BUFFER: usize = 64 * 1024;

/// Starts watching `dir`; events go to the writer until `stop` fires. The
/// watch is in place when this returns, so no read after it is missed.
pub fn spawn(
    dir: &Path,
    writer: WriterHandle,
    stop: CancellationToken,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CLOSE_NOWRITE
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF,
    )?;
    let mut stream = inotify.into_event_stream(vec![0u8; EVENT_BUFFER])?;
    let dir = dir.display().to_string();
    Ok(tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => break,
                event = stream.next() => event,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    error!(%error, %dir, "inotify read failed; reads are no longer seen");
                    break;
                }
                None => break,
            };
            if let Some(forward) = forward(event.mask, event.name.as_deref(), &dir)
                && writer.watch_event(forward).await.is_err()
            {
                break;
            }
        }
        debug!(%dir, "read watcher stopped");
        if stop.is_cancelled() {
            return;
        }
        warn!(%dir, "read watcher ended before shutdown");
    }))
}

/// What an inotify event means to the writer, if anything.
fn forward(mask: EventMask, name: Option<&OsStr>, dir: &str) -> Option<WatchEvent> {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Some(WatchEvent::Overflow);
    }
    if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
        error!(%dir, "the PXE directory was removed or moved; reads are no longer seen");
        return None;
    }
    if mask.contains(EventMask::ISDIR) {
        return None;
    }
    let name = name?.to_str()?.to_owned();
    if name.starts_with(TMP_PREFIX) {
        None
    } else if mask.contains(EventMask::CLOSE_NOWRITE) {
        Some(WatchEvent::Read(name))
    } else if mask.contains(EventMask::MOVED_TO) {
        Some(WatchEvent::Moved(name))
    } else {
        None
    }
}
