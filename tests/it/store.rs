//! The store's triggers on a real SQLite file and a real PostgreSQL database: every kind of inventory change
//! owes exactly the pushes it should, and repeating a write owes nothing.

use std::collections::{BTreeMap, BTreeSet};

use pxeconf::configserver::store::*;

use crate::common::postgres::{Engine, location};
use crate::on_both_engines;
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

/// `revision` of `client` delivered to d1 over the new path.
fn delivered(client: &str, revision: u64) -> Ack {
    Ack::Delivered {
        client_id: client.into(),
        depot_id: D1.into(),
        revision,
        path: PushPath::New,
        template: None,
    }
}

/// Records [`delivered`].
async fn deliver(store: &Store, client: &str, revision: u64) {
    store
        .record_acks(&[delivered(client, revision)])
        .await
        .unwrap();
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

/// Whether `depot` is owed a push of `client`.
async fn is_owed(store: &Store, depot: &str, client: &str) -> bool {
    store
        .owed_clients(depot)
        .await
        .unwrap()
        .contains(&client.to_owned())
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
async fn seeded(engine: Engine) -> (tempfile::TempDir, Store) {
    let (dir, _, store) = seeded_at(engine).await;
    (dir, store)
}

/// [`seeded`], and where the store is (a path or a PostgreSQL URL).
async fn seeded_at(engine: Engine) -> (tempfile::TempDir, String, Store) {
    let dir = tempfile::tempdir().unwrap();
    let at = match engine {
        // A nested path: the store makes the directory.
        Engine::Sqlite => dir.path().join("nested/pxeconf.db").display().to_string(),
        Engine::Postgres => location(engine, dir.path()).await.unwrap(),
    };
    let store = Store::connect(&Location::parse(&at)).await.unwrap();
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
        .upsert_configs(&crate::common::config_defaults(D1))
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
    (dir, at, store)
}

async fn each_change_owes_exactly_its_pushes(engine: Engine) {
    let (_dir, store) = seeded(engine).await;

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
    // Removing the product from d1 removes c1's config there; c1 fails with the reason.
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

/// Registers product `id` 1-1 and installs it on `depots`.
async fn add_product(store: &Store, id: &str, depots: &[&str]) {
    store
        .upsert_products(&[ProductRecord {
            id: product_id(id),
            product_version: "1".into(),
            package_version: "1".into(),
            template: None,
        }])
        .await
        .unwrap();
    let pods: Vec<ProductOnDepotRecord> = depots
        .iter()
        .map(|d| ProductOnDepotRecord {
            depot_id: fqdn(d),
            product_id: product_id(id),
            product_version: "1".into(),
            package_version: "1".into(),
        })
        .collect();
    if !pods.is_empty() {
        store.upsert_product_on_depots(&pods).await.unwrap();
    }
}

fn act(c: &str, p: &str, a: ActionRequest) -> ActionRecord {
    ActionRecord {
        client_id: fqdn(c),
        product_id: product_id(p),
        action: a,
    }
}

/// A client's products with an action, newest first, as (product, action).
async fn actions_of(store: &Store, client: &str) -> Vec<(String, String)> {
    store
        .product_on_clients(client, true)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.product_id, p.action_request))
        .collect()
}

fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The push row of `client` on `depot`.
async fn row(store: &Store, client: &str, depot: &str) -> PushRecord {
    store
        .pushes_of_client(client)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.depot_id == depot)
        .unwrap()
}

async fn several_netboot_actions_stay_and_the_newest_is_pushed_then_the_next(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "linux", &[D1, D2]).await;
    // Setting linux keeps win; linux, set last, is pushed.
    let outcome = store
        .set_action_requests(&[act("c1.example.org", "linux", ActionRequest::Uninstall)])
        .await
        .unwrap();
    assert_eq!(owed(outcome), pairs(&[(D1, "c1.example.org")]));
    assert_eq!(
        actions_of(&store, "c1.example.org").await,
        owned(&[("linux", "uninstall"), ("win", "setup")])
    );
    let pushed = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (pushed.op, pushed.product_id.as_str()),
        (PushOp::Set, "linux")
    );

    // Its read uses up linux's action and pushes win, the next one.
    let read = store
        .report_read(D1, "c1.example.org", "linux", pushed.revision)
        .await
        .unwrap();
    assert!(read.applied && read.repushed, "{read:?}");
    assert_eq!(owed_pairs(&read.owed), pairs(&[(D1, "c1.example.org")]));
    let next = row(&store, "c1.example.org", D1).await;
    assert_eq!((next.op, next.product_id.as_str()), (PushOp::Set, "win"));
    assert!(next.revision > pushed.revision);
    assert_eq!(
        actions_of(&store, "c1.example.org").await,
        owned(&[("win", "setup")])
    );
    // The last one's read owes nothing more.
    let last = store
        .report_read(D1, "c1.example.org", "win", next.revision)
        .await
        .unwrap();
    assert!(last.applied && !last.repushed && last.owed.is_empty());

    // Within one request the later action is the newer; both stay.
    store
        .set_action_requests(&[
            act("c2.example.org", "linux", ActionRequest::Setup),
            act("c2.example.org", "win", ActionRequest::Once),
        ])
        .await
        .unwrap();
    assert_eq!(
        actions_of(&store, "c2.example.org").await,
        owned(&[("win", "once"), ("linux", "setup")])
    );
    assert_eq!(row(&store, "c2.example.org", D1).await.product_id, "win");
    // Setting linux again makes it the newest.
    store
        .set_action_requests(&[act("c2.example.org", "linux", ActionRequest::Setup)])
        .await
        .unwrap();
    assert_eq!(row(&store, "c2.example.org", D1).await.product_id, "linux");

    // An unknown client or product fails the whole call, naming what is
    // missing: clients are checked before products (one statement for
    // both), the first missing id in sort order.
    let missing = |actions: Vec<(&'static str, &'static str)>| {
        let store = &store;
        async move {
            let actions: Vec<_> = actions
                .into_iter()
                .map(|(c, p)| act(c, p, ActionRequest::Setup))
                .collect();
            match store.set_action_requests(&actions).await {
                Err(StoreError::NotFound { what, id }) => (what, id),
                other => panic!("expected NOT_FOUND, got {other:?}"),
            }
        }
    };
    let ghost = ("client", "ghost.example.org".to_owned());
    let c3 = "c3.example.org";
    assert_eq!(
        missing(vec![(c3, "linux"), ("ghost.example.org", "linux")]).await,
        ghost
    );
    let both = vec![("ghost.example.org", "nothing"), (c3, "zzz"), (c3, "aaa")];
    assert_eq!(missing(both).await, ghost);
    let products = vec![(c3, "zzz"), (c3, "aaa")];
    assert_eq!(missing(products).await, ("product", "aaa".to_owned()));
    assert_eq!(
        actions_of(&store, "c3.example.org").await,
        owned(&[("win", "setup")]),
        "nothing of the failed calls landed"
    );
}

