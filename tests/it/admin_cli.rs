//! The operator verbs of the real binary (`import`, `set-action`, `status`,
//! `depots`, `pending`) against a real configserver and real depots, checked
//! through their output and through the Admin API.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::common::*;
use pxeconf::proto;
use serde_json::{Value, json};

/// What a run of the binary left.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts success, and that nothing went to stderr (no progress bar in a pipe).
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert_eq!(self.stderr, "", "stderr must stay quiet in a pipe");
        self
    }

    /// Asserts exit status 2 and one line on stderr; returns that line.
    fn failed(self) -> String {
        assert_eq!(self.code, Some(2), "stdout: {}", self.stdout);
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line expected: {}",
            self.stderr
        );
        self.stderr.trim_end().to_owned()
    }

    /// Stdout as JSON, after asserting success.
    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
    }
}

/// Runs `pxeconf ARGS` with exactly the `PXECONF_*` variables in `env`, off the
/// runtime (which keeps serving meanwhile).
async fn run(env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Out {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        // The developer's own settings must not leak into the test.
        let mut child = pxeconf_command()
            .args(&args)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pxeconf");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        let out = child.wait_with_output().expect("run pxeconf");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("pxeconf runner")
}

/// Runs `pxeconf ARGS` against `url` with the admin key.
async fn cli(url: &str, args: &[&str]) -> Out {
    cli_in(url, args, None).await
}

/// Runs `pxeconf ARGS` against `url` with the admin key, `stdin` as its input.
async fn cli_in(url: &str, args: &[&str], stdin: Option<&str>) -> Out {
    run(
        &[("PXECONF_SERVER", url), ("PXECONF_ADMIN_KEY", ADMIN_KEY)],
        args,
        stdin,
    )
    .await
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// The Admin API's view of a client, or its failure.
async fn client_status(
    admin: &mut Admin,
    fqdn: &str,
) -> Result<proto::GetClientStatusResponse, tonic::Status> {
    admin
        .get_client_status(proto::GetClientStatusRequest { fqdn: fqdn.into() })
        .await
        .map(tonic::Response::into_inner)
}

/// The action request of `product` for a client, through the Admin API.
async fn action_of(admin: &mut Admin, fqdn: &str, product: &str) -> Option<String> {
    client_status(admin, fqdn)
        .await
        .unwrap()
        .product_on_clients
        .into_iter()
        .find(|p| p.product_id == product)
        .map(|p| p.action_request)
}

/// Whether `value` is an RFC 3339 time.
fn is_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| humantime::parse_rfc3339(t).is_ok())
}

