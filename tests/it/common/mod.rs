//! Shared test harness: real servers on port 0, real directories, real tools.
#![allow(dead_code)]

pub mod postgres;
pub mod process;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pxeconf::configserver::store::Location;
use pxeconf::depot::template::TemplateConfig;
use pxeconf::depot::writer::ReadEvent;
use pxeconf::depot::{Depot, DepotConfig};
use pxeconf::domain::{Fqdn, Secret, TemplateName};
use pxeconf::metrics::Metrics;
use pxeconf::proto;
use pxeconf::server::Background;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// A pxelinux template like opsi's `install`.
pub const PXELINUX: &str = "default opsi-install\n\
label opsi-install\n  kernel install\n  append initrd=miniroot.bz2 video=vesa:ywrap,mtrr vga=791 quiet splash --no-log console=tty1 console=ttyS0\n";
/// A grub (UEFI) template.
pub const GRUB: &str = "set timeout=0\n\
menuentry 'opsi-install' {\n  linux (pxe)/linux/install-x64 initrd=miniroot.bz2 lang=%lang%\n  initrd (pxe)/linux/miniroot-x64\n}\n";
/// An iPXE template.
pub const IPXE: &str = "#!ipxe\nkernel http://depot/boot/install-x64 initrd=miniroot quiet\ninitrd http://depot/boot/miniroot-x64\nboot\n";

/// Whether CI demands every external tool (tests may not skip there).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The binary under test with none of the developer's `PXECONF_*` settings
/// (server, keys, listen address …) in its environment: a test sets what it
/// means to.
pub fn pxeconf_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pxeconf"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PXECONF_") {
            command.env_remove(name);
        }
    }
    command
}

/// Whether `program` can be run; outside CI a missing tool skips the test
/// with a message, in CI it fails it.
pub fn have_tool(program: &str, why: &str) -> bool {
    let found = pxeconf::cli::tftp::find_program(program).is_some();
    if !found {
        assert!(
            !in_ci(),
            "{program} is required in CI ({why}); .ci/run installs it"
        );
        eprintln!("SKIPPED: {program} not installed ({why}); `bash .ci/run` installs it");
    }
    found
}

/// Whether a real tftpd-hpa can serve here: installed, and we are root (it
/// must drop privileges to serve). Outside root a TFTP test is skipped with
/// a message, in CI as well: no unprivileged setup can run it.
pub fn have_tftpd() -> bool {
    if !pxeconf::cli::tftp::running_as_root() {
        eprintln!("SKIPPED: tftpd-hpa needs root to serve files");
        return false;
    }
    have_tool("in.tftpd", "a real TFTP read") && have_tool("curl", "a TFTP client")
}

/// A directory tree for one depot: pxe dir and template dir, world-readable
/// so a TFTP server running as `nobody` can serve it.
pub struct DepotDirs {
    pub root: tempfile::TempDir,
    pub pxe: PathBuf,
    pub templates: PathBuf,
}

impl DepotDirs {
    pub fn new() -> Self {
        Self::in_root(tempfile::tempdir().unwrap())
    }

    /// Dirs under `base` (e.g. a tmpfs).
    pub fn new_in(base: &Path) -> Self {
        Self::in_root(tempfile::tempdir_in(base).unwrap())
    }

    fn in_root(root: tempfile::TempDir) -> Self {
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pxe = root.path().join("pxe");
        let templates = root.path().join("templates");
        std::fs::create_dir_all(&pxe).unwrap();
        std::fs::create_dir_all(&templates).unwrap();
        std::fs::write(templates.join("install"), PXELINUX).unwrap();
        std::fs::write(templates.join("install-grub-x64"), GRUB).unwrap();
        std::fs::write(templates.join("install-elilo-x86"), GRUB).unwrap();
        std::fs::write(templates.join("install-ipxe"), IPXE).unwrap();
        Self {
            root,
            pxe,
            templates,
        }
    }

    /// The names in the pxe dir, sorted.
    pub fn files(&self) -> Vec<String> {
        list_dir(&self.pxe)
    }
}

/// The names in `dir`, sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn depot_config(dirs: &DepotDirs, id: &str) -> DepotConfig {
    DepotConfig {
        depot_id: Fqdn::parse(id, "depot_id").unwrap(),
        pxe_dir: dirs.pxe.clone(),
        templates: TemplateConfig {
            dir: dirs.templates.clone(),
            bios: TemplateName::parse("install", "t").unwrap(),
            uefi_x86: TemplateName::parse("install-elilo-x86", "t").unwrap(),
            uefi_x64: TemplateName::parse("install-grub-x64", "t").unwrap(),
        },
        configservers: Vec::new(),
        host_key: None,
        legacy: false,
        batches: true,
        io_threads: 2,
        salt: None,
        // Beside the PXE directory: a depot started again on the same dirs
        // finds its journal.
        state_dir: dirs.root.path().join("state"),
        file_access: Default::default(),
        transport: pxeconf::transport::Transport::plaintext(),
    }
}

