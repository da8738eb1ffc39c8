//! The one-time guarantee under faults (docs/RELIABILITY.md): a depot
//! killed with reads unreported, a configserver killed while actions
//! arrive, a configserver database restored from an
//! older copy or replaced by another, the PXE directory deleted and
//! recreated or read-only for a while, a second configserver on one file,
//! a task that ends inside the depot, a depot that has seen a newer
//! revision. Crashes use real processes of the built binary.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::process::{self, Launch, Server, admin_at};
use crate::common::*;
use proto::DeliveryState as S;
use pxeconf::proto;

/// The state of client `n`'s delivery (the first), and its action request.
async fn state_of(admin: &mut Admin, n: u32) -> (S, String) {
    let s = status(admin, n).await;
    let state = s
        .deliveries
        .first()
        .map_or(S::Unspecified, |d| S::try_from(d.state).unwrap());
    let action = s
        .product_on_clients
        .first()
        .map(|p| p.action_request.clone())
        .unwrap_or_default();
    (state, action)
}

/// Waits until every client of `clients` is in `state`.
async fn wait_state(admin: &Admin, clients: std::ops::Range<u32>, state: S, secs: u64) {
    let what = format!("clients {clients:?} are {state:?}");
    wait_for(&what, secs, || {
        let mut admin = admin.clone();
        let clients = clients.clone();
        async move {
            for n in clients {
                if state_of(&mut admin, n).await.0 != state {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

/// Whether client `n`'s two files are in `dir`.
fn holds_client(dir: &DepotDirs, n: u32) -> bool {
    let files = dir.files();
    files.contains(&mac_file(n)) && files.contains(&uuid(n))
}

/// The clients whose files are in `dir`, of `0..max`.
fn held(dir: &DepotDirs, max: u32) -> Vec<u32> {
    (0..max).filter(|n| holds_client(dir, *n)).collect()
}

/// Pushes the configserver made that the depot took (this process's life).
async fn pushes_taken(admin: &mut Admin) -> u64 {
    let depots = depots(admin).await;
    depots.iter().map(|d| d.pushes_new + d.pushes_legacy).sum()
}

/// A configserver and depot 1 as processes, `clients` clients seeded on it.
struct Site {
    root: tempfile::TempDir,
    dirs: DepotDirs,
    cs: Server,
    depot: Server,
}

impl Site {
    async fn start(clients: u32) -> Self {
        Self::start_with(clients, |launch, _| launch).await
    }

    async fn start_with(clients: u32, depot: impl FnOnce(Launch, &DepotDirs) -> Launch) -> Self {
        let root = tempfile::tempdir().unwrap();
        let cs = Server::start(process::configserver(&db(root.path()), root.path())).await;
        let dirs = DepotDirs::new();
        let launch = depot(
            process::depot(1, &dirs, &state_dir(&dirs), &cs.url()),
            &dirs,
        );
        let depot = Server::start(launch).await;
        let mut admin = admin_at(&cs.url()).await;
        seed(&mut admin, &[(1, depot.url())], clients, |_| 1).await;
        Self {
            root,
            dirs,
            cs,
            depot,
        }
    }

    async fn admin(&self) -> Admin {
        admin_at(&self.cs.url()).await
    }

    /// A site whose depot runs as `nobody`, owning everything it touches (a
    /// read-only directory then stops it, as root it would not); `None`
    /// where that cannot be done here — never in CI.
    async fn unprivileged(clients: u32) -> Option<Self> {
        if !as_root("dropping privileges with setpriv")
            || !have_tool("setpriv", "running the depot as an unprivileged user")
        {
            return None;
        }
        let site = Self::start_with(clients, |launch, dirs| {
            give_to_nobody(dirs.root.path());
            unprivileged(launch)
        })
        .await;
        Some(site)
    }
}

fn db(root: &Path) -> std::path::PathBuf {
    root.join("db").join("pxeconf.db")
}

fn state_dir(dirs: &DepotDirs) -> std::path::PathBuf {
    dirs.root.path().join("state")
}

/// 40 configs delivered; the configserver stops; 30 clients read theirs; the
/// depot dies by `signal`; both start again: the 30 reads are recorded, none
/// of the 30 configs comes back, the 10 unread are still there, and the
/// configserver pushes nothing again.
async fn reads_survive_a_depot_death(signal: &str) {
    let site = Site::start(40).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..40, "setup").await;
    wait_state(&admin, 0..40, S::Delivered, 60).await;
    assert_eq!(held(&site.dirs, 40), (0..40).collect::<Vec<_>>());
    let Site {
        root: _root,
        dirs,
        cs,
        depot,
    } = site;
    let cs_again = cs.restart_later();
    cs.terminate().await;
    for n in 0..30 {
        simulate_read(&dirs.pxe.join(mac_file(n)));
    }
    wait_until("the 30 read configs are gone", || {
        held(&dirs, 40) == (30..40).collect::<Vec<_>>()
    })
    .await;
    // Each read is journaled before its files go: the reports cannot land.
    let depot_again = depot.restart_later();
    match signal {
        "KILL" => depot.kill().await,
        _ => {
            let status = depot.terminate().await;
            assert!(status.success(), "a SIGTERM ends cleanly: {status:?}");
        }
    }
    let cs = cs_again.start().await;
    let depot = depot_again.start().await;
    let mut admin = admin_at(&cs.url()).await;
    wait_state(&admin, 0..30, S::Read, 60).await;
    for n in 0..30 {
        assert_eq!(state_of(&mut admin, n).await.1, "none", "client{n}");
    }
    wait_state(&admin, 30..40, S::Delivered, 60).await;
    // Give a wrong re-push every chance to show before looking.
    depot.wait_log("reconciliation done", 60).await;
    assert_eq!(held(&dirs, 40), (30..40).collect::<Vec<_>>());
    assert_eq!(pushes_taken(&mut admin).await, 0, "nothing delivered again");
    for n in 30..40 {
        assert_eq!(state_of(&mut admin, n).await.1, "setup");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_depot_loses_no_read_and_rearms_nothing() {
    reads_survive_a_depot_death("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_depot_keeps_the_reads_it_could_not_send() {
    reads_survive_a_depot_death("TERM").await;
}

/// A TCP proxy to `target` that can be cut — every connection through it
/// closed, new ones closed as they come, as in a network partition — and
/// mended; or made to forget the connections through it, as a stateful
/// firewall does whose state timed out: their bytes go nowhere and neither
/// end is told, while new connections pass.
struct Link {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    forgot: tokio::sync::watch::Sender<u64>,
}

impl Link {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let (forgot, forgotten) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue;
                }
                let mut watch = watch.clone();
                let mut forgotten = forgotten.clone();
                let born = *forgotten.borrow();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let forgot = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = watch.wait_for(|cut| *cut) => false,
                        _ = forgotten.wait_for(|g| *g > born) => true,
                    };
                    if forgot {
                        // Both sockets stay open and nothing passes, until
                        // a cut closes them.
                        let _ = watch.wait_for(|cut| *cut).await;
                    }
                });
            }
        });
        Self { addr, cut, forgot }
    }

    fn forget(&self) {
        self.forgot.send_modify(|g| *g += 1);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn mend(&self) {
        self.cut.send_replace(false);
    }
}

/// 40 configs delivered; the depot's link to the configserver is cut (the
/// configserver runs on: it checks nothing, pushes nothing) and the 40
/// clients read theirs; the link stays cut 13 s — long enough for a
/// report's own backoff to have grown past 12 s — and is mended: every read
/// is recorded within seconds (while none answers, one report tries
/// at a time, at most 5 s apart, and the others go when it gets through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_made_while_the_configserver_is_cut_off_are_recorded_soon_after() {
    let root = tempfile::tempdir().unwrap();
    let cs = Server::start(process::configserver(&db(root.path()), root.path())).await;
    let link = Link::start(cs.url().trim_start_matches("http://").parse().unwrap()).await;
    let dirs = DepotDirs::new();
    let _depot = Server::start(process::depot(1, &dirs, &state_dir(&dirs), &link.url())).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, _depot.url())], 40, |_| 1).await;
    set_actions(&mut admin, 0..40, "setup").await;
    wait_state(&admin, 0..40, S::Delivered, 60).await;
    link.cut();
    for n in 0..40 {
        simulate_read(&dirs.pxe.join(mac_file(n)));
    }
    wait_until("the read configs are gone", || held(&dirs, 40).is_empty()).await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    link.mend();
    let mended = std::time::Instant::now();
    wait_state(&admin, 0..40, S::Read, 60).await;
    let took = mended.elapsed();
    eprintln!("the reads were recorded {took:?} after the link was mended");
    assert!(
        took < Duration::from_secs(10),
        "the reads were recorded {took:?} after the link was mended"
    );
}

