//! Admin writes of netboot action requests (product-on-clients).

use std::collections::HashMap;

use super::checks::{Exists, require_all};
use super::db::Store;
use super::error::Result;
use super::records::{ActionRecord, WriteOutcome};
use super::sql::{json_list, json_rows};
use super::triggers::{allocate_revisions, finish};
use crate::domain::{ActionRequest, Fqdn, ProductId};

/// The rows a list of actions writes, one per (client, product), and the
/// clients that get an active action. A client boots one netboot product:
/// within the list the last active action wins, and the client's other
/// products get `none`.
fn resolve(actions: &[ActionRecord]) -> (Vec<[&str; 3]>, Vec<&str>) {
    let mut last_active: HashMap<&str, &str> = HashMap::new();
    for a in actions.iter().filter(|a| a.action != ActionRequest::None) {
        last_active.insert(a.client_id.as_str(), a.product_id.as_str());
    }
    let mut rows: Vec<[&str; 3]> = Vec::with_capacity(actions.len());
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for a in actions {
        let (c, p) = (a.client_id.as_str(), a.product_id.as_str());
        let action = match last_active.get(c) {
            Some(winner) if *winner != p => ActionRequest::None.as_str(),
            _ => a.action.as_str(),
        };
        match index.get(&(c, p)) {
            Some(&i) => rows[i][2] = action,
            None => {
                index.insert((c, p), rows.len());
                rows.push([c, p, action]);
            }
        }
    }
    (rows, last_active.into_keys().collect())
}

impl Store {
    /// Sets netboot action requests. A client boots one product: setting an
    /// action clears its other netboot action requests. Unknown clients or
    /// products fail the whole call.
    pub async fn set_action_requests(&self, actions: &[ActionRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let clients = actions.iter().map(|a| a.client_id.as_str());
        require_all(&mut tx, Exists::Client, clients).await?;
        let products = actions.iter().map(|a| a.product_id.as_str());
        require_all(&mut tx, Exists::Product, products).await?;
        let (rows, active) = resolve(actions);
        sqlx::query(
            "UPDATE product_on_clients SET action_request = 'none'
             WHERE action_request <> 'none' AND client_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_list(&active))
        .execute(&mut *tx)
        .await?;
        // Each row's `modified` is a fresh revision, so the newest action wins.
        let base = allocate_revisions(&mut tx, rows.len() as u64).await?;
        sqlx::query(
            "INSERT INTO product_on_clients (client_id, product_id, action_request, action_progress, modified)
             SELECT value ->> 0, value ->> 1, value ->> 2, '', ?2 + key FROM json_each(?1) WHERE true
             ON CONFLICT (client_id, product_id) DO UPDATE SET action_request = excluded.action_request,
               action_progress = '', modified = excluded.modified",
        )
        .bind(json_rows(rows.iter().copied()))
        .bind(base as i64)
        .execute(&mut *tx)
        .await?;
        let touched: Vec<String> = rows.iter().map(|r| r[0].to_owned()).collect();
        finish(tx, rows.len(), &touched).await
    }

    /// Deletes product-on-clients; configs for them are removed.
    pub async fn delete_product_on_clients(
        &self,
        keys: &[(Fqdn, ProductId)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(keys.iter().map(|(c, p)| [c.as_str(), p.as_str()]));
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM product_on_clients WHERE (client_id, product_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING client_id",
        )
        .bind(rows)
        .fetch_all(&mut *tx)
        .await?;
        finish(tx, deleted.len(), &deleted).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(client: &str, product: &str, action: ActionRequest) -> ActionRecord {
        ActionRecord {
            client_id: Fqdn::parse(client, "c").unwrap(),
            product_id: ProductId::parse(product, "p").unwrap(),
            action,
        }
    }

    #[test]
    fn the_last_active_action_of_a_client_wins() {
        let actions = [
            action("a.example.org", "win", ActionRequest::Setup),
            action("a.example.org", "linux", ActionRequest::Setup),
            action("b.example.org", "win", ActionRequest::None),
            action("a.example.org", "win", ActionRequest::None),
        ];
        let (rows, active) = resolve(&actions);
        assert_eq!(
            rows,
            vec![
                ["a.example.org", "win", "none"],
                ["a.example.org", "linux", "setup"],
                ["b.example.org", "win", "none"],
            ]
        );
        assert_eq!(active, vec!["a.example.org"]);
    }
}
