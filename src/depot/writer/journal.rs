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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::error::SeenState;
use super::messages::ReadEvent;
use super::state::{ClientRecord, Defused, Held, Seen};
use crate::domain::{ActionRequest, Fqdn, ProductId};

/// The journal's file name inside the state directory.
pub const JOURNAL_FILE: &str = "journal.db";
/// The lock file beside it: one depot per state directory.
const LOCK_FILE: &str = "journal.lock";
/// How long a statement waits for a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS highest (epoch TEXT PRIMARY KEY, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    fqdn           TEXT PRIMARY KEY,
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

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory or a file in it is unusable.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another depot uses the state directory.
    #[error("state directory {path} is in use by another depot (pid {holder})")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The holder's pid as written in the lock file.
        holder: String,
    },
    /// SQLite failed.
    #[error("journal: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored row does not parse (edited by hand?).
    #[error("journal row for {fqdn:?} is invalid: {message}")]
    Corrupt {
        /// The client of the row.
        fqdn: String,
        /// What is wrong.
        message: String,
    },
}

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
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

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
            // Every commit is on disk before the renames it precedes.
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
        Ok(Self {
            pool,
            path,
            _lock: Arc::new(lock),
        })
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
        let clients = sqlx::query("SELECT * FROM clients")
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
        let mut tx = self.pool.begin().await?;
        let (keep, forget): (Vec<&ClientRecord>, Vec<&ClientRecord>) = batch
            .clients
            .iter()
            .partition(|c| c.seen.is_some() || c.held.is_some());
        if !keep.is_empty() {
            let rows = Value::Array(keep.iter().map(|c| client_json(c)).collect());
            sqlx::query(
                "INSERT OR REPLACE INTO clients (fqdn, seen_revision, seen_state, seen_epoch, held,
                   product_id, action_request, held_revision, files, template, since, content, held_epoch)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                   value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, value ->> 12
                 FROM json_each(?)",
            )
            .bind(rows.to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !forget.is_empty() {
            let names = Value::Array(forget.iter().map(|c| json!(c.fqdn.as_str())).collect());
            sqlx::query("DELETE FROM clients WHERE fqdn IN (SELECT value FROM json_each(?))")
                .bind(names.to_string())
                .execute(&mut *tx)
                .await?;
        }
        if !batch.reads.is_empty() {
            let rows = Value::Array(batch.reads.iter().map(read_json).collect());
            sqlx::query(
                "INSERT OR REPLACE INTO reads (fqdn, epoch, revision, product_id, action_request, read_at)
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
                 FROM json_each(?)",
            )
            .bind(rows.to_string())
            .execute(&mut *tx)
            .await?;
        }
        for (key, files) in &batch.defused {
            sqlx::query(
                "UPDATE reads SET files = ?, files_present = 1, acked = 0
                 WHERE fqdn = ? AND epoch = ? AND revision = ?",
            )
            .bind(Value::from(files.clone()).to_string())
            .bind(&key.fqdn)
            .bind(&key.epoch)
            .bind(key.revision as i64)
            .execute(&mut *tx)
            .await?;
        }
        for key in &batch.swept {
            sqlx::query(
                "UPDATE reads SET files = '[]', files_present = 0, acked = 0
                 WHERE fqdn = ? AND epoch = ? AND revision = ?",
            )
            .bind(&key.fqdn)
            .bind(&key.epoch)
            .bind(key.revision as i64)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(epoch) = &batch.epoch {
            sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)")
                .bind(epoch.as_ref())
                .execute(&mut *tx)
                .await?;
        }
        for (epoch, revision) in &batch.highest {
            sqlx::query(
                "INSERT INTO highest (epoch, revision) VALUES (?1, ?2)
                 ON CONFLICT (epoch) DO UPDATE SET revision = max(revision, excluded.revision)",
            )
            .bind(epoch.as_ref())
            .bind(*revision as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
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

fn client_json(c: &ClientRecord) -> Value {
    let seen = c.seen.as_ref();
    let held = c.held.as_ref();
    json!([
        c.fqdn.as_str(),
        seen.map(|s| s.revision),
        seen.map(|s| s.state.as_str()),
        seen.map(|s| s.epoch.as_ref()),
        i64::from(held.is_some()),
        held.map(|h| h.product_id.as_str()),
        held.map(|h| h.action_request.as_str()),
        held.map(|h| h.revision),
        held.map(|h| Value::from(h.files.clone()).to_string()),
        held.map(|h| h.template.as_str()),
        held.map(|h| ms(h.since)),
        held.map(|h| h.content.as_ref()),
        held.map(|h| h.epoch.as_ref()),
    ])
}

fn read_json(r: &ReadEvent) -> Value {
    json!([
        r.fqdn.as_str(),
        r.epoch.as_ref(),
        r.revision,
        r.product_id.as_str(),
        r.action_request.as_str(),
        ms(r.read_at),
    ])
}

fn corrupt(fqdn: &str, message: impl ToString) -> JournalError {
    JournalError::Corrupt {
        fqdn: fqdn.to_owned(),
        message: message.to_string(),
    }
}

fn files(fqdn: &str, text: &str) -> Result<Vec<String>, JournalError> {
    serde_json::from_str(text).map_err(|e| corrupt(fqdn, e))
}

fn client_record(row: &sqlx::sqlite::SqliteRow) -> Result<ClientRecord, JournalError> {
    let name: String = row.get("fqdn");
    let bad = |e: crate::domain::ValidationError| corrupt(&name, e.message);
    let fqdn = Fqdn::parse(&name, "fqdn").map_err(bad)?;
    let seen = match row.get::<Option<String>, _>("seen_state") {
        None => None,
        Some(state) => Some(Seen {
            revision: row
                .get::<Option<i64>, _>("seen_revision")
                .unwrap_or(0)
                .max(0) as u64,
            state: SeenState::parse(&state).ok_or_else(|| corrupt(&name, state))?,
            epoch: Arc::from(
                row.get::<Option<String>, _>("seen_epoch")
                    .unwrap_or_default(),
            ),
        }),
    };
    let held = match row.get::<i64, _>("held") {
        0 => None,
        _ => {
            let text = |column: &str| row.get::<Option<String>, _>(column).unwrap_or_default();
            Some(Held {
                product_id: ProductId::parse(&text("product_id"), "product_id").map_err(bad)?,
                action_request: text("action_request")
                    .parse::<ActionRequest>()
                    .map_err(|()| corrupt(&name, "unknown action request"))?,
                revision: row
                    .get::<Option<i64>, _>("held_revision")
                    .unwrap_or(0)
                    .max(0) as u64,
                files: files(&name, &text("files"))?,
                template: text("template"),
                since: from_ms(row.get::<Option<i64>, _>("since").unwrap_or(0)),
                content: Arc::from(text("content")),
                epoch: Arc::from(text("held_epoch")),
            })
        }
    };
    Ok(ClientRecord { fqdn, seen, held })
}

fn read_row(row: &sqlx::sqlite::SqliteRow) -> Result<(ReadEvent, Vec<String>, bool), JournalError> {
    let name: String = row.get("fqdn");
    let bad = |e: crate::domain::ValidationError| corrupt(&name, e.message);
    let read = ReadEvent {
        fqdn: Fqdn::parse(&name, "fqdn").map_err(bad)?,
        product_id: ProductId::parse(&row.get::<String, _>("product_id"), "product_id")
            .map_err(bad)?,
        revision: row.get::<i64, _>("revision").max(0) as u64,
        action_request: row
            .get::<String, _>("action_request")
            .parse::<ActionRequest>()
            .map_err(|()| corrupt(&name, "unknown action request"))?,
        epoch: Arc::from(row.get::<String, _>("epoch")),
        files_present: row.get::<i64, _>("files_present") != 0,
        read_at: from_ms(row.get("read_at")),
    };
    let files = files(&name, &row.get::<String, _>("files"))?;
    Ok((read, files, row.get::<i64, _>("acked") != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(revision: u64) -> Held {
        Held {
            product_id: ProductId::parse("win10-x64", "p").unwrap(),
            action_request: ActionRequest::Setup,
            revision,
            files: vec!["01-02-00-00-00-00-01".into()],
            template: "install".into(),
            since: from_ms(1_700_000_000_000),
            content: Arc::from("#!ipxe\nsecret\n"),
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
                },
                ClientRecord {
                    fqdn: fqdn(2),
                    seen: Some(floor(7, SeenState::Read)),
                    held: None,
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
            }],
            ..Batch::default()
        };
        journal.commit(&forget).await.unwrap();
        assert_eq!(journal.load().await.unwrap().clients.len(), 1);
    }
}