/// A stateful firewall on both links between the configserver and a depot
/// forgets their connections (its state timed out, or it restarted): bytes
/// on them go nowhere and neither end is told; new connections pass. A read
/// made and an action set just then are recorded and delivered within
/// seconds: with a call in flight, an HTTP/2 ping 10 s after the last frame
/// read finds a dead connection within 20 s and the calls go on a new one.
/// Before, that ping went 30 s after the last frame: a read report waited
/// out its 30 s deadline and then hung again on the same connection, a
/// push did so three times (10 s each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_a_firewall_forgot_are_found_dead_and_replaced() {
    let root = tempfile::tempdir().unwrap();
    let cs = Server::start(process::configserver(&db(root.path()), root.path())).await;
    let up = Link::start(cs.url().trim_start_matches("http://").parse().unwrap()).await;
    let dirs = DepotDirs::new();
    let depot = Server::start(process::depot(1, &dirs, &state_dir(&dirs), &up.url())).await;
    let down = Link::start(depot.url().trim_start_matches("http://").parse().unwrap()).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, down.url())], 3, |_| 1).await;
    set_actions(&mut admin, 0..2, "setup").await;
    wait_state(&admin, 0..2, S::Delivered, 60).await;
    // Both links carry a connection in use.
    simulate_read(&dirs.pxe.join(mac_file(0)));
    wait_state(&admin, 0..1, S::Read, 60).await;
    up.forget();
    down.forget();
    let forgot = std::time::Instant::now();
    simulate_read(&dirs.pxe.join(mac_file(1)));
    set_actions(&mut admin, 2..3, "setup").await;
    let (read, pushed) = tokio::join!(
        async {
            wait_state(&admin, 1..2, S::Read, 90).await;
            forgot.elapsed()
        },
        async {
            wait_state(&admin, 2..3, S::Delivered, 90).await;
            forgot.elapsed()
        }
    );
    eprintln!("after the firewall forgot: read recorded in {read:?}, push delivered in {pushed:?}");
    let bound = Duration::from_secs(27);
    assert!(read < bound, "the read was recorded {read:?} after");
    assert!(pushed < bound, "the push was delivered {pushed:?} after");
}

/// Copies the database files (the SQLite file, its WAL and shared memory,
/// whichever exist) of `from` to `to`, removing those `from` lacks.
fn copy_database(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let source = format!("{}{suffix}", from.display());
        let target = format!("{}{suffix}", to.display());
        if Path::new(&source).exists() {
            std::fs::copy(&source, &target).unwrap();
        } else {
            let _ = std::fs::remove_file(&target);
        }
    }
}

/// A restore from an older backup: actions set afterwards all land (even
/// for clients whose lost revisions the depot has seen), actions already
/// read are recorded as read and not pushed again, what the restored store
/// does not want any more is removed, and nothing shows delivered that the
/// depot does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_from_an_older_copy_rearms_nothing_and_drops_nothing_new() {
    let site = Site::start(30).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..10, "setup").await;
    wait_state(&admin, 0..10, S::Delivered, 60).await;
    let Site {
        root,
        dirs,
        cs,
        depot: _depot,
    } = site;
    let backup = root.path().join("backup").join("pxeconf.db");
    let again = cs.restart_later();
    cs.terminate().await;
    copy_database(&db(root.path()), &backup);
    let cs = again.start().await;
    let mut admin = admin_at(&cs.url()).await;
    // After the backup: five clients read theirs, ten more get an action.
    for n in 0..5 {
        simulate_read(&dirs.pxe.join(uuid(n)));
    }
    wait_state(&admin, 0..5, S::Read, 60).await;
    set_actions(&mut admin, 10..20, "setup").await;
    wait_state(&admin, 10..20, S::Delivered, 60).await;
    let again = cs.restart_later();
    cs.terminate().await;

    copy_database(&backup, &db(root.path()));
    let cs = again.start().await;
    let mut admin = admin_at(&cs.url()).await;
    // Set after the restore: clients the depot holds lost revisions of, and
    // new ones.
    set_actions(&mut admin, (10..15).chain(20..30), "setup").await;
    let wanted: Vec<u32> = (5..15).chain(20..30).collect();
    wait_for("the depot holds what the restored store wants", 60, || {
        let dirs = &dirs;
        let wanted = wanted.clone();
        async move { held(dirs, 30) == wanted }
    })
    .await;
    wait_state(&admin, 0..5, S::Read, 60).await;
    wait_state(&admin, 5..15, S::Delivered, 60).await;
    wait_state(&admin, 20..30, S::Delivered, 60).await;
    for n in 0..5 {
        assert_eq!(
            state_of(&mut admin, n).await.1,
            "none",
            "client{n} was read"
        );
    }
    // The lost actions' clients: nothing shown delivered, nothing held.
    for n in 15..20 {
        let (state, _) = state_of(&mut admin, n).await;
        assert_ne!(state, S::Delivered, "client{n}");
        assert!(!holds_client(&dirs, n), "client{n}");
    }
}

/// The configserver SIGKILLed while single actions arrive one after the
/// other (each its own transaction on the store's writer, its push result
/// recorded by another): after its restart every action it acknowledged is
/// there, set, and delivered to the depot; no later one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_configserver_keeps_every_action_it_acknowledged() {
    const CLIENTS: u32 = 400;
    let site = Site::start(CLIENTS).await;
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writer = {
        let (mut admin, acknowledged) = (site.admin().await, acknowledged.clone());
        tokio::spawn(async move {
            for n in 0..CLIENTS {
                let request = proto::SetActionRequestsRequest {
                    action_requests: vec![proto::ActionRequest {
                        client_id: format!("client{n}.example.org"),
                        product_id: "win10-x64".into(),
                        action_request: "setup".into(),
                    }],
                };
                if admin.set_action_requests(request).await.is_err() {
                    break;
                }
                acknowledged.store(n + 1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    wait_until("a quarter of the actions are acknowledged", || {
        acknowledged.load(std::sync::atomic::Ordering::SeqCst) >= CLIENTS / 4
    })
    .await;
    let Site {
        root: _root,
        dirs,
        cs,
        depot: _depot,
    } = site;
    let again = cs.restart_later();
    cs.kill().await;
    writer.await.unwrap();
    let acked = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked < CLIENTS, "the kill came after the last action");
    let cs = again.start().await;
    let mut admin = admin_at(&cs.url()).await;
    wait_state(&admin, 0..acked, S::Delivered, 120).await;
    for n in 0..acked {
        assert_eq!(state_of(&mut admin, n).await.1, "setup", "client{n}");
        assert!(holds_client(&dirs, n), "client{n}");
    }
    // Nothing past the one call the kill may have cut short.
    let holding = held(&dirs, CLIENTS);
    assert!(
        holding.iter().all(|&n| n <= acked),
        "{holding:?} after {acked}"
    );
}

/// `cs` stopped and started again on a new database under `root`.
async fn on_another_database(cs: Server, root: &Path) -> Server {
    let mut launch = cs.restart_later();
    cs.terminate().await;
    let other = root.join("other").join("pxeconf.db");
    let at = launch.args.iter().position(|a| a == "--database").unwrap();
    launch.args[at + 1] = other.display().to_string();
    launch.start().await
}

/// Another database (a new epoch): the depot converges to what the new
/// store owes and drops what it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_database_makes_the_depot_converge_to_what_it_owes() {
    let site = Site::start(10).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..10, "setup").await;
    wait_state(&admin, 0..10, S::Delivered, 60).await;
    let Site {
        root,
        dirs,
        cs,
        depot,
    } = site;
    let cs = on_another_database(cs, root.path()).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, depot.url())], 15, |_| 1).await;
    set_actions(&mut admin, 5..15, "setup").await;
    wait_for(
        "the depot holds exactly what the new store owes",
        60,
        || {
            let dirs = &dirs;
            async move { held(dirs, 15) == (5..15).collect::<Vec<_>>() }
        },
    )
    .await;
    wait_state(&admin, 5..15, S::Delivered, 60).await;
    // What the new store does not owe goes either way: dropped by the
    // depot's reconciliation with the new epoch, or removed by the new
    // configserver's check of what the depot holds, whichever comes first
    // (a CI run on a loaded machine had the check first, and no "dropped"
    // line: `configs_a_different_database_does_not_owe_go_once_they_can`
    // covers the depot's own path).
}

