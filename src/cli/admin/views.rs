//! What the read verbs print: the Admin API's answers as views (serialized
//! for `--json`) and their tables for people.

use std::time::SystemTime;

use serde::Serialize;

use super::output::{cell_time, rfc3339, table, time};
use crate::proto;

/// One client's PXE config on one depot, as printed.
#[derive(Debug, Serialize)]
pub(super) struct DeliveryView {
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
    /// When the configserver recorded the read (and turned the action `none`).
    #[serde(serialize_with = "rfc3339")]
    read_recorded_at: Option<SystemTime>,
    error: String,
    #[serde(serialize_with = "rfc3339")]
    next_retry: Option<SystemTime>,
    attempts: u32,
    /// The template the depot used, and why.
    template: String,
    template_reason: String,
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
            read_recorded_at: time(d.read_recorded_at),
            error: d.error,
            next_retry: time(d.next_retry),
            attempts: d.attempts,
            template: d.template,
            template_reason: d.template_reason,
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
    // The newest of the times says since when the state holds (a read of
    // an earlier revision stays recorded while a newer one is queued).
    let since = [d.read_at, d.delivered_at, d.updated_at]
        .into_iter()
        .flatten()
        .max();
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
pub(super) struct ProductView {
    product_id: String,
    action_request: String,
    action_progress: String,
    product_version: String,
    package_version: String,
}

/// `pxeconf status --json`.
#[derive(Debug, Serialize)]
pub(super) struct StatusView {
    client: String,
    hardware_address: String,
    system_uuid: String,
    ip_address: String,
    depot_id: String,
    note: String,
    /// The netboot product whose config is pushed now (the newest action).
    active_product_id: String,
    /// Products with an action waiting for its read, newest first.
    waiting_product_ids: Vec<String>,
    products: Vec<ProductView>,
    deliveries: Vec<DeliveryView>,
}

impl From<proto::GetClientStatusResponse> for StatusView {
    fn from(s: proto::GetClientStatusResponse) -> Self {
        let host = s.host.unwrap_or_default();
        StatusView {
            client: host.id,
            hardware_address: host.hardware_address,
            system_uuid: host.system_uuid,
            ip_address: host.ip_address,
            depot_id: s.depot_id,
            note: s.note,
            active_product_id: s.active_product_id,
            waiting_product_ids: s.waiting_product_ids,
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
pub(super) fn print_status(v: &StatusView) {
    println!("{:<8} {}", "client", v.client);
    let waiting = v.waiting_product_ids.join(", ");
    let known = [
        ("mac", &v.hardware_address),
        ("uuid", &v.system_uuid),
        ("ip", &v.ip_address),
        ("depot", &v.depot_id),
        ("note", &v.note),
        ("active", &v.active_product_id),
        ("waiting", &waiting),
    ];
    for (name, value) in known.into_iter().filter(|(_, v)| !v.is_empty()) {
        println!("{name:<8} {value}");
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
        for d in v.deliveries.iter().filter(|d| !d.template.is_empty()) {
            println!(
                "template {} on {}: {}",
                d.template, d.depot_id, d.template_reason
            );
        }
    }
}

/// One depot, as printed.
#[derive(Debug, Serialize)]
pub(super) struct DepotView {
    pub id: String,
    endpoint: String,
    description: String,
    reachable: bool,
    /// `unknown`, `new` or `legacy`.
    capability: String,
    /// Whether new-path pushes go in batches.
    batches: bool,
    queued: u64,
    delivered: u64,
    /// Configs that cannot be built (see `DepotStatus.blocked`).
    blocked: u64,
    pushes_new: u64,
    pushes_legacy: u64,
    #[serde(serialize_with = "rfc3339")]
    last_contact: Option<SystemTime>,
    last_error: String,
    /// Another replica that pushes to the depot (see `DepotStatus`).
    pushed_by: String,
}

impl From<proto::DepotStatus> for DepotView {
    fn from(d: proto::DepotStatus) -> Self {
        DepotView {
            id: d.id,
            endpoint: d.endpoint,
            description: d.description,
            reachable: d.reachable,
            capability: d.capability,
            batches: d.batches,
            queued: d.queued,
            delivered: d.delivered,
            blocked: d.blocked,
            pushes_new: d.pushes_new,
            pushes_legacy: d.pushes_legacy,
            last_contact: time(d.last_contact),
            last_error: d.last_error,
            pushed_by: d.pushed_by,
        }
    }
}

/// "yes", "no", or "untried" for a depot not called since the
/// configserver started; "elsewhere" for one another replica pushes to.
fn reachability(d: &DepotView) -> &'static str {
    if !d.pushed_by.is_empty() {
        // This replica does not call it: its own view says nothing.
        return "elsewhere";
    }
    match (d.reachable, d.last_contact, d.last_error.is_empty()) {
        (true, _, _) => "yes",
        (false, None, true) => "untried",
        (false, _, _) => "no",
    }
}

/// Prints depots for people.
pub(super) fn print_depots(depots: &[DepotView]) {
    let rows: Vec<Vec<String>> = depots
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.endpoint.clone(),
                reachability(d).to_owned(),
                match (d.capability.as_str(), d.batches) {
                    ("new", false) => "new (unary)".to_owned(),
                    (c, _) => c.to_owned(),
                },
                d.queued.to_string(),
                d.delivered.to_string(),
                d.blocked.to_string(),
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
            "BLOCKED",
            "LAST CONTACT",
            "LAST ERROR",
        ],
        &rows,
    );
    for d in depots.iter().filter(|d| !d.pushed_by.is_empty()) {
        println!(
            "{} is pushed to by the replica {}: ask it for the depot's connection",
            d.id, d.pushed_by
        );
    }
}

/// One push owed to a depot, or one config delivered and not yet read.
#[derive(Debug, Serialize)]
pub(super) struct PendingView {
    client_id: String,
    #[serde(flatten)]
    delivery: DeliveryView,
}

impl From<proto::PendingPush> for PendingView {
    fn from(p: proto::PendingPush) -> Self {
        PendingView {
            client_id: p.client_id,
            delivery: p.delivery.unwrap_or_default().into(),
        }
    }
}

/// Prints pending pushes for people.
pub(super) fn print_pending(pending: &[PendingView], blocked: bool) {
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
    println!(
        "{} {}",
        pending.len(),
        if blocked { "blocked" } else { "pending" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn since_is_the_newest_of_the_times() {
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        // Read at 100, queued again at 300.
        let view = DeliveryView::from(proto::Delivery {
            depot_id: "d1.example.org".into(),
            state: proto::DeliveryState::Queued as i32,
            read_at: at(100).map(crate::wire::timestamp),
            delivered_at: at(50).map(crate::wire::timestamp),
            updated_at: at(300).map(crate::wire::timestamp),
            ..Default::default()
        });
        assert_eq!(delivery_row(&view)[5], cell_time(at(300)));
    }
}
