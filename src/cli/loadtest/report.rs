//! The run's results: JSON for machines, tables for people, every result
//! beside its baseline as a ratio.

use std::path::PathBuf;

use serde::Serialize;

use super::baseline::RawResult;
use super::cpu::PhaseCpu;
use super::inventory::Cleanup;
use super::scenario::boot::BootResult;
use super::scenario::bulk::BulkResult;
use super::scenario::direct::{DirectResult, Driven};
use super::scenario::trickle::{IdleRpc, TrickleResult};
use super::stats::Percentiles;

/// The baselines measured in the same run.
#[derive(Debug, Default, Serialize)]
pub struct Baselines {
    /// The raw file-pair loop on the run's directory.
    pub raw_file_pairs: Option<RawResult>,
    /// Health `Check` on the depot `direct` drives.
    pub noop_rpc: Option<Driven>,
    /// Health `Check` at the configserver, one at a time at the trickle's
    /// rate: the trickle's floor per RPC hop.
    pub idle_rpc: Option<IdleRpc>,
}

/// Results over baselines.
#[derive(Debug, Default, Serialize)]
pub struct Ratios {
    /// Bulk clients/s, new path over legacy path.
    pub new_over_legacy: Option<f64>,
    /// Bulk clients/s on the new path over the raw file-pair loop.
    pub bulk_new_over_raw: Option<f64>,
    /// Direct calls/s over no-op calls/s.
    pub direct_over_noop: Option<f64>,
    /// The new path's trickle, call → on disk p50 over the idle no-op RPC's p50.
    pub trickle_disk_over_idle_rpc: Option<f64>,
    /// The new path's trickle, Admin call p50 over the idle no-op RPC's p50.
    pub trickle_admin_over_idle_rpc: Option<f64>,
    /// Bulk clients/s on the new path, the second store over the first.
    pub compared_over_first: Option<f64>,
}

/// A role's peak memory.
#[derive(Debug, Serialize)]
pub struct RoleMemory {
    /// `configserver`, a depot id, or `loadtest` (this process).
    pub role: String,
    /// Peak resident set (VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
}

/// A depot used.
#[derive(Debug, Serialize)]
pub struct DepotLine {
    /// Its id.
    pub id: String,
    /// `new` or `legacy`.
    pub path: &'static str,
}

/// Everything a run found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The run id (the clients' namespace `*.<run>.loadtest.invalid`).
    pub run_id: String,
    /// `self-contained` or `remote`.
    pub mode: &'static str,
    /// The run directory (self-contained).
    pub dir: Option<PathBuf>,
    /// The depots used.
    pub depots: Vec<DepotLine>,
    /// The site's other products (`--site-products`).
    pub site_products: u32,
    /// `bulk`, per path.
    pub bulk: Vec<BulkResult>,
    /// `boot`, per path.
    pub boot: Vec<BootResult>,
    /// `trickle`, per path.
    pub trickle: Vec<TrickleResult>,
    /// `direct`.
    pub direct: Option<DirectResult>,
    /// The baselines.
    pub baselines: Baselines,
    /// Results over baselines.
    pub ratios: Ratios,
    /// Peak memory per role.
    pub memory: Vec<RoleMemory>,
    /// What was skipped, and why.
    pub notes: Vec<String>,
    /// Clients not delivered, not read or not turned `none`; the run fails
    /// unless this is empty.
    pub failures: Vec<String>,
    /// The clean-up.
    pub cleanup: Option<Cleanup>,
    /// `bulk` again on a second store (`--compare-database`).
    pub compared: Option<Compared>,
    /// Why the run failed, if it did other than by `failures` (interrupted,
    /// a role that exited, a clean-up left to be done by hand): a program
    /// reading the JSON learns it without the exit code and stderr.
    pub error: Option<String>,
}

/// `bulk` on a second store, in the same run.
#[derive(Debug, Serialize)]
pub struct Compared {
    /// The second store, as `--database` names it (no password).
    pub store: String,
    /// `bulk`, per path, on it.
    pub bulk: Vec<BulkResult>,
    /// Peak memory per role on it.
    pub memory: Vec<RoleMemory>,
}

