//! Journal rows: what the journal stores, bound to its prepared statements,
//! and back from SQLite rows, validated again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{CachedStatement, Row, params};
use serde_json::Value;

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

/// A stored revision: SQLite's integers are signed.
pub(super) fn revision(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// Appends `c`'s row with [`INSERT_CLIENT`](super::INSERT_CLIENT).
pub(super) fn insert_client(
    statement: &mut CachedStatement<'_>,
    c: &ClientRecord,
) -> rusqlite::Result<usize> {
    let seen = c.seen.as_ref();
    let held = c.held.as_ref();
    statement.execute(params![
        c.fqdn.as_str(),
        seen.map(|s| revision(s.revision)),
        seen.map(|s| s.state.as_str()),
        seen.map(|s| s.epoch.as_ref()),
        i64::from(held.is_some()),
        held.map(|h| h.product_id.as_str()),
        held.map(|h| h.action_request.as_str()),
        held.map(|h| revision(h.revision)),
        held.map(|h| Value::from(h.files.clone()).to_string()),
        held.map(|h| h.template.as_str()),
        held.map(|h| ms(h.since)),
        held.and(c.content.as_deref()),
        held.map(|h| h.epoch.as_ref()),
    ])
}

/// Records the read `r` with [`INSERT_READ`](super::INSERT_READ).
pub(super) fn insert_read(
    statement: &mut CachedStatement<'_>,
    r: &ReadEvent,
) -> rusqlite::Result<usize> {
    statement.execute(params![
        r.fqdn.as_str(),
        r.epoch.as_ref(),
        revision(r.revision),
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

pub(super) fn client_record(row: &Row<'_>) -> Result<ClientRecord, JournalError> {
    let name: String = row.get("fqdn")?;
    let bad = |e: crate::domain::ValidationError| corrupt(&name, e.message);
    let fqdn = Fqdn::parse(&name, "fqdn").map_err(bad)?;
    let seen = match row.get::<_, Option<String>>("seen_state")? {
        None => None,
        Some(state) => Some(Seen {
            revision: row
                .get::<_, Option<i64>>("seen_revision")?
                .unwrap_or(0)
                .max(0) as u64,
            state: SeenState::parse(&state).ok_or_else(|| corrupt(&name, state))?,
            epoch: Arc::from(
                row.get::<_, Option<String>>("seen_epoch")?
                    .unwrap_or_default(),
            ),
        }),
    };
    let held = match row.get::<_, i64>("held")? {
        0 => None,
        _ => {
            let text = |column: &str| -> Result<String, JournalError> {
                Ok(row.get::<_, Option<String>>(column)?.unwrap_or_default())
            };
            Some(Held {
                product_id: ProductId::parse(&text("product_id")?, "product_id").map_err(bad)?,
                action_request: text("action_request")?
                    .parse::<ActionRequest>()
                    .map_err(|()| corrupt(&name, "unknown action request"))?,
                revision: row
                    .get::<_, Option<i64>>("held_revision")?
                    .unwrap_or(0)
                    .max(0) as u64,
                files: files(&name, &text("files")?)?,
                template: text("template")?,
                since: from_ms(row.get::<_, Option<i64>>("since")?.unwrap_or(0)),
                format: Format::of(&text("content")?),
                epoch: Arc::from(text("held_epoch")?),
            })
        }
    };
    let content = match held {
        Some(_) => Some(Arc::from(
            row.get::<_, Option<String>>("content")?.unwrap_or_default(),
        )),
        None => None,
    };
    Ok(ClientRecord {
        fqdn,
        seen,
        held,
        content,
    })
}

pub(super) fn read_row(row: &Row<'_>) -> Result<(ReadEvent, Vec<String>, bool), JournalError> {
    let name: String = row.get("fqdn")?;
    let bad = |e: crate::domain::ValidationError| corrupt(&name, e.message);
    let read = ReadEvent {
        fqdn: Fqdn::parse(&name, "fqdn").map_err(bad)?,
        product_id: ProductId::parse(&row.get::<_, String>("product_id")?, "product_id")
            .map_err(bad)?,
        revision: row.get::<_, i64>("revision")?.max(0) as u64,
        action_request: row
            .get::<_, String>("action_request")?
            .parse::<ActionRequest>()
            .map_err(|()| corrupt(&name, "unknown action request"))?,
        epoch: Arc::from(row.get::<_, String>("epoch")?),
        files_present: row.get::<_, i64>("files_present")? != 0,
        read_at: from_ms(row.get("read_at")?),
    };
    let files = files(&name, &row.get::<_, String>("files")?)?;
    Ok((read, files, row.get::<_, i64>("acked")? != 0))
}
