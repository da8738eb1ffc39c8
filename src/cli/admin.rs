//! The operator's verbs against a running configserver's Admin service:
//! `import`, `set-action`, `status`, `depots`, `pending`. Tables by default,
//! `--json` for scripts; bulk verbs show a progress bar on a terminal only.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::SystemTime;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::CliError;
use crate::auth::AttachKey;
use crate::domain::Secret;
use crate::proto;

/// Items per Admin call (each call is one transaction).
const CHUNK: usize = 1000;

/// How to reach the configserver.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The configserver's gRPC URL.
    #[arg(long, env = "PXECONF_SERVER", default_value = "http://127.0.0.1:50050")]
    pub server: String,
    /// File holding the configserver's host key (or put the key in PXECONF_ADMIN_KEY).
    #[arg(long, env = "PXECONF_ADMIN_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pxeconf import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Inventory file, JSON (`.json`) or TOML (anything else).
    pub file: PathBuf,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// `pxeconf set-action`.
#[derive(Debug, clap::Args)]
pub struct SetActionArgs {
    /// Client FQDNs; `-` reads them from stdin, one per line.
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

/// `pxeconf status`.
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

/// `pxeconf pending`.
#[derive(Debug, clap::Args)]
pub struct PendingArgs {
    /// The depot's id.
    #[arg(long)]
    pub depot: String,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

type Admin = proto::admin_client::AdminClient<InterceptedService<Channel, AttachKey>>;

/// A gRPC failure as one line: `NOT_FOUND: client x does not exist`.
fn status_line(status: tonic::Status) -> CliError {
    let code = format!("{:?}", status.code());
    let mut upper = String::new();
    for (i, c) in code.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            upper.push('_');
        }
        upper.push(c.to_ascii_uppercase());
    }
    format!("{upper}: {}", status.message()).into()
}

impl Connection {
    async fn connect(&self) -> Result<Admin, CliError> {
        let key = match std::env::var("PXECONF_ADMIN_KEY") {
            Ok(key) => Secret::new(key.trim()),
            Err(_) => match &self.key_file {
                Some(path) => Secret::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("key file {}: {e}", path.display()))?
                        .trim(),
                ),
                None => Secret::default(),
            },
        };
        let channel = tonic::transport::Endpoint::from_shared(self.server.clone())
            .map_err(|_| format!("{:?} is not a URL like http://127.0.0.1:50050", self.server))?
            .connect()
            .await
            .map_err(|e| format!("cannot reach the configserver at {}: {e}", self.server))?;
        Ok(proto::admin_client::AdminClient::with_interceptor(
            channel,
            AttachKey::new(&key)?,
        ))
    }

    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce()) -> Result<(), CliError> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            table();
        }
        Ok(())
    }
}

fn bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Prints rows under headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

// ---- import -----------------------------------------------------------------

