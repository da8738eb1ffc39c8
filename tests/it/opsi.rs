//! opsi fidelity end to end (issue 10): a realistic opsi dump
//! (tests/fixtures/opsi) imported by the real binary into a real
//! configserver with three real depots, and the PXE files they write checked
//! byte for byte: opsi 4.3 config precedence (a depot's own states), the
//! kernel line in opsi's order, append values with spaces, UEFI clients,
//! several netboot actions pushed one after another, a product missing on
//! the client's depot; a dry run and a failed import change nothing; a
//! duplicate MAC is refused; a UEFI client gets `T.efi` or the UEFI default,
//! never a pxelinux template.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use pxeconf::depot::crypt::Salt;
use pxeconf::domain::TemplateName;
use pxeconf::proto;
use serde_json::{Value, json};
use tonic::Code;

/// The fixture's depots: id and opsi host key (the depots' shared secret).
const DEPOTS: [(&str, &str); 3] = [
    ("opsi.example.org", "6d1c9d3e0f4b5a6978877665544332a1"),
    (
        "depot-berlin.example.org",
        "b3e1a2c4d5f60718293a4b5c6d7e8f90",
    ),
    (
        "depot-hamburg.example.org",
        "c4f2b3d5e6071829304a5b6c7d8e9fa1",
    ),
];

/// opsi 4.3's default template (grub), with a property.
const GRUB: &str = "set timeout=0\nmenuentry 'opsi-install' {\n  linux (pxe)/linux/install-x64 initrd=miniroot.bz2 lang=%lang%\n  initrd (pxe)/linux/miniroot-x64\n}\n";
/// A product's own pxelinux template.
const MEMTEST: &str =
    "default memtest\nlabel memtest\n  kernel memtest86\n  append passes=%passes%\n";
/// Another product's own (grub) template.
const UBUNTU: &str = "menuentry 'ubuntu' {\n  linux (pxe)/ubuntu/linux auto=true\n}\n";

/// `pwh` of `linux123` with the depots' fixed salt, escaped as written.
const PWH: &str = r"\$6\$pxeconfTestSalt9\$CYqFOeC4PzbZUPmM12t6C75muVROl6Fq25sdg1Ng9ahYF9KyYnDcOj44pGnxL7mvip9lNgBSZXsUtlAU6t3rV/";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/opsi")
        .join(name)
}