impl Report {
    /// Fills in the ratios from the results.
    pub fn compute_ratios(&mut self) {
        let bulk = |path: &str| {
            self.bulk
                .iter()
                .find(|b| b.path == path)
                .map(|b| b.clients_per_second)
        };
        let ratio =
            |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
        let trickle = self.trickle.iter().find(|t| t.path == "new");
        let idle = (self.baselines.idle_rpc.as_ref())
            .and_then(|i| i.latency_ms.as_ref())
            .map(|p| p.p50);
        self.ratios = Ratios {
            new_over_legacy: ratio(bulk("new"), bulk("legacy")),
            bulk_new_over_raw: ratio(
                bulk("new"),
                self.baselines
                    .raw_file_pairs
                    .as_ref()
                    .map(|r| r.clients_per_second),
            ),
            direct_over_noop: ratio(
                self.direct.as_ref().map(|d| d.configs_per_second),
                self.baselines.noop_rpc.as_ref().map(|n| n.calls_per_second),
            ),
            trickle_disk_over_idle_rpc: ratio(
                trickle.and_then(|t| t.to_disk_ms.as_ref()).map(|p| p.p50),
                idle,
            ),
            trickle_admin_over_idle_rpc: ratio(
                trickle
                    .and_then(|t| t.admin_call_ms.as_ref())
                    .map(|p| p.p50),
                idle,
            ),
            compared_over_first: ratio(
                self.compared.as_ref().and_then(|c| {
                    let new = c.bulk.iter().find(|b| b.path == "new");
                    new.map(|b| b.clients_per_second)
                }),
                bulk("new"),
            ),
        };
    }

