//! Stored rows as records: every value is validated again on the way out,
//! and one that no longer parses is `StoreError::Corrupt`, never a panic.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::error::{Result, StoreError};
use super::records::{DepotRecord, PocRecord, PushOp, PushPath, PushRecord};
use super::sql::from_ms;
use crate::domain::{Client, Endpoint, Fqdn, Mac, Secret, SystemUuid};

/// A `depots` row.
pub(super) fn depot(r: &SqliteRow) -> Result<DepotRecord> {
    let id: String = r.get("id");
    let bad = |e| StoreError::corrupt("depot", &id, e);
    Ok(DepotRecord {
        id: Fqdn::parse(&id, "id").map_err(bad)?,
        endpoint: Endpoint::parse(&r.get::<String, _>("endpoint"), "endpoint").map_err(bad)?,
        host_key: Secret::new(r.get::<String, _>("host_key")),
        description: r.get("description"),
    })
}

/// A `clients` row as a domain client.
pub(super) fn client(r: &SqliteRow) -> Result<Client> {
    let id: String = r.get("id");
    let mac: String = r.get("hardware_address");
    let uuid: String = r.get("system_uuid");
    let bad = |e| StoreError::corrupt("client", &id, e);
    Ok(Client {
        fqdn: Fqdn::parse(&id, "id").map_err(bad)?,
        mac: (!mac.is_empty())
            .then(|| Mac::parse(&mac, "hardware_address"))
            .transpose()
            .map_err(bad)?,
        uuid: (!uuid.is_empty())
            .then(|| SystemUuid::parse(&uuid, "system_uuid"))
            .transpose()
            .map_err(bad)?,
        ip_address: r.get("ip_address"),
        host_key: Secret::new(r.get::<String, _>("host_key")),
    })
}

/// A `product_on_clients` row.
pub(super) fn product_on_client(r: &SqliteRow) -> PocRecord {
    PocRecord {
        client_id: r.get("client_id"),
        product_id: r.get("product_id"),
        action_request: r.get("action_request"),
        action_progress: r.get("action_progress"),
        product_version: r.get("product_version"),
        package_version: r.get("package_version"),
    }
}

/// The `op` column (checked by the schema, so only a hand edit fails here).
pub(super) fn op(r: &SqliteRow, client_id: &str) -> Result<PushOp> {
    let text: String = r.get("op");
    PushOp::parse(&text)
        .ok_or_else(|| StoreError::corrupt("push", client_id, format!("op {text:?}")))
}

/// A `pushes` row.
pub(super) fn push(r: &SqliteRow) -> Result<PushRecord> {
    let client_id: String = r.get("client_id");
    let revision = |column: &str| r.get::<i64, _>(column).max(0) as u64;
    let time = |column: &str| r.get::<Option<i64>, _>(column).map(from_ms);
    Ok(PushRecord {
        op: op(r, &client_id)?,
        depot_id: r.get("depot_id"),
        product_id: r.get("product_id"),
        revision: revision("revision"),
        delivered_revision: revision("delivered_revision"),
        read_revision: revision("read_revision"),
        path: PushPath::parse(&r.get::<String, _>("path")),
        attempts: u32::try_from(r.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
        last_error: r.get("last_error"),
        next_attempt_at: time("next_attempt_at"),
        updated_at: from_ms(r.get("updated_at")),
        delivered_at: time("delivered_at"),
        read_at: time("read_at"),
        blocked: r.get("blocked"),
        template: r.get("template"),
        template_reason: r.get("template_reason"),
        read_files_present: r.try_get::<i64, _>("read_files_present").unwrap_or(0) != 0,
        client_id,
    })
}
