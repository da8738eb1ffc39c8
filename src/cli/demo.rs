//! `pxeconf demo`: a configserver and three depots (one legacy-only) on
//! loopback, TLS on every hop from a throwaway CA (or `--plaintext`), a
//! generated inventory, a netboot `setup` for every client, a
//! share of the configs read through TFTP, and a summary.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::error::CliError;
use super::lab::{Lab, LabOptions, client_fqdn, mac_file};
use super::tftp::TftpServer;
use crate::config::DEFAULT_IO_THREADS;
use crate::configserver::dispatch::DispatchSettings;
use crate::configserver::store::Location;
use crate::telemetry::LogFormat;

/// Marks a directory as the demo's own, so that it may be wiped.
const MARKER: &str = ".pxeconf-demo";

/// `pxeconf demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Clients to generate.
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Directory for the database, PXE directories, keys and templates
    /// (emptied first if an earlier demo made it).
    #[arg(long, default_value = "pxeconf-demo")]
    pub dir: PathBuf,
    /// The store: a PostgreSQL URL (`postgres://…`) or a SQLite file
    /// [default: pxeconf.db in --dir]. A flag only: a site's
    /// PXECONF_DATABASE must not receive the demo's clients.
    #[arg(long)]
    pub database: Option<String>,
    /// Share of the clients whose config is then read through TFTP.
    #[arg(long, default_value_t = 0.1)]
    pub read_share: f64,
    /// Keep the servers running after the summary and print grpcurl commands; Ctrl-C stops.
    #[arg(long)]
    pub keep_running: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run every hop as plaintext http:// instead of TLS from a throwaway CA.
    #[arg(long)]
    pub plaintext: bool,
    /// Log format (logs go to stderr; RUST_LOG sets the level, default warn).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// The path a depot's pushes take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushPath {
    /// `SetPxeConfig` with the whole bundle.
    New,
    /// `SetPxeConfigByFqdn`, the depot looking the client up.
    Legacy,
}

impl PushPath {
    /// `new` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PushPath::New => "new",
            PushPath::Legacy => "legacy",
        }
    }
}

/// How the demo reads configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMethod {
    /// tftpd-hpa serves them and the demo fetches them over TFTP.
    Tftp,
    /// tftpd-hpa is not installed: the demo opens and closes the files, which
    /// is what the depot watches for.
    OpenClose,
}

/// One depot's line of the summary.
#[derive(Debug, Serialize)]
pub struct DepotSummary {
    /// Its id.
    pub id: String,
    /// The path its pushes took.
    pub path: PushPath,
    /// Clients that belong to it.
    pub clients: u64,
    /// Configs it was pushed (set, acknowledged).
    pub pushed: u64,
    /// PXE configs on its disk now (one per client: the MAC-named file).
    pub on_disk: u64,
    /// Its PXE directory.
    pub pxe_dir: PathBuf,
    /// Its gRPC address.
    pub addr: SocketAddr,
}

/// The demo's summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Clients in the inventory.
    pub clients: u32,
    /// Per depot.
    pub depots: Vec<DepotSummary>,
    /// Pushes delivered over `SetPxeConfig`.
    pub pushes_new: u64,
    /// Pushes delivered over `SetPxeConfigByFqdn`.
    pub pushes_legacy: u64,
    /// Look-ups the legacy depot made at the configserver.
    pub lookups: u64,
    /// How the configs were read.
    pub read_method: ReadMethod,
    /// Configs read.
    pub reads: u64,
    /// Of the read clients, those whose action request is now `none`.
    pub actions_none: u64,
    /// Seconds from setting the actions to the last config delivered.
    pub push_seconds: f64,
    /// Clients per second over that time.
    pub clients_per_second: f64,
    /// The demo directory.
    pub dir: PathBuf,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    crate::telemetry::init_with_default(args.log_format, "warn");
    if !(0.0..=1.0).contains(&args.read_share) {
        return Err("--read-share must be between 0 and 1".into());
    }
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let dir = prepare_dir(&args.dir)?;
    let options = LabOptions {
        dir: dir.clone(),
        pxe_root: dir.clone(),
        depots: 3,
        legacy: 1,
        concurrency: DispatchSettings::default().concurrency,
        io_threads: DEFAULT_IO_THREADS,
        database: (args.database.as_deref().map(Location::checked).transpose())
            .map_err(|e| format!("--database: {e}"))?,
    };
    let lab = if args.plaintext {
        Lab::start(options).await?
    } else {
        Lab::start_tls(options).await?
    };
    if !args.json {
        print_lab(&lab, &dir);
    }
    let summary = run_on(&lab, &args, &dir).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if args.keep_running {
        print_grpcurl(&lab, &dir);
        crate::server::shutdown_signal().await;
    }
    lab.shutdown().await;
    Ok(())
}

