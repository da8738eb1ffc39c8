//! Admin writes of values: configs (their defaults), config states and
//! product property states. A change re-pushes only the clients whose PXE
//! config it touches; a depot's config state is the value of its clients
//! that have none of their own (opsi 4.3's precedence, see
//! `rules::effective_values_sql`). Each `write_*` works inside a given
//! transaction (an import runs them all in one).

use super::checks::{Exists, require_all};
use super::db::{Store, WriteTx, on};
use super::error::Result;
use super::inventory::Written;
use super::records::{ConfigRecord, ConfigStateRecord, PropertyStateRecord, WriteOutcome};
use super::sql::{json_list, json_rows, json_upsert_rows};
use super::touched::{clients_of_config_states, clients_of_properties, clients_using_defaults};
use super::triggers::finish;
use crate::domain::Fqdn;

/// Inserts or updates configs (defaults). A changed default of a PXE config
/// re-pushes every client that uses the default.
pub(super) async fn write_configs(tx: &mut WriteTx, configs: &[ConfigRecord]) -> Result<Written> {
    let defaults: Vec<String> = configs
        .iter()
        .map(|c| json_list(&c.default_values))
        .collect();
    let rows = json_upsert_rows(
        configs
            .iter()
            .zip(&defaults)
            .map(|(c, d)| [c.id.as_str(), d.as_str(), c.description.as_str()]),
        1,
    );
    let changed: Vec<String> = on!(tx.conn(), |c| {
        sqlx::query_scalar(
        "INSERT INTO configs (id, default_values, description)
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1) WHERE true
         ON CONFLICT (id) DO UPDATE SET default_values = excluded.default_values,
           description = excluded.description
         WHERE (configs.default_values, configs.description) IS DISTINCT FROM (excluded.default_values, excluded.description)
         RETURNING id",
    )
    .bind(rows)
    .fetch_all(c)
    .await?
    });
    let clients = clients_using_defaults(tx, &changed).await?;
    Ok((changed.len(), clients))
}

/// Sets config values of clients or depots (which must exist, as must the
/// config).
pub(super) async fn write_config_states(
    tx: &mut WriteTx,
    states: &[ConfigStateRecord],
) -> Result<Written> {
    let configs = states.iter().map(|s| s.config_id.as_str());
    require_all(tx, Exists::Config, configs).await?;
    let objects = states.iter().map(|s| s.object_id.as_str());
    require_all(tx, Exists::Object, objects).await?;
    let values: Vec<String> = states.iter().map(|s| json_list(&s.values)).collect();
    let rows = json_upsert_rows(
        states
            .iter()
            .zip(&values)
            .map(|(s, v)| [s.object_id.as_str(), s.config_id.as_str(), v.as_str()]),
        2,
    );
    let changed: Vec<(String, String)> = on!(tx.conn(), |c| sqlx::query_as(
        "INSERT INTO config_states (object_id, config_id, \"values\")
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1) WHERE true
         ON CONFLICT (object_id, config_id) DO UPDATE SET \"values\" = excluded.\"values\"
         WHERE config_states.\"values\" IS DISTINCT FROM excluded.\"values\"
         RETURNING object_id, config_id",
    )
    .bind(rows)
    .fetch_all(c)
    .await?);
    let clients = clients_of_config_states(tx, &changed).await?;
    Ok((changed.len(), clients))
}

/// Sets product property values of clients, or defaults of depots (the
/// object and the product must exist).
pub(super) async fn write_property_states(
    tx: &mut WriteTx,
    states: &[PropertyStateRecord],
) -> Result<Written> {
    let objects = states.iter().map(|s| s.object_id.as_str());
    require_all(tx, Exists::Object, objects).await?;
    let products = states.iter().map(|s| s.product_id.as_str());
    require_all(tx, Exists::Product, products).await?;
    let values: Vec<String> = states.iter().map(|s| json_list(&s.values)).collect();
    let rows = json_upsert_rows(
        states.iter().zip(&values).map(|(s, v)| {
            [
                s.object_id.as_str(),
                s.product_id.as_str(),
                s.property_id.as_str(),
                v.as_str(),
            ]
        }),
        3,
    );
    let changed: Vec<(String, String)> = on!(tx.conn(), |c| {
        sqlx::query_as(
        "INSERT INTO product_property_states (object_id, product_id, property_id, \"values\")
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1) WHERE true
         ON CONFLICT (object_id, product_id, property_id) DO UPDATE SET \"values\" = excluded.\"values\"
         WHERE product_property_states.\"values\" IS DISTINCT FROM excluded.\"values\"
         RETURNING object_id, product_id",
    )
    .bind(rows)
    .fetch_all(c)
    .await?
    });
    let clients = clients_of_properties(tx, &changed).await?;
    Ok((changed.len(), clients))
}

impl Store {
    /// Inserts or updates configs (defaults). A changed default of a PXE
    /// config re-pushes every client that uses the default.
    pub async fn upsert_configs(&self, configs: &[ConfigRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, clients) = write_configs(&mut tx, configs).await?;
        finish(tx, affected, &clients).await
    }

    /// Sets config values of clients or depots (which must exist, as must
    /// the config). A depot's value re-pushes its clients that use it.
    pub async fn upsert_config_states(&self, states: &[ConfigStateRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, clients) = write_config_states(&mut tx, states).await?;
        finish(tx, affected, &clients).await
    }

    /// Deletes config values of objects (the depot's value or the default
    /// applies again).
    pub async fn delete_config_states(&self, keys: &[(Fqdn, String)]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(keys.iter().map(|(o, c)| [o.as_str(), c.as_str()]));
        let deleted: Vec<(String, String)> = on!(tx.conn(), |c| sqlx::query_as(
            "DELETE FROM config_states WHERE (object_id, config_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each($1))
             RETURNING object_id, config_id",
        )
        .bind(rows)
        .fetch_all(c)
        .await?);
        let clients = clients_of_config_states(&mut tx, &deleted).await?;
        finish(tx, deleted.len(), &clients).await
    }

    /// Sets product property values of clients, or defaults of depots (the
    /// object and the product must exist).
    pub async fn upsert_property_states(
        &self,
        states: &[PropertyStateRecord],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let (affected, clients) = write_property_states(&mut tx, states).await?;
        finish(tx, affected, &clients).await
    }

    /// Deletes product property values.
    pub async fn delete_property_states(
        &self,
        keys: &[PropertyStateRecord],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows = json_rows(keys.iter().map(|s| {
            [
                s.object_id.as_str(),
                s.product_id.as_str(),
                s.property_id.as_str(),
            ]
        }));
        let deleted: Vec<(String, String)> = on!(tx.conn(), |c| sqlx::query_as(
            "DELETE FROM product_property_states WHERE (object_id, product_id, property_id) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1))
             RETURNING object_id, product_id",
        )
        .bind(rows)
        .fetch_all(c)
        .await?);
        let clients = clients_of_properties(&mut tx, &deleted).await?;
        finish(tx, deleted.len(), &clients).await
    }
}
