//! The depot over real sockets: writes, TFTP reads with tftpd-hpa, grpcurl,
//! auth, start-up clean-up. Handler edge cases (bad input and the status it
//! gets) are unit tests beside the handlers, in `depot::service`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use pxeconf::proto;
use tonic::Code;

#[tokio::test]
async fn set_pxe_config_writes_both_files_and_a_tftp_read_removes_them() {
    let dirs = DepotDirs::new();
    let mut depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;

    let response = client
        .set_pxe_config(bundle(7, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.files, vec![uuid(7), mac_file(7)]);
    assert_eq!(response.template, "install");
    assert_eq!(response.revision, 1);
    assert_eq!(dirs.files(), vec![uuid(7), mac_file(7)]);

    let by_uuid = peek(&dirs.pxe.join(uuid(7)));
    let by_mac = peek(&dirs.pxe.join(mac_file(7)));
    assert_eq!(by_uuid, by_mac);
    let append = by_uuid
        .lines()
        .find(|l| l.trim_start().starts_with("append"))
        .unwrap();
    assert!(
        append.starts_with("  append initrd=miniroot.bz2 video=vesa:ywrap,mtrr vga=791 quiet splash --no-log console=tty1 console=ttyS0 "),
        "template arguments kept first: {append}"
    );
    for expected in [
        "hn=client7",
        "dn=example.org",
        "product=win10-x64",
        &format!("macaddress={}", mac(7)),
        "service=https://config.example.org:4447/rpc",
        &format!("pckey={:032x}", 0xfeed_0000_u128 + 7),
        "lang=de",
    ] {
        assert!(
            append.split(' ').any(|w| w == expected),
            "{expected} missing in {append}"
        );
    }
    let mode = std::fs::metadata(dirs.pxe.join(uuid(7))).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o644
    );

    if !have_tftpd() {
        return;
    }
    let binary = pxeconf::cli::tftp::find_program("in.tftpd").unwrap();
    let tftpd = pxeconf::cli::tftp::TftpServer::start(&binary, &dirs.pxe).unwrap();
    let served = tftp_get(tftpd.addr.port(), &mac_file(7));
    assert_eq!(String::from_utf8(served).unwrap(), by_mac);

    let read = depot.next_read().await;
    assert_eq!(read.fqdn.as_str(), "client7.example.org");
    assert_eq!(read.product_id.as_str(), "win10-x64");
    assert_eq!(read.revision, 1);
    wait_until("both files are gone", || dirs.files().is_empty()).await;

    let listed = client
        .list_pxe_configs(proto::ListPxeConfigsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.configs.is_empty());

    // The read revision is spent: a late repeat of it must not write the file again.
    let again = client.set_pxe_config(bundle(7, 1)).await.unwrap_err();
    assert_eq!(again.code(), Code::Aborted, "{again:?}");
    assert!(dirs.files().is_empty());
    depot.stop().await;
}