async fn a_product_missing_on_the_depot_fails_until_a_product_on_depot_is_written(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "memtest", &[D2]).await;
    // c1 may hold win on d1: the depot is owed its removal, and c1 fails.
    let outcome = store
        .set_action_requests(&[act("c1.example.org", "memtest", ActionRequest::Setup)])
        .await
        .unwrap();
    // The removal of the config d1 held is owed; c1's action waits.
    assert_eq!(outcome.waiting, 1);
    assert_eq!(owed(outcome), pairs(&[(D1, "c1.example.org")]));
    let blocked = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (
            blocked.op,
            blocked.product_id.as_str(),
            blocked.blocked.as_str()
        ),
        (
            PushOp::Remove,
            "memtest",
            "product memtest is not installed on depot d1.example.org"
        )
    );
    // Once the removal is delivered nothing is owed: no retry every 30 s.
    deliver(&store, "c1.example.org", blocked.revision).await;
    assert!(!is_owed(&store, D1, "c1.example.org").await);
    // Other writes touching c1 leave it failed, owing nothing.
    assert!(
        owed(
            store
                .upsert_config_states(&[state("c1.example.org", SERVICE_URL, &["https://x"])])
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert_eq!(
        row(&store, "c1.example.org", D1).await.revision,
        blocked.revision
    );
    // A client that held nothing there is not owed even the removal.
    store.upsert_clients(&[client(4, 4)]).await.unwrap();
    store
        .upsert_config_states(&[state("c4.example.org", DEPOT_ID, &[D1])])
        .await
        .unwrap();
    let outcome = store
        .set_action_requests(&[act("c4.example.org", "memtest", ActionRequest::Setup)])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 1);
    assert!(owed(outcome).is_empty());
    assert!(!row(&store, "c4.example.org", D1).await.blocked.is_empty());

    // Installing memtest on d1 re-arms both.
    let outcome = store
        .upsert_product_on_depots(&[ProductOnDepotRecord {
            depot_id: fqdn(D1),
            product_id: product_id("memtest"),
            product_version: "1".into(),
            package_version: "1".into(),
        }])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 0);
    assert_eq!(
        owed(outcome),
        pairs(&[(D1, "c1.example.org"), (D1, "c4.example.org")])
    );
    let armed = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (armed.op, armed.product_id.as_str(), armed.blocked.as_str()),
        (PushOp::Set, "memtest", "")
    );
    let loaded = store
        .load_bundles(
            D1,
            &["c1.example.org".into()],
            Rows::Owed,
            Default::default(),
        )
        .await
        .unwrap();
    assert!(matches!(&loaded[0].job, Ok(Job::Set(b)) if b.product.id.as_str() == "memtest"));

    // A version on the depot that is not registered blocks too.
    let outcome = store
        .delete_products(&[(product_id("memtest"), "1".into(), "1".into())])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 2, "c1 and c4");
    assert_eq!(
        row(&store, "c1.example.org", D1).await.blocked,
        "product memtest 1-1 (the version on depot d1.example.org) is not registered"
    );

    // A depot that is not registered: the action waits for it; a client
    // without a netboot action does not wait.
    store.upsert_clients(&[client(5, 5)]).await.unwrap();
    let outcome = store
        .upsert_config_states(&[
            state("c4.example.org", DEPOT_ID, &["d9.example.org"]),
            state("c5.example.org", DEPOT_ID, &["d9.example.org"]),
        ])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 1, "c4 only");
}

async fn a_client_without_a_service_address_fails_until_it_has_one(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let set = row(&store, "c1.example.org", D1).await;
    deliver(&store, "c1.example.org", set.revision).await;
    let no_service = "c1.example.org has no service address (config clientconfig.configserver.url): its boot image could not reach the service";
    // An address that names nothing (slashes and blanks only) blocks c1 as
    // the depot would refuse it: d1 is owed the removal of the config it
    // holds, not a set it would refuse.
    let outcome = store
        .upsert_config_states(&[state("c1.example.org", SERVICE_URL, &[" / "])])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 1);
    assert_eq!(owed(outcome), pairs(&[(D1, "c1.example.org")]));
    let blocked = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (
            blocked.op,
            blocked.product_id.as_str(),
            blocked.blocked.as_str()
        ),
        (PushOp::Remove, "win", no_service)
    );
    // Once the removal is delivered nothing is owed: no retry on a backoff.
    deliver(&store, "c1.example.org", blocked.revision).await;
    // Its product leaving d1 now blocks it too: the status names that (the
    // product's reason comes first), owing d1 nothing more.
    let outcome = store
        .delete_product_on_depots(&[(fqdn(D1), product_id("win"))])
        .await
        .unwrap();
    assert!(!owed(outcome).contains(&(D1.to_owned(), "c1.example.org".to_owned())));
    assert_eq!(
        row(&store, "c1.example.org", D1).await.blocked,
        "product win is not installed on depot d1.example.org"
    );
    store
        .upsert_product_on_depots(&[pod(D1, "1")])
        .await
        .unwrap();
    assert_eq!(row(&store, "c1.example.org", D1).await.blocked, no_service);
    assert!(!is_owed(&store, D1, "c1.example.org").await);
    // Without a default every client without an address of its own (or on
    // its depot) waits; c1's own blank one still blocks it.
    let outcome = store
        .upsert_configs(&[ConfigRecord {
            id: SERVICE_URL.into(),
            default_values: vec![],
            description: String::new(),
        }])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 2, "c2 and c3");
    assert_eq!(
        owed(outcome),
        pairs(&[(D1, "c2.example.org"), (D2, "c3.example.org")])
    );
    assert_eq!(
        row(&store, "c3.example.org", D2).await.blocked,
        no_service.replace("c1.", "c3.")
    );
    // d1's address re-arms its clients without their own: c2, not c1.
    let outcome = store
        .upsert_config_states(&[state(D1, SERVICE_URL, &["https://branch:4447"])])
        .await
        .unwrap();
    assert_eq!(owed(outcome), pairs(&[(D1, "c2.example.org")]));
    // c1's blank address deleted, d1's applies: c1 is owed its config again.
    let outcome = store
        .delete_config_states(&[(fqdn("c1.example.org"), SERVICE_URL.into())])
        .await
        .unwrap();
    assert_eq!(outcome.waiting, 0, "of the clients this write touched");
    assert_eq!(owed(outcome), pairs(&[(D1, "c1.example.org")]));
    let armed = row(&store, "c1.example.org", D1).await;
    assert_eq!((armed.op, armed.blocked.as_str()), (PushOp::Set, ""));
    let loaded = store
        .load_bundles(
            D1,
            &["c1.example.org".into()],
            Rows::Owed,
            Default::default(),
        )
        .await
        .unwrap();
    assert!(
        matches!(&loaded[0].job, Ok(Job::Set(b)) if b.service_address == "https://branch:4447")
    );
}

async fn a_removal_still_owed_stays_owed_when_what_blocks_the_config_changes(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    // c1's config is on d1.
    let set = row(&store, "c1.example.org", D1).await;
    deliver(&store, "c1.example.org", set.revision).await;
    // d1's version of win is no longer registered: d1 is owed the removal.
    let outcome = store
        .delete_products(&[(product_id("win"), "1".into(), "1".into())])
        .await
        .unwrap();
    assert!(owed(outcome).contains(&(D1.to_owned(), "c1.example.org".to_owned())));
    // Before it is delivered, win leaves d1: the reason changes, and the
    // removal is still owed (d1 still holds the config).
    let outcome = store
        .delete_product_on_depots(&[(fqdn(D1), product_id("win"))])
        .await
        .unwrap();
    assert!(owed(outcome).contains(&(D1.to_owned(), "c1.example.org".to_owned())));
    // A write touching c1 after that changes nothing.
    let outcome = store
        .upsert_config_states(&[state("c1.example.org", SERVICE_URL, &["https://x"])])
        .await
        .unwrap();
    assert!(owed(outcome).is_empty());
    let blocked = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (blocked.op, blocked.blocked.as_str()),
        (
            PushOp::Remove,
            "product win is not installed on depot d1.example.org"
        )
    );
    assert!(is_owed(&store, D1, "c1.example.org").await);
}