/// A depot served on 127.0.0.1:0; stops when dropped.
pub struct TestDepot {
    pub addr: SocketAddr,
    pub reads: Option<mpsc::Receiver<ReadEvent>>,
    pub metrics: Arc<Metrics>,
    server: Background,
}

impl TestDepot {
    pub async fn start(config: DepotConfig) -> Self {
        Self::start_on(config, 0).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> proto::depot_client::DepotClient<Channel> {
        proto::depot_client::DepotClient::connect(self.url())
            .await
            .unwrap()
    }

    /// Stops serving and waits until the server is down.
    pub async fn stop(self) {
        self.server.stop().await;
    }

    /// The next read event, waiting up to 10 s.
    pub async fn next_read(&mut self) -> ReadEvent {
        let reads = self.reads.as_mut().expect("reads were taken");
        tokio::time::timeout(Duration::from_secs(10), reads.recv())
            .await
            .expect("no read event within 10 s")
            .expect("read channel closed")
    }
}

/// The product every seeded client boots, with `template` (empty: the
/// depot's default).
pub fn win10(template: String) -> proto::Product {
    proto::Product {
        id: "win10-x64".into(),
        product_version: "10.0".into(),
        package_version: "3".into(),
        pxe_config_template: template,
    }
}

/// A wire bundle for `fqdn` with MAC and UUID derived from `n`.
pub fn bundle(n: u32, revision: u64) -> proto::ClientBundle {
    let fqdn = format!("client{n}.example.org");
    proto::ClientBundle {
        host: Some(proto::Host {
            id: fqdn.clone(),
            hardware_address: mac(n),
            system_uuid: uuid(n),
            ip_address: format!("10.1.{}.{}", n / 250, n % 250 + 1),
            opsi_host_key: format!("{:032x}", 0xfeed_0000_u128 + u128::from(n)),
        }),
        product_on_client: Some(proto::ProductOnClient {
            client_id: fqdn,
            product_id: "win10-x64".into(),
            action_request: "setup".into(),
            ..Default::default()
        }),
        product_on_depot: None,
        product: Some(win10(String::new())),
        depot_id: "depot1.example.org".into(),
        service_address: "https://config.example.org:4447".into(),
        boot_mode: proto::BootMode::Bios as i32,
        bootimage_append: vec!["lang=de".into()],
        product_property_states: [("lang".to_string(), "de".to_string())].into(),
        modules: Some(proto::Modules {
            uefi: true,
            secureboot: false,
        }),
        revision,
        epoch: Default::default(),
    }
}

pub fn mac(n: u32) -> String {
    let b = n.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

pub fn mac_file(n: u32) -> String {
    format!("01-{}", mac(n).replace(':', "-"))
}

pub fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Fetches `name` over TFTP with curl, retrying while tftpd starts up.
pub fn tftp_get(port: u16, name: &str) -> Vec<u8> {
    for _ in 0..50 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("tftp://127.0.0.1:{port}/{name}"),
            ])
            .output()
            .expect("run curl");
        if out.status.success() && !out.stdout.is_empty() {
            return out.stdout;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("TFTP fetch of {name} from port {port} failed");
}

/// Waits (polling, up to 10 s) until `cond` holds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A listener on 127.0.0.1:`port`. A port given again (a server restarted
/// on its old one) may be taken for a while — another test's client
/// connection can hold it as its local port — and is waited for up to 30 s,
/// as `process::Server::start` waits for a child's.
pub async fn bind_local(port: u16) -> TcpListener {
    let mut tries = 150;
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(e) if port != 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries > 0 => {
                tries -= 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot listen on 127.0.0.1:{port}: {e}"),
        }
    }
}

pub fn secret(s: &str) -> Option<Secret> {
    Some(Secret::new(s))
}

// ---- configserver -------------------------------------------------------

use pxeconf::configserver::dispatch::DispatchSettings;
use pxeconf::configserver::{ConfigServer, ConfigServerConfig, Core};
use pxeconf::domain::Modules;

/// The admin key of test configservers.
pub const ADMIN_KEY: &str = "admin-secret-0123456789abcdef0123456789";

/// Dispatch settings that retry quickly, for tests.
pub fn fast_dispatch() -> DispatchSettings {
    DispatchSettings {
        concurrency: 16,
        // Long enough that a loaded CI machine never times a push out: the
        // tests count look-ups exactly, and a timed-out legacy push is made
        // again (with its look-ups).
        timeout: Duration::from_secs(30),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        tls: None,
    }
}

