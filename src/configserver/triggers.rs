//! What a change owes the depots. After any write, `reconcile` compares what
//! each affected client should have — a config for its netboot action on its
//! depot, or nothing — with the push rows, and bumps the revision of every
//! row that must go out again: set on the client's depot, remove on any
//! other depot that may hold one. It runs inside the write's transaction, so
//! the outbox never disagrees with the inventory.

use std::collections::{HashMap, HashSet};

use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use super::store::{Result, id_list, now_ms};
use crate::domain::opsi::DEPOT_ID;

/// A push owed: the dispatcher of `depot_id` should (re)send `client_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owed {
    /// The depot.
    pub depot_id: String,
    /// The client.
    pub client_id: String,
}

/// SQL for a client's effective depot id; `{client}` is the client column.
fn effective_depot_sql(client: &str) -> String {
    format!(
        "json_extract(coalesce(
            (SELECT s.\"values\" FROM config_states s WHERE s.object_id = {client} AND s.config_id = '{DEPOT_ID}'),
            (SELECT default_values FROM configs WHERE id = '{DEPOT_ID}')), '$[0]')"
    )
}

/// Takes `n` fresh revisions; returns the first.
pub async fn allocate_revisions(tx: &mut Transaction<'static, Sqlite>, n: u64) -> Result<u64> {
    let last: i64 = sqlx::query_scalar(
        "UPDATE meta SET value = value + ? WHERE key = 'revision' RETURNING value",
    )
    .bind(n as i64)
    .fetch_one(&mut **tx)
    .await?;
    Ok(last as u64 + 1 - n)
}

enum Change {
    Set { product: String },
    Remove,
}

/// Brings the push rows of `clients` in line with the inventory; returns
/// the pushes now owed.
pub async fn reconcile(
    tx: &mut Transaction<'static, Sqlite>,
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
    let list = id_list(&clients);
    let depots: HashSet<String> = sqlx::query_scalar("SELECT id FROM depots")
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    let desired_rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT j.value AS client_id,
           EXISTS (SELECT 1 FROM clients c WHERE c.id = j.value) AS client_exists,
           (SELECT p.product_id FROM product_on_clients p
             WHERE p.client_id = j.value AND p.action_request <> 'none'
             ORDER BY p.modified DESC, p.product_id LIMIT 1) AS product_id,
           {} AS depot_id
         FROM json_each(?) j",
        effective_depot_sql("j.value")
    )))
    .bind(&list)
    .fetch_all(&mut **tx)
    .await?;
    let mut desired: HashMap<String, Option<(String, String)>> = HashMap::new();
    for r in desired_rows {
        let client: String = r.get("client_id");
        let exists: bool = r.get("client_exists");
        let product: Option<String> = r.get("product_id");
        let depot: Option<String> = r.get("depot_id");
        let want = match (exists, product, depot) {
            (true, Some(product), Some(depot)) if depots.contains(&depot) => Some((depot, product)),
            _ => None,
        };
        desired.insert(client, want);
    }

    let existing = sqlx::query(
        "SELECT client_id, depot_id, op, revision, read_revision FROM pushes
         WHERE client_id IN (SELECT value FROM json_each(?))",
    )
    .bind(&list)
    .fetch_all(&mut **tx)
    .await?;
    let mut changes: Vec<(String, String, Change)> = Vec::new();
    for r in existing {
        let client: String = r.get("client_id");
        let depot: String = r.get("depot_id");
        let wanted_here = desired
            .get(&client)
            .and_then(|d| d.as_ref())
            .is_some_and(|(d, _)| d == &depot);
        if wanted_here {
            continue;
        }
        let op: String = r.get("op");
        let revision: i64 = r.get("revision");
        let read_revision: i64 = r.get("read_revision");
        // Only a set the client has not read may still lie on the depot.
        if op == "set" && read_revision < revision {
            changes.push((client, depot, Change::Remove));
        }
    }
    for (client, want) in &desired {
        if let Some((depot, product)) = want {
            changes.push((
                client.clone(),
                depot.clone(),
                Change::Set {
                    product: product.clone(),
                },
            ));
        }
    }
    if changes.is_empty() {
        return Ok(Vec::new());
    }

    let base = allocate_revisions(tx, changes.len() as u64).await?;
    // One statement for all rows: [client, depot, op, product, revision].
    let rows: Vec<(&str, &str, &str, &str, u64)> = changes
        .iter()
        .enumerate()
        .map(|(i, (client, depot, change))| match change {
            Change::Set { product } => (
                client.as_str(),
                depot.as_str(),
                "set",
                product.as_str(),
                base + i as u64,
            ),
            Change::Remove => (
                client.as_str(),
                depot.as_str(),
                "remove",
                "",
                base + i as u64,
            ),
        })
        .collect();
    sqlx::query(
        "INSERT INTO pushes (client_id, depot_id, op, product_id, revision, updated_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, ?2 FROM json_each(?1) WHERE true
         ON CONFLICT (client_id, depot_id) DO UPDATE SET op = excluded.op,
           product_id = CASE WHEN excluded.op = 'set' THEN excluded.product_id ELSE pushes.product_id END,
           revision = excluded.revision, attempts = 0, last_error = '', next_attempt_at = NULL,
           updated_at = excluded.updated_at",
    )
    .bind(serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into()))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(changes
        .into_iter()
        .map(|(client_id, depot_id, _)| Owed {
            depot_id,
            client_id,
        })
        .collect())
}

/// Clients with a netboot action whose depot is one of `depot_ids`.
pub async fn clients_naming_depots(
    tx: &mut Transaction<'static, Sqlite>,
    depot_ids: &[&str],
) -> Result<Vec<String>> {
    if depot_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT DISTINCT p.client_id FROM product_on_clients p
         WHERE p.action_request <> 'none' AND {} IN (SELECT value FROM json_each(?))",
        effective_depot_sql("p.client_id")
    )))
    .bind(id_list(depot_ids))
    .fetch_all(&mut **tx)
    .await?)
}

/// Clients whose config for one of `product_ids` a depot holds or is to hold.
pub async fn clients_holding(
    tx: &mut Transaction<'static, Sqlite>,
    product_ids: &[String],
) -> Result<Vec<String>> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE op = 'set' AND read_revision < revision
           AND product_id IN (SELECT value FROM json_each(?))",
    )
    .bind(id_list(product_ids))
    .fetch_all(&mut **tx)
    .await?)
}

/// Clients whose config for a product a depot holds or is to hold, for
/// each `(depot, product)` pair.
pub async fn clients_holding_at(
    tx: &mut Transaction<'static, Sqlite>,
    pairs: &[(String, String)],
) -> Result<Vec<String>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE op = 'set' AND read_revision < revision
           AND (depot_id, product_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
    )
    .bind(serde_json::to_string(pairs).unwrap_or_else(|_| "[]".into()))
    .fetch_all(&mut **tx)
    .await?)
}

/// Clients with a netboot action that use the default of `config_id`.
pub async fn clients_using_default(
    tx: &mut Transaction<'static, Sqlite>,
    config_id: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT p.client_id FROM product_on_clients p
         WHERE p.action_request <> 'none'
           AND NOT EXISTS (SELECT 1 FROM config_states s WHERE s.object_id = p.client_id AND s.config_id = ?)",
    )
    .bind(config_id)
    .fetch_all(&mut **tx)
    .await?)
}
