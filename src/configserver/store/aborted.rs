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

use sqlx::Row;

use super::db::Store;
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
        let product: Option<String> = sqlx::query_scalar(
            "SELECT product_id FROM pushes WHERE client_id = ? AND depot_id = ? AND op = 'set'",
        )
        .bind(client_id)
        .bind(depot_id)
        .fetch_optional(self.reader())
        .await?;
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
        let current =
            sqlx::query("SELECT revision FROM pushes WHERE client_id = ? AND depot_id = ?")
                .bind(client_id)
                .bind(depot_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get::<i64, _>("revision").max(0) as u64);
        if current != Some(revision) {
            tx.commit().await?;
            return Ok(None);
        }
        let fresh = allocate(&mut tx, 1).await?;
        sqlx::query(
            "UPDATE pushes SET revision = ?, attempts = 0, last_error = ?, next_attempt_at = NULL,
               updated_at = ? WHERE client_id = ? AND depot_id = ?",
        )
        .bind(fresh as i64)
        .bind(note)
        .bind(now_ms())
        .bind(client_id)
        .bind(depot_id)
        .execute(&mut *tx)
        .await?;
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
        let last: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'revision'")
            .fetch_one(self.reader())
            .await?;
        Ok(last.max(0) as u64)
    }
}
