//! The configserver and three depots (one legacy) in one process, over real
//! sockets, with a real SQLite file or a real PostgreSQL database (the
//! delivery tests run on both engines).

use std::collections::HashMap;

use crate::common::postgres::{Engine, location};
use crate::common::*;
use crate::on_both_engines;
use pxeconf::configserver::store::Location;
use pxeconf::proto;
use tonic::Code;

const CLIENTS: u32 = 300;

/// Client n belongs to depot n % 3 + 1; depot 3 is the legacy one.
fn depot_of(n: u32) -> usize {
    (n % 3) as usize + 1
}

/// Depot `i` of a [`Site`]: 1 takes batches, 2 serves only `SetPxeConfig`
/// (as depots before `BatchSetPxeConfigs`), 3 is legacy-only.
fn site_depot_config(
    dirs: &DepotDirs,
    i: usize,
    configserver: &str,
) -> pxeconf::depot::DepotConfig {
    let mut config = linked_depot_config(dirs, i, configserver, i == 3);
    config.batches = i != 2;
    config
}

struct Site {
    // Holds the SQLite file (kept for the test's life).
    _db: tempfile::TempDir,
    location: Location,
    dirs: Vec<DepotDirs>,
    depots: Vec<Option<TestDepot>>,
    ports: Vec<u16>,
    server: Option<TestConfigServer>,
}

impl Site {
    async fn start(clients: u32) -> Self {
        Self::start_on(Engine::Sqlite, clients).await
    }

    async fn start_on(engine: Engine, clients: u32) -> Self {
        let db = tempfile::tempdir().unwrap();
        let location = Location::parse(&location(engine, db.path()).await.unwrap());
        let server = TestConfigServer::start_at(location.clone(), 0).await;
        let dirs: Vec<DepotDirs> = (0..3).map(|_| DepotDirs::new()).collect();
        let mut depots = Vec::new();
        let mut ports = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let depot = TestDepot::start_on(site_depot_config(d, i + 1, &server.url()), 0).await;
            ports.push(depot.addr.port());
            depots.push(Some(depot));
        }
        let mut admin = server.admin().await;
        let list: Vec<(usize, String)> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1, format!("http://127.0.0.1:{p}")))
            .collect();
        seed(&mut admin, &list, clients, depot_of).await;
        Self {
            _db: db,
            location,
            dirs,
            depots,
            ports,
            server: Some(server),
        }
    }

    fn server(&self) -> &TestConfigServer {
        self.server.as_ref().unwrap()
    }

    async fn admin(&self) -> Admin {
        self.server().admin().await
    }

    fn dir(&self, depot: usize) -> &DepotDirs {
        &self.dirs[depot - 1]
    }

    async fn stop_depot(&mut self, depot: usize) {
        self.depots[depot - 1].take().unwrap().stop().await;
    }

    /// Starts depot `depot` again, its configuration changed by `change`.
    async fn start_depot_with(
        &mut self,
        depot: usize,
        change: impl FnOnce(&mut pxeconf::depot::DepotConfig),
    ) {
        let mut config = site_depot_config(&self.dirs[depot - 1], depot, &self.server().url());
        change(&mut config);
        self.depots[depot - 1] = Some(TestDepot::start_on(config, self.ports[depot - 1]).await);
    }

    /// Every client in `clients` has exactly its two files, on exactly its depot.
    fn placed(&self, clients: impl Iterator<Item = u32> + Clone) -> bool {
        let listings: Vec<std::collections::HashSet<String>> = (self.dirs.iter())
            .map(|d| d.files().into_iter().collect())
            .collect();
        clients.clone().all(|n| {
            (1..=3).all(|d| {
                let here =
                    listings[d - 1].contains(&mac_file(n)) && listings[d - 1].contains(&uuid(n));
                here == (depot_of(n) == d)
            })
        })
    }
}

fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn a_bulk_reaches_every_depot_new_and_legacy_and_reads_clear_the_action(engine: Engine) {
    let site = Site::start_on(engine, CLIENTS).await;
    let mut admin = site.admin().await;
    let response = set_actions(&mut admin, 0..CLIENTS, "setup").await;
    assert_eq!(response.affected, u64::from(CLIENTS));
    assert_eq!(response.pushes_queued, u64::from(CLIENTS));

    wait_for("all 300 clients are placed", 60, || async {
        site.placed(0..CLIENTS)
    })
    .await;
    for d in 1..=3 {
        assert_eq!(
            site.dir(d).files().len(),
            200,
            "depot {d} holds exactly its 100 clients' files"
        );
    }
    // The files land before the depot answers; wait for the answers too.
    wait_for_depots(&admin, "every push is acknowledged", |d| {
        d.queued == 0 && d.delivered == 100
    })
    .await;

    // Depot 1 got its configs in batches; depot 2 refused batches and got
    // one SetPxeConfig per client; the legacy depot refused both.
    let calls = |depot: usize, rpc: &str, code: &str| {
        let metrics = site.depots[depot - 1].as_ref().unwrap().metrics.encode();
        counter(
            &metrics,
            "pxeconf_rpc_duration_seconds_count",
            &[
                ("path", &format!("/pxeconf.v1.Depot/{rpc}")),
                ("code", code),
            ],
        )
    };
    assert!(calls(1, "BatchSetPxeConfigs", "Ok") >= 1);
    assert!(
        calls(1, "BatchSetPxeConfigs", "Ok") < 100,
        "many clients per batch"
    );
    assert_eq!(calls(1, "SetPxeConfig", "Ok"), 0);
    assert!(calls(2, "BatchSetPxeConfigs", "Unimplemented") >= 1);
    assert_eq!(calls(2, "BatchSetPxeConfigs", "Ok"), 0);
    assert_eq!(calls(2, "SetPxeConfig", "Ok"), 100);
    assert!(calls(3, "BatchSetPxeConfigs", "Unimplemented") >= 1);
    for depot in [1, 2] {
        let metrics = site.depots[depot - 1].as_ref().unwrap().metrics.encode();
        assert_eq!(
            counter(
                &metrics,
                "pxeconf_bundles_received_total",
                &[("result", "ok")]
            ),
            100,
            "depot {depot}: each client's bundle once"
        );
    }

    // The legacy depot got its configs by fallback; the others by the new path.
    let metrics = site.server().metrics.encode();
    let pushes = |depot: usize, path: &str| {
        counter(
            &metrics,
            "pxeconf_pushes_total",
            &[
                ("depot", &depot_id(depot)),
                ("path", path),
                ("op", "set"),
                ("result", "ok"),
            ],
        )
    };
    assert_eq!(pushes(1, "new") + pushes(2, "new"), 200);
    assert_eq!(pushes(1, "legacy") + pushes(2, "legacy"), 0);
    assert_eq!(pushes(3, "legacy"), 100);
    assert_eq!(pushes(3, "new"), 0);
    assert!(
        counter(
            &metrics,
            "pxeconf_pushes_total",
            &[("depot", &depot_id(3)), ("result", "unimplemented")]
        ) >= 1
    );
    // Look-ups: none for the 200 new-path clients, the legacy count (7 RPCs) for each of the 100 others.
    for rpc in pxeconf::proto::LEGACY_LOOKUPS {
        assert_eq!(site.server().metrics.lookup_count(rpc), 100, "{rpc}");
    }
    assert_eq!(site.server().metrics.lookups_total(), 700);

    let depots = admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .unwrap()
        .into_inner()
        .depots;
    let caps: HashMap<String, String> = depots
        .iter()
        .map(|d| (d.id.clone(), d.capability.clone()))
        .collect();
    assert_eq!(caps[&depot_id(1)], "new");
    assert_eq!(caps[&depot_id(2)], "new");
    assert_eq!(caps[&depot_id(3)], "legacy");
    let batches: HashMap<String, bool> = depots.iter().map(|d| (d.id.clone(), d.batches)).collect();
    assert!(batches[&depot_id(1)], "depot 1 takes batches");
    assert!(!batches[&depot_id(2)], "depot 2 answered UNIMPLEMENTED");
    assert!(
        depots.iter().all(|d| d.queued == 0 && d.delivered == 100),
        "{depots:?}"
    );

    // A TFTP read (open + close) on a new-path and on the legacy depot turns the action to none.
    for n in [0u32, 2] {
        let dir = site.dir(depot_of(n));
        simulate_read(&dir.pxe.join(mac_file(n)));
        wait_for("the read is reported", 10, || {
            let mut admin = admin.clone();
            async move {
                let s = status(&mut admin, n).await;
                s.product_on_clients[0].action_request == "none"
            }
        })
        .await;
        let s = status(&mut admin, n).await;
        assert_eq!(
            s.product_on_clients[0].action_progress,
            "pxe boot configuration read"
        );
        assert_eq!(s.deliveries[0].state, proto::DeliveryState::Read as i32);
        assert!(!dir.files().contains(&mac_file(n)) && !dir.files().contains(&uuid(n)));
    }

    // `always` stays and is pushed again after the read.
    set_actions(&mut admin, [1u32], "always").await;
    let dir = site.dir(depot_of(1));
    let revision = |admin: &mut Admin| {
        let mut admin = admin.clone();
        async move { status(&mut admin, 1).await.deliveries[0].revision }
    };
    wait_for("the always config is delivered", 10, || {
        let mut admin = admin.clone();
        async move {
            status(&mut admin, 1).await.deliveries[0].state
                == proto::DeliveryState::Delivered as i32
        }
    })
    .await;
    let before = revision(&mut admin).await;
    simulate_read(&dir.pxe.join(uuid(1)));
    wait_for("the always config is pushed again", 10, || {
        let mut admin = admin.clone();
        async move {
            let s = status(&mut admin, 1).await;
            s.deliveries[0].revision > before
                && s.deliveries[0].state == proto::DeliveryState::Delivered as i32
        }
    })
    .await;
    let s = status(&mut admin, 1).await;
    assert_eq!(s.product_on_clients[0].action_request, "always");
    assert!(dir.files().contains(&uuid(1)) && dir.files().contains(&mac_file(1)));
}

