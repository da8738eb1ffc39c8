//! Admin writes of the inventory's things: depots, clients, products and
//! the product versions on depots. Each `write_*` works inside a given
//! transaction (an import runs them all in one); each `Store` method is one
//! transaction together with the pushes it owes (see `triggers`).

use sqlx::AssertSqlSafe;

use super::checks::{Exists, require_all};
use super::db::{Store, WriteTx, on};
use super::error::{Result, StoreError};
use super::records::{DepotRecord, ProductOnDepotRecord, ProductRecord, WriteOutcome};
use super::rows;
use super::sql::{json_list, json_rows, json_upsert_rows};
use super::touched::{
    clients_blocked_at, clients_blocked_on, clients_holding, clients_holding_at,
    clients_naming_depots,
};
use super::triggers::finish;
use crate::domain::{Client, Fqdn, ProductId};

/// A written batch: rows affected, and the clients whose pushes it touches.
pub(super) type Written = (usize, Vec<String>);

/// Deletes the rows of `ids` from each `(table, column)`; returns how many
/// rows of the first table went.
async fn delete_from(tx: &mut WriteTx, ids: &str, tables: &[(&str, &str)]) -> Result<u64> {
    let mut first = None;
    for (table, column) in tables {
        let rows = on!(tx.conn(), |c| sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each($1))"
        )))
        .bind(ids)
        .execute(c)
        .await?
        .rows_affected());
        first.get_or_insert(rows);
    }
    Ok(first.unwrap_or(0))
}

/// Inserts or updates depots; a new depot picks up the clients that
/// already name it.
/// A host key another depot holds (in the store or in the same write) is
/// refused: the key is how a depot is recognised. Upserts and imports alike.
pub(super) async fn write_depots(tx: &mut WriteTx, depots: &[DepotRecord]) -> Result<Written> {
    let taken = |id: &str| StoreError::Duplicate {
        what: "depot",
        id: id.to_owned(),
        message: "its host_key is already another depot's".into(),
    };
    // A depot named twice is its last entry (as in the upsert below), so
    // only last entries are compared: an earlier entry's key is not held.
    let last: std::collections::HashMap<&str, usize> = (depots.iter().enumerate())
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    let mut keys = std::collections::HashMap::new();
    for (i, d) in depots.iter().enumerate() {
        if last[d.id.as_str()] != i {
            continue;
        }
        if let Some(other) = keys.insert(d.host_key.expose(), d.id.as_str())
            && other != d.id.as_str()
        {
            return Err(taken(d.id.as_str()));
        }
    }
    let rows = json_upsert_rows(
        depots.iter().map(|d| {
            [
                d.id.as_str(),
                d.endpoint.as_str(),
                d.host_key.expose(),
                d.description.as_str(),
            ]
        }),
        1,
    );
    host_ids_free(tx, &rows, "depot").await?;
    let clash: Option<String> = on!(tx.conn(), |c| {
        sqlx::query_scalar(
            // A depot of this write gives up its stored key (the check
            // above compared the write's own keys).
            "SELECT n.value ->> 0 FROM json_each($1) n
             WHERE EXISTS (SELECT 1 FROM depots d
               WHERE d.host_key = n.value ->> 2 AND d.id <> n.value ->> 0
                 AND NOT EXISTS (SELECT 1 FROM json_each($1) w WHERE w.value ->> 0 = d.id))
             LIMIT 1",
        )
        .bind(&rows)
        .fetch_optional(c)
        .await?
    });
    if let Some(id) = clash {
        return Err(taken(&id));
    }
    let changed: Vec<String> = on!(tx.conn(), |c| {
        sqlx::query_scalar(
        "INSERT INTO depots (id, endpoint, host_key, description)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1) WHERE true
         ON CONFLICT (id) DO UPDATE SET endpoint = excluded.endpoint,
           host_key = excluded.host_key, description = excluded.description
         WHERE (depots.endpoint, depots.host_key, depots.description) IS DISTINCT FROM (excluded.endpoint, excluded.host_key, excluded.description)
         RETURNING id",
    )
    .bind(rows)
    .fetch_all(c)
    .await?
    });
    let clients = clients_naming_depots(tx, &changed).await?;
    Ok((changed.len(), clients))
}

