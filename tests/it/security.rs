//! The trust boundary, over real sockets and real processes: TLS and mTLS
//! on every hop (wrong CA, expired certificate, a depot certificate naming
//! another depot), certificates reloaded without dropping a call, the key
//! matrix over every RPC of the descriptor set, least privilege per depot,
//! connection limits (a depot under a 256-descriptor limit with 300 idle
//! peers), private files, bounded input and metrics labels.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pxeconf::cli::lab::pki::{ThrowawayCa, Usage};
use pxeconf::cli::lab::{Lab, LabOptions};
use pxeconf::domain::{Endpoint, Secret};
use pxeconf::proto;
use pxeconf::transport::{ChannelOptions, ClientAuth, Limits, Tls, TlsFiles, Transport};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

// ---- helpers ----------------------------------------------------------------

/// A PKI in a directory: a CA and the files of the certificates it issued.
struct Pki {
    ca: ThrowawayCa,
    ca_file: PathBuf,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let ca = ThrowawayCa::new(name).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        ca.write(&ca_file).unwrap();
        Self {
            ca,
            ca_file,
            dir: dir.to_owned(),
        }
    }

    /// Writes a certificate for `names` as `file.pem`/`file.key`.
    fn issue(&self, file: &str, names: &[&str], usage: Usage, expired: bool) -> (PathBuf, PathBuf) {
        self.ca
            .issue_with(names, usage, expired)
            .unwrap()
            .write(&self.dir, file)
            .unwrap()
    }

    /// TLS for a server `name` on 127.0.0.1, its certificate also its client
    /// certificate; client certificates verified with this CA if `mtls`.
    fn server(&self, name: &str, mtls: bool) -> Arc<Tls> {
        let (cert, key) = self.issue(name, &[name, "127.0.0.1"], Usage::Both, false);
        Tls::load(TlsFiles {
            cert: Some(cert),
            key: Some(key),
            ca: Some(self.ca_file.clone()),
            client_ca: mtls.then(|| self.ca_file.clone()),
        })
        .unwrap()
    }

    /// Client TLS trusting `ca`, presenting `identity` if any.
    fn client(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> Arc<Tls> {
        let (cert, key) = identity.unzip();
        Tls::load(TlsFiles {
            cert,
            key,
            ca: Some(ca.to_owned()),
            client_ca: None,
        })
        .unwrap()
    }
}

fn transport(tls: Arc<Tls>, client_auth: ClientAuth) -> Transport {
    Transport {
        tls: Some(tls),
        client_auth,
        limits: Limits::default(),
    }
}

fn https(addr: SocketAddr) -> Endpoint {
    Endpoint::parse(&format!("https://{addr}"), "url").unwrap()
}

fn http(addr: SocketAddr) -> Endpoint {
    Endpoint::parse(&format!("http://{addr}"), "url").unwrap()
}

fn channel(endpoint: &Endpoint, tls: Option<&Arc<Tls>>) -> Channel {
    pxeconf::transport::channel(endpoint, tls, ChannelOptions::default()).unwrap()
}

/// `message` with `authorization: Bearer key` (none for an empty key).
fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !key.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

fn config_client(ch: Channel) -> proto::config_server_client::ConfigServerClient<Channel> {
    proto::config_server_client::ConfigServerClient::new(ch)
}

async fn modules(ch: Channel, key: &str) -> Result<proto::GetModulesResponse, tonic::Status> {
    config_client(ch)
        .get_modules(keyed(proto::GetModulesRequest {}, key))
        .await
        .map(tonic::Response::into_inner)
}

/// The stderr lines of a child process, collected by a thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(child: &mut Child) -> Self {
        let lines = Lines::default();
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn any(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(|l| pred(l))
    }

    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// Waits for a JSON line with `message`, returns it parsed.
    async fn wait_for(&self, message: &str, secs: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let found = self.0.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == message).then_some(v)
            });
            if let Some(v) = found {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log line {message:?} in {secs} s:\n{}", self.all());
    }
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bound address from a server's JSON "gRPC listening" line.
async fn listening(lines: &Lines) -> SocketAddr {
    let line = lines.wait_for("gRPC listening", 60).await;
    line["addr"].as_str().unwrap().parse().unwrap()
}

/// A depot process on loopback serving TLS with `cert`, logging JSON lines.
fn tls_depot(dirs: &DepotDirs, cert: &Path, key: &Path) -> (Lines, Running) {
    tls_depot_with(dirs, cert, key, &[])
}

/// [`tls_depot`] with more arguments.
fn tls_depot_with(dirs: &DepotDirs, cert: &Path, key: &Path, more: &[&str]) -> (Lines, Running) {
    let tls = [
        OsStr::new("--tls-cert"),
        cert.as_os_str(),
        OsStr::new("--tls-key"),
        key.as_os_str(),
    ];
    depot_process(dirs, tls.into_iter().chain(more.iter().map(OsStr::new)))
}

