//! The writer: one task that owns every PXE config the depot holds.
//!
//! Handlers render a config and send it here; the read watcher sends TFTP
//! reads here. The task takes commands in batches, plans them against its
//! state in order, and runs the file I/O of a batch on a bounded number of
//! blocking threads (tmp file + rename, 0644). One owner means no locks and
//! no lost update between a push, a removal and a read of the same client.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::domain::{ActionRequest, Fqdn, ProductId};
use crate::metrics::{DepotLabel, Metrics, WriteLabels};

/// Prefix of the writer's temporary files; never a PXE config name.
pub const TMP_PREFIX: &str = ".pxeconf-tmp-";

/// Commands waiting for the writer; handlers wait here when it is busy.
const CHANNEL_CAPACITY: usize = 16_384;
/// Commands taken from the channel at once.
const MAX_BATCH: usize = 1024;

/// Why the writer refused or failed a command.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The command carries an older revision than the one held or seen.
    #[error("stale revision {got} for {fqdn}: revision {held} was already {state}")]
    Stale {
        /// The client.
        fqdn: Fqdn,
        /// The revision in the command.
        got: u64,
        /// The revision the depot has seen.
        held: u64,
        /// What happened to `held`: held, read or removed.
        state: &'static str,
    },
    /// Another client holds one of the file names.
    #[error("PXE config file {name} of {fqdn} already belongs to {owner}")]
    Conflict {
        /// The contested file name.
        name: String,
        /// The client that asked for it.
        fqdn: Fqdn,
        /// The client holding it.
        owner: Fqdn,
    },
    /// The client has neither a MAC address nor a system UUID.
    #[error("{fqdn} has neither a MAC address nor a system UUID to name its PXE config")]
    NoFileNames {
        /// The client.
        fqdn: Fqdn,
    },
    /// A file could not be written or renamed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The writer task is gone (shutting down).
    #[error("the PXE config writer has stopped")]
    Stopped,
}

/// A rendered config, ready to be written under its file names.
#[derive(Clone)]
pub struct Rendered {
    /// The client.
    pub fqdn: Fqdn,
    /// The netboot product.
    pub product_id: ProductId,
    /// The action request it carries.
    pub action_request: ActionRequest,
    /// Its revision (0: unversioned).
    pub revision: u64,
    /// File names inside the PXE directory (UUID, then MAC).
    pub files: Vec<String>,
    /// The file content (contains the host key: never log it).
    pub content: Arc<str>,
    /// The template used, relative to the template directory.
    pub template: String,
}

// The content holds the host key and a password hash: never in a log.
impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("fqdn", &self.fqdn)
            .field("product_id", &self.product_id)
            .field("revision", &self.revision)
            .field("files", &self.files)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("template", &self.template)
            .finish()
    }
}

/// What a successful `set` left in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    /// File names written, relative to the PXE directory.
    pub files: Vec<String>,
    /// The template used.
    pub template: String,
    /// The revision now held.
    pub revision: u64,
}

/// A pending config as listed: never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigInfo {
    /// The client.
    pub fqdn: Fqdn,
    /// The netboot product.
    pub product_id: ProductId,
    /// The action request.
    pub action_request: ActionRequest,
    /// File names.
    pub files: Vec<String>,
    /// The template used.
    pub template: String,
    /// When it was written.
    pub since: SystemTime,
    /// Its revision.
    pub revision: u64,
}

/// One page of pending configs.
#[derive(Debug, Clone)]
pub struct ConfigPage {
    /// Entries, ordered by FQDN.
    pub configs: Vec<ConfigInfo>,
    /// The FQDN to continue after, if there is more.
    pub next_after: Option<String>,
    /// All pending configs.
    pub total: usize,
}

/// A TFTP read of a client's config: the client is booting its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    /// The client.
    pub fqdn: Fqdn,
    /// The product it booted.
    pub product_id: ProductId,
    /// The revision it read.
    pub revision: u64,
    /// The action request of that revision.
    pub action_request: ActionRequest,
}

