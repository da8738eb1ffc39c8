//! Several configservers on one PostgreSQL database, as real processes of
//! the built binary: a replica SIGKILLed mid-bulk, PostgreSQL restarted
//! mid-bulk, two replicas racing for one depot. "Exactly once" is the
//! depot's own count: one config write per client (a re-push of a revision
//! the depot holds is answered without a write), and, where no replica
//! dies, one SetPxeConfig call per client.

use std::path::Path;
use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::postgres::{self, Cluster};
use crate::common::process::{self, Server};
use crate::common::*;
use pxeconf::proto;

/// A depot process with its metrics served on a loopback port.
struct Depot {
    server: Server,
    dirs: DepotDirs,
    metrics: String,
}

impl Depot {
    async fn start(configservers: &[String]) -> Self {
        let dirs = DepotDirs::new();
        let state = dirs.root.path().join("state");
        // Repeated: the depot fails over between them.
        let mut launch = process::depot(1, &dirs, &state, &configservers[0])
            .arg(&["--metrics-listen", "127.0.0.1:0"]);
        for other in &configservers[1..] {
            launch = launch.arg(&["--configserver", other]);
        }
        let server = launch.start().await;
        let line = server.wait_log("metrics on /metrics", 30).await;
        let metrics = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("the metrics line names the address")
            .to_owned();
        Self {
            server,
            dirs,
            metrics,
        }
    }

