//! The inventory and the push outbox in SQLite (WAL). One writer connection
//! serialises writes; a small pool serves reads. Every admin write runs in
//! one transaction together with the pushes it causes (see `triggers`), so a
//! crash loses nothing and half a bulk never lands.
//!
//! Callers only see this module's methods and records: a PostgreSQL store
//! can implement the same surface later.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};

use super::triggers::{self, Owed};
use crate::domain::opsi::{DEPOT_ID, PXE_CONFIGS};
use crate::domain::{
    ActionRequest, Client, Fqdn, Mac, ProductId, Secret, SystemUuid, TemplateName,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database file's directory could not be created.
    #[error("database directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Something a request refers to does not exist.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// The kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A request would break the inventory's rules.
    #[error("{0}")]
    Conflict(String),
    /// Stored data that no longer parses (edited by hand?).
    #[error("stored {what} {id:?} is invalid: {message}")]
    Corrupt {
        /// The kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
        /// What is wrong.
        message: String,
    },
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A depot server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepotRecord {
    /// Its FQDN.
    pub id: Fqdn,
    /// Its gRPC URL.
    pub endpoint: String,
    /// The shared secret for calls both ways.
    pub host_key: Secret,
    /// Free text.
    pub description: String,
}

/// A netboot product in one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    /// Product id.
    pub id: ProductId,
    /// Product version.
    pub product_version: String,
    /// Package version.
    pub package_version: String,
    /// Its own PXE template, if any.
    pub template: Option<TemplateName>,
}

/// The version of a product on a depot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductOnDepotRecord {
    /// The depot.
    pub depot_id: Fqdn,
    /// The product.
    pub product_id: ProductId,
    /// Product version.
    pub product_version: String,
    /// Package version.
    pub package_version: String,
}

/// A config and its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRecord {
    /// Config id, e.g. `clientconfig.depot.id`.
    pub id: String,
    /// Default values.
    pub default_values: Vec<String>,
    /// Free text.
    pub description: String,
}

/// One object's values of one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStateRecord {
    /// The object (client).
    pub object_id: Fqdn,
    /// The config.
    pub config_id: String,
    /// Its values.
    pub values: Vec<String>,
}

/// One object's values of one product property (a depot's are defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyStateRecord {
    /// The client or depot.
    pub object_id: Fqdn,
    /// The product.
    pub product_id: ProductId,
    /// The property.
    pub property_id: String,
    /// Its values.
    pub values: Vec<String>,
}

/// A requested action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// The client.
    pub client_id: Fqdn,
    /// The netboot product.
    pub product_id: ProductId,
    /// The action.
    pub action: ActionRequest,
}

/// A product-on-client row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PocRecord {
    /// The client.
    pub client_id: String,
    /// The product.
    pub product_id: String,
    /// Action request.
    pub action_request: String,
    /// Action progress.
    pub action_progress: String,
    /// Installed product version.
    pub product_version: String,
    /// Installed package version.
    pub package_version: String,
}

/// What a write did.
#[derive(Debug, Default, Clone)]
pub struct WriteOutcome {
    /// Rows inserted, updated or deleted.
    pub affected: u64,
    /// Pushes now owed, for the dispatcher.
    pub owed: Vec<Owed>,
}

/// A push row as the dispatcher and status queries see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    /// The client.
    pub client_id: String,
    /// The depot.
    pub depot_id: String,
    /// `set` or `remove`.
    pub op: String,
    /// The product (for `set`).
    pub product_id: String,
    /// The wanted revision.
    pub revision: u64,
    /// The revision the depot acknowledged.
    pub delivered_revision: u64,
    /// The revision the client read.
    pub read_revision: u64,
    /// `new` or `legacy`.
    pub path: String,
    /// Failed attempts since the last success or change.
    pub attempts: u32,
    /// The last failure.
    pub last_error: String,
    /// When the next retry is due (ms since the epoch).
    pub next_attempt_at: Option<i64>,
    /// Last change (ms).
    pub updated_at: i64,
    /// Last delivery (ms).
    pub delivered_at: Option<i64>,
    /// The read (ms).
    pub read_at: Option<i64>,
}