/// What the read watcher tells the writer.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A file was opened and closed without writing: a TFTP read.
    Read(String),
    /// A file was renamed into the directory (our own atomic writes).
    Moved(String),
    /// The kernel dropped events; the writer rechecks the files it holds.
    Overflow,
}

enum Command {
    Set {
        config: Rendered,
        reply: oneshot::Sender<Result<SetOutcome, WriterError>>,
    },
    Remove {
        fqdn: Fqdn,
        revision: u64,
        reply: oneshot::Sender<Result<bool, WriterError>>,
    },
    List {
        after: Option<String>,
        limit: usize,
        product: Option<String>,
        reply: oneshot::Sender<ConfigPage>,
    },
    Watch(WatchEvent),
}

/// A handle to send commands to the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    /// Writes (or replaces) a client's config.
    pub async fn set(&self, config: Rendered) -> Result<SetOutcome, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Set { config, reply }).await?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Removes a client's config; true if one was held.
    pub async fn remove(&self, fqdn: Fqdn, revision: u64) -> Result<bool, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove {
            fqdn,
            revision,
            reply,
        })
        .await?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// A page of held configs after the FQDN `after`.
    pub async fn list(
        &self,
        after: Option<String>,
        limit: usize,
        product: Option<String>,
    ) -> Result<ConfigPage, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::List {
            after,
            limit,
            product,
            reply,
        })
        .await?;
        rx.await.map_err(|_| WriterError::Stopped)
    }

    /// Passes a watcher event to the writer.
    pub async fn watch_event(&self, event: WatchEvent) -> Result<(), WriterError> {
        self.send(Command::Watch(event)).await
    }

    async fn send(&self, command: Command) -> Result<(), WriterError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| WriterError::Stopped)
    }
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The PXE directory.
    pub pxe_dir: PathBuf,
    /// Blocking threads used for one batch's file I/O.
    pub io_threads: usize,
    /// The depot id, for metrics and logs.
    pub depot_id: String,
}

/// Starts the writer task. Read events go to `reads`.
pub fn spawn(
    options: WriterOptions,
    reads: mpsc::UnboundedSender<ReadEvent>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let writer = Writer {
        dir: Arc::new(options.pxe_dir),
        io_threads: options.io_threads.max(1),
        held: BTreeMap::new(),
        owners: HashMap::new(),
        seen: HashMap::new(),
        unconfirmed_moves: HashMap::new(),
        reads,
        depot: DepotLabel {
            depot: options.depot_id,
        },
        metrics,
    };
    let task = tokio::spawn(writer.run(rx));
    (WriterHandle { tx }, task)
}

struct Held {
    product_id: ProductId,
    action_request: ActionRequest,
    revision: u64,
    files: Vec<String>,
    template: String,
    since: SystemTime,
}

/// The last revision the depot saw for a client and what became of it; kept
/// after a read or removal so that a late, older push cannot resurrect it.
#[derive(Clone, Copy)]
struct Seen {
    revision: u64,
    state: &'static str,
}

struct Writer {
    dir: Arc<PathBuf>,
    io_threads: usize,
    held: BTreeMap<Fqdn, Held>,
    owners: HashMap<String, Fqdn>,
    seen: HashMap<Fqdn, Seen>,
    /// Renames we made whose IN_MOVED_TO has not come back yet: a read of such
    /// a name seen now was a read of the version we replaced.
    unconfirmed_moves: HashMap<String, u32>,
    reads: mpsc::UnboundedSender<ReadEvent>,
    depot: DepotLabel,
    metrics: Arc<Metrics>,
}

/// The file work of one command.
#[derive(Default)]
struct FileOps {
    writes: Vec<(String, Arc<str>)>,
    deletes: Vec<String>,
}