/// A configserver on 127.0.0.1 (port 0 unless given); stops when dropped.
pub struct TestConfigServer {
    pub addr: SocketAddr,
    pub core: Arc<Core>,
    pub metrics: Arc<Metrics>,
    server: Background,
}

impl TestConfigServer {
    pub async fn start(database: &Path, port: u16) -> Self {
        Self::start_with(database, port, pxeconf::transport::Transport::plaintext()).await
    }

    /// A configserver on the store at `database` (SQLite or PostgreSQL).
    pub async fn start_at(database: Location, port: u16) -> Self {
        Self::start_on(database, port, pxeconf::transport::Transport::plaintext()).await
    }

    /// A configserver with `transport` (TLS, client auth, limits).
    pub async fn start_with(
        database: &Path,
        port: u16,
        transport: pxeconf::transport::Transport,
    ) -> Self {
        Self::start_on(Location::Sqlite(database.to_owned()), port, transport).await
    }

    /// A configserver on the store at `database` with `transport`.
    pub async fn start_on(
        database: Location,
        port: u16,
        transport: pxeconf::transport::Transport,
    ) -> Self {
        Self::start_dispatching(database, port, transport, fast_dispatch()).await
    }

    /// A plaintext configserver on the SQLite file `database`, pushing as
    /// `dispatch` says.
    pub async fn start_pushing(database: &Path, dispatch: DispatchSettings) -> Self {
        Self::start_dispatching(
            Location::Sqlite(database.to_owned()),
            0,
            pxeconf::transport::Transport::plaintext(),
            dispatch,
        )
        .await
    }