/// The result of a push, recorded in batches.
#[derive(Debug, Clone)]
pub enum Ack {
    /// The depot holds (or removed) the revision.
    Delivered {
        /// The client.
        client_id: String,
        /// The depot.
        depot_id: String,
        /// The revision delivered.
        revision: u64,
        /// `new` or `legacy`.
        path: &'static str,
    },
    /// The push failed; retry later.
    Failed {
        /// The client.
        client_id: String,
        /// The depot.
        depot_id: String,
        /// The revision tried.
        revision: u64,
        /// Why.
        error: String,
        /// When the retry is due.
        next_attempt_at: SystemTime,
    },
}

/// The outcome of a read report.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// The action request now.
    pub action_request: String,
    /// The config was pushed again (`always`).
    pub repushed: bool,
    /// The report changed something.
    pub applied: bool,
    /// Pushes now owed.
    pub owed: Vec<Owed>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// A time as milliseconds since the epoch.
pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch as a time.
pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Values as stored: a JSON array.
pub(crate) fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// A stored JSON array of strings.
pub(crate) fn from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Rows (tuples) as a JSON array of arrays, for `json_each(?)` with `value ->> i`.
pub(crate) fn json_rows<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())
}

/// The clients among changed `(object, config)` pairs whose config is one a
/// PXE config depends on.
fn pxe_relevant(changed: &[(String, String)]) -> Vec<String> {
    changed
        .iter()
        .filter(|(_, config)| PXE_CONFIGS.contains(&config.as_str()))
        .map(|(object, _)| object.clone())
        .collect()
}

/// The tail of every admin write: the pushes the change owes, in the same
/// transaction, then the commit.
async fn finish(
    mut tx: Transaction<'static, Sqlite>,
    affected: usize,
    clients: &[String],
) -> Result<WriteOutcome> {
    let owed = triggers::reconcile(&mut tx, clients).await?;
    tx.commit().await?;
    Ok(WriteOutcome {
        affected: affected as u64,
        owed,
    })
}

