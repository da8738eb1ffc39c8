//! The verbs besides import: `set-action` (a bulk write), and the reads
//! `status`, `depots` and `pending` (all pages).

use std::io::BufRead;

use serde::Serialize;

use super::bulk::{Bulk, send_actions};
use super::connect::{Admin, Connection, answer};
use super::views::{DepotView, PendingView, StatusView, print_depots, print_pending, print_status};
use crate::cli::error::CliError;
use crate::domain::{ActionRequest, ProductId};
use crate::proto;

/// Entries asked for per `ListPending` call.
const PAGE: u32 = 1000;

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
    /// List the depot's blocked configs instead (clients whose config cannot
    /// be built: the product not on the depot, no service address), with
    /// their reasons.
    #[arg(long)]
    pub blocked: bool,
    /// How to reach the configserver.
    #[command(flatten)]
    pub connection: Connection,
}

/// What `set-action` did.
#[derive(Debug, Serialize)]
struct SetActionView {
    product: String,
    action: String,
    clients: u64,
    affected: u64,
    pushes_queued: u64,
    /// Clients whose action no depot can be sent a config for yet.
    waiting: u64,
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
    // Named by the flag, before anything is sent (the server would name the
    // wire field of the first request).
    let action = ActionRequest::parse(&args.action, "--action")?;
    let product = ProductId::parse(&args.product, "--product")?;
    let clients = client_list(&args.clients)?;
    // An empty list is a broken pipeline upstream (`grep … | pxeconf
    // set-action -`), not a success.
    if clients.is_empty() {
        return Err("no clients given (an empty list on stdin?)".into());
    }
    let admin = args.connection.connect().await?;
    let mut bulk = Bulk::new(clients.len());
    let actions = clients
        .iter()
        .map(|client| proto::ActionRequest {
            client_id: client.clone(),
            product_id: product.to_string(),
            action_request: action.as_str().to_owned(),
        })
        .collect();
    send_actions(&admin, &mut bulk, actions).await?;
    let totals = bulk.finish();
    let view = SetActionView {
        product: product.to_string(),
        action: action.as_str().to_owned(),
        clients: clients.len() as u64,
        affected: totals.affected,
        pushes_queued: totals.pushes_queued,
        waiting: totals.waiting,
    };
    args.connection.print(&view, |v| {
        println!(
            "{} {} for {}: {} changed, {} queued",
            v.action,
            v.product,
            counted(v.clients, "client"),
            counted(v.affected, "row"),
            counted(v.pushes_queued, "push"),
        );
        // A netboot action that reaches no depot yet is not an error (it is
        // pushed once the depot is registered or has the product, or the
        // client has a service address), but the operator should know.
        if v.waiting > 0 {
            println!("{}", waiting_line(v.waiting, false));
        }
    })
}

/// What `waiting` clients (see `SetActionRequestsResponse.waiting`) means;
/// `would` for a dry run.
pub(super) fn waiting_line(waiting: u64, would: bool) -> String {
    let (whose, who, verb) = match (waiting == 1, would) {
        (true, false) => ("its", "it has", "waits"),
        (false, false) => ("their", "they have", "wait"),
        (true, true) => ("its", "it has", "would wait"),
        (false, true) => ("their", "they have", "would wait"),
    };
    format!(
        "{} {verb}: {whose} depot is not registered or does not have the product, or {who} no service address (`pxeconf status CLIENT` says which)",
        counted(waiting, "client")
    )
}

/// `n` and a noun, plural unless `n` is 1 (`push` takes `-es`).
fn counted(n: u64, noun: &str) -> String {
    match (n, noun.ends_with('h')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        _ => format!("{n} {noun}s"),
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

/// Every registered depot.
async fn list_depots(admin: &mut Admin) -> Result<Vec<DepotView>, CliError> {
    let depots = answer(admin.list_depots(proto::ListDepotsRequest {}).await)?.depots;
    Ok(depots.into_iter().map(DepotView::from).collect())
}

/// `pxeconf depots`: endpoint, reachability, new (batches or unary) or legacy path, pushes
/// queued, configs delivered but not yet read, configs blocked.
pub async fn depots(args: DepotsArgs) -> Result<(), CliError> {
    let mut admin = args.connection.connect().await?;
    let depots = list_depots(&mut admin).await?;
    args.connection.print(&depots, |d| print_depots(d))
}

/// `pxeconf pending --depot D`: every push owed to the depot or delivered and
/// not yet read, all pages of it; with `--blocked` its blocked configs.
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
    let pending = all_pending(&mut admin, &wanted, args.blocked).await?;
    args.connection
        .print(&pending, |p| print_pending(p, args.blocked))
}

/// Whether every entry is a blocked config (failed, with its reason): a
/// configserver older than `ListPendingRequest.blocked` ignores it and
/// lists what is pending.
fn all_blocked(page: &[proto::PendingPush]) -> bool {
    page.iter().all(|p| {
        p.delivery
            .as_ref()
            .and_then(crate::wire::blocked_reason)
            .is_some()
    })
}

/// Every page of what is pending for `depot_id`, or of its blocked configs.
async fn all_pending(
    admin: &mut Admin,
    depot_id: &str,
    blocked: bool,
) -> Result<Vec<PendingView>, CliError> {
    let mut pending = Vec::new();
    let mut token = String::new();
    loop {
        let request = proto::ListPendingRequest {
            depot_id: depot_id.to_owned(),
            page_size: PAGE,
            page_token: token.clone(),
            blocked,
        };
        let page = answer(admin.list_pending(request).await)?;
        if blocked && !all_blocked(&page.pending) {
            return Err(
                "the configserver listed pushes that are not blocked: it is older than this pxeconf and does not know --blocked"
                    .into(),
            );
        }
        pending.extend(page.pending.into_iter().map(PendingView::from));
        if page.next_page_token.is_empty() {
            return Ok(pending);
        }
        // A token that does not move would page forever.
        if page.next_page_token == token {
            return Err("the configserver returned the same page token twice".into());
        }
        token = page.next_page_token;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: proto::DeliveryState, error: &str) -> proto::PendingPush {
        proto::PendingPush {
            client_id: "c1.example.org".into(),
            delivery: Some(proto::Delivery {
                state: state as i32,
                error: error.into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_list_of_blocked_configs_holds_only_failures_with_a_reason() {
        let blocked = entry(proto::DeliveryState::Failed, "product win is not installed");
        assert!(all_blocked(std::slice::from_ref(&blocked)));
        assert!(all_blocked(&[]));
        // What an older configserver, ignoring the flag, lists instead.
        for other in [
            entry(proto::DeliveryState::Queued, ""),
            entry(proto::DeliveryState::Delivered, ""),
            entry(proto::DeliveryState::Failed, ""),
        ] {
            assert!(!all_blocked(&[blocked.clone(), other]));
        }
        let retried = proto::PendingPush {
            delivery: Some(proto::Delivery {
                next_retry: Some(crate::wire::timestamp(std::time::SystemTime::now())),
                ..blocked.delivery.clone().unwrap()
            }),
            ..blocked.clone()
        };
        assert!(!all_blocked(&[retried]), "a failure retried is no block");
    }
}