    /// Prints the tables.
    pub fn print(&self) {
        println!(
            "pxeconf loadtest {} ({}), depots: {}",
            self.run_id,
            self.mode,
            self.depots
                .iter()
                .map(|d| format!("{} [{}]", d.id, d.path))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(dir) = &self.dir {
            println!("  files in {}", dir.display());
        }
        if self.site_products > 0 {
            println!(
                "  a site's inventory: {} other products on every depot and every client",
                self.site_products
            );
        }
        self.print_bulk();
        self.print_boot();
        self.print_trickle();
        self.print_direct();
        self.print_compared();
        self.print_tail();
    }

    fn print_compared(&self) {
        if let Some(c) = &self.compared {
            println!("\nbulk again on {}", c.store);
            for b in &c.bulk {
                bulk_row(b);
            }
            for m in &c.memory {
                let mib = m.peak_rss_mib.map_or("?".into(), |v| format!("{v:.0} MiB"));
                println!("  peak RSS {:<28} {mib}", m.role);
            }
        }
    }

    fn print_bulk(&self) {
        if self.bulk.is_empty() {
            return;
        }
        println!("\nbulk: actions in Admin calls → every config acknowledged");
        println!(
            "  {:<7} {:>8} {:>9} {:>6} {:>8} {:>9} {:>10} {:>9}",
            "path", "clients", "delivered", "calls", "admin s", "seconds", "clients/s", "look-ups"
        );
        for b in &self.bulk {
            bulk_row(b);
        }
    }

    fn print_boot(&self) {
        for b in &self.boot {
            println!(
                "\nboot, {} path: {} of {} configs read ({:?}) in {:.2} s, {:.0} reads/s; {} turned none",
                b.path,
                b.reads_ok,
                b.clients,
                b.read_method,
                b.read_seconds,
                b.reads_per_second,
                b.turned_none
            );
            latency_line("read → none", b.latency_ms.as_ref());
        }
    }

    fn print_trickle(&self) {
        for t in &self.trickle {
            println!(
                "\ntrickle, {} path: {} single actions at {}/s, {} delivered",
                t.path, t.clients, t.rate, t.delivered
            );
            latency_line("admin call", t.admin_call_ms.as_ref());
            latency_line("call → on disk", t.to_disk_ms.as_ref());
            latency_line("call → ack", t.to_ack_ms.as_ref());
        }
    }

    fn print_direct(&self) {
        if let Some(d) = &self.direct {
            let v = &d.driven;
            let rpc = match d.batch {
                1 => "SetPxeConfig".to_owned(),
                n => format!("BatchSetPxeConfigs ({n} per call)"),
            };
            println!(
                "\ndirect {rpc} at {}: {} of {} calls ok, {} in flight, {:.2} s, {:.0} configs/s, {}",
                d.depot,
                v.ok,
                v.calls,
                v.concurrency,
                v.seconds,
                d.configs_per_second,
                // A remote depot's metrics are not known to the run.
                d.writes_counted
                    .map_or("the depot's own count not read".into(), |w| format!(
                        "depot counted {w}"
                    ))
            );
            latency_line("call", v.latency_ms.as_ref());
            cpu_line(v.cpu.as_ref());
            if let Some(e) = &v.first_error {
                println!("  first error: {e}");
            }
        }
    }

    fn print_tail(&self) {
        println!("\nbaselines and ratios");
        if let Some(r) = &self.baselines.raw_file_pairs {
            println!(
                "  raw file-pair loop: {:.0} clients/s ({} clients in {:.2} s)",
                r.clients_per_second, r.clients, r.seconds
            );
        }
        if let Some(n) = &self.baselines.noop_rpc {
            println!(
                "  no-op RPC (health Check): {:.0}/s, {} in flight",
                n.calls_per_second, n.concurrency
            );
            latency_line("call", n.latency_ms.as_ref());
            cpu_line(n.cpu.as_ref());
        }
        if let Some(i) = &self.baselines.idle_rpc {
            println!(
                "  idle no-op RPC (health Check at the configserver): {} calls one at a time at {}/s",
                i.calls, i.rate
            );
            latency_line("call", i.latency_ms.as_ref());
        }
        let show = |name: &str, r: Option<f64>| {
            if let Some(r) = r {
                println!("  {name}: {r:.2}x");
            }
        };
        show("bulk new / legacy", self.ratios.new_over_legacy);
        show("bulk new / raw loop", self.ratios.bulk_new_over_raw);
        show("direct / no-op RPC", self.ratios.direct_over_noop);
        show(
            "trickle new, call → on disk p50 / idle no-op RPC p50",
            self.ratios.trickle_disk_over_idle_rpc,
        );
        show(
            "trickle new, admin call p50 / idle no-op RPC p50",
            self.ratios.trickle_admin_over_idle_rpc,
        );
        show(
            "bulk new, second store / first",
            self.ratios.compared_over_first,
        );
        for m in &self.memory {
            let mib = m.peak_rss_mib.map_or("?".into(), |v| format!("{v:.0} MiB"));
            println!("  peak RSS {:<28} {mib}", m.role);
        }
        if let Some(c) = &self.cleanup {
            println!(
                "  clean-up: {} clients deleted, removals {} in {:.1} s",
                c.clients_deleted,
                if c.verified {
                    "verified"
                } else {
                    "NOT verified"
                },
                c.seconds
            );
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        for f in &self.failures {
            println!("  FAILED: {f}");
        }
    }
}

/// One path's bulk row (the columns of `print_bulk`'s header) and its
/// latency line; the second store's table has the same columns.
fn bulk_row(b: &BulkResult) {
    println!(
        "  {:<7} {:>8} {:>9} {:>6} {:>8.2} {:>9.2} {:>10.0} {:>9}",
        b.path,
        b.clients,
        b.delivered,
        b.admin_calls,
        b.admin_seconds,
        b.seconds,
        b.clients_per_second,
        b.lookups_per_client
            .map_or("?".into(), |l| format!("{l:.1}"))
    );
    latency_line("call → ack", b.latency_ms.as_ref());
}

/// The CPU a phase of calls took per call, and how idle the machine was:
/// whether the depot, the load generator beside it, or neither bound it.
fn cpu_line(cpu: Option<&PhaseCpu>) {
    let Some(c) = cpu else { return };
    let depot = c
        .depot_us_per_call
        .map_or(String::new(), |us| format!("depot {us:.0} µs, "));
    println!(
        "  CPU per call     {depot}load test {:.0} µs; machine idle {:.0} %",
        c.loadtest_us_per_call, c.machine_idle_percent
    );
}

fn latency_line(what: &str, p: Option<&Percentiles>) {
    if let Some(p) = p {
        println!("  {what:<16} {p}");
    }
}
