//! A throwaway PostgreSQL cluster for the tests: `initdb` and `postgres`
//! from `/usr/lib/postgresql/<v>/bin` on a temporary directory and a free
//! port, run as the `postgres` user when the tests run as root (initdb
//! refuses root). One cluster serves the whole test binary (a database per
//! test); a test that restarts PostgreSQL starts a private one. A watchdog
//! shell reads the test process's end from a pipe and then stops the server
//! and removes the directory, so nothing outlives the tests, even a panic
//! or a SIGKILL of the test binary. Outside CI a missing PostgreSQL skips
//! the PostgreSQL half of a test; under CI=true it fails.

use std::fs;
use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use pxeconf::configserver::store::Store;
use sqlx::Connection;

use super::in_ci;

/// Which store engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A SQLite file in the test's directory.
    Sqlite,
    /// A fresh database in the shared test cluster.
    Postgres,
}

/// The newest installed PostgreSQL's bin directory.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether the tests run as root (then the server runs as `postgres`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `id -u postgres` and `id -g postgres`.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        assert!(out.status.success(), "no postgres user to run initdb as");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A command run as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running PostgreSQL cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    server: Mutex<Child>,
    // Its stdin is held open while the cluster lives (for the shared one:
    // the test process's life); its end tells the watchdog to clean up.
    _watchdog: (Child, ChildStdin),
    next_db: AtomicU32,
}

impl Cluster {
    /// Creates and starts a cluster; panics when it cannot.
    pub fn start() -> Self {
        let bin = bin_dir().expect("PostgreSQL is installed");
        let dir = tempfile::Builder::new()
            .prefix("pxeconf-pg-")
            .tempdir()
            .unwrap()
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.join("sock")).unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            for d in [dir.clone(), dir.join("sock")] {
                std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
            }
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--locale=C",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let watchdog = watchdog(&dir);
        let port = free_port();
        let server = spawn_server(&bin, &dir, port);
        let cluster = Self {
            bin,
            dir,
            port,
            server: Mutex::new(server),
            _watchdog: watchdog,
            next_db: AtomicU32::new(0),
        };
        cluster.wait_ready();
        cluster
    }

    /// The URL of `database` in this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A fresh, empty database; its URL.
    pub async fn fresh_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        self.url(&name)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.server.lock().unwrap().try_wait() {
                let log = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("postgres exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "postgres did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (a fast shutdown: sessions are cut, as a crash or
    /// failover would cut them) and starts it again on the same port.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&self) {
        let mut server = self.server.lock().unwrap();
        let _ = Command::new("kill")
            .args(["-INT", &server.id().to_string()])
            .status();
        let _ = server.wait();
    }

    /// Starts the stopped server again.
    pub fn start_again(&self) {
        *self.server.lock().unwrap() = spawn_server(&self.bin, &self.dir, self.port);
        self.wait_ready();
    }
}

/// `postgres` in the foreground (its pid is the child's), logging beside
/// the data. fsync is off: a test cluster needs no durability across a
/// machine crash, and CI time matters.
fn spawn_server(bin: &Path, dir: &Path, port: u16) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir.join("sock"))
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("postgres starts")
}

/// A shell that waits for its stdin to close (the test process ended),
/// then stops the server named in the data directory and removes it all.
fn watchdog(dir: &Path) -> (Child, ChildStdin) {
    let script = r#"
        read -r _ || true
        pidfile="$1/data/postmaster.pid"
        if [ -f "$pidfile" ]; then
          pid=$(head -n 1 "$pidfile")
          kill -INT "$pid" 2>/dev/null
          for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -rf "$1"
    "#;
    let mut child = Command::new("sh")
        .args(["-c", script, "watchdog"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    let mut stdin = child.stdin.take().unwrap();
    // Nothing is written until the end; a flush keeps the pipe honest.
    let _ = stdin.flush();
    (child, stdin)
}

/// Whether PostgreSQL can be used; outside CI a missing one skips with a
/// message, under CI it fails the test.
pub fn available() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    assert!(
        !in_ci(),
        "PostgreSQL is required in CI (the store runs on both engines); .ci/run installs it"
    );
    eprintln!("SKIPPED: PostgreSQL not installed; `bash .ci/run` installs it");
    false
}

/// The cluster shared by this test binary, started on first use; `None`
/// (outside CI only) when PostgreSQL is not installed.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| available().then(Cluster::start))
        .as_ref()
}

/// Where a test's store lives on `engine`: a SQLite file in `dir`, or a
/// fresh database in the shared cluster. `None`: PostgreSQL is missing
/// outside CI (the caller skips).
pub async fn location(engine: Engine, dir: &Path) -> Option<String> {
    match engine {
        Engine::Sqlite => Some(dir.join("pxeconf.db").display().to_string()),
        Engine::Postgres => Some(shared()?.fresh_database().await),
    }
}

/// A fresh store on `engine` (see [`location`]).
pub async fn store(engine: Engine, dir: &Path) -> Option<Store> {
    let location = location(engine, dir).await?;
    Some(
        Store::connect(&pxeconf::configserver::store::Location::parse(&location))
            .await
            .expect("open the test store"),
    )
}

/// Declares each named `async fn name(engine: Engine)` as two tests,
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::postgres::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::common::postgres::shared().is_some() {
                        super::$name($crate::common::postgres::Engine::Postgres).await
                    }
                }
            )*
        }
    };
}
