//! The store's triggers on a real SQLite file: every kind of inventory change
//! owes exactly the pushes it should, and repeating a write owes nothing.

use std::collections::BTreeSet;

use pxeconf::configserver::store::*;
use pxeconf::domain::opsi::{DEPOT_ID, SERVICE_URL};
use pxeconf::domain::{
    ActionRequest, Client, Endpoint, Fqdn, Mac, ProductId, Secret, SystemUuid, TemplateName,
};

fn fqdn(s: &str) -> Fqdn {
    Fqdn::parse(s, "id").unwrap()
}

fn product_id(s: &str) -> ProductId {
    ProductId::parse(s, "id").unwrap()
}

fn client(n: u32, mac_byte: u8) -> Client {
    Client {
        fqdn: fqdn(&format!("c{n}.example.org")),
        mac: Some(Mac::parse(&format!("02:00:00:00:{n:02x}:{mac_byte:02x}"), "m").unwrap()),
        uuid: Some(SystemUuid::parse(&format!("00000000-0000-4000-8000-{n:012x}"), "u").unwrap()),
        ip_address: String::new(),
        host_key: Secret::new(format!("client-key-{n:04}-0123456789abcdef0123456789")),
    }
}

fn product(version: &str, template: Option<&str>) -> ProductRecord {
    ProductRecord {
        id: product_id("win"),
        product_version: version.into(),
        package_version: "1".into(),
        template: template.map(|t| TemplateName::parse(t, "t").unwrap()),
    }
}

fn pod(depot: &str, version: &str) -> ProductOnDepotRecord {
    ProductOnDepotRecord {
        depot_id: fqdn(depot),
        product_id: product_id("win"),
        product_version: version.into(),
        package_version: "1".into(),
    }
}