/// Another database, and the configs it does not owe cannot be removed
/// (a read-only directory when the depot reconciles with it): the
/// reconciliation is not done until they are gone — once the directory is
/// writable again they go, with no new epoch or restart to prompt it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_a_different_database_does_not_owe_go_once_they_can() {
    let Some(site) = Site::unprivileged(4).await else {
        return;
    };
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..4, "setup").await;
    wait_state(&admin, 0..4, S::Delivered, 60).await;
    let Site {
        root,
        dirs,
        cs,
        depot,
    } = site;
    // The depot stops; the configserver comes back on a new database that
    // knows the depot and none of its clients (so it owes no removal either).
    let (depot_again, depot_url) = (depot.restart_later(), depot.url());
    depot.kill().await;
    let cs = on_another_database(cs, root.path()).await;
    let mut admin = admin_at(&cs.url()).await;
    seed(&mut admin, &[(1, depot_url)], 0, |_| 1).await;

    // The depot starts again and reconciles with it; nothing can go.
    std::fs::set_permissions(&dirs.pxe, std::fs::Permissions::from_mode(0o555)).unwrap();
    let depot = depot_again.start().await;
    // Two passes fail (the first one's drop also moves the depot to the
    // new epoch, which asks for one more): afterwards only a retry of its
    // own brings another.
    wait_until("two passes failed to drop the four configs", || {
        depot.log().matches("PXE config not removed").count() >= 8
    })
    .await;
    assert_eq!(held(&dirs, 4), (0..4).collect::<Vec<_>>());

    std::fs::set_permissions(&dirs.pxe, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_for("the configs nobody owes are gone", 60, || {
        let dirs = &dirs;
        async move { held(dirs, 4).is_empty() }
    })
    .await;
    depot.wait_log("could not be removed yet", 30).await;
}

/// Runs `sql` on the SQLite database at `path`, from outside the
/// configserver.
async fn sqlite(path: &Path, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A trigger `name` that makes the store refuse (not busy: a constraint)
/// the delivery results of the push rows matching `condition`.
async fn refuse_deliveries(database: &Path, name: &str, condition: &str) {
    let sql = format!(
        "CREATE TRIGGER {name} BEFORE UPDATE OF delivered_revision ON pushes
         WHEN NEW.delivered_revision > OLD.delivered_revision AND ({condition})
         BEGIN SELECT RAISE(ABORT, 'a result this store refuses'); END"
    );
    sqlite(database, &sql).await;
}

/// A configserver that could not read what a depot is owed when it started
/// asks again until it can: the pushes owed before the start are sent (the
/// check of the depot's holdings leaves owed pushes to that asking, and
/// SQLite has no periodic reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_owed_at_a_start_that_could_not_read_them_are_sent_once_it_can() {
    let site = Site::start(3).await;
    let Site {
        root,
        dirs,
        cs,
        depot,
    } = site;
    let depot_again = depot.restart_later();
    depot.terminate().await;
    let mut admin = admin_at(&cs.url()).await;
    set_actions(&mut admin, 0..3, "setup").await;
    let cs_again = cs.restart_later();
    cs.terminate().await;

    // The outbox cannot be read when the configserver starts.
    let database = db(root.path());
    sqlite(&database, "ALTER TABLE pushes RENAME TO pushes_away").await;
    let cs = cs_again.start().await;
    cs.wait_log("loading owed pushes failed", 30).await;
    sqlite(&database, "ALTER TABLE pushes_away RENAME TO pushes").await;

    let _depot = depot_again.start().await;
    let admin = admin_at(&cs.url()).await;
    wait_state(&admin, 0..3, S::Delivered, 60).await;
    assert_eq!(held(&dirs, 3), vec![0, 1, 2]);
}

/// A site of two clients whose store refuses client0's delivery result for
/// good (a trigger), client0's action set.
async fn refusing_client0() -> (Site, Admin) {
    let site = Site::start(2).await;
    refuse_deliveries(
        &db(site.root.path()),
        "refuse_one",
        "NEW.client_id = 'client0.example.org'",
    )
    .await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..1, "setup").await;
    (site, admin)
}

/// Sets client1's action and waits until its result is recorded, which
/// drops client0's refused one; how long client1 took.
async fn client1_recorded_client0_dropped(site: &Site, admin: &mut Admin) -> Duration {
    let start = std::time::Instant::now();
    set_actions(admin, 1..2, "setup").await;
    wait_state(admin, 1..2, S::Delivered, 30).await;
    let took = start.elapsed();
    site.cs
        .wait_log("the store refuses this push result", 10)
        .await;
    assert_ne!(state_of(admin, 0).await.0, S::Delivered);
    took
}

/// A push result the store refuses for good (here a trigger refuses one
/// client's delivery) is dropped after a few tries, logged; the results
/// after it are recorded — before, the ack writer retried that batch for
/// good and no later delivery of any depot was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_result_the_store_refuses_for_good_holds_up_no_other() {
    let (site, mut admin) = refusing_client0().await;
    wait_until("client0's config is on the depot", || {
        holds_client(&site.dirs, 0)
    })
    .await;
    client1_recorded_client0_dropped(&site, &mut admin).await;
}

/// A result refused for good that is alone in the ack writer is told apart
/// from a store refusing everything only once another result joins it: one
/// arriving during a long wait between tries cuts the wait short. Before,
/// a later delivery waited out the rest of it (6.4 s after the seventh
/// refusal, up to 10 s after that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_arriving_beside_a_lone_refused_one_is_recorded_within_a_second_or_so() {
    let (site, mut admin) = refusing_client0().await;
    // Seven refusals: the writer now waits 6.4 s before its next try.
    wait_for("client0's result was refused seven times", 60, || async {
        site.cs
            .log()
            .matches("recording push results failed")
            .count()
            >= 7
    })
    .await;
    let took = client1_recorded_client0_dropped(&site, &mut admin).await;
    assert!(
        took < Duration::from_secs(4),
        "client1's result took {took:?} to be recorded"
    );
}

/// A store that refuses every push result for a while (here a trigger)
/// is not one refusing some for good: nothing is dropped, and every result
/// is recorded once it takes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_every_push_result_for_a_while_drops_none() {
    let site = Site::start(3).await;
    let database = db(site.root.path());
    refuse_deliveries(&database, "refuse_all", "1").await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..3, "setup").await;
    wait_until("the three configs are on the depot", || {
        (0..3).all(|n| holds_client(&site.dirs, n))
    })
    .await;
    // Three refusals of the batch, then it is tried a result at a time.
    wait_until("the results were tried one at a time", || {
        site.cs
            .log()
            .matches("recording push results failed")
            .count()
            >= 5
    })
    .await;
    sqlite(&database, "DROP TRIGGER refuse_all").await;
    wait_state(&admin, 0..3, S::Delivered, 30).await;
    assert!(!site.cs.log().contains("the store refuses this push result"));
}

/// A held config's file that cannot be written when the depot starts (a
/// non-empty directory at its name, as a full or read-only directory would
/// refuse it) no longer keeps the depot from starting: it starts, serves
/// the other configs (a read of one is reported), and writes the file at a
/// sweep once it can. Before, start-up failed as a whole, and a restarted
/// depot saw no read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_file_that_cannot_be_written_at_start_up_is_written_once_it_can() {
    let mut site = Site::start(2).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..2, "setup").await;
    wait_state(&admin, 0..2, S::Delivered, 60).await;
    let again = site.depot.restart_later();
    site.depot.terminate().await;
    // Not peeked at: a look at a file (one inode with its other name)
    // counts as a read at the next start.
    let blocked = site.dirs.pxe.join(mac_file(1));
    std::fs::remove_file(&blocked).unwrap();
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("x"), "x").unwrap();
    site.depot = again.start().await;
    site.depot
        .wait_log("held PXE config files could not be written again", 30)
        .await;
    simulate_read(&site.dirs.pxe.join(mac_file(0)));
    wait_state(&admin, 0..1, S::Read, 30).await;
    std::fs::remove_dir_all(&blocked).unwrap();
    wait_until("client 1's file is written again", || blocked.is_file()).await;
    assert!(peek(&blocked).contains("client1.example.org"));
    assert_ne!(state_of(&mut admin, 1).await.0, S::Read);
}

/// The PXE directory deleted and recreated while the depot runs: its
/// configs are written again from the journal, and reads are seen again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_pxe_directory_gets_its_configs_back_and_reads_are_seen() {
    let site = Site::start(6).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..6, "setup").await;
    wait_state(&admin, 0..6, S::Delivered, 60).await;
    let pxe = &site.dirs.pxe;
    let before = peek(&pxe.join(mac_file(1)));
    std::fs::remove_dir_all(pxe).unwrap();
    std::fs::create_dir(pxe).unwrap();
    std::fs::set_permissions(pxe, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_for("the held configs are written again", 30, || async {
        held(&site.dirs, 6) == (0..6).collect::<Vec<_>>()
    })
    .await;
    assert_eq!(peek(&pxe.join(mac_file(1))), before);
    simulate_read(&pxe.join(mac_file(1)));
    wait_state(&admin, 1..2, S::Read, 30).await;
    assert_eq!(state_of(&mut admin, 1).await.1, "none");
    wait_until("client 1's files are gone", || !holds_client(&site.dirs, 1)).await;
    let mut health = health_client(&site.depot.url()).await;
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "pxeconf.v1.Depot".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// A health client of the server at `url`.
async fn health_client(
    url: &str,
) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
}

