//! The operator's verbs against a running configserver's Admin service:
//! `import`, `set-action`, `status`, `depots`, `pending`. Each prints a table,
//! or JSON with `--json`; the bulk verbs show a progress bar when stderr is a
//! terminal and stay quiet in pipes. A failure is one line: the gRPC code and
//! the configserver's message, or what could not be reached.

use std::future::Future;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize, Serializer};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use super::CliError;
use crate::auth::AttachKey;
use crate::domain::Secret;
use crate::proto;

/// Items per write call; the configserver applies each call as one transaction.
const CHUNK: usize = 1000;
/// Entries asked for per `ListPending` call.
const PAGE: u32 = 1000;
/// How long to wait for the configserver to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the configserver, and how to print; shared by every verb.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The configserver's gRPC URL.
    #[arg(long, env = "PXECONF_SERVER", default_value = "http://127.0.0.1:50050")]
    pub server: String,
    /// File holding the configserver's host key (the key itself may instead be in the
    /// environment variable PXECONF_ADMIN_KEY, which wins).
    #[arg(long, env = "PXECONF_ADMIN_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pxeconf import FILE`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Inventory file: `.toml` or `.json`, sections and field names as in the Admin API
    /// (see examples/inventory.toml).
    pub file: PathBuf,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// `pxeconf set-action CLIENT… --product P --action A`.
#[derive(Debug, clap::Args)]
pub struct SetActionArgs {
    /// Client FQDNs; `-` reads them from stdin, one per line (blank lines and `#` comments
    /// are skipped).
    #[arg(required = true)]
    pub clients: Vec<String>,
    /// The netboot product.
    #[arg(long)]
    pub product: String,
    /// setup, uninstall, update, always, once, custom or none.
    #[arg(long, default_value = "setup")]
    pub action: String,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// `pxeconf status CLIENT`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The client's FQDN.
    pub client: String,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// `pxeconf depots`.
#[derive(Debug, clap::Args)]
pub struct DepotsArgs {
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// `pxeconf pending --depot D`.
#[derive(Debug, clap::Args)]
pub struct PendingArgs {
    /// The depot's id (its FQDN).
    #[arg(long)]
    pub depot: String,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

type Admin = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;

// ---- shared: connection, errors, output ------------------------------------------

impl Connection {
    /// The admin key: `PXECONF_ADMIN_KEY`, else the key file, else none (which a
    /// configserver without a key accepts). Never a flag: `ps` would show it.
    fn key(&self) -> Result<Secret, CliError> {
        if let Ok(key) = std::env::var("PXECONF_ADMIN_KEY")
            && !key.trim().is_empty()
        {
            return Ok(Secret::new(key.trim()));
        }
        let Some(path) = &self.key_file else {
            return Ok(Secret::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("key file {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Err(format!("key file {} is empty", path.display()).into());
        }
        Ok(Secret::new(text.trim()))
    }

    /// An Admin client over one connection, the key attached to every call.
    async fn connect(&self) -> Result<Admin, CliError> {
        let attach = AttachKey::new(&self.key()?).map_err(|e| format!("admin key: {e}"))?;
        let url = self.server.trim();
        // tonic accepts a bare word as a URI and fails only at connect time, with a
        // less helpful message.
        let endpoint = Endpoint::from_shared(url.to_owned())
            .ok()
            .filter(|_| url.starts_with("http://") || url.starts_with("https://"))
            .ok_or_else(|| format!("--server {url:?} is not a URL like http://127.0.0.1:50050"))?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot reach the configserver at {url}: {}", causes(&e)))?;
        Ok(proto::admin_client::AdminClient::with_interceptor(
            channel, attach,
        ))
    }

    /// Prints `value` as JSON with `--json`, else as `table` prints it.
    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce(&T)) -> Result<(), CliError> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            table(value);
        }
        Ok(())
    }
}

/// An error and its causes on one line: tonic's connect error on its own says
/// only "transport error".
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The canonical name of a gRPC code, as grpcurl and the gRPC docs print it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A failed call as one line: `NOT_FOUND: client x.example.org does not exist`.
fn grpc_error(status: &Status) -> String {
    let message = status.message().trim();
    if message.is_empty() {
        code_name(status.code()).to_owned()
    } else {
        format!(
            "{}: {}",
            code_name(status.code()),
            message.replace('\n', " ")
        )
    }
}

/// The answer of a call, or its failure as one line.
fn answer<T>(result: Result<Response<T>, Status>) -> Result<T, CliError> {
    result
        .map(Response::into_inner)
        .map_err(|s| grpc_error(&s).into())
}

/// Prints rows under headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// A wire timestamp as a point in time; absent (or out of range) is `None`.
fn time(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// RFC 3339 to the millisecond in JSON; `null` when there is no time.
fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// RFC 3339 to the second in tables; empty when there is no time.
fn cell_time(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

// ---- bulk writes --------------------------------------------------------------------

/// What one section of a bulk write did.
#[derive(Debug, Serialize)]
struct SectionTotals {
    section: &'static str,
    items: u64,
    affected: u64,
    pushes_queued: u64,
}

/// What a bulk write did, per section and in all.
#[derive(Debug, Default, Serialize)]
struct Totals {
    sections: Vec<SectionTotals>,
    items: u64,
    affected: u64,
    pushes_queued: u64,
}

/// Sends lists in chunks of [`CHUNK`], counting what the configserver did and
/// advancing a progress bar.
struct Bulk {
    bar: ProgressBar,
    totals: Totals,
    /// Whether failures name the section (an import has several).
    name_sections: bool,
}

impl Bulk {
    /// A bulk write of `items` in all; the bar shows only on a terminal.
    fn new(items: usize, name_sections: bool) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(items as u64);
            // The template is a constant; its only failure would be a typo here.
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} {msg} ({elapsed}, {eta} left)",
            ) {
                bar.set_style(style);
            }
            // A chunk may take a while; the spinner shows the call is alive.
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            totals: Totals::default(),
            name_sections,
        }
    }

