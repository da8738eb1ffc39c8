//! Journal rows: what the journal stores, as JSON for one `json_each`
//! statement per round, and back from SQLite rows, validated again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::Row;

use super::super::error::{JournalError, SeenState};
use super::super::messages::ReadEvent;
use super::super::records::{ClientRecord, Held, Seen};
use crate::depot::marker::Format;
use crate::domain::{ActionRequest, Fqdn, ProductId};

pub(super) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(super) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) fn client_json(c: &ClientRecord) -> Value {
    let seen = c.seen.as_ref();
    let held = c.held.as_ref();
    json!([
        c.fqdn.as_str(),
        seen.map(|s| s.revision),
        seen.map(|s| s.state.as_str()),
        seen.map(|s| s.epoch.as_ref()),
        i64::from(held.is_some()),
        held.map(|h| h.product_id.as_str()),
        held.map(|h| h.action_request.as_str()),
        held.map(|h| h.revision),
        held.map(|h| Value::from(h.files.clone()).to_string()),
        held.map(|h| h.template.as_str()),
        held.map(|h| ms(h.since)),
        held.and(c.content.as_deref()),
        held.map(|h| h.epoch.as_ref()),
    ])
}

pub(super) fn read_json(r: &ReadEvent) -> Value {
    json!([
        r.fqdn.as_str(),
        r.epoch.as_ref(),
        r.revision,
        r.product_id.as_str(),
        r.action_request.as_str(),
        ms(r.read_at),
    ])
}

fn corrupt(fqdn: &str, message: impl ToString) -> JournalError {
    JournalError::Corrupt {
        fqdn: fqdn.to_owned(),
        message: message.to_string(),
    }
}

fn files(fqdn: &str, text: &str) -> Result<Vec<String>, JournalError> {
    serde_json::from_str(text).map_err(|e| corrupt(fqdn, e))
}

pub(super) fn client_record(row: &sqlx::sqlite::SqliteRow) -> Result<ClientRecord, JournalError> {
    let name: String = row.get("fqdn");
    let bad = |e: crate::domain::ValidationError| corrupt(&name, e.message);
    let fqdn = Fqdn::parse(&name, "fqdn").map_err(bad)?;
    let seen = match row.get::<Option<String>, _>("seen_state") {
        None => None,
        Some(state) => Some(Seen {
            revision: row
                .get::<Option<i64>, _>("seen_revision")
                .unwrap_or(0)
                .max(0) as u64,
            state: SeenState::parse(&state).ok_or_else(|| corrupt(&name, state))?,
            epoch: Arc::from(
                row.get::<Option<String>, _>("seen_epoch")
                    .unwrap_or_default(),
            ),
        }),
    };
    let held = match row.get::<i64, _>("held") {
        0 => None,
        _ => {
            let text = |column: &str| row.get::<Option<String>, _>(column).unwrap_or_default();
            Some(Held {
                product_id: ProductId::parse(&text("product_id"), "product_id").map_err(bad)?,
                action_request: text("action_request")
                    .parse::<ActionRequest>()
                    .map_err(|()| corrupt(&name, "unknown action request"))?,
                revision: row
                    .get::<Option<i64>, _>("held_revision")
                    .unwrap_or(0)
                    .max(0) as u64,
                files: files(&name, &text("files"))?,
                template: text("template"),
                since: from_ms(row.get::<Option<i64>, _>("since").unwrap_or(0)),
                format: Format::of(&text("content")),
                epoch: Arc::from(text("held_epoch")),
            })
        }
    };
    let content = held
        .as_ref()
        .map(|_| Arc::from(row.get::<Option<String>, _>("content").unwrap_or_default()));
    Ok(ClientRecord {
        fqdn,
        seen,
        held,
        content,
    })
}

pub(super) fn read_row(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<(ReadEvent, Vec<String>, bool), JournalError> {
    let name: String = row.get("fqdn");
    let bad = |e: crate::domain::ValidationError| corrupt(&name, e.message);
    let read = ReadEvent {
        fqdn: Fqdn::parse(&name, "fqdn").map_err(bad)?,
        product_id: ProductId::parse(&row.get::<String, _>("product_id"), "product_id")
            .map_err(bad)?,
        revision: row.get::<i64, _>("revision").max(0) as u64,
        action_request: row
            .get::<String, _>("action_request")
            .parse::<ActionRequest>()
            .map_err(|()| corrupt(&name, "unknown action request"))?,
        epoch: Arc::from(row.get::<String, _>("epoch")),
        files_present: row.get::<i64, _>("files_present") != 0,
        read_at: from_ms(row.get("read_at")),
    };
    let files = files(&name, &row.get::<String, _>("files"))?;
    Ok((read, files, row.get::<i64, _>("acked") != 0))
}
