//! The depot's durable journal: an SQLite file in its state directory
//! (never inside the TFTP root). It records, in one transaction per writer
//! round (group commit, `synchronous = FULL`), what the depot is about to
//! hold — file names, client, revision, epoch and the content to write the
//! files again — *before* the renames that make files visible, and each
//! read *before* its files are deleted and the report is sent. Reads stay
//! until the configserver acknowledged them (and their files are gone), so
//! a restart re-sends them; the revision floor per client survives too.
//!
//! The content of held configs contains host keys: the file is mode 0600 in
//! a directory only the depot's user can enter.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde_json::Value;

mod rows;

use super::error::JournalError;
use super::files::Look;
use super::messages::ReadEvent;
use super::records::{ClientRecord, Defused, Held, KEPT_EPOCHS};
use crate::domain::Fqdn;
use rows::{client_record, insert_client, insert_read, read_row, revision};

/// The journal's file name inside the state directory.
pub const JOURNAL_FILE: &str = "journal.db";
/// The lock file beside it: one depot per state directory.
const LOCK_FILE: &str = "journal.lock";
/// How long a statement waits for a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS highest (epoch TEXT PRIMARY KEY, revision INTEGER NOT NULL);
-- Appended, never updated in place: a round's rows land on the last pages
-- (a few pages per round, not one per client). The newest row of a client
-- is its state; a row with neither floor nor config forgets it. Compacted
-- at start-up and when it has grown well past the clients it describes.
CREATE TABLE IF NOT EXISTS client_log (
    seq            INTEGER PRIMARY KEY,
    fqdn           TEXT NOT NULL,
    seen_revision  INTEGER,
    seen_state     TEXT,
    seen_epoch     TEXT,
    held           INTEGER NOT NULL DEFAULT 0,
    product_id     TEXT,
    action_request TEXT,
    held_revision  INTEGER,
    files          TEXT,
    template       TEXT,
    since          INTEGER,
    content        TEXT,
    held_epoch     TEXT
);
-- A record without content finds its config's row by client.
CREATE INDEX IF NOT EXISTS client_log_fqdn ON client_log (fqdn, seq);
CREATE TABLE IF NOT EXISTS reads (
    fqdn           TEXT NOT NULL,
    epoch          TEXT NOT NULL,
    revision       INTEGER NOT NULL,
    product_id     TEXT NOT NULL,
    action_request TEXT NOT NULL,
    read_at        INTEGER NOT NULL,
    files          TEXT NOT NULL DEFAULT '[]',
    files_present  INTEGER NOT NULL DEFAULT 0,
    acked          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (fqdn, epoch, revision)
);
";

/// Which read a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadKey {
    /// The client.
    pub fqdn: String,
    /// The epoch.
    pub epoch: String,
    /// The revision.
    pub revision: u64,
}

impl ReadKey {
    /// The key of `read`.
    pub fn of(read: &ReadEvent) -> Self {
        Self {
            fqdn: read.fqdn.to_string(),
            epoch: read.epoch.to_string(),
            revision: read.revision,
        }
    }
}

/// One writer round's changes, written in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Clients as they are now (no floor and nothing held: forgotten).
    pub clients: Vec<ClientRecord>,
    /// Reads seen, to report.
    pub reads: Vec<ReadEvent>,
    /// Reads whose files are still present (defused), with those files.
    pub defused: Vec<(ReadKey, Vec<String>)>,
    /// Reads whose files are gone now: reported again.
    pub swept: Vec<ReadKey>,
    /// The epoch the depot follows, if it changed.
    pub epoch: Option<Arc<str>>,
    /// The highest revision per epoch.
    pub highest: Vec<(Arc<str>, u64)>,
}

impl Batch {
    /// Whether the round must be on disk (not just handed to the kernel)
    /// before its file work: it forgets a held config or records a read or
    /// a change of epoch.
    pub fn needs_fsync(&self) -> bool {
        !self.reads.is_empty()
            || !self.defused.is_empty()
            || !self.swept.is_empty()
            || self.epoch.is_some()
            || self.clients.iter().any(|c| c.held.is_none())
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
            && self.reads.is_empty()
            && self.defused.is_empty()
            && self.swept.is_empty()
            && self.epoch.is_none()
            && self.highest.is_empty()
    }
}

/// What the journal holds at start-up.
#[derive(Debug, Default)]
pub struct Contents {
    /// Every client's floor and held config.
    pub clients: Vec<ClientRecord>,
    /// Reads whose files are still present.
    pub defused: Vec<(Fqdn, Defused)>,
    /// Reads not yet acknowledged by the configserver.
    pub unreported: Vec<ReadEvent>,
    /// The epoch the depot follows.
    pub epoch: Arc<str>,
    /// The highest revision per epoch.
    pub highest: HashMap<Arc<str>, u64>,
}

/// The journal; cheap to clone (one connection, shared).
///
/// Its calls are blocking (the connection is SQLite's own, used on the
/// calling thread): the writer journals a round where it does the round's
/// file work — in place for a small quick round, else on a blocking thread —
/// so an idle depot's round is at most one hand-off instead of one per
/// statement; async callers use the `async` wrappers.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
    _lock: Arc<File>,
}

