//! What a depot says about a config it wrote: the template it chose and
//! why (`SetPxeConfigResponse.template` and `template_reason`), kept on the
//! push row for the status.

use super::db::{Store, Tx, on};
use super::error::Result;

/// The template a depot used for one delivered revision, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateNote {
    /// The client.
    pub client_id: String,
    /// The depot.
    pub depot_id: String,
    /// The revision the depot wrote.
    pub revision: u64,
    /// The template, relative to the depot's template directory.
    pub template: String,
    /// Why the depot chose it.
    pub reason: String,
}

/// Records `note` on its push row, inside a caller's transaction (the ack
/// writer's batch). A note for an older revision than the row's is stale and
/// changes nothing.
pub(super) async fn record_template(conn: &mut Tx, note: &TemplateNote) -> Result<()> {
    on!(conn.conn(), |c| sqlx::query(
        "UPDATE pushes SET template = $1, template_reason = $2
         WHERE client_id = $3 AND depot_id = $4 AND revision = $5",
    )
    .bind(&note.template)
    .bind(&note.reason)
    .bind(&note.client_id)
    .bind(&note.depot_id)
    .bind(note.revision as i64)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

impl Store {
    /// Records what depots said about the templates of delivered configs,
    /// all in one transaction.
    pub async fn record_templates(&self, notes: &[TemplateNote]) -> Result<()> {
        if notes.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for note in notes {
            record_template(&mut tx, note).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
