//! Self-contained mode's roles: the configserver and the depots run as child
//! processes of this same binary, so that each role's peak memory is its
//! own (VmHWM in /proc/<pid>/status). Each logs JSON to a file in the run
//! directory; the bound gRPC and metrics addresses are read from its log.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;

use crate::cli::error::CliError;

/// How long a role may take to bind its ports.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a role may drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running role.
pub struct Role {
    /// What it is, e.g. `configserver` or a depot id.
    pub name: String,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its `/metrics` address.
    pub metrics: SocketAddr,
    child: Child,
    log: PathBuf,
    // Resolves when the role's stderr closes: it exited (or crashed).
    ended: oneshot::Receiver<()>,
}

/// The addresses a role logs when it has bound its ports.
#[derive(Default)]
struct Bound {
    grpc: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

impl Role {
    /// Starts `pxeconf <args>` (this binary), logging to `log`, and waits
    /// until it has bound its gRPC and metrics ports (both given as port 0).
    pub async fn spawn(
        name: &str,
        args: Vec<OsString>,
        log: &Path,
        filter: &str,
    ) -> Result<Self, CliError> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json", "--grace-period", "5s"])
            // The bind lines are what the load test waits for.
            .env("RUST_LOG", format!("{filter},pxeconf::cli::serve=info"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C at the terminal reaches only
            // the load test, which then stops the roles in order.
            .process_group(0)
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PXECONF_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let log_path = log.to_owned();
        let (tx, rx) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel();
        tokio::spawn(async move {
            copy_log(stderr, log_path, tx).await;
            let _ = ended_tx.send(());
        });
        let bound = tokio::time::timeout(START_TIMEOUT, rx).await;
        let Ok(Ok((addr, metrics))) = bound else {
            let _ = child.start_kill();
            return Err(format!(
                "{name} did not start; its log is {}:\n{}",
                log.display(),
                tail(log)
            )
            .into());
        };
        Ok(Self {
            name: name.to_owned(),
            addr,
            metrics,
            child,
            log: log.to_owned(),
            ended,
        })
    }

    /// Waits until the role exits on its own (a crash, a failed task) and
    /// says so with the end of its log; a load test must not wait for
    /// acknowledgements from a process that is gone.
    pub async fn exited(&mut self) -> String {
        let _ = (&mut self.ended).await;
        format!(
            "{} exited during the run; its log is {}:\n{}",
            self.name,
            self.log.display(),
            tail(&self.log)
        )
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(&format!("/proc/{}/status", self.pid()?))
    }

    /// Stops it with SIGTERM (killed if it does not drain in time).
    pub async fn stop(mut self) {
        if let Some(pid) = self.pid() {
            let sent = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .is_ok_and(|s| s.success());
            if sent
                && tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                    .await
                    .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
        tracing::warn!(role = %self.name, log = %self.log.display(), "killed after no clean stop");
    }
}

/// Copies the role's stderr into `log`, and sends its bound addresses once
/// both lines have been seen.
async fn copy_log(
    stderr: ChildStderr,
    log: PathBuf,
    tx: oneshot::Sender<(SocketAddr, SocketAddr)>,
) {
    let Ok(mut file) = tokio::fs::File::create(&log).await else {
        return;
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut bound = Bound::default();
    let mut tx = Some(tx);
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
        if tx.is_some() {
            bound.see(&line);
            if let (Some(g), Some(m)) = (bound.grpc, bound.metrics) {
                let _ = tx.take().map(|tx| tx.send((g, m)));
                let _ = file.flush().await;
            }
        }
    }
    let _ = file.flush().await;
}

impl Bound {
    /// Picks the addresses out of the JSON log lines of `cli::serve`.
    fn see(&mut self, line: &str) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let addr = event
            .get("addr")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse().ok());
        match event.get("message").and_then(|m| m.as_str()) {
            Some("gRPC listening") => self.grpc = addr,
            Some("metrics on /metrics") => self.metrics = addr,
            _ => {}
        }
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// VmHWM of a /proc status file, KiB.
pub fn peak_rss_kib(status: &str) -> Option<u64> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_addresses_come_from_the_json_log() {
        let mut b = Bound::default();
        b.see(r#"{"timestamp":"x","level":"INFO","message":"metrics on /metrics","addr":"127.0.0.1:9000","target":"pxeconf::cli::serve"}"#);
        b.see("not json");
        b.see(r#"{"level":"INFO","message":"gRPC listening","addr":"127.0.0.1:5000"}"#);
        assert_eq!(b.grpc, Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(b.metrics, Some("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn peak_rss_is_read_from_proc() {
        assert!(peak_rss_kib("/proc/self/status").is_some_and(|k| k > 0));
        assert_eq!(peak_rss_kib("/nonexistent"), None);
    }
}