/// Runs as `nobody`, so that directory modes apply (root ignores them).
fn unprivileged(launch: Launch) -> Launch {
    Launch {
        prefix: [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
        .map(String::from)
        .to_vec(),
        ..launch
    }
}

/// A depot that cannot give its files the configured group (not root, not
/// in the group, the directory not setgid to it) does not start: one line
/// naming `file_group`, found by trying it on a file of its own. It
/// started, and every write then failed EPERM and was retried for good.
#[test]
fn a_file_group_the_depot_cannot_give_is_refused_at_start() {
    if !as_root("dropping privileges with setpriv")
        || !have_tool("setpriv", "running the depot as an unprivileged user")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pxe_dir = dir.path().join("pxe");
    std::fs::create_dir(&pxe_dir).unwrap();
    give_to_nobody(dir.path());
    let pxe = pxe_dir.display().to_string();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_pxeconf"))
        .args([
            "depot",
            "--depot-id",
            "d.example.org",
            "--listen",
            "127.0.0.1:0",
            "--pxe-dir",
            &pxe,
            "--file-group",
            "root",
        ])
        .env_remove("PXECONF_FILE_GROUP")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("gRPC listening"), "{stderr}");
    assert_eq!(
        lines[1],
        format!(
            "pxeconf: file_group: files in {pxe} cannot be given group 0 (Operation not permitted (os error 1)): run the depot as a member of the group (systemd: SupplementaryGroups=), or make the directory setgid to it"
        )
    );
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&pxe_dir).unwrap().count(), 0);
}

/// Gives `path` (recursively) to `nobody`.
fn give_to_nobody(path: &Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534", &path.display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A read-only PXE directory: a read whose files cannot be deleted is
/// defused (the second boot boots locally) and shown read with its files
/// present; a push is refused meanwhile. Once writable again the files go
/// and the refused push lands within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_directory_defuses_the_read_and_recovers() {
    let Some(site) = Site::unprivileged(3).await else {
        return;
    };
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..2, "setup").await;
    wait_state(&admin, 0..2, S::Delivered, 60).await;
    let pxe = &site.dirs.pxe;
    std::fs::set_permissions(pxe, std::fs::Permissions::from_mode(0o555)).unwrap();

    // The read: the delete fails, the files boot locally now.
    simulate_read(&pxe.join(mac_file(0)));
    wait_for("the read is recorded with its files present", 30, || {
        let mut admin = admin.clone();
        async move {
            let s = status(&mut admin, 0).await;
            s.deliveries[0].state == S::Read as i32 && s.deliveries[0].read_file_present
        }
    })
    .await;
    assert_eq!(state_of(&mut admin, 0).await.1, "none");
    let defused = peek(&pxe.join(mac_file(0)));
    // The site's templates are grub (opsi 4.3's default): its local boot is `exit`.
    assert!(defused.lines().any(|l| l.trim() == "exit"), "{defused}");
    assert!(!defused.contains("hn=client0"), "{defused}");
    // A second boot reads it again: nothing happens, no action is re-armed.
    simulate_read(&pxe.join(uuid(0)));
    // A push meanwhile is refused: the directory is read-only.
    set_actions(&mut admin, 2..3, "setup").await;
    wait_for("the push is refused", 30, || {
        let mut admin = admin.clone();
        async move { state_of(&mut admin, 2).await.0 == S::Failed }
    })
    .await;

    std::fs::set_permissions(pxe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let writable = std::time::Instant::now();
    wait_state(&admin, 2..3, S::Delivered, 30).await;
    assert!(writable.elapsed() < Duration::from_secs(30));
    wait_until("the read files are deleted at last", || {
        !holds_client(&site.dirs, 0)
    })
    .await;
    wait_for("the read's files show gone", 30, || {
        let mut admin = admin.clone();
        async move { !status(&mut admin, 0).await.deliveries[0].read_file_present }
    })
    .await;
    assert_eq!(state_of(&mut admin, 0).await, (S::Read, "none".to_owned()));
    assert!(holds_client(&site.dirs, 1) && holds_client(&site.dirs, 2));
}

/// The depot dies after journaling a read and before it could defuse the
/// files it could not delete (a read-only directory): they are still the
/// armed config, which the journal no longer holds. At its next start the
/// depot cannot remove them either, and overwrites them to boot locally —
/// a second boot must not run the action again — and removes them once it
/// can, while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_config_the_journal_dropped_boots_locally_when_it_cannot_be_removed() {
    let Some(site) = Site::unprivileged(2).await else {
        return;
    };
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..2, "setup").await;
    wait_state(&admin, 0..2, S::Delivered, 60).await;
    let pxe = site.dirs.pxe.clone();
    let names = [mac_file(0), uuid(0)];
    let armed: Vec<String> = names.iter().map(|n| peek(&pxe.join(n))).collect();
    assert!(armed.iter().all(|a| a.contains("hn=client0")), "{armed:?}");
    simulate_read(&pxe.join(&names[0]));
    wait_until("client 0's read files are gone", || {
        !holds_client(&site.dirs, 0)
    })
    .await;
    wait_state(&admin, 0..1, S::Read, 30).await;

    // The window: the read is journaled, the files are still there, armed.
    let Site {
        root: _root,
        dirs,
        cs: _cs,
        depot,
    } = site;
    let depot_again = depot.restart_later();
    depot.kill().await;
    for (name, content) in names.iter().zip(&armed) {
        std::fs::write(pxe.join(name), content).unwrap();
    }
    give_to_nobody(&pxe);
    std::fs::set_permissions(&pxe, std::fs::Permissions::from_mode(0o555)).unwrap();

    let depot = depot_again.start().await;
    depot.wait_log("of this depot could", 30).await;
    for name in &names {
        let now = peek(&pxe.join(name));
        assert!(
            !now.contains("hn=client0"),
            "{name} still boots the action: {now}"
        );
        // The site's templates are grub: its local boot is `exit`.
        assert!(now.lines().any(|l| l.trim() == "exit"), "{name}: {now}");
    }
    // Client 1's config is still held and armed.
    assert!(peek(&pxe.join(mac_file(1))).contains("hn=client1"));
    assert_eq!(state_of(&mut admin, 0).await, (S::Read, "none".to_owned()));

    // Once the directory is writable again the running depot removes them,
    // and only them.
    std::fs::set_permissions(&pxe, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until("the defused leftovers are gone", || {
        names.iter().all(|n| !pxe.join(n).exists())
    })
    .await;
    depot
        .wait_log("stale files start-up could not remove are gone", 10)
        .await;
    assert!(holds_client(&dirs, 1));
}

/// Delivers `clients`' configs, stops the depot and gives its directories
/// to `nobody`, the configs staying root's: how to start it again as
/// `nobody`.
async fn roots_configs_for_nobody(site: &mut Site, admin: &mut Admin, clients: &[u32]) -> Launch {
    set_actions(admin, clients.iter().copied(), "setup").await;
    for &n in clients {
        wait_state(admin, n..n + 1, S::Delivered, 30).await;
    }
    let again = unprivileged(site.depot.restart_later());
    site.depot.signal("TERM");
    site.depot.wait_exit(60).await;
    give_to_nobody(site.dirs.root.path());
    for &n in clients {
        for name in [mac_file(n), uuid(n)] {
            std::os::unix::fs::chown(site.dirs.pxe.join(name), Some(0), Some(0)).unwrap();
        }
    }
    again
}

/// A depot that does not own its configs (it ran as root before and as
/// `nobody` now): start-up reads each config-like file's first bytes to
/// tell ours, and for another user's file it may not ask the kernel to
/// leave the access time alone (`O_NOATIME`). Its look must not pass for a
/// client's read — an access time past the modification time is how a read
/// while the depot was down is found — and a client's read of such a file
/// while the depot was down must still count. Before, every unread config's
/// look did: its action turned `none` without a boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_of_another_user_are_not_taken_for_read_by_start_ups_look() {
    if !as_root("running the depot as another user than its files'")
        || !have_tool("setpriv", "running the depot as an unprivileged user")
    {
        return;
    }
    let mut site = Site::start(3).await;
    let mut admin = site.admin().await;
    // Clients 0 and 2's configs stay root's; client 2 reads its config
    // while the depot is down.
    let again = roots_configs_for_nobody(&mut site, &mut admin, &[0, 2]).await;
    set_times(&site.dirs.pxe.join(mac_file(2)), 0, 10);
    site.depot = again.start().await;
    wait_state(&admin, 2..3, S::Read, 30).await;
    // Reads are reported in the order seen: a read of client 1 recorded
    // means any read start-up took client 0's look for is recorded too.
    set_actions(&mut admin, [1], "setup").await;
    wait_state(&admin, 1..2, S::Delivered, 30).await;
    simulate_read(&site.dirs.pxe.join(mac_file(1)));
    wait_state(&admin, 1..2, S::Read, 30).await;
    assert_eq!(
        state_of(&mut admin, 0).await,
        (S::Delivered, "setup".to_owned()),
        "client 0 never booted"
    );
    assert!(holds_client(&site.dirs, 0));
}

