//! The new path (`SetPxeConfig(ClientBundle)`) and the legacy path
//! (`SetPxeConfigByFqdn` + seven look-ups) write the same bytes: two sites
//! with the same inventory, one depot of each kind, the same fixed `pwh`
//! salt, compared file by file for pxelinux, elilo, grub and iPXE templates,
//! with properties, a root password and UEFI clients; with opsi's rules on
//! both: a depot's own config state, a UEFI client's `T.efi`, the newest of
//! two netboot actions.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use pxeconf::depot::crypt::Salt;
use pxeconf::proto;

/// Templates in the formats a site uses, each with a `%lang%` property.
const TEMPLATES: [(&str, &str); 6] = [
    (
        "install",
        "default opsi-install\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 lang=%lang% quiet\n",
    ),
    (
        "install-elilo-x86",
        "timeout=1\ndefault=opsi-install\nimage=install\n  label=opsi-install\n  initrd=miniroot.bz2\n  append=\"video=vesa:ywrap,mtrr lang=%lang% quiet\"\n",
    ),
    (
        "install-grub-x64",
        "set timeout=0\nmenuentry 'opsi-install' {\n  linux (pxe)/linux/install-x64 initrd=miniroot.bz2 lang=%lang%\n  initrd (pxe)/linux/miniroot-x64\n}\n",
    ),
    (
        "memtest.ipxe",
        "#!ipxe\nkernel http://depot/boot/memtest lang=%lang%\nboot\n",
    ),
    // A product's own pxelinux template, and its UEFI variant.
    ("winpe", "label winpe\n  kernel winpe\n  append quiet\n"),
    (
        "winpe.efi",
        "menuentry 'winpe' {\n  linux /winpe/efi quiet\n}\n",
    ),
];

/// Client n: (DHCP boot file, product, bootimage append items).
fn client_setup(n: u32) -> (&'static str, &'static str, Vec<&'static str>) {
    match n {
        0 => (
            "linux/pxelinux.0",
            "win10-x64",
            // As opsi stores them: one value with a space (two items).
            vec![
                "nomodeset",
                "acpi=off noapic",
                "bootimagerootpassword=linux123",
                "Lang=fr",
            ],
        ),
        1 => ("linux/pxelinux.cfg/elilo-x86.efi", "win10-x64", vec![]),
        2 => (
            "linux/pxelinux.cfg/shimx64.efi",
            "win10-x64",
            vec!["acpi=off", "bootimagerootpassword=pw"],
        ),
        3 => ("linux/pxelinux.0", "memtest", vec!["console=ttyS0"]),
        // UEFI with a product template T: T.efi.
        4 => ("linux/pxelinux.cfg/shimx64.efi", "winpe", vec![]),
        // winpe and then memtest set in one request: memtest is the newer.
        _ => ("linux/pxelinux.0", "winpe", vec![]),
    }
}

const CLIENTS: u32 = 6;

/// The configserver URL set on the depot (opsi 4.3's depot layer), and one
/// client's own.
const DEPOT_URL: &str = "https://branch.example.org:4447";
const OWN_URL: &str = "https://own.example.org:4447";

/// Client n's host key, as `bundle` in the common harness makes it.
fn key(n: u32) -> String {
    bundle(n, 0).host.unwrap().opsi_host_key
}

/// One configserver and one depot (new or legacy) on a fresh database, the
/// same inventory every time; returns the PXE files the depot wrote, the
/// path each client's push took and its revision.
/// What a site wrote: the files, and per client the path its push took, the
/// delivered revision, and the template the depot reported with its reason.
type Written = (
    BTreeMap<String, Vec<u8>>,
    Vec<String>,
    Vec<u64>,
    Vec<(String, String)>,
);

