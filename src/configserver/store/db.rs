//! The database: SQLite (one writer connection serialises writes, a small
//! pool serves reads) or PostgreSQL (one pool; writes serialised by a
//! transaction-scoped advisory lock, so several configservers on one
//! database write one at a time as SQLite's single writer does). The SQL is
//! the same for both (see `migrations/postgres/` for the few functions that
//! make SQLite's JSON idioms work in PostgreSQL); [`on!`] runs one query
//! text on whichever engine is open. The store's other modules add methods
//! to [`Store`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::error::{Result, StoreError};
use super::native::{Access, Native};

/// How long a statement waits for a lock before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections (WAL readers do not block the writer).
const READERS: u32 = 4;
/// Rows a SQLite statement may send ahead of the reader (sqlx: 50).
const ROW_CHANNEL: usize = 1024;
/// PostgreSQL connections of one configserver.
const PG_CONNECTIONS: u32 = 8;
/// Writes of at most this many rows may run on the calling thread
/// ([`Store::write_native`]).
pub(super) const SMALL_WRITE: usize = 16;
/// PostgreSQL connections kept open however idle the configserver is.
const PG_KEPT: u32 = 2;
/// The connections of the PostgreSQL lease pool: the listener's and one for
/// renewals.
const PG_LEASE_CONNECTIONS: u32 = 2;
/// The advisory lock key every PostgreSQL write transaction takes first
/// ("pxeconf" in ASCII): writes are serialised across replicas.
pub(super) const WRITE_LOCK: i64 = 0x0070_7865_636f_6e66;

/// One value per engine: a connection, a pool, a transaction.
pub(super) enum Engine<S, P> {
    /// SQLite's.
    Sqlite(S),
    /// PostgreSQL's.
    Postgres(P),
}

/// Runs `$body` with `$c` bound to the SQLite or the PostgreSQL side of an
/// [`Engine`]: one query text, one result type, either engine.
macro_rules! on {
    ($target:expr, |$c:ident| $body:expr) => {
        match $target {
            $crate::configserver::store::db::Engine::Sqlite($c) => $body,
            $crate::configserver::store::db::Engine::Postgres($c) => $body,
        }
    };
}
pub(super) use on;

/// A write transaction on sqlx's SQLite writer, holding the write gate.
pub(super) struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    /// Released after the commit or rollback (declared after `tx`).
    _gate: OwnedMutexGuard<()>,
}

/// A write transaction on a PostgreSQL connection, holding the replica's
/// own write gate (then the write lock every replica takes).
pub(super) struct PgTx {
    tx: Transaction<'static, Postgres>,
    /// Released after the commit or rollback (declared after `tx`).
    _gate: OwnedMutexGuard<()>,
}

/// A transaction on either engine.
pub(super) type Tx = Engine<SqliteTx, PgTx>;
/// A write transaction.
pub(super) type WriteTx = Tx;

impl Tx {
    /// The transaction's connection, for [`on!`].
    pub(super) fn conn(&mut self) -> Engine<&mut SqliteConnection, &mut PgConnection> {
        match self {
            Engine::Sqlite(tx) => Engine::Sqlite(&mut *tx.tx),
            Engine::Postgres(tx) => Engine::Postgres(&mut *tx.tx),
        }
    }

    /// Commits.
    pub(super) async fn commit(self) -> Result<()> {
        match self {
            Engine::Sqlite(tx) => tx.tx.commit().await?,
            Engine::Postgres(tx) => tx.tx.commit().await?,
        }
        Ok(())
    }

    /// Rolls back.
    pub(super) async fn rollback(self) -> Result<()> {
        match self {
            Engine::Sqlite(tx) => tx.tx.rollback().await?,
            Engine::Postgres(tx) => tx.tx.rollback().await?,
        }
        Ok(())
    }
}