/// Inserts or updates clients; a changed MAC, UUID or host key re-pushes.
/// An empty host key keeps the stored one (an opsi dump taken by an account
/// that may not read keys has none).
/// A MAC or UUID another client holds fails the whole write.
pub(super) async fn write_clients(tx: &mut WriteTx, clients: &[Client]) -> Result<Written> {
    let texts: Vec<[String; 2]> = clients
        .iter()
        .map(|c| {
            [
                c.mac.map(|m| m.to_string()).unwrap_or_default(),
                c.uuid.as_ref().map(|u| u.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    let rows = json_upsert_rows(
        clients.iter().zip(&texts).map(|(c, [mac, uuid])| {
            [
                c.fqdn.as_str(),
                mac.as_str(),
                uuid.as_str(),
                c.ip_address.as_str(),
                c.host_key.expose(),
            ]
        }),
        1,
    );
    host_ids_free(tx, &rows, "client").await?;
    let changed: Vec<String> = on!(tx.conn(), |c| {
        sqlx::query_scalar(
        "INSERT INTO clients (id, hardware_address, system_uuid, ip_address, host_key)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each($1) WHERE true
         ON CONFLICT (id) DO UPDATE SET hardware_address = excluded.hardware_address,
           system_uuid = excluded.system_uuid, ip_address = excluded.ip_address,
           host_key = CASE WHEN excluded.host_key <> '' THEN excluded.host_key ELSE clients.host_key END
         WHERE (clients.hardware_address, clients.system_uuid, clients.ip_address, clients.host_key)
           IS DISTINCT FROM (excluded.hardware_address, excluded.system_uuid, excluded.ip_address,
             CASE WHEN excluded.host_key <> '' THEN excluded.host_key ELSE clients.host_key END)
         RETURNING id",
    )
    .bind(&rows)
    .fetch_all(c)
    .await?
    });
    // Checked after the write, so that two clients swapping MACs in one
    // request pass; the transaction is dropped on a conflict.
    for (column, what) in [
        ("hardware_address", "hardware address"),
        ("system_uuid", "system UUID"),
    ] {
        unique_address(tx, &rows, column, what).await?;
    }
    Ok((changed.len(), changed))
}

/// Fails when an id of `rows` (hosts of kind `what`, `client` or `depot`,
/// the id first) is a host's of the other kind: a client and a depot never
/// share an id — deleting such a client would delete the depot's config
/// and property states, which every client of the depot inherits.
async fn host_ids_free(tx: &mut WriteTx, rows: &str, what: &'static str) -> Result<()> {
    let (other, table) = match what {
        "client" => ("depot", "depots"),
        _ => ("client", "clients"),
    };
    let taken: Option<String> = on!(tx.conn(), |c| {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT h.id FROM json_each($1) j JOIN {table} h ON h.id = j.value ->> 0
             ORDER BY j.key LIMIT 1"
        )))
        .bind(rows)
        .fetch_optional(c)
        .await?
    });
    match taken {
        Some(id) => Err(StoreError::HostIdTaken { what, id, other }),
        None => Ok(()),
    }
}

/// Fails with ALREADY_EXISTS naming both clients when a client of `rows`
/// shares its `column` with another client, as opsiconfd refuses a
/// duplicate hardware address (`_host_check_duplicate_hardware_address`,
/// `backend/rpc/obj_host.py` @ 4.3.24.1 l.76–90; its `HOST` table has the
/// system UUID unique too). Like opsi, MACs starting `00:00:00` (the
/// placeholder some tools write) are exempt.
async fn unique_address(
    tx: &mut WriteTx,
    rows: &str,
    column: &str,
    what: &'static str,
) -> Result<()> {
    let index = if column == "hardware_address" { 1 } else { 2 };
    // Of two clients of one request, the later is named as the duplicate.
    // `c.{column} <> ''` lets SQLite use the partial index (else: a scan per item).
    let duplicate: Option<(String, String, String)> = on!(tx.conn(), |c| {
        sqlx::query_as(AssertSqlSafe(format!(
        "SELECT j.value ->> 0, c.id, c.{column} FROM json_each($1) j
         JOIN clients c ON c.{column} = j.value ->> {index} AND c.{column} <> '' AND c.id <> j.value ->> 0
         WHERE j.value ->> {index} <> '' AND j.value ->> {index} NOT LIKE '00:00:00:%'
           AND NOT EXISTS (SELECT 1 FROM json_each($1) k WHERE k.value ->> 0 = c.id AND k.key > j.key)
         ORDER BY j.key, c.id LIMIT 1"
    )))
    .bind(rows)
    .fetch_optional(c)
    .await?
    });
    match duplicate {
        Some((id, other, value)) => Err(StoreError::AlreadyExists {
            what,
            value,
            id,
            other,
        }),
        None => Ok(()),
    }
}

/// Inserts or updates products; clients holding a config for one re-push,
/// and those waiting for a version of one to be registered.
pub(super) async fn write_products(
    tx: &mut WriteTx,
    products: &[ProductRecord],
) -> Result<Written> {
    let rows = json_upsert_rows(
        products.iter().map(|p| {
            [
                p.id.as_str(),
                p.product_version.as_str(),
                p.package_version.as_str(),
                p.template.as_ref().map_or("", |t| t.as_str()),
            ]
        }),
        3,
    );
    let changed: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
        "INSERT INTO products (id, product_version, package_version, pxe_config_template)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1) WHERE true
         ON CONFLICT (id, product_version, package_version) DO UPDATE
           SET pxe_config_template = excluded.pxe_config_template
         WHERE products.pxe_config_template IS DISTINCT FROM excluded.pxe_config_template
         RETURNING id",
    )
    .bind(rows)
    .fetch_all(c)
    .await?);
    let mut clients = clients_holding(tx, &changed).await?;
    clients.extend(clients_blocked_on(tx, &changed).await?);
    Ok((changed.len(), clients))
}

