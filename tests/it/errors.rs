//! Errors carry `google.rpc` details over real sockets: an `ErrorInfo` with
//! a stable reason and domain `pxeconf` on every error, a `BadRequest` with
//! one field violation per bad field, a `PreconditionFailure` where a
//! precondition failed; decoded with tonic-types and with grpcurl
//! `-format-error` (the detail types are served by reflection).

use std::process::Command;

use pxeconf::proto;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::{DepotDirs, TestConfigServer, TestDepot, bundle, depot_config, have_tool};

fn reason(status: &tonic::Status) -> (String, String) {
    let info = status.get_details_error_info().expect("an ErrorInfo");
    (info.domain, info.reason)
}

#[tokio::test]
async fn invalid_clients_name_every_bad_field_in_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&dir.path().join("cs.db"), 0).await;
    let mut admin = cs.admin().await;
    let host = |id: &str, mac: &str, uuid: &str| proto::Host {
        id: id.into(),
        hardware_address: mac.into(),
        system_uuid: uuid.into(),
        ..Default::default()
    };
    let status = admin
        .upsert_clients(proto::UpsertClientsRequest {
            clients: vec![
                host("a.example.org", "00:11:22", ""),
                host("b.example.org", "00:11:22:33:44:55", ""),
                host("nodomain", "", "not-a-uuid"),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        reason(&status),
        ("pxeconf".to_string(), "INVALID_FIELD".to_string())
    );
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("a BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "clients[0].hardware_address",
            "clients[2].id",
            "clients[2].system_uuid"
        ]
    );
    // Nothing was written.
    let missing = admin
        .get_client_status(proto::GetClientStatusRequest {
            fqdn: "b.example.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        reason(&missing),
        ("pxeconf".to_string(), "NOT_FOUND".to_string())
    );
    // A page token is a client id from an earlier page.
    let token = admin
        .list_pending(proto::ListPendingRequest {
            depot_id: "depot1.example.org".into(),
            page_size: 10,
            page_token: "a\0b".into(),
            blocked: false,
        })
        .await
        .unwrap_err();
    assert_eq!(token.code(), Code::InvalidArgument, "{token:?}");
    cs.stop().await;
}

#[tokio::test]
async fn a_depot_names_the_missing_template_and_the_unlicensed_module() {
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;

    let mut missing = bundle(1, 1);
    missing.product.as_mut().unwrap().pxe_config_template = "no-such-template".into();
    let status = client.set_pxe_config(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).1, "TEMPLATE_MISSING");
    let failure = status.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations.len(), 1);
    assert_eq!(failure.violations[0].r#type, "TEMPLATE");
    assert_eq!(failure.violations[0].subject, "no-such-template");
    // Where the depot keeps its templates is not the caller's business.
    let templates = dirs.templates.display().to_string();
    assert!(!status.message().contains(&templates), "{status:?}");
    assert!(!format!("{:?}", status.details()).contains(&templates));

    // An elilo config without the uefi module: refused, as opsi 4.2 did.
    std::fs::write(
        dirs.templates.join("elilo"),
        "image=/k\n  append=\"quiet\"\n",
    )
    .unwrap();
    let unlicensed = |n: u32, template: &str| {
        let mut uefi = bundle(n, 1);
        uefi.boot_mode = proto::BootMode::UefiX64 as i32;
        uefi.product.as_mut().unwrap().pxe_config_template = template.into();
        uefi.modules = Some(proto::Modules {
            uefi: false,
            secureboot: false,
        });
        uefi
    };
    // A grub one is written: opsi never refused those.
    client.set_pxe_config(unlicensed(4, "")).await.unwrap();
    let status = client
        .set_pxe_config(unlicensed(2, "elilo"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).1, "MODULE_NOT_LICENSED");
    let failure = status.get_details_precondition_failure().unwrap();
    assert_eq!(
        (
            failure.violations[0].r#type.as_str(),
            failure.violations[0].subject.as_str()
        ),
        ("MODULE", "uefi")
    );

    // A stale revision keeps its ABORTED details (the one-time guarantee).
    client.set_pxe_config(bundle(3, 5)).await.unwrap();
    let stale = client.set_pxe_config(bundle(3, 4)).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale).1, "NEWER_HELD");
    depot.stop().await;
}

/// A symlink in the depot's template directory leading out of it is the
/// depot's set-up, not the caller's fault: FAILED_PRECONDITION for a
/// product's template and for a default alike (a product without one was
/// told its template field was invalid), and where it leads is not told.
#[tokio::test]
async fn a_template_linking_out_of_the_directory_is_the_depots_precondition() {
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("elsewhere");
    std::fs::write(&target, crate::common::PXELINUX).unwrap();
    std::os::unix::fs::symlink(&target, dirs.templates.join("sneaky")).unwrap();
    // The BIOS default becomes a link out while the depot runs.
    std::fs::remove_file(dirs.templates.join("install")).unwrap();
    std::os::unix::fs::symlink(&target, dirs.templates.join("install")).unwrap();

    let mut named = bundle(1, 1);
    named.product.as_mut().unwrap().pxe_config_template = "sneaky".into();
    let without = bundle(2, 1);
    assert!(
        without
            .product
            .as_ref()
            .unwrap()
            .pxe_config_template
            .is_empty()
    );
    let out = outside.path().display().to_string();
    for (b, subject) in [(named, "sneaky"), (without, "install")] {
        let status = client.set_pxe_config(b).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(reason(&status).1, "TEMPLATE_MISSING");
        let failure = status.get_details_precondition_failure().unwrap();
        assert_eq!(failure.violations[0].r#type, "TEMPLATE");
        assert_eq!(failure.violations[0].subject, subject);
        assert!(!status.message().contains(&out), "{status:?}");
        assert!(!format!("{:?}", status.details()).contains(&out));
    }
    assert!(dirs.files().is_empty());
    depot.stop().await;
}

#[tokio::test]
async fn grpcurl_decodes_the_details_through_reflection() {
    if !have_tool("grpcurl", "decoding error details") {
        return;
    }
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let addr = depot.addr.to_string();
    let json = r#"{"host":{"id":"nodomain","hardware_address":"00:11","opsi_host_key":"0123456789abcdef0123456789abcdef"},"product":{"id":"ubuntu"}}"#;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("grpcurl")
            .args([
                "-plaintext",
                "-format-error",
                "-d",
                json,
                &addr,
                "pxeconf.v1.Depot/SetPxeConfig",
            ])
            .output()
            .expect("run grpcurl")
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let error: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(error["code"], 3, "{text}");
    let details = error["details"].as_array().expect(&text);
    let of = |t: &str| {
        details
            .iter()
            .find(|d| d["@type"] == format!("type.googleapis.com/google.rpc.{t}"))
            .unwrap_or_else(|| panic!("no {t} in {text}"))
    };
    assert_eq!(of("ErrorInfo")["reason"], "INVALID_FIELD");
    assert_eq!(of("ErrorInfo")["domain"], "pxeconf");
    let fields: Vec<&str> = of("BadRequest")["fieldViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["host.id", "host.hardware_address"], "{text}");
    depot.stop().await;
}
