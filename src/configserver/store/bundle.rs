//! Collects everything a depot needs for a batch of clients in one read
//! transaction (one consistent snapshot, a fixed number of queries however
//! many clients): host, product-on-client, product-on-depot, the product in
//! the version on THAT depot, config states (the client's, else the
//! depot's, else the default, as opsi 4.3 resolves them), property states
//! with the depot's defaults. The PXE settings come from the one derivation
//! in `domain::opsi`, which the depot's legacy look-ups use too.

use std::collections::{BTreeMap, HashMap};

use sqlx::AssertSqlSafe;

use super::db::{Store, Tx, on};
use super::error::{Result, StoreError};
use super::records::PushOp;
use super::rows::{self, Get};
use super::sql::{from_json, json_list};
use crate::domain::opsi::{DEPOT_ID, PXE_CONFIGS, PxeSettings};
use crate::domain::{
    ActionRequest, Client, ClientBundle, Fqdn, Modules, NetbootProduct, ProductId, TemplateName,
};

/// Which push rows to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Rows owed to the depot (revision not yet delivered).
    Owed,
    /// Set rows the depot should hold (not read).
    Held,
}

/// What to send a depot for one client.
#[derive(Debug, Clone)]
pub enum Job {
    /// Write this config.
    Set(Box<ClientBundle>),
    /// Remove the client's config.
    Remove,
}

impl Job {
    /// Set or remove.
    pub fn op(&self) -> PushOp {
        match self {
            Job::Set(_) => PushOp::Set,
            Job::Remove => PushOp::Remove,
        }
    }
}

/// One client's loaded push.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The client.
    pub client_id: String,
    /// The revision to send.
    pub revision: u64,
    /// The job, or why no bundle can be built from the inventory now.
    pub job: Result<Job, String>,
    /// The W3C `traceparent` of the call that made the push owed (an admin
    /// write, a read report), stored when traces are exported: the push
    /// span's parent, so that one trace goes from that call to the depot.
    pub traceparent: Option<String>,
}

/// A push row to load a job for.
struct PushRow {
    client_id: String,
    op: PushOp,
    product_id: String,
    revision: u64,
    traceparent: Option<String>,
}

/// client → the client, or why its row does not parse.
type Hosts = HashMap<String, Result<Client>>;
/// (client, product) → action request.
type Actions = HashMap<(String, String), String>;
/// product → (product version, package version) on the depot.
type OnDepot = HashMap<String, (String, String)>;
/// (product, product version, package version) → template.
type Templates = HashMap<(String, String, String), String>;
/// PXE config → default values.
type Defaults = HashMap<String, Vec<String>>;
/// (client or depot, PXE config) → values.
type ConfigStates = HashMap<(String, String), Vec<String>>;
/// (client or depot, product) → property → values joined by `,`.
type Properties = HashMap<(String, String), BTreeMap<String, String>>;

/// What a batch's bundles are built from, read in one snapshot.
struct Snapshot {
    depot_id: String,
    depot: Option<Fqdn>,
    modules: Modules,
    hosts: Hosts,
    actions: Actions,
    on_depot: OnDepot,
    templates: Templates,
    defaults: Defaults,
    config_states: ConfigStates,
    properties: Properties,
}

impl Store {
    /// Loads the pushes of `clients` for `depot_id`; clients without a
    /// matching row are left out.
    pub async fn load_bundles(
        &self,
        depot_id: &str,
        clients: &[String],
        rows: Rows,
        modules: Modules,
    ) -> Result<Vec<Loaded>> {
        let mut tx = self.begin_read().await?;
        let list = json_list(clients);
        let pushes = push_rows(&mut tx, depot_id, &list, rows).await?;
        if pushes.is_empty() {
            return Ok(Vec::new());
        }
        let snapshot = Snapshot::read(&mut tx, depot_id, &list, modules).await?;
        tx.commit().await?;
        Ok(pushes
            .into_iter()
            .map(|p| Loaded {
                job: match p.op {
                    PushOp::Remove => Ok(Job::Remove),
                    PushOp::Set => snapshot.assemble(&p.client_id, &p.product_id, p.revision),
                },
                client_id: p.client_id,
                revision: p.revision,
                traceparent: p.traceparent,
            })
            .collect())
    }
}

