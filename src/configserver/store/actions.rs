//! Admin writes of netboot action requests (product-on-clients).
//!
//! A client may have several netboot actions at once: opsi keeps them
//! (opsiconfd 4.3 `productOnClient_*` write only the row they are given,
//! `backend/rpc/obj_product_on_client.py` @ 4.3.24.1). A PXE config is for one
//! product at a time: the most recently set action (the rule is
//! `rules::NEWEST_ACTION_FIRST`, the order is this module's sequence).
//! After its read the next one is pushed, as opsipxeconfd's update after a
//! read does (`pxe_config_writer_callback` @ 4.3.3.4 l.302–346).

use std::collections::{BTreeSet, HashSet};

use super::checks::{Exists, missing, require};
use super::db::{SMALL_WRITE, Store, WriteTx, on};
use super::error::Result;
use super::records::{ActionRecord, WriteOutcome};
use super::script::{Ran, Script, Value};
use super::sequence;
use super::sql::{json_rows, traceparent};
use super::triggers::{distinct, finish, finish_native, finish_read, reads, state};
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

/// A list of actions to write: what must exist, and the rows.
struct ActionWrite<'a> {
    checks: [(Exists, BTreeSet<&'a str>); 2],
    rows: Vec<[&'a str; 3]>,
    /// Only rows whose action changes are written (an import): the same
    /// action again keeps its place and its `modified` (a newer one would
    /// make a read of the config already out count for nothing).
    changes_only: bool,
}

impl<'a> ActionWrite<'a> {
    fn new(actions: &'a [ActionRecord], changes_only: bool) -> Self {
        let clients = actions.iter().map(|a| a.client_id.as_str()).collect();
        let products = actions.iter().map(|a| a.product_id.as_str()).collect();
        Self {
            checks: [(Exists::Client, clients), (Exists::Product, products)],
            rows: resolve(actions),
            changes_only,
        }
    }

    /// `script` and then the write: the existence check (a guard), the
    /// revisions taken, and the rows, each newer than every earlier one (in
    /// list order; the n-th row takes the n-th revision taken, `key` being
    /// its index); the client's other actions stay. An action's `modified`
    /// is a revision of the store's one sequence: every config pushed for it
    /// has a later one, so a read of an earlier revision booted an earlier
    /// action (`delivery::verdict`).
    fn script(&self, script: Script) -> Script {
        let n = i64::try_from(self.rows.len()).unwrap_or(i64::MAX);
        let only_changes = match self.changes_only {
            true => "WHERE product_on_clients.action_request <> excluded.action_request",
            false => "",
        };
        sequence::take(require(script, &self.checks), n).then(
            format!(
                "WITH taken AS (SELECT value - $2 + 1 AS first FROM meta WHERE key = 'revision')
         INSERT INTO product_on_clients (client_id, product_id, action_request, action_progress, modified)
         SELECT value ->> 0, value ->> 1, value ->> 2, '', first + key FROM json_each($1) CROSS JOIN taken WHERE true
         ON CONFLICT (client_id, product_id) DO UPDATE SET action_request = excluded.action_request,
           action_progress = '', modified = excluded.modified {only_changes}
         RETURNING client_id"
            ),
            vec![Value::Text(json_rows(self.rows.iter().copied())), Value::Int(n)],
        )
    }

    /// The rows written and the clients touched, from the script's results
    /// (NOT_FOUND naming the first unknown client or product).
    fn written(&self, ran: &mut Ran) -> Result<(usize, Vec<String>)> {
        missing(&self.checks, ran.next()?)?;
        ran.next()?;
        let written: Vec<(String,)> = ran.next()?.decode()?;
        let touched: Vec<String> = written.into_iter().map(|(c,)| c).collect();
        Ok((touched.len(), touched))
    }
}

/// Writes the action requests in `tx` that change an action (an import:
/// the same action again keeps its place; [`ActionWrite::script`]). Returns the
/// rows written and the clients touched. Unknown clients or products fail
/// the whole call.
pub(super) async fn write_actions(
    tx: &mut WriteTx,
    actions: &[ActionRecord],
) -> Result<(usize, Vec<String>)> {
    if actions.is_empty() {
        return Ok((0, Vec::new()));
    }
    let write = ActionWrite::new(actions, true);
    let mut ran = write.script(Script::default()).run(tx).await?;
    write.written(&mut ran)
}

impl Store {
    /// Sets netboot action requests. A client's other netboot actions stay
    /// (as in opsi); its PXE config is for the most recently set one.
    /// Unknown clients or products fail the whole call.
    pub async fn set_action_requests(&self, actions: &[ActionRecord]) -> Result<WriteOutcome> {
        if self.native_writer().is_some() && !actions.is_empty() {
            // The whole transaction in one hand-off to the store's own
            // SQLite writer: the hot write of every netboot action.
            let (actions, traceparent) = (actions.to_vec(), traceparent());
            return self
                .write_native(actions.len() <= SMALL_WRITE, move |tx| {
                    let write = ActionWrite::new(&actions, false);
                    let clients = distinct(write.rows.iter().map(|r| r[0]));
                    let mut ran =
                        reads(write.script(Script::default()), &clients).run_native(tx)?;
                    let (affected, _) = write.written(&mut ran)?;
                    finish_native(tx, affected, state(&mut ran)?, traceparent)
                })
                .await;
        }
        let mut tx = self.begin().await?;
        if actions.is_empty() {
            return finish(tx, 0, &[]).await;
        }
        // The write and the reconciliation's reads in one script: the
        // clients it touches are known before it runs.
        let write = ActionWrite::new(actions, false);
        let clients = distinct(write.rows.iter().map(|r| r[0]));
        let mut ran = reads(write.script(Script::default()), &clients)
            .run(&mut tx)
            .await?;
        let (affected, _) = write.written(&mut ran)?;
        finish_read(tx, affected, state(&mut ran)?).await
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
