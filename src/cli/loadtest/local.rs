//! Self-contained mode: a configserver and depots started as child
//! processes on loopback, in a fresh directory (a tmpfs by default), with
//! the shipped templates, keys, and tftpd-hpa when it can serve here.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::args::LoadtestArgs;
use super::channel::{self, AdminClient};
use super::database::RunDatabase;
use super::names::{DOMAIN, Names};
use super::roles::Role;
use super::scrape::MetricsUrl;
use super::target::{Target, TargetDepot};
use crate::cli::error::CliError;
use crate::cli::lab::TEMPLATES;
use crate::cli::tftp::TftpServer;
use crate::domain::Secret;
use crate::proto;

/// What a self-contained run started, to be measured and stopped.
pub struct LocalSite {
    /// The run directory.
    pub dir: PathBuf,
    /// The configserver, then the depots.
    pub roles: Vec<Role>,
    tftpds: Vec<TftpServer>,
    /// The run's own PostgreSQL database, if the store is PostgreSQL.
    pub database: Option<RunDatabase>,
}

impl LocalSite {
    /// Per role: (name, peak RSS KiB).
    pub fn peak_rss(&self) -> Vec<(String, Option<u64>)> {
        self.roles
            .iter()
            .map(|r| (r.name.clone(), r.peak_rss_kib()))
            .collect()
    }

    /// Resolves when any role exits before it is stopped, saying which.
    pub async fn role_exited(&mut self) -> String {
        let exits = self.roles.iter_mut().map(|r| Box::pin(r.exited()));
        match exits.len() {
            0 => std::future::pending().await,
            _ => futures::future::select_all(exits).await.0,
        }
    }

    /// Whether tftpd-hpa serves the depots.
    pub fn tftp(&self) -> bool {
        !self.tftpds.is_empty()
    }

    /// Stops every role (depots first) and the TFTP servers; hands back the
    /// run's database (to drop or keep).
    pub async fn stop(mut self) -> Option<RunDatabase> {
        self.tftpds.clear();
        while let Some(role) = self.roles.pop() {
            role.stop().await;
        }
        self.database
    }
}

/// Whether `location` names a PostgreSQL server rather than a SQLite file.
fn is_postgres(location: &str) -> bool {
    matches!(
        crate::configserver::store::Location::parse(location),
        crate::configserver::store::Location::Postgres(_)
    )
}

/// `--dir`, else a fresh directory under /dev/shm (tmpfs) if present, else
/// under the system temp dir.
pub fn run_dir(dir: Option<&Path>, names: &Names) -> PathBuf {
    if let Some(dir) = dir {
        return dir.to_owned();
    }
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("pxeconf-loadtest-{}", names.run_id()))
}

/// Starts the site in `dir`: the configserver, `--depots` new-path depots
/// and `--legacy-depots` legacy ones, registered and seeded with defaults.
pub async fn start(
    args: &LoadtestArgs,
    dir: &Path,
    names: &Names,
) -> Result<(Target, LocalSite), CliError> {
    let (new, legacy) = args.local_depots()?;
    prepare_dir(dir)?;
    let admin_key = Secret::new(random_key());
    write_key(&dir.join("keys/admin.key"), admin_key.expose())?;
    let run_database = match &args.database {
        Some(url) if is_postgres(url) => Some(RunDatabase::create(url, &names.run_id()).await?),
        _ => None,
    };
    let database = match (&run_database, &args.database) {
        (Some(run), _) => std::ffi::OsString::from(&run.url),
        (None, Some(file)) => std::ffi::OsString::from(file),
        (None, None) => dir.join("pxeconf.db").into_os_string(),
    };
    match launch(args, dir, &admin_key, &database, (new, legacy)).await {
        Ok((target, mut site)) => {
            site.database = run_database;
            Ok((target, site))
        }
        // Nothing ran on it yet: the database goes with the failed start.
        Err(error) => {
            if let Some(db) = run_database {
                let name = db.name().to_owned();
                if let Err(drop_error) = db.drop_database().await {
                    tracing::warn!(error = %drop_error, database = %name, "the run's database could not be dropped; drop it by hand");
                }
            }
            Err(error)
        }
    }
}

/// Starts the roles on `database` and registers the depots.
async fn launch(
    args: &LoadtestArgs,
    dir: &Path,
    admin_key: &Secret,
    database: &std::ffi::OsStr,
    (new, legacy): (usize, usize),
) -> Result<(Target, LocalSite), CliError> {
    let configserver = Role::spawn(
        "configserver",
        os_args(&[
            "configserver".as_ref(),
            "--database".as_ref(),
            database,
            "--host-key-file".as_ref(),
            dir.join("keys/admin.key").as_os_str(),
            "--push-concurrency".as_ref(),
            args.concurrency.to_string().as_ref(),
        ]),
        &dir.join("configserver.log"),
        &args.role_log,
    )
    .await?;
    tracing::info!("configserver started");
    let cs_url = format!("http://{}", configserver.addr);
    let mut admin = channel::admin(&cs_url, admin_key).await?;
    seed_defaults(&mut admin).await?;
    let mut site = LocalSite {
        dir: dir.to_owned(),
        roles: vec![configserver],
        tftpds: Vec::new(),
        database: None,
    };
    let depots = start_depots(args, dir, &cs_url, (new, legacy), &mut admin, &mut site).await?;
    let target = Target {
        admin,
        admin_at: (cs_url.clone(), admin_key.clone()),
        metrics: Some(MetricsUrl::of(site.roles[0].metrics)),
        depots,
        baseline_dir: Some(dir.join("raw-baseline")),
    };
    Ok((target, site))
}

/// A depot before it starts.
struct PlannedDepot {
    id: String,
    key: String,
    key_file: PathBuf,
    pxe_dir: PathBuf,
    legacy: bool,
}

