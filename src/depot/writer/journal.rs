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
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::Value;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

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
/// `Journal::sync_mode` values.
const SYNC_NORMAL: u8 = 0;
const SYNC_FULL: u8 = 1;
const SYNC_UNKNOWN: u8 = 2;
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
    /// The `synchronous` mode last set on the connection ([`SYNC_FULL`],
    /// [`SYNC_NORMAL`], or [`SYNC_UNKNOWN`] after a failed round). A
    /// connection opened anew starts FULL (the connect options), so the
    /// connection is FULL or as recorded: never less safe.
    sync_mode: Arc<AtomicU8>,
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
        // A local file does not go stale: no ping (a round trip to the
        // connection's thread) before each round.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
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
            sync_mode: Arc::new(AtomicU8::new(SYNC_FULL)),
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
    ///
    /// The whole transaction is one script sent to the connection's thread
    /// at once: each statement handed over on its own costs a wake-up there
    /// and one back, and a round on an idle depot is mostly those. (sqlx's
    /// SQLite driver runs every statement of one query text, binding `$N`
    /// across them; upstream calls that behaviour deprecated — sqlx issue
    /// 3108 — so an upgrade must keep the journal tests passing, which fail
    /// when a statement of the script is skipped.)
    pub async fn commit(&self, batch: &Batch) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        // A round that forgets a config (a read, a removal) or records a
        // read must survive a power loss before its files go: fsync. One
        // that only adds configs need not: a file whose record is lost has
        // its marker line (start-up removes it) and the reconciliation writes
        // it again, so the push path pays no fsync.
        let full = batch.needs_fsync();
        // Only the writer commits, one round at a time: the mode recorded
        // is the connection's (or unknown, then set again). A round whose
        // mode is unchanged saves a statement.
        let was = self.sync_mode.load(Ordering::Relaxed);
        let wanted = if full { SYNC_FULL } else { SYNC_NORMAL };
        let script = Script::of(batch, was != wanted, full);
        let mut conn = self.pool.acquire().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(script.sql))
            .bind(script.clients)
            .bind(script.reads)
            .bind(script.changed_reads)
            .bind(batch.epoch.as_deref())
            .bind(script.highest)
            .execute(&mut *conn)
            .await;
        match done {
            Ok(_) => self.sync_mode.store(wanted, Ordering::Relaxed),
            Err(error) => {
                // A statement failed inside the script's transaction: end it
                // (there may be none left to end), and set the mode again
                // next time.
                self.sync_mode.store(SYNC_UNKNOWN, Ordering::Relaxed);
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(error.into());
            }
        }
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

/// A round's transaction as one script: only the statements the round
/// needs, their rows bound as JSON arrays (`$1` clients, `$2` reads seen,
/// `$3` reads defused or swept, `$4` the epoch, `$5` the highest revisions).
struct Script {
    sql: String,
    clients: Option<String>,
    reads: Option<String>,
    changed_reads: Option<String>,
    highest: Option<String>,
}

/// Appends the clients' rows as they are now (a client with neither floor
/// nor config is forgotten by its row). A record of a held config without
/// its content (anything but a set: an undo, a stale removal) carries the
/// content over from the row that config was journaled with (same revision,
/// epoch and time), so every held row has its content and compaction may
/// keep the newest only.
const INSERT_CLIENTS: &str =
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
 FROM json_each($1);
";
/// Records the reads seen.
const INSERT_READS: &str =
    "INSERT OR REPLACE INTO reads (fqdn, epoch, revision, product_id, action_request, read_at)
 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
 FROM json_each($2);
";
/// Reads whose files are still present (defused) or gone now (swept): to
/// be reported again.
const UPDATE_READS: &str = "UPDATE reads SET files = j.value ->> 3, files_present = j.value ->> 4, acked = 0
 FROM json_each($3) AS j
 WHERE reads.fqdn = j.value ->> 0 AND reads.epoch = j.value ->> 1 AND reads.revision = j.value ->> 2;
";
/// The epoch followed.
const WRITE_EPOCH: &str = "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', $4);
";
/// The highest revision per epoch.
const WRITE_HIGHEST: &str = "INSERT INTO highest (epoch, revision)
 SELECT value ->> 0, value ->> 1 FROM json_each($5) WHERE true
 ON CONFLICT (epoch) DO UPDATE SET revision = max(revision, excluded.revision);
";

impl Script {
    /// The script of `batch`; with `set_sync` it first sets the
    /// `synchronous` mode (`full` or normal).
    fn of(batch: &Batch, set_sync: bool, full: bool) -> Self {
        let mut sql = String::new();
        if set_sync {
            sql.push_str(match full {
                true => "PRAGMA synchronous = FULL;\n",
                false => "PRAGMA synchronous = NORMAL;\n",
            });
        }
        sql.push_str("BEGIN;\n");
        let array = |rows: Vec<Value>| Some(Value::Array(rows).to_string());
        let mut script = Self {
            sql,
            clients: None,
            reads: None,
            changed_reads: None,
            highest: None,
        };
        if !batch.clients.is_empty() {
            script.sql.push_str(INSERT_CLIENTS);
            script.clients = array(batch.clients.iter().map(client_json).collect());
        }
        if !batch.reads.is_empty() {
            script.sql.push_str(INSERT_READS);
            script.reads = array(batch.reads.iter().map(read_json).collect());
        }
        // One row per read: of two changes to one read the later stands, as
        // when they were applied one after the other.
        let mut changed: HashMap<&ReadKey, (&[String], bool)> = HashMap::new();
        let defused = batch.defused.iter().map(|(k, f)| (k, f.as_slice(), true));
        let swept = batch.swept.iter().map(|k| (k, &[][..], false));
        let mut order = Vec::new();
        for (key, files, present) in defused.chain(swept) {
            if changed.insert(key, (files, present)).is_none() {
                order.push(key);
            }
        }
        if !order.is_empty() {
            script.sql.push_str(UPDATE_READS);
            script.changed_reads = array(
                order
                    .into_iter()
                    .map(|key| {
                        let (files, present) = changed[key];
                        serde_json::json!([
                            key.fqdn,
                            key.epoch,
                            key.revision,
                            Value::from(files.to_vec()).to_string(),
                            present,
                        ])
                    })
                    .collect(),
            );
        }
        if batch.epoch.is_some() {
            script.sql.push_str(WRITE_EPOCH);
        }
        if !batch.highest.is_empty() {
            script.sql.push_str(WRITE_HIGHEST);
            script.highest = array(
                batch
                    .highest
                    .iter()
                    .map(|(e, r)| serde_json::json!([e.as_ref(), r]))
                    .collect(),
            );
        }
        script.sql.push_str("COMMIT;");
        script
    }
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

    #[tokio::test]
    async fn a_round_that_fails_midway_leaves_nothing_and_the_next_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("state")).await.unwrap();
        // The script's last statement fails for this epoch only.
        sqlx::raw_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON highest WHEN NEW.epoch = 'bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&journal.pool)
        .await
        .unwrap();
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
        journal.commit(&add).await.unwrap();
        assert!(journal.commit(&batch(1, "bad")).await.is_err());
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
        journal.commit(&batch(2, "good")).await.unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&journal.pool)
            .await
            .unwrap();
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
}