/// A depot process on loopback with `more` arguments, logging JSON lines.
fn depot_process<S: AsRef<OsStr>>(
    dirs: &DepotDirs,
    more: impl IntoIterator<Item = S>,
) -> (Lines, Running) {
    let mut child = pxeconf_command()
        .args(["depot", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(more)
        .args(["--depot-id", "depot1.example.org"])
        .arg("--pxe-dir")
        .arg(&dirs.pxe)
        .arg("--template-dir")
        .arg(&dirs.templates)
        // A journal of its own: the default is shared by every depot here.
        .arg("--state-dir")
        .arg(dirs.root.path().join("state"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::collect(&mut child);
    (lines, Running(child))
}

fn write_key_file(path: &Path, key: &str) {
    pxeconf::cli::lab::write_key(path, key).unwrap();
}

// ---- TLS and mTLS -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_runs_over_tls_and_plaintext_or_a_foreign_ca_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start_tls(LabOptions {
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
    assert!(lab.configserver_url().starts_with("https://"));
    lab.seed(40).await.unwrap();
    let all: Vec<u32> = (0..40).collect();
    lab.set_actions(&all, "setup").await.unwrap();
    // The pushes (new and legacy path), the legacy depot's look-ups and the
    // start-up calls all went over TLS: nothing listens in plaintext.
    lab.wait_delivered(40, Duration::from_secs(60), |_| {})
        .await
        .unwrap();
    assert!(
        lab.metrics.lookups_total() > 0,
        "the legacy depot looked up over TLS"
    );

    let key = std::fs::read_to_string(&lab.admin_key_file).unwrap();
    let admin = |ch| proto::admin_client::AdminClient::new(ch);
    // A plaintext client gets no answer from a TLS port (it reads the TLS
    // alert as a broken HTTP/2 frame).
    let plain = admin(channel(&http(lab.configserver), None))
        .list_depots(keyed(proto::ListDepotsRequest {}, &key))
        .await
        .unwrap_err();
    assert!(
        matches!(
            plain.code(),
            // Cancelled: hyper may see the connection close first.
            Code::Internal | Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{plain:?}"
    );
    // A client trusting another CA refuses the server's certificate.
    let other = Pki::new(dir.path(), "other");
    let foreign = Pki::client(&other.ca_file, None);
    let refused = admin(channel(&https(lab.configserver), Some(&foreign)))
        .list_depots(keyed(proto::ListDepotsRequest {}, &key))
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("UnknownIssuer"),
        "the client names why: {refused:?}"
    );
    // With the lab's CA it works.
    let listed = admin(channel(&https(lab.configserver), lab.client_tls()))
        .list_depots(keyed(proto::ListDepotsRequest {}, &key))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .depots
            .iter()
            .all(|d| d.endpoint.starts_with("https://"))
    );
    lab.shutdown().await;
}

/// A configserver binary requiring key and certificate from depots:
/// every refusal has a clear status, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_no_cert_a_foreign_ca_an_expired_cert_and_another_depots_cert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    let (cert, key) = pki.issue(
        "configserver",
        &["config.example.org", "127.0.0.1"],
        Usage::Both,
        false,
    );
    let admin_key = "admin-key-0123456789abcdef0123456789abcdef";
    let key_file = dir.path().join("admin.key");
    write_key_file(&key_file, admin_key);
    let mut child = pxeconf_command()
        .args([
            "configserver",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--database")
        .arg(dir.path().join("pxeconf.db"))
        .arg("--host-key-file")
        .arg(&key_file)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tls-ca")
        .arg(&pki.ca_file)
        .arg("--tls-client-ca")
        .arg(&pki.ca_file)
        .args(["--client-auth", "both"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::collect(&mut child);
    let _running = Running(child);
    let addr = listening(&lines).await;
    let endpoint = https(addr);
    let trust = Pki::client(&pki.ca_file, None);

    // Two depots, registered by an operator over TLS.
    let keys = [depot_key(1), depot_key(2)];
    let mut admin = proto::admin_client::AdminClient::new(channel(&endpoint, Some(&trust)));
    admin
        .upsert_depots(keyed(
            proto::UpsertDepotsRequest {
                depots: (1..=2)
                    .map(|i| proto::DepotInfo {
                        id: depot_id(i),
                        endpoint: format!("https://127.0.0.1:{}", 1000 + i),
                        host_key: keys[i - 1].clone(),
                        description: String::new(),
                    })
                    .collect(),
            },
            admin_key,
        ))
        .await
        .unwrap();

    let as_client = |file: &str, names: &[&str], expired: bool, ca: &Pki| {
        let id = ca.issue(file, names, Usage::Client, expired);
        channel(&endpoint, Some(&Pki::client(&pki.ca_file, Some(id))))
    };
    // The right key with a certificate naming that depot.
    let depot1 = as_client("depot1", &[&depot_id(1)], false, &pki);
    modules(depot1, &keys[0]).await.unwrap();
    // The right key without a certificate.
    let none = modules(channel(&endpoint, Some(&trust)), &keys[0])
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    assert!(
        none.message()
            .contains("a client certificate from the client CA is required"),
        "{none:?}"
    );
    // Depot 1's key with depot 2's certificate.
    let wrong = as_client("depot2", &[&depot_id(2)], false, &pki);
    let denied = modules(wrong, &keys[0]).await.unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated, "{denied:?}");
    assert!(
        denied.message().contains("does not name the depot"),
        "{denied:?}"
    );
    // A certificate from another CA, and an expired one: the server ends
    // the handshake (with TLS 1.3 the client learns it at its first call,
    // as a closed connection; the server's log names the reason).
    let other = Pki::new(dir.path(), "other");
    let transport_error = [
        Code::Unavailable,
        Code::Unknown,
        Code::Cancelled,
        Code::Internal,
    ];
    let foreign = as_client("foreign", &[&depot_id(1)], false, &other);
    let refused = modules(foreign, &keys[0]).await.unwrap_err();
    assert!(transport_error.contains(&refused.code()), "{refused:?}");
    let expired = as_client("expired", &[&depot_id(1)], true, &pki);
    let refused = modules(expired, &keys[0]).await.unwrap_err();
    assert!(transport_error.contains(&refused.code()), "{refused:?}");

    // The log says why, one line each.
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = |what: &str| lines.any(|l| l.contains(what));
    while !(logged("UnknownIssuer") && logged("certificate expired")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = lines.all();
    let handshakes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    assert!(
        handshakes.iter().any(|l| l.contains("UnknownIssuer"))
            && handshakes.iter().any(|l| l.contains("certificate expired")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("depot call refused")
            && l.contains("a client certificate from the client CA is required")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("depot call refused") && l.contains("does not name the depot")),
        "{text}"
    );
}

/// mTLS end to end: a configserver accepting depots by certificate only,
/// a depot presenting one that names it; pushes, look-ups and a read report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_known_by_its_certificate_only_gets_its_pushes_and_reports_its_reads() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "site");
    let db = tempfile::tempdir().unwrap();
    let cs_tls = pki.server("config.example.org", true);
    let server = TestConfigServer::start_with(
        &db.path().join("pxeconf.db"),
        0,
        transport(cs_tls, ClientAuth::Cert),
    )
    .await;
    let dirs = DepotDirs::new();
    let mut config = linked_depot_config(&dirs, 1, &https(server.addr).to_string(), true);
    config.transport = transport(pki.server(&depot_id(1), true), ClientAuth::Both);
    config.host_key = None; // known by its certificate alone
    let depot = TestDepot::start_on(config, 0).await;

    let trust = Pki::client(&pki.ca_file, None);
    let mut admin = proto::admin_client::AdminClient::with_interceptor(
        channel(&https(server.addr), Some(&trust)),
        pxeconf::auth::AttachKey::new(&Secret::new(ADMIN_KEY)).unwrap(),
    );
    seed(&mut admin, &[(1, https(depot.addr).to_string())], 3, |_| 1).await;
    set_actions(&mut admin, 0..3, "setup").await;
    // The legacy depot looked every client up, as itself, by certificate.
    // Six published files (a listing may also hold a write's temporary file).
    wait_for("three configs on the depot", 60, || {
        let files = dirs.files();
        async move { files.contains(&mac_file(1)) && files.len() == 6 }
    })
    .await;
    simulate_read(&dirs.pxe.join(mac_file(1)));
    wait_for("the read reported", 30, || {
        let mut admin = admin.clone();
        async move { status(&mut admin, 1).await.product_on_clients[0].action_request == "none" }
    })
    .await;
    // The depot's own service wants key and certificate (client_auth both).
    let mut no_cert =
        proto::depot_client::DepotClient::new(channel(&https(depot.addr), Some(&trust)));
    let refused = no_cert
        .list_pxe_configs(keyed(
            proto::ListPxeConfigsRequest::default(),
            &depot_key(1),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // Another server's certificate from the same CA, with the right key:
    // it names none of the configservers the depot takes pushes from.
    let (cert, key) = pki.issue("depot2", &["depot2.example.org"], Usage::Both, false);
    let other = Pki::client(&pki.ca_file, Some((cert, key)));
    let mut impostor =
        proto::depot_client::DepotClient::new(channel(&https(depot.addr), Some(&other)));
    let refused = impostor
        .list_pxe_configs(keyed(
            proto::ListPxeConfigsRequest::default(),
            &depot_key(1),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("names none"), "{refused:?}");
    // A wildcard certificate names no one depot, even when only one is
    // registered under it.
    let (cert, key) = pki.issue("wildcard", &["*.example.org"], Usage::Both, false);
    let wildcard = Pki::client(&pki.ca_file, Some((cert, key)));
    let refused = proto::config_server_client::ConfigServerClient::new(channel(
        &https(server.addr),
        Some(&wildcard),
    ))
    .get_modules(proto::GetModulesRequest {})
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// Certificates replaced on disk are picked up; a call in flight (a
/// reconciliation stream paused by the client) and an open connection
/// survive; new connections see the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_a_call_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "first");
    let (cert, key) = pki.issue("cs", &["127.0.0.1"], Usage::Server, false);
    let tls = Tls::load(TlsFiles {
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        ..TlsFiles::default()
    })
    .unwrap();
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start_with(
        &db.path().join("pxeconf.db"),
        0,
        transport(tls, ClientAuth::Key),
    )
    .await;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(linked_depot_config(&dirs, 1, "http://127.0.0.1:9", false)).await;
    let old_trust = Pki::client(&pki.ca_file, None);
    let old = channel(&https(server.addr), Some(&old_trust));
    let mut admin = proto::admin_client::AdminClient::with_interceptor(
        old.clone(),
        pxeconf::auth::AttachKey::new(&Secret::new(ADMIN_KEY)).unwrap(),
    );
    const HELD: u32 = 1500;
    seed(&mut admin, &[(1, depot.url())], HELD, |_| 1).await;
    set_actions(&mut admin, 0..HELD, "setup").await;
    wait_for("every config on the depot", 120, || {
        let n = dirs.files().len();
        async move { n == 2 * HELD as usize }
    })
    .await;

    // A stream of 1500 bundles, read one at a time: the server waits on
    // flow control while the certificates change under it.
    let mut stream = config_client(old.clone())
        .list_pending_bundles(keyed(
            proto::ListPendingBundlesRequest {
                depot_id: depot_id(1),
                ..Default::default()
            },
            &depot_key(1),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while got < 10 {
        stream.message().await.unwrap().unwrap();
        got += 1;
    }
    // A broken key is refused, the old certificate stays in use.
    let next = Pki::new(dir.path(), "second");
    let leaf = next.ca.issue(&["127.0.0.1"], Usage::Server).unwrap();
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, "not a key").unwrap();
    // Then the right one: the file watcher reloads.
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let new_trust = Pki::client(&next.ca_file, None);
    wait_for("a new connection sees the new certificate", 30, || {
        let ch = channel(&https(server.addr), Some(&new_trust));
        async move { modules(ch, &depot_key(1)).await.is_ok() }
    })
    .await;
    let stale = modules(
        channel(&https(server.addr), Some(&old_trust)),
        &depot_key(1),
    )
    .await
    .unwrap_err();
    assert!(format!("{stale:?}").contains("UnknownIssuer"), "{stale:?}");
    // The call in flight finishes whole; the old connection still works.
    while let Some(bundle) = stream.message().await.unwrap() {
        assert!(bundle.host.is_some());
        got += 1;
    }
    assert_eq!(got, HELD);
    admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .expect("the connection opened before the reload still works");
}

/// SIGHUP makes a depot binary re-read its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reloads_the_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "first");
    let (cert, key) = pki.issue("depot", &["127.0.0.1"], Usage::Server, false);
    let dirs = DepotDirs::new();
    let (lines, running) = tls_depot(&dirs, &cert, &key);
    let addr = listening(&lines).await;
    let health = |tls: Arc<Tls>| async move {
        tonic_health::pb::health_client::HealthClient::new(channel(&https(addr), Some(&tls)))
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
    };
    health(Pki::client(&pki.ca_file, None)).await.unwrap();
    let next = Pki::new(dir.path(), "second");
    let leaf = next.ca.issue(&["127.0.0.1"], Usage::Server).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    let pid = running.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.any(|l| l.contains("TLS certificates reloaded") && l.contains("SIGHUP")) {
        assert!(
            Instant::now() < deadline,
            "no reload on SIGHUP:\n{}",
            lines.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    health(Pki::client(&next.ca_file, None)).await.unwrap();
    drop(running);
}

// ---- the key matrix -----------------------------------------------------------

/// Passes request bytes through as they are: any RPC can be called with
/// a message encoded beforehand (or none: every field default).
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// One RPC of the descriptor sets.
#[derive(Debug, Clone)]
struct Rpc {
    path: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// Every RPC of every service the servers know, from the descriptor sets
/// (so a new RPC is in the matrix without anyone adding it).
fn rpcs() -> Vec<Rpc> {
    use prost::Message;
    let mut all = Vec::new();
    for set in [
        pxeconf::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).unwrap();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    all.push(Rpc {
                        path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                    });
                }
            }
        }
    }
    all
}

/// Calls `rpc` with `body` and `key`; the status, and the bytes of the
/// first response message if there was one.
async fn call_raw(
    ch: Channel,
    rpc: &Rpc,
    body: Vec<u8>,
    key: &str,
) -> (Code, Option<tonic::Status>, usize) {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = rpc.path.parse().unwrap();
    let result: Result<Option<Vec<u8>>, tonic::Status> =
        match (rpc.client_streaming, rpc.server_streaming) {
            (false, false) => grpc
                .unary(keyed(body, key), path, Raw)
                .await
                .map(|r| Some(r.into_inner())),
            (false, true) => match grpc.server_streaming(keyed(body, key), path, Raw).await {
                Ok(r) => r.into_inner().message().await,
                Err(e) => Err(e),
            },
            (true, false) => grpc
                .client_streaming(keyed(tokio_stream::iter(vec![body]), key), path, Raw)
                .await
                .map(|r| Some(r.into_inner())),
            (true, true) => match grpc
                .streaming(keyed(tokio_stream::iter(vec![body]), key), path, Raw)
                .await
            {
                Ok(r) => r.into_inner().message().await,
                Err(e) => Err(e),
            },
        };
    match result {
        Ok(message) => (Code::Ok, None, message.map_or(0, |m| m.len())),
        Err(status) => (status.code(), Some(status), 0),
    }
}

fn encode(message: impl prost::Message) -> Vec<u8> {
    message.encode_to_vec()
}

/// A request that names depot 2's client 1 (or depot 2), for the RPCs that
/// take one; others get an empty message (every field default).
fn sample(path: &str) -> Vec<u8> {
    let victim = "client1.example.org".to_string();
    let product = "win10-x64".to_string();
    match path.rsplit('/').next().unwrap() {
        "GetHost" => encode(proto::GetHostRequest { id: victim }),
        "GetNetbootProductOnClients" => encode(proto::GetNetbootProductOnClientsRequest {
            client_id: victim,
        }),
        "GetProductOnDepot" => encode(proto::GetProductOnDepotRequest {
            depot_id: depot_id(2),
            product_id: product,
        }),
        "GetProduct" => encode(proto::GetProductRequest {
            id: product,
            product_version: "10.0".into(),
            package_version: "3".into(),
        }),
        "GetConfigStates" => encode(proto::GetConfigStatesRequest {
            client_id: victim,
            config_ids: vec![],
        }),
        "GetProductPropertyStates" => encode(proto::GetProductPropertyStatesRequest {
            client_id: victim,
            product_id: product,
        }),
        "GetClientBundle" => encode(proto::GetClientBundleRequest { fqdn: victim }),
        "ReportPxeConfigRead" => encode(proto::ReportPxeConfigReadRequest {
            fqdn: victim,
            product_id: product,
            revision: 1,
            ..Default::default()
        }),
        "ListPendingBundles" => encode(proto::ListPendingBundlesRequest {
            depot_id: depot_id(2),
            ..Default::default()
        }),
        "GetClientStatus" => encode(proto::GetClientStatusRequest { fqdn: victim }),
        "ListPending" => encode(proto::ListPendingRequest {
            depot_id: depot_id(2),
            ..Default::default()
        }),
        // The Depot service is asked about a client of its own (depot 1).
        "SetPxeConfig" => encode(bundle(98, 5)),
        "SetPxeConfigByFqdn" => encode(proto::SetPxeConfigByFqdnRequest {
            fqdn: "client0.example.org".into(),
            ..Default::default()
        }),
        "RemovePxeConfig" => encode(proto::RemovePxeConfigRequest {
            fqdn: "client98.example.org".into(),
            ..Default::default()
        }),
        "ServerReflectionInfo" if path.contains(".v1alpha.") => {
            encode(tonic_reflection::pb::v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
                ),
            })
        }
        "ServerReflectionInfo" => encode(tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        }),
        _ => Vec::new(),
    }
}

const CREDENTIALS: [&str; 5] = [
    "no key",
    "wrong key",
    "a client's key",
    "another depot's key",
    "the right key",
];

/// Every RPC of every service × {no key, wrong key, a client's key, another
/// depot's key, the right key}: refused exactly where it must be, a refusal
/// carries no data and names nothing of the client's, health and reflection
/// stay open. Prints the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_matrix_over_every_rpc_of_the_descriptor_set() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let dirs = [DepotDirs::new(), DepotDirs::new()];
    let depot1 = TestDepot::start(linked_depot_config(&dirs[0], 1, &server.url(), false)).await;
    let depot2 = TestDepot::start(linked_depot_config(&dirs[1], 2, &server.url(), false)).await;
    let mut admin = server.admin().await;
    seed(
        &mut admin,
        &[(1, depot1.url()), (2, depot2.url())],
        4,
        |n| (n % 2) as usize + 1,
    )
    .await;
    set_actions(&mut admin, 0..4, "setup").await;
    wait_for("both depots hold their clients", 60, || {
        let n = dirs[0].files().len() + dirs[1].files().len();
        async move { n == 8 }
    })
    .await;
    let victim = bundle(1, 0).host.unwrap();
    let secrets = [
        victim.hardware_address.clone(),
        victim.system_uuid.clone(),
        victim.opsi_host_key.clone(),
        depot_id(2),
        depot_key(2),
    ];

    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for rpc in rpcs() {
        let service = rpc.path[1..].split('/').next().unwrap().to_owned();
        let open = !service.starts_with("pxeconf.");
        // (where, row label, right key, another depot's key)
        let targets: Vec<(SocketAddr, String, String, String)> = match service.as_str() {
            "pxeconf.v1.Depot" => vec![(depot1.addr, rpc.path.clone(), depot_key(1), depot_key(2))],
            "pxeconf.v1.ConfigServer" => {
                vec![(server.addr, rpc.path.clone(), depot_key(2), depot_key(1))]
            }
            "pxeconf.v1.Admin" => vec![(
                server.addr,
                rpc.path.clone(),
                ADMIN_KEY.into(),
                depot_key(1),
            )],
            _ => vec![
                (
                    server.addr,
                    format!("{} @configserver", rpc.path),
                    ADMIN_KEY.into(),
                    depot_key(1),
                ),
                (
                    depot1.addr,
                    format!("{} @depot", rpc.path),
                    depot_key(1),
                    depot_key(2),
                ),
            ],
        };
        for (addr, row, right, other) in targets {
            let keys = [
                String::new(),
                "wrong-key-0123456789abcdef0123456789".to_string(),
                victim.opsi_host_key.clone(),
                other,
                right,
            ];
            let body = sample(&rpc.path);
            let request_text = String::from_utf8_lossy(&body).into_owned();
            let mut cells = Vec::new();
            for (column, key) in CREDENTIALS.iter().zip(&keys) {
                let (code, status, _) =
                    call_raw(channel(&http(addr), None), &rpc, body.clone(), key).await;
                cells.push(format!("{code:?}"));
                let denied = matches!(code, Code::Unauthenticated | Code::PermissionDenied);
                let expected_denial = !open
                    && match *column {
                        "the right key" => false,
                        // Not about any client: any registered depot may ask.
                        "another depot's key" => {
                            !(row.ends_with("ConfigServer/GetModules")
                                || row.ends_with("ConfigServer/GetProduct"))
                        }
                        _ => true,
                    };
                if denied != expected_denial {
                    failures.push(format!("{row} with {column}: {code:?} {status:?}"));
                }
                if let Some(status) = status.filter(|_| denied) {
                    // A refusal says nothing of the client: its only detail is
                    // an ErrorInfo with the refusal's reason and no metadata.
                    if !refusal_details_are_bare(&status) {
                        failures.push(format!("{row} with {column}: details in a refusal"));
                    }
                    for secret in &secrets {
                        if status.message().contains(secret.as_str())
                            && !request_text.contains(secret.as_str())
                        {
                            failures
                                .push(format!("{row} with {column}: the refusal names {secret:?}"));
                        }
                    }
                }
            }
            table.insert(row, cells);
        }
    }
    let width = table.keys().map(String::len).max().unwrap_or(0);
    let mut printed = format!("| {:width$} | {} |\n", "RPC", CREDENTIALS.join(" | "));
    printed.push_str(&format!(
        "|{}|{}\n",
        "-".repeat(width + 2),
        "---|".repeat(CREDENTIALS.len())
    ));
    for (row, cells) in &table {
        printed.push_str(&format!("| {row:width$} | {} |\n", cells.join(" | ")));
    }
    println!("{printed}");
    assert!(failures.is_empty(), "{}\n{printed}", failures.join("\n"));
    // Every pxeconf service was in the matrix.
    for service in [
        "pxeconf.v1.Depot/",
        "pxeconf.v1.ConfigServer/",
        "pxeconf.v1.Admin/",
        "grpc.health.v1.Health/",
    ] {
        assert!(
            table.keys().any(|r| r.contains(service)),
            "{service} missing"
        );
    }
}

// ---- nothing a peer can exhaust ----------------------------------------------

/// Whether the server closed `tcp` within `secs` (EOF or reset); `false`
/// when it is still open then.
async fn closed_within(tcp: &mut tokio::net::TcpStream, secs: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the server's SETTINGS frame
        }
    }
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn health(ch: Channel) -> tonic_health::pb::health_client::HealthClient<Channel> {
    tonic_health::pb::health_client::HealthClient::new(ch)
}

