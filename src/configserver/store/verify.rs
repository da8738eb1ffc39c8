//! Checking the outbox against what a depot really holds (its
//! `ListPxeConfigs`), when a dispatcher worker starts. The outbox is the
//! store's belief; after a restore from an older backup, or a depot that
//! lost its files, the two differ, and every difference becomes a push the
//! depot answers precisely (written, `ALREADY_READ`, `NEWER_HELD`,
//! `REMOVED`). Pushes are idempotent, so a check that races with pushes or
//! reads costs at most a repeated push, never a wrong state.

use std::collections::{HashMap, HashSet};

use tracing::{info, warn};

use super::db::{Store, Tx, on};
use super::error::Result;
use super::leases::announce;
use super::records::{Owed, PushOp};
use super::rows::{self, Get};
use super::sequence::{allocate, bump_past};
use super::sql::{json_list, now_ms, traceparent};
use super::triggers::reconcile;

/// A push row as the check needs it.
struct Row0 {
    client: String,
    op: PushOp,
    revision: u64,
    delivered: u64,
    read: u64,
}

impl Row0 {
    fn owed(&self) -> bool {
        self.revision > self.delivered
    }
}

/// What the check does with one row.
#[derive(Debug, PartialEq, Eq)]
enum Fix {
    /// Nothing: it agrees, or it is owed and will be pushed anyway.
    None,
    /// Owed again at the same revision: the depot does not hold what the
    /// store believes delivered.
    Resend,
    /// A fresh revision past the depot's: the depot holds a revision this
    /// store no longer knows (a restore), or a config the store has as read.
    Fresh,
}

/// The fix for `row`, the depot holding `held` (its revision) or nothing.
fn fix(row: &Row0, held: Option<u64>) -> Fix {
    match held {
        Some(r) if r > row.revision => Fix::Fresh,
        _ if row.owed() => Fix::None,
        Some(r) => match row.op {
            PushOp::Set if row.read >= row.revision => Fix::Fresh,
            PushOp::Set if r == row.revision => Fix::None,
            PushOp::Set => Fix::Resend,
            // A removal was delivered, yet the depot holds an older config.
            PushOp::Remove => Fix::Resend,
        },
        None if row.op == PushOp::Set && row.read < row.revision => Fix::Resend,
        None => Fix::None,
    }
}

async fn depot_rows(conn: &mut Tx, depot_id: &str) -> Result<Vec<Row0>> {
    on!(conn.conn(), |c| {
        sqlx::query(
        "SELECT client_id, op, revision, delivered_revision, read_revision FROM pushes WHERE depot_id = $1",
    )
    .bind(depot_id)
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| {
        let client = r.text("client_id");
        Ok(Row0 {
            op: rows::op(r, &client)?,
            revision: r.int("revision").max(0) as u64,
            delivered: r.int("delivered_revision").max(0) as u64,
            read: r.int("read_revision").max(0) as u64,
            client,
        })
    })
    .collect()
    })
}

