//! A whole inventory written in one transaction: every section in
//! dependency order, the pushes it owes reconciled once at the end, and
//! either committed or, for a dry run, rolled back after counting.

use super::actions::write_actions;
use super::db::Store;
use super::error::Result;
use super::inventory::{write_clients, write_depots, write_product_on_depots, write_products};
use super::records::{
    ActionRecord, ConfigRecord, ConfigStateRecord, DepotRecord, ProductOnDepotRecord,
    ProductRecord, PropertyStateRecord, WriteOutcome,
};
use super::states::{write_config_states, write_configs, write_property_states};
use super::triggers::settle;
use crate::domain::Client;

/// An inventory to import, validated.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    /// Configs and their defaults.
    pub configs: Vec<ConfigRecord>,
    /// Depots.
    pub depots: Vec<DepotRecord>,
    /// Netboot products, one per version.
    pub products: Vec<ProductRecord>,
    /// The product versions on depots.
    pub product_on_depots: Vec<ProductOnDepotRecord>,
    /// Clients.
    pub clients: Vec<Client>,
    /// Config states of clients and depots.
    pub config_states: Vec<ConfigStateRecord>,
    /// Product property states of clients and depots.
    pub property_states: Vec<PropertyStateRecord>,
    /// Netboot action requests, oldest first.
    pub actions: Vec<ActionRecord>,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default, Clone)]
pub struct ImportOutcome {
    /// Per section in write order: its name, items and rows affected.
    pub sections: Vec<(&'static str, u64, u64)>,
    /// All rows affected, and the pushes owed.
    pub write: WriteOutcome,
}

impl Store {
    /// Writes `inventory` in one transaction, all or nothing; with
    /// `dry_run`, counts what would change and owe, then rolls back.
    pub async fn import_inventory(
        &self,
        inventory: &Inventory,
        dry_run: bool,
    ) -> Result<ImportOutcome> {
        let inv = inventory;
        let mut tx = self.begin().await?;
        let mut sections = Vec::with_capacity(8);
        let mut touched = Vec::new();
        let mut note =
            |name: &'static str, items: usize, (affected, clients): (usize, Vec<String>)| {
                sections.push((name, items as u64, affected as u64));
                touched.extend(clients);
            };
        note(
            "configs",
            inv.configs.len(),
            write_configs(&mut tx, &inv.configs).await?,
        );
        note(
            "depots",
            inv.depots.len(),
            write_depots(&mut tx, &inv.depots).await?,
        );
        note(
            "products",
            inv.products.len(),
            write_products(&mut tx, &inv.products).await?,
        );
        note(
            "product_on_depots",
            inv.product_on_depots.len(),
            write_product_on_depots(&mut tx, &inv.product_on_depots).await?,
        );
        note(
            "clients",
            inv.clients.len(),
            write_clients(&mut tx, &inv.clients).await?,
        );
        note(
            "config_states",
            inv.config_states.len(),
            write_config_states(&mut tx, &inv.config_states).await?,
        );
        note(
            "product_property_states",
            inv.property_states.len(),
            write_property_states(&mut tx, &inv.property_states).await?,
        );
        note(
            "action_requests",
            inv.actions.len(),
            write_actions(&mut tx, &inv.actions).await?,
        );
        let affected = sections.iter().map(|s| s.2 as usize).sum();
        let write = settle(tx, affected, &touched, !dry_run).await?;
        Ok(ImportOutcome { sections, write })
    }
}