async fn a_late_read_of_an_earlier_config_never_clears_an_action_set_since(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let r1 = row(&store, "c1.example.org", D1).await.revision;
    // The client reads r1 (setup); before the report lands, `once` is set.
    store
        .set_action_requests(&[act("c1.example.org", "win", ActionRequest::Once)])
        .await
        .unwrap();
    let r2 = row(&store, "c1.example.org", D1).await.revision;
    assert!(r2 > r1);
    let late = store
        .report_read(D1, "c1.example.org", "win", r1)
        .await
        .unwrap();
    assert!(!late.applied, "r1 booted the action set before `once`");
    assert_eq!(late.action_request, "once");
    assert_eq!(
        actions_of(&store, "c1.example.org").await,
        owned(&[("win", "once")])
    );
    // A revision the store never gave out for it changes nothing either.
    assert!(
        !store
            .report_read(D1, "c1.example.org", "win", r1 - 1)
            .await
            .unwrap()
            .applied
    );
    // The read of r2 uses `once` up.
    let read = store
        .report_read(D1, "c1.example.org", "win", r2)
        .await
        .unwrap();
    assert!(read.applied);
    assert_eq!(read.action_request, "none");
}

async fn a_read_of_a_product_set_before_another_clears_that_products_action(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "linux", &[D1, D2]).await;
    let r1 = row(&store, "c1.example.org", D1).await.revision;
    // The client reads win's config (r1); before the report lands, linux
    // is set: the row names linux now.
    store
        .set_action_requests(&[act("c1.example.org", "linux", ActionRequest::Setup)])
        .await
        .unwrap();
    let linux = row(&store, "c1.example.org", D1).await;
    assert_eq!(linux.product_id, "linux");
    let read = store
        .report_read(D1, "c1.example.org", "win", r1)
        .await
        .unwrap();
    assert!(read.applied, "win's read is a read: win's setup is used up");
    assert_eq!(
        actions_of(&store, "c1.example.org").await,
        owned(&[("linux", "setup")]),
        "win is not booted again after linux"
    );
    // linux's config is still owed, and a read of it clears linux.
    assert!(is_owed(&store, D1, "c1.example.org").await);
    let read = store
        .report_read(D1, "c1.example.org", "linux", linux.revision)
        .await
        .unwrap();
    assert!(read.applied);
    assert!(actions_of(&store, "c1.example.org").await.is_empty());
}

/// At the revision of a depot's row, the row names what was pushed: a
/// report of another product at that revision, or of anything at the
/// revision of a removal (no config to read), is no read — it used up
/// another product's action (a former depot could so cancel the action of
/// a client that had moved on).
async fn a_read_at_a_revision_that_pushed_something_else_changes_nothing(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "linux", &[D1, D2]).await;
    store
        .set_action_requests(&[act("c1.example.org", "linux", ActionRequest::Setup)])
        .await
        .unwrap();
    let linux = row(&store, "c1.example.org", D1).await;
    assert_eq!(linux.product_id, "linux");
    let read = store
        .report_read(D1, "c1.example.org", "win", linux.revision)
        .await
        .unwrap();
    assert!(!read.applied, "linux's revision is no read of win");
    let both = owned(&[("linux", "setup"), ("win", "setup")]);
    assert_eq!(actions_of(&store, "c1.example.org").await, both);

    // The client moves to d2: d1's row is a removal.
    store
        .upsert_config_states(&[state("c1.example.org", DEPOT_ID, &[D2])])
        .await
        .unwrap();
    let removal = row(&store, "c1.example.org", D1).await;
    assert_eq!(removal.op, PushOp::Remove, "{removal:?}");
    for product in ["win", "linux"] {
        let read = store
            .report_read(D1, "c1.example.org", product, removal.revision)
            .await
            .unwrap();
        assert!(!read.applied, "{product} at the removal's revision");
    }
    assert_eq!(actions_of(&store, "c1.example.org").await, both);
}

async fn a_revision_far_ahead_from_a_depot_does_not_break_the_sequence(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let r1 = row(&store, "c1.example.org", D1).await.revision;
    // A depot's ABORTED names a revision no clock of this store gave out.
    store
        .supersede(D1, "c1.example.org", r1, u64::MAX, "NEWER_HELD")
        .await
        .unwrap();
    store
        .supersede(D1, "c1.example.org", r1, i64::MAX as u64, "NEWER_HELD")
        .await
        .unwrap();
    store
        .set_action_requests(&[act("c1.example.org", "win", ActionRequest::Once)])
        .await
        .unwrap();
    let next = row(&store, "c1.example.org", D1).await.revision;
    assert!(next > r1 && next < i64::MAX as u64 / 2, "{next}");
}

/// d1's check finds it holds c3 (whose depot is d2) at `revision`, with
/// no row for it there: a removal is owed to d1.
async fn d1_checked_holding_c3(store: &Store, revision: u64) {
    let held = std::collections::HashMap::from([("c3.example.org".to_owned(), revision)]);
    let owed = store.verify_depot(D1, &held).await.unwrap();
    assert!(
        owed.iter()
            .any(|o| o.depot_id == D1 && o.client_id == "c3.example.org"),
        "{owed:?}"
    );
}

async fn a_config_held_without_a_row_is_removed_at_a_revision_past_the_depots(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    // d1 holds c3 (whose depot is d2) at a revision ahead of this store's
    // sequence, as after a restore from a backup: the removal it is owed
    // must be newer, or the depot keeps the config (NEWER_HELD).
    let ahead = row(&store, "c3.example.org", D2).await.revision + 3_600_000_000;
    d1_checked_holding_c3(&store, ahead).await;
    let removal = row(&store, "c3.example.org", D1).await;
    assert_eq!(removal.op, PushOp::Remove);
    assert!(removal.revision > ahead, "{} <= {ahead}", removal.revision);
}

/// What a depot's check owes is announced to the replicas holding the
/// depots (PostgreSQL): bringing a client the depot held without a row in
/// line may owe pushes to another depot, held by another replica. Before,
/// the check announced nothing, and that replica pushed them at its next
/// periodic reload (~30 s).
async fn a_depots_check_announces_what_it_owes(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let listener = store.listen_owed().await.unwrap();
    // d1 holds c3 (whose depot is d2) without a row for it there.
    let revision = row(&store, "c3.example.org", D2).await.revision;
    d1_checked_holding_c3(&store, revision).await;
    // SQLite: one configserver, nothing to announce to.
    let Some(mut listener) = listener else {
        return;
    };
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("the check announced what it owes")
        .unwrap();
    let announcement = Announcement::from_notification(&heard);
    assert_eq!(announcement.depot_id, D1);
    assert_eq!(announcement.clients, ["c3.example.org"]);
}

async fn a_blocked_config_on_a_depot_the_client_left_is_no_failure_there(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "memtest", &[D2]).await;
    // c1 (on d1) and c2 (on d1) are to boot memtest, which d1 lacks.
    for c in ["c1.example.org", "c2.example.org"] {
        store
            .set_action_requests(&[act(c, "memtest", ActionRequest::Setup)])
            .await
            .unwrap();
        assert!(!row(&store, c, D1).await.blocked.is_empty());
    }
    // c1's removal there was delivered; c2's is still owed.
    let c1 = row(&store, "c1.example.org", D1).await;
    deliver(&store, "c1.example.org", c1.revision).await;
    // Both move to d2: d1 shows no failure for them any more; c2's removal
    // there is still owed, c1's is done.
    let outcome = store
        .upsert_config_states(&[
            state("c1.example.org", DEPOT_ID, &[D2]),
            state("c2.example.org", DEPOT_ID, &[D2]),
        ])
        .await
        .unwrap();
    let owed = owed(outcome);
    for c in ["c1.example.org", "c2.example.org"] {
        let left = row(&store, c, D1).await;
        assert_eq!(
            (left.op, left.blocked.as_str()),
            (PushOp::Remove, ""),
            "{c}"
        );
        assert!(
            owed.contains(&(D2.to_owned(), c.to_owned())),
            "{c}: {owed:?}"
        );
    }
    let c1 = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        c1.delivered_revision, c1.revision,
        "nothing to remove from d1"
    );
    assert!(!owed.contains(&(D1.to_owned(), "c1.example.org".to_owned())));
    assert!(owed.contains(&(D1.to_owned(), "c2.example.org".to_owned())));
    let c2 = row(&store, "c2.example.org", D1).await;
    assert!(
        c2.revision > c2.delivered_revision,
        "c2's removal still owed"
    );
}

