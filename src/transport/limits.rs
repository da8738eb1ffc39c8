//! What a peer may hold on a server: connections, streams, time before the
//! first call and between calls, a request's deadline; the file-descriptor
//! budget the connection cap must fit in; and a log line per limit that
//! bites, at most one per interval.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connections a server keeps open unless told otherwise (and unless its
/// file-descriptor budget is smaller, see [`Limits::effective_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Accept → TLS handshake done and first request started.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// No call in flight for this long: the connection is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Concurrent HTTP/2 streams (calls) per connection; the configserver's
/// largest push concurrency fits.
pub const DEFAULT_MAX_STREAMS: u32 = 1024;
/// The server-side deadline of one call (until its response starts).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request header block (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
pub const MAX_HEADER_LIST: u32 = 64 * 1024;
/// File descriptors kept free of connections: at least this many…
pub const MIN_FD_RESERVE: usize = 64;
/// …or this fraction (1/n) of the process's limit, whichever is more: the
/// writer's files, SQLite, inotify and outgoing channels need them.
pub const FD_RESERVE_FRACTION: usize = 4;

/// Connection and call limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections, including those still in their handshake.
    pub max_connections: usize,
    /// Time from accept until the TLS handshake is done and the first call
    /// has started; silent peers are closed after it.
    pub handshake_timeout: Duration,
    /// Time without a call in flight after which a connection is closed.
    pub idle_timeout: Duration,
    /// Concurrent calls per connection.
    pub max_streams: u32,
    /// Server-side deadline of one call.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_streams: DEFAULT_MAX_STREAMS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl Limits {
    /// The connection cap that fits this process's open-file limit: a
    /// connection is a descriptor, and running out of them would stop the
    /// server from accepting, writing files or reaching its peers.
    pub fn effective_connections(&self) -> usize {
        match open_file_limit() {
            Some(limit) => self.max_connections.min(fd_budget(limit)),
            None => self.max_connections,
        }
    }
}

/// Connections that fit `limit` descriptors, the reserve kept free.
pub fn fd_budget(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserve = MIN_FD_RESERVE.max(limit / FD_RESERVE_FRACTION);
    limit.saturating_sub(reserve).max(1)
}

/// This process's soft limit of open files (`/proc/self/limits`, so no
/// unsafe `getrlimit` call is needed); `None` when unknown or unlimited.
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&text)
}

fn parse_open_file_limit(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Log lines of one kind, at most `burst` per interval; the lines held back
/// are counted and reported with the next one written. A peer that hits a
/// limit thousands of times a second must not flood the log.
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    burst: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    written: u32,
    held: u64,
}

impl RateLimited {
    /// At most `burst` lines per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: burst.max(1),
            window: Mutex::new(Window {
                start: None,
                written: 0,
                held: 0,
            }),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be
    /// written now, else `None` (and this one is counted as held back).
    pub fn allow(&self) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= self.interval)
        {
            w.start = Some(now);
            w.written = 0;
        }
        if w.written < self.burst {
            w.written += 1;
            return Some(std::mem::take(&mut w.held));
        }
        w.held += 1;
        None
    }
}

impl Default for RateLimited {
    /// Five lines per 10 seconds.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(fd_budget(256), 192);
        assert_eq!(fd_budget(1024), 768);
        assert_eq!(fd_budget(65_536), 49_152);
        assert_eq!(fd_budget(10), 1);
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            256                  4096                 files     \n";
        assert_eq!(parse_open_file_limit(text), Some(256));
        assert_eq!(
            parse_open_file_limit("Max open files  unlimited unlimited files"),
            None
        );
        assert!(Limits::default().effective_connections() <= DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn lines_are_held_back_within_the_interval_and_counted() {
        let log = RateLimited::new(Duration::from_secs(3600), 2);
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        let log = RateLimited::new(Duration::ZERO, 1);
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), Some(0));
    }
}