/// A command planned against the state, waiting for its file I/O.
enum Planned {
    Set {
        config: Rendered,
        released: Vec<String>,
        reply: oneshot::Sender<Result<SetOutcome, WriterError>>,
    },
    Remove {
        fqdn: Fqdn,
        revision: u64,
        reply: oneshot::Sender<Result<bool, WriterError>>,
    },
    Read {
        fqdn: Fqdn,
    },
}

/// Commands planned together: no two touch the same client or file name, so
/// their I/O can run in parallel and commit in any order.
#[derive(Default)]
struct Round {
    keys: HashSet<String>,
    planned: Vec<(Planned, FileOps)>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut round = Round::default();
            for command in batch.drain(..) {
                self.plan(command, &mut round).await;
            }
            self.execute(&mut round).await;
            self.metrics
                .pending_configs
                .get_or_create(&self.depot)
                .set(self.held.len() as i64);
        }
        debug!("writer stopped");
    }

    /// Plans one command into `round`, executing the round first when the
    /// command touches something the round already touches.
    async fn plan(&mut self, command: Command, round: &mut Round) {
        match command {
            Command::Set { config, reply } => {
                let keys = self.set_keys(&config);
                self.make_room(round, &keys).await;
                // Checked only now: executing the round may have changed the state.
                if let Some(result) = self.check_set(&config) {
                    let _ = reply.send(result);
                    return;
                }
                let released: Vec<String> = self
                    .held
                    .get(&config.fqdn)
                    .map(|h| {
                        h.files
                            .iter()
                            .filter(|f| !config.files.contains(f))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let ops = FileOps {
                    writes: config
                        .files
                        .iter()
                        .map(|f| (f.clone(), config.content.clone()))
                        .collect(),
                    deletes: released.clone(),
                };
                round.keys.extend(self.set_keys(&config));
                round.planned.push((
                    Planned::Set {
                        config,
                        released,
                        reply,
                    },
                    ops,
                ));
            }
            Command::Remove {
                fqdn,
                revision,
                reply,
            } => {
                let keys = self.client_keys(&fqdn);
                self.make_room(round, &keys).await;
                if let Some(err) = self.check_revision(&fqdn, revision) {
                    let _ = reply.send(Err(err));
                    return;
                }
                let deletes = self
                    .held
                    .get(&fqdn)
                    .map(|h| h.files.clone())
                    .unwrap_or_default();
                round.keys.extend(self.client_keys(&fqdn));
                round.planned.push((
                    Planned::Remove {
                        fqdn,
                        revision,
                        reply,
                    },
                    FileOps {
                        writes: Vec::new(),
                        deletes,
                    },
                ));
            }
            Command::List {
                after,
                limit,
                product,
                reply,
            } => {
                // A listing must see every command sent before it.
                self.execute(round).await;
                let _ = reply.send(self.page(after.as_deref(), limit, product.as_deref()));
            }
            Command::Watch(WatchEvent::Moved(name)) => {
                if let Some(n) = self.unconfirmed_moves.get_mut(&name) {
                    *n -= 1;
                    if *n == 0 {
                        self.unconfirmed_moves.remove(&name);
                    }
                }
            }
            Command::Watch(WatchEvent::Read(name)) => self.plan_read(name, round).await,
            Command::Watch(WatchEvent::Overflow) => {
                self.execute(round).await;
                self.recheck_after_overflow().await;
            }
        }
    }

    async fn plan_read(&mut self, name: String, round: &mut Round) {
        let Some(fqdn) = self.owners.get(&name).cloned() else {
            return;
        };
        if self.unconfirmed_moves.contains_key(&name) {
            // The client read the version we have since replaced; the new one
            // stays for its next boot.
            debug!(%fqdn, file = %name, "read of a replaced PXE config version ignored");
            return;
        }
        let keys = self.client_keys(&fqdn);
        if keys.iter().any(|k| round.keys.contains(k)) {
            self.execute(round).await;
            if self.owners.get(&name) != Some(&fqdn) || self.unconfirmed_moves.contains_key(&name) {
                return;
            }
        }
        let files = self
            .held
            .get(&fqdn)
            .map(|h| h.files.clone())
            .unwrap_or_default();
        round.keys.extend(self.client_keys(&fqdn));
        round.planned.push((
            Planned::Read { fqdn },
            FileOps {
                writes: Vec::new(),
                deletes: files,
            },
        ));
    }

    /// The round keys of a client: itself and the files it holds.
    fn client_keys(&self, fqdn: &Fqdn) -> Vec<String> {
        let mut keys = vec![client_key(fqdn)];
        if let Some(h) = self.held.get(fqdn) {
            keys.extend(h.files.iter().cloned());
        }
        keys
    }

    /// The round keys of a set: the client, the files it holds and the files
    /// it is to write.
    fn set_keys(&self, config: &Rendered) -> Vec<String> {
        let mut keys = self.client_keys(&config.fqdn);
        keys.extend(config.files.iter().cloned());
        keys
    }

    /// Executes the round if any of `keys` is already in it.
    async fn make_room(&mut self, round: &mut Round, keys: &[String]) {
        if keys.iter().any(|k| round.keys.contains(k)) {
            self.execute(round).await;
        }
    }

    /// Refusals of a set against the current state: stale, conflicting, no
    /// names; or the answer to an exact repeat of the held revision.
    fn check_set(&self, config: &Rendered) -> Option<Result<SetOutcome, WriterError>> {
        if config.files.is_empty() {
            return Some(Err(WriterError::NoFileNames {
                fqdn: config.fqdn.clone(),
            }));
        }
        if config.revision > 0 {
            if let Some(held) = self.held.get(&config.fqdn)
                && held.revision == config.revision
            {
                // A retried push of what we hold: answer as if written.
                return Some(Ok(SetOutcome {
                    files: held.files.clone(),
                    template: held.template.clone(),
                    revision: held.revision,
                }));
            }
            if let Some(seen) = self.seen.get(&config.fqdn) {
                let repeat_of_gone = seen.revision == config.revision && seen.state != "held";
                if config.revision < seen.revision || repeat_of_gone {
                    return Some(Err(WriterError::Stale {
                        fqdn: config.fqdn.clone(),
                        got: config.revision,
                        held: seen.revision,
                        state: seen.state,
                    }));
                }
            }
        }
        for name in &config.files {
            if let Some(owner) = self.owners.get(name)
                && owner != &config.fqdn
            {
                return Some(Err(WriterError::Conflict {
                    name: name.clone(),
                    fqdn: config.fqdn.clone(),
                    owner: owner.clone(),
                }));
            }
        }
        None
    }

    fn check_revision(&self, fqdn: &Fqdn, revision: u64) -> Option<WriterError> {
        let seen = self.seen.get(fqdn)?;
        (revision > 0 && revision < seen.revision).then(|| WriterError::Stale {
            fqdn: fqdn.clone(),
            got: revision,
            held: seen.revision,
            state: seen.state,
        })
    }

    /// Runs the round's file I/O on at most `io_threads` blocking threads,
    /// then commits each command's outcome and answers it.
    async fn execute(&mut self, round: &mut Round) {
        if round.planned.is_empty() {
            return;
        }
        round.keys.clear();
        let planned = std::mem::take(&mut round.planned);
        let (commands, ops): (Vec<Planned>, Vec<FileOps>) = planned.into_iter().unzip();
        let results = run_file_ops(self.dir.clone(), ops, self.io_threads).await;
        for (command, result) in commands.into_iter().zip(results) {
            self.commit(command, result);
        }
    }

    fn commit(&mut self, command: Planned, result: Result<(), WriterError>) {
        match command {
            Planned::Set {
                config,
                released,
                reply,
            } => {
                if let Err(error) = result {
                    self.count_write("io_error");
                    warn!(fqdn = %config.fqdn, %error, "PXE config not written");
                    let _ = reply.send(Err(error));
                    return;
                }
                self.count_write("ok");
                for name in &released {
                    self.owners.remove(name);
                }
                for name in &config.files {
                    self.owners.insert(name.clone(), config.fqdn.clone());
                    *self.unconfirmed_moves.entry(name.clone()).or_default() += 1;
                }
                if config.revision > 0 {
                    self.seen.insert(
                        config.fqdn.clone(),
                        Seen {
                            revision: config.revision,
                            state: "held",
                        },
                    );
                }
                let outcome = SetOutcome {
                    files: config.files.clone(),
                    template: config.template.clone(),
                    revision: config.revision,
                };
                debug!(fqdn = %config.fqdn, revision = config.revision, files = ?config.files, "PXE config written");
                self.held.insert(
                    config.fqdn,
                    Held {
                        product_id: config.product_id,
                        action_request: config.action_request,
                        revision: config.revision,
                        files: config.files,
                        template: config.template,
                        since: SystemTime::now(),
                    },
                );
                let _ = reply.send(Ok(outcome));
            }
            Planned::Remove {
                fqdn,
                revision,
                reply,
            } => {
                if let Err(error) = &result {
                    // The files may be partly gone; forget none of them so a
                    // retry deletes the rest.
                    warn!(%fqdn, %error, "PXE config not removed");
                }
                let removed = match result {
                    Ok(()) => self.forget(&fqdn).is_some(),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        return;
                    }
                };
                if revision > 0 {
                    let seen = self.seen.entry(fqdn.clone()).or_insert(Seen {
                        revision,
                        state: "removed",
                    });
                    if revision >= seen.revision {
                        *seen = Seen {
                            revision,
                            state: "removed",
                        };
                    }
                }
                debug!(%fqdn, revision, removed, "PXE config removed");
                let _ = reply.send(Ok(removed));
            }
            Planned::Read { fqdn } => {
                if let Err(error) = &result {
                    error!(%fqdn, %error, "read PXE config could not be deleted; the client may boot it again");
                }
                let Some(held) = self.forget(&fqdn) else {
                    return;
                };
                if held.revision > 0 {
                    self.seen.insert(
                        fqdn.clone(),
                        Seen {
                            revision: held.revision,
                            state: "read",
                        },
                    );
                }
                self.metrics.tftp_reads.get_or_create(&self.depot).inc();
                info!(%fqdn, product = %held.product_id, revision = held.revision, "PXE config read by the client");
                let _ = self.reads.send(ReadEvent {
                    fqdn,
                    product_id: held.product_id,
                    revision: held.revision,
                    action_request: held.action_request,
                });
            }
        }
    }

    fn forget(&mut self, fqdn: &Fqdn) -> Option<Held> {
        let held = self.held.remove(fqdn)?;
        for name in &held.files {
            self.owners.remove(name);
        }
        Some(held)
    }

    fn count_write(&self, result: &str) {
        self.metrics
            .config_writes
            .get_or_create(&WriteLabels {
                depot: self.depot.depot.clone(),
                result: result.to_owned(),
            })
            .inc();
    }

    fn page(&self, after: Option<&str>, limit: usize, product: Option<&str>) -> ConfigPage {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut configs: Vec<ConfigInfo> = Vec::new();
        let mut next_after = None;
        for (fqdn, held) in self.held.range::<str, _>((start, Bound::Unbounded)) {
            if product.is_some_and(|p| p != held.product_id.as_str()) {
                continue;
            }
            if configs.len() == limit {
                next_after = configs.last().map(|c| c.fqdn.to_string());
                break;
            }
            configs.push(ConfigInfo {
                fqdn: fqdn.clone(),
                product_id: held.product_id.clone(),
                action_request: held.action_request,
                files: held.files.clone(),
                template: held.template.clone(),
                since: held.since,
                revision: held.revision,
            });
        }
        ConfigPage {
            configs,
            next_after,
            total: self.held.len(),
        }
    }

    /// After the kernel dropped events, reads may have been missed: a file
    /// whose access time passed its modification time has been read (Linux
    /// updates atime on the first read after a write, even with relatime).
    async fn recheck_after_overflow(&mut self) {
        warn!("inotify queue overflowed; rechecking held PXE configs for reads");
        self.unconfirmed_moves.clear();
        let names: Vec<String> = self.owners.keys().cloned().collect();
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter(|name| {
                    fs::metadata(dir.join(name))
                        .is_ok_and(|m| (m.atime(), m.atime_nsec()) > (m.mtime(), m.mtime_nsec()))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut round = Round::default();
        for name in read {
            self.plan_read(name, &mut round).await;
        }
        self.execute(&mut round).await;
    }
}

fn client_key(fqdn: &Fqdn) -> String {
    // File names never contain '/', so this cannot collide with one.
    format!("client/{fqdn}")
}

/// Runs every command's file operations, spread over up to `threads`
/// blocking threads; one result per command, in order.
async fn run_file_ops(
    dir: Arc<PathBuf>,
    ops: Vec<FileOps>,
    threads: usize,
) -> Vec<Result<(), WriterError>> {
    let total = ops.len();
    let chunk = total.div_ceil(threads).max(1);
    let mut ops = ops.into_iter();
    let mut tasks = Vec::new();
    loop {
        let part: Vec<FileOps> = ops.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let dir = dir.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.iter().map(|o| apply(&dir, o)).collect::<Vec<_>>()
        }));
    }
    let mut results = Vec::with_capacity(total);
    for task in tasks {
        match task.await {
            Ok(part) => results.extend(part),
            Err(join) => {
                error!(error = %join, "file I/O thread failed");
                while results.len() < total {
                    results.push(Err(WriterError::Io {
                        path: dir.to_path_buf(),
                        source: io::Error::other("file I/O thread failed"),
                    }));
                }
                break;
            }
        }
    }
    results
}