async fn deleting_clients_never_deletes_a_depots_states(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    store
        .upsert_config_states(&[state(D1, SERVICE_URL, &["https://branch:4447"])])
        .await
        .unwrap();
    // A list of hosts to delete that names a depot too (as opsi's may).
    let outcome = store
        .delete_clients(&[fqdn(D1), fqdn("c2.example.org")])
        .await
        .unwrap();
    assert!(outcome.affected >= 1, "c2 went");
    let url = store
        .config_values("c1.example.org", &[SERVICE_URL])
        .await
        .unwrap();
    assert_eq!(
        url[SERVICE_URL],
        vec!["https://branch:4447"],
        "d1's state stays"
    );
    assert!(
        store
            .pushes_of_client("c2.example.org")
            .await
            .unwrap()
            .iter()
            .all(|r| r.op == PushOp::Remove)
    );
}

async fn a_deleted_clients_rows_go_once_their_removal_is_delivered(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    for client in ["c1.example.org", "c2.example.org"] {
        let set = row(&store, client, D1).await;
        store
            .record_acks(&[delivered(client, set.revision)])
            .await
            .unwrap();
    }
    store
        .delete_clients(&[fqdn("c1.example.org")])
        .await
        .unwrap();
    // c2 stays a client; its action is cleared: its removal row stays.
    store
        .set_action_requests(&[act("c2.example.org", "win", ActionRequest::None)])
        .await
        .unwrap();
    let (gone, kept) = (
        row(&store, "c1.example.org", D1).await,
        row(&store, "c2.example.org", D1).await,
    );
    assert_eq!((gone.op, kept.op), (PushOp::Remove, PushOp::Remove));
    store
        .record_acks(&[
            delivered("c1.example.org", gone.revision),
            delivered("c2.example.org", kept.revision),
        ])
        .await
        .unwrap();
    assert!(
        store
            .pushes_of_client("c1.example.org")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        row(&store, "c2.example.org", D1).await.delivered_revision,
        kept.revision
    );
    // A client whose config was read holds nothing anywhere: its rows go
    // with it.
    let c3 = row(&store, "c3.example.org", D2).await;
    assert!(
        store
            .report_read(D2, "c3.example.org", "win", c3.revision)
            .await
            .unwrap()
            .applied
    );
    store
        .delete_clients(&[fqdn("c3.example.org")])
        .await
        .unwrap();
    assert!(
        store
            .pushes_of_client("c3.example.org")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn importing_an_action_again_keeps_its_place(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "linux", &[D1, D2]).await;
    store
        .set_action_requests(&[act("c1.example.org", "linux", ActionRequest::Setup)])
        .await
        .unwrap();
    let import = |action| {
        let store = &store;
        async move {
            let inventory = Inventory {
                actions: vec![act("c1.example.org", "win", action)],
                ..Default::default()
            };
            let outcome = store.import_inventory(&inventory, false).await.unwrap();
            let actions = outcome.sections.iter().find(|s| s.0 == "action_requests");
            actions.map_or(0, |s| s.2)
        }
    };
    // win's setup again (a dump imported twice): nothing changes, linux
    // (set since) stays the one pushed.
    assert_eq!(import(ActionRequest::Setup).await, 0);
    assert_eq!(row(&store, "c1.example.org", D1).await.product_id, "linux");
    // A changed action is written, and is the newest.
    assert_eq!(import(ActionRequest::Once).await, 1);
    assert_eq!(row(&store, "c1.example.org", D1).await.product_id, "win");
}

async fn a_client_written_without_a_host_key_keeps_its_key(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let key = |store: &Store| {
        let store = store.clone();
        async move {
            let loaded = store
                .load_bundles(
                    D1,
                    &["c1.example.org".into()],
                    Rows::Owed,
                    Default::default(),
                )
                .await
                .unwrap();
            match &loaded[0].job {
                Ok(Job::Set(b)) => b.client.host_key.expose().to_owned(),
                other => panic!("expected a set, got {other:?}"),
            }
        }
    };
    let before = key(&store).await;
    assert!(!before.is_empty());
    // An opsi dump taken by an account that may not read host keys.
    let keyless = Client {
        host_key: Secret::new(""),
        ..client(1, 1)
    };
    let outcome = store.upsert_clients(&[keyless]).await.unwrap();
    assert_eq!(outcome.affected, 0, "nothing changed");
    assert_eq!(key(&store).await, before);
}

async fn a_depots_config_state_is_the_value_of_its_clients_without_their_own(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    store
        .upsert_config_states(&[state("c2.example.org", SERVICE_URL, &["https://own:4447"])])
        .await
        .unwrap();
    // d1's value re-pushes d1's clients that have none of their own.
    assert_eq!(
        owed(
            store
                .upsert_config_states(&[state(D1, SERVICE_URL, &["https://branch:4447"])])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c1.example.org")])
    );
    let url = async |client: &str| {
        store.config_values(client, &[SERVICE_URL]).await.unwrap()[SERVICE_URL].clone()
    };
    assert_eq!(url("c1.example.org").await, vec!["https://branch:4447"]);
    assert_eq!(url("c2.example.org").await, vec!["https://own:4447"]);
    assert_eq!(
        url("c3.example.org").await,
        vec!["https://cs.example.org:4447"],
        "d2 has none: the default"
    );
    // The bundle carries the same value the legacy look-up answers.
    let loaded = store
        .load_bundles(
            D1,
            &["c1.example.org".into(), "c2.example.org".into()],
            Rows::Held,
            Default::default(),
        )
        .await
        .unwrap();
    let service = |i: usize| match &loaded[i].job {
        Ok(Job::Set(b)) => b.service_address.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (service(0).as_str(), service(1).as_str()),
        ("https://branch:4447", "https://own:4447")
    );
    // A new default reaches only clients whose depot has no value.
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
        pairs(&[(D2, "c3.example.org")])
    );
    // The depot id has no depot layer; deleting d1's value re-pushes c1.
    assert!(
        owed(
            store
                .upsert_config_states(&[state(D1, DEPOT_ID, &[D2])])
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert_eq!(
        owed(
            store
                .delete_config_states(&[(fqdn(D1), SERVICE_URL.into())])
                .await
                .unwrap()
        ),
        pairs(&[(D1, "c1.example.org")])
    );
    assert_eq!(url("c1.example.org").await, vec!["https://cfg:4447"]);
}

async fn a_mac_or_a_uuid_belongs_to_one_client(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let mut dup = client(4, 4);
    dup.mac = client(1, 1).mac;
    let err = store
        .upsert_clients(&[client(5, 5), dup])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "hardware address 02:00:00:00:01:01 of client c4.example.org is already used by client c1.example.org"
    );
    assert!(matches!(err, StoreError::AlreadyExists { .. }));
    assert!(
        store.client("c5.example.org").await.unwrap().is_none(),
        "all or nothing"
    );
    let mut dup = client(4, 4);
    dup.uuid = client(2, 2).uuid;
    let err = store.upsert_clients(&[dup]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "system UUID 00000000-0000-4000-8000-000000000002 of client c4.example.org is already used by client c2.example.org"
    );
    // Two new clients with one MAC.
    let (mut a, mut b) = (client(6, 6), client(7, 7));
    b.mac = a.mac;
    let err = store.upsert_clients(&[a.clone(), b]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("of client c7.example.org is already used by client c6.example.org"),
        "{err}"
    );
    // Swapping MACs in one write is fine, and so are opsi's placeholders.
    let (mut c1, mut c2) = (client(1, 1), client(2, 2));
    std::mem::swap(&mut c1.mac, &mut c2.mac);
    store.upsert_clients(&[c1, c2]).await.unwrap();
    a.mac = Some(Mac::parse("00:00:00:00:00:00", "m").unwrap());
    let mut b = client(7, 7);
    b.mac = a.mac;
    store.upsert_clients(&[a, b]).await.unwrap();
}

async fn read_reports_clear_the_action_once_and_always_repushes(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let revision = |rows: Vec<PushRecord>| rows[0].revision;
    let r1 = revision(store.pushes_of_client("c1.example.org").await.unwrap());
    // A revision older than the action it would have booted (revisions are
    // microseconds of a hybrid clock: 1 is long before) changes nothing.
    let stale = store
        .report_read(D1, "c1.example.org", "win", 1)
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

/// Each kind of report changes what it says and nothing else: a report of a
/// product the client has no action of, and a stale one, leave the row as
/// it was; the read records its time; a repeat changes only whether its
/// files are still there.
async fn a_read_report_changes_only_what_it_says(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let rows = || async { store.pushes_of_client("c1.example.org").await.unwrap() };
    let before = rows().await;
    let r1 = before[0].revision;
    let at = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let report = |revision: u64, product: &str, files_present: bool| ReadReport {
        depot_id: D1.into(),
        client_id: "c1.example.org".into(),
        product_id: product.into(),
        revision,
        epoch: String::new(),
        files_present,
        read_at: Some(at),
    };
    let other = store
        .record_read(&report(r1, "other", false))
        .await
        .unwrap();
    assert!(!other.applied);
    assert_eq!(other.action_request, "none", "no action of that product");
    assert_eq!(rows().await, before, "a report of another product");
    let stale = store.record_read(&report(1, "win", false)).await.unwrap();
    assert!(!stale.applied);
    assert_eq!(stale.action_request, "setup");
    assert_eq!(rows().await, before, "a stale report");

    let read = store.record_read(&report(r1, "win", true)).await.unwrap();
    assert!(read.applied && !read.repushed && read.owed.is_empty());
    let after = rows().await;
    assert_eq!(
        (
            after[0].read_revision,
            after[0].read_at,
            after[0].read_files_present
        ),
        (r1, Some(at), true)
    );
    let repeat = store.record_read(&report(r1, "win", true)).await.unwrap();
    assert!(!repeat.applied);
    assert_eq!(repeat.action_request, "none");
    assert_eq!(rows().await, after, "the same news again");
    store.record_read(&report(r1, "win", false)).await.unwrap();
    let gone = rows().await;
    assert!(!gone[0].read_files_present, "the files are gone now");
    assert_eq!(
        PushRecord {
            read_files_present: true,
            updated_at: after[0].updated_at,
            ..gone[0].clone()
        },
        after[0],
        "nothing else changed"
    );
}

fn owed_pairs(owed: &[Owed]) -> BTreeSet<(String, String)> {
    owed.iter()
        .map(|o| (o.depot_id.clone(), o.client_id.clone()))
        .collect()
}

async fn existence_is_checked_for_states_and_product_on_depots(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
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

async fn a_depots_template_note_is_kept_for_its_revision_only(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let pushed = row(&store, "c1.example.org", D1).await;
    let note = |revision: u64, template: &str| TemplateNote {
        client_id: "c1.example.org".into(),
        depot_id: D1.into(),
        revision,
        template: template.into(),
        reason: format!("why {template}"),
    };
    store
        .record_templates(&[
            note(pushed.revision, "winpe.efi"),
            note(pushed.revision - 1, "stale"),
        ])
        .await
        .unwrap();
    let kept = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (kept.template.as_str(), kept.template_reason.as_str()),
        ("winpe.efi", "why winpe.efi")
    );
}

/// A batch of push results lands as one after the other would have left
/// it: the highest delivered revision wins, a failed try followed by the
/// delivery of the same revision ends delivered, the template is kept only
/// for the revision it was used for, and a failure of the owed revision
/// counts an attempt.
async fn a_batch_of_push_results_ends_as_applied_one_by_one(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let c1 = row(&store, "c1.example.org", D1).await;
    let c2 = row(&store, "c2.example.org", D1).await;
    let delivered = |client: &str, revision: u64, template: Option<&str>| Ack::Delivered {
        client_id: client.into(),
        depot_id: D1.into(),
        revision,
        path: PushPath::New,
        template: template.map(|t| UsedTemplate {
            name: t.into(),
            reason: format!("why {t}"),
        }),
    };
    let failed = |client: &str, revision: u64| Ack::Failed {
        client_id: client.into(),
        depot_id: D1.into(),
        revision,
        error: "depot unreachable".into(),
        next_attempt_at: std::time::SystemTime::now(),
    };
    store
        .record_acks(&[
            failed("c1.example.org", c1.revision),
            delivered("c1.example.org", c1.revision, Some("winpe.efi")),
            delivered("c1.example.org", c1.revision - 1, Some("stale")),
            failed("c2.example.org", c2.revision),
        ])
        .await
        .unwrap();
    let c1 = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (
            c1.delivered_revision,
            c1.attempts,
            c1.last_error.as_str(),
            c1.template.as_str(),
            c1.path
        ),
        (c1.revision, 0, "", "winpe.efi", Some(PushPath::New))
    );
    let c2 = row(&store, "c2.example.org", D1).await;
    assert_eq!(
        (c2.delivered_revision, c2.attempts, c2.last_error.as_str()),
        (0, 1, "depot unreachable")
    );
    // An older revision's result arriving later moves nothing back, not
    // even the path it went by.
    let mut old = delivered("c1.example.org", c1.revision - 1, Some("old"));
    if let Ack::Delivered { path, .. } = &mut old {
        *path = PushPath::Legacy;
    }
    store.record_acks(&[old]).await.unwrap();
    let again = row(&store, "c1.example.org", D1).await;
    assert_eq!(
        (
            again.delivered_revision,
            again.template.as_str(),
            again.path
        ),
        (c1.revision, "winpe.efi", Some(PushPath::New))
    );
    // So does a failure of the delivered revision (the same push sent
    // twice, over a depot's old endpoint and its new one).
    store
        .record_acks(&[failed("c1.example.org", c1.revision)])
        .await
        .unwrap();
    let again = row(&store, "c1.example.org", D1).await;
    assert_eq!((again.attempts, again.last_error.as_str()), (0, ""));
}

/// A bundle carries the property states of its own product — the client's
/// over its depot's — and nothing of the other products on the depot or on
/// the client: reading only the products its push rows name, the snapshot
/// must still find every row of the pushed one.
async fn a_bundle_carries_the_properties_of_its_product_only(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    add_product(&store, "office", &[D1]).await;
    let prop = |object: &str, product: &str, id: &str, value: &str| PropertyStateRecord {
        object_id: fqdn(object),
        product_id: product_id(product),
        property_id: id.into(),
        values: vec![value.into()],
    };
    store
        .upsert_property_states(&[
            prop(D1, "win", "lang", "de"),
            prop(D1, "win", "edition", "pro"),
            prop(D1, "office", "lang", "fr"),
            prop(D1, "office", "suite", "full"),
            prop("c1.example.org", "win", "lang", "en"),
            prop("c1.example.org", "office", "suite", "lite"),
        ])
        .await
        .unwrap();
    store
        .set_action_requests(&[act("c1.example.org", "office", ActionRequest::None)])
        .await
        .unwrap();
    let loaded = store
        .load_bundles(
            D1,
            &["c1.example.org".into(), "c2.example.org".into()],
            Rows::Owed,
            Default::default(),
        )
        .await
        .unwrap();
    let properties = |i: usize| match &loaded[i].job {
        Ok(Job::Set(b)) => {
            assert_eq!(b.product.id.as_str(), "win");
            assert_eq!(b.action_request, ActionRequest::Setup);
            b.properties.clone()
        }
        _ => panic!("{} has no bundle", loaded[i].client_id),
    };
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].client_id, "c1.example.org");
    assert_eq!(properties(0), map(&[("edition", "pro"), ("lang", "en")]));
    assert_eq!(properties(1), map(&[("edition", "pro"), ("lang", "de")]));
}