/// The push rows of `list` (a JSON id list) for `depot_id`, in client order.
async fn push_rows(conn: &mut Tx, depot_id: &str, list: &str, rows: Rows) -> Result<Vec<PushRow>> {
    let condition = match rows {
        Rows::Owed => "revision > delivered_revision",
        Rows::Held => "op = 'set' AND read_revision < revision",
    };
    let sql = format!(
        "SELECT client_id, op, product_id, revision, traceparent FROM pushes
         WHERE depot_id = $1 AND client_id IN (SELECT value FROM json_each($2)) AND {condition}
         ORDER BY client_id"
    );
    type Found = (String, String, String, i64, Option<String>);
    let found: Vec<Found> = on!(conn.conn(), |c| sqlx::query_as(AssertSqlSafe(sql))
        .bind(depot_id)
        .bind(list)
        .fetch_all(c)
        .await?);
    found
        .into_iter()
        .map(|(client_id, op, product_id, revision, traceparent)| {
            Ok(PushRow {
                op: PushOp::parse(&op)
                    .ok_or_else(|| StoreError::corrupt("push", &client_id, format!("op {op:?}")))?,
                product_id,
                revision: revision.max(0) as u64,
                client_id,
                traceparent,
            })
        })
        .collect()
}

impl Snapshot {
    /// Reads what the clients of `list` (a JSON id list) need on `depot_id`.
    async fn read(conn: &mut Tx, depot_id: &str, list: &str, modules: Modules) -> Result<Self> {
        let (hosts, actions) = clients(conn, list).await?;
        let (on_depot, templates) = products(conn, depot_id).await?;
        let (defaults, config_states) = pxe_configs(conn, depot_id, list).await?;
        let properties = properties(conn, depot_id, list).await?;
        Ok(Self {
            depot_id: depot_id.to_owned(),
            depot: Fqdn::parse(depot_id, "depot_id").ok(),
            modules,
            hosts,
            actions,
            on_depot,
            templates,
            defaults,
            config_states,
            properties,
        })
    }

    /// A client's effective values of a config: its own, else those set on
    /// its depot (this one: a set is pushed to the client's depot), else the
    /// default; the depot id has no depot layer. The same rule as
    /// `rules::effective_values_sql`, which the legacy look-up answers from.
    fn value(&self, client: &str, config: &str) -> &[String] {
        let state = |object: &str| {
            self.config_states
                .get(&(object.to_owned(), config.to_owned()))
        };
        state(client)
            .or_else(|| {
                (config != DEPOT_ID)
                    .then(|| state(&self.depot_id))
                    .flatten()
            })
            .or_else(|| self.defaults.get(config))
            .map_or(&[], Vec::as_slice)
    }

    /// The bundle of `client_id` for `product_id`, or why there is none.
    fn assemble(&self, client_id: &str, product_id: &str, revision: u64) -> Result<Job, String> {
        let depot_id = &self.depot_id;
        let client = match self.hosts.get(client_id) {
            Some(Ok(c)) => c.clone(),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("client {client_id} does not exist")),
        };
        let key = (client_id.to_owned(), product_id.to_owned());
        let action = self
            .actions
            .get(&key)
            .and_then(|a| a.parse::<ActionRequest>().ok())
            .filter(|a| *a != ActionRequest::None)
            .ok_or_else(|| format!("{client_id} has no action request for {product_id}"))?;
        let (product_version, package_version) =
            self.on_depot.get(product_id).cloned().ok_or_else(|| {
                format!("product {product_id} is not installed on depot {depot_id}")
            })?;
        let version = (product_id.to_owned(), product_version, package_version);
        let template = self.templates.get(&version).ok_or_else(|| {
            format!(
                "product {product_id} {}-{} (the version on depot {depot_id}) is not registered",
                version.1, version.2
            )
        })?;
        let template = (!template.is_empty())
            .then(|| TemplateName::parse(template, "pxe_config_template"))
            .transpose()
            .map_err(|e| e.to_string())?;
        let settings = PxeSettings::derive(|config| self.value(client_id, config));
        let (_, product_version, package_version) = version;
        Ok(Job::Set(Box::new(ClientBundle {
            client,
            product: NetbootProduct {
                id: ProductId::parse(product_id, "product_id").map_err(|e| e.to_string())?,
                product_version,
                package_version,
                template,
            },
            action_request: action,
            depot_id: self.depot.clone(),
            service_address: settings.service_address,
            boot_mode: settings.boot_mode,
            bootimage_append: settings.bootimage_append,
            properties: self.properties_of(client_id, product_id),
            modules: self.modules,
            revision,
        })))
    }

    /// The client's property values of a product over the depot's.
    fn properties_of(&self, client_id: &str, product_id: &str) -> BTreeMap<String, String> {
        let depot = (self.depot_id.clone(), product_id.to_owned());
        let own = (client_id.to_owned(), product_id.to_owned());
        self.properties
            .get(&depot)
            .into_iter()
            .chain(self.properties.get(&own))
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }
}

