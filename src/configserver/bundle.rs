//! Collects everything a depot needs for a batch of clients in one read
//! transaction (one consistent snapshot, a fixed number of queries however
//! many clients): host, product-on-client, product-on-depot, the product in
//! the version on THAT depot, config states with defaults, property states
//! with the depot's defaults.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AssertSqlSafe, Row};

use super::store::{Result, Store, client_from_row, from_json, id_list};
use crate::domain::opsi::{PXE_CONFIGS, PxeSettings};
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

/// One client's loaded push.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The client.
    pub client_id: String,
    /// The revision to send.
    pub revision: u64,
    /// The job, or why no bundle can be built from the inventory now.
    pub job: Result<Job, String>,
}

/// Loads the pushes of `clients` for `depot_id`; clients without a matching
/// row are left out.
pub async fn load(
    store: &Store,
    depot_id: &str,
    clients: &[String],
    rows: Rows,
    modules: Modules,
) -> Result<Vec<Loaded>> {
    let mut tx = store.reader().begin().await?;
    let list = id_list(clients);
    let condition = match rows {
        Rows::Owed => "revision > delivered_revision",
        Rows::Held => "op = 'set' AND read_revision < revision",
    };
    let push_rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT client_id, op, product_id, revision FROM pushes
         WHERE depot_id = ? AND client_id IN (SELECT value FROM json_each(?)) AND {condition}
         ORDER BY client_id"
    )))
    .bind(depot_id)
    .bind(&list)
    .fetch_all(&mut *tx)
    .await?;
    if push_rows.is_empty() {
        return Ok(Vec::new());
    }
    let hosts: HashMap<String, Result<Client>> =
        sqlx::query("SELECT * FROM clients WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&list)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get::<String, _>("id"), client_from_row(r)))
            .collect();
    let actions: HashMap<(String, String), String> = sqlx::query(
        "SELECT client_id, product_id, action_request FROM product_on_clients
         WHERE client_id IN (SELECT value FROM json_each(?))",
    )
    .bind(&list)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
    .collect();
    let on_depot: HashMap<String, (String, String)> = sqlx::query(
        "SELECT product_id, product_version, package_version FROM product_on_depots WHERE depot_id = ?",
    )
    .bind(depot_id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    let templates: HashMap<(String, String, String), String> = sqlx::query(
        "SELECT id, product_version, package_version, pxe_config_template FROM products
         WHERE id IN (SELECT product_id FROM product_on_depots WHERE depot_id = ?)",
    )
    .bind(depot_id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
    .collect();
    let defaults: HashMap<String, Vec<String>> = sqlx::query(
        "SELECT id, default_values FROM configs WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(id_list(&PXE_CONFIGS))
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| (r.get(0), from_json(&r.get::<String, _>(1))))
    .collect();
    let mut config_states: HashMap<(String, String), Vec<String>> = HashMap::new();
    for r in sqlx::query(
        "SELECT object_id, config_id, \"values\" FROM config_states
         WHERE config_id IN (SELECT value FROM json_each(?)) AND object_id IN (SELECT value FROM json_each(?))",
    )
    .bind(id_list(&PXE_CONFIGS))
    .bind(&list)
    .fetch_all(&mut *tx)
    .await?
    {
        config_states.insert((r.get(0), r.get(1)), from_json(&r.get::<String, _>(2)));
    }
    let mut properties: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    // Depot rows first so that a client's own values overwrite them below.
    for r in sqlx::query(
        "SELECT object_id, product_id, property_id, \"values\" FROM product_property_states
         WHERE object_id = ?1 OR object_id IN (SELECT value FROM json_each(?2))
         ORDER BY object_id <> ?1",
    )
    .bind(depot_id)
    .bind(&list)
    .fetch_all(&mut *tx)
    .await?
    {
        properties
            .entry((r.get(0), r.get(1)))
            .or_default()
            .insert(r.get(2), from_json(&r.get::<String, _>(3)).join(","));
    }
    tx.commit().await?;

    let depot = Fqdn::parse(depot_id, "depot_id").ok();
    let value = |client: &str, config: &str| -> &[String] {
        config_states
            .get(&(client.to_owned(), config.to_owned()))
            .or_else(|| defaults.get(config))
            .map_or(&[], Vec::as_slice)
    };
    let mut out = Vec::with_capacity(push_rows.len());
    for r in push_rows {
        let client_id: String = r.get("client_id");
        let op: String = r.get("op");
        let revision = r.get::<i64, _>("revision") as u64;
        let job = if op == "remove" {
            Ok(Job::Remove)
        } else {
            let product_id: String = r.get("product_id");
            assemble(
                &client_id,
                &product_id,
                revision,
                depot_id,
                depot.as_ref(),
                &hosts,
                &actions,
                &on_depot,
                &templates,
                &properties,
                &value,
                modules,
            )
        };
        out.push(Loaded {
            client_id,
            revision,
            job,
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn assemble<'a>(
    client_id: &str,
    product_id: &str,
    revision: u64,
    depot_id: &str,
    depot: Option<&Fqdn>,
    hosts: &HashMap<String, Result<Client>>,
    actions: &HashMap<(String, String), String>,
    on_depot: &HashMap<String, (String, String)>,
    templates: &HashMap<(String, String, String), String>,
    properties: &HashMap<(String, String), BTreeMap<String, String>>,
    value: &dyn Fn(&str, &str) -> &'a [String],
    modules: Modules,
) -> Result<Job, String> {
    let client = match hosts.get(client_id) {
        Some(Ok(c)) => c.clone(),
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err(format!("client {client_id} does not exist")),
    };
    let action = actions
        .get(&(client_id.to_owned(), product_id.to_owned()))
        .and_then(|a| a.parse::<ActionRequest>().ok())
        .filter(|a| *a != ActionRequest::None)
        .ok_or_else(|| format!("{client_id} has no action request for {product_id}"))?;
    let (product_version, package_version) = on_depot
        .get(product_id)
        .cloned()
        .ok_or_else(|| format!("product {product_id} is not installed on depot {depot_id}"))?;
    let template = templates
        .get(&(product_id.to_owned(), product_version.clone(), package_version.clone()))
        .ok_or_else(|| {
            format!("product {product_id} {product_version}-{package_version} (the version on depot {depot_id}) is not registered")
        })?;
    let template = (!template.is_empty())
        .then(|| TemplateName::parse(template, "pxe_config_template"))
        .transpose()
        .map_err(|e| e.to_string())?;
    let settings = PxeSettings::derive(|config| value(client_id, config));
    Ok(Job::Set(Box::new(ClientBundle {
        client,
        product: NetbootProduct {
            id: ProductId::parse(product_id, "product_id").map_err(|e| e.to_string())?,
            product_version,
            package_version,
            template,
        },
        action_request: action,
        depot_id: depot.cloned(),
        service_address: settings.service_address,
        boot_mode: settings.boot_mode,
        bootimage_append: settings.bootimage_append,
        properties: properties
            .get(&(depot_id.to_owned(), product_id.to_owned()))
            .into_iter()
            .chain(properties.get(&(client_id.to_owned(), product_id.to_owned())))
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect(),
        modules,
        revision,
    })))
}