/// Small limits on an in-process depot: silent peers are closed after the
/// handshake deadline, idle ones after the idle deadline (a channel
/// reconnects by itself), a call in flight keeps its connection, and a
/// full server makes room by closing a silent peer, never a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_peers_are_closed_and_a_full_depot_evicts_only_silent_ones() {
    let dirs = DepotDirs::new();
    let mut config = depot_config(&dirs, "depot1.example.org");
    config.transport.limits = Limits {
        max_connections: 3,
        handshake_timeout: Duration::from_secs(1),
        // Short enough to see an idle channel closed, long enough that the
        // callers filling the depot at the end stay (their last call to the
        // checks of their places: a few steps, a stalled CI machine's seconds).
        idle_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let depot = TestDepot::start(config).await;
    let endpoint = http(depot.addr);

    // A silent peer is closed by the first-call deadline.
    let mut silent = tokio::net::TcpStream::connect(depot.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, 30).await,
        "a silent peer stays forever"
    );

    // Three silent peers fill the depot; a real caller still gets in.
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(tokio::net::TcpStream::connect(depot.addr).await.unwrap());
    }
    let mut client = proto::depot_client::DepotClient::new(channel(&endpoint, None));
    client
        .set_pxe_config(bundle(1, 1))
        .await
        .expect("a real call gets a silent peer's place");

    // An idle channel is closed, and reconnects on its next call.
    wait_for("the idle channel is closed", 30, || {
        let text = depot.metrics.encode();
        async move { text.contains("reason=\"idle\"") }
    })
    .await;
    // (A call racing the close may fail; the channel then reconnects.)
    wait_for("the idle channel reconnects", 30, || {
        let mut client = client.clone();
        async move { client.set_pxe_config(bundle(2, 1)).await.is_ok() }
    })
    .await;
    drop((client, peers));
    wait_for("every connection is gone", 30, || {
        let text = depot.metrics.encode();
        async move { text.contains("pxeconf_connections{server=\"depot\"} 0") }
    })
    .await;

    // Three connections with health watches fill it: health needs no key,
    // so anyone could hold every slot that way. Each real caller takes a
    // watch's place (its stream ends); the watches do not hold them out.
    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut h = health(channel(&endpoint, None));
        let mut w = h
            .watch(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        w.message().await.unwrap().unwrap();
        watches.push((h, w));
    }
    let mut callers = Vec::new();
    for n in 0..3 {
        let mut caller = proto::depot_client::DepotClient::new(channel(&endpoint, None));
        caller
            .set_pxe_config(bundle(10 + n, 1))
            .await
            .expect("a real call gets a watch's place");
        callers.push(caller);
    }
    for (_, w) in &mut watches {
        let ended = tokio::time::timeout(Duration::from_secs(10), w.message()).await;
        assert!(
            matches!(ended, Ok(Err(_) | Ok(None))),
            "a watch outlived its connection's eviction: {ended:?}"
        );
    }
    // Three connections that made authenticated calls fill it now: a
    // fourth is turned away and theirs are not touched.
    let refused = proto::depot_client::DepotClient::new(channel(&endpoint, None))
        .list_pxe_configs(proto::ListPxeConfigsRequest::default())
        .await;
    assert!(
        refused.is_err(),
        "every connection authenticated: the new one is closed"
    );
    for caller in &mut callers {
        caller
            .list_pxe_configs(proto::ListPxeConfigsRequest::default())
            .await
            .expect("an authenticated connection kept its place");
    }
    let text = depot.metrics.encode();
    for reason in ["silent", "idle", "evicted", "limit"] {
        assert!(
            text.contains(&format!("reason=\"{reason}\"")),
            "no {reason} close counted:\n{text}"
        );
    }
}