/// Owed again at the same revision.
async fn resend(conn: &mut Tx, depot_id: &str, client: &str) -> Result<()> {
    on!(conn.conn(), |c| {
        sqlx::query(
        "UPDATE pushes SET delivered_revision = CASE WHEN read_revision < delivered_revision THEN read_revision
             ELSE delivered_revision END, attempts = 0,
           next_attempt_at = NULL WHERE client_id = $1 AND depot_id = $2",
    )
    .bind(client)
    .bind(depot_id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// Owed again at a fresh revision; a row the store has as read becomes a
/// removal (the depot must not serve it a second time).
async fn refresh(conn: &mut Tx, depot_id: &str, row: &Row0, held: u64) -> Result<()> {
    bump_past(conn, held).await?;
    let fresh = allocate(conn, 1).await?;
    let op = match row.op {
        PushOp::Set if row.read >= row.revision => PushOp::Remove,
        op => op,
    };
    on!(conn.conn(), |c| {
        sqlx::query(
        "UPDATE pushes SET op = $1, revision = $2, attempts = 0, last_error = '', next_attempt_at = NULL,
           updated_at = $3, traceparent = $6 WHERE client_id = $4 AND depot_id = $5",
    )
    .bind(op.as_str())
    .bind(fresh as i64)
    .bind(now_ms())
    .bind(&row.client)
    .bind(depot_id)
    .bind(traceparent())
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// Clients the depot holds a config of although the store has no row for
/// them there: removals with fresh revisions for clients in the inventory
/// (then brought in line with it, which may make them sets again); clients
/// unknown to the inventory (a bundle pushed by hand) are left alone.
/// Returns the pushes now owed.
async fn unknown_held(conn: &mut Tx, depot_id: &str, clients: &[&str]) -> Result<Vec<Owed>> {
    if clients.is_empty() {
        return Ok(Vec::new());
    }
    let known: Vec<String> = on!(conn.conn(), |c| sqlx::query_scalar(
        "SELECT id FROM clients WHERE id IN (SELECT value FROM json_each($1))"
    )
    .bind(json_list(clients))
    .fetch_all(c)
    .await?);
    if known.is_empty() {
        return Ok(Vec::new());
    }
    let base = allocate(conn, known.len() as u64).await?;
    let trace = traceparent();
    for (i, client) in known.iter().enumerate() {
        on!(conn.conn(), |c| {
            sqlx::query(
                "INSERT INTO pushes (client_id, depot_id, op, revision, updated_at, traceparent)
             VALUES ($1, $2, 'remove', $3, $4, $5)",
            )
            .bind(client)
            .bind(depot_id)
            .bind((base + i as u64) as i64)
            .bind(now_ms())
            .bind(&trace)
            .execute(c)
            .await?
            .rows_affected()
        });
    }
    let mut owed = reconcile(conn, &known).await?;
    owed.extend(known.into_iter().map(|client_id| Owed {
        depot_id: depot_id.to_owned(),
        client_id,
    }));
    Ok(owed)
}

impl Store {
    /// Compares the outbox of `depot_id` with `held`, the depot's own list
    /// of the configs it holds (client → revision); every difference is
    /// owed again. Returns the pushes now owed.
    pub async fn verify_depot(
        &self,
        depot_id: &str,
        held: &HashMap<String, u64>,
    ) -> Result<Vec<Owed>> {
        let mut tx = self.begin().await?;
        let rows = depot_rows(&mut tx, depot_id).await?;
        let mut owed = Vec::new();
        let (mut resent, mut refreshed) = (0, 0);
        for row in &rows {
            let on_depot = held.get(&row.client).copied();
            match fix(row, on_depot) {
                Fix::None => continue,
                Fix::Resend => {
                    resend(&mut tx, depot_id, &row.client).await?;
                    resent += 1;
                }
                Fix::Fresh => {
                    refresh(&mut tx, depot_id, row, on_depot.unwrap_or(0)).await?;
                    refreshed += 1;
                }
            }
            owed.push(Owed {
                depot_id: depot_id.to_owned(),
                client_id: row.client.clone(),
            });
        }
        let with_rows: HashSet<&str> = rows.iter().map(|r| r.client.as_str()).collect();
        let strangers: Vec<&str> = held
            .keys()
            .map(String::as_str)
            .filter(|c| !with_rows.contains(c))
            .collect();
        // The depot's revisions of configs the store has no row for count
        // too: the removals' fresh revisions must be newer than what it
        // holds (a restored store, another replica's clock), else it
        // answers NEWER_HELD and keeps the config.
        if let Some(highest) = strangers.iter().filter_map(|c| held.get(*c)).max() {
            bump_past(&mut tx, *highest).await?;
        }
        let removed = unknown_held(&mut tx, depot_id, &strangers).await?;
        let unknown = removed.len();
        owed.extend(removed);
        // Bringing those clients in line may owe pushes to other depots,
        // whose holders (other replicas) hear of them only so.
        announce(&mut tx, &owed).await?;
        tx.commit().await?;
        if !owed.is_empty() {
            warn!(
                depot = depot_id,
                resent,
                refreshed,
                unknown,
                "the depot holds other configs than the store believes; pushing the difference"
            );
        } else {
            info!(
                depot = depot_id,
                held = held.len(),
                "depot holds what the store believes"
            );
        }
        Ok(owed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(op: PushOp, revision: u64, delivered: u64, read: u64) -> Row0 {
        Row0 {
            client: "c".into(),
            op,
            revision,
            delivered,
            read,
        }
    }

    #[test]
    fn each_difference_has_its_fix() {
        use PushOp::{Remove, Set};
        // Delivered and held at that revision: nothing.
        assert_eq!(fix(&row(Set, 5, 5, 0), Some(5)), Fix::None);
        // Delivered but gone (read, lost) or held older: sent again.
        assert_eq!(fix(&row(Set, 5, 5, 0), None), Fix::Resend);
        assert_eq!(fix(&row(Set, 5, 5, 0), Some(4)), Fix::Resend);
        // The depot holds a revision past the row's: a fresh one.
        assert_eq!(fix(&row(Set, 5, 5, 0), Some(9)), Fix::Fresh);
        assert_eq!(fix(&row(Set, 5, 3, 0), Some(9)), Fix::Fresh);
        assert_eq!(fix(&row(Remove, 5, 5, 0), Some(9)), Fix::Fresh);
        // Owed rows go out anyway.
        assert_eq!(fix(&row(Set, 5, 3, 0), None), Fix::None);
        assert_eq!(fix(&row(Set, 5, 3, 0), Some(3)), Fix::None);
        // Read, yet held: removed with a fresh revision.
        assert_eq!(fix(&row(Set, 5, 5, 5), Some(5)), Fix::Fresh);
        assert_eq!(fix(&row(Set, 5, 5, 5), None), Fix::None);
        // A delivered removal, yet something held: removed again.
        assert_eq!(fix(&row(Remove, 5, 5, 0), Some(4)), Fix::Resend);
        assert_eq!(fix(&row(Remove, 5, 5, 0), None), Fix::None);
    }
}
