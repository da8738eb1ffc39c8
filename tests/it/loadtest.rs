//! `pxeconf loadtest` as CI runs it: correctness, never timing. Self-contained
//! (the roles as child processes of the built binary), every scenario, every
//! client delivered, read and turned `none`; and against a running site
//! (remote mode), which it must leave as it found it — also after Ctrl-C.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use pxeconf::cli::lab::{Lab, LabOptions};
use pxeconf::cli::tftp::TftpServer;
use pxeconf::proto;
use serde_json::Value;

use crate::common::*;

/// Runs the binary to its end, off the async threads.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        pxeconf_command()
            .arg("loadtest")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run pxeconf loadtest")
    })
    .await
    .unwrap()
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every client of a bulk, boot and trickle entry made it.
fn assert_every_client_through(r: &Value, clients: u64, trickle: u64) {
    assert_eq!(r["failures"], serde_json::json!([]), "{r:#}");
    for path in ["new", "legacy"] {
        let of = |list: &str| {
            r[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["path"] == path)
                .cloned()
                .unwrap_or_else(|| panic!("no {list} entry for the {path} path: {r:#}"))
        };
        let bulk = of("bulk");
        assert_eq!(u(&bulk["delivered"]), clients, "{bulk:#}");
        let boot = of("boot");
        assert_eq!(u(&boot["reads_ok"]), clients, "{boot:#}");
        assert_eq!(u(&boot["turned_none"]), clients, "{boot:#}");
        // Read → none for every client, and never zero: the read travels
        // from the TFTP server's close through the depot and a report to
        // the configserver's transaction (timed against the depot's own
        // clock of the read, it came out 0 for most clients).
        let read_to_none = &boot["latency_ms"];
        assert_eq!(u(&read_to_none["count"]), clients, "{boot:#}");
        let p50 = read_to_none["p50"].as_f64().unwrap();
        assert!(p50 >= 0.05, "read → none p50 {p50} ms: {boot:#}");
        let trickle_entry = of("trickle");
        assert_eq!(u(&trickle_entry["delivered"]), trickle, "{trickle_entry:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_contained_every_scenario_delivers_reads_and_turns_every_client_none() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let (clients, trickle, direct) = (1000u64, 40u64, 1000u64);
    let out = run(vec![
        "--clients".into(),
        clients.to_string(),
        "--trickle-clients".into(),
        trickle.to_string(),
        "--trickle-rate".into(),
        "100".into(),
        "--direct-calls".into(),
        direct.to_string(),
        "--depots".into(),
        "2".into(),
        // Other products on every depot and client, as a site has them:
        // each bundle must still be its own product's.
        "--site-products".into(),
        "3".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--json".into(),
    ])
    .await;
    let r = report(&out);
    assert!(
        out.status.success(),
        "{r:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["mode"], "self-contained");
    assert_eq!(r["site_products"], 3);
    assert_every_client_through(&r, clients, trickle);
    let boot_method = &r["boot"][0]["read_method"];
    if have_tftpd() {
        assert_eq!(
            boot_method, "tftp",
            "tftpd-hpa serves here, so boot reads over TFTP"
        );
    }
    let bulk_new = &r["bulk"][0];
    assert_eq!(bulk_new["path"], "new");
    assert_eq!(
        bulk_new["lookups_per_client"], 0.0,
        "the new path makes no look-ups"
    );
    let legacy = r["bulk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["path"] == "legacy")
        .unwrap();
    assert!(
        legacy["lookups_per_client"].as_f64().unwrap() >= 7.0,
        "a legacy push looks the client up seven times: {legacy:#}"
    );
    // The trickle's own inotify watch saw every client's config arrive
    // (the depots are on this machine), on both paths.
    for entry in r["trickle"].as_array().unwrap() {
        let to_disk = &entry["to_disk_ms"];
        assert_eq!(u(&to_disk["count"]), trickle, "{entry:#}");
        assert!(to_disk["p50"].as_f64().unwrap() > 0.0, "{entry:#}");
    }
    assert_eq!(u(&r["direct"]["ok"]), direct);
    assert_eq!(
        u(&r["direct"]["writes_counted"]),
        direct,
        "the depot's write counter agrees"
    );
    assert!(u(&r["baselines"]["noop_rpc"]["ok"]) == direct);
    // What each phase of calls cost: the depot is a child of the run, so its
    // CPU is known; the machine's idle share is a share.
    for phase in [&r["direct"]["cpu"], &r["baselines"]["noop_rpc"]["cpu"]] {
        let us = |k: &str| {
            phase[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k}: {phase:#}"))
        };
        assert!(
            us("depot_us_per_call") > 0.0 && us("loadtest_us_per_call") > 0.0,
            "{phase:#}"
        );
        assert!(
            (0.0..=100.0).contains(&us("machine_idle_percent")),
            "{phase:#}"
        );
    }
    assert!(
        r["direct"]["cpu"]["depot_us_per_call"].as_f64()
            > r["baselines"]["noop_rpc"]["cpu"]["depot_us_per_call"].as_f64(),
        "a config written costs the depot more than a health check: {r:#}"
    );
    assert!(
        r["baselines"]["raw_file_pairs"]["clients_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The trickle's baseline: as many idle no-op calls as it sent actions,
    // and its ratios computed from them.
    let idle = &r["baselines"]["idle_rpc"];
    assert_eq!(u(&idle["latency_ms"]["count"]), trickle, "{idle:#}");
    for ratio in ["trickle_disk_over_idle_rpc", "trickle_admin_over_idle_rpc"] {
        assert!(
            r["ratios"][ratio].as_f64().is_some_and(|x| x > 0.0),
            "{ratio}: {:#}",
            r["ratios"]
        );
    }
    for role in r["memory"].as_array().unwrap() {
        assert!(role["peak_rss_mib"].as_f64().unwrap() > 0.0, "{role}");
    }
    assert_eq!(
        r["memory"].as_array().unwrap().len(),
        1 + 3 + 1,
        "configserver, 3 depots, loadtest"
    );
    assert!(!dir.exists(), "the run directory is removed without --keep");
}

/// A lab site (configserver and two new-path depots in this process) with
/// a few real clients, and tftpd-hpa serving each depot when it can here;
/// every hop over TLS from a throwaway CA with `tls`.
async fn site(root: &Path, tls: bool) -> (Lab, Vec<TftpServer>) {
    let options = LabOptions {
        dir: root.to_owned(),
        pxe_root: root.to_owned(),
        depots: 2,
        legacy: 0,
        concurrency: 8,
        io_threads: 2,
        database: None,
    };
    let lab = if tls {
        Lab::start_tls(options).await
    } else {
        Lab::start(options).await
    }
    .unwrap();
    lab.seed(5).await.unwrap();
    let tftpds = match TftpServer::find() {
        Some(binary) => lab
            .depots
            .iter()
            .map(|d| TftpServer::start(&binary, &d.pxe_dir).unwrap())
            .collect(),
        None => Vec::new(),
    };
    (lab, tftpds)
}

fn remote_args(lab: &Lab, tftpds: &[TftpServer]) -> Vec<String> {
    let scheme = if lab.pki.is_some() { "https" } else { "http" };
    let mut args = vec![
        "--configserver".into(),
        format!("{scheme}://{}", lab.configserver),
        "--admin-key-file".into(),
        lab.admin_key_file.display().to_string(),
        "--depot-key-file".into(),
        lab.depots[0].key_file.display().to_string(),
        "--path".into(),
        "new".into(),
        "--json".into(),
    ];
    if let Some(pki) = &lab.pki {
        args.push("--tls-ca".into());
        args.push(pki.ca_file.display().to_string());
    }
    for (d, t) in lab.depots.iter().zip(tftpds) {
        args.push("--tftp".into());
        args.push(format!("{}={}", d.id, t.addr));
    }
    args
}

/// What the site holds of a run: PXE files on the depots, clients still
/// known, pushes still pending.
async fn leftovers(lab: &Lab, run_id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for d in &lab.depots {
        left.extend(
            list_dir(&d.pxe_dir)
                .into_iter()
                .map(|f| format!("{}: {f}", d.id)),
        );
        let pending = lab
            .admin()
            .await
            .unwrap()
            .list_pending(proto::ListPendingRequest {
                depot_id: d.id.clone(),
                page_size: 10_000,
                page_token: String::new(),
                blocked: false,
            })
            .await
            .unwrap()
            .into_inner()
            .pending;
        left.extend(
            pending
                .into_iter()
                .map(|p| format!("pending {}", p.client_id)),
        );
    }
    let fqdn = format!("lt-0.{run_id}.loadtest.invalid");
    let status = lab
        .admin()
        .await
        .unwrap()
        .get_client_status(proto::GetClientStatusRequest { fqdn: fqdn.clone() })
        .await;
    if status.is_ok() {
        left.push(format!("client {fqdn} still exists"));
    }
    // Nor rows of it in the outbox: its removals were delivered.
    let rows = lab.core.store.pushes_of_client(&fqdn).await.unwrap();
    left.extend(
        rows.into_iter()
            .map(|r| format!("push row of {fqdn} on {}", r.depot_id)),
    );
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_measures_a_running_site_over_tls_and_leaves_it_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let (lab, tftpds) = site(root.path(), true).await;
    let mut args = remote_args(&lab, &tftpds);
    let boot = !tftpds.is_empty();
    let scenarios = if boot {
        "bulk,boot,trickle,direct"
    } else {
        "bulk,trickle,direct"
    };
    args.extend(
        [
            "--clients",
            "300",
            "--trickle-clients",
            "20",
            "--trickle-rate",
            "100",
            "--scenario",
            scenarios,
            // `direct` in batches: 300 configs in 10 calls.
            "--direct-batch",
            "32",
        ]
        .map(String::from),
    );
    let out = run(args).await;
    let r = report(&out);
    assert!(
        out.status.success(),
        "{r:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["mode"], "remote");
    assert_eq!(r["failures"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["error"], Value::Null, "{r:#}");
    assert_eq!(u(&r["bulk"][0]["delivered"]), 300);
    if boot {
        assert_eq!(u(&r["boot"][0]["turned_none"]), 300);
    }
    assert_eq!(u(&r["trickle"][0]["delivered"]), 20);
    assert_eq!(u(&r["direct"]["batch"]), 32);
    assert_eq!(u(&r["direct"]["ok"]), 10, "calls");
    assert_eq!(u(&r["direct"]["configs"]), 300);
    assert_eq!(r["cleanup"]["verified"], true, "{r:#}");
    let run_id = r["run_id"].as_str().unwrap();
    assert_eq!(leftovers(&lab, run_id).await, Vec::<String>::new());
    // The site's own clients are untouched.
    let mut admin = lab.admin().await.unwrap();
    for n in 0..5 {
        admin
            .get_client_status(proto::GetClientStatusRequest {
                fqdn: pxeconf::cli::lab::client_fqdn(n),
            })
            .await
            .unwrap();
    }
    drop(tftpds);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_remote_mode_still_deletes_everything_it_created() {
    interrupted_in_remote_mode_deletes_everything_it_created("-INT").await;
}

/// A dropped SSH session sends SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_in_remote_mode_still_deletes_everything_it_created() {
    interrupted_in_remote_mode_deletes_everything_it_created("-HUP").await;
}

async fn interrupted_in_remote_mode_deletes_everything_it_created(signal: &str) {
    let root = tempfile::tempdir().unwrap();
    let (lab, _tftpds) = site(root.path(), false).await;
    let mut args = remote_args(&lab, &[]);
    // A trickle that would take minutes: it is interrupted long before.
    args.extend(
        [
            "--clients",
            "2000",
            "--trickle-clients",
            "2000",
            "--trickle-rate",
            "10",
            "--scenario",
            "trickle",
        ]
        .map(String::from),
    );
    let mut child = pxeconf_command()
        .arg("loadtest")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pxe = lab.depots[0].pxe_dir.clone();
    wait_for("the trickle's first config is on a depot", 60, || {
        let pxe = pxe.clone();
        async move { !list_dir(&pxe).is_empty() }
    })
    .await;
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || {
        // wait_with_output drains both pipes, so the child never blocks on them.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait_with_output().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "an interrupted run does not pass");
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    let r = report(&out);
    assert_eq!(r["error"], "interrupted", "the JSON says why: {r:#}");
    assert_eq!(r["cleanup"]["verified"], true, "{r:#}");
    let run_id = r["run_id"].as_str().unwrap();
    assert_eq!(leftovers(&lab, run_id).await, Vec::<String>::new());
    lab.shutdown().await;
}

/// Registers `dead.example.org`, a depot nothing listens for.
async fn register_dead_depot(lab: &Lab) {
    lab.admin()
        .await
        .unwrap()
        .upsert_depots(proto::UpsertDepotsRequest {
            depots: vec![proto::DepotInfo {
                id: "dead.example.org".into(),
                endpoint: "http://127.0.0.1:1".into(),
                host_key: "0123456789abcdef0123456789abcdef".into(),
                description: String::new(),
            }],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_delivered_fails_the_run() {
    let root = tempfile::tempdir().unwrap();
    let (lab, _tftpds) = site(root.path(), false).await;
    // A registered depot nobody answers for: nothing reaches it.
    register_dead_depot(&lab).await;
    let mut args = remote_args(&lab, &[]);
    args.extend(
        [
            "--depots",
            "dead.example.org",
            "--scenario",
            "bulk",
            "--clients",
            "5",
            "--timeout",
            "2s",
        ]
        .map(String::from),
    );
    let out = run(args).await;
    assert!(
        !out.status.success(),
        "undelivered clients must fail the run"
    );
    let r = report(&out);
    assert_eq!(u(&r["bulk"][0]["delivered"]), 0);
    let failures = r["failures"].to_string();
    assert!(
        failures.contains("5 of 5 clients not delivered"),
        "{failures}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("check(s) failed"));
    lab.shutdown().await;
}

/// A site whose clients get no config (here: no service address, on one
/// depot, then on all) stops the run at the first Admin call that says so,
/// naming a client and why; it waited out --timeout, then its clean-up as
/// long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_gives_its_clients_no_config_stops_the_run_at_once_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let (lab, _tftpds) = site(root.path(), false).await;
    let mut admin = lab.admin().await.unwrap();
    let no_service = "has no service address (config clientconfig.configserver.url): its boot image could not reach the service";
    let stops = async |scenario: &str, said: &str| {
        let mut args = remote_args(&lab, &[]);
        args.extend(
            [
                "--scenario",
                scenario,
                "--clients",
                "6",
                "--bulk-calls",
                "1",
            ]
            .map(String::from),
        );
        args.extend(["--trickle-clients", "6", "--timeout", "10m"].map(String::from));
        let started = std::time::Instant::now();
        let out = run(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{scenario}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{scenario}: {:?}",
            started.elapsed()
        );
        assert!(
            stderr.contains(&format!("{said}, so the run stops: lt-"))
                && stderr.contains(no_service),
            "{scenario}: {stderr}"
        );
        let r = report(&out);
        assert_eq!(r["cleanup"]["verified"], true, "{scenario}: {r:#}");
    };
    // The second depot's clients have a blank address: a bulk call of
    // clients of both depots (the first depot's first) stops, naming one of
    // the second's (the first depot's clients get theirs).
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: vec![proto::ConfigState {
                object_id: lab.depots[1].id.clone(),
                config_id: "clientconfig.configserver.url".into(),
                values: vec![String::new()],
            }],
        })
        .await
        .unwrap();
    stops("bulk", "3 of the 6 clients of an Admin call get no config").await;
    // No default either: the trickle's first action stops it.
    admin
        .upsert_configs(proto::UpsertConfigsRequest {
            configs: vec![proto::Config {
                id: "clientconfig.configserver.url".into(),
                default_values: vec![],
                description: String::new(),
            }],
        })
        .await
        .unwrap();
    stops("trickle", "a client gets no config").await;
    lab.shutdown().await;
}

/// A registered depot the configserver cannot reach (its check of the
/// depot's holdings failed) is left out of a run over every depot, and said
/// so: its clients would hold the run until --timeout, then the clean-up
/// as long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_that_does_not_answer_is_left_out_of_a_run_over_every_depot() {
    let root = tempfile::tempdir().unwrap();
    let (lab, _tftpds) = site(root.path(), false).await;
    register_dead_depot(&lab).await;
    let admin = lab.admin().await.unwrap();
    // Nothing is pushed to it: the configserver's check of its holdings
    // finds it down.
    wait_for("the dead depot shows why it is down", 30, || {
        let mut admin = admin.clone();
        async move {
            depots(&mut admin)
                .await
                .iter()
                .any(|d| d.id == "dead.example.org" && d.last_error.starts_with("UNAVAILABLE"))
        }
    })
    .await;
    let mut args = remote_args(&lab, &[]);
    args.extend(["--scenario", "bulk", "--clients", "20", "--timeout", "60s"].map(String::from));
    let out = run(args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}\n{stderr}");
    assert!(
        stderr.contains("left out: dead.example.org does not answer the configserver (UNAVAILABLE"),
        "{stderr}"
    );
    let used: Vec<&str> = r["depots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(!used.contains(&"dead.example.org"), "{used:?}");
    // The report says so too: stderr is gone once the run is filed.
    assert!(
        r["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("left out: dead.example.org does not answer")),
        "{r:#}"
    );
    assert_eq!(u(&r["bulk"][0]["delivered"]), 20);
    assert_eq!(r["cleanup"]["verified"], true, "{r:#}");
    lab.shutdown().await;
}

/// The pid of a process whose command line holds `needle`.
fn pid_with(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
                .then_some(pid)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_dies_ends_the_run_at_once_and_names_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let child = pxeconf_command()
        .args(["loadtest", "--scenario", "trickle", "--trickle-clients"])
        .args(["100000", "--trickle-rate", "20", "--depots", "1"])
        .args(["--legacy-depots", "0", "--timeout", "10m", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The depot role's command line names its PXE directory in the run dir.
    let needle = format!("{}/depot1 ", dir.display());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let depot = loop {
        if let Some(pid) = pid_with(&needle) {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no depot role started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Let the trickle begin, then take the depot away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &depot.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success(), "a run whose depot died cannot pass");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("depot1.loadtest.invalid exited during the run"),
        "{stderr}"
    );
    // Not the 10 minutes of --timeout: the end of the role ends the run.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}

/// Whether the database of loadtest run `run_id` exists on the cluster
/// (other tests' runs may come and go meanwhile).
async fn run_database_exists(server: &str, run_id: &str) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(format!("pxeconf_loadtest_{run_id}"))
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .is_some()
}

/// `--database postgres://…` names a server: each run creates a database of
/// its own there and drops it afterwards, so runs in a row on one URL never
/// see each other's depots; `--keep` keeps it, named in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_one_postgres_server_each_get_a_database_of_their_own() {
    let Some(cluster) = crate::common::postgres::shared() else {
        return;
    };
    let server = cluster.url("postgres");
    let root = tempfile::tempdir().unwrap();
    let args = |keep: bool, dir: &str| {
        let mut args: Vec<String> = [
            "--json",
            "--clients",
            "200",
            "--scenario",
            "bulk",
            "--path",
            "new",
            "--depots",
            "1",
            "--legacy-depots",
            "0",
            "--database",
            &server,
            "--dir",
            &root.path().join(dir).display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        if keep {
            args.push("--keep".into());
        }
        args
    };
    for dir in ["one", "two"] {
        let out = run(args(false, dir)).await;
        let r = report(&out);
        assert!(out.status.success(), "{r:#}");
        assert_eq!(u(&r["bulk"][0]["delivered"]), 200, "{r:#}");
        let run_id = r["run_id"].as_str().unwrap();
        assert!(
            !run_database_exists(&server, run_id).await,
            "dropped after the run"
        );
    }
    let out = run(args(true, "three")).await;
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    let run_id = r["run_id"].as_str().unwrap();
    assert!(run_database_exists(&server, run_id).await, "kept");
    let kept = format!("pxeconf_loadtest_{run_id}");
    let notes = r["notes"].to_string();
    assert!(notes.contains(&kept), "the report names it: {notes}");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {kept}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A site's inventory is built in self-contained runs only: against a
/// running site it would add products to a production inventory. Refused
/// before anything connects, with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_products_are_refused_against_a_running_site() {
    let out = run([
        "--configserver",
        "http://127.0.0.1:1",
        "--site-products",
        "3",
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--site-products is for self-contained runs"),
        "{stderr}"
    );
}

/// The TLS variables a shell keeps for the admin verbs (README's
/// "Operator verbs") are for runs against a site: a self-contained run
/// ignores them — it failed with "--tls-ca goes with --configserver" — and
/// the flag itself is still refused there. (Both runs stop at a later
/// check, before anything starts.)
#[test]
fn a_self_contained_run_ignores_the_tls_variables_but_not_the_flag() {
    let run = |args: &[&str]| {
        let out = pxeconf_command()
            .arg("loadtest")
            .args(args)
            .env("PXECONF_TLS_CA", "/etc/pxeconf/tls/ca.pem")
            .env("PXECONF_TLS_CERT", "/etc/pxeconf/tls/admin.pem")
            .env("PXECONF_TLS_KEY", "/etc/pxeconf/tls/admin.key")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(&["--tftp", "depot1=127.0.0.1:69"]);
    assert!(
        stderr.contains("--tftp and --metrics-url go with --configserver"),
        "{stderr}"
    );
    let stderr = run(&["--tls-ca", "/tmp/ca.pem"]);
    assert!(
        stderr.contains("--tls-ca goes with --configserver"),
        "{stderr}"
    );
}
