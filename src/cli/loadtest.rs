//! `pxeconf loadtest`: measures, in one run on one machine, how fast netboot
//! actions reach the depots over the new path (`SetPxeConfig`, no look-ups)
//! and over the legacy path (`SetPxeConfigByFqdn`, seven look-ups per
//! client), and how fast one depot writes when driven directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use super::error::CliError;
use super::lab::{Lab, LabOptions};
use crate::auth::{AttachKey, EnvKey, load_key};
use crate::config::DEFAULT_IO_THREADS;
use crate::configserver::dispatch::DispatchSettings;
use crate::proto;
use crate::telemetry::LogFormat;

/// `pxeconf loadtest` flags.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// Clients per phase (new path, legacy path, direct).
    #[arg(long, default_value_t = 10_000)]
    pub clients: u32,
    /// Pushes in flight per depot.
    #[arg(long, default_value_t = DispatchSettings::default().concurrency)]
    pub concurrency: usize,
    /// Blocking I/O threads per depot.
    #[arg(long, default_value_t = DEFAULT_IO_THREADS)]
    pub io_threads: usize,
    /// Concurrent SetPxeConfig calls in the direct phase.
    #[arg(long, default_value_t = 64)]
    pub direct_concurrency: usize,
    /// Where the database and PXE directories go [default: a fresh directory
    /// under /dev/shm (tmpfs) if present, else the system temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One phase's result.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// What was measured.
    pub name: &'static str,
    /// Clients.
    pub clients: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Of that, the Admin call that set the actions (one transaction per 5,000).
    pub admin_seconds: f64,
    /// Clients per second.
    pub clients_per_second: f64,
    /// Look-ups the configserver served during the phase, per client.
    pub lookups_per_client: f64,
    /// Call latency percentiles in milliseconds (direct phase only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
}

/// Latency percentiles.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The phases.
    pub phases: Vec<Phase>,
    /// New-path clients/s over legacy-path clients/s.
    pub new_over_legacy: f64,
    /// PXE configs held by the depots at the end.
    pub configs_held: u64,
    /// Peak resident memory of the process (all servers), MiB.
    pub peak_rss_mib: f64,
    /// Where the files went.
    pub dir: PathBuf,
}

/// Runs the load test.
pub async fn run(args: LoadtestArgs) -> Result<(), CliError> {
    crate::telemetry::init_with_default(LogFormat::Human, "warn");
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let dir = work_dir(args.dir.as_deref());
    std::fs::create_dir_all(&dir)?;
    let lab = Lab::start(LabOptions {
        dir: dir.clone(),
        pxe_root: dir.clone(),
        depots: 2,
        legacy: 1,
        concurrency: args.concurrency,
        io_threads: args.io_threads,
    })
    .await?;
    // Even clients belong to depot 1 (new path), odd ones to depot 2 (legacy).
    let total = args.clients * 2;
    lab.seed(total).await?;
    let new_clients: Vec<u32> = (0..total).step_by(2).collect();
    let legacy_clients: Vec<u32> = (1..total).step_by(2).collect();

    let mut phases = Vec::new();
    let mut delivered = 0u64;
    for (name, clients) in [
        ("new path (SetPxeConfig)", &new_clients),
        ("legacy path (SetPxeConfigByFqdn)", &legacy_clients),
    ] {
        delivered += clients.len() as u64;
        phases.push(through_configserver(&lab, name, clients, delivered).await?);
    }
    phases.push(direct(&lab, args.clients, args.direct_concurrency).await?);

    let new_over_legacy = phases[0].clients_per_second / phases[1].clients_per_second;
    let report = Report {
        phases,
        new_over_legacy,
        configs_held: configs_held(&lab),
        peak_rss_mib: peak_rss_kib().map_or(0.0, |k| k as f64 / 1024.0),
        dir: dir.clone(),
    };
    lab.shutdown().await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &args);
    }
    Ok(())
}

/// `dir`, else a fresh directory under /dev/shm (tmpfs) if present, else
/// under the system temp dir.
fn work_dir(dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = dir {
        return dir.to_owned();
    }
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("pxeconf-loadtest-{}", std::process::id()))
}