/// One command's file work: every temporary file first (so a failure leaves
/// the old config whole), then the renames, then the deletions.
fn apply(dir: &Path, ops: &FileOps) -> Result<(), WriterError> {
    let mut tmps = Vec::with_capacity(ops.writes.len());
    for (name, content) in &ops.writes {
        let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
        if let Err(source) = write_file(&tmp, content.as_bytes()) {
            for t in tmps.iter().chain(std::iter::once(&tmp)) {
                let _ = fs::remove_file(t);
            }
            return Err(WriterError::Io { path: tmp, source });
        }
        tmps.push(tmp);
    }
    for (tmp, (name, _)) in tmps.iter().zip(&ops.writes) {
        let path = dir.join(name);
        fs::rename(tmp, &path).map_err(|source| WriterError::Io { path, source })?;
    }
    for name in &ops.deletes {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(WriterError::Io { path, source }),
        }
    }
    Ok(())
}

fn write_file(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(content)?;
    // The process umask may have narrowed the mode; the TFTP server runs as
    // another user and must be able to read the file.
    file.set_permissions(Permissions::from_mode(0o644))
}

/// Whether `name` is one the depot writes: a UUID, `01-` + MAC, or one of
/// its temporary files.
pub fn is_managed_name(name: &str) -> bool {
    if name.starts_with(TMP_PREFIX) {
        return true;
    }
    let is_mac_name = name.len() == 20
        && name.starts_with("01-")
        && name[3..].split('-').all(|o| {
            o.len() == 2
                && o.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    let is_uuid_name = crate::domain::SystemUuid::parse(name, "").is_ok_and(|u| u.as_str() == name);
    is_mac_name || is_uuid_name
}

/// Removes PXE configs left by an earlier run: at start-up the depot holds
/// nothing, and such files would boot a client into a stale action. Other
/// files in the directory are left alone. Returns how many were removed.
pub fn remove_stale(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_managed_name(name) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