const SECTIONS: [&str; 8] = [
    "configs",
    "depots",
    "products",
    "product_on_depots",
    "clients",
    "config_states",
    "product_property_states",
    "action_requests",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_the_toml_and_json_examples_lands_in_the_configserver() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let mut admin = server.admin().await;

    let totals = cli(&url, &["import", &example("inventory.toml"), "--json"])
        .await
        .json();
    // The example shows every section; they are sent in dependency order.
    let file: toml::Table =
        toml::from_str(&std::fs::read_to_string(example("inventory.toml")).unwrap()).unwrap();
    let sections = totals["sections"].as_array().unwrap();
    let names: Vec<&str> = sections
        .iter()
        .map(|s| s["section"].as_str().unwrap())
        .collect();
    assert_eq!(names, SECTIONS, "{totals}");
    for s in sections {
        let name = s["section"].as_str().unwrap();
        let in_file = file[name].as_array().unwrap().len();
        assert_eq!(s["items"], in_file, "{name}: {totals}");
    }
    let items: u64 = sections.iter().map(|s| s["items"].as_u64().unwrap()).sum();
    assert!(totals["changed"].as_u64().unwrap() >= items, "{totals}");
    // pc001 (default depot) and lab01 (depot2) have an action request.
    assert_eq!(totals["pushes_queued"], 2, "{totals}");

    let out = cli(&url, &["import", &example("inventory.json")])
        .await
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("SECTION"), "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("clients") && l.contains(" 3 ")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("total")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("rows changed, 2 pushes queued"),
        "{}",
        out.stdout
    );
    // A dry run's table has the real import's columns and total row.
    let dry = cli(&url, &["import", &example("inventory.json"), "--dry-run"])
        .await
        .ok();
    let dry_lines: Vec<&str> = dry.stdout.lines().collect();
    assert_eq!(dry_lines[0], lines[0], "{}", dry.stdout);
    let column = |line: &str| line.split_whitespace().next().unwrap_or("").to_owned();
    assert_eq!(
        dry_lines.iter().map(|l| column(l)).collect::<Vec<_>>()[..dry_lines.len() - 1],
        lines.iter().map(|l| column(l)).collect::<Vec<_>>()[..lines.len() - 1],
        "{}",
        dry.stdout
    );

    // What the Admin API holds now: both files' rows.
    let depots = admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .unwrap()
        .into_inner()
        .depots;
    let endpoints: BTreeSet<(String, String)> =
        depots.into_iter().map(|d| (d.id, d.endpoint)).collect();
    assert_eq!(
        endpoints,
        BTreeSet::from([
            (
                "depot1.example.org".into(),
                "http://depot1.example.org:50051".into()
            ),
            (
                "depot2.example.org".into(),
                "http://depot2.example.org:50051".into()
            ),
        ])
    );
    for (fqdn, ip, depot) in [
        ("pc001.example.org", "10.0.1.1", "depot1.example.org"),
        ("json-pc001.example.org", "10.0.2.1", "depot1.example.org"),
    ] {
        let status = client_status(&mut admin, fqdn).await.unwrap();
        let host = status.host.unwrap();
        assert_eq!(host.ip_address, ip, "{fqdn}");
        assert_eq!(status.depot_id, depot, "{fqdn}: the default depot applies");
        assert_eq!(
            action_of(&mut admin, fqdn, "win10-x64").await.as_deref(),
            Some("setup")
        );
    }
    for fqdn in ["lab01.branch.example.org", "json-lab01.branch.example.org"] {
        let status = client_status(&mut admin, fqdn).await.unwrap();
        assert_eq!(status.depot_id, "depot2.example.org", "{fqdn}");
        assert_eq!(
            action_of(&mut admin, fqdn, "ubuntu-ipxe").await.as_deref(),
            Some("setup")
        );
    }
    for fqdn in ["pc002.example.org", "json-pc002.example.org"] {
        assert!(client_status(&mut admin, fqdn).await.is_ok(), "{fqdn}");
    }

    // Importing again updates in place.
    cli(&url, &["import", &example("inventory.toml")])
        .await
        .ok();
    let depots = cli(&url, &["depots", "--json"]).await.json();
    assert_eq!(depots.as_array().unwrap().len(), 2, "{depots}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_action_for_several_clients_then_status_depots_and_pending() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let (dirs1, dirs2) = (DepotDirs::new(), DepotDirs::new());
    let depot1 = TestDepot::start(linked_depot_config(&dirs1, 1, &url, false)).await;
    let depot2 = TestDepot::start(linked_depot_config(&dirs2, 2, &url, true)).await;
    let mut admin = server.admin().await;
    // Clients 0-2 on the new-path depot, 3-5 on the legacy one.
    seed(
        &mut admin,
        &[(1, depot1.url()), (2, depot2.url())],
        6,
        |n| if n < 3 { 1 } else { 2 },
    )
    .await;

    // Names from the command line and from stdin; a repeated one counts once.
    let done = cli_in(
        &url,
        &[
            "set-action",
            "client0.example.org",
            "client3.example.org",
            "-",
            "--product",
            "win10-x64",
            "--action",
            "setup",
            "--json",
        ],
        Some("client1.example.org\n# a comment\n\n  client4.example.org  \nclient0.example.org\n"),
    )
    .await
    .json();
    assert_eq!(
        done,
        json!({"product": "win10-x64", "action": "setup", "clients": 4,
               "affected": 4, "pushes_queued": 4, "waiting": 0}),
    );
    for n in [0, 1, 3, 4] {
        assert_eq!(
            action_of(&mut admin, &format!("client{n}.example.org"), "win10-x64")
                .await
                .as_deref(),
            Some("setup"),
            "client{n}"
        );
    }
    for n in [2, 5] {
        assert_eq!(status(&mut admin, n).await.product_on_clients.len(), 0);
    }
    let table = cli(
        &url,
        &[
            "set-action",
            "client5.example.org",
            "--product",
            "win10-x64",
            "--action",
            "once",
        ],
    )
    .await
    .ok();
    assert_eq!(
        table.stdout.trim(),
        "once win10-x64 for 1 client: 1 row changed, 1 push queued"
    );

    // Five configs land, two files each.
    wait_for("five configs are written", 20, || async {
        dirs1.files().len() == 4 && dirs2.files().len() == 6
    })
    .await;
    let delivered = |n: u32| {
        let admin = admin.clone();
        async move {
            let mut admin = admin;
            status(&mut admin, n)
                .await
                .deliveries
                .iter()
                .any(|d| d.state == proto::DeliveryState::Delivered as i32)
        }
    };
    wait_for("the deliveries are recorded", 20, || async {
        for n in [0, 1, 3, 4, 5] {
            if !delivered(n).await {
                return false;
            }
        }
        true
    })
    .await;

    for (n, depot, path) in [
        (0, "depot1.example.org", "new"),
        (3, "depot2.example.org", "legacy"),
    ] {
        let s = cli(
            &url,
            &["status", &format!("client{n}.example.org"), "--json"],
        )
        .await
        .json();
        assert_eq!(s["client"], format!("client{n}.example.org"));
        assert_eq!(s["hardware_address"], mac(n));
        assert_eq!(s["system_uuid"], uuid(n));
        assert_eq!(s["depot_id"], depot);
        assert_eq!(s["note"], "");
        assert_eq!(s["products"][0]["product_id"], "win10-x64");
        assert_eq!(s["products"][0]["action_request"], "setup");
        let d = &s["deliveries"][0];
        assert_eq!(s["deliveries"].as_array().unwrap().len(), 1, "{s}");
        assert_eq!(d["depot_id"], depot);
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["operation"], "set");
        assert_eq!(d["path"], path, "{s}");
        assert_eq!(d["revision"], d["delivered_revision"]);
        assert!(
            is_time(&d["updated_at"]) && is_time(&d["delivered_at"]),
            "{s}"
        );
        assert_eq!(d["read_at"], Value::Null);
        assert_eq!(d["next_retry"], Value::Null);
        assert_eq!(d["error"], "");
    }
    let idle = cli(&url, &["status", "client2.example.org", "--json"])
        .await
        .json();
    assert_eq!(idle["note"], "no netboot action request");
    assert_eq!(idle["deliveries"], json!([]));

    let table = cli(&url, &["status", "client3.example.org"])
        .await
        .ok()
        .stdout;
    for expected in [
        "client   client3.example.org",
        "depot    depot2.example.org",
        "PRODUCT",
        "DEPOT",
    ] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("depot2.example.org"))
        .unwrap_or_else(|| panic!("a delivery row in\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..3], ["delivered", "set"], "{row}");
    assert_eq!(cells[4], "legacy", "{row}");

    // Depots: the capability each showed, pushes made, configs held unread.
    let depots = cli(&url, &["depots", "--json"]).await.json();
    let by_id = |id: &str| {
        depots
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {depots}"))
            .clone()
    };
    let (d1, d2) = (by_id("depot1.example.org"), by_id("depot2.example.org"));
    assert_eq!(
        (
            &d1["capability"],
            &d1["reachable"],
            &d1["queued"],
            &d1["delivered"]
        ),
        (&json!("new"), &json!(true), &json!(0), &json!(2)),
        "{d1}"
    );
    assert_eq!(
        (
            &d2["capability"],
            &d2["reachable"],
            &d2["queued"],
            &d2["delivered"]
        ),
        (&json!("legacy"), &json!(true), &json!(0), &json!(3)),
        "{d2}"
    );
    assert_eq!(d1["endpoint"], depot1.url());
    assert_eq!(d1["pushes_new"], 2);
    assert_eq!(d2["pushes_legacy"], 3);
    assert!(is_time(&d1["last_contact"]), "{d1}");
    let table = cli(&url, &["depots"]).await.ok().stdout;
    assert!(table.starts_with("DEPOT"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("depot2.example.org"))
        .unwrap_or_else(|| panic!("depot2 in\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[2..6], ["yes", "legacy", "0", "3"], "{row}");

    // Pending: the configs depot 2 holds unread.
    let pending = cli(
        &url,
        &["pending", "--depot", "depot2.example.org", "--json"],
    )
    .await
    .json();
    let clients: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        clients,
        [
            "client3.example.org",
            "client4.example.org",
            "client5.example.org"
        ]
    );
    for p in pending.as_array().unwrap() {
        assert_eq!(p["depot_id"], "depot2.example.org", "{p}");
        assert_eq!(p["state"], "delivered", "{p}");
        assert_eq!(p["path"], "legacy", "{p}");
    }

    // A TFTP read on depot 1: client 0 is read, its action done, and no longer pending.
    let before_read = SystemTime::now();
    simulate_read(&dirs1.pxe.join(mac_file(0)));
    wait_for("client0's read is reported", 20, || {
        let admin = admin.clone();
        async move {
            let mut admin = admin;
            action_of(&mut admin, "client0.example.org", "win10-x64")
                .await
                .as_deref()
                == Some("none")
        }
    })
    .await;
    let read = cli(&url, &["status", "client0.example.org", "--json"])
        .await
        .json();
    assert_eq!(read["deliveries"][0]["state"], "read", "{read}");
    assert!(is_time(&read["deliveries"][0]["read_at"]), "{read}");
    // The depot's time of the read, then the configserver's of recording it
    // (the CLI shows milliseconds, truncated).
    let time_of = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let recorded = time_of(&read["deliveries"][0]["read_recorded_at"]);
    assert!(
        recorded >= time_of(&read["deliveries"][0]["read_at"])
            && recorded + Duration::from_millis(1) > before_read,
        "{read}"
    );
    let table = cli(&url, &["pending", "--depot", "depot1.example.org"])
        .await
        .ok()
        .stdout;
    assert!(table.starts_with("CLIENT"), "{table}");
    assert!(table.contains("client1.example.org"), "{table}");
    assert!(!table.contains("client0.example.org"), "{table}");
    assert!(table.trim_end().ends_with("1 pending"), "{table}");

    drop((depot1, depot2));
}

/// A depot that refuses the configserver's key is shown unreachable with
/// the error; once the key is right and a push went through it is
/// reachable and the error is gone (it stayed after the recovery before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depots_error_is_shown_while_it_refuses_and_gone_once_it_answers() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &url, false)).await;
    let mut admin = server.admin().await;
    seed(&mut admin, &[(1, depot.url())], 2, |_| 1).await;
    let register = |key: String| proto::UpsertDepotsRequest {
        depots: vec![proto::DepotInfo {
            id: depot_id(1),
            endpoint: depot.url(),
            host_key: key,
            description: "test depot 1".into(),
        }],
    };
    admin.upsert_depots(register("k".repeat(40))).await.unwrap();
    set_actions(&mut admin, 0..1, "setup").await;
    wait_for("the depot refuses the key", 20, || {
        let url = url.clone();
        async move {
            let depots = cli(&url, &["depots", "--json"]).await.json();
            depots[0]["reachable"] == false
                && depots[0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("wrong host key"))
        }
    })
    .await;
    admin.upsert_depots(register(depot_key(1))).await.unwrap();
    set_actions(&mut admin, 1..2, "setup").await;
    wait_for("both configs are on the depot", 30, || {
        let dirs = &dirs;
        async move { (0..2).all(|n| dirs.pxe.join(mac_file(n)).exists()) }
    })
    .await;
    wait_for("the depot is reachable again", 20, || {
        let url = url.clone();
        async move {
            let depots = cli(&url, &["depots", "--json"]).await.json();
            depots[0]["reachable"] == true
        }
    })
    .await;
    let depots = cli(&url, &["depots", "--json"]).await.json();
    assert_eq!(depots[0]["last_error"], "", "{depots}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pages_through_everything_owed_to_an_unreachable_depot() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let mut admin = server.admin().await;
    // Nothing listens on port 1: every push stays owed. 2,500 is three pages.
    seed(&mut admin, &[(1, "http://127.0.0.1:1".into())], 2500, |_| 1).await;
    // Nothing pushed yet: not known to be up, and once the check of what
    // it holds goes unanswered, shown down with that check's error.
    let depots = cli(&url, &["depots", "--json"]).await.json();
    assert_eq!(depots[0]["reachable"], false, "{depots}");
    wait_for("the unanswered check is shown", 20, || {
        let url = url.clone();
        async move {
            let table = cli(&url, &["depots"]).await.ok().stdout;
            let row = table.lines().nth(1).unwrap_or_default().to_owned();
            row.split_whitespace().nth(2) == Some("no") && row.contains("UNAVAILABLE")
        }
    })
    .await;
    assert_eq!(
        set_actions(&mut admin, 0..2500, "setup")
            .await
            .pushes_queued,
        2500
    );

    wait_for("the depot is found unreachable", 20, || {
        let url = url.clone();
        async move {
            let depots = cli(&url, &["depots", "--json"]).await.json();
            depots[0]["reachable"] == false && depots[0]["last_error"] != ""
        }
    })
    .await;
    // That was true before the actions (the unanswered check): the pushes'
    // own failure, with its retry time, comes with the first attempt.
    wait_for("the pushes have failed once", 20, || {
        let url = url.clone();
        async move {
            let pending = cli(
                &url,
                &["pending", "--depot", "depot1.example.org", "--json"],
            )
            .await
            .json();
            pending
                .as_array()
                .is_some_and(|p| p.len() == 2500 && p.iter().all(|p| is_time(&p["next_retry"])))
        }
    })
    .await;
    let table = cli(&url, &["depots"]).await.ok().stdout;
    let row = table.lines().nth(1).unwrap_or_default();
    assert_eq!(row.split_whitespace().nth(2), Some("no"), "{table}");
    let depots = cli(&url, &["depots", "--json"]).await.json();
    assert_eq!(depots[0]["queued"], 2500, "{depots}");
    assert_eq!(depots[0]["delivered"], 0, "{depots}");

    let pending = cli(
        &url,
        &["pending", "--depot", "depot1.example.org", "--json"],
    )
    .await
    .json();
    let pending = pending.as_array().unwrap();
    let clients: BTreeSet<&str> = pending
        .iter()
        .map(|p| p["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(pending.len(), 2500);
    assert_eq!(clients.len(), 2500, "every entry once");
    assert!(clients.contains("client2499.example.org"));
    for p in pending {
        assert_eq!(p["state"], "failed", "{p}");
        assert_ne!(p["error"], "", "{p}");
        assert!(is_time(&p["next_retry"]), "{p}");
    }
    let table = cli(&url, &["pending", "--depot", "DEPOT1.example.org."])
        .await
        .ok()
        .stdout;
    assert!(
        table.trim_end().ends_with("2500 pending"),
        "{}",
        &table[table.len() - 200..]
    );
    assert!(table.lines().nth(1).unwrap().contains("failed"), "{table}");

    let unknown = cli(&url, &["pending", "--depot", "depot9.example.org"])
        .await
        .failed();
    assert_eq!(
        unknown,
        "pxeconf: depot depot9.example.org is not registered (`pxeconf depots` lists them)"
    );
}

/// A section of an import may hold more than one Admin write's 100,000
/// items: a site of 100,000 clients has several config states and netboot
/// product-on-clients per client, and an import cannot be split (a state
/// needs its client in the same import).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_section_may_hold_more_than_one_admin_writes_items() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let mut admin = server.admin().await;
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 100_001;
    let clients: Vec<Value> = (0..N)
        .map(|i| json!({ "id": format!("c{i}.example.org") }))
        .collect();
    let file = dir.path().join("site.json");
    std::fs::write(&file, json!({ "clients": clients }).to_string()).unwrap();
    let totals = cli(&server.url(), &["import", file.to_str().unwrap(), "--json"])
        .await
        .json();
    assert_eq!(totals["changed"], N, "{totals}");
    assert!(
        client_status(&mut admin, &format!("c{}.example.org", N - 1))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_import_is_one_transaction_and_names_a_failure_by_its_index() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let mut admin = server.admin().await;
    let dir = tempfile::tempdir().unwrap();
    // Each file's clients have MACs of their own: a MAC is one client's.
    let clients = |prefix: &str, bad: Option<usize>| -> Value {
        let first = if prefix == "good" { 0 } else { 10_000 };
        let clients: Vec<Value> = (0..1500)
            .map(|i| {
                json!({
                    "id": format!("{prefix}{i}.example.org"),
                    "hardware_address": if Some(i) == bad { "00:11".to_owned() } else { mac(first + i as u32) },
                    "opsi_host_key": format!("{i:032x}"),
                })
            })
            .collect();
        json!({ "clients": clients })
    };

    let good = dir.path().join("good.json");
    std::fs::write(&good, clients("good", None).to_string()).unwrap();
    let totals = cli(&url, &["import", good.to_str().unwrap(), "--json"])
        .await
        .json();
    let sections = totals["sections"].as_array().unwrap();
    for s in sections {
        let expected = match s["section"].as_str().unwrap() {
            "clients" => json!({"section": "clients", "items": 1500, "changed": 1500}),
            other => json!({"section": other, "items": 0, "changed": 0}),
        };
        assert_eq!(*s, expected, "{totals}");
    }
    assert_eq!(totals["changed"], 1500);
    assert!(
        client_status(&mut admin, "good1499.example.org")
            .await
            .is_ok()
    );

    // Item 1200 is bad: the whole file fails as one transaction (it was
    // sent in chunks of 1,000, each its own: the first chunk stayed).
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, clients("bad", Some(1200)).to_string()).unwrap();
    let line = cli(&url, &["import", bad.to_str().unwrap()]).await.failed();
    assert!(
        line.starts_with("pxeconf: INVALID_ARGUMENT: clients[1200].hardware_address"),
        "{line}"
    );
    assert!(line.ends_with("; nothing was imported"), "{line}");
    for fqdn in [
        "bad0.example.org",
        "bad999.example.org",
        "bad1499.example.org",
    ] {
        let missing = client_status(&mut admin, fqdn).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound, "{fqdn}");
    }

    // A file that is not an inventory fails before anything is sent.
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "[[clients]]\nid = \"x.example.org\"\nmac = \"00:11\"\n",
    )
    .unwrap();
    let line = cli(&url, &["import", typo.to_str().unwrap()])
        .await
        .failed();
    assert!(line.contains("unknown field `mac`"), "{line}");
    assert!(line.ends_with("at line 3 column 1"), "{line}");
    assert!(client_status(&mut admin, "x.example.org").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_one_line_with_the_grpc_code_and_exit_2() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let mut admin = server.admin().await;
    seed(&mut admin, &[(1, "http://127.0.0.1:1".into())], 2, |_| 1).await;

    let line = cli(&url, &["status", "ghost.example.org"]).await.failed();
    assert_eq!(
        line,
        "pxeconf: NOT_FOUND: client ghost.example.org does not exist"
    );
    let args = [
        "set-action",
        "client0.example.org",
        "ghost.example.org",
        "--product",
        "win10-x64",
    ];
    let line = cli(&url, &args).await.failed();
    assert_eq!(
        line,
        "pxeconf: NOT_FOUND: client ghost.example.org does not exist"
    );
    // One transaction: client0 was not touched either.
    assert_eq!(
        action_of(&mut admin, "client0.example.org", "win10-x64").await,
        None
    );
    let line = cli(
        &url,
        &[
            "set-action",
            "client0.example.org",
            "--product",
            "win10-x64",
            "--action",
            "reboot",
        ],
    )
    .await
    .failed();
    // Named by the flag the operator typed, not by a wire field.
    assert!(
        line.starts_with("pxeconf: --action: unknown action request "),
        "{line}"
    );
    assert!(line.contains("reboot"), "{line}");
    let line = cli(
        &url,
        &["set-action", "client0.example.org", "--product", "win 10"],
    )
    .await
    .failed();
    assert!(line.starts_with("pxeconf: --product: "), "{line}");
    // An empty list on stdin (a pipeline that matched nothing) is no
    // success of 0 clients.
    let line = cli_in(
        &url,
        &["set-action", "-", "--product", "win10-x64"],
        Some("# nothing\n\n"),
    )
    .await
    .failed();
    assert_eq!(line, "pxeconf: no clients given (an empty list on stdin?)");

    // A client whose depot is not registered: the action is stored (and
    // pushed once the depot is), and the operator is told that nothing went.
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: vec![proto::ConfigState {
                object_id: "client1.example.org".into(),
                config_id: "clientconfig.depot.id".into(),
                values: vec!["depot9.example.org".into()],
            }],
        })
        .await
        .unwrap();
    let out = cli(
        &url,
        &[
            "set-action",
            "client1.example.org",
            "--product",
            "win10-x64",
        ],
    )
    .await
    .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "setup win10-x64 for 1 client: 1 row changed, 0 pushes queued",
            "1 client waits: its depot is not registered or does not have the product, or it has no service address (`pxeconf status CLIENT` says which)",
        ],
        "{}",
        out.stdout
    );
    assert_eq!(
        action_of(&mut admin, "client1.example.org", "win10-x64")
            .await
            .as_deref(),
        Some("setup")
    );

    // Keys: wrong, missing, from a file (by variable or flag), file missing.
    let wrong = run(
        &[("PXECONF_SERVER", &url), ("PXECONF_ADMIN_KEY", "wrong-key")],
        &["depots"],
        None,
    )
    .await
    .failed();
    assert_eq!(
        wrong,
        "pxeconf: UNAUTHENTICATED: wrong host key (the admin key: --key-file, PXECONF_ADMIN_KEY_FILE or PXECONF_ADMIN_KEY)"
    );
    let missing = run(&[("PXECONF_SERVER", &url)], &["depots"], None)
        .await
        .failed();
    assert!(
        missing.starts_with("pxeconf: UNAUTHENTICATED: missing"),
        "{missing}"
    );
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, format!("{ADMIN_KEY}\n")).unwrap();
    let key_path = key_file.to_str().unwrap();
    let by_var = run(
        &[
            ("PXECONF_SERVER", &url),
            ("PXECONF_ADMIN_KEY_FILE", key_path),
        ],
        &["status", "client1.example.org", "--json"],
        None,
    )
    .await
    .json();
    assert_eq!(by_var["client"], "client1.example.org");
    let by_flag = run(
        &[("PXECONF_SERVER", &url)],
        &["depots", "--json", "--key-file", key_path],
        None,
    )
    .await
    .json();
    assert_eq!(by_flag[0]["id"], "depot1.example.org");
    let absent = dir.path().join("absent.key");
    let line = run(
        &[("PXECONF_SERVER", &url)],
        &["depots", "--key-file", absent.to_str().unwrap()],
        None,
    )
    .await
    .failed();
    assert!(
        line.starts_with(&format!("pxeconf: key file {}: ", absent.display())),
        "{line}"
    );

    // No configserver there, or no URL at all.
    let down = run(
        &[("PXECONF_ADMIN_KEY", ADMIN_KEY)],
        &["depots", "--server", "http://127.0.0.1:1"],
        None,
    )
    .await
    .failed();
    assert!(
        down.starts_with("pxeconf: cannot reach the configserver at http://127.0.0.1:1: "),
        "{down}"
    );
    assert!(down.contains("refused"), "{down}");
    let nonsense = cli("nonsense", &["depots"]).await.failed();
    assert_eq!(
        nonsense,
        "pxeconf: --server: \"nonsense\" is not a URL like http://host.example.org:50050"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_prints_every_bad_field_on_its_own_line() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    let inventory = json!({ "clients": [
        {"id": "ok1.example.org", "hardware_address": "00:16:3e:00:00:01"},
        {"id": "bad1.example.org", "hardware_address": "00:16"},
        {"id": "nodomain", "system_uuid": "not-a-uuid"},
    ]});
    std::fs::write(&file, inventory.to_string()).unwrap();
    let out = cli(&url, &["import", file.to_str().unwrap()]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a summary and one line per bad field: {lines:#?}"
    );
    assert!(
        lines[0] == "pxeconf: INVALID_ARGUMENT: 3 invalid fields; nothing was imported",
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("  clients[1].hardware_address: "),
        "{lines:#?}"
    );
    assert!(lines[2].starts_with("  clients[2].id: "), "{lines:#?}");
    assert!(
        lines[3].starts_with("  clients[2].system_uuid: "),
        "{lines:#?}"
    );
    server.stop().await;
}
