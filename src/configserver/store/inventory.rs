//! Admin writes of the inventory's things: depots, clients, products and
//! the product versions on depots. Each is one transaction together with
//! the pushes it owes (see `triggers`).

use sqlx::AssertSqlSafe;

use super::checks::{Exists, require_all};
use super::db::{Store, WriteTx};
use super::error::{Result, StoreError};
use super::records::{DepotRecord, ProductOnDepotRecord, ProductRecord, WriteOutcome};
use super::rows;
use super::sql::{json_list, json_rows};
use super::triggers::{clients_holding, clients_holding_at, clients_naming_depots, finish};
use crate::domain::{Client, Fqdn, ProductId};

/// Deletes the rows of `ids` from each `(table, column)`; returns how many
/// rows of the first table went.
async fn delete_from(tx: &mut WriteTx, ids: &str, tables: &[(&str, &str)]) -> Result<u64> {
    let mut first = None;
    for (table, column) in tables {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))"
        )))
        .bind(ids)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        first.get_or_insert(rows);
    }
    Ok(first.unwrap_or(0))
}

impl Store {
    /// Inserts or updates depots. A new depot picks up the clients that
    /// already name it. A host key another depot holds (or another depot of
    /// the same call) is refused: the key is how a depot is recognised.
    pub async fn upsert_depots(&self, depots: &[DepotRecord]) -> Result<WriteOutcome> {
        let taken = |id: &str| StoreError::Duplicate {
            what: "depot",
            id: id.to_owned(),
            message: "its host_key is already another depot's".into(),
        };
        let mut keys = std::collections::HashMap::new();
        for d in depots {
            if let Some(other) = keys.insert(d.host_key.expose(), d.id.as_str())
                && other != d.id.as_str()
            {
                return Err(taken(d.id.as_str()));
            }
        }
        let mut tx = self.begin().await?;
        let rows = json_rows(depots.iter().map(|d| {
            [
                d.id.as_str(),
                d.endpoint.as_str(),
                d.host_key.expose(),
                d.description.as_str(),
            ]
        }));
        let clash: Option<String> = sqlx::query_scalar(
            "SELECT n.value ->> 0 FROM json_each(?) n
             WHERE EXISTS (SELECT 1 FROM depots d
               WHERE d.host_key = n.value ->> 2 AND d.id <> n.value ->> 0)
             LIMIT 1",
        )
        .bind(&rows)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = clash {
            return Err(taken(&id));
        }
        let changed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO depots (id, endpoint, host_key, description)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
             ON CONFLICT (id) DO UPDATE SET endpoint = excluded.endpoint,
               host_key = excluded.host_key, description = excluded.description
             WHERE (endpoint, host_key, description) IS NOT (excluded.endpoint, excluded.host_key, excluded.description)
             RETURNING id",
        )
        .bind(&rows)
        .fetch_all(&mut *tx)
        .await?;
        let clients = clients_naming_depots(&mut tx, &changed).await?;
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes depots and what they held; their clients are left without a depot.
    pub async fn delete_depots(&self, ids: &[Fqdn]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let list = json_list(ids.iter().map(Fqdn::as_str));
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
        sqlx::query("SELECT id, endpoint, host_key, description FROM depots ORDER BY id")
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(rows::depot)
            .collect()
    }

