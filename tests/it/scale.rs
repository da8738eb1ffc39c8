//! 100,000 pending clients on one depot: all written, listed, watched by one
//! inotify instance, and a read among them still seen.

use crate::common::*;
use futures::StreamExt;
use pxeconf::proto;

const CLIENTS: u32 = 100_000;

/// Inotify instances of this process that watch `dir` (each shows up as an
/// fd whose fdinfo lists its watches by inode). Other tests in this binary
/// run depots of their own; only the ones watching this directory count.
fn inotify_instances(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let watched = format!(" ino:{:x} ", std::fs::metadata(dir).unwrap().ino());
    std::fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.starts_with("inotify wd:") && l.contains(&watched))
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_pending_clients_on_one_depot() {
    // A tmpfs keeps the test about the depot, not about the CI disk.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let dirs = DepotDirs::new_in(base.path());
    assert_eq!(inotify_instances(&dirs.pxe), 0);
    let mut depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    assert_eq!(
        inotify_instances(&dirs.pxe),
        1,
        "one inotify instance for the whole depot"
    );
    let client = depot.client().await;

    let results: Vec<Result<(), tonic::Status>> = futures::stream::iter(0..CLIENTS)
        .map(|n| {
            let mut client = client.clone();
            async move { client.set_pxe_config(bundle(n, 1)).await.map(drop) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).take(3).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(dirs.files().len(), 2 * CLIENTS as usize);
    assert_eq!(
        inotify_instances(&dirs.pxe),
        1,
        "still one inotify instance"
    );

    let mut client = depot.client().await;
    let page = client
        .list_pxe_configs(proto::ListPxeConfigsRequest {
            page_size: 10_000,
            page_token: "client99990.example.org".into(),
            product_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total, u64::from(CLIENTS));
    assert_eq!(
        page.configs.len(),
        9,
        "client99991..client99999 follow in FQDN order"
    );

    // A read among 100,000 held configs is seen and consumes only that client.
    simulate_read(&dirs.pxe.join(mac_file(54_321)));
    let read = depot.next_read().await;
    assert_eq!(read.fqdn.as_str(), "client54321.example.org");
    wait_until("client 54321's files are gone", || {
        !dirs.pxe.join(uuid(54_321)).exists()
    })
    .await;
    assert_eq!(dirs.files().len(), 2 * CLIENTS as usize - 2);
}
