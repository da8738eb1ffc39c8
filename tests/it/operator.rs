//! The operator's view: the demo, metrics over HTTP, configuration files and
//! environment, JSON logs and graceful shutdown of the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pxeconf_command;
use pxeconf::cli::lab::{Lab, LabOptions, mac_file};
use pxeconf::config::{ConfigServerArgs, DepotArgs};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_demo_runs_and_its_summary_matches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = pxeconf_command()
        .args(["demo", "--clients", "200", "--json", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["clients"], 200);
    let depots = summary["depots"].as_array().unwrap();
    assert_eq!(depots.len(), 3);
    let mut clients = 0;
    for d in depots {
        let pxe_dir = PathBuf::from(d["pxe_dir"].as_str().unwrap());
        let names: Vec<String> = std::fs::read_dir(&pxe_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mac_files = names.iter().filter(|n| n.starts_with("01-")).count() as u64;
        let uuid_files = names.iter().filter(|n| n.len() == 36).count() as u64;
        assert_eq!(d["on_disk"].as_u64().unwrap(), mac_files, "{d}");
        assert_eq!(mac_files, uuid_files, "each client has both files");
        assert_eq!(
            d["pushed"], d["clients"],
            "every client of {} was pushed",
            d["id"]
        );
        clients += d["clients"].as_u64().unwrap();
    }
    assert_eq!(clients, 200);
    let legacy = depots.iter().find(|d| d["path"] == "legacy").unwrap();
    assert_eq!(summary["pushes_legacy"], legacy["pushed"]);
    assert_eq!(
        summary["pushes_new"].as_u64().unwrap() + summary["pushes_legacy"].as_u64().unwrap(),
        200
    );
    assert_eq!(
        summary["lookups"].as_u64().unwrap(),
        7 * legacy["pushed"].as_u64().unwrap()
    );
    let reads = summary["reads"].as_u64().unwrap();
    assert_eq!(reads, 20, "10 % of the clients are read");
    assert_eq!(summary["actions_none"].as_u64().unwrap(), reads);
    let on_disk: u64 = depots.iter().map(|d| d["on_disk"].as_u64().unwrap()).sum();
    assert_eq!(
        on_disk,
        200 - reads,
        "read configs are gone, the others stay"
    );
    assert!(
        demo.join("pxeconf.db").is_file(),
        "the database is left for a look"
    );

    // The human summary of a second run (the directory is the demo's, so it is reused).
    let out = pxeconf_command()
        .args(["demo", "--clients", "30", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "clients",
        "pushes, new path",
        "look-ups by the legacy depot",
        "clients per second",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
}

#[test]
fn the_demo_refuses_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), "keep me").unwrap();
    let out = pxeconf_command()
        .args(["demo", "--clients", "5", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(dir.path().join("precious").exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not made by pxeconf demo"));
}

/// GET `path` over plain HTTP/1.0; the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_with_the_named_series() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabOptions {
        dir: dir.path().to_owned(),
        pxe_root: dir.path().to_owned(),
        depots: 2,
        legacy: 1,
        concurrency: 8,
        io_threads: 2,
        database: None,
    })
    .await
    .unwrap();
    lab.seed(20).await.unwrap();
    let all: Vec<u32> = (0..20).collect();
    lab.set_actions(&all, "setup").await.unwrap();
    lab.wait_delivered(20, Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    crate::common::simulate_read(&lab.depots[0].pxe_dir.join(mac_file(0)));
    crate::common::wait_until("the read is counted", || {
        lab.metrics
            .encode()
            .contains("pxeconf_tftp_reads_total{depot=\"depot1.example.org\"} 1")
    })
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pxeconf::metrics::serve_http(
        listener,
        lab.metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let body = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    let sample = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} sample in:\n{body}"))
            .to_owned()
    };
    assert!(sample("pxeconf_pushes_total{depot=\"depot1.example.org\",path=\"new\",op=\"set\",result=\"ok\"}").ends_with(" 10"));
    assert!(sample("pxeconf_pushes_total{depot=\"depot2.example.org\",path=\"legacy\",op=\"set\",result=\"ok\"}").ends_with(" 10"));
    sample("pxeconf_dispatch_queue_depth{depot=\"depot1.example.org\"}");
    assert!(sample("pxeconf_lookups_total{rpc=\"GetHost\"}").ends_with(" 10"));
    sample("pxeconf_pending_configs{depot=\"depot1.example.org\"}");
    sample("pxeconf_tftp_reads_total{depot=\"depot1.example.org\"}");
    sample("pxeconf_rpc_duration_seconds_bucket{");
    // The new path goes in batches; the legacy-only depot refused them.
    sample(
        "pxeconf_rpc_duration_seconds_count{path=\"/pxeconf.v1.Depot/BatchSetPxeConfigs\",code=\"Ok\"}",
    );
    sample(
        "pxeconf_rpc_duration_seconds_count{path=\"/pxeconf.v1.Depot/BatchSetPxeConfigs\",code=\"Unimplemented\"}",
    );
    assert!(
        sample("pxeconf_bundles_received_total{depot=\"depot1.example.org\",result=\"ok\"}")
            .ends_with(" 10")
    );
    sample(
        "pxeconf_rpc_duration_seconds_count{path=\"/pxeconf.v1.ConfigServer/GetHost\",code=\"Ok\"}",
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    lab.shutdown().await;
}

/// A scrape before anything happened shows the series an alert needs, at
/// zero: look-ups by RPC, a depot's configs, reads, writes, bundles and
/// reports — their error results too (an alert on `increase()` of a series
/// born at its first failure does not fire) — the open connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_their_series_at_zero_before_the_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabOptions {
        dir: dir.path().to_owned(),
        pxe_root: dir.path().to_owned(),
        depots: 2,
        legacy: 1,
        concurrency: 4,
        io_threads: 1,
        database: None,
    })
    .await
    .unwrap();
    let text = lab.metrics.encode();
    let depot = "depot=\"depot1.example.org\"";
    let mut wanted: Vec<String> = pxeconf::proto::LEGACY_LOOKUPS
        .iter()
        .map(|rpc| format!("pxeconf_lookups_total{{rpc=\"{rpc}\"}} 0"))
        .collect();
    wanted.extend([
        format!("pxeconf_pending_configs{{{depot}}} 0"),
        format!("pxeconf_tftp_reads_total{{{depot}}} 0"),
    ]);
    let results = [
        ("config_writes", &["ok", "io_error"][..]),
        (
            "bundles_received",
            &["ok", "aborted", "internal", "refused"],
        ),
        ("read_reports", &["ok", "refused", "abandoned"]),
    ];
    for (family, names) in results {
        wanted.extend(
            names
                .iter()
                .map(|r| format!("pxeconf_{family}_total{{{depot},result=\"{r}\"}} 0")),
        );
    }
    for line in &wanted {
        assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
    }
    // The legacy-only depot takes no bundles: a series that cannot move
    // would read as stuck.
    assert!(text.contains("pxeconf_pending_configs{depot=\"depot2.example.org\"} 0"));
    assert!(
        !text.contains("pxeconf_bundles_received_total{depot=\"depot2.example.org\""),
        "{text}"
    );
    // A depot nobody has called yet (the lab's configserver has).
    let dirs = crate::common::DepotDirs::new();
    let alone =
        crate::common::TestDepot::start(crate::common::depot_config(&dirs, "depot9.example.org"))
            .await;
    crate::common::wait_until("the open connections at zero", || {
        alone
            .metrics
            .encode()
            .lines()
            .any(|l| l == "pxeconf_connections{server=\"depot\"} 0")
    })
    .await;
    // It has no configserver, so it sends no read reports: no series of
    // them, not even at zero; its writes' and bundles' are there.
    let text = alone.metrics.encode();
    let depot9 = "depot=\"depot9.example.org\"";
    assert!(
        !text.contains(&format!("pxeconf_read_reports_total{{{depot9}")),
        "{text}"
    );
    for line in [
        format!("pxeconf_config_writes_total{{{depot9},result=\"io_error\"}} 0"),
        format!("pxeconf_bundles_received_total{{{depot9},result=\"internal\"}} 0"),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
    }
    lab.shutdown().await;
}

