//! The run: open the target (start the roles, or connect to a site), plan the
//! cohorts, measure the scenarios and baselines, clean up — also after
//! Ctrl-C or a failure — and report.

use std::path::PathBuf;

use super::args::{LoadtestArgs, PathChoice, Scenario};
use super::cpu::Sample;
use super::inventory::{self, Cohort};
use super::local::{self, LocalSite};
use super::names::Names;
use super::report::{Compared, DepotLine, Report, RoleMemory};
use super::scenario::{boot, bulk, direct, trickle};
use super::target::Target;
use super::{alone, baseline, remote};
use crate::cli::error::CliError;
use crate::telemetry::LogFormat;
use tracing::info;

/// Progress bars show on a terminal whatever the output format.
const QUIET: bool = false;

/// The cohorts of a run.
struct Plan {
    bulk: Vec<Cohort>,
    trickle: Vec<Cohort>,
}

impl Plan {
    /// Cohorts per path asked for: bulk clients `0..N` (new) and `N..2N`
    /// (legacy), trickle clients after them.
    fn new(
        args: &LoadtestArgs,
        target: &Target,
        names: &Names,
        notes: &mut Vec<String>,
    ) -> Result<Self, CliError> {
        let paths: &[bool] = match args.path {
            PathChoice::New => &[false],
            PathChoice::Legacy => &[true],
            PathChoice::Both => &[false, true],
        };
        let (n, m) = (args.clients, args.trickle_clients);
        let mut plan = Plan {
            bulk: Vec::new(),
            trickle: Vec::new(),
        };
        for &legacy in paths {
            let depots = target.depots_on(legacy);
            let path = if legacy { "legacy" } else { "new" };
            if depots.is_empty() {
                if args.path != PathChoice::Both {
                    return Err(format!("no {path}-path depot to use").into());
                }
                notes.push(format!("no {path}-path depot: that path was skipped"));
                continue;
            }
            let k = u32::from(legacy);
            if args.runs(Scenario::Bulk) || args.runs(Scenario::Boot) {
                plan.bulk
                    .push(Cohort::new(names, legacy, k * n, n, &depots));
            }
            if args.runs(Scenario::Trickle) && m > 0 {
                plan.trickle
                    .push(Cohort::new(names, legacy, 2 * n + k * m, m, &depots));
            }
        }
        Ok(plan)
    }

    fn cohorts(&self) -> impl Iterator<Item = &Cohort> {
        self.bulk.iter().chain(&self.trickle)
    }
}