/// The share of one core process `pid` used over `secs` seconds, in percent.
async fn cpu_percent(pid: u32, secs: u64) -> f64 {
    use pxeconf::cli::loadtest::cpu::{process_ticks, ticks_per_second};
    let start = (process_ticks(pid).unwrap(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let used = (process_ticks(pid).unwrap() - start.0) as f64 / ticks_per_second();
    100.0 * used / start.1.elapsed().as_secs_f64()
}

/// A depot binary limited to 256 file descriptors, 300 idle TCP connections
/// from a peer that never authenticates: real calls keep working, the depot
/// idles, and the silent peers are gone after the handshake deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_with_256_descriptors_and_300_idle_peers_keeps_answering() {
    if !have_tool("prlimit", "starting a depot with 256 file descriptors") {
        return;
    }
    let dirs = DepotDirs::new();
    let key = depot_key(1);
    let key_file = dirs.root.path().join("depot.key");
    write_key_file(&key_file, &key);
    let mut command = std::process::Command::new("prlimit");
    command
        .args(["--nofile=256:256", "--"])
        .arg(env!("CARGO_BIN_EXE_pxeconf"))
        .args([
            "depot",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--depot-id", "depot1.example.org", "--log-format", "json"])
        .arg("--pxe-dir")
        .arg(&dirs.pxe)
        .arg("--template-dir")
        .arg(&dirs.templates)
        // A journal of its own: the default is shared by every depot here.
        .arg("--state-dir")
        .arg(dirs.root.path().join("state"))
        .arg("--host-key-file")
        .arg(&key_file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PXECONF_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().unwrap();
    let lines = Lines::collect(&mut child);
    let running = Running(child);
    let pid = running.0.id();
    let addr = listening(&lines).await;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    let cap = lines.wait_for("connection limits", 10).await["max_connections"]
        .as_u64()
        .unwrap();
    let metrics_addr = lines.wait_for("metrics on /metrics", 10).await["addr"]
        .as_str()
        .unwrap()
        .to_owned();

    // The configserver's long-lived channel, connected before the flood.
    let endpoint = http(addr);
    let mut before = proto::depot_client::DepotClient::new(channel(&endpoint, None));
    let mut n = 0;
    let mut push = async |client: &mut proto::depot_client::DepotClient<Channel>| {
        n += 1;
        let started = Instant::now();
        client
            .set_pxe_config(keyed(bundle(n, 1), &key))
            .await
            .unwrap();
        started.elapsed()
    };
    push(&mut before).await;

    let flood_start = Instant::now();
    let mut peers = Vec::new();
    for _ in 0..300 {
        peers.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let idle_cpu = cpu_percent(pid, 5).await;

    // Real calls: over the channel made before, and over a new connection.
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        slowest = slowest.max(push(&mut before).await);
    }
    let mut after = proto::depot_client::DepotClient::new(channel(&endpoint, None));
    for _ in 0..10 {
        slowest = slowest.max(push(&mut after).await);
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();

    // Every silent peer is closed once its first-call deadline passes.
    let mut closed = 0;
    for peer in &mut peers {
        if closed_within(peer, 60).await {
            closed += 1;
        }
    }
    let all_closed_after = flood_start.elapsed();
    let metrics = reqwest_free_get(&metrics_addr).await;
    push(&mut before).await;
    let report = format!(
        "fd test: cap {cap} connections (limit 256 descriptors); 300 silent peers; depot CPU {idle_cpu:.1} % over 5 s \
         while flooded; {fds} descriptors open; 20 real calls, slowest {slowest:?}; {closed}/300 silent peers \
         closed by the depot, the last {:.1} s after the flood began; evicted {}, silent {}, limit {}",
        all_closed_after.as_secs_f64(),
        counter(
            &metrics,
            "pxeconf_connections_closed_total{server=\"depot\",reason=\"evicted\"}"
        ),
        counter(
            &metrics,
            "pxeconf_connections_closed_total{server=\"depot\",reason=\"silent\"}"
        ),
        counter(
            &metrics,
            "pxeconf_connections_closed_total{server=\"depot\",reason=\"limit\"}"
        ),
    );
    println!("{report}");
    assert_eq!(cap, 192, "the cap leaves a quarter of 256 descriptors free");
    assert_eq!(closed, 300, "{report}");
    assert!(idle_cpu < 25.0, "the depot spins: {report}");
    assert!((fds as u64) < 256, "{report}");
    assert!(
        lines.any(|l| l.contains("connection limit reached")),
        "the limit biting is logged:\n{}",
        lines.all()
    );
    drop(running);
}

/// `GET /metrics` over a plain TCP stream (no HTTP client crate needed).
async fn reqwest_free_get(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    body
}

// ---- files, settings, input, metrics ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_key_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start_tls(LabOptions {
        dir: dir.path().to_owned(),
        pxe_root: dir.path().to_owned(),
        depots: 1,
        legacy: 0,
        concurrency: 4,
        io_threads: 1,
        database: None,
    })
    .await
    .unwrap();
    lab.seed(2).await.unwrap();
    let db = dir.path().join("pxeconf.db");
    for file in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
        lab.admin_key_file.clone(),
        lab.depots[0].key_file.clone(),
        dir.path().join("tls/configserver.example.org.key"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    lab.shutdown().await;
}

/// A database file restored from a backup (`.backup` and `cp` write it
/// with the umask's 0644) holds every host key: the configserver takes
/// group's and others' access away from it and its -wal file at start (it
/// only set 0600 on a file it created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_database_file_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pxeconf.db");
    let server = TestConfigServer::start(&db, 0).await;
    server.stop().await;
    // The -wal and -shm files as the first run left them, if it did (their
    // content untouched: a truncated WAL beside its index is a short read).
    let files: Vec<_> = [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ]
    .into_iter()
    .filter(|f| f.exists())
    .collect();
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = TestConfigServer::start(&db, 0).await;
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    server.stop().await;
}

/// Runs the binary until it exits, killed after 30 s (a start that should
/// fail but serves); (exit code, stderr).
fn run_for_at_most(args: &[&str]) -> (Option<i32>, String) {
    let mut child = pxeconf_command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary until it exits; (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = pxeconf_command().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_configserver_refuses_to_start_open_or_with_a_readable_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pxeconf.db").display().to_string();
    // No admin key and a listener others can reach: refused, one line.
    let (code, stderr) = run(&["configserver", "--listen", "0.0.0.0:0", "--database", &db]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pxeconf: host_key_file: is required"),
        "{stderr}"
    );
    // A key file the group may read: refused, one line.
    let key = dir.path().join("configserver.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let key = key.display().to_string();
    let (code, stderr) = run(&[
        "configserver",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &db,
        "--host-key-file",
        &key,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("mode 640") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    // A short key: refused.
    std::fs::write(&key, "admin-secret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = run(&[
        "configserver",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &db,
        "--host-key-file",
        &key,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("32 to 256 characters"), "{stderr}");
    // TLS settings are checked before anything binds.
    let refused = |args: &[&str], starts: &str| {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.starts_with(starts), "{stderr}");
    };
    let depot = ["depot", "--depot-id", "d.example.org"];
    refused(
        &[&depot[..], &["--tls-cert", &key]].concat(),
        "pxeconf: tls_key: is required with tls_cert",
    );
    refused(
        &[&depot[..], &["--client-auth", "cert"]].concat(),
        "pxeconf: client_auth: cert needs tls_client_ca",
    );
    refused(
        &[&depot[..], &["--configserver", "https://c.example.org:1"]].concat(),
        "pxeconf: tls_ca: is required",
    );
}

/// A configserver without a key on loopback starts, and says it is
/// unencrypted and open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_plaintext_configserver_on_loopback_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = pxeconf_command()
        .args([
            "configserver",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--database")
        .arg(dir.path().join("pxeconf.db"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::collect(&mut child);
    let _running = Running(child);
    lines
        .wait_for(
            "plaintext gRPC: this hop is unencrypted (set tls_cert and tls_key)",
            60,
        )
        .await;
    lines
        .wait_for(
            "no host key configured: the Admin service accepts unauthenticated calls",
            10,
        )
        .await;
}

/// Oversized and malformed input is INVALID_ARGUMENT with a short message
/// naming the field; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_with_a_short_message() {
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let mut client = depot.client().await;
    type Mutation = Box<dyn Fn(&mut proto::ClientBundle)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|b| b.host.as_mut().unwrap().opsi_host_key = "k".repeat(3_900_000)),
            "host.opsi_host_key",
        ),
        (
            Box::new(|b| {
                b.host.as_mut().unwrap().id = format!("{}.example.org", "a".repeat(1_000_000))
            }),
            "host.id",
        ),
        (
            Box::new(|b| b.host.as_mut().unwrap().hardware_address = "+0:11:22:33:44:55".into()),
            "host.hardware_address",
        ),
        (
            Box::new(|b| b.bootimage_append = vec!["x=1".into(); 1001]),
            "bootimage_append",
        ),
        (
            Box::new(|b| b.bootimage_append = vec!["x".repeat(4097)]),
            "bootimage_append[0]",
        ),
        (
            Box::new(|b| {
                b.product_property_states
                    .insert("lang".into(), "d".repeat(4097));
            }),
            "product_property_states[lang]",
        ),
        (
            Box::new(|b| {
                b.product_property_states =
                    (0..1001).map(|i| (format!("p{i}"), "v".into())).collect();
            }),
            "product_property_states",
        ),
        (
            Box::new(|b| {
                b.product.as_mut().unwrap().pxe_config_template = "01-aa-bb-cc-dd-ee-ff".into()
            }),
            "product.pxe_config_template",
        ),
        (
            Box::new(|b| {
                b.product_on_client.as_mut().unwrap().action_request = "s".repeat(1_000_000)
            }),
            "product_on_client.action_request",
        ),
        (Box::new(|b| b.epoch = "e".repeat(1_000_000)), "epoch"),
    ];
    for (mutate, field) in cases {
        let mut b = bundle(1, 1);
        mutate(&mut b);
        let status = client.set_pxe_config(b).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{}",
            status.message()
        );
        assert!(
            status.message().len() < 300,
            "{field}: {} bytes",
            status.message().len()
        );
    }
    assert!(dirs.files().is_empty());
}

/// Health and reflection need no key: their requests are bounded to
/// 16 KiB (tonic reserved a message's declared length, up to 4 MiB, as its
/// header arrived — 4 GiB for one peer's 1,024 streams), while a request of
/// an ordinary size is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_services_take_small_requests_only() {
    use tonic_reflection::pb::v1alpha as reflection;
    let dirs = DepotDirs::new();
    let depot = TestDepot::start(depot_config(&dirs, "depot1.example.org")).await;
    let ch = tonic::transport::Endpoint::from_shared(depot.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let check = |service: String| {
        let ch = ch.clone();
        async move {
            tonic_health::pb::health_client::HealthClient::new(ch)
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .unwrap_err()
                .code()
        }
    };
    assert_eq!(check("s".repeat(8 * 1024)).await, Code::NotFound);
    assert_eq!(check("s".repeat(32 * 1024)).await, Code::OutOfRange);
    let symbol = |size: usize| reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection::server_reflection_request::MessageRequest::FileContainingSymbol(
                "s".repeat(size),
            ),
        ),
    };
    // The first answer's code: a symbol it does not know is decoded and
    // answered NOT_FOUND.
    let reflect = |size: usize| {
        let ch = ch.clone();
        async move {
            let mut client = reflection::server_reflection_client::ServerReflectionClient::new(ch);
            let answer = match client
                .server_reflection_info(tokio_stream::iter([symbol(size)]))
                .await
            {
                Err(status) => Err(status),
                Ok(answers) => answers.into_inner().message().await,
            };
            match answer {
                Ok(Some(_)) => "answered".to_owned(),
                Ok(None) => "ended".to_owned(),
                Err(status) => format!("{:?}", status.code()),
            }
        }
    };
    assert_eq!(reflect(8 * 1024).await, "NotFound");
    // Refused undecoded: tonic-reflection ends its answers at a request it
    // could not read.
    assert_eq!(reflect(32 * 1024).await, "ended");
}

/// The Admin API refuses template names that look like managed PXE files,
/// absolute paths and `..`, like the depot does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_templates_named_like_pxe_files() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let mut admin = server.admin().await;
    for template in [
        "01-00-16-3e-10-00-01",
        "4c4c4544-0035-3010-8045-b4c04f4e4b01",
        ".pxeconf-tmp-x",
        "../etc/passwd",
        "/etc/passwd",
    ] {
        let status = admin
            .upsert_products(proto::UpsertProductsRequest {
                products: vec![proto::Product {
                    id: "p".into(),
                    product_version: "1".into(),
                    package_version: "1".into(),
                    pxe_config_template: template.into(),
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{template}: {status:?}"
        );
        assert!(
            status.message().contains("pxe_config_template"),
            "{status:?}"
        );
    }
}

/// Only the RPCs a server serves become metric labels; refused callers are
/// counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_only_served_rpcs_and_count_refused_callers() {
    let dirs = DepotDirs::new();
    let mut config = depot_config(&dirs, "depot1.example.org");
    config.host_key = Some(Secret::new(depot_key(1)));
    let depot = TestDepot::start(config).await;
    let ch = channel(&http(depot.addr), None);
    let made_up = Rpc {
        path: String::new(),
        client_streaming: false,
        server_streaming: false,
    };
    for path in ["/pxeconf.v1.Depot/Nope", "/pxeconf.v1.Made/Up", "/evil/x"] {
        let rpc = Rpc {
            path: path.into(),
            ..made_up.clone()
        };
        let (code, _, _) = call_raw(ch.clone(), &rpc, Vec::new(), &depot_key(1)).await;
        assert_eq!(code, Code::Unimplemented, "{path}");
    }
    let mut client = proto::depot_client::DepotClient::new(ch);
    for key in ["", "wrong-key-0123456789abcdef0123456789"] {
        let status = client
            .list_pxe_configs(keyed(proto::ListPxeConfigsRequest::default(), key))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    client
        .list_pxe_configs(keyed(
            proto::ListPxeConfigsRequest::default(),
            &depot_key(1),
        ))
        .await
        .unwrap();
    let text = depot.metrics.encode();
    let paths: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("path=\"").nth(1)?.split('"').next())
        .collect();
    assert!(paths.contains("other"), "{paths:?}");
    assert!(
        paths.contains("/pxeconf.v1.Depot/ListPxeConfigs"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .all(|p| *p == "other"
                || !p.contains("Nope") && !p.contains("Made") && !p.contains("evil")),
        "{paths:?}"
    );
    assert_eq!(
        counter(
            &text,
            "pxeconf_auth_failures_total{service=\"pxeconf.v1.Depot\",reason=\"unauthenticated\"}"
        ),
        2,
        "{text}"
    );
}

/// The operator verbs reach an https:// configserver with `--tls-ca`, and
/// say in one line what is missing without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_verbs_speak_tls_with_the_ca_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start_tls(LabOptions {
        dir: dir.path().to_owned(),
        pxe_root: dir.path().to_owned(),
        depots: 1,
        legacy: 0,
        concurrency: 4,
        io_threads: 1,
        database: None,
    })
    .await
    .unwrap();
    let url = lab.configserver_url();
    let ca = lab.pki.as_ref().unwrap().ca_file.clone();
    let key = lab.admin_key_file.clone();
    let run = move |with_ca: bool| {
        let mut command = pxeconf_command();
        command
            .args(["depots", "--json", "--server", &url])
            .env("PXECONF_ADMIN_KEY_FILE", &key);
        if with_ca {
            command.arg("--tls-ca").arg(&ca);
        }
        command.output().unwrap()
    };
    let ok = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(true)
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("depot1.example.org"));
    let refused = tokio::task::spawn_blocking(move || run(false))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is https:// but no --tls-ca is given"),
        "{stderr}"
    );
    lab.shutdown().await;
}

