//! What a change owes the depots. After any write, [`reconcile`] compares
//! what each affected client should have — a config for its netboot action
//! on its depot, or nothing — with the push rows, and bumps the revision of
//! every row that must go out again: set on the client's depot, remove on
//! any other depot that may hold one. It runs inside the write's
//! transaction, so the outbox never disagrees with the inventory. The
//! `clients_*` look-ups name the clients a change touches.

use std::collections::{HashMap, HashSet};

use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::db::WriteTx;
use super::error::Result;
use super::records::{Owed, PushOp, WriteOutcome};
use super::sql::{json_list, json_rows, now_ms};
use crate::domain::opsi::{DEPOT_ID, PXE_CONFIGS};

/// SQL for a client's effective depot id; `{client}` is the client column.
fn effective_depot_sql(client: &str) -> String {
    format!(
        "json_extract(coalesce(
            (SELECT s.\"values\" FROM config_states s WHERE s.object_id = {client} AND s.config_id = '{DEPOT_ID}'),
            (SELECT default_values FROM configs WHERE id = '{DEPOT_ID}')), '$[0]')"
    )
}

/// The tail of every admin write: the pushes the change owes, in the same
/// transaction, then the commit.
pub(super) async fn finish(
    mut tx: WriteTx,
    affected: usize,
    clients: &[String],
) -> Result<WriteOutcome> {
    let owed = reconcile(&mut tx, clients).await?;
    tx.commit().await?;
    Ok(WriteOutcome {
        affected: affected as u64,
        owed,
    })
}

/// Takes `n` fresh revisions; returns the first (the hybrid clock in
/// `super::sequence`).
pub(super) async fn allocate_revisions(conn: &mut SqliteConnection, n: u64) -> Result<u64> {
    super::sequence::allocate(conn, n).await
}

/// Where a client's config should be: `product`'s on `depot`.
struct Want {
    depot: String,
    product: String,
}

/// One push row to (re)write.
struct Change {
    client: String,
    depot: String,
    op: PushOp,
    /// Empty for a remove (the row keeps the product it had).
    product: String,
}

/// Brings the push rows of `clients` in line with the inventory; returns
/// the pushes now owed.
pub(super) async fn reconcile(
    conn: &mut SqliteConnection,
    clients: &[String],
) -> Result<Vec<Owed>> {
    let mut seen = HashSet::new();
    let clients: Vec<&str> = clients
        .iter()
        .map(String::as_str)
        .filter(|c| seen.insert(*c))
        .collect();
    if clients.is_empty() {
        return Ok(Vec::new());
    }
    let list = json_list(&clients);
    let desired = desired(conn, &list).await?;
    let mut changes = removals(conn, &list, &desired).await?;
    changes.extend(desired.into_iter().filter_map(|(client, want)| {
        want.map(|Want { depot, product }| Change {
            client,
            depot,
            op: PushOp::Set,
            product,
        })
    }));
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    write_changes(conn, &changes).await?;
    Ok(changes
        .into_iter()
        .map(|c| Owed {
            depot_id: c.depot,
            client_id: c.client,
        })
        .collect())
}

/// Every registered depot.
async fn depot_ids(conn: &mut SqliteConnection) -> Result<HashSet<String>> {
    Ok(sqlx::query_scalar("SELECT id FROM depots")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect())
}

/// What each client of `list` should have: a config for its newest netboot
/// action on its (registered) depot, or nothing.
async fn desired(conn: &mut SqliteConnection, list: &str) -> Result<HashMap<String, Option<Want>>> {
    let depots = depot_ids(conn).await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT j.value AS client_id,
           EXISTS (SELECT 1 FROM clients c WHERE c.id = j.value) AS client_exists,
           (SELECT p.product_id FROM product_on_clients p
             WHERE p.client_id = j.value AND p.action_request <> 'none'
             ORDER BY p.modified DESC, p.product_id LIMIT 1) AS product_id,
           {} AS depot_id
         FROM json_each(?) j",
        effective_depot_sql("j.value")
    )))
    .bind(list)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let exists: bool = r.get("client_exists");
            let product: Option<String> = r.get("product_id");
            let depot: Option<String> = r.get("depot_id");
            let want = match (exists, product, depot) {
                (true, Some(product), Some(depot)) if depots.contains(&depot) => {
                    Some(Want { depot, product })
                }
                _ => None,
            };
            (r.get("client_id"), want)
        })
        .collect())
}

