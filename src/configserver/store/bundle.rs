//! Collects everything a depot needs for a batch of clients in one
//! statement (one consistent snapshot, one round trip to the database
//! however many clients — on an idle system a push is mostly round trips):
//! the push rows, host, and — of the pushed product only — product-on-client,
//! product-on-depot, the product in the version on THAT depot and the
//! property states with the depot's defaults; config states (the client's,
//! else the depot's, else the default, as opsi 4.3 resolves them). The PXE
//! settings come from the one derivation in `domain::opsi`, which the
//! depot's legacy look-ups use too.

use std::collections::{BTreeMap, HashMap};

use sqlx::AssertSqlSafe;

use super::db::{Store, on};
use super::error::{Result, StoreError};
use super::records::PushOp;
use super::rows;
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
        let list = json_list(clients);
        let (pushes, snapshot) =
            Snapshot::read(self, depot_id, (&list, clients.len()), rows, modules).await?;
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

/// Every part of a snapshot as rows of one shape: the part, then up to five
/// texts (the revision of a push as text; a push's traceparent may be NULL).
/// `$1` is the depot, `$2` the clients (a JSON list), `$3` the PXE configs;
/// `{condition}` picks the push rows (`owed`). What a bundle needs of a
/// product — the action, the version on the depot, the template, the
/// property states — is read from the push rows by key, for their products
/// only (`pushed`): a site's depot holds hundreds of products with dozens of
/// properties each, and a client has many localboot products, none of which
/// a netboot bundle uses. The CTEs are materialised (SQLite would fold `owed`
/// into each use and look the push rows up four times), and each part reads
/// from them first (`CROSS JOIN` keeps that order in SQLite; with a plain join
/// its planner scanned `products` and the depot's property states instead).
const SNAPSHOT_SQL: &str = "
WITH owed AS MATERIALIZED (
  SELECT client_id, op, product_id, revision, traceparent FROM pushes
  WHERE depot_id = $1 AND client_id IN (SELECT value FROM json_each($2)) AND {condition}
), pushed AS MATERIALIZED (SELECT DISTINCT product_id FROM owed)
SELECT 'push' AS part, client_id AS a, op AS b, product_id AS c, CAST(revision AS TEXT) AS d,
       traceparent AS e
  FROM owed
UNION ALL
SELECT 'client', id, hardware_address, system_uuid, ip_address, host_key
  FROM clients WHERE id IN (SELECT value FROM json_each($2))
UNION ALL
SELECT 'action', c.client_id, c.product_id, c.action_request, '', ''
  FROM owed o CROSS JOIN product_on_clients c
  WHERE c.client_id = o.client_id AND c.product_id = o.product_id
UNION ALL
SELECT 'on_depot', d.product_id, d.product_version, d.package_version, '', ''
  FROM pushed p CROSS JOIN product_on_depots d
  WHERE d.depot_id = $1 AND d.product_id = p.product_id
UNION ALL
SELECT 'template', r.id, r.product_version, r.package_version, r.pxe_config_template, ''
  FROM pushed p CROSS JOIN products r WHERE r.id = p.product_id
UNION ALL
SELECT 'default', id, default_values, '', '', ''
  FROM configs WHERE id IN (SELECT value FROM json_each($3))
UNION ALL
SELECT 'config', object_id, config_id, \"values\", '', ''
  FROM config_states
  WHERE config_id IN (SELECT value FROM json_each($3))
    AND object_id IN (SELECT $1 UNION ALL SELECT value FROM json_each($2))
UNION ALL
SELECT 'property', s.object_id, s.product_id, s.property_id, s.\"values\", ''
  FROM pushed p CROSS JOIN product_property_states s
  WHERE s.object_id = $1 AND s.product_id = p.product_id
UNION ALL
SELECT 'property', s.object_id, s.product_id, s.property_id, s.\"values\", ''
  FROM owed o CROSS JOIN product_property_states s
  WHERE s.object_id = o.client_id AND s.product_id = o.product_id
";

/// [`SNAPSHOT_SQL`] for `rows`.
fn snapshot_sql(rows: Rows) -> String {
    let condition = match rows {
        Rows::Owed => "revision > delivered_revision",
        Rows::Held => "op = 'set' AND read_revision < revision",
    };
    SNAPSHOT_SQL.replace("{condition}", condition)
}

/// Loads of at most this many clients may run on the writer's connection.
const SMALL_LOAD: usize = 16;

/// One row of [`SNAPSHOT_SQL`].
type Part = (String, String, String, String, String, Option<String>);