async fn a_depot_stopped_during_a_bulk_gets_everything_once_it_is_back(engine: Engine) {
    stopped_during_a_bulk(engine, 2).await;
}

/// As above for a depot that takes batches and is back as from a network
/// partition — it does not ask the configserver at start what it should
/// hold, which would fetch the newest revisions itself. Depot 2 refuses
/// batches, which sends its clients back to be loaded again, and asks at
/// start; here only the worker stands between a stale bundle and the depot.
async fn a_depot_taking_batches_stopped_during_a_bulk_gets_only_the_newest_revisions(
    engine: Engine,
) {
    stopped_during_a_bulk(engine, 1).await;
}

/// Depot `stopped` is down while every client gets a setup; its clients'
/// bundles are loaded and wait. Each of its clients then gets an uninstall,
/// and once it is back the depot gets that — the newest revision, and only
/// it: sent as loaded, each client's cancelled setup would land first and
/// the change only behind everything queued (a client booting meanwhile
/// would run it). Depot 1 comes back unlinked (see above).
async fn stopped_during_a_bulk(engine: Engine, stopped: usize) {
    let mut site = Site::start_on(engine, CLIENTS).await;
    let mut admin = site.admin().await;
    site.stop_depot(stopped).await;
    set_actions(&mut admin, 0..CLIENTS, "setup").await;
    let others = (0..CLIENTS).filter(|n| depot_of(*n) != stopped);
    wait_for("the running depots have theirs", 60, || {
        let others = others.clone();
        let site = &site;
        async move { site.placed(others) }
    })
    .await;
    // The stopped depot is owed its pushes and the status says why.
    let depots = admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .unwrap()
        .into_inner()
        .depots;
    let down = depots.iter().find(|d| d.id == depot_id(stopped)).unwrap();
    assert!(!down.reachable);
    assert_eq!(down.queued, 100);
    let first = (0..CLIENTS).find(|n| depot_of(*n) == stopped).unwrap();
    let s = status(&mut admin, first).await;
    assert_eq!(
        s.deliveries[0].state,
        proto::DeliveryState::Failed as i32,
        "{s:?}"
    );
    assert!(s.deliveries[0].next_retry.is_some());

    set_actions(
        &mut admin,
        (0..CLIENTS).filter(|n| depot_of(*n) == stopped),
        "uninstall",
    )
    .await;
    site.start_depot_with(stopped, |config| {
        if stopped == 1 {
            config.configservers.clear();
        }
    })
    .await;
    wait_for("all clients are placed", 60, || async {
        site.placed(0..CLIENTS)
    })
    .await;
    assert_final_state(&site, &mut admin).await;
    let restarted = site.depots[stopped - 1].as_ref().unwrap();
    assert_eq!(
        counter(
            &restarted.metrics.encode(),
            "pxeconf_config_writes_total",
            &[("result", "ok")]
        ),
        100,
        "one config written per client, of its newest revision"
    );
}

