//! Real processes of the built binary, for tests whose point is a crash
//! (SIGKILL, SIGTERM), a second instance, or an exit code: a configserver or
//! a depot, its log captured, its bound address read from the log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ADMIN_KEY, depot_id, depot_key, pxeconf_command};

/// A running `pxeconf` server; killed when dropped.
pub struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The gRPC address it listens on.
    pub addr: SocketAddr,
    /// What to start it with again.
    args: Vec<String>,
    envs: Vec<(String, String)>,
    prefix: Vec<String>,
}

/// How a server is started: its role's arguments, extra environment, and a
/// command to run it under (e.g. `setpriv` to drop privileges).
#[derive(Clone, Default)]
pub struct Launch {
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub prefix: Vec<String>,
}

impl Launch {
    /// Starts the server.
    pub async fn start(self) -> Server {
        Server::start(self).await
    }

    /// With `name=value` in the environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_owned(), value.to_owned()));
        self
    }

    /// With `args` added.
    pub fn arg(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

fn spawn(launch: &Launch) -> (Child, Arc<Mutex<String>>) {
    let mut command = match launch.prefix.split_first() {
        Some((program, rest)) => {
            let mut c = std::process::Command::new(program);
            c.args(rest).arg(env!("CARGO_BIN_EXE_pxeconf"));
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("PXECONF_") {
                    c.env_remove(name);
                }
            }
            c
        }
        None => pxeconf_command(),
    };
    command
        .args(&launch.args)
        .envs(launch.envs.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start pxeconf");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

impl Server {
    /// Starts `pxeconf` as `launch` says and waits until it listens.
    pub async fn start(launch: Launch) -> Self {
        // A restart on the same port (`restart_later`) may find it taken for
        // a while: another test's client connection can hold it as its local
        // port. Waiting for it is the restart the test means.
        let mut tries = 150;
        let (mut server, line) = loop {
            let (child, log) = spawn(&launch);
            let mut server = Self {
                child,
                log,
                addr: "0.0.0.0:0".parse().unwrap(),
                args: launch.args.clone(),
                envs: launch.envs.clone(),
                prefix: launch.prefix.clone(),
            };
            match server.wait_started_unless_busy("gRPC listening").await {
                Some(line) => break (server, line),
                None if tries > 0 => {
                    tries -= 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => panic!("the port stayed taken for 30 s:\n{}", server.log()),
            }
        };
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("the listening line names the address");
        server.addr = addr.parse().unwrap();
        server.wait_started(" serving").await;
        server
    }

    /// [`Self::wait_started`], but `None` when the process exited because
    /// its listening port was taken.
    async fn wait_started_unless_busy(&mut self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return Some(self.wait_started(needle).await);
            }
            if self.child.try_wait().unwrap().is_some() {
                std::thread::sleep(Duration::from_millis(50));
                if self.log().contains("Address already in use") {
                    return None;
                }
                return Some(self.wait_started(needle).await);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (up to 60 s) for a start-up log line; fails at once, with the
    /// log, if the process exits instead.
    async fn wait_started(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "pxeconf exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within 60 s; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How to start the same server again, on the same address (taken
    /// before the server is stopped).
    pub fn restart_later(&self) -> Launch {
        let mut args = self.args.clone();
        if let Some(at) = args.iter().position(|a| a == "--listen") {
            args[at + 1] = self.addr.to_string();
        }
        Launch {
            args,
            envs: self.envs.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to `secs`) until a log line contains `needle`; returns it.
    pub async fn wait_log(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {secs} s; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `KILL`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits (up to `secs`) for the process to exit.
    pub async fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {secs} s; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits for the end.
    pub async fn kill(mut self) {
        self.signal("KILL");
        self.wait_exit(30).await;
    }

    /// SIGTERM, and waits for the end; returns how it ended.
    pub async fn terminate(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(60).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pxeconf` to its end (a start that must fail): status and stderr.
pub fn run_to_end(launch: &Launch, secs: u64) -> (ExitStatus, String) {
    let (mut child, log) = spawn(launch);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {secs} s:\n{}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The reader thread finishes with the pipe.
    std::thread::sleep(Duration::from_millis(50));
    let text = log.lock().unwrap().clone();
    (status, text)
}

/// A key file with `key`, mode 0600.
pub fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A configserver on `database`, Admin key [`ADMIN_KEY`], fast retries.
pub fn configserver(database: &Path, keys: &Path) -> Launch {
    configserver_on(&database.display().to_string(), keys)
}

/// A configserver on `database` (a SQLite path or a PostgreSQL URL), as
/// [`configserver`].
pub fn configserver_on(database: &str, keys: &Path) -> Launch {
    let key = key_file(keys, "admin.key", ADMIN_KEY);
    Launch {
        args: [
            "configserver",
            "--listen",
            "127.0.0.1:0",
            "--database",
            database,
            "--host-key-file",
            &key.display().to_string(),
            "--max-backoff",
            "500ms",
        ]
        .map(String::from)
        .to_vec(),
        ..Launch::default()
    }
}

/// Depot `i` on `dirs`, reporting to `configserver`, its journal in
/// `state`.
pub fn depot(i: usize, dirs: &super::DepotDirs, state: &Path, configserver: &str) -> Launch {
    let key = key_file(dirs.root.path(), &format!("depot{i}.key"), &depot_key(i));
    Launch {
        args: [
            "depot",
            "--listen",
            "127.0.0.1:0",
            "--depot-id",
            &depot_id(i),
            "--pxe-dir",
            &dirs.pxe.display().to_string(),
            "--template-dir",
            &dirs.templates.display().to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--configserver",
            configserver,
            "--host-key-file",
            &key.display().to_string(),
            "--grace-period",
            "3s",
        ]
        .map(String::from)
        .to_vec(),
        ..Launch::default()
    }
}

/// An Admin client of the configserver at `url`.
pub async fn admin_at(url: &str) -> super::Admin {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    pxeconf::proto::admin_client::AdminClient::with_interceptor(
        channel,
        pxeconf::auth::AttachKey::new(&pxeconf::domain::Secret::new(ADMIN_KEY)).unwrap(),
    )
}