    /// Sends `items` through `call`, one call per chunk, in order.
    async fn send<T, F, Fut>(
        &mut self,
        section: &'static str,
        items: Vec<T>,
        mut call: F,
    ) -> Result<(), CliError>
    where
        F: FnMut(Vec<T>) -> Fut,
        Fut: Future<Output = Result<Response<proto::WriteResponse>, Status>>,
    {
        let count = items.len();
        if count == 0 {
            return Ok(());
        }
        self.bar.set_message(section);
        let mut done = SectionTotals {
            section,
            items: count as u64,
            affected: 0,
            pushes_queued: 0,
        };
        let mut items = items.into_iter();
        let mut offset = 0;
        while offset < count {
            let chunk: Vec<T> = items.by_ref().take(CHUNK).collect();
            let len = chunk.len();
            let response = call(chunk)
                .await
                .map_err(|status| self.failure(section, offset, len, count, &status))?
                .into_inner();
            done.affected += response.affected;
            done.pushes_queued += response.pushes_queued;
            self.totals.items += len as u64;
            self.bar.inc(len as u64);
            offset += len;
        }
        self.totals.affected += done.affected;
        self.totals.pushes_queued += done.pushes_queued;
        self.totals.sections.push(done);
        Ok(())
    }

    /// A failed chunk as one line. The configserver numbers items within the
    /// call, so `clients[3]` in the third chunk becomes `clients[2003]`; and
    /// since earlier chunks were committed, the line says how much was.
    fn failure(
        &self,
        section: &str,
        offset: usize,
        len: usize,
        count: usize,
        status: &Status,
    ) -> CliError {
        let place = if count > CHUNK {
            format!("{section}[{offset}..{}]: ", offset + len)
        } else if self.name_sections {
            format!("{section}: ")
        } else {
            String::new()
        };
        let applied = match self.totals.items {
            0 => String::new(),
            n => format!("; {n} earlier items were applied, none from here on"),
        };
        self.bar.abandon();
        let error = renumber(&grpc_error(status), section, offset);
        format!("{place}{error}{applied}").into()
    }

    /// Clears the bar and returns the totals.
    fn finish(self) -> Totals {
        self.bar.finish_and_clear();
        self.totals
    }
}

/// `CODE: section[i]…` with `i` moved by `offset`; anything else unchanged.
fn renumber(line: &str, section: &str, offset: usize) -> String {
    let renumbered = || {
        let (code, message) = line.split_once(": ")?;
        let rest = message.strip_prefix(section)?.strip_prefix('[')?;
        let (index, tail) = rest.split_once(']')?;
        let index: usize = index.parse().ok()?;
        Some(format!("{code}: {section}[{}]{tail}", index + offset))
    };
    match renumbered() {
        Some(line) if offset > 0 => line,
        _ => line.to_owned(),
    }
}

