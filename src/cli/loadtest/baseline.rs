//! The raw file-pair baseline: what the directory itself allows — per
//! client, two ~400-byte files each written to a temporary name and renamed
//! into place (no fsync), as a depot does, in one plain loop; three passes,
//! the median one counts (one pass of 10,000 clients takes well under a
//! second, short enough for a busy neighbour to skew it). Each pass, and
//! each bulk, starts with the file system's dirty pages written back
//! ([`settle`]): on a disk, the writeback of one phase's files would
//! otherwise land on the next phase's clock.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::names::Names;
use crate::cli::error::CliError;

/// Bytes per file, about a rendered pxelinux config.
const FILE_BYTES: usize = 400;
/// Passes of the loop; the median counts.
const PASSES: usize = 3;

/// The raw loop's result.
#[derive(Debug, Serialize)]
pub struct RawResult {
    /// Where it ran.
    pub dir: PathBuf,
    /// Clients (two files each).
    pub clients: u32,
    /// Seconds of the median pass.
    pub seconds: f64,
    /// Clients per second of each pass.
    pub passes: Vec<f64>,
    /// Clients per second.
    pub clients_per_second: f64,
}

/// Runs the loop for `clients` clients in a directory of its own made in
/// `dir` for each pass and removed after it: whatever `dir` held (an
/// operator's `--dir`) stays as it was.
pub async fn raw_file_pairs(dir: &Path, names: Names, clients: u32) -> Result<RawResult, CliError> {
    let dir = dir.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let mut seconds = Vec::with_capacity(PASSES);
        std::fs::create_dir_all(&dir)?;
        for _ in 0..PASSES {
            // `create_dir` fails on an existing name: nothing else is removed.
            let own = dir.join(format!("pxeconf-raw-{:016x}", rand::random::<u64>()));
            std::fs::create_dir(&own)?;
            settle_logged(&own);
            let pass = file_pairs(&own, &names, clients);
            std::fs::remove_dir_all(&own)?;
            seconds.push(pass?.max(1e-6));
        }
        let passes: Vec<f64> = seconds.iter().map(|s| f64::from(clients) / s).collect();
        seconds.sort_by(f64::total_cmp);
        let median = seconds[PASSES / 2];
        Ok::<_, std::io::Error>(RawResult {
            dir,
            clients,
            seconds: median,
            passes,
            clients_per_second: f64::from(clients) / median,
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(result)
}

/// Writes back the dirty pages of the file system holding `dir` (`syncfs`),
/// so that a timed phase does not pay for the one before it. Best effort:
/// a failure is logged and the phase runs anyway.
pub async fn settle(dir: &Path) {
    let dir = dir.to_owned();
    let _ = tokio::task::spawn_blocking(move || settle_logged(&dir)).await;
}

fn settle_logged(dir: &Path) {
    let synced = std::fs::File::open(dir).and_then(|handle| Ok(rustix::fs::syncfs(&handle)?));
    if let Err(error) = synced {
        tracing::warn!(%error, "writing back the directory's file system failed");
    }
}

/// The loop itself; returns its seconds.
fn file_pairs(dir: &Path, names: &Names, clients: u32) -> std::io::Result<f64> {
    let content = vec![b'#'; FILE_BYTES];
    let tmp = dir.join(".raw-tmp");
    let start = Instant::now();
    for n in 0..clients {
        for name in [names.uuid(n), names.mac_file(n)] {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&content)?;
            drop(file);
            std::fs::rename(&tmp, dir.join(name))?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_raw_loop_writes_two_files_per_client_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("raw");
        let names = Names::random();
        let seconds = file_pairs(
            &{
                std::fs::create_dir_all(&dir).unwrap();
                dir.clone()
            },
            &names,
            10,
        )
        .unwrap();
        assert!(seconds > 0.0);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 20);
        std::fs::remove_dir_all(&dir).unwrap();
        // An operator's directory: what it held stays, nothing is added.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("important.txt"), "keep").unwrap();
        let r = raw_file_pairs(&dir, names, 5).await.unwrap();
        assert_eq!(r.clients, 5);
        assert_eq!(r.passes.len(), PASSES);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["important.txt"]);
    }
}