/// The query parameters of a PostgreSQL URL the driver takes (besides
/// `options[…]`).
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Where the store lives: a SQLite file or a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Location {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; `sqlite:` with a
    /// path after it, or a bare path, is a SQLite file.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Location::Postgres(text.to_owned());
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        Location::Sqlite(PathBuf::from(path))
    }

    /// [`Location::parse`], refusing what cannot be a store: a URL of
    /// another scheme (`postgress://…`, `POSTGRES://…` — taken for a SQLite
    /// path, it would run on a new, empty store) or a PostgreSQL URL that
    /// does not parse (found before anything binds, not at the first
    /// connection). The message never holds the URL: it may carry a
    /// password.
    pub fn checked(text: &str) -> Result<Self, String> {
        if let Some((scheme, _)) = text.split_once("://") {
            let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if is_scheme && !matches!(scheme, "postgres" | "postgresql" | "sqlite") {
                return Err(format!(
                    "unknown scheme {scheme:?}: give postgres://…, postgresql://…, sqlite://… or a file path"
                ));
            }
        }
        let location = Self::parse(text);
        if let Location::Postgres(text) = &location {
            // Parsed as the driver parses it. Nothing of a URL that does not
            // parse is quoted: an unescaped `?`, `/` or `@` in a password
            // moves the parts, so the password could be anywhere in it.
            let url = url::Url::parse(text)
                .map_err(|e| format!("not a usable PostgreSQL URL: {e} (the URL is not shown)"))?;
            // The driver logs a parameter it does not know with its value:
            // a misspelt `password` would be logged.
            for (key, _) in url.query_pairs() {
                if POSTGRES_PARAMETERS.contains(&&*key) || key.starts_with("options[") {
                    continue;
                }
                let plain = !key.is_empty()
                    && (key.chars()).all(|c| c.is_ascii_alphanumeric() || "_-[]".contains(c));
                return Err(if plain {
                    format!("unknown connection parameter {key:?} (its value is not shown)")
                } else {
                    "an unknown connection parameter (neither it nor its value is shown)".into()
                });
            }
            if let Err(e) = text.parse::<sqlx::postgres::PgConnectOptions>() {
                // The driver's message may quote a value: said only if it
                // quotes no password and no parameter's value.
                let detail = e.to_string();
                let secrets = (url.password().into_iter().map(str::to_owned))
                    .chain(url.query_pairs().map(|(_, v)| v.into_owned()));
                return Err(match secrets.filter(|s| !s.is_empty()).any(|s| detail.contains(&s)) {
                    false => format!("not a usable PostgreSQL URL: {detail}"),
                    true => "not a usable PostgreSQL URL (the driver's reason quotes a value, not shown)".into(),
                });
            }
        }
        Ok(location)
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

/// Shown without a password, so a location can be logged.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A URL with its passwords replaced: the user-info's (`user:password@`)
/// and any query parameter's whose name says password (`?password=…`,
/// which the PostgreSQL driver takes as well).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The user-info ends at the last `@`: a password with an unescaped `/`,
    // `?` or `@` in it is still hidden (a host or path that holds an `@`
    // shows less than it could).
    let (authority, tail) = match rest.rsplit_once('@') {
        Some((user_info, after)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            let masked = if user_info.contains(':') { ":***" } else { "" };
            let host_end = after.find(['/', '?']).unwrap_or(after.len());
            let (host, tail) = after.split_at(host_end);
            (format!("{user}{masked}@{host}"), tail)
        }
        None => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            (authority.to_owned(), tail)
        }
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The open connections.
#[derive(Clone)]
enum Db {
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
        /// Bundle loads' connections (`native`).
        readers: Arc<Native>,
        /// The hot writes' connection (`native`): action requests, push results.
        writer: Arc<Native>,
        /// Held by every write transaction of either writer: one at a time.
        gate: Arc<Mutex<()>>,
    },
    Postgres {
        /// Reads and writes.
        pool: PgPool,
        /// Depot leases and the announcements' listener, apart from the
        /// writers: a renewal must not wait for a connection behind writes
        /// queued on the write lock (its lease would lapse).
        leases: PgPool,
        /// Held by every write transaction of this replica from before it
        /// takes a connection: at most one of its connections waits on the
        /// write lock, the others stay free for reads.
        gate: Arc<Mutex<()>>,
    },
}