/// Sets action requests through `bulk`.
async fn send_actions(
    admin: &Admin,
    bulk: &mut Bulk,
    actions: Vec<proto::ActionRequest>,
) -> Result<(), CliError> {
    bulk.send("action_requests", actions, |action_requests| {
        let mut admin = admin.clone();
        async move {
            admin
                .set_action_requests(proto::SetActionRequestsRequest { action_requests })
                .await
        }
    })
    .await
}

// ---- import -------------------------------------------------------------------------

/// Declares the inventory: per section, an entry type with the proto message's
/// field names (each optional, defaulting to empty), its conversion to the
/// message, and the Admin write that takes it. Sections are imported in the
/// order they are declared.
macro_rules! inventory {
    ($(
        $section:ident: $entry:ident => $message:ident {
            $($field:ident: $ty:ty),* $(,)?
        } by $rpc:ident($request:ident);
    )*) => {
        /// An inventory file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Inventory {
            $($section: Vec<$entry>,)*
        }

        $(
            /// One entry of its section, as in the file.
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields, default)]
            struct $entry {
                $($field: $ty,)*
            }

            // Every field is named, so a field added to the message does not
            // compile until the inventory can carry it.
            impl From<$entry> for proto::$message {
                fn from(entry: $entry) -> Self {
                    proto::$message { $($field: entry.$field,)* }
                }
            }
        )*

        impl Inventory {
            /// Entries in all sections.
            fn len(&self) -> usize {
                0 $(+ self.$section.len())*
            }

            /// Sends every section in declaration order.
            async fn send(self, admin: &Admin, bulk: &mut Bulk) -> Result<(), CliError> {
                $(
                    let items = self.$section.into_iter().map(proto::$message::from).collect();
                    bulk.send(stringify!($section), items, |$section| {
                        let mut admin = admin.clone();
                        async move { admin.$rpc(proto::$request { $section }).await }
                    })
                    .await?;
                )*
                Ok(())
            }
        }
    };
}

// Dependencies first: a depot before the products on it, a client before its
// states, and action requests last, once everything a push needs is there.
inventory! {
    configs: ConfigEntry => Config {
        id: String, default_values: Vec<String>, description: String,
    } by upsert_configs(UpsertConfigsRequest);
    depots: DepotEntry => DepotInfo {
        id: String, endpoint: String, host_key: String, description: String,
    } by upsert_depots(UpsertDepotsRequest);
    products: ProductEntry => Product {
        id: String, product_version: String, package_version: String, pxe_config_template: String,
    } by upsert_products(UpsertProductsRequest);
    product_on_depots: ProductOnDepotEntry => ProductOnDepot {
        depot_id: String, product_id: String, product_version: String, package_version: String,
    } by upsert_product_on_depots(UpsertProductOnDepotsRequest);
    clients: ClientEntry => Host {
        id: String, hardware_address: String, system_uuid: String, ip_address: String,
        opsi_host_key: String,
    } by upsert_clients(UpsertClientsRequest);
    config_states: ConfigStateEntry => ConfigState {
        object_id: String, config_id: String, values: Vec<String>,
    } by upsert_config_states(UpsertConfigStatesRequest);
    product_property_states: PropertyStateEntry => ProductPropertyState {
        object_id: String, product_id: String, property_id: String, values: Vec<String>,
    } by upsert_product_property_states(UpsertProductPropertyStatesRequest);
    action_requests: ActionEntry => ActionRequest {
        client_id: String, product_id: String, action_request: String,
    } by set_action_requests(SetActionRequestsRequest);
}

/// Reads an inventory, TOML or JSON by the file's extension.
fn read_inventory(path: &Path) -> Result<Inventory, CliError> {
    let name = path.display();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json = match extension.as_deref() {
        Some("json") => true,
        Some("toml") => false,
        _ => return Err(format!("{name}: an inventory is a .toml or a .json file").into()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    if json {
        return serde_json::from_str(&text).map_err(|e| format!("{name}: {e}").into());
    }
    toml::from_str(&text).map_err(|e| {
        // toml's own rendering spans several lines; keep the message, name the place.
        let place = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line} column {column}")
        });
        format!(
            "{name}: {}{}",
            e.message().trim(),
            place.unwrap_or_default()
        )
        .into()
    })
}