/// What a run of the binary left: exit code, stdout, stderr.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `pxeconf ARGS` against `url` with the admin key, off the runtime.
async fn pxeconf(url: &str, args: &[&str]) -> Out {
    let (url, args): (String, Vec<String>) =
        (url.to_owned(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let out = pxeconf_command()
            .args(&args)
            .env("PXECONF_SERVER", url)
            .env("PXECONF_ADMIN_KEY", ADMIN_KEY)
            .stdin(Stdio::null())
            .output()
            .expect("run pxeconf");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

impl Out {
    fn json(self) -> Value {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    fn failed(self) -> String {
        assert_eq!(self.code, Some(2), "stdout: {}", self.stdout);
        assert_eq!(self.stderr.lines().count(), 1, "{}", self.stderr);
        self.stderr.trim_end().to_owned()
    }
}

/// A configserver and the fixture's three depots (opsi 4.3's default
/// templates, a fixed `pwh` salt), and a depot map for the import.
struct Site {
    _db: tempfile::TempDir,
    cs: TestConfigServer,
    admin: Admin,
    /// Per depot of [`DEPOTS`]: its directories and server.
    depots: Vec<(DepotDirs, TestDepot)>,
    map: tempfile::NamedTempFile,
}

impl Site {
    async fn start() -> Self {
        let db = tempfile::tempdir().unwrap();
        let cs = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
        let mut depots = Vec::new();
        let mut map = String::new();
        for (id, key) in DEPOTS {
            let dirs = DepotDirs::new();
            for (name, text) in [
                ("install-grub-x64", GRUB),
                ("memtest", MEMTEST),
                ("install-ubuntu", UBUNTU),
            ] {
                std::fs::write(dirs.templates.join(name), text).unwrap();
            }
            let mut config = depot_config(&dirs, id);
            config.templates.bios = TemplateName::parse("install-grub-x64", "t").unwrap();
            config.configservers = vec![cs.url()];
            config.host_key = secret(key);
            config.salt = Some(Salt::new("pxeconfTestSalt9").unwrap());
            let depot = TestDepot::start(config).await;
            map.push_str(&format!("{id:?} = {:?}\n", depot.url()));
            depots.push((dirs, depot));
        }
        let file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        std::fs::write(file.path(), map).unwrap();
        let admin = cs.admin().await;
        Self {
            _db: db,
            cs,
            admin,
            depots,
            map: file,
        }
    }

    fn map(&self) -> String {
        self.map.path().display().to_string()
    }

    /// The PXE directory of depot `i` of [`DEPOTS`].
    fn pxe(&self, i: usize) -> &Path {
        &self.depots[i].0.pxe
    }

    async fn status(
        &mut self,
        fqdn: &str,
    ) -> Result<proto::GetClientStatusResponse, tonic::Status> {
        self.admin
            .get_client_status(proto::GetClientStatusRequest { fqdn: fqdn.into() })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Waits until `path` exists and holds `want`; then returns without reading
/// it as a boot would (`peek`).
async fn wait_content(path: &Path, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = try_peek(path).map(|text| without_marker(&text));
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held:\n{want}\nbut:\n{}",
            path.display(),
            now.unwrap_or_else(|| "(missing)".into())
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn grub(kernel: &str, lang: &str) -> String {
    format!(
        "set timeout=0\nmenuentry 'opsi-install' {{\n  linux (pxe)/linux/install-x64 initrd=miniroot.bz2 lang={lang} {kernel}\n  initrd (pxe)/linux/miniroot-x64\n}}\n"
    )
}

fn memtest(passes: &str, kernel: &str) -> String {
    format!(
        "default memtest\nlabel memtest\n  kernel memtest86\n  append passes={passes} {kernel}\n"
    )
}

/// The kernel items every file gets, in opsi's order.
fn kernel(n: &str, key: &str, product: &str, mac: &str, service: &str) -> String {
    format!(
        "pckey={key} hn={n} dn=example.org product={product} macaddress={mac} service={service}"
    )
}

const BERLIN_URL: &str = "https://opsi-berlin.example.org:4447/rpc";
const DEFAULT_URL: &str = "https://opsi.example.org:4447/rpc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opsi_dump_imports_in_one_transaction_and_the_depots_write_what_opsi_would() {
    let mut site = Site::start().await;
    let dump = fixture("dump.json").display().to_string();
    // No --format: a JSON array is taken for an opsi dump.
    let out = pxeconf(
        &site.cs.url(),
        &["import", &dump, "--depot-map", &site.map(), "--json"],
    )
    .await;
    // The fixture's vm-old has no key: imported, and said so.
    assert!(
        out.stderr
            .contains("note: 1 client(s) have no opsiHostKey in the dump (vm-old.example.org)"),
        "{}",
        out.stderr
    );
    let out = out.json();
    assert_eq!(out["dry_run"], json!(false));
    let kinds: Vec<(String, u64, u64, u64)> = out["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_owned(),
                k["in_dump"].as_u64().unwrap(),
                k["imported"].as_u64().unwrap(),
                k["skipped"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("configs", 7, 4, 3),
        ("depots", 3, 3, 0),
        ("netboot products", 5, 5, 0),
        ("localboot products", 2, 0, 2),
        ("product on depots", 12, 9, 3),
        ("clients", 7, 7, 0),
        ("config states", 12, 10, 2),
        ("product property states", 4, 3, 1),
        ("product properties", 6, 4, 2),
        ("product on clients", 11, 8, 3),
        ("other objects", 1, 0, 1),
    ];
    assert_eq!(
        kinds,
        expected
            .iter()
            .map(|(k, a, b, c)| (k.to_string(), *a, *b, *c))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        out["kinds"][5]["changed"],
        json!(7),
        "seven clients written"
    );
    assert_eq!(
        out["kinds"][9]["why_skipped"],
        json!({"localboot (pxeconf serves netboot)": 3})
    );
    // Five clients have an action their depot can serve; pc-ham-003's is blocked.
    assert_eq!(out["pushes_queued"], json!(5));

    // Berlin: its own configserver URL (a depot-level state), its lang property.
    let (ber, ham, hq) = (1, 2, 0);
    wait_content(
        &site.pxe(ber).join("01-00-16-3e-b1-00-01"),
        &grub(
            &kernel(
                "pc-ber-001",
                "0b1e2d3c4f5a69788796a5b4c3d2e101",
                "win10-x64",
                "00:16:3e:b1:00:01",
                BERLIN_URL,
            ),
            "de-DE",
        ),
    )
    .await;
    assert_eq!(
        peek(&site.pxe(ber).join("4c4c4544-0042-3110-8030-b1c04f000001")),
        peek(&site.pxe(ber).join("01-00-16-3e-b1-00-01"))
    );
    // The product's own pxelinux template; Berlin has no `passes` of its own:
    // the property's default (opsi's fallback), imported as Berlin's state.
    wait_content(
        &site.pxe(ber).join("01-00-16-3e-b1-00-02"),
        &memtest(
            "1",
            &kernel(
                "pc-ber-002",
                "0b1e2d3c4f5a69788796a5b4c3d2e102",
                "memtest86",
                "00:16:3e:b1:00:02",
                BERLIN_URL,
            ),
        ),
    )
    .await;
    // Hamburg: a UEFI client (grub), Hamburg's append value with a space split in two,
    // the default lang of Hamburg's older win10-x64.
    let append = "acpi=off noapic vga=normal";
    wait_content(
        &site.pxe(ham).join("01-00-16-3e-4a-00-01"),
        &grub(
            &format!(
                "{} {append}",
                kernel(
                    "pc-ham-001",
                    "0b1e2d3c4f5a69788796a5b4c3d2e201",
                    "win10-x64",
                    "00:16:3e:4a:00:01",
                    DEFAULT_URL
                )
            ),
            "en-GB",
        ),
    )
    .await;
    // Two netboot actions: memtest86, set last in opsi, first.
    let ham2 = site.pxe(ham).join("01-00-16-3e-4a-00-02");
    wait_content(
        &ham2,
        &memtest(
            "2",
            &format!(
                "{} {append}",
                kernel(
                    "pc-ham-002",
                    "0b1e2d3c4f5a69788796a5b4c3d2e202",
                    "memtest86",
                    "00:16:3e:4a:00:02",
                    DEFAULT_URL
                )
            ),
        ),
    )
    .await;
    // The configserver is a depot too: the client's own append, a root password.
    wait_content(
        &site.pxe(hq).join("01-00-16-3e-00-00-01"),
        &grub(
            &format!(
                "{} pwh={PWH} lang=de",
                kernel(
                    "pc-hq-001",
                    "0b1e2d3c4f5a69788796a5b4c3d2e301",
                    "hwinvent",
                    "00:16:3e:00:00:01",
                    DEFAULT_URL
                )
            ),
            "%lang%",
        ),
    )
    .await;

    let s = site.status("pc-ham-002.example.org").await.unwrap();
    assert_eq!(
        (s.active_product_id.as_str(), s.waiting_product_ids.clone()),
        ("memtest86", vec!["win10-x64".to_owned()])
    );
    let shown = pxeconf(&site.cs.url(), &["status", "pc-ham-002.example.org"]).await;
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    for line in ["active   memtest86", "waiting  win10-x64"] {
        assert!(
            shown.stdout.lines().any(|l| l == line),
            "{line}: {}",
            shown.stdout
        );
    }
    // Its read uses up memtest86; win10-x64 (Hamburg's version) is pushed next.
    simulate_read(&ham2);
    let win10 = grub(
        &format!(
            "{} {append}",
            kernel(
                "pc-ham-002",
                "0b1e2d3c4f5a69788796a5b4c3d2e202",
                "win10-x64",
                "00:16:3e:4a:00:02",
                DEFAULT_URL
            )
        ),
        "en-GB",
    );
    wait_content(&ham2, &win10).await;
    let s = site.status("pc-ham-002.example.org").await.unwrap();
    assert_eq!(
        (s.active_product_id.as_str(), s.waiting_product_ids.len()),
        ("win10-x64", 0)
    );

    // ubuntu is not on Hamburg: a terminal failure with the reason, no file…
    let s = site.status("pc-ham-003.example.org").await.unwrap();
    let d = &s.deliveries[0];
    assert_eq!(
        (d.state, d.error.as_str(), d.next_retry.is_none()),
        (
            proto::DeliveryState::Failed as i32,
            "product ubuntu is not installed on depot depot-hamburg.example.org",
            true
        )
    );
    assert!(!site.pxe(ham).join("01-00-16-3e-4a-00-03").exists());
    // …until a product-on-depot is written.
    site.admin
        .upsert_product_on_depots(proto::UpsertProductOnDepotsRequest {
            product_on_depots: vec![proto::ProductOnDepot {
                depot_id: DEPOTS[ham].0.into(),
                product_id: "ubuntu".into(),
                product_version: "22.04".into(),
                package_version: "4".into(),
            }],
        })
        .await
        .unwrap();
    wait_content(
        &site.pxe(ham).join("01-00-16-3e-4a-00-03"),
        &format!(
            "menuentry 'ubuntu' {{\n  linux (pxe)/ubuntu/linux auto=true {} {append}\n}}\n",
            kernel(
                "pc-ham-003",
                "0b1e2d3c4f5a69788796a5b4c3d2e203",
                "ubuntu",
                "00:16:3e:4a:00:03",
                DEFAULT_URL
            )
        ),
    )
    .await;

    // A depot's config state changed: its clients' configs follow.
    let moved = "https://opsi-berlin2.example.org:4447/rpc";
    let written = site
        .admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: vec![proto::ConfigState {
                object_id: DEPOTS[ber].0.into(),
                config_id: "clientconfig.configserver.url".into(),
                values: vec![moved.into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.pushes_queued, 2, "pc-ber-001 and pc-ber-002");
    wait_content(
        &site.pxe(ber).join("01-00-16-3e-b1-00-01"),
        &grub(
            &kernel(
                "pc-ber-001",
                "0b1e2d3c4f5a69788796a5b4c3d2e101",
                "win10-x64",
                "00:16:3e:b1:00:01",
                moved,
            ),
            "de-DE",
        ),
    )
    .await;

    // A client whose service address names nothing: a terminal failure with
    // the reason (the depot would refuse the config), its config removed…
    let ber1 = site.pxe(ber).join("01-00-16-3e-b1-00-01");
    let own_url = |values: Vec<String>| proto::UpsertConfigStatesRequest {
        config_states: vec![proto::ConfigState {
            object_id: "pc-ber-001.example.org".into(),
            config_id: "clientconfig.configserver.url".into(),
            values,
        }],
    };
    let written = site
        .admin
        .upsert_config_states(own_url(vec!["".into()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.waiting, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ber1.exists() {
        assert!(Instant::now() < deadline, "{} stays", ber1.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = site.status("pc-ber-001.example.org").await.unwrap();
    let d = &s.deliveries[0];
    assert_eq!(
        (d.state, d.error.as_str(), d.next_retry.is_none()),
        (
            proto::DeliveryState::Failed as i32,
            "pc-ber-001.example.org has no service address (config clientconfig.configserver.url): its boot image could not reach the service",
            true
        )
    );
    // The depot's list says how many are blocked, and the pending view
    // lists them with the reason.
    let berlin = depots(&mut site.admin)
        .await
        .into_iter()
        .find(|d| d.id == DEPOTS[ber].0)
        .unwrap();
    assert_eq!(berlin.blocked, 1);
    let listed = pxeconf(
        &site.cs.url(),
        &["pending", "--depot", DEPOTS[ber].0, "--blocked", "--json"],
    )
    .await
    .json();
    assert_eq!(
        (
            listed[0]["client_id"].as_str(),
            listed[0]["state"].as_str(),
            listed.as_array().map(Vec::len)
        ),
        (Some("pc-ber-001.example.org"), Some("failed"), Some(1)),
        "{listed:#}"
    );
    assert!(
        listed[0]["error"]
            .as_str()
            .unwrap()
            .contains("has no service address")
    );
    let table = pxeconf(
        &site.cs.url(),
        &["pending", "--depot", DEPOTS[ber].0, "--blocked"],
    )
    .await;
    assert!(table.stdout.ends_with("\n1 blocked\n"), "{}", table.stdout);
    // …until it has one.
    site.admin
        .upsert_config_states(own_url(vec!["https://own.example.org:4447".into()]))
        .await
        .unwrap();
    wait_content(
        &ber1,
        &grub(
            &kernel(
                "pc-ber-001",
                "0b1e2d3c4f5a69788796a5b4c3d2e101",
                "win10-x64",
                "00:16:3e:b1:00:01",
                "https://own.example.org:4447/rpc",
            ),
            "de-DE",
        ),
    )
    .await;
    let berlin = depots(&mut site.admin)
        .await
        .into_iter()
        .find(|d| d.id == DEPOTS[ber].0)
        .unwrap();
    assert_eq!(berlin.blocked, 0);
    for (_, depot) in site.depots {
        depot.stop().await;
    }
    site.cs.stop().await;
}

/// Depots and clients the Admin API knows.
async fn counts(admin: &mut Admin) -> usize {
    depots(admin).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_failed_import_change_nothing() {
    let db = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let mut admin = cs.admin().await;
    let calls = fixture("calls").display().to_string();
    let template = "http://{host}.invalid:50051";
    // One file per call (some as JSON-RPC answers), as a directory.
    let out = pxeconf(
        &cs.url(),
        &[
            "import",
            &calls,
            "--depot-endpoint",
            template,
            "--dry-run",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(out["dry_run"], json!(true));
    assert_eq!(out["pushes_queued"], json!(5));
    assert_eq!(out["waiting"], json!(1), "pc-ham-003's action is blocked");
    assert_eq!(
        out["kinds"][1]["changed"],
        json!(3),
        "three depots would be written"
    );
    assert_eq!(counts(&mut admin).await, 0, "the dry run wrote nothing");
    let missing = admin
        .get_client_status(proto::GetClientStatusRequest {
            fqdn: "pc-ber-001.example.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // The table says so too.
    let table = pxeconf(
        &cs.url(),
        &[
            "import",
            "--format",
            "opsi",
            &calls,
            "--depot-endpoint",
            template,
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.starts_with("KIND "), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("\nlocalboot products       2        0         2                 2 localboot (pxeconf serves netboot)\n"),
        "{}",
        table.stdout
    );
    // A client of the dump whose netboot action no depot can be sent (its
    // product is not on its depot) is named as waiting.
    assert!(
        table.stdout.trim_end().ends_with(
            "pushes would be queued\n1 client would wait: its depot is not registered or does not have the product, or it has no service address (`pxeconf status CLIENT` says which)"
        ),
        "{}",
        table.stdout
    );

    // A duplicate MAC fails the whole import, naming both clients (found
    // in the dump, before anything is sent).
    let dir = tempfile::tempdir().unwrap();
    let mut objects: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("dump.json")).unwrap()).unwrap();
    for o in &mut objects {
        if o["id"] == "pc-ber-002.example.org" {
            o["hardwareAddress"] = json!("00:16:3e:b1:00:01");
        }
    }
    let bad = dir.path().join("dup.json");
    std::fs::write(&bad, serde_json::to_string(&objects).unwrap()).unwrap();
    let line = pxeconf(
        &cs.url(),
        &[
            "import",
            bad.to_str().unwrap(),
            "--depot-endpoint",
            template,
        ],
    )
    .await
    .failed();
    assert_eq!(
        line,
        "pxeconf: 1 MAC address(es) or system UUID(s) belong to more than one client in the dump (pxeconf names PXE files after them; give each its own, or clear the stale client's): MAC 00:16:3e:b1:00:01: pc-ber-001.example.org, pc-ber-002.example.org"
    );
    // A bad value names the item and the opsi object it came from.
    for o in &mut objects {
        if o["id"] == "pc-ber-002.example.org" {
            o["hardwareAddress"] = json!("00:16:3e:b1");
        }
    }
    std::fs::write(&bad, serde_json::to_string(&objects).unwrap()).unwrap();
    let line = pxeconf(
        &cs.url(),
        &[
            "import",
            bad.to_str().unwrap(),
            "--depot-endpoint",
            template,
        ],
    )
    .await
    .failed();
    assert!(
        line.starts_with("pxeconf: INVALID_ARGUMENT: clients[1].hardware_address: invalid MAC address \"00:16:3e:b1\""),
        "{line}"
    );
    assert!(
        line.ends_with("(opsi: pc-ber-002.example.org); nothing was imported"),
        "{line}"
    );
    assert_eq!(
        counts(&mut admin).await,
        0,
        "nothing of the failed imports landed"
    );
    // An inventory file's dry run goes through the same one transaction.
    let inventory = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inventory.toml");
    let out = pxeconf(
        &cs.url(),
        &["import", inventory.to_str().unwrap(), "--dry-run", "--json"],
    )
    .await
    .json();
    assert_eq!(out["dry_run"], json!(true));
    assert_eq!(out["kinds"], json!([]));
    let clients = out["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["section"] == "clients")
        .unwrap()
        .clone();
    assert!(clients["changed"].as_u64().unwrap() > 0, "{clients}");
    assert_eq!(
        counts(&mut admin).await,
        0,
        "the inventory's dry run wrote nothing"
    );
    // A depot without an endpoint is refused before anything is sent.
    let line = pxeconf(&cs.url(), &["import", "--format", "opsi", &calls])
        .await
        .failed();
    assert!(
        line.starts_with("pxeconf: no gRPC endpoint for depot "),
        "{line}"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_another_client_holds_is_already_exists_at_the_admin_api() {
    let db = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let mut admin = cs.admin().await;
    let host = |id: &str, mac: &str| proto::Host {
        id: id.into(),
        hardware_address: mac.into(),
        ..Default::default()
    };
    admin
        .upsert_clients(proto::UpsertClientsRequest {
            clients: vec![host("a.example.org", "02:00:00:00:00:01")],
        })
        .await
        .unwrap();
    let refused = admin
        .upsert_clients(proto::UpsertClientsRequest {
            clients: vec![host("b.example.org", "02-00-00-00-00-01")],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(
        refused.message(),
        "hardware address 02:00:00:00:00:01 of client b.example.org is already used by client a.example.org"
    );
    cs.stop().await;
}

/// A UEFI bundle for a product with template `template`, on depot1.
fn uefi_bundle(n: u32, template: &str) -> proto::ClientBundle {
    let mut b = bundle(n, 1);
    b.boot_mode = proto::BootMode::UefiX64 as i32;
    b.product.as_mut().unwrap().pxe_config_template = template.into();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uefi_client_gets_the_efi_variant_its_own_grub_template_or_the_uefi_default_never_pxelinux()
 {
    let dirs = DepotDirs::new();
    std::fs::write(
        dirs.templates.join("winpe"),
        "label winpe\n  kernel winpe\n  append quiet\n",
    )
    .unwrap();
    std::fs::write(
        dirs.templates.join("winpe.efi"),
        "menuentry 'winpe' {\n  linux /winpe/efi quiet\n}\n",
    )
    .unwrap();
    std::fs::write(dirs.templates.join("other"), "label other\n  append x\n").unwrap();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;

    // T.efi beside T: taken, and the answer says why.
    let answer = client
        .set_pxe_config(uefi_bundle(1, "winpe"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.template.as_str(), answer.template_reason.as_str()),
        (
            "winpe.efi",
            "UEFI client (uefi-x64): the product template's UEFI variant winpe.efi"
        )
    );
    let key = bundle(1, 1).host.unwrap().opsi_host_key;
    assert_eq!(
        without_marker(&peek(&dirs.pxe.join(mac_file(1)))),
        format!(
            "menuentry 'winpe' {{\n  linux /winpe/efi quiet pckey={key} hn=client1 dn=example.org product=win10-x64 macaddress={} service=https://config.example.org:4447/rpc lang=de\n}}\n",
            mac(1)
        )
    );
    // No `other.efi`: the UEFI default (grub), not the product's pxelinux template.
    let answer = client
        .set_pxe_config(uefi_bundle(2, "other"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.template.as_str(), answer.template_reason.as_str()),
        (
            "install-grub-x64",
            "UEFI client (uefi-x64): the product template other has no UEFI variant other.efi and is a pxelinux template; the uefi-x64 default"
        )
    );
    assert!(
        without_marker(&peek(&dirs.pxe.join(mac_file(2)))).starts_with("set timeout=0\nmenuentry")
    );
    // No `memtest.efi`, but `memtest` is a grub template (opsi 4.3's kind,
    // which boots UEFI): the product's own, as opsi 4.3 hands it out.
    std::fs::write(
        dirs.templates.join("memtest"),
        "menuentry 'memtest' {\n  linux /memtest\n}\n",
    )
    .unwrap();
    let answer = client
        .set_pxe_config(uefi_bundle(5, "memtest"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.template.as_str(), answer.template_reason.as_str()),
        (
            "memtest",
            "UEFI client (uefi-x64): the product's template, in grub format (no UEFI variant memtest.efi)"
        )
    );
    assert!(without_marker(&peek(&dirs.pxe.join(mac_file(5)))).starts_with("menuentry 'memtest'"));
    // A BIOS client gets the product's own.
    let mut bios = uefi_bundle(3, "winpe");
    bios.boot_mode = proto::BootMode::Bios as i32;
    let answer = client.set_pxe_config(bios).await.unwrap().into_inner();
    assert_eq!(
        (answer.template.as_str(), answer.template_reason.as_str()),
        ("winpe", "the product's template")
    );
    depot.stop().await;

    // A depot whose UEFI default is a pxelinux template refuses rather than writes it.
    let dirs = DepotDirs::new();
    std::fs::write(dirs.templates.join("install-grub-x64"), PXELINUX).unwrap();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let refused = depot
        .client()
        .await
        .set_pxe_config(uefi_bundle(4, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with(
            "template install-grub-x64 is in pxelinux format, which a uefi-x64 client cannot boot"
        ),
        "{}",
        refused.message()
    );
    assert!(
        dirs.files().is_empty(),
        "nothing written: {:?}",
        dirs.files()
    );
    depot.stop().await;
}