/// Inserts or updates product-on-depots; that depot's clients of the
/// product re-push, and those whose config waited for it are re-armed. The
/// depot and the product version must exist.
pub(super) async fn write_product_on_depots(
    tx: &mut WriteTx,
    pods: &[ProductOnDepotRecord],
) -> Result<Written> {
    require_all(tx, Exists::Depot, pods.iter().map(|p| p.depot_id.as_str())).await?;
    let rows = json_upsert_rows(
        pods.iter().map(|p| {
            [
                p.depot_id.as_str(),
                p.product_id.as_str(),
                p.product_version.as_str(),
                p.package_version.as_str(),
            ]
        }),
        2,
    );
    let unknown: Option<String> = on!(tx.conn(), |c| {
        sqlx::query_scalar(
        "SELECT (value ->> 1) || ' ' || (value ->> 2) || '-' || (value ->> 3) FROM json_each($1)
         WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = value ->> 1
           AND p.product_version = value ->> 2 AND p.package_version = value ->> 3)
         LIMIT 1",
    )
    .bind(&rows)
    .fetch_optional(c)
    .await?
    });
    if let Some(id) = unknown {
        return Err(StoreError::NotFound {
            what: "product",
            id,
        });
    }
    let changed: Vec<(String, String)> = on!(tx.conn(), |c| {
        sqlx::query_as(
        "INSERT INTO product_on_depots (depot_id, product_id, product_version, package_version)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1) WHERE true
         ON CONFLICT (depot_id, product_id) DO UPDATE
           SET product_version = excluded.product_version, package_version = excluded.package_version
         WHERE (product_on_depots.product_version, product_on_depots.package_version) IS DISTINCT FROM (excluded.product_version, excluded.package_version)
         RETURNING depot_id, product_id",
    )
    .bind(&rows)
    .fetch_all(c)
    .await?
    });
    let mut clients = clients_holding_at(tx, &changed).await?;
    clients.extend(clients_blocked_at(tx, &changed).await?);
    Ok((changed.len(), clients))
}

impl Store {
    /// Inserts or updates depots. A new depot picks up the clients that
    /// already name it. A host key another depot holds (or another depot of
    /// the same call) is refused: the key is how a depot is recognised.
    pub async fn upsert_depots(&self, depots: &[DepotRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, clients) = write_depots(&mut tx, depots).await?;
        finish(tx, affected, &clients).await
    }

