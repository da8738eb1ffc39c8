//! Stored rows as records: every value is validated again on the way out,
//! and one that no longer parses is `StoreError::Corrupt`, never a panic.

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::error::{Result, StoreError};
use super::records::{DepotRecord, PocRecord, PushOp, PushPath, PushRecord};
use super::sql::{from_ms, from_us};
use crate::domain::{Client, Endpoint, Fqdn, Mac, Secret, SystemUuid};

/// A row of either engine, read by column name. The schemas of both keep
/// to these types (text, 64-bit integers, maybe NULL), so one mapping
/// serves both.
pub(super) trait Get {
    /// A text column.
    fn text(&self, column: &str) -> String;
    /// An integer column.
    fn int(&self, column: &str) -> i64;
    /// An integer column that may be NULL.
    fn opt_int(&self, column: &str) -> Option<i64>;
}

macro_rules! get_for {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, column: &str) -> String {
                self.get(column)
            }
            fn int(&self, column: &str) -> i64 {
                self.get(column)
            }
            fn opt_int(&self, column: &str) -> Option<i64> {
                self.get(column)
            }
        }
    };
}
get_for!(SqliteRow);
get_for!(PgRow);

/// A `depots` row.
pub(super) fn depot(r: &impl Get) -> Result<DepotRecord> {
    let id = r.text("id");
    let bad = |e| StoreError::corrupt("depot", &id, e);
    Ok(DepotRecord {
        id: Fqdn::parse(&id, "id").map_err(bad)?,
        endpoint: Endpoint::stored(&r.text("endpoint"), "endpoint").map_err(bad)?,
        host_key: Secret::new(r.text("host_key")),
        description: r.text("description"),
    })
}

/// A `clients` row as a domain client.
pub(super) fn client(r: &impl Get) -> Result<Client> {
    client_of(
        &r.text("id"),
        &r.text("hardware_address"),
        &r.text("system_uuid"),
        r.text("ip_address"),
        r.text("host_key"),
    )
}

/// A client from the columns of its `clients` row.
pub(super) fn client_of(
    id: &str,
    mac: &str,
    uuid: &str,
    ip_address: String,
    host_key: String,
) -> Result<Client> {
    let bad = |e| StoreError::corrupt("client", id, e);
    Ok(Client {
        fqdn: Fqdn::parse(id, "id").map_err(bad)?,
        mac: (!mac.is_empty())
            .then(|| Mac::parse(mac, "hardware_address"))
            .transpose()
            .map_err(bad)?,
        uuid: (!uuid.is_empty())
            .then(|| SystemUuid::parse(uuid, "system_uuid"))
            .transpose()
            .map_err(bad)?,
        ip_address,
        host_key: Secret::new(host_key),
    })
}

/// A `product_on_clients` row.
pub(super) fn product_on_client(r: &impl Get) -> PocRecord {
    PocRecord {
        client_id: r.text("client_id"),
        product_id: r.text("product_id"),
        action_request: r.text("action_request"),
        action_progress: r.text("action_progress"),
        product_version: r.text("product_version"),
        package_version: r.text("package_version"),
    }
}

/// The `op` column (checked by the schema, so only a hand edit fails here).
pub(super) fn op(r: &impl Get, client_id: &str) -> Result<PushOp> {
    let text = r.text("op");
    PushOp::parse(&text)
        .ok_or_else(|| StoreError::corrupt("push", client_id, format!("op {text:?}")))
}

/// A `pushes` row.
pub(super) fn push(r: &impl Get) -> Result<PushRecord> {
    let client_id = r.text("client_id");
    let revision = |column: &str| r.int(column).max(0) as u64;
    let time = |column: &str| r.opt_int(column).map(from_ms);
    Ok(PushRecord {
        op: op(r, &client_id)?,
        depot_id: r.text("depot_id"),
        product_id: r.text("product_id"),
        revision: revision("revision"),
        delivered_revision: revision("delivered_revision"),
        read_revision: revision("read_revision"),
        path: PushPath::parse(&r.text("path")),
        attempts: u32::try_from(r.int("attempts")).unwrap_or(u32::MAX),
        last_error: r.text("last_error"),
        next_attempt_at: time("next_attempt_at"),
        updated_at: from_ms(r.int("updated_at")),
        delivered_at: time("delivered_at"),
        read_at: time("read_at"),
        read_recorded_at: r.opt_int("read_recorded_us").map(from_us),
        blocked: r.text("blocked"),
        template: r.text("template"),
        template_reason: r.text("template_reason"),
        read_files_present: r.int("read_files_present") != 0,
        client_id,
    })
}