/// The store (SQLite or PostgreSQL).
#[derive(Clone)]
pub struct Store {
    db: Db,
    epoch: Arc<str>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false)
            // Nearly every statement reads a JSON id list through `IN
            // (SELECT … json_each(…))` or a CTE, an ephemeral table each;
            // backed by a temporary file's pager they cost heap trims
            // (`madvise` in a trace of an idle push) and made a bundle load
            // on a site-sized inventory 4× slower (docs/BENCHMARKS.md,
            // fifth pass). The price: a sort or temporary table of a very large
            // statement (a bulk write of 100,000 clients) is held in memory
            // while it runs, tens of MB, instead of spilling to a file.
            .pragma("temp_store", "memory")
            // A multi-row result streams through a channel from the
            // connection's thread: room for a batch's rows saves a wake-up
            // per 50 rows.
            .row_buffer_size(ROW_CHANNEL);
        // One writer: SQLite takes one at a time anyway, and queueing in the
        // pool is cheaper than SQLITE_BUSY retries. A local file does not go
        // stale as a socket does: no ping (a round trip to the connection's
        // thread) before each transaction.
        //
        // Every connection is opened at start and kept: by default a pool
        // closes connections idle for 10 minutes (and every one after 30),
        // so on a site with an action now and then the next write or bundle
        // load opened one first — its pragmas, a cold statement cache — on
        // the way to the depot (~0.3–1 ms in a trace). A local file does not
        // go stale.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(READERS)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let readers = Native::open(path, READERS as usize, Access::Read, BUSY_TIMEOUT)?;
        let writer = Native::open(path, 1, Access::Write, BUSY_TIMEOUT)?;
        Self::with(Db::Sqlite {
            write,
            read,
            readers,
            writer,
            gate: Arc::new(Mutex::new(())),
        })
        .await
    }

    /// Connects to the PostgreSQL database at `url` and migrates it (one
    /// replica at a time: sqlx's migrator holds an advisory lock).
    pub async fn connect_postgres(url: &str) -> Result<Self> {
        // No JIT compilation: short transactions never gain from it. With
        // PostgreSQL's guess of 1,000 rows per `json_each` list (10 since
        // migration 0005) an admin write's one-client reconcile query looked
        // expensive enough to compile — ~27 ms of JIT for a query that runs
        // in well under one (EXPLAIN ANALYZE; docs/BENCHMARKS.md), and any
        // other query over a long list still could.
        // PostgreSQL's notices ("relation … already exists, skipping" at every
        // start, from the migrator's own table) reached the log as INFO
        // lines; its warnings and errors still do.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.options([
            ("jit", "off"),
            ("client_min_messages", "warning"),
            // Whatever the server's default: each statement after the
            // write lock must see what the writer before committed. A
            // site's `repeatable read` took the snapshot at the lock
            // call, before the lock was granted — stale reads, and
            // serialization failures under contention.
            ("default_transaction_isolation", "read committed"),
        ]);
        // A few connections stay open on a quiet site, so the first action
        // after a pause does not open one (TCP, TLS, authentication) on its
        // way to the depot. Idle ones beyond those still close after sqlx's
        // 10 minutes, and each is replaced in the background after its
        // 30-minute lifetime; one is checked before use (a database restart
        // or a proxy may have dropped it).
        let pool = PgPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .min_connections(PG_KEPT)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // The listener keeps one for good; renewals take the other.
        let leases = PgPoolOptions::new()
            .max_connections(PG_LEASE_CONNECTIONS)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        Self::with(Db::Postgres {
            pool,
            leases,
            gate: Arc::new(Mutex::new(())),
        })
        .await
    }

    /// Opens the store at `location`.
    pub async fn connect(location: &Location) -> Result<Self> {
        match location {
            Location::Sqlite(path) => Self::open(path).await,
            Location::Postgres(url) => Self::connect_postgres(url).await,
        }
    }

    async fn with(db: Db) -> Result<Self> {
        let mut store = Self {
            db,
            epoch: Arc::from(""),
        };
        let epoch: String = on!(store.reader(), |p| {
            sqlx::query_scalar("SELECT value FROM identity WHERE key = 'epoch'")
                .fetch_one(p)
                .await?
        });
        store.epoch = epoch.into();
        store.recheck_blocks().await?;
        Ok(store)
    }

    /// The store's epoch: a random id made with the database (a restored
    /// copy keeps it; a new database has another).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The value of a run-time setting on the store's PostgreSQL
    /// connections (`current_setting`); none on SQLite. For diagnostics.
    pub async fn postgres_setting(&self, name: &str) -> Result<Option<String>> {
        match &self.db {
            Db::Postgres { pool, .. } => Ok(Some(
                sqlx::query_scalar("SELECT current_setting($1)")
                    .bind(name)
                    .fetch_one(pool)
                    .await?,
            )),
            Db::Sqlite { .. } => Ok(None),
        }
    }

    /// The database connections sqlx's pools hold open now, and how many
    /// they keep open however idle (the store's own SQLite connections,
    /// always open, not counted). For diagnostics.
    pub fn connections(&self) -> (u32, u32) {
        match &self.db {
            Db::Sqlite { write, read, .. } => (
                write.size() + read.size(),
                write.options().get_min_connections() + read.options().get_min_connections(),
            ),
            Db::Postgres { pool, .. } => (pool.size(), pool.options().get_min_connections()),
        }
    }

    /// Whether this is a PostgreSQL store (several configservers may share it).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres { .. })
    }

    /// The PostgreSQL pool of leases and the listener, for what only
    /// PostgreSQL has (leases, LISTEN/NOTIFY).
    pub(super) fn postgres(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres { leases, .. } => Some(leases),
            Db::Sqlite { .. } => None,
        }
    }

    /// Closes the connections (a copy of SQLite's files is consistent after this).
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite {
                write,
                read,
                readers,
                writer,
                ..
            } => {
                readers.close().await;
                writer.close().await;
                read.close().await;
                write.close().await;
            }
            Db::Postgres { pool, leases, .. } => {
                leases.close().await;
                pool.close().await;
            }
        }
    }

    /// The pool reads go to, for [`on!`].
    pub(super) fn reader(&self) -> Engine<&SqlitePool, &PgPool> {
        match &self.db {
            Db::Sqlite { read, .. } => Engine::Sqlite(read),
            Db::Postgres { pool, .. } => Engine::Postgres(pool),
        }
    }

    /// The store's own SQLite read connections, if this is SQLite.
    pub(super) fn native_readers(&self) -> Option<&Native> {
        match &self.db {
            Db::Sqlite { readers, .. } => Some(readers),
            Db::Postgres { .. } => None,
        }
    }

    /// The store's own SQLite writer connection, for reads that gain from
    /// its page cache (see `bundle`), if this is SQLite.
    pub(super) fn native_writer(&self) -> Option<&Native> {
        match &self.db {
            Db::Sqlite { writer, .. } => Some(writer),
            Db::Postgres { .. } => None,
        }
    }

    /// Runs `work` in one write transaction (`BEGIN IMMEDIATE`) on the
    /// store's own SQLite writer: committed if it returns `Ok`, rolled back
    /// if it fails. One hand-off for the whole transaction — none for a
    /// `small` one when the writer is idle: it runs on the calling thread
    /// (a few hundred µs of a runtime thread, against ~110 µs to the
    /// thread and ~150 µs back in a trickle; its call → on disk p50 −0.16 to
    /// −0.44 ms in five of six pairs, docs/BENCHMARKS.md, tenth pass). The write gate is held until the
    /// transaction has ended, even if the caller goes away meanwhile.
    /// PostgreSQL has no such writer: callers check [`Store::native_writer`]
    /// first.
    pub(super) async fn write_native<T, F>(&self, small: bool, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let Db::Sqlite { writer, gate, .. } = &self.db else {
            return Err(StoreError::Native(
                "no SQLite writer of the store's own".into(),
            ));
        };
        let held = Arc::clone(gate).lock_owned().await;
        let transaction = move |conn: &mut rusqlite::Connection| {
            let _held = held;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Dropped without a commit, the transaction rolls back.
            let out = work(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        let transaction = match small {
            true => match writer.run_here(transaction) {
                Ok(out) => return out,
                Err(transaction) => transaction,
            },
            false => transaction,
        };
        writer.run(transaction).await
    }

    /// A write transaction: on SQLite on sqlx's writer connection, holding
    /// the write gate (see [`Store::write_native`]); on PostgreSQL after
    /// the write lock (see [`WRITE_LOCK`]).
    pub(super) async fn begin(&self) -> Result<WriteTx> {
        match &self.db {
            Db::Sqlite { write, gate, .. } => {
                let gate = Arc::clone(gate).lock_owned().await;
                let tx = write.begin().await?;
                Ok(Engine::Sqlite(SqliteTx { tx, _gate: gate }))
            }
            Db::Postgres { pool, gate, .. } => {
                let gate = Arc::clone(gate).lock_owned().await;
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(Engine::Postgres(PgTx { tx, _gate: gate }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration is never edited once released: sqlx keeps each applied
    /// one's checksum (of the whole file, comments too) and refuses to
    /// start on a database whose migration differs — a comment changed in
    /// 0006 after a build with it went out would have stopped such a site.
    /// A new migration is pinned here when it is added.
    #[test]
    fn released_migrations_are_never_edited() {
        const PINNED: &[(&str, i64, &str)] = &[
            ("sqlite", 1, "3074bf285d570729"),
            ("sqlite", 2, "086a5bd2d0719927"),
            ("sqlite", 3, "b48347b4dc0fbdd9"),
            ("sqlite", 4, "d75aa630993b76ac"),
            ("sqlite", 5, "b4ea43f09b5ca7ae"),
            ("sqlite", 6, "533955a99ac9a232"),
            ("sqlite", 7, "1fcce109edccf645"),
            ("sqlite", 8, "e565d9d736c054b0"),
            ("postgres", 1, "f7b2f6504952e82d"),
            ("postgres", 2, "7b5e5981853857ec"),
            ("postgres", 3, "d75aa630993b76ac"),
            ("postgres", 4, "b4ea43f09b5ca7ae"),
            ("postgres", 5, "84a7441f05936e06"),
            ("postgres", 6, "906ae6e53fe6a827"),
            ("postgres", 7, "0664fff020af50b6"),
            ("postgres", 8, "e565d9d736c054b0"),
        ];
        let engines = [
            ("sqlite", sqlx::migrate!("./migrations")),
            ("postgres", sqlx::migrate!("./migrations/postgres")),
        ];
        for (engine, migrator) in engines {
            for m in migrator.iter() {
                let checksum: String = (m.checksum.iter().take(8))
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let pinned = PINNED
                    .iter()
                    .find(|(e, v, _)| *e == engine && *v == m.version);
                let Some((_, _, want)) = pinned else {
                    panic!(
                        "{engine} migration {} is not pinned: add (\"{engine}\", {}, \"{checksum}\")",
                        m.version, m.version
                    );
                };
                assert_eq!(
                    &checksum, want,
                    "{engine} migration {} was edited after its release: add a new one instead",
                    m.version
                );
            }
        }
    }

    #[tokio::test]
    async fn an_sqlite_store_opens_its_connections_at_start_and_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("pxeconf.db")).await.unwrap();
        let Db::Sqlite { write, read, .. } = &store.db else {
            panic!("an SQLite store");
        };
        assert_eq!((write.size(), read.size()), (1, READERS));
        for pool in [write, read] {
            let options = pool.options();
            assert_eq!(options.get_idle_timeout(), None, "never closed for idling");
            assert_eq!(options.get_max_lifetime(), None, "never closed for age");
        }
    }

    #[test]
    fn locations_parse_and_hide_passwords() {
        assert_eq!(
            Location::parse("/var/lib/pxeconf/pxeconf.db"),
            Location::Sqlite("/var/lib/pxeconf/pxeconf.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///tmp/a.db"),
            Location::Sqlite("/tmp/a.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:a.db"),
            Location::Sqlite("a.db".into())
        );
        let pg =
            Location::parse("postgres://pxe:s3cret@db.example.org:5432/pxeconf?sslmode=require");
        assert_eq!(
            pg.to_string(),
            "postgres://pxe:***@db.example.org:5432/pxeconf?sslmode=require"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert_eq!(
            Location::parse("postgresql://db/pxeconf").to_string(),
            "postgresql://db/pxeconf"
        );
        assert_eq!(
            Location::parse("postgres://pxe@db/pxeconf").to_string(),
            "postgres://pxe@db/pxeconf"
        );
        assert_eq!(pg.sqlite_path(), None);
        // A password given as a query parameter is hidden too.
        let query = Location::parse(
            "postgres://pxe@db/pxeconf?sslmode=require&password=s3cret&Sslpassword=k3y",
        );
        assert_eq!(
            query.to_string(),
            "postgres://pxe@db/pxeconf?sslmode=require&password=***&Sslpassword=***"
        );
        assert!(!format!("{query:?}").contains("s3cret"));
        assert_eq!(
            Location::parse("postgres://u:pw@db?password=x").to_string(),
            "postgres://u:***@db?password=***"
        );
        // Unescaped `/`, `?` or `@` in a password: still hidden.
        for (url, shown) in [
            ("postgres://pxe:12/cd@db/x", "postgres://pxe:***@db/x"),
            ("postgres://pxe:ab?cd@db/x", "postgres://pxe:***@db/x"),
            ("postgres://pxe:a@b@db/x", "postgres://pxe:***@db/x"),
        ] {
            assert_eq!(Location::parse(url).to_string(), shown, "{url}");
        }
    }

    #[test]
    fn a_checked_location_refuses_other_schemes_and_bad_postgres_urls() {
        for ok in [
            "pxeconf.db",
            "/var/lib/pxeconf/pxeconf.db",
            "sqlite:///tmp/a.db",
            "sqlite:a.db",
            "postgres://pxe:s3cret@db.example.org:5432/pxeconf?sslmode=require",
            "postgresql://db/pxeconf",
            "postgres://u@db/x?password=p&application_name=a&options[search_path]=s",
            "postgres://u@db/x?options%5Bsearch_path%5D=s",
        ] {
            assert_eq!(Location::checked(ok).unwrap(), Location::parse(ok), "{ok}");
        }
        for (bad, says) in [
            ("postgress://u:s3cret@db/x", "unknown scheme \"postgress\""),
            ("POSTGRES://u:s3cret@db/x", "unknown scheme \"POSTGRES\""),
            ("mysql://u:s3cret@db/x", "unknown scheme"),
            (
                "postgres://u:s3cret@db:notaport/x",
                "not a usable PostgreSQL URL",
            ),
            (
                "postgres://u:s3cret@db/x?sslmode=sometimes",
                "not a usable PostgreSQL URL",
            ),
            (
                "postgres://u@db/x?pasword=s3cret",
                "unknown connection parameter \"pasword\"",
            ),
            (
                "postgres://pxe:ab?s3cret@db/x",
                "not a usable PostgreSQL URL",
            ),
            (
                "postgres://pxe:s3cret?ab@db/x",
                "not a usable PostgreSQL URL",
            ),
            (
                "postgres://db/x?s3cret@x=1",
                "an unknown connection parameter",
            ),
            (
                "postgres://u@db/x?sslmode=s3cret",
                "the driver's reason quotes a value",
            ),
        ] {
            let error = Location::checked(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
            assert!(!error.contains("s3cret"), "{bad}: {error}");
        }
    }
}