/// Sets `setup` for `clients` through the configserver and waits until
/// `delivered` configs (these and the earlier phases') are delivered.
async fn through_configserver(
    lab: &Lab,
    name: &'static str,
    clients: &[u32],
    delivered: u64,
) -> Result<Phase, CliError> {
    let lookups_before = lab.metrics.lookups_total();
    let start = Instant::now();
    lab.set_actions(clients, "setup").await?;
    let admin_seconds = start.elapsed().as_secs_f64();
    lab.wait_delivered(delivered, Duration::from_secs(3600), |_| {})
        .await?;
    let seconds = start.elapsed().as_secs_f64();
    let lookups = lab.metrics.lookups_total() - lookups_before;
    Ok(Phase {
        name,
        clients: clients.len() as u32,
        seconds,
        admin_seconds,
        clients_per_second: clients.len() as f64 / seconds,
        lookups_per_client: lookups as f64 / clients.len() as f64,
        latency_ms: None,
    })
}

/// PXE configs (MAC-named files) the lab's depots hold.
fn configs_held(lab: &Lab) -> u64 {
    lab.depots
        .iter()
        .map(|d| {
            std::fs::read_dir(&d.pxe_dir)
                .map(|r| {
                    r.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("01-"))
                        .count()
                })
                .unwrap_or(0) as u64
        })
        .sum()
}

/// Drives depot 1's `SetPxeConfig` directly with `concurrency` calls in
/// flight over one HTTP/2 channel: the depot's own ceiling.
async fn direct(lab: &Lab, clients: u32, concurrency: usize) -> Result<Phase, CliError> {
    let depot = &lab.depots[0];
    let key = load_key(&EnvKey::default(), Some(&depot.key_file))?.unwrap_or_default();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", depot.addr))?
        .connect()
        .await?;
    let client = proto::depot_client::DepotClient::with_interceptor(channel, AttachKey::new(&key)?);
    // Fresh clients, far from the inventory's MACs and UUIDs.
    let offset = 10_000_000u32;
    let template = Arc::new(sample_bundle(depot.id.clone()));
    let start = Instant::now();
    let latencies: Vec<Result<Duration, tonic::Status>> = futures::stream::iter(0..clients)
        .map(|i| {
            let mut client = client.clone();
            let mut bundle = (*template).clone();
            let host = super::lab::host(offset + i);
            bundle.host = Some(host);
            bundle.revision = 1;
            async move {
                let t = Instant::now();
                client.set_pxe_config(bundle).await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = start.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = latencies
        .into_iter()
        .map(|r| r.map(|d| d.as_secs_f64() * 1000.0))
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Phase {
        name: "direct to one depot (SetPxeConfig)",
        clients,
        seconds,
        admin_seconds: 0.0,
        clients_per_second: f64::from(clients) / seconds,
        lookups_per_client: 0.0,
        latency_ms: Some(Latency {
            p50: pick(0.5),
            p99: pick(0.99),
            max: pick(1.0),
        }),
    })
}

fn sample_bundle(depot_id: String) -> proto::ClientBundle {
    proto::ClientBundle {
        host: None,
        product_on_client: Some(proto::ProductOnClient {
            action_request: "setup".into(),
            ..Default::default()
        }),
        product_on_depot: None,
        product: Some(proto::Product {
            id: "win10-x64".into(),
            product_version: "10.0.19045".into(),
            package_version: "2".into(),
            pxe_config_template: String::new(),
        }),
        depot_id,
        service_address: "https://config.example.org:4447".into(),
        boot_mode: proto::BootMode::Bios as i32,
        bootimage_append: vec!["nomodeset".into(), "lang=de".into()],
        product_property_states: [("lang".to_string(), "de_DE".to_string())].into(),
        modules: Some(proto::Modules {
            uefi: true,
            secureboot: true,
        }),
        revision: 1,
        epoch: Default::default(),
    }
}

/// The process's peak resident set (VmHWM), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn print_report(r: &Report, args: &LoadtestArgs) {
    println!(
        "pxeconf loadtest: {} clients per phase, push concurrency {}, {} I/O threads per depot, files in {}",
        args.clients,
        args.concurrency,
        args.io_threads,
        r.dir.display()
    );
    println!(
        "  {:<36} {:>8} {:>9} {:>9} {:>11} {:>10}",
        "phase", "clients", "seconds", "admin s", "clients/s", "look-ups"
    );
    for p in &r.phases {
        println!(
            "  {:<36} {:>8} {:>9.2} {:>9.2} {:>11.0} {:>10.1}",
            p.name,
            p.clients,
            p.seconds,
            p.admin_seconds,
            p.clients_per_second,
            p.lookups_per_client
        );
        if let Some(l) = &p.latency_ms {
            println!(
                "  {:<36} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                "", l.p50, l.p99, l.max
            );
        }
    }
    println!("  new path / legacy path: {:.2}x", r.new_over_legacy);
    println!("  PXE configs held at the end: {}", r.configs_held);
    println!("  peak resident memory: {:.0} MiB", r.peak_rss_mib);
}