/// `pxeconf import FILE`: every section of the file, in dependency order, in
/// transactions of up to 1,000 items; then the totals.
pub async fn import(args: ImportArgs) -> Result<(), CliError> {
    let inventory = read_inventory(&args.file)?;
    let admin = args.connection.connect().await?;
    let mut bulk = Bulk::new(inventory.len(), true);
    inventory.send(&admin, &mut bulk).await?;
    let totals = bulk.finish();
    args.connection.print(&totals, |totals| {
        let mut rows: Vec<Vec<String>> = totals
            .sections
            .iter()
            .map(|s| {
                vec![
                    s.section.to_owned(),
                    s.items.to_string(),
                    s.affected.to_string(),
                    s.pushes_queued.to_string(),
                ]
            })
            .collect();
        rows.push(vec![
            "total".to_owned(),
            totals.items.to_string(),
            totals.affected.to_string(),
            totals.pushes_queued.to_string(),
        ]);
        table(&["SECTION", "ITEMS", "AFFECTED", "PUSHES QUEUED"], &rows);
        println!(
            "imported {}: {} rows changed, {} pushes queued",
            args.file.display(),
            totals.affected,
            totals.pushes_queued
        );
    })
}

// ---- set-action ---------------------------------------------------------------------

/// What `set-action` did.
#[derive(Debug, Serialize)]
struct SetActionView {
    product: String,
    action: String,
    clients: u64,
    affected: u64,
    pushes_queued: u64,
}

/// The client FQDNs of the command line, `-` replaced by stdin's lines, each once.
fn client_list(args: &[String]) -> Result<Vec<String>, CliError> {
    let mut clients = Vec::new();
    for arg in args {
        if arg != "-" {
            clients.push(arg.trim().to_owned());
            continue;
        }
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| format!("reading clients from stdin: {e}"))?;
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                clients.push(line.to_owned());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    clients.retain(|c| seen.insert(c.to_ascii_lowercase()));
    Ok(clients)
}

/// `pxeconf set-action CLIENT… --product P --action A`: one action request
/// per client, in transactions of up to 1,000.
pub async fn set_action(args: SetActionArgs) -> Result<(), CliError> {
    let clients = client_list(&args.clients)?;
    let admin = args.connection.connect().await?;
    let mut bulk = Bulk::new(clients.len(), false);
    let actions = clients
        .iter()
        .map(|client| proto::ActionRequest {
            client_id: client.clone(),
            product_id: args.product.clone(),
            action_request: args.action.clone(),
        })
        .collect();
    send_actions(&admin, &mut bulk, actions).await?;
    let totals = bulk.finish();
    let view = SetActionView {
        product: args.product,
        action: args.action,
        clients: clients.len() as u64,
        affected: totals.affected,
        pushes_queued: totals.pushes_queued,
    };
    args.connection.print(&view, |v| {
        println!(
            "{} {} for {} clients: {} rows changed, {} pushes queued",
            v.action, v.product, v.clients, v.affected, v.pushes_queued
        );
    })
}

// ---- status -------------------------------------------------------------------------

/// One client's PXE config on one depot, as printed.
#[derive(Debug, Serialize)]
struct DeliveryView {
    depot_id: String,
    /// `queued`, `delivered`, `read`, `failed` or `removed`.
    state: String,
    operation: String,
    revision: u64,
    delivered_revision: u64,
    product_id: String,
    /// `new` or `legacy`: the path of the last successful push.
    path: String,
    #[serde(serialize_with = "rfc3339")]
    updated_at: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339")]
    delivered_at: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339")]
    read_at: Option<SystemTime>,
    error: String,
    #[serde(serialize_with = "rfc3339")]
    next_retry: Option<SystemTime>,
    attempts: u32,
}

impl From<proto::Delivery> for DeliveryView {
    fn from(d: proto::Delivery) -> Self {
        let state = match proto::DeliveryState::try_from(d.state) {
            Ok(state) => state
                .as_str_name()
                .trim_start_matches("DELIVERY_STATE_")
                .to_ascii_lowercase(),
            // A state newer than this binary: show its number rather than fail.
            Err(_) => d.state.to_string(),
        };
        DeliveryView {
            depot_id: d.depot_id,
            state,
            operation: d.operation,
            revision: d.revision,
            delivered_revision: d.delivered_revision,
            product_id: d.product_id,
            path: d.path,
            updated_at: time(d.updated_at),
            delivered_at: time(d.delivered_at),
            read_at: time(d.read_at),
            error: d.error,
            next_retry: time(d.next_retry),
            attempts: d.attempts,
        }
    }
}

/// Column headers of a delivery; `pending` puts the client in the first.
const DELIVERY_HEADERS: [&str; 7] = [
    "DEPOT",
    "STATE",
    "OP",
    "REVISION",
    "PATH",
    "SINCE",
    "ERROR (NEXT RETRY)",
];