/// As above, but start-up cannot write the looked-at configs again (the
/// directory is read-only to the depot): their files stay root's, their
/// access times past their modification times by start-up's look alone. The
/// next start must not take that for a client's read either: the look is
/// journaled with the access time it left. Before, the second start turned
/// client 0's action `none` without a boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_at_a_config_start_up_could_not_write_again_is_no_read_at_the_next_start() {
    if !as_root("running the depot as another user than its files'")
        || !have_tool("setpriv", "running the depot as an unprivileged user")
    {
        return;
    }
    let mut site = Site::start(2).await;
    let mut admin = site.admin().await;
    let again = roots_configs_for_nobody(&mut site, &mut admin, &[0, 1]).await;
    let pxe = site.dirs.pxe.clone();
    std::fs::set_permissions(&pxe, std::fs::Permissions::from_mode(0o555)).unwrap();
    site.depot = again.start().await;
    (site.depot)
        .wait_log("held PXE config files could not be written again", 30)
        .await;
    let again = site.depot.restart_later();
    site.depot.terminate().await;
    site.depot = again.start().await;
    // Reads are reported in the order seen: client 1's read recorded means
    // any read the second start took client 0's look for is recorded too.
    simulate_read(&pxe.join(mac_file(1)));
    wait_state(&admin, 1..2, S::Read, 30).await;
    assert_eq!(
        state_of(&mut admin, 0).await,
        (S::Delivered, "setup".to_owned()),
        "client 0 never booted"
    );
    // Writable again: written fresh, the depot's own, still to boot.
    std::fs::set_permissions(&pxe, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until("client 0's config is written again", || {
        std::fs::metadata(pxe.join(mac_file(0)))
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 65534)
    })
    .await;
    assert_eq!(state_of(&mut admin, 0).await.1, "setup");
}

/// Whether the test runs as root, which `what` needs; skipped (with a line
/// saying so) where it does not — never in CI, which runs as root.
fn as_root(what: &str) -> bool {
    if pxeconf::cli::tftp::running_as_root() {
        return true;
    }
    assert!(!in_ci(), "CI runs as root: {what} needs it");
    eprintln!("SKIPPED: {what} needs root");
    false
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount a tmpfs on {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

impl Site {
    /// A site of `clients` whose depot's PXE directory is a 256 KiB tmpfs
    /// (unmount it before the site's directories go), clients 0 and 1
    /// delivered; `None` where mounting cannot be done — never in CI.
    async fn on_a_small_tmpfs(clients: u32) -> Option<(Self, Mount)> {
        if !as_root("mounting a small tmpfs") {
            return None;
        }
        let mut mounted = None;
        let site = Site::start_with(clients, |launch, dirs| {
            mounted = Some(Mount::tmpfs(&dirs.pxe, "size=256k,mode=755"));
            launch
        })
        .await;
        let mut admin = site.admin().await;
        set_actions(&mut admin, 0..2, "setup").await;
        wait_state(&admin, 0..2, S::Delivered, 60).await;
        Some((site, mounted.expect("mounted")))
    }
}

/// Fills the file system of `dir` with a file of zeros; returns it.
fn fill_up(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return filler,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

/// A full file system under the PXE directory: a push fails whole (the
/// depot's INTERNAL, retried) — no config file, no temporary, nothing for
/// a TFTP client to find — and lands once there is space again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pxe_file_system_fails_a_push_whole_and_it_lands_later() {
    let Some((site, mounted)) = Site::on_a_small_tmpfs(3).await else {
        return;
    };
    let mut admin = site.admin().await;
    assert!(holds_client(&site.dirs, 0) && holds_client(&site.dirs, 1));

    // Fill it.
    let filler = fill_up(&site.dirs.pxe);
    set_actions(&mut admin, 2..3, "setup").await;
    wait_for("the push fails", 30, || {
        let mut admin = admin.clone();
        async move { state_of(&mut admin, 2).await.0 == S::Failed }
    })
    .await;
    let files = site.dirs.files();
    assert!(
        !files.contains(&mac_file(2)) && !files.contains(&uuid(2)),
        "nothing of the failed config: {files:?}"
    );
    assert!(
        !files.iter().any(|n| n.starts_with(".pxeconf-tmp")),
        "no temporary left: {files:?}"
    );
    assert!(holds_client(&site.dirs, 0) && holds_client(&site.dirs, 1));

    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    wait_state(&admin, 2..3, S::Delivered, 30).await;
    assert!(freed.elapsed() < Duration::from_secs(30));
    assert!(holds_client(&site.dirs, 2));
    // Unmounted before the site's directories go.
    drop(mounted);
}

/// A depot that lost its state (journal and files) comes back to a full
/// PXE file system: the start-up reconciliation cannot write what the
/// configserver takes for delivered, makes its pass again, and the configs
/// are back once there is room (they were refused for good and nothing
/// pushed them again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_that_cannot_write_is_made_again_once_it_can() {
    let Some((site, mounted)) = Site::on_a_small_tmpfs(2).await else {
        return;
    };
    let Site {
        root: _root,
        dirs,
        cs: _cs,
        depot,
    } = site;
    let depot_again = depot.restart_later();
    depot.kill().await;
    // Its disk replaced: no journal, no config.
    std::fs::remove_dir_all(state_dir(&dirs)).unwrap();
    for name in dirs.files() {
        std::fs::remove_file(dirs.pxe.join(name)).unwrap();
    }
    let filler = fill_up(&dirs.pxe);
    let depot = depot_again.start().await;
    depot.wait_log("the pass is made again", 60).await;
    assert!(held(&dirs, 2).is_empty());
    std::fs::remove_file(&filler).unwrap();
    wait_for("the configs are back", 60, || {
        let dirs = &dirs;
        async move { held(dirs, 2) == vec![0, 1] }
    })
    .await;
    depot.wait_log("reconciliation done", 30).await;
    drop(depot);
    drop(mounted);
}

/// A PXE directory whose links take 20 ms each (strace delays every
/// `linkat` of the depot: a disk under writeback pressure, a network file
/// system): pushes still land; the first round that was slow in place sends
/// the rounds after it to a blocking thread, which the depot says once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pxe_directory_sends_the_writers_rounds_to_a_blocking_thread() {
    if !can_trace() {
        return;
    }
    let site = Site::start_with(6, |launch, _| {
        Launch {
            prefix: [
                "strace",
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-o",
                "/dev/null",
                "-e",
                "trace=linkat",
                "-e",
                "inject=linkat:delay_enter=20000",
                // strace 6.1 leaves its tracee running when it is killed.
                "setpriv",
                "--pdeathsig",
                "KILL",
            ]
            .map(String::from)
            .to_vec(),
            ..launch
        }
        // A round runs in place only beside another runtime thread; a
        // one-CPU machine would give the depot one.
        .env("TOKIO_WORKER_THREADS", "2")
    })
    .await;
    let mut admin = site.admin().await;
    // Before any round: the slow one's pause ends more than 10 s after it.
    let start = std::time::Instant::now();
    // The first round brings the epoch: it is journaled with an fsync, on a
    // blocking thread.
    set_actions(&mut admin, 0..2, "setup").await;
    wait_state(&admin, 0..2, S::Delivered, 60).await;
    const SLOW: &str = "a round's file work was slow";
    set_actions(&mut admin, 2..4, "setup").await;
    wait_state(&admin, 2..4, S::Delivered, 60).await;
    site.depot.wait_log(SLOW, 30).await;
    set_actions(&mut admin, 4..6, "setup").await;
    wait_state(&admin, 4..6, S::Delivered, 60).await;
    assert_eq!(held(&site.dirs, 6), vec![0, 1, 2, 3, 4, 5]);
    let log = site.depot.log();
    // Past the pause a round in place is slow again, as it should be.
    if start.elapsed() >= Duration::from_secs(9) {
        eprintln!("the rounds took 9 s or more: the pause may have run out, not checked");
    } else {
        assert_eq!(
            log.matches(SLOW).count(),
            1,
            "the rounds after the slow one ran on a blocking thread:\n{log}"
        );
    }
}

/// Whether strace can trace a process here (installed, ptrace allowed);
/// in CI it must.
fn can_trace() -> bool {
    if !have_tool("strace", "slowing the depot's file system calls") {
        return false;
    }
    let traced = std::process::Command::new("strace")
        .args(["-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !traced {
        assert!(!in_ci(), "strace cannot trace here (ptrace denied?)");
        eprintln!("SKIPPED: strace cannot trace here (ptrace denied?)");
    }
    traced
}

/// A second configserver on the same database refuses to start, naming the
/// holder's pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_configserver_on_one_database_refuses_naming_the_holder() {
    let root = tempfile::tempdir().unwrap();
    let launch = process::configserver(&db(root.path()), root.path());
    let first = launch.clone().start().await;
    let (status, log) = process::run_to_end(&launch, 60);
    assert_eq!(status.code(), Some(2), "{log}");
    let line = log.lines().last().unwrap();
    assert!(
        line.contains("in use by another configserver")
            && line.contains(&format!("pid {}", first.pid())),
        "{log}"
    );
    // Once the first is gone, the database is free.
    let status = first.terminate().await;
    assert!(status.success());
    launch.start().await.terminate().await;
}