/// [`SNAPSHOT_SQL`]'s rows on one of the store's own SQLite connections.
fn parts(
    conn: &rusqlite::Connection,
    sql: &str,
    depot_id: &str,
    list: &str,
    configs: &str,
) -> Result<Vec<Part>> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(
        rusqlite::named_params! {"$1": depot_id, "$2": list, "$3": configs},
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Snapshot {
    /// Reads the push rows of `list` (a JSON id list, and how many ids it
    /// holds) for `depot_id`, in client order, and what those clients need
    /// on `depot_id`.
    async fn read(
        store: &Store,
        depot_id: &str,
        (list, clients): (&str, usize),
        rows: Rows,
        modules: Modules,
    ) -> Result<(Vec<PushRow>, Self)> {
        let sql = snapshot_sql(rows);
        let configs = json_list(PXE_CONFIGS);
        // A few clients' bundles from the writer's connection when it is
        // free: it has just written their rows and its page cache is
        // valid, while a read connection's whole cache is void after any
        // other connection's commit (SQLite's WAL) and the load reads its
        // ~30 pages again — 138 against 283 µs of a trickle's load
        // (docs/BENCHMARKS.md, tenth pass). On the calling thread if it can
        // (`Native::run_here`): a small load needs no hand-off.
        let writer = store
            .native_writer()
            .filter(|w| clients <= SMALL_LOAD && w.idle());
        let here = writer.map(|w| w.run_here(|conn| parts(conn, &sql, depot_id, list, &configs)));
        let connections = writer.or_else(|| store.native_readers());
        let parts: Vec<Part> = match (here, connections) {
            (Some(Ok(parts)), _) => parts?,
            (_, Some(connections)) => {
                let (depot, list) = (depot_id.to_owned(), list.to_owned());
                connections
                    .run(move |conn| parts(conn, &sql, &depot, &list, &configs))
                    .await?
            }
            (_, None) => on!(store.reader(), |p| sqlx::query_as(AssertSqlSafe(sql))
                .bind(depot_id)
                .bind(list)
                .bind(&configs)
                .fetch_all(p)
                .await?),
        };
        let mut pushes = Vec::new();
        let mut snapshot = Self {
            depot_id: depot_id.to_owned(),
            depot: Fqdn::parse(depot_id, "depot_id").ok(),
            modules,
            hosts: Hosts::new(),
            actions: Actions::new(),
            on_depot: OnDepot::new(),
            templates: Templates::new(),
            defaults: Defaults::new(),
            config_states: ConfigStates::new(),
            properties: Properties::new(),
        };
        for (part, a, b, c, d, e) in parts {
            match part.as_str() {
                "push" => pushes.push(push_row(a, b, c, &d, e)?),
                "client" => {
                    let client = rows::client_of(&a, &b, &c, d, e.unwrap_or_default());
                    snapshot.hosts.insert(a, client);
                }
                "action" => {
                    snapshot.actions.insert((a, b), c);
                }
                "on_depot" => {
                    snapshot.on_depot.insert(a, (b, c));
                }
                "template" => {
                    snapshot.templates.insert((a, b, c), d);
                }
                "default" => {
                    snapshot.defaults.insert(a, from_json(&b));
                }
                "config" => {
                    snapshot.config_states.insert((a, b), from_json(&c));
                }
                "property" => {
                    // Keyed by object: a client's values and its depot's
                    // stay apart, the client's laid over the depot's later.
                    let values = from_json(&d).join(",");
                    snapshot
                        .properties
                        .entry((a, b))
                        .or_default()
                        .insert(c, values);
                }
                other => {
                    let what = format!("a snapshot row of part {other:?}");
                    return Err(StoreError::corrupt("depot", depot_id, what));
                }
            }
        }
        pushes.sort_by(|x, y| x.client_id.cmp(&y.client_id));
        Ok((pushes, snapshot))
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

/// A push row from its part of the snapshot.
fn push_row(
    client_id: String,
    op: String,
    product_id: String,
    revision: &str,
    traceparent: Option<String>,
) -> Result<PushRow> {
    let corrupt = |what: String| StoreError::corrupt("push", &client_id, what);
    Ok(PushRow {
        op: PushOp::parse(&op).ok_or_else(|| corrupt(format!("op {op:?}")))?,
        product_id,
        revision: revision
            .parse::<i64>()
            .map_err(|_| corrupt(format!("revision {revision:?}")))?
            .max(0) as u64,
        traceparent,
        client_id,
    })
}