fn state(object: &str, config: &str, values: &[&str]) -> ConfigStateRecord {
    ConfigStateRecord {
        object_id: fqdn(object),
        config_id: config.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn property(object: &str, values: &[&str]) -> PropertyStateRecord {
    PropertyStateRecord {
        object_id: fqdn(object),
        product_id: product_id("win"),
        property_id: "lang".into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

/// The owed pushes as (depot, client) pairs, sorted.
fn owed(outcome: WriteOutcome) -> BTreeSet<(String, String)> {
    outcome
        .owed
        .into_iter()
        .map(
            |Owed {
                 depot_id,
                 client_id,
             }| (depot_id, client_id),
        )
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(d, c)| (d.to_string(), c.to_string()))
        .collect()
}

const D1: &str = "d1.example.org";
const D2: &str = "d2.example.org";

/// Two depots, product win 1-1 on both, c1 and c2 on d1, c3 on d2, all with
/// a `setup` action.
async fn seeded() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nested/pxeconf.db"))
        .await
        .unwrap();
    let depot = |id: &str| DepotRecord {
        id: fqdn(id),
        endpoint: Endpoint::parse(&format!("http://{id}:50051"), "endpoint").unwrap(),
        host_key: Secret::new(format!("host-key-of-{id}-0123456789abcdef")),
        description: String::new(),
    };
    store.upsert_depots(&[depot(D1), depot(D2)]).await.unwrap();
    store.upsert_products(&[product("1", None)]).await.unwrap();
    store
        .upsert_product_on_depots(&[pod(D1, "1"), pod(D2, "1")])
        .await
        .unwrap();
    store
        .upsert_clients(&[client(1, 1), client(2, 2), client(3, 3)])
        .await
        .unwrap();
    store
        .upsert_configs(&[ConfigRecord {
            id: DEPOT_ID.into(),
            default_values: vec![D1.into()],
            description: String::new(),
        }])
        .await
        .unwrap();
    store
        .upsert_config_states(&[state("c3.example.org", DEPOT_ID, &[D2])])
        .await
        .unwrap();
    let actions: Vec<ActionRecord> = (1..=3)
        .map(|n| ActionRecord {
            client_id: fqdn(&format!("c{n}.example.org")),
            product_id: product_id("win"),
            action: ActionRequest::Setup,
        })
        .collect();
    let outcome = store.set_action_requests(&actions).await.unwrap();
    assert_eq!(
        owed(outcome),
        pairs(&[
            (D1, "c1.example.org"),
            (D1, "c2.example.org"),
            (D2, "c3.example.org")
        ])
    );
    (dir, store)
}

#[tokio::test]
async fn each_change_owes_exactly_its_pushes() {
    let (_dir, store) = seeded().await;

    // Repeating writes owes nothing.
    assert!(
        owed(
            store
                .upsert_clients(&[client(1, 1), client(2, 2)])
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert!(owed(store.upsert_products(&[product("1", None)]).await.unwrap()).is_empty());
    assert!(
        owed(
            store
                .upsert_product_on_depots(&[pod(D1, "1")])
                .await
                .unwrap()
        )
        .is_empty()
    );

    // A new MAC re-pushes that client.
    assert_eq!(
        owed(store.upsert_clients(&[client(1, 9)]).await.unwrap()),
        pairs(&[(D1, "c1.example.org")])
    );
    // A product's template re-pushes every client holding it.
    assert_eq!(
        owed(
            store
                .upsert_products(&[product("1", Some("custom"))])
                .await
                .unwrap()
        ),
        pairs(&[
            (D1, "c1.example.org"),
            (D1, "c2.example.org"),
            (D2, "c3.example.org")
        ])
    );
    // Another version on one depot re-pushes that depot's clients.
    store.upsert_products(&[product("2", None)]).await.unwrap();
    assert_eq!(
        owed(
            store
                .upsert_product_on_depots(&[pod(D2, "2")])
                .await
                .unwrap()
        ),
        pairs(&[(D2, "c3.example.org")])
    );
    // A depot's property default re-pushes its clients; a client's own, only it.
    assert_eq!(
        owed(
            store
                .upsert_property_states(&[property(D1, &["de"])])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c1.example.org"), (D1, "c2.example.org")])
    );
    assert_eq!(
        owed(
            store
                .upsert_property_states(&[property("c2.example.org", &["fr"])])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c2.example.org")])
    );
    // A PXE config's default re-pushes the clients using the default; another config, nobody.
    store
        .upsert_configs(&[ConfigRecord {
            id: "other.config".into(),
            default_values: vec!["x".into()],
            description: String::new(),
        }])
        .await
        .unwrap();
    assert!(
        owed(
            store
                .upsert_config_states(&[state("c1.example.org", "other.config", &["y"])])
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert_eq!(
        owed(
            store
                .upsert_configs(&[ConfigRecord {
                    id: SERVICE_URL.into(),
                    default_values: vec!["https://cfg:4447".into()],
                    description: String::new(),
                }])
                .await
                .unwrap()
        ),
        pairs(&[
            (D1, "c1.example.org"),
            (D1, "c2.example.org"),
            (D2, "c3.example.org")
        ])
    );

    // Moving c1 to d2: remove on d1, set on d2.
    assert_eq!(
        owed(
            store
                .upsert_config_states(&[state("c1.example.org", DEPOT_ID, &[D2])])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c1.example.org"), (D2, "c1.example.org")])
    );
    let rows = store.pushes_of_client("c1.example.org").await.unwrap();
    let op = |depot: &str| rows.iter().find(|r| r.depot_id == depot).unwrap().op;
    assert_eq!((op(D1), op(D2)), (PushOp::Remove, PushOp::Set));
    // Back to the default depot: set on d1, remove on d2.
    assert_eq!(
        owed(
            store
                .delete_config_states(&[(fqdn("c1.example.org"), DEPOT_ID.into())])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c1.example.org"), (D2, "c1.example.org")])
    );

    // Clearing the action removes the config; a deleted client too.
    assert_eq!(
        owed(
            store
                .delete_product_on_clients(&[(fqdn("c2.example.org"), product_id("win"))])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c2.example.org")])
    );
    assert_eq!(
        owed(
            store
                .delete_clients(&[fqdn("c3.example.org")])
                .await
                .unwrap()
        ),
        pairs(&[(D2, "c3.example.org")])
    );
    // Removing the product from d1 re-pushes c1 there; the push then fails with the reason.
    assert_eq!(
        owed(
            store
                .delete_product_on_depots(&[(fqdn(D1), product_id("win"))])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c1.example.org")])
    );
}

#[tokio::test]
async fn one_netboot_product_per_client_and_all_or_nothing() {
    let (_dir, store) = seeded().await;
    store
        .upsert_products(&[ProductRecord {
            id: product_id("linux"),
            product_version: "1".into(),
            package_version: "1".into(),
            template: None,
        }])
        .await
        .unwrap();
    let act = |c: &str, p: &str, a: ActionRequest| ActionRecord {
        client_id: fqdn(c),
        product_id: product_id(p),
        action: a,
    };
    store
        .set_action_requests(&[act("c1.example.org", "linux", ActionRequest::Uninstall)])
        .await
        .unwrap();
    let pocs = store
        .product_on_clients("c1.example.org", true)
        .await
        .unwrap();
    assert_eq!(pocs.len(), 1, "setting linux cleared win: {pocs:?}");
    assert_eq!(
        (pocs[0].product_id.as_str(), pocs[0].action_request.as_str()),
        ("linux", "uninstall")
    );

    // Within one request the last action for a client wins.
    store
        .set_action_requests(&[
            act("c2.example.org", "linux", ActionRequest::Setup),
            act("c2.example.org", "win", ActionRequest::Once),
        ])
        .await
        .unwrap();
    let pocs = store
        .product_on_clients("c2.example.org", true)
        .await
        .unwrap();
    assert_eq!(pocs.len(), 1);
    assert_eq!(
        (pocs[0].product_id.as_str(), pocs[0].action_request.as_str()),
        ("win", "once")
    );

    // An unknown client fails the whole call.
    let err = store
        .set_action_requests(&[
            act("c3.example.org", "linux", ActionRequest::Setup),
            act("ghost.example.org", "linux", ActionRequest::Setup),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "client", .. }),
        "{err}"
    );
    let pocs = store
        .product_on_clients("c3.example.org", true)
        .await
        .unwrap();
    assert_eq!(
        pocs[0].product_id, "win",
        "nothing of the failed call landed"
    );
}

#[tokio::test]
async fn read_reports_clear_the_action_once_and_always_repushes() {
    let (_dir, store) = seeded().await;
    let revision = |rows: Vec<PushRecord>| rows[0].revision;
    let r1 = revision(store.pushes_of_client("c1.example.org").await.unwrap());
    // A stale revision changes nothing.
    let stale = store
        .report_read(D1, "c1.example.org", "win", r1 - 1)
        .await
        .unwrap();
    assert!(!stale.applied);
    // Another depot's report changes nothing.
    assert!(
        !store
            .report_read(D2, "c1.example.org", "win", r1)
            .await
            .unwrap()
            .applied
    );
    let read = store
        .report_read(D1, "c1.example.org", "win", r1)
        .await
        .unwrap();
    assert!(read.applied && !read.repushed && read.owed.is_empty());
    assert_eq!(read.action_request, "none");
    let poc = &store
        .product_on_clients("c1.example.org", false)
        .await
        .unwrap()[0];
    assert_eq!(
        (poc.action_request.as_str(), poc.action_progress.as_str()),
        ("none", "pxe boot configuration read")
    );
    // A repeated report is not applied twice.
    assert!(
        !store
            .report_read(D1, "c1.example.org", "win", r1)
            .await
            .unwrap()
            .applied
    );
    // Nothing is owed: the depot deleted the file itself.
    assert!(
        store
            .owed_clients(D1)
            .await
            .unwrap()
            .iter()
            .all(|c| c != "c1.example.org")
    );

    store
        .set_action_requests(&[ActionRecord {
            client_id: fqdn("c2.example.org"),
            product_id: product_id("win"),
            action: ActionRequest::Always,
        }])
        .await
        .unwrap();
    let r2 = revision(store.pushes_of_client("c2.example.org").await.unwrap());
    let always = store
        .report_read(D1, "c2.example.org", "win", r2)
        .await
        .unwrap();
    assert!(always.applied && always.repushed);
    assert_eq!(always.action_request, "always");
    assert_eq!(owed_pairs(&always.owed), pairs(&[(D1, "c2.example.org")]));
    assert!(revision(store.pushes_of_client("c2.example.org").await.unwrap()) > r2);
}

fn owed_pairs(owed: &[Owed]) -> BTreeSet<(String, String)> {
    owed.iter()
        .map(|o| (o.depot_id.clone(), o.client_id.clone()))
        .collect()
}

#[tokio::test]
async fn existence_is_checked_for_states_and_product_on_depots() {
    let (_dir, store) = seeded().await;
    let err = store
        .upsert_config_states(&[state("ghost.example.org", DEPOT_ID, &[D1])])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { id, .. } if id == "ghost.example.org"),
        "{err}"
    );
    let err = store
        .upsert_config_states(&[state("c1.example.org", "no.such.config", &["x"])])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "config", .. }));
    let err = store
        .upsert_product_on_depots(&[pod(D1, "9")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("win 9-1"), "{err}");
    let err = store
        .upsert_product_on_depots(&[pod("d9.example.org", "1")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "depot", .. }));
}