/// A delivery's cells under [`DELIVERY_HEADERS`].
fn delivery_row(d: &DeliveryView) -> Vec<String> {
    // The newest of the times says since when the state holds.
    let since = [d.read_at, d.delivered_at, d.updated_at]
        .into_iter()
        .find(Option::is_some)
        .flatten();
    let error = match (&d.error, d.next_retry) {
        (e, _) if e.is_empty() => String::new(),
        (e, Some(retry)) => format!("{e} ({})", cell_time(Some(retry))),
        (e, None) => e.clone(),
    };
    vec![
        d.depot_id.clone(),
        d.state.clone(),
        d.operation.clone(),
        d.revision.to_string(),
        d.path.clone(),
        cell_time(since),
        error,
    ]
}

/// A netboot product's state on the client.
#[derive(Debug, Serialize)]
struct ProductView {
    product_id: String,
    action_request: String,
    action_progress: String,
    product_version: String,
    package_version: String,
}

/// `pxeconf status --json`.
#[derive(Debug, Serialize)]
struct StatusView {
    client: String,
    hardware_address: String,
    system_uuid: String,
    ip_address: String,
    depot_id: String,
    note: String,
    products: Vec<ProductView>,
    deliveries: Vec<DeliveryView>,
}

impl From<proto::ClientStatus> for StatusView {
    fn from(s: proto::ClientStatus) -> Self {
        let host = s.host.unwrap_or_default();
        StatusView {
            client: host.id,
            hardware_address: host.hardware_address,
            system_uuid: host.system_uuid,
            ip_address: host.ip_address,
            depot_id: s.depot_id,
            note: s.note,
            products: s
                .product_on_clients
                .into_iter()
                .map(|p| ProductView {
                    product_id: p.product_id,
                    action_request: p.action_request,
                    action_progress: p.action_progress,
                    product_version: p.product_version,
                    package_version: p.package_version,
                })
                .collect(),
            deliveries: s.deliveries.into_iter().map(DeliveryView::from).collect(),
        }
    }
}

/// Prints a client's status for people.
fn print_status(v: &StatusView) {
    let fields = [
        ("client", &v.client),
        ("mac", &v.hardware_address),
        ("uuid", &v.system_uuid),
        ("ip", &v.ip_address),
        ("depot", &v.depot_id),
        ("note", &v.note),
    ];
    for (name, value) in fields {
        if !value.is_empty() || name == "client" {
            println!("{name:<8} {value}");
        }
    }
    println!();
    if v.products.is_empty() {
        println!("no netboot products");
    } else {
        let rows: Vec<Vec<String>> = v
            .products
            .iter()
            .map(|p| {
                vec![
                    p.product_id.clone(),
                    p.action_request.clone(),
                    p.action_progress.clone(),
                ]
            })
            .collect();
        table(&["PRODUCT", "ACTION", "PROGRESS"], &rows);
    }
    println!();
    if v.deliveries.is_empty() {
        println!("no PXE config on any depot");
    } else {
        let rows: Vec<Vec<String>> = v.deliveries.iter().map(delivery_row).collect();
        table(&DELIVERY_HEADERS, &rows);
    }
}

/// `pxeconf status CLIENT`: netboot products, the depot, and where its PXE
/// config is: queued, delivered, read or failed.
pub async fn status(args: StatusArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    let request = proto::GetClientStatusRequest { fqdn: args.client };
    let view = StatusView::from(answer(admin.get_client_status(request).await)?);
    args.connection.print(&view, print_status)
}

// ---- depots -------------------------------------------------------------------------

/// One depot, as printed.
#[derive(Debug, Serialize)]
struct DepotView {
    id: String,
    endpoint: String,
    description: String,
    reachable: bool,
    /// `unknown`, `new` or `legacy`.
    capability: String,
    queued: u64,
    delivered: u64,
    pushes_new: u64,
    pushes_legacy: u64,
    #[serde(serialize_with = "rfc3339")]
    last_contact: Option<SystemTime>,
    last_error: String,
}

impl From<proto::DepotStatus> for DepotView {
    fn from(d: proto::DepotStatus) -> Self {
        DepotView {
            id: d.id,
            endpoint: d.endpoint,
            description: d.description,
            reachable: d.reachable,
            capability: d.capability,
            queued: d.queued,
            delivered: d.delivered,
            pushes_new: d.pushes_new,
            pushes_legacy: d.pushes_legacy,
            last_contact: time(d.last_contact),
            last_error: d.last_error,
        }
    }
}