#[test]
fn the_example_configs_load() {
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "0123456789abcdef0123456789abcdef\n").unwrap();
    // Built in process, the args carry no `PXECONF_HOST_KEY` (only parsing the
    // command line reads it), so a key in the host's environment cannot
    // replace the file's.
    let depot = DepotArgs {
        config: Some(repo("contrib/depot.toml")),
        host_key_file: Some(key.path().to_owned()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(depot.depot.depot_id.as_str(), "depot1.example.org");
    assert_eq!(
        depot.depot.pxe_dir,
        PathBuf::from("/tftpboot/opsi/opsi-linux-bootimage/cfg")
    );
    assert_eq!(depot.depot.templates.bios.as_str(), "install-grub-x64");
    assert_eq!(depot.depot.templates.uefi_x64.as_str(), "install-grub-x64");
    assert_eq!(
        depot.depot.configservers,
        ["http://config.example.org:50050"]
    );
    assert_eq!(
        depot.common.metrics_listen,
        Some("127.0.0.1:9151".parse().unwrap())
    );
    assert_eq!(
        depot.depot.host_key.unwrap().expose(),
        "0123456789abcdef0123456789abcdef"
    );

    let configserver = ConfigServerArgs {
        config: Some(repo("contrib/configserver.toml")),
        host_key_file: Some(key.path().to_owned()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        configserver.database,
        pxeconf::configserver::store::Location::parse("/var/lib/pxeconf/pxeconf.db")
    );
    assert_eq!(configserver.dispatch.concurrency, 128);
    assert_eq!(configserver.dispatch.max_backoff, Duration::from_secs(60));
    assert!(configserver.modules.uefi && configserver.modules.secureboot);

    // A flag wins over the file.
    let overridden = DepotArgs {
        config: Some(repo("contrib/depot.toml")),
        host_key_file: Some(key.path().to_owned()),
        depot_id: Some("depot9.example.org".into()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(overridden.depot.depot_id.as_str(), "depot9.example.org");
}

/// Runs the binary; (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = pxeconf_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_exit_non_zero_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let pxe = dir.path().display().to_string();
    // (arguments, environment, the setting the error must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["depot", "--pxe-dir", &pxe], vec![], "depot_id"),
        (
            vec!["depot", "--depot-id", "nodomain", "--pxe-dir", &pxe],
            vec![],
            "depot_id",
        ),
        (
            vec!["depot", "--pxe-dir", &pxe],
            vec![("PXECONF_DEPOT_ID", "a..b")],
            "depot_id",
        ),
        (
            vec!["depot", "--depot-id", "d.example.org", "--listen", "nope"],
            vec![],
            "listen",
        ),
        (
            vec![
                "depot",
                "--depot-id",
                "d.example.org",
                "--default-template",
                "../x",
            ],
            vec![],
            "default_template",
        ),
        (
            vec![
                "depot",
                "--depot-id",
                "d.example.org",
                "--configserver",
                "config:50050",
            ],
            vec![],
            "configserver",
        ),
        (
            vec![
                "depot",
                "--depot-id",
                "d.example.org",
                "--grace-period",
                "soon",
            ],
            vec![],
            "grace_period",
        ),
        (
            vec![
                "depot",
                "--depot-id",
                "d.example.org",
                "--handshake-timeout",
                "400000000000y",
            ],
            vec![],
            "handshake_timeout",
        ),
        (
            vec!["configserver", "--modules", "uefi,magic"],
            vec![],
            "modules",
        ),
        // The exporter has no TLS: refused here, not at start naming a
        // Cargo feature; nor is a password taken (or quoted).
        (
            vec![
                "configserver",
                "--otlp-endpoint",
                "https://otel.example.org:4317",
            ],
            vec![],
            "otlp_endpoint: https:// is not supported",
        ),
        (
            vec!["configserver"],
            vec![(
                "PXECONF_OTLP_ENDPOINT",
                "http://u:s3cret@otel.example.org:4317",
            )],
            "otlp_endpoint: a URL with a user name or password is not taken",
        ),
        (
            vec!["configserver", "--config", "/nonexistent.toml"],
            vec![],
            "/nonexistent.toml",
        ),
        (
            vec!["configserver"],
            vec![("PXECONF_PUSH_CONCURRENCY", "0")],
            "push_concurrency",
        ),
        (
            vec!["configserver", "--push-timeout", "0s"],
            vec![],
            "push_timeout",
        ),
        // A misspelt scheme is no SQLite path to run an empty store at.
        (
            vec![
                "configserver",
                "--database",
                "postgress://pxe:s3cret@db/pxeconf",
            ],
            vec![],
            "database: unknown scheme",
        ),
        (
            vec!["configserver"],
            vec![(
                "PXECONF_DATABASE",
                "postgres://pxe@db/pxeconf?pasword=s3cret",
            )],
            "database: unknown connection parameter",
        ),
        // A CA for client certificates that no setting requires.
        (
            vec!["configserver", "--tls-client-ca", "/etc/pxeconf/tls/ca.pem"],
            vec![],
            "tls_client_ca: takes effect only with client_auth = cert or both",
        ),
    ];
    for (args, env, setting) in cases {
        let (code, stderr) = run(&args, &env);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line expected, got {stderr:?}"
        );
        assert!(
            lines[0].starts_with("pxeconf: ") && lines[0].contains(setting),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_depot_logs_json_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let mut child = pxeconf_command()
        .args([
            "depot",
            "--listen",
            "127.0.0.1:0",
            "--depot-id",
            "depot1.example.org",
            "--log-format",
            "json",
        ])
        .env("PXECONF_PXE_DIR", dir.path().join("pxe"))
        .env("PXECONF_TEMPLATE_DIR", &templates)
        .env("PXECONF_STATE_DIR", dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut serving = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
        if event["message"] == "depot serving" {
            serving = Some(event);
            break;
        }
    }
    let serving = serving.expect("the depot says it is serving");
    assert_eq!(serving["depot"], "depot1.example.org");
    assert!(
        serving["addr"].as_str().unwrap().contains("127.0.0.1:"),
        "the bound address is logged"
    );

    // systemd's `reload` sends SIGHUP: logged, never a stop.
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("SIGHUP")),
        "the depot lives on after a SIGHUP and says so"
    );

    let start = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "a SIGTERM is a clean stop: {exit:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}
