//! The admin verbs of the real binary against a running configserver.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_pxeconf");

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `pxeconf ARGS` against `server` (off the runtime, which keeps serving).
async fn pxeconf(server: &str, key: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let (server, key) = (server.to_owned(), key.to_owned());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .env("PXECONF_SERVER", server)
            .env("PXECONF_ADMIN_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn json(out: &Out) -> serde_json::Value {
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_toml_and_json_then_status_and_depots() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let url = server.url();

    let out = pxeconf(
        &url,
        ADMIN_KEY,
        &["import", &example("inventory.toml"), "--json"],
        None,
    )
    .await;
    let totals = json(&out);
    assert_eq!(totals["pushes_queued"], 2, "{totals}");
    let out = pxeconf(
        &url,
        ADMIN_KEY,
        &["import", &example("inventory.json")],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("clients") && out.stdout.contains("pushes queued"),
        "{}",
        out.stdout
    );

    let status = json(
        &pxeconf(
            &url,
            ADMIN_KEY,
            &["status", "lab01.branch.example.org", "--json"],
            None,
        )
        .await,
    );
    assert_eq!(status["depot_id"], "depot2.example.org");
    assert_eq!(status["products"][0]["product_id"], "ubuntu-ipxe");
    assert_eq!(status["products"][0]["action_request"], "setup");
    assert_eq!(status["deliveries"][0]["depot_id"], "depot2.example.org");
    assert_eq!(status["deliveries"][0]["operation"], "set");
    let from_json = json(
        &pxeconf(
            &url,
            ADMIN_KEY,
            &["status", "json-pc001.example.org", "--json"],
            None,
        )
        .await,
    );
    assert_eq!(
        from_json["depot_id"], "depot1.example.org",
        "the default depot applies"
    );
    assert_eq!(from_json["hardware_address"], "00:16:3f:10:00:01");

    let table = pxeconf(&url, ADMIN_KEY, &["status", "pc002.example.org"], None).await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(
        table.stdout.contains("note     no netboot action request"),
        "{}",
        table.stdout
    );

    // The example depots do not exist: they show up unreachable once tried.
    wait_for("the example depots are found unreachable", 20, || {
        let url = url.clone();
        async move {
            let depots = json(&pxeconf(&url, ADMIN_KEY, &["depots", "--json"], None).await);
            depots.as_array().unwrap().len() == 2
                && depots.as_array().unwrap().iter().all(|d| {
                    d["reachable"] == false && !d["last_error"].as_str().unwrap().is_empty()
                })
        }
    })
    .await;
    let depots = pxeconf(&url, ADMIN_KEY, &["depots"], None).await;
    assert!(depots.stdout.starts_with("DEPOT"), "{}", depots.stdout);
    assert!(depots.stdout.contains("depot2.example.org"));
    let failed = json(
        &pxeconf(
            &url,
            ADMIN_KEY,
            &["status", "pc001.example.org", "--json"],
            None,
        )
        .await,
    );
    assert_eq!(failed["deliveries"][0]["state"], "failed", "{failed}");
    assert!(
        !failed["deliveries"][0]["next_retry"]
            .as_str()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_action_pending_and_failures() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &server.url(), false)).await;
    let mut admin = server.admin().await;
    seed(&mut admin, &[(1, depot.url())], 5, |_| 1).await;
    let url = server.url();

    let out = pxeconf(
        &url,
        ADMIN_KEY,
        &[
            "set-action",
            "client0.example.org",
            "client1.example.org",
            "--product",
            "win10-x64",
            "--action",
            "setup",
        ],
        None,
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("for 2 clients: 2 pushes queued"),
        "{}",
        out.stdout
    );
    let out = pxeconf(
        &url,
        ADMIN_KEY,
        &["set-action", "-", "--product", "win10-x64"],
        Some("client2.example.org\n# a comment\n\nclient3.example.org\n"),
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    wait_for("four configs are delivered", 20, || async {
        dirs.files().len() == 8
    })
    .await;
    wait_for("the deliveries are recorded", 20, || {
        let url = url.clone();
        async move {
            let pending = json(
                &pxeconf(
                    &url,
                    ADMIN_KEY,
                    &["pending", "--depot", "depot1.example.org", "--json"],
                    None,
                )
                .await,
            );
            let list = pending.as_array().unwrap().clone();
            list.len() == 4 && list.iter().all(|p| p["state"] == "delivered")
        }
    })
    .await;
    let pending = pxeconf(
        &url,
        ADMIN_KEY,
        &["pending", "--depot", "depot1.example.org"],
        None,
    )
    .await;
    assert!(
        pending.stdout.contains("client3.example.org") && pending.stdout.contains("4 pending"),
        "{}",
        pending.stdout
    );
    let depots = json(&pxeconf(&url, ADMIN_KEY, &["depots", "--json"], None).await);
    assert_eq!(depots[0]["capability"], "new");
    assert_eq!(depots[0]["reachable"], true);
    assert_eq!(depots[0]["delivered"], 4);
    assert_eq!(depots[0]["queued"], 0);

    let ghost = pxeconf(
        &url,
        ADMIN_KEY,
        &["set-action", "ghost.example.org", "--product", "win10-x64"],
        None,
    )
    .await;
    assert_eq!(ghost.code, Some(2));
    assert_eq!(
        ghost.stderr.trim(),
        "pxeconf: action_requests: NOT_FOUND: client ghost.example.org does not exist"
    );
    let bad = pxeconf(
        &url,
        ADMIN_KEY,
        &[
            "set-action",
            "client0.example.org",
            "--product",
            "win10-x64",
            "--action",
            "reboot",
        ],
        None,
    )
    .await;
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("INVALID_ARGUMENT"), "{}", bad.stderr);
    let wrong = pxeconf(&url, "wrong-key", &["depots"], None).await;
    assert_eq!(wrong.code, Some(2));
    assert!(wrong.stderr.contains("UNAUTHENTICATED"), "{}", wrong.stderr);
    let unknown = pxeconf(&url, ADMIN_KEY, &["status", "nobody.example.org"], None).await;
    assert_eq!(unknown.code, Some(2));
    assert!(unknown.stderr.contains("NOT_FOUND"), "{}", unknown.stderr);
    let down = pxeconf("http://127.0.0.1:1", ADMIN_KEY, &["depots"], None).await;
    assert_eq!(down.code, Some(2));
    assert!(
        down.stderr
            .contains("cannot reach the configserver at http://127.0.0.1:1"),
        "{}",
        down.stderr
    );
    drop(depot);
}