    /// Deletes depots and what they held; their clients are left without a depot.
    pub async fn delete_depots(&self, ids: &[Fqdn]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let list = json_list(ids.iter().map(Fqdn::as_str));
        // A depot's own config and property states go with it, as in opsi
        // (a host's states are deleted with the host): they were its
        // clients' defaults again when it was registered anew, or a client
        // of its id got them as its own. Not a client's (an id given by
        // mistake, or held by both in rows of an older version, keeps its
        // states); a depot an older version deleted leaves its states, and
        // deleting it again clears them.
        let depots: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "SELECT value FROM json_each($1) WHERE value NOT IN (SELECT id FROM clients)"
        )
        .bind(&list)
        .fetch_all(c)
        .await?);
        let states = [
            ("config_states", "object_id"),
            ("product_property_states", "object_id"),
        ];
        delete_from(
            &mut tx,
            &json_list(depots.iter().map(String::as_str)),
            &states,
        )
        .await?;
        let tables = [
            ("depots", "id"),
            ("pushes", "depot_id"),
            ("product_on_depots", "depot_id"),
        ];
        let affected = delete_from(&mut tx, &list, &tables).await?;
        finish(tx, affected as usize, &[]).await
    }

    /// Every depot.
    pub async fn depots(&self) -> Result<Vec<DepotRecord>> {
        on!(self.reader(), |c| sqlx::query(
            "SELECT id, endpoint, host_key, description FROM depots ORDER BY id"
        )
        .fetch_all(c)
        .await?
        .iter()
        .map(rows::depot)
        .collect())
    }

    /// Inserts or updates clients; a changed MAC, UUID or host key re-pushes
    /// (an empty key keeps the stored one).
    /// A MAC or UUID another client holds is ALREADY_EXISTS.
    pub async fn upsert_clients(&self, clients: &[Client]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, touched) = write_clients(&mut tx, clients).await?;
        finish(tx, affected, &touched).await
    }

    /// Deletes clients with their states; configs they hold are removed.
    /// An id that is no client (a depot's) deletes nothing: a depot's
    /// states are its clients' defaults.
    pub async fn delete_clients(&self, ids: &[Fqdn]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let clients: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "SELECT id FROM clients WHERE id IN (SELECT value FROM json_each($1))"
        )
        .bind(json_list(ids.iter().map(Fqdn::as_str)))
        .fetch_all(c)
        .await?);
        let list = json_list(clients.iter().map(String::as_str));
        let tables = [("clients", "id"), ("product_on_clients", "client_id")];
        let mut affected = delete_from(&mut tx, &list, &tables).await?;
        // The states of an id that is a depot's too are the depot's, which
        // its clients inherit: they stay. (No write makes such a client
        // now; one an older version let in can be deleted this way.)
        let depots: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "SELECT id FROM depots WHERE id IN (SELECT value FROM json_each($1))"
        )
        .bind(&list)
        .fetch_all(c)
        .await?);
        let own = json_list(
            (clients.iter())
                .filter(|c| !depots.contains(c))
                .map(String::as_str),
        );
        let states = [
            ("config_states", "object_id"),
            ("product_property_states", "object_id"),
        ];
        affected += delete_from(&mut tx, &own, &states).await?;
        // Their push rows that owe nothing and leave nothing on a depot (read,
        // or removed) go now; those still owed go once delivered (`delivery`).
        on!(tx.conn(), |c| sqlx::query(
            "DELETE FROM pushes WHERE client_id IN (SELECT value FROM json_each($1))
               AND delivered_revision >= revision AND (op = 'remove' OR read_revision >= revision)"
        )
        .bind(&list)
        .execute(c)
        .await?
        .rows_affected());
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        finish(tx, affected as usize, &ids).await
    }

    /// Inserts or updates products; clients holding a config for one re-push.
    pub async fn upsert_products(&self, products: &[ProductRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, clients) = write_products(&mut tx, products).await?;
        finish(tx, affected, &clients).await
    }

    /// Deletes product versions.
    pub async fn delete_products(
        &self,
        keys: &[(ProductId, String, String)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(
            keys.iter()
                .map(|(id, pv, pkv)| [id.as_str(), pv.as_str(), pkv.as_str()]),
        );
        let deleted: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "DELETE FROM products WHERE (id, product_version, package_version) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1))
             RETURNING id",
        )
        .bind(rows)
        .fetch_all(c)
        .await?);
        // Blocked ones too: their reason may change to this one.
        let mut clients = clients_holding(&mut tx, &deleted).await?;
        clients.extend(clients_blocked_on(&mut tx, &deleted).await?);
        finish(tx, deleted.len(), &clients).await
    }

    /// Inserts or updates product-on-depots; that depot's clients re-push,
    /// and a client whose product was missing there is pushed now. The
    /// depot and the product version must exist.
    pub async fn upsert_product_on_depots(
        &self,
        pods: &[ProductOnDepotRecord],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, clients) = write_product_on_depots(&mut tx, pods).await?;
        finish(tx, affected, &clients).await
    }

    /// Deletes product-on-depots; configs for them are removed (the clients
    /// fail until the product is back).
    pub async fn delete_product_on_depots(
        &self,
        keys: &[(Fqdn, ProductId)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(keys.iter().map(|(d, p)| [d.as_str(), p.as_str()]));
        let deleted: Vec<(String, String)> = on!(tx.conn(), |c| sqlx::query_as(
            "DELETE FROM product_on_depots WHERE (depot_id, product_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each($1))
             RETURNING depot_id, product_id",
        )
        .bind(rows)
        .fetch_all(c)
        .await?);
        // Blocked ones too: their reason may change to this one.
        let mut clients = clients_holding_at(&mut tx, &deleted).await?;
        clients.extend(clients_blocked_at(&mut tx, &deleted).await?);
        finish(tx, deleted.len(), &clients).await
    }
}