/// Whether `status` carries exactly one detail: an `ErrorInfo` of domain
/// `pxeconf` with a refusal's reason and no metadata.
fn refusal_details_are_bare(status: &tonic::Status) -> bool {
    use tonic_types::StatusExt;
    let details = status.get_error_details_vec();
    match details.as_slice() {
        [tonic_types::ErrorDetail::ErrorInfo(info)] => {
            info.domain == "pxeconf"
                && matches!(info.reason.as_str(), "UNAUTHENTICATED" | "WRONG_DEPOT")
                && info.metadata.is_empty()
        }
        _ => false,
    }
}

#[tokio::test]
async fn the_admin_key_is_refused_as_a_depots_host_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&tmp.path().join("cs.db"), 0).await;
    let mut admin = cs.admin().await;
    let depot = |key: &str| proto::DepotInfo {
        id: depot_id(1),
        endpoint: "http://127.0.0.1:9".into(),
        host_key: key.into(),
        description: String::new(),
    };
    let refused = admin
        .upsert_depots(proto::UpsertDepotsRequest {
            depots: vec![depot(ADMIN_KEY)],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("depots[0].host_key: is the Admin key"),
        "{refused:?}"
    );
    assert!(!refused.message().contains(ADMIN_KEY));
    let imported = admin
        .import_inventory(tokio_stream::iter(vec![proto::ImportInventoryRequest {
            depots: vec![depot(ADMIN_KEY)],
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(imported.code(), Code::InvalidArgument, "{imported:?}");
    let listed = admin
        .list_depots(proto::ListDepotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.depots.is_empty(), "{listed:?}");
    // A key of its own is taken.
    admin
        .upsert_depots(proto::UpsertDepotsRequest {
            depots: vec![depot(&depot_key(1))],
        })
        .await
        .unwrap();
    cs.stop().await;
}

/// An import arriving slower than the request timeout (a large dump over
/// a slow link) is imported: its handler reads the whole upload before it
/// answers, and the timeout cancelled it, nothing imported (it now has 30
/// minutes at least; `server::deadline` tests the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_slower_than_the_request_timeout_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let mut transport = pxeconf::transport::Transport::plaintext();
    transport.limits.request_timeout = Duration::from_secs(1);
    let cs = TestConfigServer::start_with(&tmp.path().join("cs.db"), 0, transport).await;
    let mut admin = cs.admin().await;
    let parts = (0..3u32).map(|n| proto::ImportInventoryRequest {
        clients: vec![bundle(n, 0).host.unwrap()],
        ..Default::default()
    });
    let slow =
        tokio_stream::StreamExt::throttle(tokio_stream::iter(parts), Duration::from_millis(700));
    let imported = admin.import_inventory(slow).await.unwrap().into_inner();
    assert!(format!("{imported:?}").contains("clients"), "{imported:?}");
    for n in 0..3 {
        admin
            .get_client_status(proto::GetClientStatusRequest {
                fqdn: format!("client{n}.example.org"),
            })
            .await
            .unwrap();
    }
    cs.stop().await;
}

#[tokio::test]
async fn an_import_larger_than_its_byte_bound_is_refused_before_it_is_held_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let cs = TestConfigServer::start(&tmp.path().join("cs.db"), 0).await;
    let mut admin = cs.admin().await;
    // Parts each under gRPC's 4 MiB message limit, one item each (the
    // items' count is far under its own bound): only the bytes add up.
    let part = proto::ImportInventoryRequest {
        clients: vec![proto::Host {
            id: "x".repeat(4_000_000),
            ..Default::default()
        }],
        ..Default::default()
    };
    let parts = std::iter::repeat_n(part, 70);
    let refused = admin
        .import_inventory(tokio_stream::iter(parts))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().starts_with("import: more than 256 MiB"),
        "{refused:?}"
    );
    cs.stop().await;
}

#[test]
fn a_depot_refuses_to_start_with_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let (cert, key) = pki.issue("expired", &[&depot_id(1)], Usage::Both, true);
    let dirs = DepotDirs::new();
    let (code, stderr) = run(&[
        "depot",
        "--listen",
        "127.0.0.1:0",
        "--depot-id",
        &depot_id(1),
        "--pxe-dir",
        &dirs.pxe.display().to_string(),
        "--template-dir",
        &dirs.templates.display().to_string(),
        "--state-dir",
        &dirs.root.path().join("state").display().to_string(),
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pxeconf: tls_cert: ")
            && stderr
                .trim_end()
                .ends_with("expired on 2001-01-01T00:00:00Z"),
        "{stderr}"
    );
}

/// A certificate due for renewal is warned about at start, where the log
/// is read (the check ran before the log was set up, and said nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_ending_within_14_days_is_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let (cert, key) = pki
        .ca
        .issue_ending_in(&["127.0.0.1"], Usage::Server, DAY * 5)
        .unwrap()
        .write(dir.path(), "soon")
        .unwrap();
    let dirs = DepotDirs::new();
    let (lines, _running) = tls_depot(&dirs, &cert, &key);
    listening(&lines).await;
    let warned = lines
        .wait_for("the TLS certificate expires within 14 days", 10)
        .await;
    assert_eq!(warned["level"], "WARN", "{warned}");
    assert_eq!(warned["cert"], cert.display().to_string(), "{warned}");
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A server runs for months: its certificate is spoken of as it enters
/// its last 14 days and as it ends, not only at start, and its end is a
/// metric to alert on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_warned_about_as_its_last_days_come_and_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let issue = |ends_in: Duration, name: &str| {
        pki.ca
            .issue_ending_in(&["127.0.0.1"], Usage::Server, ends_in)
            .unwrap()
            .write(dir.path(), name)
            .unwrap()
    };
    // Ends 14 days and 10 s from now: nothing at start, a warning as the
    // 14 days begin.
    let (cert, key) = issue(DAY * 14 + Duration::from_secs(10), "later");
    let dirs = DepotDirs::new();
    let (later, _running) =
        tls_depot_with(&dirs, &cert, &key, &["--metrics-listen", "127.0.0.1:0"]);
    // Ends in 8 s: warned about at start, an error when it has ended.
    let (cert, key) = issue(Duration::from_secs(8), "soon");
    let dirs2 = DepotDirs::new();
    let (soon, _running2) = tls_depot(&dirs2, &cert, &key);

    listening(&later).await;
    let series = "pxeconf_tls_certificate_expiry_timestamp_seconds{server=\"depot\"}";
    let text = scrape_until(&later, series).await;
    let expiry = counter(&text, series);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let in_14_days = now + DAY.as_secs() * 14;
    assert!(
        (in_14_days - 60..=in_14_days + 60).contains(&expiry),
        "{expiry} against {in_14_days}:\n{text}"
    );
    let message = "the TLS certificate expires within 14 days";
    let warned = later.wait_for(message, 30).await;
    let at = humantime::parse_rfc3339(warned["timestamp"].as_str().unwrap()).unwrap();
    let window = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(expiry) - DAY * 14;
    assert!(at >= window, "warned before the 14 days began: {warned}");
    assert!(
        !later.any(|l| l.contains(message) && !l.contains(warned["timestamp"].as_str().unwrap())),
        "warned twice:\n{}",
        later.all()
    );

    listening(&soon).await;
    soon.wait_for(message, 10).await;
    let ended = soon
        .wait_for(
            "the TLS certificate has expired: peers refuse every connection until it is replaced (a new file is loaded by itself)",
            30,
        )
        .await;
    assert_eq!(ended["level"], "ERROR", "{ended}");

    // A plaintext depot that only trusts a CA (to call an https://
    // configserver) has no certificate to end: no series, which a 0 would
    // have made an expired one.
    let dirs3 = DepotDirs::new();
    let trusting = [
        OsStr::new("--metrics-listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--tls-ca"),
        pki.ca_file.as_os_str(),
    ];
    let (plain, _running3) = depot_process(&dirs3, trusting);
    listening(&plain).await;
    let text = scrape_until(&plain, "pxeconf_connections{server=\"depot\"}").await;
    assert!(!text.contains(series), "{text}");
}