/// A page token in another spelling of the same client id (upper case, a
/// trailing dot) pages on from the same place: it is compared as ids are
/// stored, or an upper-case token would sort before every id and repeat
/// the first pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_in_another_spelling_pages_on_from_the_same_place() {
    let mut site = Site::start(CLIENTS).await;
    let mut admin = site.admin().await;
    site.stop_depot(1).await;
    set_actions(
        &mut admin,
        (0..CLIENTS).filter(|n| depot_of(*n) == 1),
        "setup",
    )
    .await;
    wait_for_depots(&admin, "depot 1 is owed its clients", |d| {
        d.id != depot_id(1) || d.queued == 100
    })
    .await;
    let page = |token: String| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_pending(proto::ListPendingRequest {
                    depot_id: depot_id(1),
                    page_size: 10,
                    page_token: token,
                    blocked: false,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = page(String::new()).await;
    let token = first.next_page_token.clone();
    assert_eq!(token, first.pending.last().unwrap().client_id);
    let ids = |p: &proto::ListPendingResponse| -> Vec<String> {
        p.pending.iter().map(|x| x.client_id.clone()).collect()
    };
    let second = ids(&page(token.clone()).await);
    assert_eq!(second.len(), 10);
    assert!(
        second.iter().all(|id| *id > token),
        "{second:?} after {token}"
    );
    for spelling in [
        token.to_uppercase(),
        format!("{token}."),
        format!("{}.", token.to_uppercase()),
    ] {
        assert_eq!(
            ids(&page(spelling.clone()).await),
            second,
            "token {spelling:?}"
        );
    }
    // A depot that does not exist is no depot with nothing pending.
    let unknown = admin
        .list_pending(proto::ListPendingRequest {
            depot_id: "depot9.example.org".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    // One that exists with nothing pending answers an empty page.
    let idle = page_of(&admin, depot_id(2)).await;
    assert!(idle.pending.is_empty() && idle.next_page_token.is_empty());
}

/// The first page of what `depot` is owed or holds.
async fn page_of(admin: &Admin, depot: String) -> proto::ListPendingResponse {
    let mut admin = admin.clone();
    admin
        .list_pending(proto::ListPendingRequest {
            depot_id: depot,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn a_configserver_restarted_mid_bulk_delivers_everything(engine: Engine) {
    let mut site = Site::start_on(engine, CLIENTS).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..CLIENTS, "setup").await;
    let port = site.server().addr.port();
    // Stop at once, with pushes owed and in flight.
    site.server.take().unwrap().stop().await;
    let server = TestConfigServer::start_at(site.location.clone(), port).await;
    site.server = Some(server);
    let mut admin = site.admin().await;
    wait_for("all clients are placed", 60, || async {
        site.placed(0..CLIENTS)
    })
    .await;
    assert_final_state(&site, &mut admin).await;
}

/// Waits (up to 30 s) until every depot's status satisfies `cond`.
async fn wait_for_depots(admin: &Admin, what: &str, cond: impl Fn(&proto::DepotStatus) -> bool) {
    let cond = &cond;
    wait_for(what, 30, || {
        let mut admin = admin.clone();
        async move {
            let depots = admin
                .list_depots(proto::ListDepotsRequest {})
                .await
                .unwrap()
                .into_inner()
                .depots;
            depots.iter().all(cond)
        }
    })
    .await;
}

/// Every client's config lies on its depot exactly once, at the revision the
/// configserver wants, and nothing is owed.
async fn assert_final_state(site: &Site, admin: &mut Admin) {
    wait_for_depots(admin, "nothing is owed", |d| d.queued == 0).await;
    for d in 1..=3 {
        let url = format!("http://127.0.0.1:{}", site.ports[d - 1]);
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut depot = proto::depot_client::DepotClient::with_interceptor(
            channel,
            pxeconf::auth::AttachKey::new(&pxeconf::domain::Secret::new(depot_key(d))).unwrap(),
        );
        let held = depot
            .list_pxe_configs(proto::ListPxeConfigsRequest {
                page_size: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .configs;
        assert_eq!(held.len(), 100, "depot {d} holds each of its clients once");
        for config in held {
            let n: u32 = config
                .fqdn
                .trim_start_matches("client")
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(depot_of(n), d);
            let s = status(admin, n).await;
            let wanted = s
                .deliveries
                .iter()
                .find(|x| x.depot_id == depot_id(d))
                .unwrap();
            assert_eq!(
                config.revision, wanted.revision,
                "{} holds its newest revision",
                config.fqdn
            );
            assert_eq!(
                config.action_request,
                s.product_on_clients[0].action_request
            );
        }
        assert_eq!(site.dir(d).files().len(), 200);
    }
}

async fn moving_deleting_and_renaming_clients_follow_on_the_depots(engine: Engine) {
    let site = Site::start_on(engine, 6).await;
    let mut admin = site.admin().await;
    set_actions(&mut admin, 0..6, "setup").await;
    wait_for("placed", 30, || async { site.placed(0..6) }).await;

    // Client 0 moves from depot 1 to depot 2.
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: vec![proto::ConfigState {
                object_id: "client0.example.org".into(),
                config_id: "clientconfig.depot.id".into(),
                values: vec![depot_id(2)],
            }],
        })
        .await
        .unwrap();
    wait_for("client0 moved", 10, || async {
        let old = site.dir(1).files();
        let new = site.dir(2).files();
        !old.contains(&mac_file(0))
            && !old.contains(&uuid(0))
            && new.contains(&mac_file(0))
            && new.contains(&uuid(0))
    })
    .await;

    // Client 1 gets a new MAC: the file follows.
    let mut host = bundle(1, 0).host.unwrap();
    host.hardware_address = mac(4242);
    admin
        .upsert_clients(proto::UpsertClientsRequest {
            clients: vec![host],
        })
        .await
        .unwrap();
    wait_for("client1's MAC file renamed", 10, || async {
        let files = site.dir(depot_of(1)).files();
        files.contains(&mac_file(4242)) && !files.contains(&mac_file(1))
    })
    .await;

    // Client 2 is deleted: its files go.
    admin
        .delete_clients(proto::DeleteClientsRequest {
            ids: vec!["client2.example.org".into()],
        })
        .await
        .unwrap();
    wait_for("client2's files removed", 10, || async {
        let files = site.dir(depot_of(2)).files();
        !files.contains(&mac_file(2)) && !files.contains(&uuid(2))
    })
    .await;

    // Client 3's action is cleared: its files go.
    set_actions(&mut admin, [3u32], "none").await;
    wait_for("client3's files removed", 10, || async {
        let files = site.dir(depot_of(3)).files();
        !files.contains(&mac_file(3)) && !files.contains(&uuid(3))
    })
    .await;
}

#[tokio::test]
async fn wrong_or_missing_keys_are_unauthenticated_and_bad_input_is_refused() {
    let site = Site::start(3).await;
    let url = site.server().url();
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut anonymous = proto::config_server_client::ConfigServerClient::new(channel.clone());
    let refused = anonymous
        .get_host(proto::GetHostRequest {
            id: "client0.example.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut wrong = proto::config_server_client::ConfigServerClient::with_interceptor(
        channel.clone(),
        pxeconf::auth::AttachKey::new(&pxeconf::domain::Secret::new("nope")).unwrap(),
    );
    let refused = wrong
        .get_host(proto::GetHostRequest {
            id: "client0.example.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = proto::admin_client::AdminClient::new(channel.clone())
        .list_depots(proto::ListDepotsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A depot key works for the depot service, and a depot may not reconcile another depot.
    let mut depot1 = proto::config_server_client::ConfigServerClient::with_interceptor(
        channel,
        pxeconf::auth::AttachKey::new(&pxeconf::domain::Secret::new(depot_key(1))).unwrap(),
    );
    let host = depot1
        .get_host(proto::GetHostRequest {
            id: "client0.example.org".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(host.hardware_address, mac(0));
    // Client 1 belongs to depot 2: refused, and counted as a refusal, not as
    // a look-up served.
    let refused = depot1
        .get_host(proto::GetHostRequest {
            id: "client1.example.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let metrics = &site.server().metrics;
    assert_eq!(metrics.lookup_count("GetHost"), 1);
    assert_eq!(metrics.lookups_total(), 1);
    let refused = depot1
        .list_pending_bundles(proto::ListPendingBundlesRequest {
            depot_id: depot_id(2),
            epoch: Default::default(),
            highest_revision: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut admin = site.admin().await;
    let unknown = admin
        .set_action_requests(proto::SetActionRequestsRequest {
            action_requests: vec![
                proto::ActionRequest {
                    client_id: "client0.example.org".into(),
                    product_id: "win10-x64".into(),
                    action_request: "setup".into(),
                },
                proto::ActionRequest {
                    client_id: "ghost.example.org".into(),
                    product_id: "win10-x64".into(),
                    action_request: "setup".into(),
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("ghost.example.org"));
    // All or nothing: client0 got no action either.
    assert_eq!(status(&mut admin, 0).await.product_on_clients.len(), 0);
    let bad = admin
        .set_action_requests(proto::SetActionRequestsRequest {
            action_requests: vec![proto::ActionRequest {
                client_id: "client0.example.org".into(),
                product_id: "win10-x64".into(),
                action_request: "reboot".into(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("action_requests[0].action_request"),
        "{}",
        bad.message()
    );
    let bad = admin
        .upsert_clients(proto::UpsertClientsRequest {
            clients: vec![proto::Host {
                id: "x.example.org".into(),
                hardware_address: "zz:zz".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

on_both_engines!(
    a_bulk_reaches_every_depot_new_and_legacy_and_reads_clear_the_action,
    a_depot_stopped_during_a_bulk_gets_everything_once_it_is_back,
    a_depot_taking_batches_stopped_during_a_bulk_gets_only_the_newest_revisions,
    a_configserver_restarted_mid_bulk_delivers_everything,
    moving_deleting_and_renaming_clients_follow_on_the_depots,
);

/// Bundles too large to go many to a call under gRPC's 4 MiB message limit
/// (~160 KB each; at the default push concurrency a batch holds 32 of them,
/// 5 MB) are cut into several `BatchSetPxeConfigs` calls of at most 1 MiB,
/// and every one lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bundles_go_in_several_batches_and_all_land() {
    const N: u32 = 64;
    let db = tempfile::tempdir().unwrap();
    let dispatch = pxeconf::configserver::dispatch::DispatchSettings {
        concurrency: pxeconf::configserver::dispatch::DEFAULT_PUSH_CONCURRENCY,
        ..fast_dispatch()
    };
    let server = TestConfigServer::start_pushing(&db.path().join("db"), dispatch).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &server.url(), false)).await;
    let mut admin = server.admin().await;
    seed(&mut admin, &[(1, depot.url())], N, |_| 1).await;
    // 40 properties of one 4,000-byte value each (a value's limit is 4,096).
    // A few clients per Admin call: the calls have the same 4 MiB limit.
    let clients: Vec<u32> = (0..N).collect();
    for chunk in clients.chunks(10) {
        admin
            .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
                product_property_states: chunk
                    .iter()
                    .flat_map(|&n| big_properties(n, 40))
                    .collect(),
            })
            .await
            .unwrap();
    }
    set_actions(&mut admin, 0..N, "setup").await;
    wait_for_depots(&admin, "the depot has every large bundle", |d| {
        d.queued == 0 && d.delivered == u64::from(N)
    })
    .await;
    let metrics = depot.metrics.encode();
    let calls = |code: &str| {
        counter(
            &metrics,
            "pxeconf_rpc_duration_seconds_count",
            &[
                ("path", "/pxeconf.v1.Depot/BatchSetPxeConfigs"),
                ("code", code),
            ],
        )
    };
    // 64 bundles of ~160 KB: at least 10 calls of at most 1 MiB, none refused.
    assert!(calls("Ok") >= 10, "{} batch calls", calls("Ok"));
    assert_eq!(calls("OutOfRange") + calls("ResourceExhausted"), 0);
    assert_eq!(
        counter(
            &metrics,
            "pxeconf_bundles_received_total",
            &[("result", "ok")]
        ),
        u64::from(N)
    );
    for n in 0..N {
        assert!(dirs.pxe.join(mac_file(n)).exists(), "client {n}");
    }
}

/// A bundle larger than a depot takes in one message (1,000 properties of
/// 4,000 bytes and 100 append items of 4,000: ~4.4 MB, each within its
/// limit) is refused without a call, saying why and what to change, on both
/// the batch and the unary call; the depot's other clients get their
/// configs. It used to be sent, ~4 MB at each retry, for the depot to
/// refuse it OUT_OF_RANGE ("decoded message length too large").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_too_large_for_one_message_is_refused_and_the_depot_stays_up() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start_pushing(&db.path().join("db"), fast_dispatch()).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &server.url(), false)).await;
    let mut admin = server.admin().await;
    seed(&mut admin, &[(1, depot.url())], 3, |_| 1).await;
    admin
        .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
            product_property_states: big_properties(0, 1000).collect(),
        })
        .await
        .unwrap();
    let value = "x".repeat(4000);
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: vec![proto::ConfigState {
                object_id: "client0.example.org".into(),
                config_id: "opsi-linux-bootimage.append".into(),
                values: (0..100).map(|i| format!("k{i}={value}")).collect(),
            }],
        })
        .await
        .unwrap();
    // Client 0 alone first (a batch of one, or a unary call), then with the
    // others.
    set_actions(&mut admin, [0], "setup").await;
    wait_for("client 0's refusal", 30, || {
        let mut admin = admin.clone();
        async move { !status(&mut admin, 0).await.deliveries[0].error.is_empty() }
    })
    .await;
    set_actions(&mut admin, 0..3, "once").await;
    wait_for_depots(&admin, "clients 1 and 2 delivered", |d| d.delivered == 2).await;
    let error = status(&mut admin, 0).await.deliveries[0].error.clone();
    assert!(
        error.contains("more than the 4193280 a depot takes"),
        "{error}"
    );
    assert!(!dirs.pxe.join(mac_file(0)).exists());
    for n in 1..3 {
        assert!(dirs.pxe.join(mac_file(n)).exists(), "client {n}");
    }
    let listed = depots(&mut admin).await;
    assert!(listed[0].reachable, "{listed:?}");
    assert_eq!(
        depot_calls(&depot, "BatchSetPxeConfigs", "OutOfRange")
            + depot_calls(&depot, "SetPxeConfig", "OutOfRange"),
        0
    );
}

/// `count` win10-x64 properties of client `n`, `big0`…, each one value of
/// 4,000 bytes (a value's limit is 4,096).
fn big_properties(n: u32, count: usize) -> impl Iterator<Item = proto::ProductPropertyState> {
    let value = "x".repeat(4000);
    (0..count).map(move |p| proto::ProductPropertyState {
        object_id: format!("client{n}.example.org"),
        product_id: "win10-x64".into(),
        property_id: format!("big{p}"),
        values: vec![value.clone()],
    })
}

/// How many calls of the Depot service's `rpc` `depot` answered with `code`.
fn depot_calls(depot: &TestDepot, rpc: &str, code: &str) -> u64 {
    counter(
        &depot.metrics.encode(),
        "pxeconf_rpc_duration_seconds_count",
        &[
            ("path", &format!("/pxeconf.v1.Depot/{rpc}")),
            ("code", code),
        ],
    )
}

/// A TCP proxy to `target` whose answers (target → caller) can be held:
/// an answer that left a depot before its endpoint changed and arrives after.
struct Gate {
    addr: std::net::SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    async fn start(target: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_caller, mut to_caller) = inbound.into_split();
                    let (mut from_target, mut to_target) = outbound.into_split();
                    let up = tokio::io::copy(&mut from_caller, &mut to_target);
                    let down = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_target.read(&mut buf).await {
                            // Bytes read while the gate is shut wait for it.
                            if watch.wait_for(|open| *open).await.is_err()
                                || to_caller.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    };
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Self { addr, open }
    }

    fn shut(&self) {
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A legacy depot whose answer to one push is late (the push times out) and
/// which answers the next try: it was not away long enough to have been
/// replaced, so it stays legacy — no `SetPxeConfig` is tried on it again
/// (a busy legacy depot was asked once more after every timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_depot_that_answered_one_push_late_is_not_asked_again_what_it_implements() {
    let db = tempfile::tempdir().unwrap();
    let dispatch = pxeconf::configserver::dispatch::DispatchSettings {
        timeout: std::time::Duration::from_millis(300),
        ..fast_dispatch()
    };
    let server = TestConfigServer::start_pushing(&db.path().join("db"), dispatch).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &server.url(), true)).await;
    let gate = Gate::start(depot.addr).await;
    let mut admin = server.admin().await;
    seed(
        &mut admin,
        &[(1, format!("http://{}", gate.addr))],
        3,
        |_| 1,
    )
    .await;
    let refused = || depot_calls(&depot, "SetPxeConfig", "Unimplemented");

    // Client 0 finds the depot legacy.
    set_actions(&mut admin, [0], "setup").await;
    wait_for_depots(&admin, "client 0 went the legacy way", |d| {
        d.capability == "legacy" && d.pushes_legacy == 1 && d.queued == 0
    })
    .await;
    assert_eq!(refused(), 1);

    // Client 1's answer is held past the push timeout: the depot is down.
    gate.shut();
    set_actions(&mut admin, [1], "setup").await;
    wait_for_depots(&admin, "client 1's push timed out", |d| !d.reachable).await;
    gate.open();
    wait_for_depots(&admin, "client 1 went again and was answered", |d| {
        d.reachable && d.pushes_legacy == 2 && d.queued == 0
    })
    .await;

    set_actions(&mut admin, [2], "setup").await;
    wait_for_depots(&admin, "client 2 went the legacy way", |d| {
        d.pushes_legacy == 3 && d.queued == 0
    })
    .await;
    assert_eq!(refused(), 1, "the depot was asked again what it implements");
    for n in 0..3 {
        assert!(dirs.pxe.join(mac_file(n)).exists(), "client {n}");
    }
}

/// Depot 1 is at `endpoint` now.
async fn move_depot(admin: &mut Admin, endpoint: String) {
    admin
        .upsert_depots(proto::UpsertDepotsRequest {
            depots: vec![proto::DepotInfo {
                id: depot_id(1),
                endpoint,
                host_key: depot_key(1),
                description: "moved".into(),
            }],
        })
        .await
        .unwrap();
}

/// A depot moves while a batch is on its way to its old endpoint, which
/// refuses batches; the refusal arrives after the move. It says nothing
/// about the depot at the new endpoint: that one still gets batches, and the
/// client of the refused batch goes out again to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_a_depots_old_endpoint_does_not_stick_to_its_new_one() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("db"), 0).await;
    let (old_dirs, new_dirs) = (DepotDirs::new(), DepotDirs::new());
    // The same depot (id, key) before and after the move; before, it took no batches.
    let mut config = linked_depot_config(&old_dirs, 1, &server.url(), false);
    config.batches = false;
    let old = TestDepot::start(config).await;
    let new = TestDepot::start(linked_depot_config(&new_dirs, 1, &server.url(), false)).await;
    let gate = Gate::start(old.addr).await;
    let mut admin = server.admin().await;
    seed(
        &mut admin,
        &[(1, format!("http://{}", gate.addr))],
        2,
        |_| 1,
    )
    .await;

    // Client 0's batch reaches the old endpoint; its refusal is held.
    gate.shut();
    set_actions(&mut admin, [0], "setup").await;
    wait_until("the old endpoint refused the batch", || {
        depot_calls(&old, "BatchSetPxeConfigs", "Unimplemented") == 1
    })
    .await;

    // The depot moves; client 1 goes to the new endpoint, as a batch.
    move_depot(&mut admin, new.url()).await;
    set_actions(&mut admin, [1], "setup").await;
    // (The files land before the call's answer, which the metrics count.
    // The check of what the new endpoint holds, which the move starts, may
    // see client 1's config before its push's result is in the store and
    // push it once more: a second batch, answered from the depot's journal.)
    wait_until("client 1 reached the new endpoint in a batch", || {
        new_dirs.pxe.join(mac_file(1)).exists()
            && depot_calls(&new, "BatchSetPxeConfigs", "Ok") >= 1
    })
    .await;

    // The refusal arrives (and client 0 goes as `SetPxeConfig` to the old
    // endpoint, as a refused batch's pushes do): client 0 goes out again,
    // to the new endpoint, still in a batch.
    gate.open();
    wait_until("client 0 is on the new endpoint", || {
        new_dirs.pxe.join(mac_file(0)).exists()
    })
    .await;
    assert_eq!(
        depot_calls(&old, "SetPxeConfig", "Ok"),
        1,
        "the refused batch's push"
    );
    let before = peek(&new_dirs.pxe.join(mac_file(1)));
    set_actions(&mut admin, [1], "once").await;
    wait_until("client 1's new action is on the new endpoint", || {
        peek(&new_dirs.pxe.join(mac_file(1))) != before
    })
    .await;
    wait_until("three batches answered", || {
        depot_calls(&new, "BatchSetPxeConfigs", "Ok") >= 3
    })
    .await;
    assert_eq!(
        depot_calls(&new, "SetPxeConfig", "Ok"),
        0,
        "every push in a batch"
    );
    wait_for_depots(&admin, "the depot takes batches and owes nothing", |d| {
        d.batches && d.queued == 0
    })
    .await;
}

/// A depot moves while the configserver's check of what it holds is on its
/// way to the old endpoint; the old endpoint's listing arrives after the
/// move. The check is done again at the new endpoint, which gets the config
/// the store counts as delivered (the old endpoint holds it, the new one
/// does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_of_a_depots_old_endpoint_is_done_again_at_its_new_one() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("db"), 0).await;
    let port = server.addr.port();
    let (old_dirs, new_dirs) = (DepotDirs::new(), DepotDirs::new());
    let old = TestDepot::start(linked_depot_config(&old_dirs, 1, &server.url(), false)).await;
    // The new one asks the configserver for nothing: it only gets pushes.
    let mut config = depot_config(&new_dirs, &depot_id(1));
    config.host_key = secret(&depot_key(1));
    let new = TestDepot::start(config).await;
    let gate = Gate::start(old.addr).await;
    let mut admin = server.admin().await;
    seed(
        &mut admin,
        &[(1, format!("http://{}", gate.addr))],
        1,
        |_| 1,
    )
    .await;
    set_actions(&mut admin, [0], "setup").await;
    wait_for_depots(&admin, "client 0 is delivered to the old endpoint", |d| {
        d.delivered == 1 && d.queued == 0
    })
    .await;
    let listings = |depot: &TestDepot| {
        counter(
            &depot.metrics.encode(),
            "pxeconf_rpc_duration_seconds_count",
            &[("path", "/pxeconf.v1.Depot/ListPxeConfigs")],
        )
    };

    // A restarted configserver checks the depot; the listing is held.
    server.stop().await;
    gate.shut();
    let before = listings(&old);
    let server = TestConfigServer::start(&db.path().join("db"), port).await;
    wait_until("the old endpoint was listed", || listings(&old) > before).await;

    // The depot moves; then the old listing arrives.
    let mut admin = server.admin().await;
    move_depot(&mut admin, new.url()).await;
    gate.open();
    wait_until("the new endpoint was listed", || listings(&new) >= 1).await;
    wait_until("client 0's config is at the new endpoint", || {
        new_dirs.pxe.join(mac_file(0)).exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depots_worker_lets_go_of_deliveries_once_their_acks_are_stored() {
    const N: u32 = 6000;
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("db"), 0).await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, &server.url(), false)).await;
    let mut admin = server.admin().await;
    seed(&mut admin, &[(1, depot.url())], N, |_| 1).await;
    set_actions(&mut admin, 0..N, "setup").await;
    wait_for_depots(&admin, "the depot has every config", |d| {
        d.queued == 0 && d.delivered == u64::from(N)
    })
    .await;
    // It remembered each delivery until the ack writer had stored it; not
    // every client it ever delivered to (deleted ones too) for good.
    let core = server.core.clone();
    wait_for("the deliveries are let go", 30, || {
        let core = core.clone();
        async move {
            let rt = core.dispatcher.runtime();
            rt[&depot_id(1)].remembered < 4096
        }
    })
    .await;
    // What it let go is not pushed again: the store has it delivered.
    let rt = server.core.dispatcher.runtime();
    assert_eq!(rt[&depot_id(1)].pushes_new, u64::from(N));
    server.stop().await;
}

/// An Admin write whose caller gave up (its deadline passed, the admin
/// pressed Ctrl-C) after the store took it still commits: its pushes must
/// go out too. On SQLite nothing else looks for owed pushes until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gave_up_still_pushes_what_it_committed() {
    const ROUND: u32 = 1500;
    let deadlines_ms = [1u64, 2, 4, 8, 16, 32, 64, 128, 256];
    let rounds = deadlines_ms.len() as u32;
    // Each round's clients on the two new-path depots (the legacy one's
    // look-ups are not what this is about); one more for the last write.
    let round_of = |round: u32| -> Vec<u32> {
        (round * ROUND * 3 / 2..(round + 1) * ROUND * 3 / 2)
            .filter(|n| depot_of(*n) != 3)
            .collect()
    };
    let last = rounds * ROUND * 3 / 2;
    let site = Site::start(last + 1).await;
    let mut admin = site.admin().await;
    let mut gave_up = Vec::new();
    for (round, ms) in deadlines_ms.into_iter().enumerate() {
        let mut request = tonic::Request::new(proto::SetActionRequestsRequest {
            action_requests: round_of(round as u32)
                .into_iter()
                .map(|n| proto::ActionRequest {
                    client_id: format!("client{n}.example.org"),
                    product_id: "win10-x64".into(),
                    action_request: "setup".into(),
                })
                .collect(),
        });
        request.set_timeout(std::time::Duration::from_millis(ms));
        let answer = admin.set_action_requests(request).await;
        if let Err(status) = &answer {
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        }
        gave_up.push(answer.is_err());
    }
    // Writes take the store's write gate in turn: once this one is done, so
    // is every write handed over before it.
    set_actions(&mut admin, [last], "setup").await;
    let mut committed = Vec::new();
    let mut gave_up_after_commit = 0;
    for round in 0..rounds {
        let clients = round_of(round);
        // A write is all or nothing: its first client tells.
        let done = status(&mut admin, clients[0])
            .await
            .product_on_clients
            .iter()
            .any(|p| p.action_request == "setup");
        if done {
            gave_up_after_commit += usize::from(gave_up[round as usize]);
            committed.extend(clients);
        }
    }
    assert!(
        gave_up_after_commit > 0,
        "no caller gave up after the store took its write; the test proves nothing"
    );
    wait_for("every committed action is placed", 60, || async {
        site.placed(committed.iter().copied())
    })
    .await;
}