    /// The sum of `family`'s series whose labels contain all of `labels`.
    async fn counter(&self, family: &str, labels: &[&str]) -> u64 {
        let mut stream = tokio::net::TcpStream::connect(&self.metrics).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).await.unwrap();
        page.lines()
            .filter(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Configs the depot wrote (repeats of a held revision are no write).
    async fn writes(&self) -> u64 {
        self.counter("pxeconf_config_writes_total", &["result=\"ok\""])
            .await
    }

    /// Bundles the depot was pushed (one per SetPxeConfig, one per bundle
    /// of a BatchSetPxeConfigs).
    async fn set_calls(&self) -> u64 {
        self.counter("pxeconf_bundles_received_total", &[]).await
    }
}

/// The pid of the replica holding `depot`'s lease now (its holder id is
/// host/pid/random), if one does.
async fn current_holder(conn: &mut sqlx::PgConnection, depot: &str) -> Option<u32> {
    let holder: Option<String> = sqlx::query_scalar(
        "SELECT holder FROM depot_leases WHERE depot_id = $1 AND expires_at > clock_timestamp()",
    )
    .bind(depot)
    .fetch_optional(conn)
    .await
    .unwrap();
    holder.and_then(|h| h.split('/').nth(1)?.parse().ok())
}

/// The pid of the replica holding `depot`'s lease, once one does.
async fn lease_holder(url: &str, depot: &str) -> u32 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..600 {
        if let Some(pid) = current_holder(&mut conn, depot).await {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica took the lease of {depot}");
}

/// Replicas on the database at `url`.
async fn replicas(url: &str, keys: &Path, n: usize) -> Vec<Server> {
    let launches: Vec<_> = (0..n)
        // As the in-process test configserver: a push on a loaded CI machine
        // never times out (it would be sent again, and pushes are counted).
        .map(|_| {
            process::configserver_on(url, keys)
                .arg(&["--push-timeout", "30s"])
                .start()
        })
        .collect();
    futures::future::join_all(launches).await
}

/// Waits until the store (read through `admin`) has every one of `clients`
/// delivered to depot 1 and nothing queued.
async fn all_delivered(admin: &Admin, clients: u32, secs: u64) {
    wait_for("every push is delivered", secs, || {
        let mut admin = admin.clone();
        async move {
            let Ok(reply) = admin.list_depots(proto::ListDepotsRequest {}).await else {
                return false;
            };
            let depots = reply.into_inner().depots;
            depots[0].queued == 0 && depots[0].delivered == u64::from(clients)
        }
    })
    .await;
}

/// Every sampled client's file carries the revision the store delivered.
async fn at_store_revision(admin: &mut Admin, depot: &Depot, clients: u32) {
    assert_eq!(depot.dirs.files().len(), 2 * clients as usize);
    for n in (0..clients).step_by(97) {
        let delivery = &status(admin, n).await.deliveries[0];
        let text = peek(&depot.dirs.pxe.join(mac_file(n)));
        assert!(
            text.contains(&format!("revision {},", delivery.delivered_revision)),
            "client{n}: {text}"
        );
    }
}

/// Three replicas; the one driving the depot is SIGKILLed while a
/// 5,000-client bulk lands: another takes the depot over, every client is
/// delivered at its newest revision, and the depot wrote each config once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sigkilled_mid_bulk_loses_nothing_and_writes_each_config_once() {
    const CLIENTS: u32 = 5_000;
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let mut servers = replicas(&url, keys.path(), 3).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    let mut admin = process::admin_at(&urls[1]).await;
    seed(&mut admin, &[(1, depot.server.url())], CLIENTS, |_| 1).await;
    let holder = lease_holder(&url, &depot_id(1)).await;
    set_actions(&mut admin, 0..CLIENTS, "setup").await;
    // Only the moment of the fault depends on it: the whole bulk has minutes.
    wait_for("a fifth of the bulk has landed", 120, || async {
        depot.dirs.files().len() >= (CLIENTS / 5 * 2) as usize
    })
    .await;
    let victim = servers.iter().position(|s| s.pid() == holder).unwrap();
    servers.remove(victim).kill().await;
    let landed = depot.dirs.files().len() / 2;
    eprintln!("replica {holder} SIGKILLed with {landed}/{CLIENTS} landed");
    let survivor = &servers[0];
    let mut admin = process::admin_at(&survivor.url()).await;
    all_delivered(&admin, CLIENTS, 600).await;
    assert_ne!(lease_holder(&url, &depot_id(1)).await, holder);
    at_store_revision(&mut admin, &depot, CLIENTS).await;
    assert_eq!(
        depot.writes().await,
        u64::from(CLIENTS),
        "one write per client"
    );
}

/// PostgreSQL restarts (a fast shutdown, every session cut) while a bulk
/// lands on two replicas: they reconnect and finish, each config written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_bulk_the_replicas_reconnect_and_finish() {
    const CLIENTS: u32 = 1_000;
    if !postgres::available() {
        return;
    }
    // A cluster of its own: the restart must not disturb other tests.
    let cluster = Cluster::start();
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let servers = replicas(&url, keys.path(), 2).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    let mut admin = process::admin_at(&urls[0]).await;
    seed(&mut admin, &[(1, depot.server.url())], CLIENTS, |_| 1).await;
    lease_holder(&url, &depot_id(1)).await;
    set_actions(&mut admin, 0..CLIENTS, "setup").await;
    // Only the moment of the fault depends on it: the whole bulk has minutes.
    wait_for("a fifth of the bulk has landed", 120, || async {
        depot.dirs.files().len() >= (CLIENTS / 5 * 2) as usize
    })
    .await;
    eprintln!(
        "PostgreSQL stopped with {}/{CLIENTS} landed",
        depot.dirs.files().len() / 2
    );
    // Down for two seconds: pushes, acks and renewals fail meanwhile.
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        std::thread::sleep(Duration::from_secs(2));
        cluster.start_again();
        cluster
    })
    .await
    .unwrap();
    all_delivered(&admin, CLIENTS, 300).await;
    for server in &servers {
        assert!(
            !server.log().contains("panicked"),
            "a replica panicked:\n{}",
            server.log()
        );
    }
    at_store_revision(&mut admin, &depot, CLIENTS).await;
    assert_eq!(
        depot.writes().await,
        u64::from(CLIENTS),
        "one write per client"
    );
}

/// Two replicas start at once on one database with one depot and race for
/// it: one drives it, and no client's push is ever sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_for_a_depot_never_push_a_client_twice() {
    const CLIENTS: u32 = 1_000;
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let servers = replicas(&url, keys.path(), 2).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    // Writes go to both replicas at once.
    let mut first = process::admin_at(&urls[0]).await;
    let mut second = process::admin_at(&urls[1]).await;
    seed(&mut first, &[(1, depot.server.url())], CLIENTS, |_| 1).await;
    let half = CLIENTS / 2;
    tokio::join!(
        set_actions(&mut first, 0..half, "setup"),
        set_actions(&mut second, half..CLIENTS, "setup"),
    );
    all_delivered(&first, CLIENTS, 300).await;
    at_store_revision(&mut second, &depot, CLIENTS).await;
    assert_eq!(
        depot.writes().await,
        u64::from(CLIENTS),
        "one write per client"
    );
    assert_eq!(
        depot.set_calls().await,
        u64::from(CLIENTS),
        "one push per client: never sent twice"
    );
}