    /// Inserts or updates clients; a changed MAC, UUID or host key re-pushes.
    pub async fn upsert_clients(&self, clients: &[Client]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let texts: Vec<[String; 2]> = clients
            .iter()
            .map(|c| {
                [
                    c.mac.map(|m| m.to_string()).unwrap_or_default(),
                    c.uuid.as_ref().map(|u| u.to_string()).unwrap_or_default(),
                ]
            })
            .collect();
        let rows = json_rows(clients.iter().zip(&texts).map(|(c, [mac, uuid])| {
            [
                c.fqdn.as_str(),
                mac.as_str(),
                uuid.as_str(),
                c.ip_address.as_str(),
                c.host_key.expose(),
            ]
        }));
        let changed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO clients (id, hardware_address, system_uuid, ip_address, host_key)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?) WHERE true
             ON CONFLICT (id) DO UPDATE SET hardware_address = excluded.hardware_address,
               system_uuid = excluded.system_uuid, ip_address = excluded.ip_address,
               host_key = excluded.host_key
             WHERE (hardware_address, system_uuid, ip_address, host_key)
               IS NOT (excluded.hardware_address, excluded.system_uuid, excluded.ip_address, excluded.host_key)
             RETURNING id",
        )
        .bind(rows)
        .fetch_all(&mut *tx)
        .await?;
        finish(tx, changed.len(), &changed).await
    }

    /// Deletes clients with their states; configs they hold are removed.
    pub async fn delete_clients(&self, ids: &[Fqdn]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let list = json_list(ids.iter().map(Fqdn::as_str));
        let tables = [
            ("clients", "id"),
            ("product_on_clients", "client_id"),
            ("config_states", "object_id"),
            ("product_property_states", "object_id"),
        ];
        let affected = delete_from(&mut tx, &list, &tables).await?;
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        finish(tx, affected as usize, &ids).await
    }

    /// Inserts or updates products; clients holding a config for one re-push.
    pub async fn upsert_products(&self, products: &[ProductRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(products.iter().map(|p| {
            [
                p.id.as_str(),
                p.product_version.as_str(),
                p.package_version.as_str(),
                p.template.as_ref().map_or("", |t| t.as_str()),
            ]
        }));
        let changed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO products (id, product_version, package_version, pxe_config_template)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
             ON CONFLICT (id, product_version, package_version) DO UPDATE
               SET pxe_config_template = excluded.pxe_config_template
             WHERE pxe_config_template IS NOT excluded.pxe_config_template
             RETURNING id",
        )
        .bind(rows)
        .fetch_all(&mut *tx)
        .await?;
        let clients = clients_holding(&mut tx, &changed).await?;
        finish(tx, changed.len(), &clients).await
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
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM products WHERE (id, product_version, package_version) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?))
             RETURNING id",
        )
        .bind(rows)
        .fetch_all(&mut *tx)
        .await?;
        let clients = clients_holding(&mut tx, &deleted).await?;
        finish(tx, deleted.len(), &clients).await
    }

    /// Inserts or updates product-on-depots; that depot's clients re-push.
    /// The depot and the product version must exist.
    pub async fn upsert_product_on_depots(
        &self,
        pods: &[ProductOnDepotRecord],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        require_all(
            &mut tx,
            Exists::Depot,
            pods.iter().map(|p| p.depot_id.as_str()),
        )
        .await?;
        let rows = json_rows(pods.iter().map(|p| {
            [
                p.depot_id.as_str(),
                p.product_id.as_str(),
                p.product_version.as_str(),
                p.package_version.as_str(),
            ]
        }));
        let unknown: Option<String> = sqlx::query_scalar(
            "SELECT (value ->> 1) || ' ' || (value ->> 2) || '-' || (value ->> 3) FROM json_each(?)
             WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = value ->> 1
               AND p.product_version = value ->> 2 AND p.package_version = value ->> 3)
             LIMIT 1",
        )
        .bind(&rows)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = unknown {
            return Err(StoreError::NotFound {
                what: "product",
                id,
            });
        }
        let changed: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO product_on_depots (depot_id, product_id, product_version, package_version)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
             ON CONFLICT (depot_id, product_id) DO UPDATE
               SET product_version = excluded.product_version, package_version = excluded.package_version
             WHERE (product_version, package_version) IS NOT (excluded.product_version, excluded.package_version)
             RETURNING depot_id, product_id",
        )
        .bind(&rows)
        .fetch_all(&mut *tx)
        .await?;
        let clients = clients_holding_at(&mut tx, &changed).await?;
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes product-on-depots.
    pub async fn delete_product_on_depots(
        &self,
        keys: &[(Fqdn, ProductId)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(keys.iter().map(|(d, p)| [d.as_str(), p.as_str()]));
        let deleted: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM product_on_depots WHERE (depot_id, product_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING depot_id, product_id",
        )
        .bind(rows)
        .fetch_all(&mut *tx)
        .await?;
        let clients = clients_holding_at(&mut tx, &deleted).await?;
        finish(tx, deleted.len(), &clients).await
    }
}