/// A list of ids for `json_each(?)`.
pub(crate) fn id_list<S: AsRef<str>>(ids: &[S]) -> String {
    serde_json::to_string(&ids.iter().map(AsRef::as_ref).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

/// The SQLite store.
#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        // One writer: SQLite takes one at a time anyway, and queueing in the
        // pool is cheaper than SQLITE_BUSY retries.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { write, read })
    }

    /// The read pool.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.read
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin().await?)
    }

    // ---- depots -------------------------------------------------------

    /// Inserts or updates depots. A new depot picks up the clients that
    /// already name it.
    pub async fn upsert_depots(&self, depots: &[DepotRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = depots
            .iter()
            .map(|d| {
                (
                    d.id.as_str(),
                    &d.endpoint,
                    d.host_key.expose(),
                    &d.description,
                )
            })
            .collect();
        let changed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO depots (id, endpoint, host_key, description)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
             ON CONFLICT (id) DO UPDATE SET endpoint = excluded.endpoint,
               host_key = excluded.host_key, description = excluded.description
             WHERE (endpoint, host_key, description) IS NOT (excluded.endpoint, excluded.host_key, excluded.description)
             RETURNING id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<&str> = changed.iter().map(String::as_str).collect();
        let clients = triggers::clients_naming_depots(&mut tx, &ids).await?;
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes depots and what they held; their clients are left without a depot.
    pub async fn delete_depots(&self, ids: &[Fqdn]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let list = id_list(ids);
        let mut affected = 0;
        for table in ["depots", "pushes", "product_on_depots"] {
            let column = if table == "depots" { "id" } else { "depot_id" };
            let rows = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))"
            )))
            .bind(&list)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if table == "depots" {
                affected = rows;
            }
        }
        finish(tx, affected as usize, &[]).await
    }

    /// Every depot.
    pub async fn depots(&self) -> Result<Vec<DepotRecord>> {
        let rows =
            sqlx::query("SELECT id, endpoint, host_key, description FROM depots ORDER BY id")
                .fetch_all(&self.read)
                .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get("id");
                Ok(DepotRecord {
                    id: Fqdn::parse(&id, "id").map_err(|e| corrupt("depot", &id, e))?,
                    endpoint: r.get("endpoint"),
                    host_key: Secret::new(r.get::<String, _>("host_key")),
                    description: r.get("description"),
                })
            })
            .collect()
    }

    // ---- clients ------------------------------------------------------

    /// Inserts or updates clients; a changed MAC, UUID or host key re-pushes.
    pub async fn upsert_clients(&self, clients: &[Client]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = clients
            .iter()
            .map(|c| {
                (
                    c.fqdn.as_str(),
                    c.mac.map(|m| m.to_string()).unwrap_or_default(),
                    c.uuid.as_ref().map(|u| u.to_string()).unwrap_or_default(),
                    &c.ip_address,
                    c.host_key.expose(),
                )
            })
            .collect();
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
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        finish(tx, changed.len(), &changed).await
    }

    /// Deletes clients with their states; configs they hold are removed.
    pub async fn delete_clients(&self, ids: &[Fqdn]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let list = id_list(ids);
        let mut affected = 0;
        for (table, column) in [
            ("clients", "id"),
            ("product_on_clients", "client_id"),
            ("config_states", "object_id"),
            ("product_property_states", "object_id"),
        ] {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))"
            )))
            .bind(&list)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if table == "clients" {
                affected = rows;
            }
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        finish(tx, affected as usize, &ids).await
    }

    // ---- products -----------------------------------------------------

    /// Inserts or updates products; clients holding a config for one re-push.
    pub async fn upsert_products(&self, products: &[ProductRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = products
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    &p.product_version,
                    &p.package_version,
                    p.template.as_ref().map(|t| t.as_str()).unwrap_or(""),
                )
            })
            .collect();
        let changed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO products (id, product_version, package_version, pxe_config_template)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
             ON CONFLICT (id, product_version, package_version) DO UPDATE
               SET pxe_config_template = excluded.pxe_config_template
             WHERE pxe_config_template IS NOT excluded.pxe_config_template
             RETURNING id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = triggers::clients_holding(&mut tx, &changed).await?;
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes product versions.
    pub async fn delete_products(
        &self,
        keys: &[(ProductId, String, String)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = keys
            .iter()
            .map(|(id, pv, pkv)| (id.as_str(), pv, pkv))
            .collect();
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM products WHERE (id, product_version, package_version) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?))
             RETURNING id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = triggers::clients_holding(&mut tx, &deleted).await?;
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
            "depot",
            pods.iter().map(|p| p.depot_id.as_str()),
            DEPOT_EXISTS,
        )
        .await?;
        let rows: Vec<_> = pods
            .iter()
            .map(|p| {
                (
                    p.depot_id.as_str(),
                    p.product_id.as_str(),
                    &p.product_version,
                    &p.package_version,
                )
            })
            .collect();
        let rows = json_rows(&rows);
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
        let clients = triggers::clients_holding_at(&mut tx, &changed).await?;
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes product-on-depots.
    pub async fn delete_product_on_depots(
        &self,
        keys: &[(Fqdn, ProductId)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = keys.iter().map(|(d, p)| (d.as_str(), p.as_str())).collect();
        let deleted: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM product_on_depots WHERE (depot_id, product_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING depot_id, product_id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = triggers::clients_holding_at(&mut tx, &deleted).await?;
        finish(tx, deleted.len(), &clients).await
    }

    // ---- configs ------------------------------------------------------

    /// Inserts or updates configs (defaults). A changed default of a PXE
    /// config re-pushes every client that uses the default.
    pub async fn upsert_configs(&self, configs: &[ConfigRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = configs
            .iter()
            .map(|c| (&c.id, to_json(&c.default_values), &c.description))
            .collect();
        let changed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO configs (id, default_values, description)
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
             ON CONFLICT (id) DO UPDATE SET default_values = excluded.default_values,
               description = excluded.description
             WHERE (default_values, description) IS NOT (excluded.default_values, excluded.description)
             RETURNING id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let mut clients = Vec::new();
        for id in changed
            .iter()
            .filter(|id| PXE_CONFIGS.contains(&id.as_str()))
        {
            clients.extend(triggers::clients_using_default(&mut tx, id).await?);
        }
        finish(tx, changed.len(), &clients).await
    }

    /// Sets config values of clients or depots (which must exist, as must
    /// the config).
    pub async fn upsert_config_states(&self, states: &[ConfigStateRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        require_all(
            &mut tx,
            "config",
            states.iter().map(|s| s.config_id.as_str()),
            CONFIG_EXISTS,
        )
        .await?;
        require_all(
            &mut tx,
            "client or depot",
            states.iter().map(|s| s.object_id.as_str()),
            OBJECT_EXISTS,
        )
        .await?;
        let rows: Vec<_> = states
            .iter()
            .map(|s| (s.object_id.as_str(), &s.config_id, to_json(&s.values)))
            .collect();
        let changed: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO config_states (object_id, config_id, \"values\")
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
             ON CONFLICT (object_id, config_id) DO UPDATE SET \"values\" = excluded.\"values\"
             WHERE \"values\" IS NOT excluded.\"values\"
             RETURNING object_id, config_id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = pxe_relevant(&changed);
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes config values of objects (the defaults apply again).
    pub async fn delete_config_states(&self, keys: &[(Fqdn, String)]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = keys.iter().map(|(o, c)| (o.as_str(), c)).collect();
        let deleted: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM config_states WHERE (object_id, config_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING object_id, config_id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = pxe_relevant(&deleted);
        finish(tx, deleted.len(), &clients).await
    }

    /// Sets product property values of clients, or defaults of depots (the
    /// object and the product must exist).
    pub async fn upsert_property_states(
        &self,
        states: &[PropertyStateRecord],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        require_all(
            &mut tx,
            "client or depot",
            states.iter().map(|s| s.object_id.as_str()),
            OBJECT_EXISTS,
        )
        .await?;
        require_all(
            &mut tx,
            "product",
            states.iter().map(|s| s.product_id.as_str()),
            PRODUCT_EXISTS,
        )
        .await?;
        let rows: Vec<_> = states
            .iter()
            .map(|s| {
                (
                    s.object_id.as_str(),
                    s.product_id.as_str(),
                    &s.property_id,
                    to_json(&s.values),
                )
            })
            .collect();
        let changed: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO product_property_states (object_id, product_id, property_id, \"values\")
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
             ON CONFLICT (object_id, product_id, property_id) DO UPDATE SET \"values\" = excluded.\"values\"
             WHERE \"values\" IS NOT excluded.\"values\"
             RETURNING object_id, product_id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = self.property_clients(&mut tx, &changed).await?;
        finish(tx, changed.len(), &clients).await
    }

    /// Deletes product property values.
    pub async fn delete_property_states(
        &self,
        keys: &[PropertyStateRecord],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = keys
            .iter()
            .map(|s| (s.object_id.as_str(), s.product_id.as_str(), &s.property_id))
            .collect();
        let deleted: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM product_property_states WHERE (object_id, product_id, property_id) IN
               (SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?))
             RETURNING object_id, product_id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        let clients = self.property_clients(&mut tx, &deleted).await?;
        finish(tx, deleted.len(), &clients).await
    }

    /// The clients whose config a property change touches: a client's own,
    /// or, for a depot's defaults, every client holding a config there.
    async fn property_clients(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        changed: &[(String, String)],
    ) -> Result<Vec<String>> {
        let depots: HashSet<String> = sqlx::query_scalar("SELECT id FROM depots")
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        let (at_depots, of_clients): (Vec<_>, Vec<_>) = changed
            .iter()
            .cloned()
            .partition(|(object, _)| depots.contains(object));
        let mut clients = triggers::clients_holding_at(tx, &at_depots).await?;
        clients.extend(of_clients.into_iter().map(|(client, _)| client));
        Ok(clients)
    }

    // ---- actions ------------------------------------------------------

    /// Sets netboot action requests. A client boots one product: setting an
    /// action clears its other netboot action requests. Unknown clients or
    /// products fail the whole call.
    pub async fn set_action_requests(&self, actions: &[ActionRecord]) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        require_all(
            &mut tx,
            "client",
            actions.iter().map(|a| a.client_id.as_str()),
            CLIENT_EXISTS,
        )
        .await?;
        require_all(
            &mut tx,
            "product",
            actions.iter().map(|a| a.product_id.as_str()),
            PRODUCT_EXISTS,
        )
        .await?;
        // A client boots one netboot product: within the request the last
        // action wins, and setting one clears the client's others.
        let mut last_active: HashMap<&str, &str> = HashMap::new();
        for a in actions.iter().filter(|a| a.action != ActionRequest::None) {
            last_active.insert(a.client_id.as_str(), a.product_id.as_str());
        }
        let mut rows: Vec<(&str, &str, &str)> = Vec::with_capacity(actions.len());
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        for a in actions {
            let (c, p) = (a.client_id.as_str(), a.product_id.as_str());
            let action = match last_active.get(c) {
                Some(winner) if *winner != p => "none",
                _ => a.action.as_str(),
            };
            match index.get(&(c, p)) {
                Some(&i) => rows[i].2 = action,
                None => {
                    index.insert((c, p), rows.len());
                    rows.push((c, p, action));
                }
            }
        }
        let active: Vec<&str> = last_active.keys().copied().collect();
        sqlx::query(
            "UPDATE product_on_clients SET action_request = 'none'
             WHERE action_request <> 'none' AND client_id IN (SELECT value FROM json_each(?))",
        )
        .bind(id_list(&active))
        .execute(&mut *tx)
        .await?;
        let base = triggers::allocate_revisions(&mut tx, rows.len() as u64).await?;
        sqlx::query(
            "INSERT INTO product_on_clients (client_id, product_id, action_request, action_progress, modified)
             SELECT value ->> 0, value ->> 1, value ->> 2, '', ?2 + key FROM json_each(?1) WHERE true
             ON CONFLICT (client_id, product_id) DO UPDATE SET action_request = excluded.action_request,
               action_progress = '', modified = excluded.modified",
        )
        .bind(serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into()))
        .bind(base as i64)
        .execute(&mut *tx)
        .await?;
        let touched: Vec<String> = rows.iter().map(|r| r.0.to_owned()).collect();
        finish(tx, rows.len(), &touched).await
    }

    /// Deletes product-on-clients; configs for them are removed.
    pub async fn delete_product_on_clients(
        &self,
        keys: &[(Fqdn, ProductId)],
    ) -> Result<WriteOutcome> {
        let mut tx = self.begin().await?;
        let rows: Vec<_> = keys.iter().map(|(c, p)| (c.as_str(), p.as_str())).collect();
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM product_on_clients WHERE (client_id, product_id) IN
               (SELECT value ->> 0, value ->> 1 FROM json_each(?))
             RETURNING client_id",
        )
        .bind(json_rows(&rows))
        .fetch_all(&mut *tx)
        .await?;
        finish(tx, deleted.len(), &deleted).await
    }

    // ---- delivery -----------------------------------------------------

    /// Records push results, all in one transaction.
    pub async fn record_acks(&self, acks: &[Ack]) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let now = now_ms();
        for ack in acks {
            match ack {
                Ack::Delivered {
                    client_id,
                    depot_id,
                    revision,
                    path,
                } => {
                    sqlx::query(
                        "UPDATE pushes SET delivered_revision = max(delivered_revision, ?1), delivered_at = ?2,
                           path = ?3,
                           attempts = CASE WHEN revision = ?1 THEN 0 ELSE attempts END,
                           last_error = CASE WHEN revision = ?1 THEN '' ELSE last_error END,
                           next_attempt_at = CASE WHEN revision = ?1 THEN NULL ELSE next_attempt_at END
                         WHERE client_id = ?4 AND depot_id = ?5",
                    )
                    .bind(*revision as i64)
                    .bind(now)
                    .bind(*path)
                    .bind(client_id)
                    .bind(depot_id)
                    .execute(&mut *tx)
                    .await?;
                }
                Ack::Failed {
                    client_id,
                    depot_id,
                    revision,
                    error,
                    next_attempt_at,
                } => {
                    sqlx::query(
                        "UPDATE pushes SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?
                         WHERE client_id = ? AND depot_id = ? AND revision = ?",
                    )
                    .bind(error)
                    .bind(to_ms(*next_attempt_at))
                    .bind(client_id)
                    .bind(depot_id)
                    .bind(*revision as i64)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The depot saw the TFTP read of `revision`: progress is recorded, the
    /// action request becomes `none` unless it is `always` (then the config
    /// is pushed again). Stale or repeated reports change nothing.
    pub async fn report_read(
        &self,
        depot_id: &str,
        client_id: &str,
        product_id: &str,
        revision: u64,
    ) -> Result<ReadOutcome> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT op, product_id, revision, read_revision FROM pushes WHERE client_id = ? AND depot_id = ?",
        )
        .bind(client_id)
        .bind(depot_id)
        .fetch_optional(&mut *tx)
        .await?;
        let current_action = |action: Option<String>| action.unwrap_or_else(|| "none".into());
        let poc_action: Option<String> = sqlx::query_scalar(
            "SELECT action_request FROM product_on_clients WHERE client_id = ? AND product_id = ?",
        )
        .bind(client_id)
        .bind(product_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ReadOutcome {
                action_request: current_action(poc_action),
                ..Default::default()
            });
        };
        let op: String = row.get("op");
        let row_product: String = row.get("product_id");
        let row_revision = row.get::<i64, _>("revision") as u64;
        let read_revision = row.get::<i64, _>("read_revision") as u64;
        let fresh = op == "set"
            && row_product == product_id
            && revision == row_revision
            && read_revision < revision;
        if !fresh {
            return Ok(ReadOutcome {
                action_request: current_action(poc_action),
                ..Default::default()
            });
        }
        let now = now_ms();
        sqlx::query(
            "UPDATE pushes SET read_revision = ?1, read_at = ?2,
               delivered_revision = max(delivered_revision, ?1),
               delivered_at = coalesce(delivered_at, ?2)
             WHERE client_id = ?3 AND depot_id = ?4",
        )
        .bind(revision as i64)
        .bind(now)
        .bind(client_id)
        .bind(depot_id)
        .execute(&mut *tx)
        .await?;
        let always = poc_action.as_deref() == Some("always");
        sqlx::query(
            "UPDATE product_on_clients SET action_progress = 'pxe boot configuration read',
               action_request = CASE WHEN action_request = 'always' THEN 'always' ELSE 'none' END
             WHERE client_id = ? AND product_id = ?",
        )
        .bind(client_id)
        .bind(product_id)
        .execute(&mut *tx)
        .await?;
        let owed = if always {
            triggers::reconcile(&mut tx, &[client_id.to_owned()]).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(ReadOutcome {
            action_request: if always {
                "always".into()
            } else {
                "none".into()
            },
            repushed: !owed.is_empty(),
            applied: true,
            owed,
        })
    }

    /// The clients owed a push by `depot`, in client order.
    pub async fn owed_clients(&self, depot_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT client_id FROM pushes WHERE depot_id = ? AND revision > delivered_revision ORDER BY client_id",
        )
        .bind(depot_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// The clients whose config `depot` should hold now (set, not read).
    pub async fn held_clients(&self, depot_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT client_id FROM pushes WHERE depot_id = ? AND op = 'set' AND read_revision < revision
             ORDER BY client_id",
        )
        .bind(depot_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// Push rows of one client.
    pub async fn pushes_of_client(&self, client_id: &str) -> Result<Vec<PushRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM pushes WHERE client_id = ? ORDER BY updated_at DESC, depot_id",
        )
        .bind(client_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(push_record).collect())
    }

    /// Push rows owed to `depot` or delivered and unread, after `after`.
    pub async fn pending_of_depot(
        &self,
        depot_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<PushRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM pushes WHERE depot_id = ? AND client_id > ?
               AND (revision > delivered_revision OR (op = 'set' AND read_revision < revision))
             ORDER BY client_id LIMIT ?",
        )
        .bind(depot_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(push_record).collect())
    }

    /// Per depot: pushes owed, and configs delivered and not read.
    pub async fn depot_counts(&self) -> Result<HashMap<String, (u64, u64)>> {
        let rows = sqlx::query(
            "SELECT depot_id,
               sum(revision > delivered_revision) AS owed,
               sum(op = 'set' AND delivered_revision >= revision AND read_revision < revision) AS delivered
             FROM pushes GROUP BY depot_id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("depot_id"),
                    (
                        r.get::<i64, _>("owed") as u64,
                        r.get::<i64, _>("delivered") as u64,
                    ),
                )
            })
            .collect())
    }

    // ---- look-ups -----------------------------------------------------

    /// A client.
    pub async fn client(&self, id: &str) -> Result<Option<Client>> {
        let row = sqlx::query("SELECT * FROM clients WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| client_from_row(&r)).transpose()
    }

    /// The product-on-clients of a client; with `active`, only those with an
    /// action request.
    pub async fn product_on_clients(
        &self,
        client_id: &str,
        active: bool,
    ) -> Result<Vec<PocRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM product_on_clients WHERE client_id = ?
               AND (? = 0 OR action_request <> 'none')
             ORDER BY modified DESC, product_id",
        )
        .bind(client_id)
        .bind(active)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PocRecord {
                client_id: r.get("client_id"),
                product_id: r.get("product_id"),
                action_request: r.get("action_request"),
                action_progress: r.get("action_progress"),
                product_version: r.get("product_version"),
                package_version: r.get("package_version"),
            })
            .collect())
    }

    /// The version of a product on a depot.
    pub async fn product_on_depot(
        &self,
        depot_id: &str,
        product_id: &str,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT product_version, package_version FROM product_on_depots WHERE depot_id = ? AND product_id = ?",
        )
        .bind(depot_id)
        .bind(product_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// A product in one version.
    pub async fn product(
        &self,
        id: &str,
        product_version: &str,
        package_version: &str,
    ) -> Result<Option<ProductRecord>> {
        let row = sqlx::query(
            "SELECT pxe_config_template FROM products WHERE id = ? AND product_version = ? AND package_version = ?",
        )
        .bind(id)
        .bind(product_version)
        .bind(package_version)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let template: String = r.get(0);
            Ok(ProductRecord {
                id: ProductId::parse(id, "id").map_err(|e| corrupt("product", id, e))?,
                product_version: product_version.to_owned(),
                package_version: package_version.to_owned(),
                template: (!template.is_empty())
                    .then(|| TemplateName::parse(&template, "pxe_config_template"))
                    .transpose()
                    .map_err(|e| corrupt("product", id, e))?,
            })
        })
        .transpose()
    }

    /// A client's effective values of `config_ids`: its own, else the defaults.
    pub async fn config_values(
        &self,
        client_id: &str,
        config_ids: &[&str],
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let rows = sqlx::query(
            "SELECT c.id, coalesce(s.\"values\", c.default_values) AS v
             FROM configs c LEFT JOIN config_states s ON s.config_id = c.id AND s.object_id = ?
             WHERE c.id IN (SELECT value FROM json_each(?))",
        )
        .bind(client_id)
        .bind(id_list(config_ids))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), from_json(&r.get::<String, _>(1))))
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
        let rows = sqlx::query(
            "SELECT property_id, \"values\", object_id = ? AS own FROM product_property_states
             WHERE product_id = ? AND object_id IN (?, ?) ORDER BY own",
        )
        .bind(client_id)
        .bind(product_id)
        .bind(client_id)
        .bind(depot_id)
        .fetch_all(&self.read)
        .await?;
        let mut out = BTreeMap::new();
        // Depot rows sort first, so the client's own values overwrite them.
        for r in rows {
            out.insert(
                r.get::<String, _>(0),
                from_json(&r.get::<String, _>(1)).join(","),
            );
        }
        Ok(out)
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

    /// Whether a depot exists.
    pub async fn depot_exists(&self, depot_id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM depots WHERE id = ?")
            .bind(depot_id)
            .fetch_optional(&self.read)
            .await?
            .is_some())
    }
}