/// The connection and what is known of it.
struct Inner {
    conn: Connection,
    /// Client rows appended since the last compaction began, and the rows
    /// it left of those before it.
    growth: (u64, u64),
    /// Whether the connection's `synchronous` mode is FULL (else NORMAL);
    /// `None` after setting it failed (it is set again). A connection opened
    /// anew is FULL, so the connection is FULL or as recorded: never less
    /// safe.
    sync_full: Option<bool>,
    /// The compaction pass under way between rounds, if any.
    pass: Option<Pass>,
    /// [`COMPACT_AFTER`] and [`COMPACT_STEP`] (smaller in tests).
    compaction: (u64, i64),
}

impl Inner {
    /// Whether a compaction pass is due: the log has grown past
    /// [`COMPACT_AFTER`] rows and past the rows the last one left.
    fn pass_due(&self) -> bool {
        self.growth.0 > self.compaction.0.max(self.growth.1)
    }

    /// Whether the next round compacts a step of the log first: a pass is
    /// under way or due.
    fn compacts_next(&self) -> bool {
        self.pass.is_some() || self.pass_due()
    }
}

/// A compaction of the grown log, a step of it before each round's commit:
/// the rows from `next` to `last` (by `seq`) are still to be looked at; rows
/// appended since it began wait for the next pass, and count towards it.
#[derive(Debug, Clone, Copy)]
struct Pass {
    next: i64,
    last: i64,
}

/// Rows appended before a compaction is considered.
const COMPACT_AFTER: u64 = 50_000;
/// Rows one step of a pass looks at (rows, not `seq` numbers: those of a
/// compacted log are sparse, a client written long ago keeping an old one).
/// Compacting the whole log at once held the round behind it ~50–110 ms at
/// 50,000–100,000 rows; a step of this many takes a few ms.
const COMPACT_STEP: i64 = 2_000;
/// Where a step that starts at `seq` ?1 ends: the `seq` of the row ?2 rows
/// on, if there is one.
const STEP_END: &str = "SELECT seq FROM client_log WHERE seq >= ?1 ORDER BY seq LIMIT 1 OFFSET ?2";
/// The rows of a step's range (`seq` from ?1 up to ?2) that no longer
/// describe a client: a newer row of the client follows them, or they
/// forget it (neither floor nor config) — what [`Journal::compact`]'s two
/// statements delete from the whole log.
const COMPACT_RANGE: &str = "DELETE FROM client_log WHERE seq >= ?1 AND seq < ?2
 AND ((seen_state IS NULL AND held = 0)
   OR EXISTS (SELECT 1 FROM client_log AS newer
              WHERE newer.fqdn = client_log.fqdn AND newer.seq > client_log.seq))";