/// The `/metrics` page of the process logging `lines`, once it holds
/// `series` (the metrics listener may answer before the gRPC server is set
/// up); the last page read after 5 s without it.
async fn scrape_until(lines: &Lines, series: &str) -> String {
    let addr = lines.wait_for("metrics on /metrics", 10).await["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest_free_get(&addr).await;
        if text.contains(series) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text
}

/// A depot that takes pushes by client certificate (without a host key)
/// must know whose: without a configserver to name, any certificate of the
/// CA (another depot's) would do, so it does not start.
#[test]
fn a_depot_taking_certificates_alone_needs_a_configserver_to_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "test");
    let (cert, key) = pki.issue("depot", &[&depot_id(1)], Usage::Both, false);
    let dirs = DepotDirs::new();
    let dir_arg = |p: &Path| p.display().to_string();
    let (cert, key, ca) = (dir_arg(&cert), dir_arg(&key), dir_arg(&pki.ca_file));
    let state = dir_arg(&dirs.root.path().join("state"));
    let (pxe, templates) = (dir_arg(&dirs.pxe), dir_arg(&dirs.templates));
    let depot = |client_auth: &str, more: &[&str]| {
        let args = [
            "depot",
            "--listen",
            "127.0.0.1:0",
            "--depot-id",
            &depot_id(1),
            "--pxe-dir",
            &pxe,
            "--template-dir",
            &templates,
            "--state-dir",
            &state,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
            "--client-auth",
            client_auth,
        ];
        run_for_at_most(&[&args[..], more].concat())
    };
    for client_auth in ["cert", "both"] {
        // `both` without a host key: no key names the caller either.
        let (code, stderr) = depot(client_auth, &[]);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "pxeconf: client_auth: {client_auth} needs configserver: a push's client certificate must name the host of a configserver this depot reports to (or use both, with a host key)"
            )
        );
    }
    // `both` with a configserver but no key: it took every call with a
    // certificate, as `cert` does, unsaid.
    let (code, stderr) = depot(
        "both",
        &[
            "--configserver",
            "https://cs.example.org:50050",
            "--tls-ca",
            &ca,
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "pxeconf: host_key_file: is required with client_auth = both (without a key, say client_auth = cert)"
    );
}