    /// A configserver on the store at `database` with `transport`, pushing
    /// as `dispatch` says.
    pub async fn start_dispatching(
        database: Location,
        port: u16,
        transport: pxeconf::transport::Transport,
        dispatch: DispatchSettings,
    ) -> Self {
        let metrics = Metrics::new();
        let listener = bind_local(port).await;
        let addr = listener.local_addr().unwrap();
        let server = ConfigServer::start(
            ConfigServerConfig {
                database,
                host_key: secret(ADMIN_KEY),
                modules: Modules {
                    uefi: true,
                    secureboot: true,
                },
                dispatch,
                transport,
            },
            metrics.clone(),
        )
        .await
        .unwrap();
        let core = server.core();
        let server = Background::spawn("configserver", move |stop| server.serve(listener, stop));
        Self {
            addr,
            core,
            metrics,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn admin(&self) -> Admin {
        let channel = tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        proto::admin_client::AdminClient::with_interceptor(
            channel,
            pxeconf::auth::AttachKey::new(&Secret::new(ADMIN_KEY)).unwrap(),
        )
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// An authenticated Admin client.
pub type Admin = proto::admin_client::AdminClient<
    tonic::service::interceptor::InterceptedService<Channel, pxeconf::auth::AttachKey>,
>;

/// The host key of test depot `i` (32 characters and more, as the Admin
/// API requires).
pub fn depot_key(i: usize) -> String {
    format!("depot-key-{i}-0123456789abcdef0123456789")
}

/// Test depot `i`'s id.
pub fn depot_id(i: usize) -> String {
    format!("depot{i}.example.org")
}

/// A depot config that talks to `configserver`.
pub fn linked_depot_config(
    dirs: &DepotDirs,
    i: usize,
    configserver: &str,
    legacy: bool,
) -> DepotConfig {
    let mut config = depot_config(dirs, &depot_id(i));
    config.configservers = vec![configserver.to_owned()];
    config.host_key = secret(&depot_key(i));
    config.legacy = legacy;
    config
}

impl TestDepot {
    pub async fn start_on(config: DepotConfig, port: u16) -> Self {
        let metrics = Metrics::new();
        let listener = bind_local(port).await;
        let addr = listener.local_addr().unwrap();
        let mut depot = Depot::start(config, metrics.clone()).await.unwrap();
        let reads = depot.take_reads();
        let server = Background::spawn("depot", move |stop| depot.serve(listener, stop));
        Self {
            addr,
            reads,
            metrics,
            server,
        }
    }
}

/// Registers depots, a netboot product on all of them, the default configs,
/// and `clients` clients; client n belongs to depot `depot_of(n)`.
pub async fn seed(
    admin: &mut Admin,
    depots: &[(usize, String)],
    clients: u32,
    depot_of: impl Fn(u32) -> usize,
) {
    admin
        .upsert_depots(proto::UpsertDepotsRequest {
            depots: depots
                .iter()
                .map(|(i, url)| proto::DepotInfo {
                    id: depot_id(*i),
                    endpoint: url.clone(),
                    host_key: depot_key(*i),
                    description: format!("test depot {i}"),
                })
                .collect(),
        })
        .await
        .unwrap();
    admin
        .upsert_products(proto::UpsertProductsRequest {
            products: vec![win10(String::new())],
        })
        .await
        .unwrap();
    admin
        .upsert_product_on_depots(proto::UpsertProductOnDepotsRequest {
            product_on_depots: depots
                .iter()
                .map(|(i, _)| proto::ProductOnDepot {
                    depot_id: depot_id(*i),
                    product_id: "win10-x64".into(),
                    product_version: "10.0".into(),
                    package_version: "3".into(),
                })
                .collect(),
        })
        .await
        .unwrap();
    admin
        .upsert_configs(proto::UpsertConfigsRequest {
            configs: vec![
                proto::Config {
                    id: "clientconfig.configserver.url".into(),
                    default_values: vec!["https://config.example.org:4447".into()],
                    description: String::new(),
                },
                proto::Config {
                    id: "opsi-linux-bootimage.append".into(),
                    default_values: vec!["lang=de".into()],
                    description: String::new(),
                },
            ],
        })
        .await
        .unwrap();
    let hosts: Vec<proto::Host> = (0..clients).map(|n| bundle(n, 0).host.unwrap()).collect();
    admin
        .upsert_clients(proto::UpsertClientsRequest { clients: hosts })
        .await
        .unwrap();
    admin
        .upsert_config_states(proto::UpsertConfigStatesRequest {
            config_states: (0..clients)
                .map(|n| proto::ConfigState {
                    object_id: format!("client{n}.example.org"),
                    config_id: "clientconfig.depot.id".into(),
                    values: vec![depot_id(depot_of(n))],
                })
                .collect(),
        })
        .await
        .unwrap();
}

/// Sets `action` for clients `range` in one call.
pub async fn set_actions(
    admin: &mut Admin,
    clients: impl IntoIterator<Item = u32>,
    action: &str,
) -> proto::SetActionRequestsResponse {
    admin
        .set_action_requests(proto::SetActionRequestsRequest {
            action_requests: clients
                .into_iter()
                .map(|n| proto::ActionRequest {
                    client_id: format!("client{n}.example.org"),
                    product_id: "win10-x64".into(),
                    action_request: action.into(),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// A client's status.
pub async fn status(admin: &mut Admin, n: u32) -> proto::GetClientStatusResponse {
    admin
        .get_client_status(proto::GetClientStatusRequest {
            fqdn: format!("client{n}.example.org"),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every registered depot as `ListDepots` shows it.
pub async fn depots(admin: &mut Admin) -> Vec<proto::DepotStatus> {
    admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .unwrap()
        .into_inner()
        .depots
}

/// Waits (polling, up to `secs`) until the async `cond` holds.
pub async fn wait_for<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting until {what}");
}

/// Simulates a TFTP read: open and close the file without writing.
pub fn simulate_read(path: &Path) {
    drop(std::fs::File::open(path).unwrap());
}

/// Reads a PXE config without it counting as a TFTP read: opened for
/// writing too, its close is IN_CLOSE_WRITE, which the depot ignores; and
/// with `O_NOATIME`, as the depot reads its own files, so that a later
/// start-up or overflow check does not take the access for a read.
pub fn peek(path: &Path) -> String {
    String::from_utf8(peek_bytes(path)).unwrap()
}

/// [`peek`]'s bytes.
pub fn peek_bytes(path: &Path) -> Vec<u8> {
    try_peek_bytes(path).unwrap_or_else(|| panic!("{} is missing", path.display()))
}

/// [`peek`], or `None` if there is no file: one the depot may delete at any
/// moment (a read, a removal) cannot be asked for first and opened after.
pub fn try_peek(path: &Path) -> Option<String> {
    try_peek_bytes(path).map(|b| String::from_utf8(b).unwrap())
}

fn try_peek_bytes(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOATIME.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    Some(bytes)
}

/// A PXE config's text without pxeconf's marker line (the comment naming
/// the client and the revision, which differs between runs).
pub fn without_marker(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("# pxeconf: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The config defaults a store's clients need for a config: `depot` as
/// the depot of every client, and a service address (without one every
/// config is blocked).
pub fn config_defaults(depot: &str) -> Vec<pxeconf::configserver::store::ConfigRecord> {
    use pxeconf::configserver::store::ConfigRecord;
    use pxeconf::domain::opsi::{DEPOT_ID, SERVICE_URL};
    vec![
        ConfigRecord {
            id: DEPOT_ID.into(),
            default_values: vec![depot.into()],
            description: String::new(),
        },
        ConfigRecord {
            id: SERVICE_URL.into(),
            default_values: vec!["https://cs.example.org:4447".into()],
            description: String::new(),
        },
    ]
}