/// Takes the state directory's lock, writing our pid into it.
fn lock(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| JournalError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(JournalError::Locked {
                path: dir.to_owned(),
                holder: holder.trim().to_owned(),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

impl Journal {
    /// Opens (creating if needed) the journal in `state_dir`; the directory
    /// is created mode 0700, the file mode 0600.
    pub async fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let journal = Self::open_uncompacted(state_dir).await?;
        journal.compact_async().await?;
        Ok(journal)
    }

    /// [`Journal::open`] without compacting: start-up looks up older
    /// versions of configs first ([`Journal::held_versions`]), then compacts.
    pub async fn open_uncompacted(state_dir: &Path) -> Result<Self, JournalError> {
        let state_dir = state_dir.to_owned();
        run_blocking(move || Self::open_blocking(&state_dir)).await
    }

    /// [`Journal::open_uncompacted`] on the calling thread.
    fn open_blocking(state_dir: &Path) -> Result<Self, JournalError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io { path, source }
        };
        if !state_dir.exists() {
            std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
            std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(state_dir))?;
            tracing::info!(state_dir = %state_dir.display(), "the state directory did not exist and was created");
        }
        let lock = lock(state_dir)?;
        let path = state_dir.join(JOURNAL_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&path))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Only this connection ever opens the journal (the state directory's
        // lock keeps a second depot out): exclusive locking keeps the WAL
        // index in the heap — no shared-memory file, and none of the six
        // `fcntl` locks a commit otherwise takes and releases. Set before
        // WAL mode is entered, as SQLite requires for that.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            let why = format!("the journal cannot use write-ahead logging (mode {mode})");
            return Err(io(&path)(std::io::Error::other(why)));
        }
        // Rounds that forget a config or record a read are fsynced before
        // their file work (see `commit`); the others are written ahead of
        // it, durable against a crash of the process.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let journal = Self {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                growth: (0, 0),
                sync_full: Some(true),
                pass: None,
                compaction: (COMPACT_AFTER, COMPACT_STEP),
            })),
            path,
            _lock: Arc::new(lock),
        };
        Ok(journal)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a call leaves no transaction open (a dropped
        // `Transaction` rolls back): the connection is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps only each client's newest row (and none for a forgotten one).
    fn compact(&self) -> Result<(), JournalError> {
        let mut inner = self.inner();
        let tx = inner.conn.transaction()?;
        tx.execute(
            "DELETE FROM client_log WHERE seq NOT IN (SELECT max(seq) FROM client_log GROUP BY fqdn)",
            [],
        )?;
        tx.execute(
            "DELETE FROM client_log WHERE seen_state IS NULL AND held = 0",
            [],
        )?;
        let rows: i64 = tx.query_row("SELECT count(*) FROM client_log", [], |row| row.get(0))?;
        tx.commit()?;
        inner.growth = (0, rows.max(0) as u64);
        inner.pass = None;
        Ok(())
    }

    /// Once the log has grown well past the clients it describes (past
    /// [`COMPACT_AFTER`] rows), compacts it a step of [`COMPACT_STEP`] rows
    /// per call until a pass over it is done. Called between rounds, never
    /// inside one: an undo's record takes its content from the row its
    /// config was journaled with, which must still be there.
    pub fn compact_if_grown(&self) -> Result<(), JournalError> {
        let mut guard = self.inner();
        let inner = &mut *guard;
        let step = inner.compaction.1;
        let pass = match inner.pass {
            Some(pass) => pass,
            None if inner.pass_due() => {
                let range: (Option<i64>, Option<i64>) = inner.conn.query_row(
                    "SELECT min(seq), max(seq) FROM client_log",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                let (Some(next), Some(last)) = range else {
                    inner.growth = (0, 0);
                    return Ok(());
                };
                // What is appended from now on is the next pass's growth; a
                // step that fails is tried again at the next round.
                inner.growth.0 = 0;
                let pass = Pass { next, last };
                inner.pass = Some(pass);
                pass
            }
            None => return Ok(()),
        };
        // Losing a step to a crash loses nothing: its rows are deleted again.
        if inner.sync_full != Some(false) {
            inner.sync_full = None;
            inner.conn.pragma_update(None, "synchronous", "NORMAL")?;
            inner.sync_full = Some(false);
        }
        let tx = inner.conn.transaction()?;
        let end: Option<i64> = (tx.prepare_cached(STEP_END)?)
            .query_row(params![pass.next, step], |row| row.get(0))
            .optional()?;
        let end = end.unwrap_or(i64::MAX).min(pass.last.saturating_add(1));
        tx.prepare_cached(COMPACT_RANGE)?
            .execute(params![pass.next, end])?;
        if end <= pass.last {
            tx.commit()?;
            inner.pass = Some(Pass { next: end, ..pass });
            return Ok(());
        }
        let rows: i64 = tx.query_row("SELECT count(*) FROM client_log", [], |row| row.get(0))?;
        tx.commit()?;
        let appended = inner.growth.0;
        inner.growth = (appended, (rows.max(0) as u64).saturating_sub(appended));
        inner.pass = None;
        Ok(())
    }

    /// Whether the next round compacts a step of the log first (tests;
    /// rounds ask [`Journal::free_for_a_quick_round`]).
    #[cfg(test)]
    fn grown(&self) -> bool {
        self.inner().compacts_next()
    }

    /// Whether a round may journal on the calling thread, a runtime
    /// thread: the log is not due a compaction step, and nothing holds the
    /// connection — an acknowledgement's commit (on a blocking thread) may
    /// be waiting on an fsync, and the runtime thread would wait with it,
    /// asking this included.
    pub fn free_for_a_quick_round(&self) -> bool {
        let inner = match self.inner.try_lock() {
            Ok(inner) => inner,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        !inner.compacts_next()
    }

    /// Compacts after `after` rows, `step` rows a step (tests).
    #[cfg(test)]
    fn set_compaction(&self, after: u64, step: i64) {
        self.inner().compaction = (after, step);
    }

    /// Rows appended since the last compaction began, and rows it left.
    #[cfg(test)]
    fn growth(&self) -> (u64, u64) {
        self.inner().growth
    }

    /// Whether the depot's last start left the mark that it reads PXE files
    /// without setting their access time (this version does); sets it. A
    /// held file read since written (atime past mtime) is then a read the
    /// depot missed; before the mark, start-up's own reads set atime too.
    pub async fn atime_kept(&self) -> Result<bool, JournalError> {
        let journal = self.clone();
        run_blocking(move || {
            let inner = journal.inner();
            let kept = meta(&inner.conn, "atime")?.is_some_and(|v| v == "kept");
            set_meta(&inner.conn, "atime", "kept")?;
            Ok(kept)
        })
        .await
    }

    /// The looks at files the last start journaled (see `files::Look`).
    pub async fn looks(&self) -> Result<HashSet<Look>, JournalError> {
        let journal = self.clone();
        run_blocking(move || {
            let text = meta(&journal.inner().conn, "looks")?.unwrap_or_default();
            Ok(text.lines().filter_map(Look::parse).collect())
        })
        .await
    }

    /// Journals this start's looks, in place of the last start's.
    pub async fn set_looks(&self, looks: &[Look]) -> Result<(), JournalError> {
        let text: Vec<String> = looks.iter().map(Look::to_line).collect();
        let text = text.join("\n");
        let journal = self.clone();
        run_blocking(move || set_meta(&journal.inner().conn, "looks", &text)).await
    }

    /// The configs of `versions` (client and revision) as they were held,
    /// where the log still has their rows (before the compaction a start
    /// runs once it has looked): what a read of an older version reports.
    pub async fn held_versions(
        &self,
        versions: Vec<(String, u64)>,
    ) -> Result<Vec<(Fqdn, Held)>, JournalError> {
        let journal = self.clone();
        run_blocking(move || {
            let inner = journal.inner();
            let mut statement = inner.conn.prepare(
                "SELECT * FROM client_log WHERE fqdn = ?1 AND held = 1 AND held_revision = ?2
                 ORDER BY seq DESC LIMIT 1",
            )?;
            let mut found = Vec::new();
            for (fqdn, revision) in versions {
                let mut rows = statement.query(params![fqdn, rows::revision(revision)])?;
                if let Some(row) = rows.next()? {
                    let record = client_record(row)?;
                    found.extend(record.held.map(|held| (record.fqdn, held)));
                }
            }
            Ok(found)
        })
        .await
    }

    /// The content of the config `fqdn` holds as journaled (its newest
    /// row), if it holds one: one index look-up, not a load.
    pub async fn held_content(&self, fqdn: Fqdn) -> Result<Option<Arc<str>>, JournalError> {
        let journal = self.clone();
        run_blocking(move || {
            let inner = journal.inner();
            let content: Option<Option<String>> = inner
                .conn
                .query_row(
                    "SELECT CASE WHEN held = 1 THEN content END FROM client_log
                     WHERE fqdn = ?1 ORDER BY seq DESC LIMIT 1",
                    params![fqdn.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(content.flatten().map(Arc::from))
        })
        .await
    }

    /// Keeps only each client's newest row, on a blocking thread.
    pub async fn compact_async(&self) -> Result<(), JournalError> {
        let journal = self.clone();
        run_blocking(move || journal.compact()).await
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything the journal holds.
    pub async fn load(&self) -> Result<Contents, JournalError> {
        let journal = self.clone();
        run_blocking(move || journal.load_blocking()).await
    }

    fn load_blocking(&self) -> Result<Contents, JournalError> {
        let inner = self.inner();
        let conn = &inner.conn;
        let epoch = meta(conn, "epoch")?;
        let highest = conn
            .prepare("SELECT epoch, revision FROM highest")?
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?
            .map(|row| row.map(|(e, r)| (Arc::from(e), r.max(0) as u64)))
            .collect::<Result<_, _>>()?;
        let mut statement = conn.prepare(
            "SELECT * FROM client_log WHERE seq IN (SELECT max(seq) FROM client_log GROUP BY fqdn)
               AND (seen_state IS NOT NULL OR held <> 0)",
        )?;
        let mut rows = statement.query([])?;
        let mut clients = Vec::new();
        while let Some(row) = rows.next()? {
            clients.push(client_record(row)?);
        }
        let mut snapshot = Contents {
            clients,
            epoch: Arc::from(epoch.unwrap_or_default()),
            highest,
            ..Contents::default()
        };
        let mut statement = conn.prepare("SELECT * FROM reads ORDER BY read_at")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let (read, files, acked) = read_row(row)?;
            if !files.is_empty() && read.files_present {
                snapshot.defused.push((
                    read.fqdn.clone(),
                    Defused {
                        product_id: read.product_id.clone(),
                        action_request: read.action_request,
                        revision: read.revision,
                        files,
                        epoch: read.epoch.clone(),
                        read_at: read.read_at,
                    },
                ));
            }
            if !acked {
                snapshot.unreported.push(read);
            }
        }
        Ok(snapshot)
    }

    /// Writes a round's changes in one durable transaction, on the calling
    /// thread (where the writer runs the round's file work); on an error
    /// nothing of it stays.
    pub fn commit(&self, batch: &Batch) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        // A round that forgets a config (a read, a removal) or records a
        // read must survive a power loss before its files go: fsync. One
        // that only adds configs need not: a file whose record is lost has
        // its marker line (start-up removes it) and the reconciliation writes
        // it again, so the push path pays no fsync.
        let full = batch.needs_fsync();
        let mut inner = self.inner();
        if inner.sync_full != Some(full) {
            inner.sync_full = None;
            let mode = if full { "FULL" } else { "NORMAL" };
            inner.conn.pragma_update(None, "synchronous", mode)?;
            inner.sync_full = Some(full);
        }
        // A statement that fails drops the transaction, which rolls back.
        let tx = inner.conn.transaction()?;
        write_batch(&tx, batch)?;
        tx.commit()?;
        inner.growth.0 += batch.clients.len() as u64;
        Ok(())
    }

    /// [`Journal::commit`] on a blocking thread, for async callers.
    pub async fn commit_async(&self, batch: Arc<Batch>) -> Result<(), JournalError> {
        let journal = self.clone();
        run_blocking(move || journal.commit(&batch)).await
    }

    /// The configserver acknowledged these reads (each with whether its
    /// report said the files were still present): a read whose files are
    /// gone is forgotten, one still defused waits for its sweep.
    pub async fn ack_reads(&self, acks: &[(ReadKey, bool)]) -> Result<(), JournalError> {
        if acks.is_empty() {
            return Ok(());
        }
        let journal = self.clone();
        let acks = acks.to_vec();
        run_blocking(move || journal.ack_reads_blocking(&acks)).await
    }

    fn ack_reads_blocking(&self, acks: &[(ReadKey, bool)]) -> Result<(), JournalError> {
        let mut inner = self.inner();
        let tx = inner.conn.transaction()?;
        {
            let mut forget = tx.prepare_cached(
                "DELETE FROM reads WHERE fqdn = ?1 AND epoch = ?2 AND revision = ?3 AND files_present = 0 AND ?4 = 0",
            )?;
            let mut acked = tx.prepare_cached(
                "UPDATE reads SET acked = 1 WHERE fqdn = ?1 AND epoch = ?2 AND revision = ?3 AND files_present = ?4",
            )?;
            for (key, files_present) in acks {
                let key = params![key.fqdn, key.epoch, revision(key.revision), *files_present];
                forget.execute(key)?;
                acked.execute(key)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` on the connection: for tests that reach past the API.
    #[cfg(test)]
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> T {
        f(&self.inner().conn).unwrap()
    }
}

/// Runs a journal call on a blocking thread.
async fn run_blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|join| JournalError::Thread(join.to_string()))?
}

/// The statements of `batch`, in its order: each prepared once per
/// connection and bound per row (the rows' text is not parsed again).
fn write_batch(tx: &Transaction<'_>, batch: &Batch) -> Result<(), JournalError> {
    if !batch.clients.is_empty() {
        let mut insert = tx.prepare_cached(INSERT_CLIENT)?;
        for client in &batch.clients {
            insert_client(&mut insert, client)?;
        }
    }
    if !batch.reads.is_empty() {
        let mut insert = tx.prepare_cached(INSERT_READ)?;
        for read in &batch.reads {
            insert_read(&mut insert, read)?;
        }
    }
    // Of two changes to one read the later stands.
    let defused = batch.defused.iter().map(|(k, f)| (k, f.as_slice(), true));
    let swept = batch.swept.iter().map(|k| (k, &[][..], false));
    let mut changes = defused.chain(swept).peekable();
    if changes.peek().is_some() {
        let mut update = tx.prepare_cached(UPDATE_READ)?;
        for (key, files, present) in changes {
            let files = Value::from(files.to_vec()).to_string();
            update.execute(params![
                key.fqdn,
                key.epoch,
                revision(key.revision),
                files,
                present
            ])?;
        }
    }
    if let Some(epoch) = &batch.epoch {
        tx.prepare_cached(WRITE_EPOCH)?.execute([epoch.as_ref()])?;
    }
    if !batch.highest.is_empty() {
        let mut write = tx.prepare_cached(WRITE_HIGHEST)?;
        for (epoch, highest) in &batch.highest {
            write.execute(params![epoch.as_ref(), revision(*highest)])?;
        }
    }
    // Only a change of epoch adds a row here (a push of another epoch makes
    // it the current one).
    if let Some(epoch) = &batch.epoch {
        tx.prepare_cached(FORGET_OLD_EPOCHS)?
            .execute(params![epoch.as_ref(), KEPT_EPOCHS as i64 - 1])?;
    }
    Ok(())
}

/// Appends a client's row as it is now (a client with neither floor nor
/// config is forgotten by its row). A record of a held config without its
/// content (anything but a set: an undo, a stale removal) carries the
/// content over from the row that config was journaled with (same revision,
/// epoch and time), so every held row has its content and compaction may
/// keep the newest only.
const INSERT_CLIENT: &str =
    "INSERT INTO client_log (fqdn, seen_revision, seen_state, seen_epoch, held,
   product_id, action_request, held_revision, files, template, since, content, held_epoch)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
   CASE WHEN ?5 = 1 AND ?12 IS NULL THEN
     (SELECT l.content FROM client_log l
      WHERE l.fqdn = ?1 AND l.held = 1 AND l.content IS NOT NULL
        AND l.held_revision IS ?8 AND l.since IS ?11 AND l.held_epoch IS ?13
      ORDER BY l.seq DESC LIMIT 1)
   ELSE ?12 END,
   ?13)";
/// Records a read seen.
const INSERT_READ: &str =
    "INSERT OR REPLACE INTO reads (fqdn, epoch, revision, product_id, action_request, read_at)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// A read whose files are still present (defused) or gone now (swept): to
/// be reported again.
const UPDATE_READ: &str = "UPDATE reads SET files = ?4, files_present = ?5, acked = 0
 WHERE fqdn = ?1 AND epoch = ?2 AND revision = ?3";
/// The epoch followed.
const WRITE_EPOCH: &str = "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?1)";

/// The journal's value for `key`, if it has one.
fn meta(conn: &Connection, key: &str) -> Result<Option<String>, JournalError> {
    let value = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(value)
}

/// Sets the journal's value for `key`.
fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), JournalError> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        [key, value],
    )?;
    Ok(())
}

/// The highest revision of an epoch.
const WRITE_HIGHEST: &str = "INSERT INTO highest (epoch, revision) VALUES (?1, ?2)
 ON CONFLICT (epoch) DO UPDATE SET revision = max(revision, excluded.revision)";

/// Keeps the current epoch's row and the next `?2` pushed last, as
/// `State::forget_old_epochs` does in memory.
const FORGET_OLD_EPOCHS: &str = "DELETE FROM highest WHERE epoch <> ?1 AND epoch NOT IN
 (SELECT epoch FROM highest WHERE epoch <> ?1 ORDER BY revision DESC, epoch DESC LIMIT ?2)";

#[cfg(test)]
mod tests {
    use super::super::error::SeenState;
    use super::super::records::{Held, Seen};
    use super::rows::from_ms;
    use super::*;

    /// A round is not run in place while another user holds the journal
    /// (an acknowledgement's commit waiting on an fsync): the runtime
    /// thread deciding would wait for it — asking included.
    #[tokio::test]
    async fn a_held_journal_is_not_free_for_a_quick_round() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        assert!(journal.free_for_a_quick_round());
        let held = journal.inner();
        let other = journal.clone();
        let asked = std::thread::spawn(move || other.free_for_a_quick_round());
        assert!(!asked.join().unwrap(), "a held journal is not free");
        drop(held);
        assert!(journal.free_for_a_quick_round());
    }
    use crate::domain::{ActionRequest, ProductId};

    fn held(revision: u64) -> Held {
        Held {
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision,
            files: vec!["01-02-00-00-00-00-01".into()],
            template: "install".into(),
            since: from_ms(1_700_000_000_000),
            format: crate::depot::marker::Format::Ipxe,
            epoch: Arc::from("e1"),
        }
    }

    fn fqdn(n: u32) -> Fqdn {
        Fqdn::parse(&format!("c{n}.example.org"), "f").unwrap()
    }

    #[test]
    fn the_bundled_sqlite_is_built_without_process_wide_allocation_locks() {
        // Set in .cargo/config.toml (LIBSQLITE3_FLAGS): sqlx and the journal
        // link this one SQLite.
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }

    #[tokio::test]
    async fn a_round_survives_a_reopen_and_acks_forget_reads() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let journal = Journal::open(&state).await.unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let floor = |revision, state| Seen {
            revision,
            state,
            epoch: Arc::from("e1"),
        };
        let read = ReadEvent {
            fqdn: fqdn(2),
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            revision: 7,
            action_request: ActionRequest::Setup,
            epoch: Arc::from("e1"),
            files_present: false,
            read_at: from_ms(1_700_000_000_000),
        };
        let batch = Batch {
            clients: vec![
                ClientRecord {
                    fqdn: fqdn(1),
                    seen: Some(floor(5, SeenState::Held)),
                    held: Some(held(5)),
                    content: Some(Arc::from("#!ipxe\nsecret\n")),
                },
                ClientRecord {
                    fqdn: fqdn(2),
                    seen: Some(floor(7, SeenState::Read)),
                    held: None,
                    content: None,
                },
            ],
            reads: vec![read.clone()],
            epoch: Some(Arc::from("e1")),
            highest: vec![(Arc::from("e1"), 7)],
            ..Batch::default()
        };
        journal.commit(&batch).unwrap();
        // A second depot on the same state directory is refused.
        assert!(matches!(
            Journal::open(&state).await,
            Err(JournalError::Locked { .. })
        ));
        drop(journal);
        let journal = Journal::open(&state).await.unwrap();
        let snapshot = journal.load().await.unwrap();
        assert_eq!(&*snapshot.epoch, "e1");
        assert_eq!(snapshot.highest.get("e1"), Some(&7));
        assert_eq!(snapshot.unreported, vec![read.clone()]);
        let mut clients = snapshot.clients;
        clients.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
        assert_eq!(clients, batch.clients);
        let mode = std::fs::metadata(journal.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the journal holds host keys");

        // A defused read waits for its sweep even when acknowledged.
        let key = ReadKey::of(&read);
        let defused = Batch {
            defused: vec![(key.clone(), vec!["01-x".into()])],
            ..Batch::default()
        };
        journal.commit(&defused).unwrap();
        journal.ack_reads(&[(key.clone(), true)]).await.unwrap();
        let snapshot = journal.load().await.unwrap();
        assert!(snapshot.unreported.is_empty());
        assert_eq!(snapshot.defused.len(), 1);
        let swept = Batch {
            swept: vec![key.clone()],
            ..Batch::default()
        };
        journal.commit(&swept).unwrap();
        let snapshot = journal.load().await.unwrap();
        assert_eq!(snapshot.unreported.len(), 1, "reported again: files gone");
        assert!(snapshot.defused.is_empty());
        journal.ack_reads(&[(key, false)]).await.unwrap();
        let snapshot = journal.load().await.unwrap();
        assert!(snapshot.unreported.is_empty() && snapshot.defused.is_empty());

        // Forgetting a client deletes its row.
        let forget = Batch {
            clients: vec![ClientRecord {
                fqdn: fqdn(1),
                seen: None,
                held: None,
                content: None,
            }],
            ..Batch::default()
        };
        journal.commit(&forget).unwrap();
        assert_eq!(journal.load().await.unwrap().clients.len(), 1);

        // The log is appended to; a reopen keeps each client's newest row.
        for revision in [6, 7, 8] {
            let again = Batch {
                clients: vec![ClientRecord {
                    fqdn: fqdn(3),
                    seen: Some(floor(revision, SeenState::Held)),
                    held: Some(held(revision)),
                    content: Some(Arc::from(format!("#!ipxe\nr{revision}\n"))),
                }],
                ..Batch::default()
            };
            journal.commit(&again).unwrap();
        }
        drop(journal);
        let journal = Journal::open(&state).await.unwrap();
        let rows: i64 =
            journal.with_conn(|c| c.query_row("SELECT count(*) FROM client_log", [], |r| r.get(0)));
        assert_eq!(rows, 2, "c2's floor and c3's newest");
        let contents = journal.load().await.unwrap();
        let c3 = contents.clients.iter().find(|c| c.fqdn == fqdn(3)).unwrap();
        assert_eq!(c3.held.as_ref().unwrap().revision, 8);
        assert_eq!(c3.content.as_deref(), Some("#!ipxe\nr8\n"));
    }

    #[tokio::test]
    async fn a_record_without_content_keeps_its_configs_content() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        let record = |revision, content: Option<&str>| ClientRecord {
            fqdn: fqdn(1),
            seen: None,
            held: Some(held(revision)),
            content: content.map(Arc::from),
        };
        let commit = |r: ClientRecord| {
            let journal = &journal;
            async move {
                let batch = Batch {
                    clients: vec![r],
                    ..Batch::default()
                };
                journal.commit(&batch).unwrap();
            }
        };
        // r5 is journaled with its content, then r6 (a set whose file work
        // fails), then the undo: r5 again, without content.
        commit(record(5, Some("r5\n"))).await;
        commit(record(6, Some("r6\n"))).await;
        commit(record(5, None)).await;
        let loaded = journal.load().await.unwrap().clients;
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].held.as_ref().unwrap().revision, 5);
        assert_eq!(loaded[0].content.as_deref(), Some("r5\n"), "not r6's");
        // Compaction keeps it.
        journal.compact().unwrap();
        let loaded = journal.load().await.unwrap().clients;
        assert_eq!(loaded[0].content.as_deref(), Some("r5\n"));
    }

    /// The journal keeps the highest revisions of the epochs memory keeps:
    /// the current one and the others pushed last, [`KEPT_EPOCHS`] in all.
    #[tokio::test]
    async fn the_highest_revisions_of_a_bounded_number_of_epochs_are_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        let round = |epoch: &str, revision: u64| Batch {
            epoch: Some(Arc::from(epoch)),
            highest: vec![(Arc::from(epoch), revision)],
            ..Batch::default()
        };
        for i in 0..40u64 {
            journal
                .commit(&round(&format!("e{i:02}"), 1_000 + i))
                .unwrap();
        }
        journal.commit(&round("late", 5)).unwrap();
        let highest = journal.load().await.unwrap().highest;
        let mut kept: Vec<&str> = highest.keys().map(|e| e.as_ref()).collect();
        kept.sort();
        let first_kept = 40 - (KEPT_EPOCHS - 1);
        let mut want: Vec<String> = (first_kept..40).map(|i| format!("e{i:02}")).collect();
        want.push("late".into());
        assert_eq!(kept, want);
        assert_eq!(highest.get("late"), Some(&5));
    }

    #[tokio::test]
    async fn a_round_that_fails_midway_leaves_nothing_and_the_next_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        // The script's last statement fails for this epoch only.
        journal.with_conn(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON highest WHEN NEW.epoch = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
        });
        let batch = |n: u32, epoch: &str| Batch {
            clients: vec![ClientRecord {
                fqdn: fqdn(n),
                seen: None,
                held: Some(held(5)),
                content: Some(Arc::from("r5\n")),
            }],
            reads: Vec::new(),
            defused: Vec::new(),
            swept: Vec::new(),
            epoch: Some(Arc::from(epoch)),
            highest: vec![(Arc::from(epoch), 5)],
        };
        // A round that only adds a config is not fsynced: the connection
        // is NORMAL before the failing round sets FULL.
        let add = Batch {
            clients: batch(9, "").clients,
            ..Batch::default()
        };
        journal.commit(&add).unwrap();
        assert!(journal.commit(&batch(1, "bad")).is_err());
        let contents = journal.load().await.unwrap();
        let names: Vec<_> = contents.clients.iter().map(|c| c.fqdn.clone()).collect();
        assert_eq!(
            names,
            [fqdn(9)],
            "the failed round's client row was rolled back"
        );
        assert_eq!(&*contents.epoch, "", "so was the epoch");
        // No transaction is left open: the next round commits and stays
        // after a reopen.
        journal.commit(&batch(2, "good")).unwrap();
        let mode: i64 = journal.with_conn(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)));
        assert_eq!(mode, 2, "FULL: a change of epoch is fsynced");
        let state = dir.path().join("state");
        drop(journal);
        let journal = Journal::open(&state).await.unwrap();
        let contents = journal.load().await.unwrap();
        let names: Vec<_> = contents.clients.iter().map(|c| c.fqdn.clone()).collect();
        assert_eq!(names, [fqdn(9), fqdn(2)]);
        assert_eq!(
            (&*contents.epoch, contents.highest.get("good")),
            ("good", Some(&5))
        );
    }

    /// The history of 40 clients: four configs each, then for every fifth a
    /// forget, for every seventh a record of its held config without content
    /// (it keeps the content of the row it came with).
    fn history(journal: &Journal) {
        for round in 0..4u64 {
            let clients = (0..40)
                .map(|n| ClientRecord {
                    fqdn: fqdn(n),
                    seen: None,
                    held: Some(held(round + 1)),
                    content: Some(Arc::from(format!("#!ipxe\nc{n} r{round}\n"))),
                })
                .collect();
            journal
                .commit(&Batch {
                    clients,
                    ..Batch::default()
                })
                .unwrap();
        }
        let later = (0..40).filter_map(|n| match n {
            n if n % 5 == 0 => Some(ClientRecord {
                fqdn: fqdn(n),
                seen: None,
                held: None,
                content: None,
            }),
            n if n % 7 == 0 => Some(ClientRecord {
                fqdn: fqdn(n),
                seen: None,
                held: Some(held(4)),
                content: None,
            }),
            _ => None,
        });
        journal
            .commit(&Batch {
                clients: later.collect(),
                ..Batch::default()
            })
            .unwrap();
    }

    fn seqs(journal: &Journal) -> Vec<i64> {
        journal.with_conn(|c| {
            c.prepare("SELECT seq FROM client_log ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    #[tokio::test]
    async fn a_grown_log_is_compacted_a_bounded_step_before_each_round() {
        let dir = tempfile::tempdir().unwrap();
        let whole = Journal::open(&dir.path().join("whole")).await.unwrap();
        let stepped = Journal::open(&dir.path().join("stepped")).await.unwrap();
        for journal in [&whole, &stepped] {
            // A client written once, long ago, keeps `seq` 1: a compacted
            // log's `seq` numbers are sparse.
            history_row(journal, 99, "#!ipxe\nold\n");
            history(journal);
            journal.compact().unwrap();
            history(journal);
        }
        let before = stepped.load().await.unwrap();
        assert_eq!(seqs(&stepped).len(), 33 + 172);
        assert!(
            seqs(&stepped).last() > Some(&300),
            "{:?}",
            seqs(&stepped).last()
        );
        whole.compact().unwrap();

        stepped.set_compaction(100, 16);
        assert!(
            stepped.grown(),
            "172 rows appended, past 100 and the 33 left"
        );
        let mut steps = 0;
        while stepped.grown() && steps < 100 {
            if steps == 3 {
                // A round between steps: its row is the client's newest.
                history_row(&stepped, 1, "#!ipxe\nc1 r9\n");
            }
            if steps == 5 {
                // And one that carries its config's content over.
                carry_over(&stepped, 14);
            }
            let rows = seqs(&stepped).len();
            stepped.compact_if_grown().unwrap();
            let deleted = rows - seqs(&stepped).len();
            assert!(deleted <= 16, "a step deletes at most its 16 rows");
            steps += 1;
        }
        // 205 rows when the pass began, over `seq` 1 to past 300.
        assert_eq!(steps, 13, "a step looks at 16 rows, not 16 seq numbers");
        // Each client left by its newest row; c1's row appended during the
        // pass (not looked at) superseded its older one (looked at later),
        // and is the next pass's growth.
        assert_eq!(seqs(&stepped).len(), 33, "the forgotten eight gone");
        assert_eq!(stepped.growth(), (2, 31));
        history_row(&whole, 1, "#!ipxe\nc1 r9\n");
        carry_over(&whole, 14);
        whole.compact().unwrap();
        let sorted = |mut clients: Vec<ClientRecord>| {
            clients.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
            clients
        };
        let after = sorted(stepped.load().await.unwrap().clients);
        assert_eq!(after, sorted(whole.load().await.unwrap().clients));
        for n in [7, 14] {
            let c = after.iter().find(|c| c.fqdn == fqdn(n)).unwrap();
            let content = format!("#!ipxe\nc{n} r3\n");
            assert_eq!(c.content.as_deref(), Some(content.as_str()));
        }
        let c1 = after.iter().find(|c| c.fqdn == fqdn(1)).unwrap();
        assert_eq!(c1.content.as_deref(), Some("#!ipxe\nc1 r9\n"));
        let unchanged = |c: &&ClientRecord| c.fqdn != fqdn(1);
        assert_eq!(
            after.iter().filter(unchanged).collect::<Vec<_>>(),
            sorted(before.clients)
                .iter()
                .filter(unchanged)
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_compaction_step_that_fails_is_tried_again_at_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        history(&journal);
        journal.set_compaction(100, 16);
        journal.with_conn(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse BEFORE DELETE ON client_log
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
        });
        assert!(journal.compact_if_grown().is_err());
        assert!(journal.grown(), "the pass stays");
        journal.with_conn(|c| c.execute_batch("DROP TRIGGER refuse"));
        let mut steps = 0;
        while journal.grown() && steps < 100 {
            journal.compact_if_grown().unwrap();
            steps += 1;
        }
        assert_eq!((steps, seqs(&journal).len()), (11, 32));
    }

    /// A record of client `n`'s held config (revision 4) without content.
    fn carry_over(journal: &Journal, n: u32) {
        journal
            .commit(&Batch {
                clients: vec![ClientRecord {
                    fqdn: fqdn(n),
                    seen: None,
                    held: Some(held(4)),
                    content: None,
                }],
                ..Batch::default()
            })
            .unwrap();
    }

    fn history_row(journal: &Journal, n: u32, content: &str) {
        journal
            .commit(&Batch {
                clients: vec![ClientRecord {
                    fqdn: fqdn(n),
                    seen: None,
                    held: Some(held(9)),
                    content: Some(Arc::from(content)),
                }],
                ..Batch::default()
            })
            .unwrap();
    }
}