#[tokio::test]
async fn listing_shows_pending_configs_without_secrets_and_pages() {
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;
    for n in 0..25 {
        client.set_pxe_config(bundle(n, 1)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_pxe_configs(proto::ListPxeConfigsRequest {
                page_size: 10,
                page_token: token.clone(),
                product_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total, 25);
        assert!(page.configs.len() <= 10);
        let text = format!("{page:?}");
        assert!(!text.contains("feed"), "a host key leaked into the listing");
        seen.extend(page.configs.into_iter().map(|c| c.fqdn));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..25).map(|n| format!("client{n}.example.org")).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let other = client
        .list_pxe_configs(proto::ListPxeConfigsRequest {
            product_id: "ubuntu".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.configs.is_empty());
}

#[tokio::test]
async fn setting_again_replaces_and_follows_a_changed_mac() {
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;
    client.set_pxe_config(bundle(1, 1)).await.unwrap();
    let mut moved = bundle(1, 2);
    moved.host.as_mut().unwrap().hardware_address = mac(99);
    let response = client.set_pxe_config(moved).await.unwrap().into_inner();
    assert_eq!(response.files, vec![uuid(1), mac_file(99)]);
    assert_eq!(dirs.files(), vec![uuid(1), mac_file(99)]);

    // The old MAC is free again for another client.
    let mut other = bundle(2, 1);
    other.host.as_mut().unwrap().hardware_address = mac(1);
    client.set_pxe_config(other).await.unwrap();

    let removed = client
        .remove_pxe_config(proto::RemovePxeConfigRequest {
            fqdn: "client1.example.org".into(),
            revision: 3,
            epoch: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed);
    assert_eq!(dirs.files(), vec![uuid(2), mac_file(1)]);
    // A push older than the removal does not bring the config back.
    let stale = client.set_pxe_config(bundle(1, 2)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let again = client
        .remove_pxe_config(proto::RemovePxeConfigRequest {
            fqdn: "client1.example.org".into(),
            revision: 0,
            epoch: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.removed);
}

/// Clients may share the placeholder MAC `00:00:00:…` (opsi and the store
/// allow it): their configs are named by system UUID alone, and the second
/// on a depot is no longer refused for the first one's `01-00-00-00-…`
/// file, a name no machine asks for. With no UUID either, a clear refusal.
#[tokio::test]
async fn clients_sharing_a_placeholder_mac_are_named_by_uuid() {
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;
    for n in [1, 2] {
        let mut b = bundle(n, 1);
        b.host.as_mut().unwrap().hardware_address = "00:00:00:00:00:00".into();
        let written = client.set_pxe_config(b).await.unwrap().into_inner();
        assert_eq!(written.files, vec![uuid(n)]);
    }
    assert_eq!(dirs.files(), vec![uuid(1), uuid(2)]);
    let mut b = bundle(3, 1);
    let host = b.host.as_mut().unwrap();
    (host.hardware_address, host.system_uuid) = ("00:00:00:aa:bb:cc".into(), String::new());
    let refused = client.set_pxe_config(b).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("placeholder"), "{refused:?}");
}

#[tokio::test]
async fn start_up_removes_stale_configs_and_keeps_other_files() {
    let dirs = DepotDirs::new();
    // Ours (by the marker line) from a run whose journal is gone, and a
    // temporary file; an operator's file with a config-like name.
    let marked = "# pxeconf: one-time config for client1.example.org revision 3, deleted after its read\nstale\n";
    for stale in [mac_file(1), uuid(2)] {
        std::fs::write(dirs.pxe.join(stale), marked).unwrap();
    }
    std::fs::write(dirs.pxe.join(".pxeconf-tmp-01-aa"), "stale").unwrap();
    std::fs::write(dirs.pxe.join(mac_file(9)), "default operator\n").unwrap();
    std::fs::write(dirs.pxe.join("pxelinux.0"), "loader").unwrap();
    std::fs::write(dirs.pxe.join("install"), "template").unwrap();
    let _depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    assert_eq!(
        dirs.files(),
        vec![mac_file(9), "install".to_string(), "pxelinux.0".to_string()]
    );
}

#[tokio::test]
async fn a_host_key_is_required_when_configured() {
    let dirs = DepotDirs::new();
    let mut config = depot_config(&dirs, "depot1.example.org");
    config.host_key = secret("depot-secret-0123456789abcdef0123456789");
    let depot = TestDepot::start(config).await;
    let mut client = depot.client().await;
    let status = client.set_pxe_config(bundle(1, 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(bundle(1, 1));
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        client.set_pxe_config(request).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut request = tonic::Request::new(bundle(1, 1));
    request.metadata_mut().insert(
        "authorization",
        "Bearer depot-secret-0123456789abcdef0123456789"
            .parse()
            .unwrap(),
    );
    client.set_pxe_config(request).await.unwrap();
    assert_eq!(dirs.files().len(), 2);
}

#[tokio::test]
async fn a_legacy_depot_does_not_implement_set_pxe_config() {
    let dirs = DepotDirs::new();
    let mut config = depot_config(&dirs, "depot1.example.org");
    config.legacy = true;
    let depot = TestDepot::start(config).await;
    let status = depot
        .client()
        .await
        .set_pxe_config(bundle(1, 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(dirs.files().is_empty());
}

/// Runs grpcurl with `args` off the async runtime; (success, stdout + stderr).
async fn grpcurl(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("grpcurl")
            .args(&args)
            .output()
            .expect("run grpcurl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn grpcurl_lists_by_reflection_and_sets_a_config_from_json() {
    if !have_tool("grpcurl", "reflection from a real grpcurl") {
        return;
    }
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let addr = depot.addr.to_string();

    let (ok, services) = grpcurl(args(&["-plaintext", &addr, "list"])).await;
    assert!(ok, "grpcurl list failed: {services}");
    assert!(
        services.lines().any(|l| l == "pxeconf.v1.Depot"),
        "{services}"
    );
    assert!(
        services.lines().any(|l| l == "grpc.health.v1.Health"),
        "{services}"
    );
    assert!(
        !services.contains("pxeconf.v1.Admin"),
        "a depot advertises Admin: {services}"
    );

    let (ok, described) =
        grpcurl(args(&["-plaintext", &addr, "describe", "pxeconf.v1.Depot"])).await;
    assert!(ok, "{described}");
    assert!(described.contains("rpc SetPxeConfigByFqdn"), "{described}");

    let json = r#"{"host":{"id":"json1.example.org","hardware_address":"00-16-3E-00-00-01","system_uuid":"7C9E6679-7425-40DE-944B-E07FC1F90AE7","opsi_host_key":"0123456789abcdef0123456789abcdef"},"product_on_client":{"action_request":"setup"},"product":{"id":"ubuntu"},"service_address":"https://cfg.example.org:4447","bootimage_append":["nomodeset"],"revision":"9"}"#;
    let (ok, out) = grpcurl(args(&[
        "-plaintext",
        "-d",
        json,
        &addr,
        "pxeconf.v1.Depot/SetPxeConfig",
    ]))
    .await;
    assert!(ok, "grpcurl SetPxeConfig failed: {out}");
    let response: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        response["files"],
        serde_json::json!([
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "01-00-16-3e-00-00-01"
        ])
    );
    assert_eq!(response["revision"], "9");
    assert_eq!(
        dirs.files(),
        vec![
            "01-00-16-3e-00-00-01".to_string(),
            "7c9e6679-7425-40de-944b-e07fc1f90ae7".to_string()
        ]
    );

    let (ok, health) = grpcurl(args(&["-plaintext", &addr, "grpc.health.v1.Health/Check"])).await;
    assert!(ok && health.contains("SERVING"), "{health}");
}

#[tokio::test]
async fn a_fixed_salt_makes_the_written_bytes_reproducible() {
    // glibc's crypt(3) of `linux123` with this salt (Python 3.11's `crypt`).
    const GLIBC: &str = "$6$pxeconfTestSalt9$CYqFOeC4PzbZUPmM12t6C75muVROl6Fq25sdg1Ng9ahYF9KyYnDcOj44pGnxL7mvip9lNgBSZXsUtlAU6t3rV/";
    let mut written = Vec::new();
    for _ in 0..2 {
        let dirs = DepotDirs::new();
        let mut config = depot_config(&dirs, "depot1.example.org");
        config.salt = Some(pxeconf::depot::crypt::Salt::new("pxeconfTestSalt9").unwrap());
        let depot = TestDepot::start(config).await;
        let mut b = bundle(7, 1);
        b.bootimage_append
            .push("bootimagerootpassword=linux123".into());
        depot.client().await.set_pxe_config(b).await.unwrap();
        let text = peek(&dirs.pxe.join(mac_file(7)));
        let pwh = format!("pwh={}", GLIBC.replace('$', "\\$"));
        assert!(text.split_whitespace().any(|w| w == pwh), "{text}");
        written.push(text);
    }
    assert_eq!(
        written[0], written[1],
        "two depots, one salt: the same bytes"
    );
}

/// A config read while the depot was down (its TFTP server kept serving)
/// is a read when the depot starts again: the file's access time is past
/// its write. The depot's own start-up reads leave access times alone, so
/// a restart alone reads nothing.
#[tokio::test]
async fn a_config_read_while_the_depot_was_down_is_a_read_at_start() {
    let dirs = DepotDirs::new();
    let config = || depot_config(&dirs, "depot1.example.org");
    let depot = TestDepot::start(config()).await;
    let mut client = depot.client().await;
    for n in [7, 8] {
        client.set_pxe_config(bundle(n, 1)).await.unwrap();
    }
    drop(client);
    depot.stop().await;
    let held = |depot: &TestDepot| {
        let depot = depot.url();
        async move {
            let mut client = proto::depot_client::DepotClient::connect(depot)
                .await
                .unwrap();
            let listed = client
                .list_pxe_configs(proto::ListPxeConfigsRequest::default())
                .await
                .unwrap()
                .into_inner();
            let mut held: Vec<String> = listed.configs.into_iter().map(|c| c.fqdn).collect();
            held.sort();
            held
        }
    };

    // Twice: the first start after the writes reads the files to check them.
    for _ in 0..2 {
        let depot = TestDepot::start(config()).await;
        assert_eq!(
            held(&depot).await,
            ["client7.example.org", "client8.example.org"]
        );
        depot.stop().await;
    }

    // As the TFTP server reads: the bytes, not only an open and a close.
    std::fs::read(dirs.pxe.join(mac_file(7))).unwrap();
    let mut depot = TestDepot::start(config()).await;
    let read = depot.next_read().await;
    assert_eq!(
        (read.fqdn.as_str(), read.revision),
        ("client7.example.org", 1)
    );
    assert_eq!(held(&depot).await, ["client8.example.org"]);
    assert!(!dirs.pxe.join(mac_file(7)).exists());
    assert!(!dirs.pxe.join(uuid(7)).exists());
    depot.stop().await;
}

/// A configserver that misbehaves in a way the real one does not; every
/// call its case does not name is refused.
#[derive(Clone)]
enum Misbehaving {
    /// Answers `GetHost` for another client than the one asked (a confused
    /// or wrong configserver).
    AnswersForAnother,
    /// Records every read report but those of one client, answered
    /// UNAVAILABLE without details (as a proxy whose backend for it is
    /// down); counts the reports per client.
    NeverAnswers(&'static str, Arc<Mutex<HashMap<String, u32>>>),
}

#[tonic::async_trait]
impl proto::config_server_server::ConfigServer for Misbehaving {
    async fn get_host(
        &self,
        _: tonic::Request<proto::GetHostRequest>,
    ) -> Result<tonic::Response<proto::GetHostResponse>, tonic::Status> {
        if !matches!(self, Self::AnswersForAnother) {
            return Err(tonic::Status::unimplemented("not in this test"));
        }
        Ok(tonic::Response::new(proto::GetHostResponse {
            id: "other.example.org".into(),
            hardware_address: "00:16:3e:00:00:99".into(),
            system_uuid: String::new(),
            ip_address: String::new(),
            opsi_host_key: "0123456789abcdef0123456789abcdef".into(),
        }))
    }
    async fn get_netboot_product_on_clients(
        &self,
        _: tonic::Request<proto::GetNetbootProductOnClientsRequest>,
    ) -> Result<tonic::Response<proto::GetNetbootProductOnClientsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn get_product_on_depot(
        &self,
        _: tonic::Request<proto::GetProductOnDepotRequest>,
    ) -> Result<tonic::Response<proto::GetProductOnDepotResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn get_product(
        &self,
        _: tonic::Request<proto::GetProductRequest>,
    ) -> Result<tonic::Response<proto::GetProductResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn get_config_states(
        &self,
        _: tonic::Request<proto::GetConfigStatesRequest>,
    ) -> Result<tonic::Response<proto::GetConfigStatesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn get_product_property_states(
        &self,
        _: tonic::Request<proto::GetProductPropertyStatesRequest>,
    ) -> Result<tonic::Response<proto::GetProductPropertyStatesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn get_modules(
        &self,
        _: tonic::Request<proto::GetModulesRequest>,
    ) -> Result<tonic::Response<proto::GetModulesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn get_client_bundle(
        &self,
        _: tonic::Request<proto::GetClientBundleRequest>,
    ) -> Result<tonic::Response<proto::ClientBundle>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
    async fn report_pxe_config_read(
        &self,
        request: tonic::Request<proto::ReportPxeConfigReadRequest>,
    ) -> Result<tonic::Response<proto::ReportPxeConfigReadResponse>, tonic::Status> {
        let Self::NeverAnswers(refused, calls) = self else {
            return Err(tonic::Status::unimplemented("not in this test"));
        };
        let fqdn = request.into_inner().fqdn;
        *calls.lock().unwrap().entry(fqdn.clone()).or_default() += 1;
        if fqdn == *refused {
            return Err(tonic::Status::unavailable("no backend"));
        }
        Ok(tonic::Response::new(proto::ReportPxeConfigReadResponse {
            action_request: "none".into(),
            repushed: false,
            applied: true,
        }))
    }
    type ListPendingBundlesStream = tokio_stream::Empty<Result<proto::ClientBundle, tonic::Status>>;
    async fn list_pending_bundles(
        &self,
        _: tonic::Request<proto::ListPendingBundlesRequest>,
    ) -> Result<tonic::Response<Self::ListPendingBundlesStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn a_legacy_look_up_answered_for_another_client_writes_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::config_server_server::ConfigServerServer::new(
                Misbehaving::AnswersForAnother,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dirs = DepotDirs::new();
    let config = linked_depot_config(&dirs, 1, &format!("http://{upstream}"), true);
    let depot = TestDepot::start(config).await;
    let mut request = tonic::Request::new(proto::SetPxeConfigByFqdnRequest {
        fqdn: "a.example.org".into(),
        revision: 0,
        epoch: String::new(),
    });
    let bearer = format!("Bearer {}", depot_key(1));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let status = depot
        .client()
        .await
        .set_pxe_config_by_fqdn(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(
        pxeconf::status::reason_of(&status).as_deref(),
        Some("LOOKUP_FAILED")
    );
    assert!(
        !status.message().contains("other.example.org"),
        "{status:?}"
    );
    assert!(dirs.files().is_empty(), "{:?}", dirs.files());
}

/// A configserver that never answers one client's read reports while it
/// answers the others' (their answers keep opening the reports' gate): that
/// client's report backs off on its own rather than going again after each
/// of the others' answers, and the others land meanwhile.
#[tokio::test]
async fn a_read_report_never_answered_backs_off_while_others_land() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let calls = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::config_server_server::ConfigServerServer::new(
                Misbehaving::NeverAnswers("client0.example.org", calls.clone()),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dirs = DepotDirs::new();
    let config = linked_depot_config(&dirs, 1, &format!("http://{upstream}"), false);
    let depot = TestDepot::start(config).await;
    let mut client = depot.client().await;
    const OTHERS: u32 = 40;
    for n in 0..=OTHERS {
        let mut request = tonic::Request::new(bundle(n, 1));
        let bearer = format!("Bearer {}", depot_key(1));
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        client.set_pxe_config(request).await.unwrap();
    }
    let tries = |fqdn: &str| calls.lock().unwrap().get(fqdn).copied().unwrap_or(0);
    simulate_read(&dirs.pxe.join(mac_file(0)));
    wait_for("client0's first report", 10, || async {
        tries("client0.example.org") > 0
    })
    .await;
    // Another client's read every 75 ms for 3 s.
    let started = std::time::Instant::now();
    for n in 1..=OTHERS {
        simulate_read(&dirs.pxe.join(mac_file(n)));
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    let (window, refused) = (started.elapsed(), tries("client0.example.org"));
    wait_for("every other client's read is reported", 20, || async {
        (1..=OTHERS).all(|n| tries(&format!("client{n}.example.org")) >= 1)
    })
    .await;
    for n in 1..=OTHERS {
        assert_eq!(tries(&format!("client{n}.example.org")), 1, "client{n}");
    }
    // Its own doubling wait from 200 ms: five tries in 3 s; going again
    // after the others' answers made it 15.
    assert!(
        refused <= 8,
        "client0's report went {refused} times in {window:?}"
    );
    assert!(refused >= 2, "client0's report is retried: {refused}");
}

/// A watch of a service the depot does not serve is answered NOT_FOUND in
/// the headers alone (trailers-only, END_STREAM on them), which grpc-go
/// needs: with the stream left open it reported INTERNAL "server closed
/// the stream without sending trailers".
#[tokio::test]
async fn grpcurl_gets_not_found_for_a_watch_of_an_unknown_service() {
    if !have_tool("grpcurl", "a grpc-go client reading a trailers-only answer") {
        return;
    }
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let (ok, out) = grpcurl(args(&[
        "-plaintext",
        "-max-time",
        "10",
        "-d",
        r#"{"service":"nope"}"#,
        &depot.addr.to_string(),
        "grpc.health.v1.Health/Watch",
    ]))
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("Code: NotFound"), "{out}");
}