async fn site(legacy: bool) -> Written {
    let db = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let dirs = DepotDirs::new();
    for (name, text) in TEMPLATES {
        std::fs::write(dirs.templates.join(name), text).unwrap();
    }
    let mut config = linked_depot_config(&dirs, 1, &cs.url(), legacy);
    config.salt = Some(Salt::new("pxeconfTestSalt9").unwrap());
    let depot = TestDepot::start(config).await;
    let mut admin = cs.admin().await;
    seed(&mut admin, &[(1, depot.url())], CLIENTS, |_| 1).await;
    inventory(&mut admin).await;
    let action = |n: u32, product: &str| proto::ActionRequest {
        client_id: format!("client{n}.example.org"),
        product_id: product.into(),
        action_request: "setup".into(),
    };
    let mut actions: Vec<proto::ActionRequest> =
        (0..CLIENTS).map(|n| action(n, client_setup(n).1)).collect();
    actions.push(action(5, "memtest"));
    admin
        .set_action_requests(proto::SetActionRequestsRequest {
            action_requests: actions,
        })
        .await
        .unwrap();
    wait_until("every client's two files are written", || {
        dirs.files().len() == 2 * CLIENTS as usize
    })
    .await;
    // The files are renamed into place before the depot answers; the path
    // is recorded when the answer is.
    let mut paths = Vec::new();
    let mut revisions = Vec::new();
    let mut templates = Vec::new();
    for n in 0..CLIENTS {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let path = loop {
            let s = status(&mut admin, n).await;
            match s
                .deliveries
                .first()
                .map(|d| (d.path.clone(), d.delivered_revision, d))
            {
                // A delivery the depot check sends again shows its path
                // with no revision until it is back.
                Some((path, revision, d)) if !path.is_empty() && revision > 0 => {
                    revisions.push(revision);
                    templates.push((d.template.clone(), d.template_reason.clone()));
                    break path;
                }
                _ if std::time::Instant::now() > deadline => panic!("client{n} not acknowledged"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        paths.push(path);
    }
    let files = read_all(&dirs.pxe);
    depot.stop().await;
    cs.stop().await;
    (files, paths, revisions, templates)
}

/// A PXE file's marker line (first, or second after `#!ipxe`) and the file
/// without it.
fn split_marker(bytes: &[u8]) -> (String, String) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let at = usize::from(lines[0].starts_with("#!ipxe"));
    let marker = lines.remove(at).trim_end().to_owned();
    (marker, lines.concat())
}

/// Every file's bytes, read as the depot does not count a TFTP read: a
/// plain read of a client's UUID file had the depot delete both its files
/// (and report the read) before the read of its MAC file came.
fn read_all(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    list_dir(dir)
        .into_iter()
        .map(|name| {
            let bytes = peek_bytes(&dir.join(&name));
            (name, bytes)
        })
        .collect()
}

/// The per-client settings beyond `seed`: boot file, append items, a
/// property set on the depot and overridden on one client, and an iPXE
/// product with its own template.
async fn inventory(admin: &mut Admin) {
    let own = [("memtest", "memtest.ipxe"), ("winpe", "winpe")];
    admin
        .upsert_products(proto::UpsertProductsRequest {
            products: own
                .iter()
                .map(|(id, template)| proto::Product {
                    id: (*id).into(),
                    product_version: "6.0".into(),
                    package_version: "1".into(),
                    pxe_config_template: (*template).into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    admin
        .upsert_product_on_depots(proto::UpsertProductOnDepotsRequest {
            product_on_depots: own
                .iter()
                .map(|(id, _)| proto::ProductOnDepot {
                    depot_id: depot_id(1),
                    product_id: (*id).into(),
                    product_version: "6.0".into(),
                    package_version: "1".into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    let state = |object_id: String, config_id: &str, values: Vec<String>| proto::ConfigState {
        object_id,
        config_id: config_id.into(),
        values,
    };
    // The depot's own configserver URL; client2 has one of its own.
    let mut states = vec![
        state(
            depot_id(1),
            "clientconfig.configserver.url",
            vec![DEPOT_URL.into()],
        ),
        state(
            "client2.example.org".into(),
            "clientconfig.configserver.url",
            vec![OWN_URL.into()],
        ),
    ];
    for n in 0..CLIENTS {
        let (dhcpd, _, append) = client_setup(n);
        let object_id = format!("client{n}.example.org");
        states.push(proto::ConfigState {
            object_id: object_id.clone(),
            config_id: "clientconfig.dhcpd.filename".into(),
            values: vec![dhcpd.into()],
        });
        if !append.is_empty() {
            states.push(proto::ConfigState {
                object_id,
                config_id: "opsi-linux-bootimage.append".into(),
                values: append.into_iter().map(str::to_owned).collect(),
            });
        }
    }
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: states,
        })
        .await
        .unwrap();
    let property = |object_id: String, product: &str, value: &str| proto::ProductPropertyState {
        object_id,
        product_id: product.into(),
        property_id: "lang".into(),
        values: vec![value.into()],
    };
    admin
        .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
            product_property_states: vec![
                property(depot_id(1), "win10-x64", "de_DE"),
                property(depot_id(1), "memtest", "en_US"),
                property("client2.example.org".into(), "win10-x64", "fr_FR"),
            ],
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_and_the_legacy_path_write_the_same_bytes() {
    let (new, new_paths, new_revisions, new_templates) = site(false).await;
    let (legacy, legacy_paths, legacy_revisions, legacy_templates) = site(true).await;
    // Status shows the template each depot used and why, the same on both paths.
    assert_eq!(new_templates, legacy_templates);
    assert!(
        new_templates
            .iter()
            .all(|(t, why)| !t.is_empty() && !why.is_empty()),
        "{new_templates:?}"
    );
    assert_eq!(
        new_templates[1],
        (
            "install-elilo-x86".to_owned(),
            "no product template; the uefi-x86 default".to_owned()
        )
    );
    assert_eq!(new_templates[4].0, "winpe.efi", "{new_templates:?}");
    assert_eq!(new_paths, vec!["new"; CLIENTS as usize]);
    assert_eq!(legacy_paths, vec!["legacy"; CLIENTS as usize]);
    assert_eq!(
        new.keys().collect::<Vec<_>>(),
        legacy.keys().collect::<Vec<_>>(),
        "the same file names"
    );
    // Each site's store gives its own revisions (a hybrid clock): the
    // marker line names the client and that site's revision; the rest is
    // byte for byte the same.
    for (name, bytes) in &new {
        let (new_marker, new_rest) = split_marker(bytes);
        let (legacy_marker, legacy_rest) = split_marker(&legacy[name]);
        assert_eq!(new_rest, legacy_rest, "{name} differs between the paths");
        for (marker, revisions) in [
            (new_marker, &new_revisions),
            (legacy_marker, &legacy_revisions),
        ] {
            let n = (0..CLIENTS)
                .find(|n| *name == mac_file(*n) || *name == uuid(*n))
                .unwrap();
            assert_eq!(
                marker,
                format!(
                    "# pxeconf: one-time config for client{n}.example.org revision {}, deleted after its read",
                    revisions[n as usize]
                ),
                "{name}"
            );
        }
    }

    // What was compared is what it should be: each format, its property,
    // the fixed-salt password hash, the UEFI clients' templates.
    let text = |n: u32| without_marker(&String::from_utf8(new[&mac_file(n)].clone()).unwrap());
    // The kernel line in opsi's order: pckey hn dn product macaddress
    // service, then the append items (a value with a space split in two).
    let bios = text(0);
    assert_eq!(
        bios,
        format!(
            "default opsi-install\nlabel opsi-install\n  kernel install\n  append initrd=miniroot.bz2 lang=de_DE quiet \
pckey={} hn=client0 dn=example.org product=win10-x64 macaddress={} service=https://branch.example.org:4447/rpc \
nomodeset acpi=off noapic \
pwh=\\$6\\$pxeconfTestSalt9\\$CYqFOeC4PzbZUPmM12t6C75muVROl6Fq25sdg1Ng9ahYF9KyYnDcOj44pGnxL7mvip9lNgBSZXsUtlAU6t3rV/ lang=fr\n",
            key(0),
            mac(0)
        )
    );
    let elilo = text(1);
    assert_eq!(
        elilo.lines().last().unwrap(),
        format!(
            "  append=\"video=vesa:ywrap,mtrr lang=de_DE quiet pckey={} hn=client1 dn=example.org product=win10-x64 \
macaddress={} service=https://branch.example.org:4447/rpc lang=de\"",
            key(1),
            mac(1)
        )
    );
    let grub = text(2);
    assert!(
        grub.contains("linux (pxe)/linux/install-x64 initrd=miniroot.bz2 lang=fr_FR "),
        "{grub}"
    );
    assert!(grub.contains(" acpi=off "), "{grub}");
    assert!(grub.contains(" pwh="), "{grub}");
    assert!(
        grub.contains(" service=https://own.example.org:4447/rpc "),
        "the client's own state wins over its depot's: {grub}"
    );
    let ipxe = text(3);
    assert!(ipxe.starts_with("#!ipxe\nkernel "), "{ipxe}");
    let raw = String::from_utf8(new[&mac_file(3)].clone()).unwrap();
    assert!(
        raw.starts_with("#!ipxe\n# pxeconf: "),
        "the marker follows #!ipxe: {raw}"
    );
    assert!(
        ipxe.contains("kernel http://depot/boot/memtest lang=en_US pckey="),
        "{ipxe}"
    );
    assert!(ipxe.contains(" console=ttyS0"), "{ipxe}");
    // A UEFI client whose product names `winpe` gets `winpe.efi`.
    assert_eq!(
        text(4),
        format!(
            "menuentry 'winpe' {{\n  linux /winpe/efi quiet pckey={} hn=client4 dn=example.org product=winpe \
macaddress={} service=https://branch.example.org:4447/rpc lang=de\n}}\n",
            key(4),
            mac(4)
        )
    );
    // Of winpe and memtest, set in that order, memtest is pushed.
    assert!(
        text(5).starts_with("#!ipxe\nkernel http://depot/boot/memtest lang=en_US pckey="),
        "{}",
        text(5)
    );
}
