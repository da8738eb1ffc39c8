//! Admin writes of netboot action requests (product-on-clients).
//!
//! A client may have several netboot actions at once: opsi keeps them
//! (opsiconfd 4.3 `productOnClient_*` write only the row they are given,
//! `backend/rpc/obj_product_on_client.py` @ 4.3.24.1). A PXE config is for one
//! product at a time: the most recently set action (the rule is
//! `rules::NEWEST_ACTION_FIRST`, the order is this module's sequence).
//! After its read the next one is pushed, as opsipxeconfd's update after a
//! read does (`pxe_config_writer_callback` @ 4.3.3.4 l.302–346).

use std::collections::HashSet;

use super::checks::{Exists, require_each};
use super::db::{Store, Tx, WriteTx, on};
use super::error::Result;
use super::records::{ActionRecord, WriteOutcome};
use super::sql::json_rows;
use super::triggers::finish;
use crate::domain::{Fqdn, ProductId};

/// The rows a list of actions writes: one per (client, product) with its
/// last action in the list, ordered by where that last action stands, so
/// that the later of two actions gets the higher sequence number.
fn resolve(actions: &[ActionRecord]) -> Vec<[&str; 3]> {
    let mut seen = HashSet::new();
    let mut rows: Vec<[&str; 3]> = actions
        .iter()
        .rev()
        .filter(|a| seen.insert((a.client_id.as_str(), a.product_id.as_str())))
        .map(|a| {
            [
                a.client_id.as_str(),
                a.product_id.as_str(),
                a.action.as_str(),
            ]
        })
        .collect();
    rows.reverse();
    rows
}

/// Takes `n` numbers of the action sequence; returns the first.
async fn allocate_sequence(conn: &mut Tx, n: u64) -> Result<u64> {
    let last: i64 = on!(conn.conn(), |c| sqlx::query_scalar(
        "UPDATE meta SET value = value + $1 WHERE key = 'action_sequence' RETURNING value",
    )
    .bind(n as i64)
    .fetch_one(c)
    .await?);
    Ok(last as u64 + 1 - n)
}

/// Writes action requests in `tx`, each newer than every earlier one (in
/// list order); the client's other actions stay. Returns the rows written
/// and the clients touched. Unknown clients or products fail the whole call.
pub(super) async fn write_actions(
    tx: &mut WriteTx,
    actions: &[ActionRecord],
) -> Result<(usize, Vec<String>)> {
    if actions.is_empty() {
        return Ok((0, Vec::new()));
    }
    let clients = actions.iter().map(|a| a.client_id.as_str()).collect();
    let products = actions.iter().map(|a| a.product_id.as_str()).collect();
    require_each(tx, [(Exists::Client, clients), (Exists::Product, products)]).await?;
    let rows = resolve(actions);
    let base = allocate_sequence(tx, rows.len() as u64).await?;
    on!(tx.conn(), |c| {
        sqlx::query(
        "INSERT INTO product_on_clients (client_id, product_id, action_request, action_progress, modified)
         SELECT value ->> 0, value ->> 1, value ->> 2, '', $2 + key FROM json_each($1) WHERE true
         ON CONFLICT (client_id, product_id) DO UPDATE SET action_request = excluded.action_request,
           action_progress = '', modified = excluded.modified",
    )
    .bind(json_rows(rows.iter().copied()))
    .bind(base as i64)
    .execute(c)
    .await?.rows_affected()
    });
    let touched = rows.iter().map(|r| r[0].to_owned()).collect();
    Ok((rows.len(), touched))
}

impl Store {
    /// Sets netboot action requests. A client's other netboot actions stay
    /// (as in opsi); its PXE config is for the most recently set one.
    /// Unknown clients or products fail the whole call.
    pub async fn set_action_requests(&self, actions: &[ActionRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, touched) = write_actions(&mut tx, actions).await?;
        finish(tx, affected, &touched).await
    }

    /// Deletes product-on-clients; configs for them are removed (or the
    /// client's next netboot action is pushed).
    pub async fn delete_product_on_clients(
        &self,
        keys: &[(Fqdn, ProductId)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(keys.iter().map(|(c, p)| [c.as_str(), p.as_str()]));
        let deleted: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "DELETE FROM product_on_clients WHERE (client_id, product_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each($1))
             RETURNING client_id",
        )
        .bind(rows)
        .fetch_all(c)
        .await?);
        finish(tx, deleted.len(), &deleted).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActionRequest;

    fn action(client: &str, product: &str, action: ActionRequest) -> ActionRecord {
        ActionRecord {
            client_id: Fqdn::parse(client, "c").unwrap(),
            product_id: ProductId::parse(product, "p").unwrap(),
            action,
        }
    }

    #[test]
    fn one_row_per_client_and_product_ordered_by_its_last_action() {
        let actions = [
            action("a.example.org", "win", ActionRequest::Setup),
            action("a.example.org", "linux", ActionRequest::Setup),
            action("b.example.org", "win", ActionRequest::None),
            action("a.example.org", "win", ActionRequest::Once),
        ];
        assert_eq!(
            resolve(&actions),
            vec![
                ["a.example.org", "linux", "setup"],
                ["b.example.org", "win", "none"],
                ["a.example.org", "win", "once"],
            ]
        );
    }
}