/// PostgreSQL's connections run without JIT compilation: with it, every
/// one-client admin write paid ~27 ms compiling its reconcile query
/// (PostgreSQL guesses 1,000 rows per `json_each` list). SQLite has no such
/// setting.
async fn the_store_turns_postgres_jit_off(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let jit = store.postgres_setting("jit").await.unwrap();
    match engine {
        Engine::Postgres => assert_eq!(jit.as_deref(), Some("off")),
        Engine::Sqlite => assert_eq!(jit, None),
    }
}

/// Connections stay open on a quiet site: the first write after a pause
/// does not open one on its way to the depot (SQLite: one writer and four
/// readers; PostgreSQL: two at least, opened in the background).
async fn the_store_keeps_connections_open(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let least = match engine {
        Engine::Sqlite => 5,
        Engine::Postgres => 2,
    };
    let (_, kept) = store.connections();
    assert!(kept >= least, "{kept} kept open");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.connections().0 < kept && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(store.connections().0 >= kept, "{:?}", store.connections());
}

/// Writes of every kind at once all land, none failing busy: on SQLite the
/// action writes and push results go to the store's own writer and the
/// others through sqlx's, one transaction at a time between the two (a read
/// report reads before it writes: a commit of the other writer in between
/// would fail it with SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
async fn writes_of_every_kind_at_once_all_land(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..600u32 {
        let store = store.clone();
        writes.spawn(async move {
            let n = 1 + i % 2;
            let client = format!("c{n}.example.org");
            let written = match i % 3 {
                0 => store
                    .set_action_requests(&[act(&client, "win", ActionRequest::Setup)])
                    .await
                    .map(drop),
                1 => match store.pushes_of_client(&client).await {
                    Ok(rows) => store
                        .report_read(D1, &client, "win", rows[0].revision)
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                },
                _ => store.record_acks(&[delivered(&client, u64::from(i))]).await,
            };
            written.map_err(|e| format!("write {i}: {e}"))
        });
    }
    while let Some(written) = writes.join_next().await {
        written.unwrap().unwrap();
    }
    // One last action each, and the push rows owe it.
    let last = [
        act("c1.example.org", "win", ActionRequest::Setup),
        act("c2.example.org", "win", ActionRequest::Setup),
    ];
    store.set_action_requests(&last).await.unwrap();
    for client in ["c1.example.org", "c2.example.org"] {
        assert_eq!(actions_of(&store, client).await, owned(&[("win", "setup")]));
        let row = row(&store, client, D1).await;
        assert!(row.revision > row.delivered_revision, "{row:?}");
    }
}

