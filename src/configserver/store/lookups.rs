//! The reads behind the legacy look-ups a depot makes one by one (and the
//! operators' status queries): a client, its product-on-clients, a product
//! on a depot, a product version, config and property values.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use super::db::{Store, on};
use super::error::{Result, StoreError};
use super::records::{PocRecord, ProductRecord};
use super::rows;
use super::rules::{NEWEST_ACTION_FIRST, effective_values_sql};
use super::sql::{from_json, json_list};
use crate::domain::opsi::DEPOT_ID;
use crate::domain::{Client, Fqdn, ProductId, TemplateName};

impl Store {
    /// A client.
    pub async fn client(&self, id: &str) -> Result<Option<Client>> {
        on!(self.reader(), |c| sqlx::query(
            "SELECT * FROM clients WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(c)
        .await?
        .map(|r| rows::client(&r))
        .transpose())
    }

    /// The product-on-clients of a client; with `active`, only those with an
    /// action request.
    pub async fn product_on_clients(
        &self,
        client_id: &str,
        active: bool,
    ) -> Result<Vec<PocRecord>> {
        // Newest action first: a legacy depot boots the first one, the very
        // product the new path's bundle is for. The active ones are a text
        // of their own: its condition is the partial index's
        // (`product_on_clients_newest`), which a `$2 = 0 OR …` hides.
        let condition = if active {
            "AND action_request <> 'none'"
        } else {
            ""
        };
        let sql = format!(
            "SELECT * FROM product_on_clients WHERE client_id = $1 {condition}
             {NEWEST_ACTION_FIRST}"
        );
        Ok(on!(self.reader(), |c| sqlx::query(AssertSqlSafe(sql))
            .bind(client_id)
            .fetch_all(c)
            .await?
            .iter()
            .map(rows::product_on_client)
            .collect()))
    }

    /// The version of a product on a depot.
    pub async fn product_on_depot(
        &self,
        depot_id: &str,
        product_id: &str,
    ) -> Result<Option<(String, String)>> {
        Ok(on!(self.reader(), |c| {
            sqlx::query_as(
            "SELECT product_version, package_version FROM product_on_depots WHERE depot_id = $1 AND product_id = $2",
        )
        .bind(depot_id)
        .bind(product_id)
        .fetch_optional(c)
        .await?
        }))
    }

    /// A product in one version.
    pub async fn product(
        &self,
        id: &str,
        product_version: &str,
        package_version: &str,
    ) -> Result<Option<ProductRecord>> {
        let template: Option<String> = on!(self.reader(), |c| {
            sqlx::query_scalar(
            "SELECT pxe_config_template FROM products WHERE id = $1 AND product_version = $2 AND package_version = $3",
        )
        .bind(id)
        .bind(product_version)
        .bind(package_version)
        .fetch_optional(c)
        .await?
        });
        let Some(template) = template else {
            return Ok(None);
        };
        let bad = |e| StoreError::corrupt("product", id, e);
        Ok(Some(ProductRecord {
            id: ProductId::parse(id, "id").map_err(bad)?,
            product_version: product_version.to_owned(),
            package_version: package_version.to_owned(),
            template: (!template.is_empty())
                .then(|| TemplateName::parse(&template, "pxe_config_template"))
                .transpose()
                .map_err(bad)?,
        }))
    }

    /// A client's effective values of `config_ids`: its own, else its
    /// depot's, else the defaults (opsi 4.3). The legacy `GetConfigStates`
    /// answers with these, so a legacy depot derives what a bundle carries.
    pub async fn config_values(
        &self,
        client_id: &str,
        config_ids: &[&str],
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let sql = format!(
            "SELECT c.id, {} AS v FROM configs c
             WHERE c.id IN (SELECT value FROM json_each($2))",
            effective_values_sql("$1", "c.id")
        );
        let list = json_list(config_ids);
        let rows: Vec<(String, String)> =
            on!(self.reader(), |c| sqlx::query_as(AssertSqlSafe(sql))
                .bind(client_id)
                .bind(&list)
                .fetch_all(c)
                .await?);
        Ok(rows
            .into_iter()
            .map(|(id, values)| (id, from_json(&values)))
            .collect())
    }

    /// A client's product property values, the depot's values as defaults,
    /// each joined by `,`.
    pub async fn property_values(
        &self,
        client_id: &str,
        product_id: &str,
        depot_id: &str,
    ) -> Result<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> = on!(self.reader(), |c| sqlx::query_as(
            "SELECT property_id, \"values\" FROM product_property_states
             WHERE product_id = $2 AND object_id IN ($3, $4) ORDER BY object_id = $1",
        )
        .bind(client_id)
        .bind(product_id)
        .bind(client_id)
        .bind(depot_id)
        .fetch_all(c)
        .await?);
        // Depot rows sort first, so the client's own values overwrite them.
        Ok(rows
            .into_iter()
            .map(|(property, values)| (property, from_json(&values).join(",")))
            .collect())
    }

    /// The depot a client belongs to (its state, else the default), if any.
    pub async fn depot_of(&self, client_id: &str) -> Result<Option<String>> {
        let values = self.config_values(client_id, &[DEPOT_ID]).await?;
        Ok(values
            .get(DEPOT_ID)
            .and_then(|v| v.first())
            .filter(|d| !d.is_empty())
            .cloned())
    }

    /// Whether `client_id` exists and belongs to `depot_id` (its
    /// `clientconfig.depot.id`, else the default, read as an FQDN): one
    /// query, as the legacy look-ups ask it each time.
    pub async fn is_client_of(&self, client_id: &str, depot_id: &str) -> Result<bool> {
        let depot: Option<Option<String>> = on!(self.reader(), |c| {
            sqlx::query_scalar(
            "SELECT coalesce(
               (SELECT s.\"values\" FROM config_states s WHERE s.object_id = c.id AND s.config_id = $2),
               (SELECT g.default_values FROM configs g WHERE g.id = $2)) ->> 0
             FROM clients c WHERE c.id = $1",
        )
        .bind(client_id)
        .bind(DEPOT_ID)
        .fetch_optional(c)
        .await?
        });
        Ok(depot
            .flatten()
            .and_then(|d| Fqdn::parse(&d, DEPOT_ID).ok())
            .is_some_and(|d| d.as_str() == depot_id))
    }

    /// Whether a depot exists.
    pub async fn depot_exists(&self, depot_id: &str) -> Result<bool> {
        Ok(on!(self.reader(), |c| sqlx::query(
            "SELECT 1 FROM depots WHERE id = $1"
        )
        .bind(depot_id)
        .fetch_optional(c)
        .await?
        .is_some()))
    }
}