/// The demo on a started lab: the inventory, a `setup` for every client,
/// delivery, a share of the configs read; then what happened.
async fn run_on(lab: &Lab, args: &DemoArgs, dir: &Path) -> Result<Summary, CliError> {
    let bar = progress(args.clients.into(), "inventory");
    lab.seed(args.clients).await?;
    bar.finish_and_clear();

    let all: Vec<u32> = (0..args.clients).collect();
    let bar = progress(args.clients.into(), "configs delivered");
    let start = Instant::now();
    lab.set_actions(&all, "setup").await?;
    lab.wait_delivered(args.clients.into(), Duration::from_secs(600), |n| {
        bar.set_position(n)
    })
    .await?;
    let push_time = start.elapsed();
    bar.finish_and_clear();
    if !args.json {
        println!(
            "  {} netboot actions set and delivered in {:.2} s",
            args.clients,
            push_time.as_secs_f64()
        );
    }
    let pushed = lab.delivery_counts().await?;

    let readers = readers(args.clients, args.read_share);
    let tftpd = TftpServer::find();
    let read_method = match tftpd {
        Some(_) => ReadMethod::Tftp,
        None => ReadMethod::OpenClose,
    };
    let bar = progress(readers.len() as u64, "configs read");
    read_configs(lab, &readers, tftpd.as_deref(), &bar).await?;
    let actions_none = wait_actions_none(lab, &readers, &bar).await?;
    bar.finish_and_clear();

    let runtime = lab.core.dispatcher.runtime();
    Ok(Summary {
        clients: args.clients,
        pushes_new: runtime.values().map(|r| r.pushes_new).sum(),
        pushes_legacy: runtime.values().map(|r| r.pushes_legacy).sum(),
        depots: depot_summaries(lab, &all, &pushed)?,
        lookups: lab.metrics.lookups_total(),
        read_method,
        reads: readers.len() as u64,
        actions_none,
        push_seconds: push_time.as_secs_f64(),
        clients_per_second: f64::from(args.clients) / push_time.as_secs_f64().max(1e-9),
        dir: dir.to_owned(),
    })
}

/// What was started, for people.
fn print_lab(lab: &Lab, dir: &Path) {
    println!("pxeconf demo in {}", dir.display());
    match &lab.pki {
        Some(pki) => println!(
            "  TLS on every hop, certificates from a throwaway CA: {}",
            pki.ca_file.display()
        ),
        None => println!("  plaintext on every hop (--plaintext): unencrypted"),
    }
    println!(
        "  configserver  {}  (database {})",
        lab.configserver_url(),
        lab.options
            .database
            .clone()
            .unwrap_or_else(|| Location::Sqlite(dir.join("pxeconf.db")))
    );
    for d in &lab.depots {
        println!(
            "  depot         {}  {}{}  ({})",
            d.addr,
            d.id,
            if d.legacy { " [legacy-only]" } else { "" },
            d.pxe_dir.display()
        );
    }
}

/// The clients whose config is read: `share` of them, spread evenly.
fn readers(clients: u32, share: f64) -> Vec<u32> {
    let count = ((f64::from(clients) * share).ceil() as u32).min(clients);
    let step = (clients / count.max(1)).max(1);
    (0..clients)
        .step_by(step as usize)
        .take(count as usize)
        .collect()
}

/// Per depot: its clients, what it was pushed, what is on its disk now.
fn depot_summaries(
    lab: &Lab,
    clients: &[u32],
    pushed: &[(u64, u64)],
) -> Result<Vec<DepotSummary>, CliError> {
    let mut depots = Vec::new();
    for (i, d) in lab.depots.iter().enumerate() {
        let on_disk = std::fs::read_dir(&d.pxe_dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("01-"))
            .count() as u64;
        depots.push(DepotSummary {
            id: d.id.clone(),
            path: if d.legacy {
                PushPath::Legacy
            } else {
                PushPath::New
            },
            clients: clients.iter().filter(|n| lab.depot_index(**n) == i).count() as u64,
            pushed: pushed[i].0,
            on_disk,
            pxe_dir: d.pxe_dir.clone(),
            addr: d.addr,
        });
    }
    Ok(depots)
}

/// Empties `dir` if an earlier demo made it (or it is empty), refusing
/// anything else; returns its absolute path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, CliError> {
    if dir.exists() {
        let ours = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !ours && !empty {
            return Err(format!(
                "{} exists and was not made by pxeconf demo; pass another --dir",
                dir.display()
            )
            .into());
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "made by pxeconf demo; emptied by the next run\n",
    )?;
    // The TFTP server may run as another user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(std::fs::canonicalize(dir)?)
}

fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("  {bar:40} {pos}/{len} {msg} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Reads each client's MAC-named config: through tftpd-hpa when installed,
/// else by opening and closing the file (what the depot watches for).
async fn read_configs(
    lab: &Lab,
    clients: &[u32],
    tftpd: Option<&Path>,
    bar: &ProgressBar,
) -> Result<(), CliError> {
    let servers = match tftpd {
        Some(binary) => lab
            .depots
            .iter()
            .map(|d| TftpServer::start(binary, &d.pxe_dir))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let jobs = clients.iter().map(|&n| {
        let depot = &lab.depots[lab.depot_index(n)];
        let path = depot.pxe_dir.join(mac_file(n));
        let server = servers.get(lab.depot_index(n)).map(|s| s.addr);
        async move {
            tokio::task::spawn_blocking(move || match server {
                Some(addr) => fetch_with_retry(addr, &mac_file(n)).map(drop),
                None => std::fs::File::open(&path).map(drop),
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
        }
    });
    let results: Vec<std::io::Result<()>> = futures::stream::iter(jobs)
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.map_err(|e| format!("reading a PXE config failed: {e}"))?;
        bar.inc(1);
    }
    drop(servers);
    Ok(())
}

/// The first request may beat tftpd-hpa's start; a short retry covers it.
fn fetch_with_retry(addr: SocketAddr, name: &str) -> std::io::Result<Vec<u8>> {
    let mut last = None;
    for _ in 0..20 {
        match super::tftp::fetch(addr, name, Duration::from_millis(500)) {
            Ok(data) => return Ok(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("TFTP read failed")))
}

/// Waits until the read clients' action requests are `none`; returns how many are.
async fn wait_actions_none(lab: &Lab, clients: &[u32], bar: &ProgressBar) -> Result<u64, CliError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut none = 0;
        for &n in clients {
            if lab
                .core
                .store
                .product_on_clients(&client_fqdn(n), true)
                .await?
                .is_empty()
            {
                none += 1;
            }
        }
        bar.set_position(none);
        if none == clients.len() as u64 || Instant::now() > deadline {
            return Ok(none);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_summary(s: &Summary) {
    println!();
    println!("  {:<34} {:>10}", "clients", s.clients);
    for d in &s.depots {
        println!(
            "  {:<34} {:>10}  pushed {} ({} path), {} configs on disk now",
            d.id,
            d.clients,
            d.pushed,
            d.path.as_str(),
            d.on_disk
        );
    }
    println!(
        "  {:<34} {:>10}",
        "pushes, new path (bundles)", s.pushes_new
    );
    println!(
        "  {:<34} {:>10}",
        "pushes, legacy path (ByFqdn)", s.pushes_legacy
    );
    let per_client = if s.pushes_legacy > 0 {
        s.lookups as f64 / s.pushes_legacy as f64
    } else {
        0.0
    };
    println!(
        "  {:<34} {:>10}  ({per_client:.0} per legacy push, 0 on the new path)",
        "look-ups by the legacy depot", s.lookups
    );
    let how = match s.read_method {
        ReadMethod::Tftp => "through tftpd-hpa",
        ReadMethod::OpenClose => "open+close (tftpd-hpa not installed)",
    };
    println!("  {:<34} {:>10}  {how}", "configs read", s.reads);
    println!(
        "  {:<34} {:>10}  of {} read",
        "action requests now none", s.actions_none, s.reads
    );
    println!(
        "  {:<34} {:>10.2}",
        "seconds to deliver all", s.push_seconds
    );
    println!(
        "  {:<34} {:>10.0}",
        "clients per second", s.clients_per_second
    );
    println!();
    println!("  files and database left in {}", s.dir.display());
}

fn print_grpcurl(lab: &Lab, dir: &Path) {
    // grpcurl verifies the servers against the demo's CA (their
    // certificates name 127.0.0.1), or speaks plaintext with --plaintext.
    let (tls, tls_env) = match &lab.pki {
        Some(pki) => (
            format!("-cacert {}", pki.ca_file.display()),
            format!("PXECONF_TLS_CA={} ", pki.ca_file.display()),
        ),
        None => ("-plaintext".to_owned(), String::new()),
    };
    let admin = format!(
        "-H \"authorization: Bearer $(cat {})\"",
        lab.admin_key_file.display()
    );
    let cs = lab.configserver;
    println!();
    println!("  the servers keep running; try (Ctrl-C stops them):");
    println!("  grpcurl {tls} {cs} list");
    println!("  grpcurl {tls} {cs} describe pxeconf.v1.ClientBundle");
    println!("  grpcurl {tls} {admin} {cs} pxeconf.v1.Admin/ListDepots");
    println!(
        "  grpcurl {tls} {admin} -d '{{\"fqdn\":\"{}\"}}' {cs} pxeconf.v1.Admin/GetClientStatus",
        client_fqdn(1)
    );
    println!(
        "  grpcurl {tls} {admin} -d '{{\"action_requests\":[{{\"client_id\":\"{}\",\"product_id\":\"win10-x64\",\"action_request\":\"setup\"}}]}}' {cs} pxeconf.v1.Admin/SetActionRequests",
        client_fqdn(0)
    );
    if let Some(d) = lab.depots.first() {
        println!(
            "  grpcurl {tls} -H \"authorization: Bearer $(cat {})\" -d '{{\"page_size\":5}}' {} pxeconf.v1.Depot/ListPxeConfigs",
            d.key_file.display(),
            d.addr
        );
    }
    println!(
        "  PXECONF_SERVER={} {tls_env}PXECONF_ADMIN_KEY_FILE={} pxeconf depots",
        lab.configserver_url(),
        dir.join("keys/admin.key").display()
    );
}