on_both_engines!(
    the_store_keeps_connections_open,
    writes_of_every_kind_at_once_all_land,
    the_store_turns_postgres_jit_off,
    each_change_owes_exactly_its_pushes,
    several_netboot_actions_stay_and_the_newest_is_pushed_then_the_next,
    a_product_missing_on_the_depot_fails_until_a_product_on_depot_is_written,
    a_client_without_a_service_address_fails_until_it_has_one,
    a_start_after_an_upgrade_brings_configs_of_older_rules_in_line_once,
    a_removal_still_owed_stays_owed_when_what_blocks_the_config_changes,
    a_late_read_of_an_earlier_config_never_clears_an_action_set_since,
    a_read_of_a_product_set_before_another_clears_that_products_action,
    a_read_at_a_revision_that_pushed_something_else_changes_nothing,
    a_revision_far_ahead_from_a_depot_does_not_break_the_sequence,
    a_config_held_without_a_row_is_removed_at_a_revision_past_the_depots,
    a_depots_check_announces_what_it_owes,
    a_blocked_config_on_a_depot_the_client_left_is_no_failure_there,
    deleting_clients_never_deletes_a_depots_states,
    a_deleted_clients_rows_go_once_their_removal_is_delivered,
    importing_an_action_again_keeps_its_place,
    a_client_written_without_a_host_key_keeps_its_key,
    a_depots_config_state_is_the_value_of_its_clients_without_their_own,
    a_mac_or_a_uuid_belongs_to_one_client,
    read_reports_clear_the_action_once_and_always_repushes,
    a_read_report_changes_only_what_it_says,
    existence_is_checked_for_states_and_product_on_depots,
    a_depots_template_note_is_kept_for_its_revision_only,
    a_batch_of_push_results_ends_as_applied_one_by_one,
    a_bundle_carries_the_properties_of_its_product_only,
    a_database_error_is_busy_by_its_own_engines_codes,
    a_write_naming_one_thing_twice_takes_the_last,
    a_client_and_a_depot_never_share_an_id,
);

