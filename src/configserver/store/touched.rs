//! Which clients a change touches: those whose pushes `triggers::reconcile`
//! must bring in line after a write of depots, products, product-on-depots,
//! configs, config states or property states.

use std::collections::HashSet;

use sqlx::AssertSqlSafe;

use super::db::{Tx, on};
use super::error::Result;
use super::rules::effective_depot_sql;
use super::sql::{json_list, json_rows};
use crate::domain::opsi::{DEPOT_ID, PXE_CONFIGS};

/// Every registered depot.
pub(super) async fn depot_ids(conn: &mut Tx) -> Result<HashSet<String>> {
    Ok(
        on!(conn.conn(), |c| sqlx::query_scalar("SELECT id FROM depots")
            .fetch_all(c)
            .await?)
        .into_iter()
        .collect(),
    )
}

/// Clients with a netboot action whose depot is one of `depot_ids`.
pub(super) async fn clients_naming_depots(
    conn: &mut Tx,
    depot_ids: &[String],
) -> Result<Vec<String>> {
    if depot_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(on!(conn.conn(), |c| sqlx::query_scalar(AssertSqlSafe(
        format!(
            "SELECT DISTINCT p.client_id FROM product_on_clients p
         WHERE p.action_request <> 'none' AND {} IN (SELECT value FROM json_each($1))",
            effective_depot_sql("p.client_id")
        )
    ))
    .bind(json_list(depot_ids))
    .fetch_all(c)
    .await?))
}

/// Clients whose config for one of `product_ids` a depot holds or is to hold.
pub(super) async fn clients_holding(conn: &mut Tx, product_ids: &[String]) -> Result<Vec<String>> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(on!(conn.conn(), |c| sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE op = 'set' AND read_revision < revision
           AND product_id IN (SELECT value FROM json_each($1))",
    )
    .bind(json_list(product_ids))
    .fetch_all(c)
    .await?))
}

/// Clients whose config for a product a depot holds or is to hold, for
/// each `(depot, product)` pair.
pub(super) async fn clients_holding_at(
    conn: &mut Tx,
    pairs: &[(String, String)],
) -> Result<Vec<String>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(on!(conn.conn(), |c| sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE op = 'set' AND read_revision < revision
           AND (depot_id, product_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))",
    )
    .bind(json_rows(
        pairs.iter().map(|(d, p)| [d.as_str(), p.as_str()]),
    ))
    .fetch_all(c)
    .await?))
}

/// Clients whose blocked config waits for one of `pairs` (depot, product):
/// a product-on-depot written re-arms them.
pub(super) async fn clients_blocked_at(
    conn: &mut Tx,
    pairs: &[(String, String)],
) -> Result<Vec<String>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(on!(conn.conn(), |c| sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE blocked <> ''
           AND (depot_id, product_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))",
    )
    .bind(json_rows(
        pairs.iter().map(|(d, p)| [d.as_str(), p.as_str()]),
    ))
    .fetch_all(c)
    .await?))
}

/// Clients whose blocked config waits for one of `product_ids` (a version
/// of it registered).
pub(super) async fn clients_blocked_on(
    conn: &mut Tx,
    product_ids: &[String],
) -> Result<Vec<String>> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(on!(conn.conn(), |c| sqlx::query_scalar(
        "SELECT client_id FROM pushes WHERE blocked <> ''
           AND product_id IN (SELECT value FROM json_each($1))",
    )
    .bind(json_list(product_ids))
    .fetch_all(c)
    .await?))
}

/// Clients with a netboot action that use the default of a PXE config among
/// `config_ids` (other configs do not touch PXE configs): no state of their
/// own and, but for the depot id, none on their depot either.
pub(super) async fn clients_using_defaults(
    conn: &mut Tx,
    config_ids: &[String],
) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT p.client_id FROM product_on_clients p
         WHERE p.action_request <> 'none'
           AND NOT EXISTS (SELECT 1 FROM config_states s WHERE s.object_id = p.client_id AND s.config_id = $1)
           AND ($1 = '{DEPOT_ID}' OR NOT EXISTS (SELECT 1 FROM config_states s
                WHERE s.object_id = {} AND s.config_id = $1))",
        effective_depot_sql("p.client_id")
    );
    let mut clients = Vec::new();
    for id in config_ids
        .iter()
        .filter(|id| PXE_CONFIGS.contains(&id.as_str()))
    {
        clients.extend(on!(conn.conn(), |c| sqlx::query_scalar::<_, String>(
            AssertSqlSafe(sql.clone())
        )
        .bind(id)
        .fetch_all(c)
        .await?));
    }
    Ok(clients)
}

/// The clients a change of the `(object, config)` states touches, for the
/// configs a PXE config depends on: a client's own; or, for a depot's state
/// (opsi 4.3's depot layer), every client of that depot with a netboot
/// action and no state of its own for the config.
pub(super) async fn clients_of_config_states(
    conn: &mut Tx,
    changed: &[(String, String)],
) -> Result<Vec<String>> {
    let depots = depot_ids(conn).await?;
    let sql = format!(
        "SELECT DISTINCT p.client_id FROM product_on_clients p
         WHERE p.action_request <> 'none' AND {} = $1
           AND NOT EXISTS (SELECT 1 FROM config_states s WHERE s.object_id = p.client_id AND s.config_id = $2)",
        effective_depot_sql("p.client_id")
    );
    let mut clients = Vec::new();
    let mut depot_configs = HashSet::new();
    for (object, config) in changed
        .iter()
        .filter(|(_, config)| PXE_CONFIGS.contains(&config.as_str()))
    {
        if !depots.contains(object) {
            clients.push(object.clone());
        } else if config != DEPOT_ID && depot_configs.insert((object, config)) {
            clients.extend(on!(conn.conn(), |c| sqlx::query_scalar::<_, String>(
                AssertSqlSafe(sql.clone())
            )
            .bind(object)
            .bind(config)
            .fetch_all(c)
            .await?));
        }
    }
    Ok(clients)
}

/// The clients whose config a property change touches: a client's own,
/// or, for a depot's defaults, every client holding a config there.
pub(super) async fn clients_of_properties(
    conn: &mut Tx,
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