impl PlannedDepot {
    /// Depot `i` (1-based): its key file and PXE directory made.
    fn make(dir: &Path, i: usize, legacy: bool) -> std::io::Result<Self> {
        let key = random_key();
        let key_file = dir.join(format!("keys/depot{i}.key"));
        write_key(&key_file, &key)?;
        let pxe_dir = dir.join(format!("depot{i}"));
        std::fs::create_dir_all(&pxe_dir)?;
        Ok(Self {
            id: format!("depot{i}.{DOMAIN}"),
            key,
            key_file,
            pxe_dir,
            legacy,
        })
    }

    /// `pxeconf depot …` for it.
    fn args(&self, args: &LoadtestArgs, dir: &Path, cs_url: &str) -> Vec<OsString> {
        let mut a = os_args(&[
            "depot".as_ref(),
            "--depot-id".as_ref(),
            self.id.as_ref(),
            "--pxe-dir".as_ref(),
            self.pxe_dir.as_os_str(),
            "--template-dir".as_ref(),
            dir.join("templates").as_os_str(),
            "--configserver".as_ref(),
            cs_url.as_ref(),
            "--host-key-file".as_ref(),
            self.key_file.as_os_str(),
            "--io-threads".as_ref(),
            args.io_threads.to_string().as_ref(),
            // Each depot its own journal: the default state dir is one per host.
            "--state-dir".as_ref(),
            self.pxe_dir.with_extension("state").as_os_str(),
        ]);
        if self.legacy {
            a.push("--legacy".into());
        }
        a
    }

    /// What the load test uses of it once it runs.
    fn target(&self, role: &Role, tftp: Option<SocketAddr>) -> TargetDepot {
        TargetDepot {
            id: self.id.clone(),
            endpoint: format!("http://{}", role.addr),
            legacy: self.legacy,
            metrics: Some(MetricsUrl::of(role.metrics)),
            pxe_dir: Some(self.pxe_dir.clone()),
            key_file: Some(self.key_file.clone()),
            tftp,
            pid: role.pid(),
        }
    }
}

/// Starts the depots (all at once), registers them, and starts a tftpd-hpa
/// for each when one can serve here.
async fn start_depots(
    args: &LoadtestArgs,
    dir: &Path,
    cs_url: &str,
    (new, legacy): (usize, usize),
    admin: &mut AdminClient,
    site: &mut LocalSite,
) -> Result<Vec<TargetDepot>, CliError> {
    let planned = (1..=new + legacy)
        .map(|i| PlannedDepot::make(dir, i, i > new))
        .collect::<Result<Vec<_>, _>>()?;
    // Registered (with a placeholder endpoint) before they start, so that
    // their start-up call to the configserver is accepted at once.
    let placeholder = planned
        .iter()
        .map(|p| (&p.id, "http://127.0.0.1:9", &p.key));
    register(admin, placeholder).await?;
    let starts = planned.iter().map(|p| {
        let log = dir.join(format!("{}.log", p.id));
        let a = p.args(args, dir, cs_url);
        async move { Role::spawn(&p.id, a, &log, &args.role_log).await }
    });
    let roles = futures::future::join_all(starts).await;
    let tftpd = TftpServer::find();
    let mut depots = Vec::new();
    for (role, plan) in roles.into_iter().zip(&planned) {
        let role = role?;
        let tftp = match &tftpd {
            Some(binary) => {
                let server = TftpServer::start(binary, &plan.pxe_dir)?;
                let addr = server.addr;
                site.tftpds.push(server);
                Some(addr)
            }
            None => None,
        };
        depots.push(plan.target(&role, tftp));
        site.roles.push(role);
    }
    let real = depots
        .iter()
        .zip(&planned)
        .map(|(d, p)| (&d.id, d.endpoint.as_str(), &p.key));
    register(admin, real).await?;
    Ok(depots)
}

/// Registers depots: (id, endpoint, key).
async fn register<'a>(
    admin: &mut AdminClient,
    depots: impl Iterator<Item = (&'a String, &'a str, &'a String)>,
) -> Result<(), CliError> {
    let depots = depots
        .map(|(id, endpoint, key)| proto::DepotInfo {
            id: id.clone(),
            endpoint: endpoint.to_owned(),
            host_key: key.clone(),
            description: "pxeconf loadtest".into(),
        })
        .collect();
    admin
        .upsert_depots(proto::UpsertDepotsRequest { depots })
        .await?;
    Ok(())
}

/// The defaults of the configs a PXE config reads.
async fn seed_defaults(admin: &mut AdminClient) -> Result<(), CliError> {
    let config = |id: &str, value: &str| proto::Config {
        id: id.into(),
        default_values: vec![value.into()],
        description: String::new(),
    };
    admin
        .upsert_configs(proto::UpsertConfigsRequest {
            configs: vec![
                config(
                    "clientconfig.configserver.url",
                    "https://config.loadtest.invalid:4447",
                ),
                config("clientconfig.dhcpd.filename", "linux/pxelinux.0"),
                config("opsi-linux-bootimage.append", "nomodeset"),
            ],
        })
        .await?;
    Ok(())
}

/// Creates the run directory (readable by a TFTP server running as another
/// user) with the shipped templates and a key directory.
fn prepare_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(format!("{} is not empty; pass an empty or new --dir", dir.display()).into());
    }
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates)?;
    for (name, text) in TEMPLATES {
        std::fs::write(templates.join(name), text)?;
    }
    Ok(())
}

fn os_args(args: &[&std::ffi::OsStr]) -> Vec<OsString> {
    args.iter().map(|a| a.to_os_string()).collect()
}

fn random_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Writes a key file only its owner may read.
fn write_key(path: &Path, key: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