/// A write that names one thing twice takes the last, on both engines (an
/// opsi dump or a script's list may repeat an entry): PostgreSQL refused
/// such an upsert as a whole ("cannot affect row a second time", answered
/// INTERNAL), SQLite applied both.
async fn a_write_naming_one_thing_twice_takes_the_last(engine: Engine) {
    let (_dir, store) = seeded(engine).await;
    let mut first = client(1, 1);
    first.ip_address = "10.0.0.1".into();
    let mut second = client(1, 1);
    second.ip_address = "10.0.0.2".into();
    let outcome = store.upsert_clients(&[first, second]).await.unwrap();
    assert_eq!(outcome.affected, 1);
    let stored = store.client("c1.example.org").await.unwrap().unwrap();
    assert_eq!(stored.ip_address, "10.0.0.2");

    store
        .upsert_config_states(&[
            state("c1.example.org", SERVICE_URL, &["https://one:4447"]),
            state("c1.example.org", SERVICE_URL, &["https://two:4447"]),
        ])
        .await
        .unwrap();
    let url = store
        .config_values("c1.example.org", &[SERVICE_URL])
        .await
        .unwrap();
    assert_eq!(url[SERVICE_URL], vec!["https://two:4447"]);

    store
        .upsert_property_states(&[
            property("c1.example.org", &["de"]),
            property("c1.example.org", &["en"]),
        ])
        .await
        .unwrap();
    let properties = store
        .property_values("c1.example.org", "win", D1)
        .await
        .unwrap();
    assert_eq!(properties["lang"], "en");

    for result in [
        store
            .upsert_products(&[product("1", None), product("1", Some("x"))])
            .await,
        store
            .upsert_product_on_depots(&[pod(D1, "1"), pod(D1, "1")])
            .await,
        store
            .upsert_configs(
                &[
                    crate::common::config_defaults(D1),
                    crate::common::config_defaults(D1),
                ]
                .concat(),
            )
            .await,
    ] {
        result.unwrap();
    }
    let depot = DepotRecord {
        id: fqdn(D1),
        endpoint: Endpoint::parse("http://d1.example.org:50051", "endpoint").unwrap(),
        host_key: Secret::new(format!("host-key-of-{D1}-0123456789abcdef")),
        description: String::new(),
    };
    let renamed = DepotRecord {
        description: "the branch office".into(),
        ..depot.clone()
    };
    store.upsert_depots(&[depot, renamed]).await.unwrap();
    let depots = store.depots().await.unwrap();
    let d1 = depots.iter().find(|d| d.id.as_str() == D1).unwrap();
    assert_eq!(d1.description, "the branch office");

    // A depot's earlier entry does not hold its key: [A(k), B(k), A(k')]
    // gives B the key A gives up in the same write.
    let new_depot = |id: &str, key: &str| DepotRecord {
        id: fqdn(id),
        endpoint: Endpoint::parse(&format!("http://{id}:50051"), "endpoint").unwrap(),
        host_key: Secret::new(format!("host-key-{key}-0123456789abcdef")),
        description: String::new(),
    };
    let (a, b) = ("d8.example.org", "d9.example.org");
    store
        .upsert_depots(&[new_depot(a, "k"), new_depot(b, "k"), new_depot(a, "k2")])
        .await
        .unwrap();
    let key_of = |id: &'static str| {
        let store = &store;
        async move {
            let depots = store.depots().await.unwrap();
            let d = depots.iter().find(|d| d.id.as_str() == id).unwrap();
            d.host_key.expose().to_owned()
        }
    };
    assert_eq!(key_of(a).await, "host-key-k2-0123456789abcdef");
    assert_eq!(key_of(b).await, "host-key-k-0123456789abcdef");
    // A stored depot gives up its key in the write that gives it to another.
    store
        .upsert_depots(&[new_depot(b, "k3"), new_depot(a, "k4")])
        .await
        .unwrap();
    store
        .upsert_depots(&[new_depot(b, "k4"), new_depot(a, "k5")])
        .await
        .unwrap();
    assert_eq!(key_of(b).await, "host-key-k4-0123456789abcdef");
    // One that keeps it is still refused.
    let err = store
        .upsert_depots(&[new_depot(a, "k4")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
}

/// A client and a depot never share an id (opsi keeps all hosts in one
/// table): a client with a depot's id, or a depot with a client's, is
/// refused and nothing of the write lands — else deleting that client
/// would delete the depot's states, which its clients inherit.
async fn a_client_and_a_depot_never_share_an_id(engine: Engine) {
    let (_dir, at, store) = seeded_at(engine).await;
    store
        .upsert_config_states(&[state(D1, SERVICE_URL, &["https://branch:4447"])])
        .await
        .unwrap();
    let mut as_depot = client(7, 7);
    as_depot.fqdn = fqdn(D1);
    let err = store
        .upsert_clients(&[client(8, 8), as_depot])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::HostIdTaken { what: "client", id, other: "depot" } if id == D1),
        "{err:?}"
    );
    assert!(
        store.client("c8.example.org").await.unwrap().is_none(),
        "nothing landed"
    );
    assert!(store.client(D1).await.unwrap().is_none());

    let as_client = DepotRecord {
        id: fqdn("c1.example.org"),
        endpoint: Endpoint::parse("http://c1.example.org:50051", "endpoint").unwrap(),
        host_key: Secret::new("host-key-of-c1-0123456789abcdef".to_owned()),
        description: String::new(),
    };
    let err = store.upsert_depots(&[as_client]).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::HostIdTaken {
                what: "depot",
                other: "client",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!store.depot_exists("c1.example.org").await.unwrap());
    // A list of hosts to delete may name the depot: its states stay.
    store.delete_clients(&[fqdn(D1)]).await.unwrap();
    let url = store
        .config_values("c1.example.org", &[SERVICE_URL])
        .await
        .unwrap();
    assert_eq!(url[SERVICE_URL], vec!["https://branch:4447"]);

    // A client an older version let in with the depot's id is deleted
    // without the depot's states, which are its clients' too.
    raw(
        engine,
        &at,
        &[
            "INSERT INTO clients (id, hardware_address, system_uuid, ip_address, host_key)
           VALUES ('d1.example.org', '', '', '', '')",
        ],
    )
    .await;
    assert!(store.client(D1).await.unwrap().is_some());
    store.delete_clients(&[fqdn(D1)]).await.unwrap();
    assert!(store.client(D1).await.unwrap().is_none());
    let url = store
        .config_values("c1.example.org", &[SERVICE_URL])
        .await
        .unwrap();
    assert_eq!(url[SERVICE_URL], vec!["https://branch:4447"]);
}

/// A database error is busy (a retry can succeed: callers answer
/// UNAVAILABLE) by its own engine's codes: PostgreSQL's SQLSTATEs are not
/// read as SQLite's numbers (42501, a missing grant, and 22022 end in
/// SQLite's BUSY and LOCKED bytes 0x05 and 0x06).
async fn a_database_error_is_busy_by_its_own_engines_codes(engine: Engine) {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let at = location(engine, dir.path()).await.unwrap();
    // The store made its database (and, on SQLite, its file).
    let _store = Store::connect(&Location::parse(&at)).await.unwrap();
    let busy = |e: sqlx::Error| StoreError::Db(e).is_busy();
    match engine {
        Engine::Postgres => {
            let mut c = sqlx::PgConnection::connect(&at).await.unwrap();
            let raised = |code: &str| {
                format!("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$")
            };
            for (code, expected) in [
                ("42501", false),
                ("22021", false),
                ("22022", false),
                ("23505", false),
                ("40001", true),
                ("40P01", true),
                ("08006", true),
                ("57P01", true),
            ] {
                // The codes are this test's own constants.
                let sql = sqlx::AssertSqlSafe(raised(code));
                let e = sqlx::query(sql).execute(&mut c).await.unwrap_err();
                assert_eq!(busy(e), expected, "SQLSTATE {code}");
            }
        }
        Engine::Sqlite => {
            let url = format!("sqlite://{at}");
            let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut holder)
                .await
                .unwrap();
            let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("PRAGMA busy_timeout = 0")
                .execute(&mut other)
                .await
                .unwrap();
            let e = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut other)
                .await
                .unwrap_err();
            assert!(busy(e), "SQLITE_BUSY");
            sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
            let e = sqlx::query("SELECT * FROM no_such_table")
                .execute(&mut other)
                .await
                .unwrap_err();
            assert!(
                !busy(e),
                "an error that is not SQLITE_BUSY or SQLITE_LOCKED"
            );
        }
    }
}

/// Runs `statements` on the store at `at` over a connection of its own (as
/// another program, e.g. an older version, would have written).
async fn raw(engine: Engine, at: &str, statements: &[&'static str]) {
    use sqlx::Connection;
    match engine {
        Engine::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{at}"))
                .await
                .unwrap();
            for sql in statements {
                sqlx::query(*sql).execute(&mut c).await.unwrap();
            }
            c.close().await.unwrap();
        }
        Engine::Postgres => {
            let mut c = sqlx::PgConnection::connect(at).await.unwrap();
            for sql in statements {
                sqlx::query(*sql).execute(&mut c).await.unwrap();
            }
            c.close().await.unwrap();
        }
    }
}