/// An inventory file. Field names are those of the Admin API's messages.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Inventory {
    configs: Vec<ConfigEntry>,
    depots: Vec<DepotEntry>,
    products: Vec<ProductEntry>,
    product_on_depots: Vec<ProductOnDepotEntry>,
    clients: Vec<ClientEntry>,
    config_states: Vec<StateEntry>,
    product_property_states: Vec<PropertyEntry>,
    action_requests: Vec<ActionEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigEntry {
    id: String,
    default_values: Vec<String>,
    description: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DepotEntry {
    id: String,
    endpoint: String,
    host_key: String,
    description: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProductEntry {
    id: String,
    product_version: String,
    package_version: String,
    pxe_config_template: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProductOnDepotEntry {
    depot_id: String,
    product_id: String,
    product_version: String,
    package_version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ClientEntry {
    id: String,
    hardware_address: String,
    system_uuid: String,
    ip_address: String,
    opsi_host_key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StateEntry {
    object_id: String,
    config_id: String,
    values: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PropertyEntry {
    object_id: String,
    product_id: String,
    property_id: String,
    values: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ActionEntry {
    client_id: String,
    product_id: String,
    action_request: String,
}

/// Totals of an import.
#[derive(Debug, Default, Serialize)]
struct ImportTotals {
    /// Items sent, per section.
    sent: Vec<(String, usize)>,
    /// Rows changed.
    affected: u64,
    /// Pushes queued.
    pushes_queued: u64,
}

/// Sends `items` in chunks through `call`, adding to the totals.
async fn send_chunks<T: Clone, F, Fut>(
    name: &str,
    items: Vec<T>,
    totals: &mut ImportTotals,
    bar: &ProgressBar,
    mut call: F,
) -> Result<(), CliError>
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<proto::WriteResponse>, tonic::Status>>,
{
    if items.is_empty() {
        return Ok(());
    }
    totals.sent.push((name.to_owned(), items.len()));
    for chunk in items.chunks(CHUNK) {
        let response = call(chunk.to_vec())
            .await
            .map_err(|s| format!("{name}: {}", status_line(s)))?
            .into_inner();
        totals.affected += response.affected;
        totals.pushes_queued += response.pushes_queued;
        bar.inc(chunk.len() as u64);
    }
    Ok(())
}

/// `pxeconf import FILE`: configs, depots, products, product-on-depots,
/// clients, config states, property states, then action requests.
pub async fn import(args: ImportArgs) -> Result<(), CliError> {
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let inventory: Inventory = if args.file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.file.display()))?
    } else {
        toml::from_str(&text).map_err(|e| format!("{}: {}", args.file.display(), e.message()))?
    };
    let admin = args.connection.connect().await?;
    let total = inventory.configs.len()
        + inventory.depots.len()
        + inventory.products.len()
        + inventory.product_on_depots.len()
        + inventory.clients.len()
        + inventory.config_states.len()
        + inventory.product_property_states.len()
        + inventory.action_requests.len();
    let bar = bar(total as u64, "imported");
    let mut totals = ImportTotals::default();
    let configs = inventory.configs.into_iter().map(|c| proto::Config {
        id: c.id,
        default_values: c.default_values,
        description: c.description,
    });
    send_chunks("configs", configs.collect(), &mut totals, &bar, |configs| {
        let mut admin = admin.clone();
        async move {
            admin
                .upsert_configs(proto::UpsertConfigsRequest { configs })
                .await
        }
    })
    .await?;
    let depots = inventory.depots.into_iter().map(|d| proto::DepotInfo {
        id: d.id,
        endpoint: d.endpoint,
        host_key: d.host_key,
        description: d.description,
    });
    send_chunks("depots", depots.collect(), &mut totals, &bar, |depots| {
        let mut admin = admin.clone();
        async move {
            admin
                .upsert_depots(proto::UpsertDepotsRequest { depots })
                .await
        }
    })
    .await?;
    let products = inventory.products.into_iter().map(|p| proto::Product {
        id: p.id,
        product_version: p.product_version,
        package_version: p.package_version,
        pxe_config_template: p.pxe_config_template,
    });
    send_chunks(
        "products",
        products.collect(),
        &mut totals,
        &bar,
        |products| {
            let mut admin = admin.clone();
            async move {
                admin
                    .upsert_products(proto::UpsertProductsRequest { products })
                    .await
            }
        },
    )
    .await?;
    let pods = inventory
        .product_on_depots
        .into_iter()
        .map(|p| proto::ProductOnDepot {
            depot_id: p.depot_id,
            product_id: p.product_id,
            product_version: p.product_version,
            package_version: p.package_version,
        });
    send_chunks(
        "product_on_depots",
        pods.collect(),
        &mut totals,
        &bar,
        |product_on_depots| {
            let mut admin = admin.clone();
            async move {
                admin
                    .upsert_product_on_depots(proto::UpsertProductOnDepotsRequest {
                        product_on_depots,
                    })
                    .await
            }
        },
    )
    .await?;
    let clients = inventory.clients.into_iter().map(|c| proto::Host {
        id: c.id,
        hardware_address: c.hardware_address,
        system_uuid: c.system_uuid,
        ip_address: c.ip_address,
        opsi_host_key: c.opsi_host_key,
    });
    send_chunks("clients", clients.collect(), &mut totals, &bar, |clients| {
        let mut admin = admin.clone();
        async move {
            admin
                .upsert_clients(proto::UpsertClientsRequest { clients })
                .await
        }
    })
    .await?;
    let states = inventory
        .config_states
        .into_iter()
        .map(|s| proto::ConfigState {
            object_id: s.object_id,
            config_id: s.config_id,
            values: s.values,
        });
    send_chunks(
        "config_states",
        states.collect(),
        &mut totals,
        &bar,
        |config_states| {
            let mut admin = admin.clone();
            async move {
                admin
                    .upsert_config_states(proto::UpsertConfigStatesRequest { config_states })
                    .await
            }
        },
    )
    .await?;
    let properties =
        inventory
            .product_property_states
            .into_iter()
            .map(|s| proto::ProductPropertyState {
                object_id: s.object_id,
                product_id: s.product_id,
                property_id: s.property_id,
                values: s.values,
            });
    send_chunks(
        "product_property_states",
        properties.collect(),
        &mut totals,
        &bar,
        |product_property_states| {
            let mut admin = admin.clone();
            async move {
                admin
                    .upsert_product_property_states(proto::UpsertProductPropertyStatesRequest {
                        product_property_states,
                    })
                    .await
            }
        },
    )
    .await?;
    let actions = inventory
        .action_requests
        .into_iter()
        .map(|a| proto::ActionRequest {
            client_id: a.client_id,
            product_id: a.product_id,
            action_request: a.action_request,
        });
    send_chunks(
        "action_requests",
        actions.collect(),
        &mut totals,
        &bar,
        |action_requests| {
            let mut admin = admin.clone();
            async move {
                admin
                    .set_action_requests(proto::SetActionRequestsRequest { action_requests })
                    .await
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    args.connection.print(&totals, || {
        let rows: Vec<Vec<String>> = totals
            .sent
            .iter()
            .map(|(name, n)| vec![name.clone(), n.to_string()])
            .collect();
        table(&["SECTION", "ITEMS"], &rows);
        println!(
            "{} rows changed, {} pushes queued",
            totals.affected, totals.pushes_queued
        );
    })
}

// ---- set-action ---------------------------------------------------------------

/// `pxeconf set-action CLIENT… --product P --action A`.
pub async fn set_action(args: SetActionArgs) -> Result<(), CliError> {
    let mut clients = Vec::new();
    for c in &args.clients {
        if c == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    clients.push(line.to_owned());
                }
            }
        } else {
            clients.push(c.clone());
        }
    }
    let admin = args.connection.connect().await?;
    let bar = bar(clients.len() as u64, "action requests set");
    let mut totals = ImportTotals::default();
    let actions: Vec<proto::ActionRequest> = clients
        .iter()
        .map(|c| proto::ActionRequest {
            client_id: c.clone(),
            product_id: args.product.clone(),
            action_request: args.action.clone(),
        })
        .collect();
    send_chunks(
        "action_requests",
        actions,
        &mut totals,
        &bar,
        |action_requests| {
            let mut admin = admin.clone();
            async move {
                admin
                    .set_action_requests(proto::SetActionRequestsRequest { action_requests })
                    .await
            }
        },
    )
    .await?;
    bar.finish_and_clear();
    args.connection.print(&totals, || {
        println!(
            "{} {} for {} clients: {} pushes queued",
            args.action,
            args.product,
            clients.len(),
            totals.pushes_queued
        );
    })
}

// ---- status -------------------------------------------------------------------

/// One delivery, as printed.
#[derive(Debug, Serialize)]
struct DeliveryView {
    depot_id: String,
    state: String,
    operation: String,
    revision: u64,
    delivered_revision: u64,
    product_id: String,
    path: String,
    updated_at: String,
    delivered_at: String,
    read_at: String,
    error: String,
    next_retry: String,
    attempts: u32,
}

impl From<proto::Delivery> for DeliveryView {
    fn from(d: proto::Delivery) -> Self {
        let state = proto::DeliveryState::try_from(d.state)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("DELIVERY_STATE_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| d.state.to_string());
        DeliveryView {
            depot_id: d.depot_id,
            state,
            operation: d.operation,
            revision: d.revision,
            delivered_revision: d.delivered_revision,
            product_id: d.product_id,
            path: d.path,
            updated_at: time(&d.updated_at),
            delivered_at: time(&d.delivered_at),
            read_at: time(&d.read_at),
            error: d.error,
            next_retry: time(&d.next_retry),
            attempts: d.attempts,
        }
    }
}

#[derive(Debug, Serialize)]
struct ProductView {
    product_id: String,
    action_request: String,
    action_progress: String,
}

#[derive(Debug, Serialize)]
struct StatusView {
    client: String,
    hardware_address: String,
    system_uuid: String,
    depot_id: String,
    note: String,
    products: Vec<ProductView>,
    deliveries: Vec<DeliveryView>,
}

/// `pxeconf status CLIENT`.
pub async fn status(args: StatusArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    let s = admin
        .get_client_status(proto::GetClientStatusRequest { fqdn: args.client })
        .await
        .map_err(status_line)?
        .into_inner();
    let host = s.host.unwrap_or_default();
    let view = StatusView {
        client: host.id,
        hardware_address: host.hardware_address,
        system_uuid: host.system_uuid,
        depot_id: s.depot_id,
        note: s.note,
        products: s
            .product_on_clients
            .into_iter()
            .map(|p| ProductView {
                product_id: p.product_id,
                action_request: p.action_request,
                action_progress: p.action_progress,
            })
            .collect(),
        deliveries: s.deliveries.into_iter().map(DeliveryView::from).collect(),
    };
    args.connection.print(&view, || {
        println!("client   {}", view.client);
        println!("mac      {}", view.hardware_address);
        println!("uuid     {}", view.system_uuid);
        println!("depot    {}", view.depot_id);
        if !view.note.is_empty() {
            println!("note     {}", view.note);
        }
        println!();
        let rows: Vec<Vec<String>> = view
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
        println!();
        let rows: Vec<Vec<String>> = view.deliveries.iter().map(delivery_row).collect();
        table(&DELIVERY_HEADERS, &rows);
    })
}

const DELIVERY_HEADERS: [&str; 7] = [
    "DEPOT",
    "STATE",
    "OP",
    "REVISION",
    "PATH",
    "WHEN",
    "ERROR / NEXT RETRY",
];

fn delivery_row(d: &DeliveryView) -> Vec<String> {
    let when = [&d.read_at, &d.delivered_at, &d.updated_at]
        .into_iter()
        .find(|t| !t.is_empty())
        .cloned()
        .unwrap_or_default();
    let error = if d.error.is_empty() {
        String::new()
    } else {
        format!("{} (retry {})", d.error, d.next_retry)
    };
    vec![
        d.depot_id.clone(),
        d.state.clone(),
        d.operation.clone(),
        d.revision.to_string(),
        d.path.clone(),
        when,
        error,
    ]
}

// ---- depots -------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct DepotView {
    id: String,
    endpoint: String,
    reachable: bool,
    capability: String,
    queued: u64,
    delivered: u64,
    pushes_new: u64,
    pushes_legacy: u64,
    last_contact: String,
    last_error: String,
}

/// `pxeconf depots`.
pub async fn depots(args: DepotsArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    let depots: Vec<DepotView> = admin
        .list_depots(proto::ListDepotsRequest {})
        .await
        .map_err(status_line)?
        .into_inner()
        .depots
        .into_iter()
        .map(|d| DepotView {
            last_contact: time(&d.last_contact),
            id: d.id,
            endpoint: d.endpoint,
            reachable: d.reachable,
            capability: d.capability,
            queued: d.queued,
            delivered: d.delivered,
            pushes_new: d.pushes_new,
            pushes_legacy: d.pushes_legacy,
            last_error: d.last_error,
        })
        .collect();
    args.connection.print(&depots, || {
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
                    d.last_contact.clone(),
                    d.last_error.clone(),
                ]
            })
            .collect();
        table(
            &[
                "DEPOT",
                "ENDPOINT",
                "REACHABLE",
                "PATH",
                "QUEUED",
                "UNREAD",
                "LAST CONTACT",
                "LAST ERROR",
            ],
            &rows,
        );
    })
}

// ---- pending ------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct PendingView {
    client_id: String,
    #[serde(flatten)]
    delivery: DeliveryView,
}

/// `pxeconf pending --depot D`: every push owed to the depot or delivered
/// and not yet read, page by page.
pub async fn pending(args: PendingArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_pending(proto::ListPendingRequest {
                depot_id: args.depot.clone(),
                page_size: 5000,
                page_token: token,
            })
            .await
            .map_err(status_line)?
            .into_inner();
        all.extend(page.pending.into_iter().map(|p| PendingView {
            client_id: p.client_id,
            delivery: p.delivery.unwrap_or_default().into(),
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    args.connection.print(&all, || {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|p| {
                let mut row = vec![p.client_id.clone()];
                row.extend(delivery_row(&p.delivery).into_iter().skip(1));
                row
            })
            .collect();
        let mut headers = vec!["CLIENT"];
        headers.extend(DELIVERY_HEADERS.iter().skip(1));
        table(&headers, &rows);
        println!("{} pending", all.len());
    })
}