/// A task the depot needs ends (the test hook): health goes NOT_SERVING and
/// the process exits ≠ 0; a panicking task does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_makes_the_depot_not_serving_and_exit_non_zero() {
    for hook in ["watcher", "writer-panic"] {
        let dirs = DepotDirs::new();
        let trigger = dirs.pxe.join(pxeconf::depot::watch::TEST_TRIGGER);
        std::fs::write(&trigger, "").unwrap();
        let launch = process::depot(1, &dirs, &state_dir(&dirs), "http://127.0.0.1:1")
            .env(pxeconf::depot::watch::TEST_HOOK_ENV, hook);
        let mut depot = launch.start().await;
        let mut health = health_client(&depot.url()).await;
        let mut watch = health
            .watch(tonic_health::pb::HealthCheckRequest {
                service: "pxeconf.v1.Depot".into(),
            })
            .await
            .unwrap()
            .into_inner();
        use tonic_health::pb::health_check_response::ServingStatus;
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);
        simulate_read(&trigger);
        let next = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("health changes")
            .unwrap()
            .unwrap();
        assert_eq!(next.status, ServingStatus::NotServing as i32, "{hook}");
        let status = depot.wait_exit(30).await;
        assert_eq!(status.code(), Some(1), "{hook}: {}", depot.log());
        assert!(
            depot.log().contains("a task the service needs failed"),
            "{hook}"
        );
    }
}

/// A revision an hour ahead of the store's sequence, whose revisions are
/// its clock's microseconds (`last_revision` is 0 until the first one is
/// taken: an hour past that is long past).
async fn an_hour_ahead(cs: &TestConfigServer) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    cs.core.store.last_revision().await.unwrap().max(now) + 3_600_000_000
}

/// Pushes client 1's config to `depot` (depot 1) by hand at a revision an
/// hour ahead of `cs`'s sequence, in its epoch; returns the revision.
async fn hold_client1_an_hour_ahead(cs: &TestConfigServer, depot: &TestDepot) -> u64 {
    let future = an_hour_ahead(cs).await;
    let mut pushed = bundle(1, future);
    pushed.epoch = cs.core.store.epoch().to_owned();
    pushed.depot_id = depot_id(1);
    let mut request = tonic::Request::new(pushed);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", depot_key(1)).parse().unwrap(),
    );
    depot.client().await.set_pxe_config(request).await.unwrap();
    future
}

/// A depot that has seen a newer revision than the store gives (a clock
/// that went back): ABORTED NEWER_HELD, never counted delivered; the store
/// moves past it and the config lands with a fresh revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_revision_on_the_depot_moves_the_sequence_past_it() {
    let db = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &cs.url(), false)).await;
    let mut admin = cs.admin().await;
    seed(&mut admin, &[(1, depot.url())], 2, |_| 1).await;
    // The depot holds a revision from the future, in the store's epoch.
    let future = hold_client1_an_hour_ahead(&cs, &depot).await;
    set_actions(&mut admin, 0..2, "setup").await;
    wait_state(&admin, 0..2, S::Delivered, 30).await;
    let delivery = &status(&mut admin, 1).await.deliveries[0];
    assert!(delivery.delivered_revision > future, "{delivery:?}");
    let text = peek(&dirs.pxe.join(mac_file(1)));
    assert!(
        text.contains(&format!("revision {},", delivery.delivered_revision)),
        "{text}"
    );
    // The sequence is past it for everyone now.
    assert!(cs.core.store.last_revision().await.unwrap() > future);
}

/// As above while the store cannot record the move past the depot's
/// revision for a while (a trigger refuses the write, as a full disk or a
/// read-only failover would): the client waits with a growing backoff, and
/// once the store writes again its config lands. Those failures are no
/// refusals by the depot: counted as such, four of them parked the client
/// for good (every later NEWER_HELD was taken for a depot that keeps
/// refusing fresh revisions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_move_past_a_newer_revision_for_a_while_delivers_once_it_can() {
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("pxeconf.db");
    let cs = TestConfigServer::start(&database, 0).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &cs.url(), false)).await;
    let mut admin = cs.admin().await;
    seed(&mut admin, &[(1, depot.url())], 2, |_| 1).await;
    let future = hold_client1_an_hour_ahead(&cs, &depot).await;
    sqlite(
        &database,
        "CREATE TRIGGER refuse_moving_past BEFORE UPDATE OF revision ON pushes
         WHEN NEW.last_error LIKE 'ABORTED%'
         BEGIN SELECT RAISE(ABORT, 'the store cannot write'); END",
    )
    .await;
    set_actions(&mut admin, 0..2, "setup").await;
    let superseded = || {
        cs.metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("pxeconf_pushes_total") && l.contains("result=\"superseded\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_for(
        "four pushes of client 1 came back NEWER_HELD",
        60,
        || async { superseded() >= 4.0 },
    )
    .await;
    sqlite(&database, "DROP TRIGGER refuse_moving_past").await;
    wait_state(&admin, 0..2, S::Delivered, 60).await;
    let delivery = &status(&mut admin, 1).await.deliveries[0];
    assert!(delivery.delivered_revision > future, "{delivery:?}");
}

/// Changes client 0's boot image append line: a newer version of its
/// config, for the same action.
async fn change_client0s_append_line(admin: &mut Admin) {
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: vec![proto::ConfigState {
                object_id: "client0.example.org".into(),
                config_id: "opsi-linux-bootimage.append".into(),
                values: vec!["lang=en".into()],
            }],
        })
        .await
        .unwrap();
}

/// A client reads its config just before a newer version of it lands (its
/// boot image's append line changed since), and the depot hears of the read
/// only after its rename of the newer one — the window of a busy watcher,
/// opened here by the test hook that holds the watcher's events back 3 s.
/// The read was the client's boot of the action: the action becomes `none`
/// and the newer config goes, so the client does not install a second time
/// at its next boot (before, the depot took the read for one of a replaced
/// version and dropped it: the action stayed `setup` with the newer config
/// armed).
#[tokio::test]
async fn a_read_just_before_a_newer_version_lands_consumes_the_action_once() {
    read_just_before_a_newer_version(
        |mut admin| async move { change_client0s_append_line(&mut admin).await },
        |pxe| peek(&pxe.join(mac_file(0))).contains("lang=en"),
    )
    .await;
}

/// A client reads its config through its MAC's name just as its MAC
/// changes (a new network card): the newer version is written under the new
/// MAC's name and the old name deleted, and the depot hears of the read only
/// after that delete (the watcher's events held back 3 s). The read was the
/// client's boot of the action: the action becomes `none` and the newer
/// config goes (before, the read of a name no config held any more was
/// dropped: the action stayed `setup` with the newer config armed).
#[tokio::test]
async fn a_read_of_a_name_a_newer_version_gives_up_consumes_the_action_once() {
    read_just_before_a_newer_version(
        |mut admin| async move {
            let mut host = bundle(0, 0).host.unwrap();
            host.hardware_address = mac(9);
            admin
                .upsert_clients(proto::UpsertClientsRequest {
                    clients: vec![host],
                })
                .await
                .unwrap();
        },
        |pxe| pxe.join(mac_file(9)).exists() && !pxe.join(mac_file(0)).exists(),
    )
    .await;
}

/// Client 0 reads its delivered config through its MAC's name, then
/// `change` makes a newer version land (`landed`, on the PXE directory,
/// says when it is on disk), while the depot's watcher hands its events on
/// 3 s late: the read must consume the action once.
async fn read_just_before_a_newer_version<F: Future<Output = ()>>(
    change: impl FnOnce(Admin) -> F,
    landed: impl Fn(&Path) -> bool,
) {
    let site = Site::start_with(1, |launch, _| {
        launch.env("PXECONF_TEST_WATCH_LAG_MS", "3000")
    })
    .await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, [0], "setup").await;
    wait_state(&admin, 0..1, S::Delivered, 30).await;
    let read_at = std::time::Instant::now();
    simulate_read(&site.dirs.pxe.join(mac_file(0)));
    change(admin.clone()).await;
    wait_until("the newer version is on disk", || landed(&site.dirs.pxe)).await;
    assert!(
        read_at.elapsed() < Duration::from_millis(2500),
        "the newer version landed only as the depot heard of the read: nothing tested"
    );
    wait_for("client0's action is none and its files gone", 20, || {
        let mut admin = admin.clone();
        let dirs = &site.dirs;
        async move { state_of(&mut admin, 0).await.1 == "none" && dirs.files().is_empty() }
    })
    .await;
    let log = site.depot.log();
    assert!(
        log.contains("just before a newer version replaced it"),
        "{log}"
    );
}