fn corrupt(what: &'static str, id: &str, e: crate::domain::ValidationError) -> StoreError {
    StoreError::Corrupt {
        what,
        id: id.to_owned(),
        message: e.to_string(),
    }
}

/// A stored client row as a domain client.
pub(crate) fn client_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Client> {
    let id: String = r.get("id");
    let mac: String = r.get("hardware_address");
    let uuid: String = r.get("system_uuid");
    let bad = |e| corrupt("client", &id, e);
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

fn push_record(r: &sqlx::sqlite::SqliteRow) -> PushRecord {
    PushRecord {
        client_id: r.get("client_id"),
        depot_id: r.get("depot_id"),
        op: r.get("op"),
        product_id: r.get("product_id"),
        revision: r.get::<i64, _>("revision") as u64,
        delivered_revision: r.get::<i64, _>("delivered_revision") as u64,
        read_revision: r.get::<i64, _>("read_revision") as u64,
        path: r.get("path"),
        attempts: r.get::<i64, _>("attempts") as u32,
        last_error: r.get("last_error"),
        next_attempt_at: r.get("next_attempt_at"),
        updated_at: r.get("updated_at"),
        delivered_at: r.get("delivered_at"),
        read_at: r.get("read_at"),
    }
}

/// `EXISTS` tests on `j.value` for `require_all`.
const CLIENT_EXISTS: &str = "EXISTS (SELECT 1 FROM clients t WHERE t.id = j.value)";
const DEPOT_EXISTS: &str = "EXISTS (SELECT 1 FROM depots t WHERE t.id = j.value)";
const PRODUCT_EXISTS: &str = "EXISTS (SELECT 1 FROM products t WHERE t.id = j.value)";
const CONFIG_EXISTS: &str = "EXISTS (SELECT 1 FROM configs t WHERE t.id = j.value)";
const OBJECT_EXISTS: &str = "(EXISTS (SELECT 1 FROM clients t WHERE t.id = j.value)
    OR EXISTS (SELECT 1 FROM depots t WHERE t.id = j.value))";

/// Fails with NOT_FOUND naming the first of `ids` for which `exists` (an SQL
/// test on `j.value`) is false.
async fn require_all(
    tx: &mut Transaction<'static, Sqlite>,
    what: &'static str,
    ids: impl IntoIterator<Item = &str>,
    exists: &str,
) -> Result<()> {
    let unique: Vec<&str> = ids
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let missing: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT j.value FROM json_each(?) j WHERE NOT {exists} ORDER BY j.value LIMIT 1"
    )))
    .bind(id_list(&unique))
    .fetch_optional(&mut **tx)
    .await?;
    match missing {
        Some(id) => Err(StoreError::NotFound { what, id }),
        None => Ok(()),
    }
}