/// A replica stopped with SIGTERM releases its depot leases before it
/// exits: the other takes its depots at its next renewal (a second), not
/// when the leases expire. Before, the process mostly exited before the
/// release ran, and the depot got no pushes for up to ~5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_sigterm_hands_its_depots_over_at_once() {
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let mut servers = replicas(&url, keys.path(), 2).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    let mut admin = process::admin_at(&urls[0]).await;
    seed(&mut admin, &[(1, depot.server.url())], 1, |_| 1).await;
    let holder = lease_holder(&url, &depot_id(1)).await;
    let victim = servers.iter().position(|s| s.pid() == holder).unwrap();
    let status = servers.remove(victim).terminate().await;
    assert!(status.success(), "{status:?}");
    // Read at once: the lease of the replica gone is no longer in force.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let held_by = current_holder(&mut conn, &depot_id(1)).await;
    assert_ne!(
        held_by,
        Some(holder),
        "the stopped replica still holds the lease"
    );
    assert_eq!(lease_holder(&url, &depot_id(1)).await, servers[0].pid());
}

/// `ListDepots` (and `pxeconf depots`) at a replica that does not push to
/// a depot names the one that does, instead of showing its own stale view
/// ("untried") as the depot's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_names_the_one_that_pushes_to_a_depot() {
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let servers = replicas(&url, keys.path(), 2).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    let mut admin = process::admin_at(&urls[0]).await;
    seed(&mut admin, &[(1, depot.server.url())], 1, |_| 1).await;
    let holder = lease_holder(&url, &depot_id(1)).await;
    let (at, other) = if servers[0].pid() == holder {
        (1, 0)
    } else {
        (0, 1)
    };
    let pushed_by = |i: usize| {
        let url = urls[i].clone();
        async move {
            let mut admin = process::admin_at(&url).await;
            depots(&mut admin).await[0].pushed_by.clone()
        }
    };
    let named = pushed_by(at).await;
    assert!(named.contains(&format!("/{holder}/")), "{named:?}");
    // Both migrated the fresh database at once: the one that found the
    // migrations' table made says nothing of it (PostgreSQL's notices are
    // no operator's business; its warnings still are).
    for server in &servers {
        server.wait_log("configserver store open", 30).await;
        assert!(!server.log().contains("notice"), "{}", server.log());
    }
    assert_eq!(pushed_by(other).await, "", "the holder pushes itself");
    let out = pxeconf_command()
        .args(["depots"])
        .env("PXECONF_SERVER", &urls[at])
        .env("PXECONF_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("elsewhere"), "{text}");
    assert!(
        text.contains(&format!(
            "{} is pushed to by the replica {named}",
            depot_id(1)
        )),
        "{text}"
    );
    // A remote load test through that replica says it cannot tell whether
    // the depot answers, and runs (the holder pushes).
    let out = pxeconf_command()
        .args(["loadtest", "--configserver", &urls[at], "--json"])
        .args(["--scenario", "bulk", "--clients", "10", "--timeout", "60s"])
        .env("PXECONF_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let note = format!(
        "note: {} is pushed to by the replica {named}, not by this configserver",
        depot_id(1)
    );
    assert!(stderr.contains(&note), "{stderr}");
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with(&note)),
        "{report:#}"
    );
}