/// A depot comes back from an outage and its first answer refuses a push
/// (the product's template, changed meanwhile, is missing there): the depot
/// answered, so it is reachable again — the status says so, and the depot
/// is no longer probed one push at a time (before, only a delivery counted:
/// the depot stayed "unreachable" for as long as its pushes were refused).
#[tokio::test]
async fn a_depot_back_whose_first_answer_is_a_refusal_is_reachable() {
    let site = Site::start(1).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, [0], "setup").await;
    wait_state(&admin, 0..1, S::Delivered, 30).await;
    let depot_again = site.depot.restart_later();
    let Site {
        root: _root,
        dirs: _dirs,
        cs: _cs,
        depot,
    } = site;
    depot.kill().await;
    let reachable = |admin: &Admin| {
        let mut admin = admin.clone();
        async move { depots(&mut admin).await[0].reachable }
    };
    admin
        .upsert_products(proto::UpsertProductsRequest {
            products: vec![win10("missing.tpl".into())],
        })
        .await
        .unwrap();
    wait_for("the depot is seen down", 30, || {
        let admin = admin.clone();
        async move { !reachable(&admin).await }
    })
    .await;
    let _depot = Server::start(depot_again).await;
    wait_for("the depot refused the push", 30, || {
        let mut admin = admin.clone();
        async move {
            let error = status(&mut admin, 0).await.deliveries[0].error.clone();
            error.contains("FAILED_PRECONDITION")
        }
    })
    .await;
    assert!(reachable(&admin).await, "the depot answered: it is up");
}

/// Sets `path`'s access and modification times to `accessed` and
/// `modified` seconds ago.
fn set_times(path: &Path, accessed: u64, modified: u64) {
    let ago = |s| std::time::SystemTime::now() - Duration::from_secs(s);
    let times = std::fs::FileTimes::new()
        .set_accessed(ago(accessed))
        .set_modified(ago(modified));
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_times(times).unwrap();
}

/// Client 0's delivered revision.
async fn delivered_revision(admin: &mut Admin) -> u64 {
    status(admin, 0).await.deliveries[0].delivered_revision
}

/// Client 0's config is delivered and then its newer version after
/// `change`; the depot is SIGKILLed and its files are put back as the older
/// version was — as a kill between journaling the newer version and its
/// rename leaves them — and the client reads the older one through its MAC
/// name while the depot is down.
async fn an_older_version_read_while_down<F: Future<Output = ()>>(
    site: Site,
    admin: &mut Admin,
    change: impl FnOnce(Admin) -> F,
) -> DepotDown {
    set_actions(admin, [0], "setup").await;
    wait_state(admin, 0..1, S::Delivered, 30).await;
    let names = [mac_file(0), uuid(0)];
    let older: Vec<String> = names.iter().map(|n| peek(&site.dirs.pxe.join(n))).collect();
    let first = delivered_revision(admin).await;
    change(admin.clone()).await;
    wait_for("the newer version is delivered", 30, || {
        let mut admin = admin.clone();
        async move { delivered_revision(&mut admin).await > first }
    })
    .await;
    let newer = delivered_revision(admin).await;
    let depot_again = site.depot.restart_later();
    let Site {
        root,
        dirs,
        cs,
        depot,
    } = site;
    depot.kill().await;
    for (name, text) in names.iter().zip(&older) {
        std::fs::write(dirs.pxe.join(name), text).unwrap();
        set_times(&dirs.pxe.join(name), 20, 10);
    }
    set_times(&dirs.pxe.join(&names[0]), 0, 10);
    DepotDown {
        _root: root,
        dirs,
        _cs: cs,
        depot: depot_again,
        newer,
    }
}

/// A site whose depot is down.
struct DepotDown {
    _root: tempfile::TempDir,
    dirs: DepotDirs,
    _cs: Server,
    /// The depot, to start again.
    depot: Launch,
    /// The newer version's revision.
    newer: u64,
}

/// The depot is SIGKILLed after journaling a newer version of a held config
/// and before renaming it into place, and the client reads the older one
/// while the depot is down (its boot image's append line changed since).
/// Start-up writes the newer one over it, and reports the read as the older
/// version's: the action becomes `none` and the newer config goes (before,
/// the rewrite erased the read with the file: the action stayed `setup`,
/// the newer config armed for a second install).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_while_down_of_a_version_start_up_writes_over_is_reported() {
    let site = Site::start(1).await;
    let mut admin = site.admin().await;
    let down = an_older_version_read_while_down(site, &mut admin, |mut admin| async move {
        change_client0s_append_line(&mut admin).await;
    })
    .await;
    let depot = down.depot.start().await;
    wait_for("client0's action is none and its files gone", 30, || {
        let mut admin = admin.clone();
        let dirs = &down.dirs;
        async move { state_of(&mut admin, 0).await.1 == "none" && dirs.files().is_empty() }
    })
    .await;
    let log = depot.log();
    assert!(log.contains("read while the depot was down"), "{log}");
}

/// As above, but the newer version sets another action (`uninstall`) and
/// the directory is read-only at the restart. The older version's read is
/// reported — it booted `setup`, not the action as set now, so it clears
/// nothing — and the older file start-up could not write over is not taken
/// for a read of the newer version (before, the read check after start
/// did: `uninstall` became `none` without booting). Once the directory is
/// writable, the newer version is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_start_up_cannot_write_over_is_no_read_of_the_newer() {
    let Some(site) = Site::unprivileged(1).await else {
        return;
    };
    let mut admin = site.admin().await;
    let down = an_older_version_read_while_down(site, &mut admin, |mut admin| async move {
        set_actions(&mut admin, [0], "uninstall").await;
    })
    .await;
    let pxe = &down.dirs.pxe;
    std::fs::set_permissions(pxe, std::fs::Permissions::from_mode(0o555)).unwrap();
    let depot = down.depot.start().await;
    depot.wait_log("read while the depot was down", 30).await;
    // Give a wrong read every chance to show before looking.
    depot.wait_log("reconciliation done", 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state_of(&mut admin, 0).await.1, "uninstall");
    std::fs::set_permissions(pxe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = format!("revision {},", down.newer);
    wait_until("the newer version is written", || {
        peek(&pxe.join(mac_file(0))).contains(&marker)
    })
    .await;
    assert_eq!(state_of(&mut admin, 0).await.1, "uninstall");
}

/// The figure in docs/RELIABILITY.md (run by hand, it takes a while):
/// `cargo test --release --test it -- --ignored --nocapture sigkill_during_a_bulk`.
/// A depot SIGKILLed while a 5,000-client bulk lands: after its restart
/// every client's config is there once, at the store's revision, and the
/// store shows all delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: 5,000 clients, run by hand"]
async fn sigkill_during_a_bulk() {
    const CLIENTS: u32 = 5_000;
    let site = Site::start(CLIENTS).await;
    let mut admin = site.admin().await;
    let started = std::time::Instant::now();
    set_actions(&mut admin, 0..CLIENTS, "setup").await;
    wait_until("a fifth of the bulk has landed", || {
        site.dirs.files().len() >= (CLIENTS / 5 * 2) as usize
    })
    .await;
    let Site {
        root: _root,
        dirs,
        cs,
        depot,
    } = site;
    let again = depot.restart_later();
    let landed = dirs.files().len() / 2;
    depot.kill().await;
    let killed = started.elapsed();
    let restarted = std::time::Instant::now();
    let _depot = again.start().await;
    let all_delivered = || {
        let mut admin = admin.clone();
        async move {
            let depots = admin
                .list_depots(proto::ListDepotsRequest {})
                .await
                .unwrap()
                .into_inner()
                .depots;
            depots[0].queued == 0 && depots[0].delivered == u64::from(CLIENTS)
        }
    };
    wait_for("every push is delivered", 300, all_delivered).await;
    let converged = restarted.elapsed();
    assert_eq!(dirs.files().len(), 2 * CLIENTS as usize);
    // Each file once, at the revision the store delivered.
    for n in (0..CLIENTS).step_by(97) {
        let delivery = &status(&mut admin, n).await.deliveries[0];
        let text = peek(&dirs.pxe.join(mac_file(n)));
        assert!(
            text.contains(&format!("revision {},", delivery.delivered_revision)),
            "client{n}: {text}"
        );
    }
    eprintln!(
        "SIGKILL after {killed:?} with {landed}/{CLIENTS} landed; {CLIENTS}/{CLIENTS} delivered, converged {converged:?} after the restart (configserver pid {})",
        cs.pid()
    );
}

mod store {
    //! The store's side: revisions from a hybrid clock across a restore,
    //! epochs, and a read accepted from the depot a moved client's config
    //! was pushed to.

    use super::copy_database;
    use pxeconf::configserver::store::*;
    use pxeconf::domain::opsi::DEPOT_ID;
    use pxeconf::domain::{ActionRequest, Endpoint, Fqdn, Mac, ProductId, Secret};

    const D1: &str = "d1.example.org";
    const D2: &str = "d2.example.org";

    fn fqdn(s: &str) -> Fqdn {
        Fqdn::parse(s, "id").unwrap()
    }

    async fn seeded(path: &std::path::Path) -> Store {
        seed(Store::open(path).await.unwrap()).await
    }

