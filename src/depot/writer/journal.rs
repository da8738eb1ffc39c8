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

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

mod rows;

use super::error::JournalError;
use super::messages::ReadEvent;
use super::records::{ClientRecord, Defused};
use crate::domain::Fqdn;
use rows::{client_json, client_record, read_json, read_row};

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

/// The journal.
#[derive(Clone)]
pub struct Journal {
    pool: SqlitePool,
    path: PathBuf,
    _lock: Arc<File>,
    /// Client rows appended since the last compaction, and the rows left
    /// by it.
    growth: Arc<std::sync::Mutex<(u64, u64)>>,
    /// Whether `synchronous = FULL` was the last mode set on the
    /// connection. A connection opened anew starts FULL (the connect
    /// options), so the connection is FULL or as recorded: never less safe.
    full_sync: Arc<std::sync::atomic::AtomicBool>,
}

/// Rows appended before a compaction is considered.
const COMPACT_AFTER: u64 = 50_000;

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
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| JournalError::Io { path, source }
        };
        if !state_dir.exists() {
            std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
            std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(state_dir))?;
        }
        let lock = lock(state_dir)?;
        let path = state_dir.join(JOURNAL_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Rounds that forget a config or record a read are fsynced before
            // their file work (see `commit`); the others are written ahead of
            // it, durable against a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection: the writer's rounds and the reporter's acks are
        // serialised by SQLite anyway.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&path))?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let journal = Self {
            pool,
            path,
            _lock: Arc::new(lock),
            growth: Arc::default(),
            full_sync: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        journal.compact().await?;
        Ok(journal)
    }

    /// Keeps only each client's newest row (and none for a forgotten one).
    async fn compact(&self) -> Result<(), JournalError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM client_log WHERE seq NOT IN (SELECT max(seq) FROM client_log GROUP BY fqdn)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM client_log WHERE seen_state IS NULL AND held = 0")
            .execute(&mut *tx)
            .await?;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM client_log")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        *self.growth.lock().unwrap_or_else(|p| p.into_inner()) = (0, rows.max(0) as u64);
        Ok(())
    }

    /// Counts `rows` appended; true when the log has grown enough to
    /// compact (past [`COMPACT_AFTER`] and past the rows it describes).
    fn grown(&self, rows: usize) -> bool {
        let mut growth = self.growth.lock().unwrap_or_else(|p| p.into_inner());
        growth.0 += rows as u64;
        growth.0 > COMPACT_AFTER.max(growth.1)
    }

    /// Compacts the log if it has grown enough. Called between rounds,
    /// never inside one: an undo's record takes its content from the row
    /// its config was journaled with, which must still be there.
    pub async fn compact_if_grown(&self) -> Result<(), JournalError> {
        if self.grown(0) {
            self.compact().await?;
        }
        Ok(())
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything the journal holds.
    pub async fn load(&self) -> Result<Contents, JournalError> {
        let epoch: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'")
                .fetch_optional(&self.pool)
                .await?;
        let highest = sqlx::query_as::<_, (String, i64)>("SELECT epoch, revision FROM highest")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(e, r)| (Arc::from(e), r.max(0) as u64))
            .collect();
        let clients = sqlx::query(
            "SELECT * FROM client_log WHERE seq IN (SELECT max(seq) FROM client_log GROUP BY fqdn)
               AND (seen_state IS NOT NULL OR held <> 0)",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(client_record)
        .collect::<Result<Vec<_>, _>>()?;
        let reads = sqlx::query("SELECT * FROM reads ORDER BY read_at")
            .fetch_all(&self.pool)
            .await?;
        let mut snapshot = Contents {
            clients,
            epoch: Arc::from(epoch.unwrap_or_default()),
            highest,
            ..Contents::default()
        };
        for row in &reads {
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

    /// Writes a round's changes in one durable transaction.
    pub async fn commit(&self, batch: &Batch) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        // A round that forgets a config (a read, a removal) or records a
        // read must survive a power loss before its files go: fsync. One
        // that only adds configs need not: a file whose record is lost has
        // its marker line (start-up removes it) and the reconciliation writes
        // it again, so the push path pays no fsync.
        let full = batch.needs_fsync();
        // Only the writer commits, one round at a time: the mode recorded
        // is the connection's (or FULL, see `full_sync`). A round whose
        // mode is unchanged saves a statement.
        let was = self.full_sync.load(std::sync::atomic::Ordering::Relaxed);
        if full != was {
            let sync = match full {
                true => "PRAGMA synchronous = FULL",
                false => "PRAGMA synchronous = NORMAL",
            };
            sqlx::query(sync).execute(&mut *conn).await?;
            self.full_sync
                .store(full, std::sync::atomic::Ordering::Relaxed);
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        write_clients(&mut tx, &batch.clients).await?;
        write_reads(&mut tx, batch).await?;
        write_position(&mut tx, batch).await?;
        tx.commit().await?;
        drop(conn);
        self.grown(batch.clients.len());
        Ok(())
    }

    /// The configserver acknowledged these reads (each with whether its
    /// report said the files were still present): a read whose files are
    /// gone is forgotten, one still defused waits for its sweep.
    pub async fn ack_reads(&self, acks: &[(ReadKey, bool)]) -> Result<(), JournalError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (key, files_present) in acks {
            sqlx::query(
                "DELETE FROM reads WHERE fqdn = ? AND epoch = ? AND revision = ? AND files_present = 0 AND ? = 0",
            )
            .bind(&key.fqdn)
            .bind(&key.epoch)
            .bind(key.revision as i64)
            .bind(*files_present)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE reads SET acked = 1 WHERE fqdn = ? AND epoch = ? AND revision = ? AND files_present = ?",
            )
            .bind(&key.fqdn)
            .bind(&key.epoch)
            .bind(key.revision as i64)
            .bind(*files_present)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The clients' rows as they are now, appended in one statement (a client
/// with neither floor nor config is forgotten by its row).
async fn write_clients(
    conn: &mut SqliteConnection,
    clients: &[ClientRecord],
) -> Result<(), JournalError> {
    if clients.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(clients.iter().map(client_json).collect());
    // A record of a held config without its content (anything but a set:
    // an undo, a stale removal) carries the content over from the row that
    // config was journaled with (same revision, epoch and time), so every
    // held row has its content and compaction may keep the newest only.
    sqlx::query(
        "INSERT INTO client_log (fqdn, seen_revision, seen_state, seen_epoch, held,
           product_id, action_request, held_revision, files, template, since, content, held_epoch)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
           value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10,
           CASE WHEN value ->> 4 = 1 AND value ->> 11 IS NULL THEN
             (SELECT l.content FROM client_log l
              WHERE l.fqdn = value ->> 0 AND l.held = 1 AND l.content IS NOT NULL
                AND l.held_revision IS value ->> 7 AND l.since IS value ->> 10
                AND l.held_epoch IS value ->> 12
              ORDER BY l.seq DESC LIMIT 1)
           ELSE value ->> 11 END,
           value ->> 12
         FROM json_each(?)",
    )
    .bind(rows.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reads seen, defused and swept.
async fn write_reads(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), JournalError> {
    if !batch.reads.is_empty() {
        let rows = Value::Array(batch.reads.iter().map(read_json).collect());
        sqlx::query(
            "INSERT OR REPLACE INTO reads (fqdn, epoch, revision, product_id, action_request, read_at)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
             FROM json_each(?)",
        )
        .bind(rows.to_string())
        .execute(&mut *conn)
        .await?;
    }
    let defused = batch
        .defused
        .iter()
        .map(|(k, files)| (k, files.as_slice(), true));
    let swept = batch.swept.iter().map(|k| (k, &[][..], false));
    for (key, files, present) in defused.chain(swept) {
        sqlx::query(
            "UPDATE reads SET files = ?, files_present = ?, acked = 0
             WHERE fqdn = ? AND epoch = ? AND revision = ?",
        )
        .bind(Value::from(files.to_vec()).to_string())
        .bind(present)
        .bind(&key.fqdn)
        .bind(&key.epoch)
        .bind(key.revision as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The epoch followed and the highest revision per epoch.
async fn write_position(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), JournalError> {
    if let Some(epoch) = &batch.epoch {
        sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)")
            .bind(epoch.as_ref())
            .execute(&mut *conn)
            .await?;
    }
    for (epoch, revision) in &batch.highest {
        sqlx::query(
            "INSERT INTO highest (epoch, revision) VALUES (?1, ?2)
             ON CONFLICT (epoch) DO UPDATE SET revision = max(revision, excluded.revision)",
        )
        .bind(epoch.as_ref())
        .bind(*revision as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::error::SeenState;
    use super::super::records::{Held, Seen};
    use super::rows::from_ms;
    use super::*;
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
        journal.commit(&batch).await.unwrap();
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
        journal.commit(&defused).await.unwrap();
        journal.ack_reads(&[(key.clone(), true)]).await.unwrap();
        let snapshot = journal.load().await.unwrap();
        assert!(snapshot.unreported.is_empty());
        assert_eq!(snapshot.defused.len(), 1);
        let swept = Batch {
            swept: vec![key.clone()],
            ..Batch::default()
        };
        journal.commit(&swept).await.unwrap();
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
        journal.commit(&forget).await.unwrap();
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
            journal.commit(&again).await.unwrap();
        }
        drop(journal);
        let journal = Journal::open(&state).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM client_log")
            .fetch_one(&journal.pool)
            .await
            .unwrap();
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
                journal.commit(&batch).await.unwrap();
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
        journal.compact().await.unwrap();
        let loaded = journal.load().await.unwrap().clients;
        assert_eq!(loaded[0].content.as_deref(), Some("r5\n"));
    }
}