/// A depot knowing two replicas loses the first (SIGKILL): its read
/// reports land on the second, and so does its start-up reconciliation
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_fails_over_to_another_replica_for_reports_and_reconciliation() {
    const CLIENTS: u32 = 20;
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let mut servers = replicas(&url, keys.path(), 2).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    let mut admin = process::admin_at(&urls[1]).await;
    seed(&mut admin, &[(1, depot.server.url())], CLIENTS, |_| 1).await;
    set_actions(&mut admin, 0..CLIENTS, "once").await;
    all_delivered(&admin, CLIENTS, 120).await;
    // The depot's first configserver dies.
    servers.remove(0).kill().await;
    for n in 0..CLIENTS / 2 {
        simulate_read(&depot.dirs.pxe.join(mac_file(n)));
    }
    wait_for("the reads are recorded by the second replica", 120, || {
        let mut admin = admin.clone();
        async move {
            for n in 0..CLIENTS / 2 {
                let s = status(&mut admin, n).await;
                if s.product_on_clients[0].action_request != "none" {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(
        depot.server.log().contains("failing over"),
        "{}",
        depot.server.log()
    );
    // Restarted, the depot reconciles with the replica still up.
    let again = depot.server.restart_later();
    depot.server.kill().await;
    let restarted = again.start().await;
    restarted.wait_log("reconciliation done", 120).await;
    let after = restarted.log();
    assert!(after.contains("failing over"), "{after}");
    // The unread half is still held, the read half gone.
    assert_eq!(depot.dirs.files().len(), CLIENTS as usize);
}

/// A depot deleted and registered again at once, on PostgreSQL (where a
/// replica runs a depot's worker only while it holds the depot's lease,
/// also when it is the only one): it is pushed to again. Before, the lease
/// task still knew the depot's unchanged record from before the deletion
/// and started no worker for it: nothing reached the depot again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_deleted_and_registered_again_at_once_is_pushed_to_again() {
    const CLIENTS: u32 = 3;
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let keys = tempfile::tempdir().unwrap();
    let servers = replicas(&url, keys.path(), 1).await;
    let urls: Vec<String> = servers.iter().map(Server::url).collect();
    let depot = Depot::start(&urls).await;
    let mut admin = process::admin_at(&urls[0]).await;
    seed(&mut admin, &[(1, depot.server.url())], CLIENTS, |_| 1).await;
    lease_holder(&url, &depot_id(1)).await;
    admin
        .delete_depots(proto::DeleteDepotsRequest {
            ids: vec![depot_id(1)],
        })
        .await
        .unwrap();
    seed(&mut admin, &[(1, depot.server.url())], CLIENTS, |_| 1).await;
    set_actions(&mut admin, 0..CLIENTS, "setup").await;
    all_delivered(&admin, CLIENTS, 60).await;
    assert_eq!(depot.dirs.files().len(), 2 * CLIENTS as usize);
}

/// `pxeconf demo --database postgres://…` runs its site on PostgreSQL: every
/// client pushed, the read ones' actions cleared, no SQLite file made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_postgres() {
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = {
        let demo = demo.clone();
        tokio::task::spawn_blocking(move || {
            pxeconf_command()
                .args([
                    "demo",
                    "--clients",
                    "100",
                    "--json",
                    "--database",
                    &url,
                    "--dir",
                ])
                .arg(&demo)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["clients"], 100);
    // Every client pushed; a late notice can send one again (the depot
    // answers a revision it holds without writing it: see the replica
    // tests for the write counts), so this is a floor, not an equality.
    let pushes =
        summary["pushes_new"].as_u64().unwrap() + summary["pushes_legacy"].as_u64().unwrap();
    assert!(
        (100..=110).contains(&pushes),
        "{pushes} pushes for 100 clients"
    );
    assert_eq!(summary["reads"], 10);
    assert_eq!(summary["actions_none"], 10);
    assert!(!demo.join("pxeconf.db").exists(), "no SQLite file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_loadtest_run_reports_bulk_on_both_engines() {
    let Some(cluster) = postgres::shared() else {
        return;
    };
    let url = cluster.fresh_database().await;
    let out = tokio::task::spawn_blocking(move || {
        pxeconf_command()
            .args(["loadtest", "--scenario", "bulk", "--clients", "300"])
            .args(["--depots", "2", "--legacy-depots", "1", "--json"])
            .args(["--compare-database", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let delivered = |bulk: &serde_json::Value, path: &str| {
        bulk.as_array()
            .unwrap()
            .iter()
            .find(|b| b["path"] == path)
            .map(|b| b["delivered"].as_u64().unwrap())
    };
    for path in ["new", "legacy"] {
        assert_eq!(delivered(&r["bulk"], path), Some(300), "{r:#}");
        assert_eq!(delivered(&r["compared"]["bulk"], path), Some(300), "{r:#}");
    }
    assert!(
        r["compared"]["store"]
            .as_str()
            .unwrap()
            .starts_with("postgres"),
        "{r:#}"
    );
    assert!(r["ratios"]["compared_over_first"].as_f64().unwrap() > 0.0);
    assert_eq!(r["failures"], serde_json::json!([]), "{r:#}");
}