/// A stop the run cleans up after: SIGINT, SIGTERM, or the terminal going
/// away (SIGHUP, as a dropped SSH session sends) or SIGQUIT.
fn interrupted() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let stop = crate::server::shutdown_signal();
    let (hangup, quit) = (signal(SignalKind::hangup()), signal(SignalKind::quit()));
    let received = |signal: std::io::Result<Signal>| async move {
        match signal {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    async move {
        tokio::select! {
            () = stop => {}
            () = received(hangup) => {}
            () = received(quit) => {}
        }
    }
}

/// Runs the load test.
pub async fn run(mut args: LoadtestArgs) -> Result<(), CliError> {
    crate::telemetry::init_with_default(LogFormat::Human, "warn");
    // Every stop signal is ours from here on (tokio keeps a handler once
    // set): none may end the run before it has cleaned up.
    drop(interrupted());
    args.tls_from_env()?;
    args.check()?;
    super::channel::configure(
        args.tls_ca.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
    )?;
    let (mut report, mut outcome) = run_once(&args).await;
    if outcome.is_ok()
        && let Some(store) = &args.compare_database
    {
        let mut again = args.clone();
        again.database = Some(store.clone());
        again.compare_database = None;
        again.scenario = vec![Scenario::Bulk];
        let (second, second_outcome) = run_once(&again).await;
        let shown = crate::configserver::store::Location::parse(store).to_string();
        report
            .failures
            .extend((second.failures.iter()).map(|f| format!("on {shown}: {f}")));
        report.compared = Some(Compared {
            store: shown,
            bulk: second.bulk,
            memory: second.memory,
        });
        outcome = second_outcome;
    }
    report.compute_ratios();
    if let Err(error) = &outcome {
        report.error = Some(error.to_string());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    outcome?;
    if !report.failures.is_empty() {
        return Err(format!(
            "{} check(s) failed: {}",
            report.failures.len(),
            report.failures.join("; ")
        )
        .into());
    }
    Ok(())
}

/// One run: the site opened (roles started, or the remote one), the
/// scenarios measured, everything it made removed; the report, and how it
/// went (the measurement's error first, else the clean-up's).
async fn run_once(args: &LoadtestArgs) -> (Report, Result<(), CliError>) {
    let names = Names::random();
    let mut report = Report {
        run_id: names.run_id(),
        site_products: args.site_products,
        ..Default::default()
    };
    let (target, mut site) = match open(args, &names, &mut report).await {
        Ok(opened) => opened,
        Err(e) => return (report, Err(e)),
    };
    let plan = match Plan::new(args, &target, &names, &mut report.notes) {
        Ok(plan) => plan,
        Err(e) => return (report, Err(e)),
    };
    let exited = async {
        match site.as_mut() {
            Some(site) => site.role_exited().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = measure(args, &target, &names, &plan, &mut report) => r,
        () = interrupted() => Err("interrupted".into()),
        why = exited => Err(why.into()),
    };
    let failed = result.is_err() || !report.failures.is_empty();
    let finished = finish(args, &target, &names, &plan, site, failed, &mut report).await;
    (report, result.and(finished))
}

/// Starts the roles or connects to the site.
async fn open(
    args: &LoadtestArgs,
    names: &Names,
    report: &mut Report,
) -> Result<(Target, Option<LocalSite>), CliError> {
    let (target, site) = match &args.configserver {
        Some(url) => {
            report.mode = "remote";
            (remote::connect(args, url, &mut report.notes).await?, None)
        }
        None => {
            report.mode = "self-contained";
            if let Some(url) = &args.database {
                let store = crate::configserver::store::Location::parse(url);
                report.notes.push(format!("store: {store}"));
            }
            let dir = local::run_dir(args.dir.as_deref(), names);
            report.dir = Some(dir.clone());
            let (target, site) = local::start(args, &dir, names).await?;
            if !site.tftp() {
                report.notes.push("tftpd-hpa cannot serve here (not installed, or not root): boot opens and closes the files".into());
            }
            (target, Some(site))
        }
    };
    report.depots = target
        .depots
        .iter()
        .map(|d| DepotLine {
            id: d.id.clone(),
            path: if d.legacy { "legacy" } else { "new" },
        })
        .collect();
    Ok((target, site))
}

/// Creates the run's objects, then runs the baselines and scenarios.
async fn measure(
    args: &LoadtestArgs,
    target: &Target,
    names: &Names,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), CliError> {
    info!("creating the run's clients");
    inventory::create_product(target, names).await?;
    inventory::create_site_products(target, names, args.site_products).await?;
    let total: usize = plan.cohorts().map(|c| c.members.len()).sum();
    let bar = super::progress::bar(total as u64, "creating clients", QUIET);
    for cohort in plan.cohorts() {
        inventory::create_clients(target, names, cohort).await?;
        inventory::put_site_products(target, names, cohort, args.site_products).await?;
        bar.inc(cohort.members.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(dir) = target
        .baseline_dir
        .as_deref()
        .filter(|_| args.runs(Scenario::Bulk))
    {
        report.baselines.raw_file_pairs =
            Some(baseline::raw_file_pairs(dir, *names, args.clients).await?);
    }
    info!("baselines done");
    for cohort in &plan.bulk {
        bulk_and_boot(args, target, names, cohort, report).await?;
    }
    info!("bulk and boot done");
    for cohort in &plan.trickle {
        let t = trickle::run(
            target,
            names,
            cohort,
            args.trickle_rate,
            args.timeout,
            QUIET,
        )
        .await?;
        if t.delivered < u64::from(t.clients) {
            report.failures.push(format!(
                "trickle {}: {} of {} clients not delivered",
                t.path,
                u64::from(t.clients) - t.delivered,
                t.clients
            ));
        }
        report.trickle.push(t);
    }
    if !plan.trickle.is_empty() {
        // After the trickle, so that an interrupted trickle is not kept
        // waiting for it; the system is as idle then.
        let calls = args.trickle_clients.min(trickle::IDLE_CALLS_MAX);
        let idle = trickle::idle_noop(target, calls, args.trickle_rate);
        report.baselines.idle_rpc = Some(idle.await?);
    }
    info!("trickle done");
    if args.runs(Scenario::Direct) {
        run_direct(args, target, names, report).await?;
    }
    info!("direct done");
    Ok(())
}

/// `bulk` (timed, or untimed when only `boot` needs the configs), then `boot`.
async fn bulk_and_boot(
    args: &LoadtestArgs,
    target: &Target,
    names: &Names,
    cohort: &Cohort,
    report: &mut Report,
) -> Result<(), CliError> {
    let product = names.product();
    if let Some(dir) = target
        .baseline_dir
        .as_deref()
        .and_then(std::path::Path::parent)
        .filter(|d| d.is_dir())
    {
        baseline::settle(dir).await;
    }
    info!(path = cohort.path(), "bulk");
    let (b, _) = bulk::run(
        target,
        cohort,
        &product,
        args.bulk_calls,
        args.timeout,
        QUIET,
    )
    .await?;
    if b.delivered < u64::from(b.clients) {
        report.failures.push(format!(
            "bulk {}: {} of {} clients not delivered",
            b.path,
            u64::from(b.clients) - b.delivered,
            b.clients
        ));
    }
    if args.runs(Scenario::Bulk) {
        report.bulk.push(b);
    }
    if !args.runs(Scenario::Boot) {
        return Ok(());
    }
    if boot::method(target, cohort).is_none() {
        report.notes.push(format!(
            "boot, {} path: skipped, no TFTP server given (--tftp)",
            cohort.path()
        ));
        return Ok(());
    }
    info!(path = cohort.path(), "boot");
    let r = boot::run(
        target,
        names,
        cohort,
        args.boot_concurrency,
        args.timeout,
        QUIET,
    )
    .await?;
    let n = u64::from(r.clients);
    if r.reads_ok < n || r.turned_none < n {
        report.failures.push(format!(
            "boot {}: {} of {n} configs read, {} of {n} actions turned none",
            r.path, r.reads_ok, r.turned_none
        ));
    }
    report.boot.push(r);
    Ok(())
}

/// The no-op baseline, then `direct`, at the first new-path depot.
async fn run_direct(
    args: &LoadtestArgs,
    target: &Target,
    names: &Names,
    report: &mut Report,
) -> Result<(), CliError> {
    let Some(depot) = target.depots.iter().find(|d| !d.legacy) else {
        report
            .notes
            .push("direct: skipped, no new-path depot".into());
        return Ok(());
    };
    if depot.key_file.is_none() {
        report
            .notes
            .push("direct: skipped, the depot's key is not known (--depot-key-file)".into());
        return Ok(());
    }
    let calls = args.direct_calls.unwrap_or(args.clients);
    let (concurrency, batch, names) = (args.direct_concurrency, args.direct_batch, *names);
    let at = depot.clone();
    let noop = alone::on_own_thread("the no-op baseline", move || async move {
        direct::noop(&at, calls, concurrency).await
    });
    let before = Sample::take(depot.pid);
    let mut noop = noop.await?;
    let between = Sample::take(depot.pid);
    noop.cpu = before.zip(between).map(|(a, b)| a.until(&b, noop.ok));
    report.baselines.noop_rpc = Some(noop);
    let at = depot.clone();
    let mut d = alone::on_own_thread("direct", move || async move {
        direct::run(&at, &names, calls, concurrency, batch).await
    })
    .await?;
    let after = Sample::take(depot.pid);
    d.driven.cpu = between.zip(after).map(|(a, b)| a.until(&b, d.driven.ok));
    if d.configs < u64::from(calls) {
        report.failures.push(format!(
            "direct: {} of {calls} configs not written ({})",
            u64::from(calls) - d.configs,
            d.driven.first_error.as_deref().unwrap_or("?")
        ));
    }
    if d.writes_counted.is_some_and(|w| w != d.configs) {
        report.failures.push(format!(
            "direct: the depot counted {:?} writes for {} configs",
            d.writes_counted, d.configs
        ));
    }
    report.direct = Some(d);
    Ok(())
}

/// Leaves nothing behind: a site gets its inventory back (removals
/// verified); self-contained roles are measured, stopped and their
/// directory removed (unless --keep, or the run `failed`). A second Ctrl-C
/// abandons the clean-up.
async fn finish(
    args: &LoadtestArgs,
    target: &Target,
    names: &Names,
    plan: &Plan,
    site: Option<LocalSite>,
    failed: bool,
    report: &mut Report,
) -> Result<(), CliError> {
    let Some(site) = site else {
        let work = clean_remote(args, target, names, plan, report);
        return tokio::select! {
            r = work => r,
            () = interrupted() => Err(format!(
                "clean-up interrupted: delete the clients *{} and the product {} by hand",
                names.suffix(),
                names.product()
            ).into()),
        };
    };
    report.memory = site
        .peak_rss()
        .into_iter()
        .map(|(role, kib)| RoleMemory {
            role,
            peak_rss_mib: kib.map(|k| k as f64 / 1024.0),
        })
        .collect();
    report.memory.push(RoleMemory {
        role: "loadtest".into(),
        peak_rss_mib: super::roles::peak_rss_kib("/proc/self/status").map(|k| k as f64 / 1024.0),
    });
    let dir: PathBuf = site.dir.clone();
    let database = site.stop().await;
    info!("roles stopped");
    // A failed run keeps its directory and database: the roles' logs say
    // why, and the database shows what the configserver held.
    if args.keep || failed {
        report
            .notes
            .push(format!("the run directory {} was kept", dir.display()));
        if let Some(db) = database {
            report
                .notes
                .push(format!("the run's database {} was kept", db.name()));
        }
    } else {
        // The database first: a directory that cannot be removed must not
        // leave it behind; a drop that fails is named, not fatal.
        if let Some(db) = database {
            let name = db.name().to_owned();
            if let Err(error) = db.drop_database().await {
                report.notes.push(format!(
                    "the run's database {name} could not be dropped ({error}); drop it by hand"
                ));
            }
        }
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

async fn clean_remote(
    args: &LoadtestArgs,
    target: &Target,
    names: &Names,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), CliError> {
    // Every step is tried whatever the one before did. The inventory goes
    // first: the direct configs' removal calls a depot that may hang (a
    // stalled directory), and must not hold back the deletion of the
    // clients and the product.
    let fqdns: Vec<String> = plan.cohorts().flat_map(Cohort::fqdns).collect();
    let cleanup = inventory::delete_all(target, names, &fqdns, args.timeout).await;
    if args.runs(Scenario::Direct)
        && let Some(depot) = target
            .depots
            .iter()
            .find(|d| !d.legacy && d.key_file.is_some())
    {
        let calls = args.direct_calls.unwrap_or(args.clients);
        let removed = tokio::time::timeout(args.timeout, direct::remove(depot, names, calls))
            .await
            .unwrap_or_else(|_| Err(format!("not done within {:?}", args.timeout).into()));
        if let Err(e) = removed {
            report.failures.push(format!(
                "clean-up: {e}; the direct scenario's configs (clients *{}) stay on depot {}",
                names.suffix(),
                depot.id
            ));
        }
    }
    let cleanup = cleanup?;
    if !cleanup.verified {
        report.failures.push(format!(
            "clean-up: removals of the clients *{} still pending",
            names.suffix()
        ));
    }
    report.cleanup = Some(cleanup);
    Ok(())
}