/// The clients of `list` by id, and their action requests by (client, product).
async fn clients(conn: &mut Tx, list: &str) -> Result<(Hosts, Actions)> {
    let hosts = on!(conn.conn(), |c| sqlx::query(
        "SELECT * FROM clients WHERE id IN (SELECT value FROM json_each($1))"
    )
    .bind(list)
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| (r.text("id"), rows::client(r)))
    .collect());
    let actions: Vec<(String, String, String)> = on!(conn.conn(), |c| sqlx::query_as(
        "SELECT client_id, product_id, action_request FROM product_on_clients
         WHERE client_id IN (SELECT value FROM json_each($1))",
    )
    .bind(list)
    .fetch_all(c)
    .await?);
    let actions = actions.into_iter().map(|(c, p, a)| ((c, p), a)).collect();
    Ok((hosts, actions))
}

/// The product versions on `depot_id`, and the templates of those products.
async fn products(conn: &mut Tx, depot_id: &str) -> Result<(OnDepot, Templates)> {
    let on_depot: Vec<(String, String, String)> = on!(conn.conn(), |c| {
        sqlx::query_as(
        "SELECT product_id, product_version, package_version FROM product_on_depots WHERE depot_id = $1",
    )
    .bind(depot_id)
    .fetch_all(c)
    .await?
    });
    let on_depot = on_depot.into_iter().map(|(p, v, k)| (p, (v, k))).collect();
    let templates: Vec<(String, String, String, String)> = on!(conn.conn(), |c| sqlx::query_as(
        "SELECT id, product_version, package_version, pxe_config_template FROM products
         WHERE id IN (SELECT product_id FROM product_on_depots WHERE depot_id = $1)",
    )
    .bind(depot_id)
    .fetch_all(c)
    .await?);
    let templates = templates
        .into_iter()
        .map(|(id, v, k, t)| ((id, v, k), t))
        .collect();
    Ok((on_depot, templates))
}

/// The defaults of the PXE configs, and the values the clients of `list`
/// and `depot_id` have of their own. (One `IN` list, not `= ? OR IN`: with
/// the `OR` SQLite searches by config only, scanning every client's state.)
async fn pxe_configs(
    conn: &mut Tx,
    depot_id: &str,
    list: &str,
) -> Result<(Defaults, ConfigStates)> {
    let configs = json_list(PXE_CONFIGS);
    let defaults: Vec<(String, String)> = on!(conn.conn(), |c| sqlx::query_as(
        "SELECT id, default_values FROM configs WHERE id IN (SELECT value FROM json_each($1))",
    )
    .bind(&configs)
    .fetch_all(c)
    .await?);
    let defaults = defaults
        .into_iter()
        .map(|(id, values)| (id, from_json(&values)))
        .collect();
    let states: Vec<(String, String, String)> = on!(conn.conn(), |c| sqlx::query_as(
        "SELECT object_id, config_id, \"values\" FROM config_states
         WHERE config_id IN (SELECT value FROM json_each($1))
           AND object_id IN (SELECT $2 UNION ALL SELECT value FROM json_each($3))",
    )
    .bind(&configs)
    .bind(depot_id)
    .bind(list)
    .fetch_all(c)
    .await?);
    let states = states
        .into_iter()
        .map(|(object, config, values)| ((object, config), from_json(&values)))
        .collect();
    Ok((defaults, states))
}

/// The property values of `depot_id` and of the clients of `list`.
async fn properties(conn: &mut Tx, depot_id: &str, list: &str) -> Result<Properties> {
    let mut properties = Properties::new();
    // Depot rows first so that a client's own values overwrite them later.
    let found: Vec<(String, String, String, String)> = on!(conn.conn(), |c| sqlx::query_as(
        "SELECT object_id, product_id, property_id, \"values\" FROM product_property_states
         WHERE object_id = $1 OR object_id IN (SELECT value FROM json_each($2))
         ORDER BY object_id <> $1",
    )
    .bind(depot_id)
    .bind(list)
    .fetch_all(c)
    .await?);
    for (object, product, property, values) in found {
        properties
            .entry((object, product))
            .or_default()
            .insert(property, from_json(&values).join(","));
    }
    Ok(properties)
}