/// Two configservers on one PostgreSQL database: a depot key changed
/// through one is the key the other accepts within seconds (before, only
/// after its restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_key_changed_through_one_replica_is_taken_by_the_other() {
    let Some(cluster) = crate::common::postgres::shared() else {
        assert!(!in_ci(), "PostgreSQL is installed in CI");
        return;
    };
    let url = cluster.fresh_database().await;
    let location = pxeconf::configserver::store::Location::Postgres(url);
    let a = TestConfigServer::start_at(location.clone(), 0).await;
    let b = TestConfigServer::start_at(location, 0).await;
    let mut admin = a.admin().await;
    let register = |key: String| proto::UpsertDepotsRequest {
        depots: vec![proto::DepotInfo {
            id: depot_id(1),
            endpoint: "http://127.0.0.1:9".into(),
            host_key: key,
            description: String::new(),
        }],
    };
    let endpoint = http(b.addr);
    let accepted_by_b = |key: String| {
        let endpoint = endpoint.clone();
        async move { modules(channel(&endpoint, None), &key).await.is_ok() }
    };
    admin.upsert_depots(register(depot_key(1))).await.unwrap();
    wait_for("b takes the first key", 10, || accepted_by_b(depot_key(1))).await;
    let rotated = format!("{}-rotated", depot_key(1));
    admin
        .upsert_depots(register(rotated.clone()))
        .await
        .unwrap();
    wait_for("b takes the new key", 10, || accepted_by_b(rotated.clone())).await;
    assert!(!accepted_by_b(depot_key(1)).await, "the old key is refused");
    a.stop().await;
    b.stop().await;
}

/// A depot whose key the configserver knows no depot by (not registered
/// yet, or its key changed on one side) is told what to check, not only
/// that the key is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depot_key_no_depot_has_is_refused_saying_what_to_check() {
    let db = tempfile::tempdir().unwrap();
    let server = TestConfigServer::start(&db.path().join("pxeconf.db"), 0).await;
    let refused = config_client(channel(&http(server.addr), None))
        .get_modules(keyed(
            proto::GetModulesRequest {},
            "unknown-key-0123456789abcdef0123456789",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("no registered depot has this host key"),
        "{refused:?}"
    );
}
