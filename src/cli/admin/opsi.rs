//! `pxeconf import --format opsi`: an opsi dump read and converted
//! (`crate::cli::opsi`), sent through `Admin.ImportInventory` in parts of a
//! client stream and written in one transaction; then per kind of object
//! what the dump had, what was imported, skipped (and why) and changed.

use std::collections::BTreeMap;

use serde::Serialize;
use tonic::Status;

use std::path::PathBuf;

use super::connect::{Admin, Connection, grpc_error};
use super::output::table;
use crate::cli::error::CliError;
use crate::cli::opsi::{Converted, DepotEndpoints, convert, read_objects};
use crate::proto;

/// Items per part of the stream (a part is one message; gRPC caps its size).
const PART: usize = 1000;

/// One kind of object, as printed.
#[derive(Debug, Serialize)]
struct KindView {
    kind: &'static str,
    in_dump: u64,
    imported: u64,
    skipped: u64,
    /// Rows the configserver inserted or changed for this kind.
    changed: Option<u64>,
    why_skipped: BTreeMap<String, u64>,
}

/// One section as the configserver counted it.
#[derive(Debug, Serialize)]
struct SectionView {
    section: String,
    items: u64,
    changed: u64,
}

/// What an import did (or would do).
#[derive(Debug, Serialize)]
struct ImportView {
    dry_run: bool,
    files: Vec<String>,
    /// Per kind of opsi object; empty for an inventory file.
    kinds: Vec<KindView>,
    sections: Vec<SectionView>,
    changed: u64,
    pushes_queued: u64,
    /// Clients whose netboot action no depot can be sent a config for.
    waiting: u64,
}

/// What an import reads and where it goes.
pub(super) struct Target<'a> {
    /// The files given.
    pub files: &'a [PathBuf],
    /// Report only, change nothing.
    pub dry_run: bool,
    /// The configserver, and how to print.
    pub connection: &'a Connection,
}

/// `pxeconf import --format opsi FILE…`.
pub(super) async fn import_opsi(
    target: &Target<'_>,
    endpoints: &DepotEndpoints,
) -> Result<(), CliError> {
    let objects = read_objects(target.files)?;
    let mut converted = convert(objects, endpoints)?;
    let keyless = keyless_note(&converted.inventory.clients);
    let inventory = std::mem::take(&mut converted.inventory);
    let mut admin = target.connection.connect().await?;
    send_inventory(&mut admin, target, inventory, Some(&converted)).await?;
    // After the answer (stdout may be JSON): an import that succeeded can
    // still leave clients that cannot boot their boot image's way home.
    if let Some(note) = keyless {
        eprintln!("{note}");
    }
    Ok(())
}

/// A note on clients the dump gives no `opsiHostKey` (a dump taken by an
/// account whose ACL hides it): they are imported, and a client's key
/// already stored is kept, but a new one's configs carry no `pckey`, so its
/// boot image cannot authenticate to the service.
fn keyless_note(clients: &[proto::Host]) -> Option<String> {
    let ids: Vec<&str> = (clients.iter())
        .filter(|c| c.opsi_host_key.trim().is_empty())
        .map(|c| c.id.as_str())
        .collect();
    const SHOWN: usize = 5;
    let (first, more) = (ids.len().min(SHOWN), ids.len().saturating_sub(SHOWN));
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    (!ids.is_empty()).then(|| {
        format!(
            "note: {} client(s) have no opsiHostKey in the dump ({}{more}): a key already stored is kept; without one their configs carry no pckey and the boot image cannot authenticate",
            ids.len(),
            ids[..first].join(", ")
        )
    })
}

/// Sends `inventory` as one import and prints what it did; `converted`
/// names the opsi objects behind the items.
pub(super) async fn send_inventory(
    admin: &mut Admin,
    target: &Target<'_>,
    inventory: proto::ImportInventoryRequest,
    converted: Option<&Converted>,
) -> Result<(), CliError> {
    let parts = parts(inventory, target.dry_run);
    let answer = admin
        .import_inventory(tokio_stream::iter(parts))
        .await
        .map_err(|status| explain(&status, converted))?
        .into_inner();
    let view = view(target, answer, converted);
    target.connection.print(&view, print)
}

/// The inventory in parts of at most [`PART`] items, each of one section,
/// in the order the configserver writes them; every part says `dry_run`.
fn parts(all: proto::ImportInventoryRequest, dry_run: bool) -> Vec<proto::ImportInventoryRequest> {
    let mut parts = Vec::new();
    macro_rules! split {
        ($($section:ident),*) => {$(
            let mut items = all.$section.into_iter().peekable();
            while items.peek().is_some() {
                parts.push(proto::ImportInventoryRequest {
                    $section: items.by_ref().take(PART).collect(),
                    dry_run,
                    ..Default::default()
                });
            }
        )*};
    }
    split!(
        configs,
        depots,
        products,
        product_on_depots,
        clients,
        config_states,
        product_property_states,
        action_requests
    );
    if parts.is_empty() {
        parts.push(proto::ImportInventoryRequest {
            dry_run,
            ..Default::default()
        });
    }
    parts
}