/// Removes owed to depots that may hold a config of a client of `list`
/// (a set it has not read) although the client's config belongs elsewhere
/// or nowhere now.
async fn removals(
    conn: &mut SqliteConnection,
    list: &str,
    desired: &HashMap<String, Option<Want>>,
) -> Result<Vec<Change>> {
    let held: Vec<(String, String)> = sqlx::query_as(
        "SELECT client_id, depot_id FROM pushes
         WHERE client_id IN (SELECT value FROM json_each(?)) AND op = 'set' AND read_revision < revision",
    )
    .bind(list)
    .fetch_all(&mut *conn)
    .await?;
    Ok(held
        .into_iter()
        .filter(|(client, depot)| {
            desired
                .get(client)
                .and_then(Option::as_ref)
                .is_none_or(|want| &want.depot != depot)
        })
        .map(|(client, depot)| Change {
            client,
            depot,
            op: PushOp::Remove,
            product: String::new(),
        })
        .collect())
}

/// Writes `changes` with fresh revisions in one statement, owed again.
async fn write_changes(conn: &mut SqliteConnection, changes: &[Change]) -> Result<()> {
    let base = allocate_revisions(conn, changes.len() as u64).await?;
    let rows = json_rows(changes.iter().map(|c| {
        [
            c.client.as_str(),
            c.depot.as_str(),
            c.op.as_str(),
            c.product.as_str(),
        ]
    }));
    // The n-th row gets revision base + n (`key` is its index).
    sqlx::query(
        "INSERT INTO pushes (client_id, depot_id, op, product_id, revision, updated_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, ?2 + key, ?3 FROM json_each(?1) WHERE true
         ON CONFLICT (client_id, depot_id) DO UPDATE SET op = excluded.op,
           product_id = CASE WHEN excluded.op = 'set' THEN excluded.product_id ELSE pushes.product_id END,
           revision = excluded.revision, attempts = 0, last_error = '', next_attempt_at = NULL,
           updated_at = excluded.updated_at",
    )
    .bind(rows)
    .bind(base as i64)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Clients with a netboot action whose depot is one of `depot_ids`.
pub(super) async fn clients_naming_depots(
    conn: &mut SqliteConnection,
    depot_ids: &[String],
) -> Result<Vec<String>> {
    if depot_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT DISTINCT p.client_id FROM product_on_clients p
         WHERE p.action_request <> 'none' AND {} IN (SELECT value FROM json_each(?))",
        effective_depot_sql("p.client_id")
    )))
    .bind(json_list(depot_ids))
    .fetch_all(&mut *conn)
    .await?)
}

/// Clients whose config for one of `product_ids` a depot holds or is to hold.
pub(super) async fn clients_holding(
    conn: &mut SqliteConnection,
    product_ids: &[String],
) -> Result<Vec<String>> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE op = 'set' AND read_revision < revision
           AND product_id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_list(product_ids))
    .fetch_all(&mut *conn)
    .await?)
}

/// Clients whose config for a product a depot holds or is to hold, for
/// each `(depot, product)` pair.
pub(super) async fn clients_holding_at(
    conn: &mut SqliteConnection,
    pairs: &[(String, String)],
) -> Result<Vec<String>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE op = 'set' AND read_revision < revision
           AND (depot_id, product_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
    )
    .bind(json_rows(
        pairs.iter().map(|(d, p)| [d.as_str(), p.as_str()]),
    ))
    .fetch_all(&mut *conn)
    .await?)
}

/// Clients with a netboot action that use the default of a PXE config among
/// `config_ids` (other configs do not touch PXE configs).
pub(super) async fn clients_using_defaults(
    conn: &mut SqliteConnection,
    config_ids: &[String],
) -> Result<Vec<String>> {
    let mut clients = Vec::new();
    for id in config_ids
        .iter()
        .filter(|id| PXE_CONFIGS.contains(&id.as_str()))
    {
        clients.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT DISTINCT p.client_id FROM product_on_clients p
                 WHERE p.action_request <> 'none'
                   AND NOT EXISTS (SELECT 1 FROM config_states s WHERE s.object_id = p.client_id AND s.config_id = ?)",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    Ok(clients)
}

/// The clients among changed `(object, config)` pairs whose config is one a
/// PXE config depends on.
pub(super) fn clients_with_pxe_configs(changed: &[(String, String)]) -> Vec<String> {
    changed
        .iter()
        .filter(|(_, config)| PXE_CONFIGS.contains(&config.as_str()))
        .map(|(object, _)| object.clone())
        .collect()
}

/// The clients whose config a property change touches: a client's own,
/// or, for a depot's defaults, every client holding a config there.
pub(super) async fn clients_of_properties(
    conn: &mut SqliteConnection,
    changed: &[(String, String)],
) -> Result<Vec<String>> {
    let depots = depot_ids(conn).await?;
    let (at_depots, of_clients): (Vec<_>, Vec<_>) = changed
        .iter()
        .cloned()
        .partition(|(object, _)| depots.contains(object));
    let mut clients = clients_holding_at(conn, &at_depots).await?;
    clients.extend(of_clients.into_iter().map(|(client, _)| client));
    Ok(clients)
}
