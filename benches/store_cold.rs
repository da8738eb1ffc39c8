//! The configserver store's two calls on the path of every netboot action —
//! the admin write (`set_action_requests`, one client) and the bundle load
//! for its push (`load_bundles`) — timed back to back ("warm") and each
//! after an idle gap ("cold", as in a trickle at 50 actions/s).
//!
//! On the 2-vCPU VM of docs/BENCHMARKS.md (twelfth pass) the caches and TLBs
//! are cold again after a few ms idle (`benches/cold_cache.c`): the same
//! calls then take several times as long, and that, not the work done
//! warm, is what a trickle's latency is made of. Run with
//! `cargo bench --bench store_cold [-- CLIENTS ROUNDS GAP_MS]`.

use std::time::{Duration, Instant};

use pxeconf::cli::lab::{client_fqdn, depot_fqdn, host};
use pxeconf::configserver::store::{
    ActionRecord, ConfigRecord, ConfigStateRecord, DepotRecord, Inventory, ProductOnDepotRecord,
    ProductRecord, Rows, Store,
};
use pxeconf::domain::opsi::{DEPOT_ID, SERVICE_URL};
use pxeconf::domain::{ActionRequest, Client, Endpoint, Fqdn, Modules, ProductId, Secret};

const DEPOTS: usize = 4;
const PRODUCT: &str = "win10-x64";

fn fqdn(s: &str) -> Fqdn {
    Fqdn::parse(s, "bench").expect("a valid FQDN")
}

/// Depot i (0-based) of the bench's four: the lab's names.
fn depot_id(i: usize) -> String {
    depot_fqdn(i + 1)
}

/// Client i: the lab's name.
fn client_id(i: usize) -> String {
    client_fqdn(u32::try_from(i).expect("fewer than 2^32 clients"))
}

/// A site of `clients` clients spread over the depots, as the load test's.
fn inventory(clients: usize) -> Inventory {
    let product = ProductId::parse(PRODUCT, "bench").expect("a valid product id");
    let depots: Vec<String> = (0..DEPOTS).map(depot_id).collect();
    Inventory {
        configs: vec![
            ConfigRecord {
                id: DEPOT_ID.into(),
                default_values: vec![depots[0].clone()],
                description: String::new(),
            },
            // Without one every client's config is blocked.
            ConfigRecord {
                id: SERVICE_URL.into(),
                default_values: vec!["https://config.example.org:4447".into()],
                description: String::new(),
            },
        ],
        depots: depots
            .iter()
            .map(|id| DepotRecord {
                id: fqdn(id),
                endpoint: Endpoint::parse(&format!("http://{id}:50051"), "bench").expect("URL"),
                host_key: Secret::new(format!("host-key-of-{id}-0123456789abcdef")),
                description: String::new(),
            })
            .collect(),
        products: vec![ProductRecord {
            id: product.clone(),
            product_version: "1.0".into(),
            package_version: "1".into(),
            template: None,
        }],
        product_on_depots: depots
            .iter()
            .map(|id| ProductOnDepotRecord {
                depot_id: fqdn(id),
                product_id: product.clone(),
                product_version: "1.0".into(),
                package_version: "1".into(),
            })
            .collect(),
        // The lab's hosts: MACs and UUIDs derived from the number.
        clients: (0..clients)
            .map(|i| {
                let n = u32::try_from(i).expect("fewer than 2^32 clients");
                Client::try_from(host(n)).expect("a valid lab host")
            })
            .collect(),
        config_states: (0..clients)
            .map(|i| ConfigStateRecord {
                object_id: fqdn(&client_id(i)),
                config_id: DEPOT_ID.into(),
                values: vec![depot_id(i % DEPOTS)],
            })
            .collect(),
        property_states: Vec::new(),
        actions: Vec::new(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `rounds` actions, one client each, every `gap` (none: back to back);
/// the medians of the write and of the load that follows it.
async fn run(store: &Store, clients: usize, rounds: usize, gap: Duration) -> (Duration, Duration) {
    let modules = Modules {
        uefi: true,
        secureboot: true,
    };
    let product = ProductId::parse(PRODUCT, "bench").expect("a valid product id");
    let (mut writes, mut loads) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let i = round % clients;
        // Each write sets the action again (a new revision owed), as an
        // admin's repeated action does; the action alternates per pass.
        let action = match (round / clients) % 2 {
            0 => ActionRequest::Once,
            _ => ActionRequest::Setup,
        };
        let record = ActionRecord {
            client_id: fqdn(&client_id(i)),
            product_id: product.clone(),
            action,
        };
        let at = Instant::now();
        let outcome = store.set_action_requests(&[record]).await.expect("write");
        writes.push(at.elapsed());
        assert_eq!(outcome.owed.len(), 1, "one push owed");
        let at = Instant::now();
        let loaded = store
            .load_bundles(&depot_id(i % DEPOTS), &[client_id(i)], Rows::Owed, modules)
            .await
            .expect("load");
        loads.push(at.elapsed());
        assert_eq!(loaded.len(), 1, "one bundle");
    }
    (median(writes), median(loads))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; the numbers are the positional ones.
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(2000);
    let rounds = args.get(1).copied().unwrap_or(300);
    let gap = Duration::from_millis(args.get(2).copied().unwrap_or(20) as u64);

    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a directory");
    let store = Store::open(&dir.path().join("pxeconf.db"))
        .await
        .expect("a store");
    store
        .import_inventory(&inventory(clients), false)
        .await
        .expect("the inventory");
    // Warm the statements and the pages once; then the rounds back to
    // back, then those with gaps.
    run(&store, clients, clients.min(200), Duration::ZERO).await;
    let (warm_write, warm_load) = run(&store, clients, rounds, Duration::ZERO).await;
    let (cold_write, cold_load) = run(&store, clients, rounds, gap).await;
    println!(
        "store_cold: {clients} clients, {rounds} rounds, gap {gap:?}, in {}",
        dir.path().display()
    );
    for (what, warm, cold) in [
        ("set_action_requests", warm_write, cold_write),
        ("load_bundles", warm_load, cold_load),
    ] {
        println!(
            "{what:>20}: warm p50 {:>4} µs, cold p50 {:>4} µs ({:.1}×)",
            warm.as_micros(),
            cold.as_micros(),
            cold.as_secs_f64() / warm.as_secs_f64()
        );
    }
    store.close().await;
}