/// A store written by a version whose rules did not block a client without
/// a service address (its row a set the depot kept refusing), whose rules
/// blocked a config the rules now allow, and which kept a blocked row of a
/// client gone elsewhere: the first start of this version brings all three
/// in line, owing the removal of the old config and the push of the
/// allowed one, and changes no other row; later starts look at no row.
async fn a_start_after_an_upgrade_brings_configs_of_older_rules_in_line_once(engine: Engine) {
    let (_dir, at, store) = seeded_at(engine).await;
    let set = row(&store, "c1.example.org", D1).await;
    deliver(&store, "c1.example.org", set.revision).await;
    store
        .upsert_config_states(&[state("c1.example.org", SERVICE_URL, &[""])])
        .await
        .unwrap();
    let c2 = row(&store, "c2.example.org", D1).await;
    let c3 = row(&store, "c3.example.org", D2).await;
    deliver(&store, "c3.example.org", c3.revision).await;
    store.close().await;
    // As the older version left it: c1 a set owed again, not blocked; c3
    // blocked for a reason of its own, its removal delivered; no record of
    // the rules it followed.
    const C1_OLD: &str =
        "UPDATE pushes SET op = 'set', blocked = '', delivered_revision = revision - 1
         WHERE client_id = 'c1.example.org'";
    raw(
        engine,
        &at,
        &[
            C1_OLD,
            "UPDATE pushes SET op = 'remove', blocked = 'a rule of an older version'
             WHERE client_id = 'c3.example.org'",
            // c2 is on d1; a row blocked on d2 is a leftover of a version
            // that kept blocked rows of clients gone elsewhere.
            "INSERT INTO pushes (client_id, depot_id, op, product_id, blocked, revision,
               delivered_revision, updated_at)
             VALUES ('c2.example.org', 'd2.example.org', 'remove', 'win',
               'product win is not installed on depot d2.example.org', 1, 1, 0)",
            "DELETE FROM meta WHERE key = 'block_rules'",
        ],
    )
    .await;
    let open = async || Store::connect(&Location::parse(&at)).await.unwrap();
    let upgraded = open().await;
    let blocked = row(&upgraded, "c1.example.org", D1).await;
    assert_eq!(
        (blocked.op, blocked.blocked.as_str()),
        (
            PushOp::Remove,
            "c1.example.org has no service address (config clientconfig.configserver.url): its boot image could not reach the service"
        )
    );
    assert!(
        is_owed(&upgraded, D1, "c1.example.org").await,
        "d1 may hold the old config: its removal is owed"
    );
    let allowed = row(&upgraded, "c3.example.org", D2).await;
    assert_eq!((allowed.op, allowed.blocked.as_str()), (PushOp::Set, ""));
    assert!(
        is_owed(&upgraded, D2, "c3.example.org").await,
        "c3's config is owed"
    );
    assert_eq!(
        row(&upgraded, "c2.example.org", D1).await.revision,
        c2.revision,
        "a config the rules judge alike is not pushed again"
    );
    let left = row(&upgraded, "c2.example.org", D2).await;
    assert_eq!((left.op, left.blocked.as_str()), (PushOp::Remove, ""));
    assert_eq!(
        upgraded
            .depot_counts()
            .await
            .unwrap()
            .get(D2)
            .map_or(0, |c| c.blocked),
        0,
        "d2 has no blocked config"
    );
    upgraded.close().await;
    // Once: a start under the same rules looks at no row (a site's every
    // start would cost a pass over its pushes).
    raw(engine, &at, &[C1_OLD]).await;
    let again = open().await;
    assert_eq!(row(&again, "c1.example.org", D1).await.op, PushOp::Set);
    again.close().await;
}

/// On PostgreSQL, writes queued behind another replica's long write (an
/// import holding the write lock) leave this replica's reads and lease
/// renewals their connections: each write used to take a pool connection
/// and then wait on the lock, so eight of them filled the pool, reads
/// waited and the renewals failed — the replica gave up every depot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_the_write_lock_leave_reads_and_leases_room() {
    use sqlx::Connection;
    use std::time::Duration;
    let (_dir, at, store) = seeded_at(Engine::Postgres).await;
    // Another replica's write, holding the lock every write takes.
    let mut other = sqlx::PgConnection::connect(&at).await.unwrap();
    // The store's write lock key ("pxeconf" in ASCII).
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x0070_7865_636f_6e66_i64)
        .execute(&mut other)
        .await
        .unwrap();
    let writes: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .upsert_products(&[product(&format!("q{i}"), None)])
                    .await
            })
        })
        .collect();
    // Every write has had time to take a connection and wait on the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let depots = tokio::time::timeout(Duration::from_secs(3), store.depots())
        .await
        .expect("a read waits for a connection behind the queued writes")
        .unwrap();
    assert_eq!(depots.len(), 2);
    let leases = tokio::time::timeout(
        Duration::from_secs(3),
        store.claim_leases("replica-a", Duration::from_secs(10)),
    )
    .await
    .expect("a lease renewal waits for a connection behind the queued writes")
    .unwrap();
    assert_eq!(leases.len(), 2);
    assert!(writes.iter().all(|w| !w.is_finished()), "the lock is held");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut other)
        .await
        .unwrap();
    for write in writes {
        write.await.unwrap().unwrap();
    }
}

/// A site whose PostgreSQL defaults to `repeatable read` still gets
/// `read committed` on the store's connections: a snapshot taken at the
/// write-lock call saw the data from before the previous writer committed,
/// and concurrent writes failed as serialization failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_transactions_read_committed_whatever_the_servers_default() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let at = location(Engine::Postgres, dir.path()).await.unwrap();
    let mut c = sqlx::PgConnection::connect(&at).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    // The name is the test cluster's own, made by `location`.
    let sql =
        format!("ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await
        .unwrap();
    let store = Store::connect(&Location::parse(&at)).await.unwrap();
    let level = store
        .postgres_setting("default_transaction_isolation")
        .await
        .unwrap();
    assert_eq!(level.as_deref(), Some("read committed"));
}

/// A deleted depot's own config and property states go with it (as opsi
/// deletes a host's): registered anew, its clients got the old defaults
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_depots_states_go_with_it() {
    use sqlx::Connection;
    let (_dir, at, store) = seeded_at(Engine::Sqlite).await;
    store
        .upsert_config_states(&[state(D2, "clientconfig.configserver.url", &["https://old"])])
        .await
        .unwrap();
    store
        .upsert_property_states(&[property(D2, &["en"])])
        .await
        .unwrap();
    store.delete_depots(&[fqdn(D2)]).await.unwrap();
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{at}"))
        .await
        .unwrap();
    for table in ["config_states", "product_property_states"] {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE object_id = $1"
        )))
        .bind(D2)
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    // A depot an older version deleted left its states: deleting it again
    // clears them.
    sqlx::query("INSERT INTO config_states (object_id, config_id) VALUES ('gone.example.org', $1)")
        .bind(DEPOT_ID)
        .execute(&mut c)
        .await
        .unwrap();
    store
        .delete_depots(&[fqdn("gone.example.org")])
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM config_states WHERE object_id = 'gone.example.org'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(left, 0, "an earlier deletion's leftovers");
    // A client's own states stay, also when its id is given by mistake.
    store
        .delete_depots(&[fqdn("c3.example.org")])
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM config_states WHERE object_id = $1")
        .bind("c3.example.org")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

/// A depot registered with a URL path or user-info by an older version
/// (the Admin API refuses both since 2026-11-30) is still read: one such
/// row failed every read of the depots — the dispatcher, the keys, a
/// replica's leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_endpoint_stored_by_an_older_version_still_reads() {
    use sqlx::Connection;
    let (_dir, at, store) = seeded_at(Engine::Sqlite).await;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{at}"))
        .await
        .unwrap();
    sqlx::query("UPDATE depots SET endpoint = 'https://u@d1.example.org:50051/pxe' WHERE id = $1")
        .bind(D1)
        .execute(&mut c)
        .await
        .unwrap();
    let depots = store.depots().await.unwrap();
    let d1 = depots.iter().find(|d| d.id.as_str() == D1).unwrap();
    assert_eq!(d1.endpoint.as_str(), "https://u@d1.example.org:50051/pxe");
}
