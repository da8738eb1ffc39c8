//! The push outbox as the dispatcher and the depots see it: push results,
//! read reports, and what is owed or held per depot.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use super::db::Store;
use super::error::Result;
use super::records::{Ack, PushOp, PushRecord, ReadOutcome};
use super::rows;
use super::sql::{now_ms, to_ms};
use super::triggers::reconcile;
use crate::domain::ActionRequest;

/// Records one push result.
async fn record_ack(conn: &mut SqliteConnection, ack: &Ack, now: i64) -> Result<()> {
    match ack {
        Ack::Delivered {
            client_id,
            depot_id,
            revision,
            path,
        } => {
            sqlx::query(
                "UPDATE pushes SET delivered_revision = max(delivered_revision, ?1), delivered_at = ?2,
                   path = ?3,
                   attempts = CASE WHEN revision = ?1 THEN 0 ELSE attempts END,
                   last_error = CASE WHEN revision = ?1 THEN '' ELSE last_error END,
                   next_attempt_at = CASE WHEN revision = ?1 THEN NULL ELSE next_attempt_at END
                 WHERE client_id = ?4 AND depot_id = ?5",
            )
            .bind(*revision as i64)
            .bind(now)
            .bind(path.as_str())
            .bind(client_id)
            .bind(depot_id)
            .execute(&mut *conn)
            .await?;
        }
        Ack::Failed {
            client_id,
            depot_id,
            revision,
            error,
            next_attempt_at,
        } => {
            sqlx::query(
                "UPDATE pushes SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?
                 WHERE client_id = ? AND depot_id = ? AND revision = ?",
            )
            .bind(error)
            .bind(to_ms(*next_attempt_at))
            .bind(client_id)
            .bind(depot_id)
            .bind(*revision as i64)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Whether a read report of `revision` of `product_id` is news: the row is
/// a set of exactly that product and revision, not read yet.
async fn read_is_fresh(
    conn: &mut SqliteConnection,
    depot_id: &str,
    client_id: &str,
    product_id: &str,
    revision: u64,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT op, product_id, revision, read_revision FROM pushes WHERE client_id = ? AND depot_id = ?",
    )
    .bind(client_id)
    .bind(depot_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(false) };
    Ok(rows::op(&row, client_id)? == PushOp::Set
        && row.get::<String, _>("product_id") == product_id
        && row.get::<i64, _>("revision") as u64 == revision
        && (row.get::<i64, _>("read_revision") as u64) < revision)
}

/// Records the read of `revision`: on the push row, and as the action's
/// progress; the action request becomes `none` unless it is `always`.
async fn apply_read(
    conn: &mut SqliteConnection,
    depot_id: &str,
    client_id: &str,
    product_id: &str,
    revision: u64,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "UPDATE pushes SET read_revision = ?1, read_at = ?2,
               delivered_revision = max(delivered_revision, ?1),
               delivered_at = coalesce(delivered_at, ?2)
             WHERE client_id = ?3 AND depot_id = ?4",
    )
    .bind(revision as i64)
    .bind(now)
    .bind(client_id)
    .bind(depot_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE product_on_clients SET action_progress = 'pxe boot configuration read',
               action_request = CASE WHEN action_request = 'always' THEN 'always' ELSE 'none' END
             WHERE client_id = ? AND product_id = ?",
    )
    .bind(client_id)
    .bind(product_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records push results, all in one transaction.
    pub async fn record_acks(&self, acks: &[Ack]) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let now = now_ms();
        for ack in acks {
            record_ack(&mut tx, ack, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The depot saw the TFTP read of `revision`: progress is recorded, the
    /// action request becomes `none` unless it is `always` (then the config
    /// is pushed again); another netboot action of the client is pushed
    /// next. Stale or repeated reports change nothing.
    pub async fn report_read(
        &self,
        depot_id: &str,
        client_id: &str,
        product_id: &str,
        revision: u64,
    ) -> Result<ReadOutcome> {
        let mut tx = self.begin().await?;
        let fresh = read_is_fresh(&mut tx, depot_id, client_id, product_id, revision).await?;
        let action: Option<String> = sqlx::query_scalar(
            "SELECT action_request FROM product_on_clients WHERE client_id = ? AND product_id = ?",
        )
        .bind(client_id)
        .bind(product_id)
        .fetch_optional(&mut *tx)
        .await?;
        if !fresh {
            return Ok(ReadOutcome {
                action_request: action.unwrap_or_else(|| ActionRequest::None.as_str().into()),
                ..Default::default()
            });
        }
        apply_read(&mut tx, depot_id, client_id, product_id, revision).await?;
        let always = action.as_deref() == Some(ActionRequest::Always.as_str());
        // `always` is pushed again; else the client's next netboot action,
        // if it has one (opsipxeconfd updates after each read).
        let owed = reconcile(&mut tx, &[client_id.to_owned()]).await?;
        tx.commit().await?;
        let now_action = if always {
            ActionRequest::Always
        } else {
            ActionRequest::None
        };
        Ok(ReadOutcome {
            action_request: now_action.as_str().into(),
            repushed: !owed.is_empty(),
            applied: true,
            owed,
        })
    }

    /// The clients owed a push by `depot`, in client order.
    pub async fn owed_clients(&self, depot_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT client_id FROM pushes WHERE depot_id = ? AND revision > delivered_revision ORDER BY client_id",
        )
        .bind(depot_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// The clients whose config `depot` should hold now (set, not read).
    pub async fn held_clients(&self, depot_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT client_id FROM pushes WHERE depot_id = ? AND op = 'set' AND read_revision < revision
             ORDER BY client_id",
        )
        .bind(depot_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// Push rows of one client.
    pub async fn pushes_of_client(&self, client_id: &str) -> Result<Vec<PushRecord>> {
        sqlx::query("SELECT * FROM pushes WHERE client_id = ? ORDER BY updated_at DESC, depot_id")
            .bind(client_id)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::push)
            .collect()
    }

    /// Push rows owed to `depot` or delivered and unread, after `after`.
    pub async fn pending_of_depot(
        &self,
        depot_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<PushRecord>> {
        sqlx::query(
            "SELECT * FROM pushes WHERE depot_id = ? AND client_id > ?
               AND (revision > delivered_revision OR (op = 'set' AND read_revision < revision))
             ORDER BY client_id LIMIT ?",
        )
        .bind(depot_id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(rows::push)
        .collect()
    }

    /// Per depot: pushes owed, and configs delivered and not read.
    pub async fn depot_counts(&self) -> Result<HashMap<String, (u64, u64)>> {
        let rows = sqlx::query(
            "SELECT depot_id,
               sum(revision > delivered_revision) AS owed,
               sum(op = 'set' AND delivered_revision >= revision AND read_revision < revision) AS delivered
             FROM pushes GROUP BY depot_id",
        )
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("depot_id"),
                    (
                        r.get::<i64, _>("owed") as u64,
                        r.get::<i64, _>("delivered") as u64,
                    ),
                )
            })
            .collect())
    }
}