/// A failed import as one line; an item named `section[i]` gets the opsi
/// object it came from.
fn explain(status: &Status, converted: Option<&Converted>) -> CliError {
    let line = grpc_error(status);
    let object = || {
        let (section, rest) = status.message().split_once('[')?;
        let index: usize = rest.split_once(']')?.0.parse().ok()?;
        converted?.ident(section, index)
    };
    let outcome = match super::connect::maybe_applied(status) {
        false => "nothing was imported",
        true => "the import may still have been applied (`pxeconf status` shows)",
    };
    let said = match object() {
        Some(ident) => format!(" (opsi: {ident}); {outcome}"),
        None => format!("; {outcome}"),
    };
    // On the first line: the others, if any, name one bad field each.
    match line.split_once('\n') {
        Some((first, fields)) => format!("{first}{said}\n{fields}").into(),
        None => format!("{line}{said}").into(),
    }
}

fn view(
    target: &Target<'_>,
    answer: proto::ImportInventoryResponse,
    converted: Option<&Converted>,
) -> ImportView {
    let changed: BTreeMap<&str, u64> = answer
        .sections
        .iter()
        .map(|s| (s.section.as_str(), s.affected))
        .collect();
    // Two kinds may fill one section (property states, and defaults made
    // states): its count of changed rows is shown once, on the first.
    let mut counted = std::collections::HashSet::new();
    let kinds = converted
        .map(|c| {
            c.summary
                .iter()
                .map(|k| KindView {
                    kind: k.kind,
                    in_dump: k.in_dump,
                    imported: k.imported,
                    skipped: k.skipped,
                    changed: counted
                        .insert(k.section)
                        .then(|| changed.get(k.section).copied())
                        .flatten(),
                    why_skipped: k.why_skipped.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    ImportView {
        dry_run: answer.dry_run,
        files: target
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        kinds,
        sections: answer
            .sections
            .into_iter()
            .map(|s| SectionView {
                section: s.section,
                items: s.items,
                changed: s.affected,
            })
            .collect(),
        changed: answer.affected,
        pushes_queued: answer.pushes_queued,
        waiting: answer.waiting,
    }
}

/// Prints the per-kind table (or, for an inventory, per section) and a line.
fn print(v: &ImportView) {
    if v.kinds.is_empty() {
        // Per section; the pushes are counted for the whole (the answer
        // counts them so).
        let mut rows: Vec<Vec<String>> = v
            .sections
            .iter()
            .map(|s| {
                vec![
                    s.section.clone(),
                    s.items.to_string(),
                    s.changed.to_string(),
                    String::new(),
                ]
            })
            .collect();
        rows.push(vec![
            "total".to_owned(),
            v.sections.iter().map(|s| s.items).sum::<u64>().to_string(),
            v.changed.to_string(),
            v.pushes_queued.to_string(),
        ]);
        table(&["SECTION", "ITEMS", "CHANGED", "PUSHES QUEUED"], &rows);
    } else {
        let rows: Vec<Vec<String>> = v
            .kinds
            .iter()
            .filter(|k| k.in_dump > 0)
            .map(|k| {
                let why: Vec<String> = k
                    .why_skipped
                    .iter()
                    .map(|(why, n)| format!("{n} {why}"))
                    .collect();
                vec![
                    k.kind.to_owned(),
                    k.in_dump.to_string(),
                    k.imported.to_string(),
                    k.skipped.to_string(),
                    k.changed.map(|c| c.to_string()).unwrap_or_default(),
                    why.join("; "),
                ]
            })
            .collect();
        table(
            &[
                "KIND",
                "IN DUMP",
                "IMPORTED",
                "SKIPPED",
                "CHANGED",
                "WHY SKIPPED",
            ],
            &rows,
        );
    }
    if v.dry_run {
        println!(
            "dry run, nothing written: {} rows would change, {} pushes would be queued",
            v.changed, v.pushes_queued
        );
    } else {
        println!(
            "imported {} in one transaction: {} rows changed, {} pushes queued",
            v.files.join(", "),
            v.changed,
            v.pushes_queued
        );
    }
    if v.waiting > 0 {
        println!("{}", super::verbs::waiting_line(v.waiting, v.dry_run));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_hold_one_section_each_in_write_order() {
        let host = |i: usize| proto::Host {
            id: format!("c{i}.example.org"),
            ..Default::default()
        };
        let all = proto::ImportInventoryRequest {
            clients: (0..2500).map(host).collect(),
            depots: vec![proto::DepotInfo::default()],
            ..Default::default()
        };
        let split = parts(all, true);
        let sizes: Vec<(usize, usize)> = split
            .iter()
            .map(|p| (p.depots.len(), p.clients.len()))
            .collect();
        assert_eq!(sizes, vec![(1, 0), (0, 1000), (0, 1000), (0, 500)]);
        assert!(split.iter().all(|p| p.dry_run));
        assert_eq!(split[3].clients[499].id, "c2499.example.org");
        assert_eq!(
            parts(Default::default(), false).len(),
            1,
            "an empty import is one part"
        );
    }
}
