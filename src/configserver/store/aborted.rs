//! What a depot's ABORTED means for the outbox. Never "delivered":
//! - `ALREADY_READ` of a set: the client read that revision or a newer one,
//!   so it is recorded exactly as the read report would be;
//! - `NEWER_HELD` / `REMOVED`: the depot has seen a newer revision than the
//!   store's row (a restored database, a clock that went back). The
//!   sequence moves past what the depot has seen and the row gets a fresh
//!   revision, so the store's current wish is pushed again and lands.
//!
//! And what a depot reports at reconciliation: the highest revision it has
//! seen, which the sequence moves past.

use super::db::{Store, on};
use super::error::Result;
use super::records::{ReadOutcome, ReadReport};
use super::sequence::{allocate, bump_past};
use super::sql::now_ms;

impl Store {
    /// The depot answered `ALREADY_READ` to the set of `revision`: records
    /// the read of it (of the row's product) as a read report would.
    pub async fn record_already_read(
        &self,
        depot_id: &str,
        client_id: &str,
        revision: u64,
    ) -> Result<ReadOutcome> {
        let product: Option<String> = on!(self.reader(), |c| {
            sqlx::query_scalar(
            "SELECT product_id FROM pushes WHERE client_id = $1 AND depot_id = $2 AND op = 'set'",
        )
        .bind(client_id)
        .bind(depot_id)
        .fetch_optional(c)
        .await?
        });
        let Some(product_id) = product else {
            return Ok(ReadOutcome::default());
        };
        self.record_read(&ReadReport {
            depot_id: depot_id.to_owned(),
            client_id: client_id.to_owned(),
            product_id,
            revision,
            epoch: self.epoch().to_owned(),
            ..Default::default()
        })
        .await
    }

    /// The depot has seen a newer revision (`highest`) than `revision`, the
    /// one pushed: the sequence moves past it and, if the row still wants
    /// `revision`, the row gets a fresh one (owed again, `note` as its last
    /// error). Returns the new revision, or `None` if the row changed
    /// meanwhile (its newer revision is owed anyway).
    pub async fn supersede(
        &self,
        depot_id: &str,
        client_id: &str,
        revision: u64,
        highest: u64,
        note: &str,
    ) -> Result<Option<u64>> {
        let mut tx = self.begin().await?;
        bump_past(&mut tx, highest.max(revision)).await?;
        let current = on!(tx.conn(), |c| sqlx::query_scalar::<_, i64>(
            "SELECT revision FROM pushes WHERE client_id = $1 AND depot_id = $2"
        )
        .bind(client_id)
        .bind(depot_id)
        .fetch_optional(c)
        .await?)
        .map(|r| r.max(0) as u64);
        if current != Some(revision) {
            tx.commit().await?;
            return Ok(None);
        }
        let fresh = allocate(&mut tx, 1).await?;
        on!(tx.conn(), |c| {
            sqlx::query(
            "UPDATE pushes SET revision = $1, attempts = 0, last_error = $2, next_attempt_at = NULL,
               updated_at = $3 WHERE client_id = $4 AND depot_id = $5",
        )
        .bind(fresh as i64)
        .bind(note)
        .bind(now_ms())
        .bind(client_id)
        .bind(depot_id)
        .execute(c)
        .await?.rows_affected()
        });
        tx.commit().await?;
        Ok(Some(fresh))
    }
}

impl Store {
    /// Moves the revision sequence past `revision`, a revision a depot
    /// reports having seen in `epoch` (another epoch's numbers say nothing
    /// about this sequence); true if it was behind.
    pub async fn observe_revision(&self, epoch: &str, revision: u64) -> Result<bool> {
        if epoch != self.epoch() || revision == 0 {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let moved = bump_past(&mut tx, revision).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// The last revision given out.
    pub async fn last_revision(&self) -> Result<u64> {
        let last: i64 = on!(self.reader(), |c| sqlx::query_scalar(
            "SELECT value FROM meta WHERE key = 'revision'"
        )
        .fetch_one(c)
        .await?);
        Ok(last.max(0) as u64)
    }
}