    async fn seed(store: Store) -> Store {
        let depot = |id: &str| DepotRecord {
            id: fqdn(id),
            endpoint: Endpoint::parse(&format!("http://{id}:50051"), "e").unwrap(),
            host_key: Secret::new(format!("{id}-key-0123456789abcdef0123456789")),
            description: String::new(),
        };
        store.upsert_depots(&[depot(D1), depot(D2)]).await.unwrap();
        store
            .upsert_products(&[ProductRecord {
                id: ProductId::parse("win", "p").unwrap(),
                product_version: "1".into(),
                package_version: "1".into(),
                template: None,
            }])
            .await
            .unwrap();
        let on = |d: &str| ProductOnDepotRecord {
            depot_id: fqdn(d),
            product_id: ProductId::parse("win", "p").unwrap(),
            product_version: "1".into(),
            package_version: "1".into(),
        };
        store
            .upsert_product_on_depots(&[on(D1), on(D2)])
            .await
            .unwrap();
        store
            .upsert_clients(&[pxeconf::domain::Client {
                fqdn: fqdn("c1.example.org"),
                mac: Some(Mac::parse("02:00:00:00:00:01", "m").unwrap()),
                uuid: None,
                ip_address: String::new(),
                host_key: Secret::new("key"),
            }])
            .await
            .unwrap();
        store
            .upsert_configs(&crate::common::config_defaults(D1))
            .await
            .unwrap();
        store
    }

    async fn setup(store: &Store) -> u64 {
        store
            .set_action_requests(&[ActionRecord {
                client_id: fqdn("c1.example.org"),
                product_id: ProductId::parse("win", "p").unwrap(),
                action: ActionRequest::Setup,
            }])
            .await
            .unwrap();
        store.pushes_of_client("c1.example.org").await.unwrap()[0].revision
    }

    fn now_micros() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    #[tokio::test]
    async fn revisions_never_repeat_after_a_restore_and_a_new_database_is_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pxeconf.db");
        let backup = dir.path().join("backup/pxeconf.db");
        let store = seeded(&db).await;
        let before = now_micros();
        let r1 = setup(&store).await;
        assert!(r1 >= before, "a hybrid clock: {r1} < {before}");
        let epoch = store.epoch().to_owned();
        assert_eq!(epoch.len(), 32, "128 random bits in hex: {epoch}");
        store.close().await;
        copy_database(&db, &backup);
        let store = Store::open(&db).await.unwrap();
        let r2 = setup(&store).await;
        store.close().await;
        copy_database(&backup, &db);
        let restored = Store::open(&db).await.unwrap();
        assert_eq!(restored.epoch(), epoch, "a restored copy keeps its epoch");
        let r3 = setup(&restored).await;
        assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
        // A depot that saw a revision past the sequence moves it on.
        let ahead = r3 + 1_000_000_000;
        assert!(
            !restored
                .observe_revision("another-epoch", ahead)
                .await
                .unwrap()
        );
        assert!(restored.observe_revision(&epoch, ahead).await.unwrap());
        assert!(setup(&restored).await > ahead);
        let other = Store::open(&dir.path().join("other.db")).await.unwrap();
        assert_ne!(other.epoch(), epoch, "a new database is a new epoch");
    }

    /// PostgreSQL fails over to a standby that lost the newest commits — as
    /// if restored from a copy taken before them (`CREATE DATABASE …
    /// TEMPLATE`): the same rule as after a restore, revisions never repeat.
    #[tokio::test]
    async fn revisions_never_repeat_after_a_postgres_failover_that_lost_commits() {
        use sqlx::Connection;
        let Some(cluster) = crate::common::postgres::shared() else {
            return;
        };
        let url = cluster.fresh_database().await;
        let name = url.rsplit('/').next().unwrap().to_owned();
        let admin = || async {
            sqlx::PgConnection::connect(&cluster.url("postgres"))
                .await
                .unwrap()
        };
        let run = |sql: String| async move {
            let mut conn = admin().await;
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        };
        let location = Location::parse(&url);
        let store = seed(Store::connect(&location).await.unwrap()).await;
        let r1 = setup(&store).await;
        let epoch = store.epoch().to_owned();
        store.close().await;
        run(format!("CREATE DATABASE {name}_standby TEMPLATE {name}")).await;
        let store = Store::connect(&location).await.unwrap();
        let r2 = setup(&store).await;
        store.close().await;
        // The failover: the standby, without r2's commit, takes the name.
        run(format!("DROP DATABASE {name} WITH (FORCE)")).await;
        run(format!("ALTER DATABASE {name}_standby RENAME TO {name}")).await;
        let promoted = Store::connect(&location).await.unwrap();
        assert_eq!(promoted.epoch(), epoch, "the standby keeps the epoch");
        let r3 = setup(&promoted).await;
        assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
        // A depot that saw a revision past the sequence moves it on.
        let ahead = r3 + 1_000_000_000;
        assert!(promoted.observe_revision(&epoch, ahead).await.unwrap());
        assert!(setup(&promoted).await > ahead);
        promoted.close().await;
    }

    #[tokio::test]
    async fn a_read_from_the_depot_a_moved_client_was_pushed_to_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = seeded(&dir.path().join("pxeconf.db")).await;
        let r1 = setup(&store).await;
        store
            .record_acks(&[Ack::Delivered {
                client_id: "c1.example.org".into(),
                depot_id: D1.into(),
                revision: r1,
                path: PushPath::New,
                template: None,
            }])
            .await
            .unwrap();
        // The client moves to d2: a removal is owed on d1, a set on d2.
        store
            .upsert_config_states(&[ConfigStateRecord {
                object_id: fqdn("c1.example.org"),
                config_id: DEPOT_ID.into(),
                values: vec![D2.into()],
            }])
            .await
            .unwrap();
        // Meanwhile the client booted d1's config: d1 reports the read.
        let read = store
            .record_read(&ReadReport {
                depot_id: D1.into(),
                client_id: "c1.example.org".into(),
                product_id: "win".into(),
                revision: r1,
                epoch: store.epoch().to_owned(),
                files_present: false,
                read_at: None,
            })
            .await
            .unwrap();
        assert!(read.applied, "{read:?}");
        assert_eq!(read.action_request, "none");
        // d2 must not boot it a second time: its config is removed.
        let rows = store.pushes_of_client("c1.example.org").await.unwrap();
        let d2 = rows.iter().find(|r| r.depot_id == D2).unwrap();
        assert_eq!(d2.op, PushOp::Remove, "{rows:?}");
        // A report from another epoch changes nothing.
        let stale = store
            .record_read(&ReadReport {
                depot_id: D1.into(),
                client_id: "c1.example.org".into(),
                product_id: "win".into(),
                revision: r1,
                epoch: "another-epoch".into(),
                files_present: false,
                read_at: None,
            })
            .await
            .unwrap();
        assert!(!stale.applied);
    }
}

/// SIGTERM turns health NOT_SERVING before the drain: a load balancer or
/// monitor watching it stops sending calls. The watch then ends: it does
/// not hold the drain for the grace period (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_depot_says_not_serving_before_it_drains() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dirs = DepotDirs::new();
    let mut launch = process::depot(1, &dirs, &state_dir(&dirs), "http://127.0.0.1:1");
    let grace = launch
        .args
        .iter()
        .position(|a| a == "--grace-period")
        .unwrap();
    launch.args[grace + 1] = "30s".into();
    let mut depot = launch.start().await;
    let channel = tonic::transport::Endpoint::from_shared(depot.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let status = |m: Option<tonic_health::pb::HealthCheckResponse>| m.map(|m| m.status);
    assert_eq!(
        status(watch.message().await.unwrap()),
        Some(ServingStatus::Serving as i32)
    );
    depot.signal("TERM");
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a status within 10 s")
        .unwrap();
    assert_eq!(status(next), Some(ServingStatus::NotServing as i32));
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch ends with the drain");
    let status = ended.expect_err("ended by the server");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Drained well within the grace period.
    assert!(depot.wait_exit(10).await.success());
}

/// A PXE directory (or state directory) that does not exist is created —
/// and said so, with a warning for the PXE directory: a mistyped one would
/// take every config where no TFTP server looks. A mistyped default
/// template is warned about too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pxe_directory_is_created_with_a_warning() {
    let dirs = DepotDirs::new();
    std::fs::remove_dir_all(&dirs.pxe).unwrap();
    let state = dirs.root.path().join("fresh-state");
    // And a mistyped default template: said at start, not first by the
    // pushes that need it failing.
    let launch = process::depot(1, &dirs, &state, "http://127.0.0.1:1")
        .arg(&["--default-template", "instal-grub-x64"]);
    let depot = Server::start(launch).await;
    wait_until("the depot says what it created", || {
        let log = depot.log();
        log.contains("the PXE directory did not exist and was created")
            && log.contains("the state directory did not exist and was created")
            && log.contains("depot serving")
    })
    .await;
    assert!(dirs.pxe.is_dir() && state.is_dir());
    let log = depot.log();
    let missing: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("default template not found"))
        .collect();
    assert_eq!(missing.len(), 1, "{log}");
    assert!(
        missing[0].contains("instal-grub-x64") && missing[0].contains("BIOS"),
        "{log}"
    );
}