/// Prints depots for people.
fn print_depots(depots: &[DepotView]) {
    let rows: Vec<Vec<String>> = depots
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.endpoint.clone(),
                if d.reachable { "yes" } else { "no" }.to_owned(),
                d.capability.clone(),
                d.queued.to_string(),
                d.delivered.to_string(),
                cell_time(d.last_contact),
                d.last_error.clone(),
            ]
        })
        .collect();
    table(
        &[
            "DEPOT",
            "ENDPOINT",
            "REACHABLE",
            "CAPABILITY",
            "QUEUED",
            "UNREAD",
            "LAST CONTACT",
            "LAST ERROR",
        ],
        &rows,
    );
}

/// Every registered depot.
async fn list_depots(admin: &mut Admin) -> Result<Vec<DepotView>, CliError> {
    let depots = answer(admin.list_depots(proto::ListDepotsRequest {}).await)?.depots;
    Ok(depots.into_iter().map(DepotView::from).collect())
}

/// `pxeconf depots`: endpoint, reachability, new or legacy path, pushes
/// queued and configs delivered but not yet read.
pub async fn depots(args: DepotsArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    let depots = list_depots(&mut admin).await?;
    args.connection.print(&depots, |d| print_depots(d))
}

// ---- pending ------------------------------------------------------------------------

/// One push owed to a depot, or one config delivered and not yet read.
#[derive(Debug, Serialize)]
struct PendingView {
    client_id: String,
    #[serde(flatten)]
    delivery: DeliveryView,
}

/// Prints pending pushes for people.
fn print_pending(pending: &[PendingView]) {
    let rows: Vec<Vec<String>> = pending
        .iter()
        .map(|p| {
            let mut row = delivery_row(&p.delivery);
            row[0] = p.client_id.clone();
            row
        })
        .collect();
    let mut headers = DELIVERY_HEADERS;
    headers[0] = "CLIENT";
    table(&headers, &rows);
    println!("{} pending", pending.len());
}

/// `pxeconf pending --depot D`: every push owed to the depot or delivered and
/// not yet read, all pages of it.
pub async fn pending(args: PendingArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    // An unknown depot has nothing pending; say so rather than print "0 pending".
    let wanted = args.depot.trim().trim_end_matches('.').to_ascii_lowercase();
    if !list_depots(&mut admin)
        .await?
        .iter()
        .any(|d| d.id == wanted)
    {
        return Err(format!(
            "depot {} is not registered (`pxeconf depots` lists them)",
            args.depot
        )
        .into());
    }
    let mut pending = Vec::new();
    let mut token = String::new();
    loop {
        let request = proto::ListPendingRequest {
            depot_id: wanted.clone(),
            page_size: PAGE,
            page_token: token.clone(),
        };
        let page = answer(admin.list_pending(request).await)?;
        pending.extend(page.pending.into_iter().map(|p| PendingView {
            client_id: p.client_id,
            delivery: p.delivery.unwrap_or_default().into(),
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        // A token that does not move would page forever.
        if page.next_page_token == token {
            return Err("the configserver returned the same page token twice".into());
        }
        token = page.next_page_token;
    }
    args.connection.print(&pending, |p| print_pending(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_renumbered_within_the_section() {
        let line = "INVALID_ARGUMENT: clients[3].hardware_address: invalid MAC";
        assert_eq!(
            renumber(line, "clients", 2000),
            "INVALID_ARGUMENT: clients[2003].hardware_address: invalid MAC"
        );
        assert_eq!(renumber(line, "clients", 0), line);
        assert_eq!(renumber(line, "depots", 1000), line);
        let not_found = "NOT_FOUND: client ghost.example.org does not exist";
        assert_eq!(renumber(not_found, "action_requests", 1000), not_found);
    }

    #[test]
    fn grpc_errors_name_the_canonical_code() {
        let status = Status::not_found("client x.example.org does not exist");
        assert_eq!(
            grpc_error(&status),
            "NOT_FOUND: client x.example.org does not exist"
        );
        assert_eq!(
            grpc_error(&Status::failed_precondition("")),
            "FAILED_PRECONDITION"
        );
    }

    #[test]
    fn toml_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[[clients]]\nid = \"a.example.org\"\nmac = \"x\"\n").unwrap();
        let err = read_inventory(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `mac`"), "{err}");
        assert!(err.ends_with("at line 3 column 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
