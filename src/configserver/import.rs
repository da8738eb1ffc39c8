//! `Admin.ImportInventory`: the parts of a client stream joined section by
//! section, validated once (items numbered across the parts), written in one
//! transaction; then, unless it was a dry run, the depots' keys and workers
//! refreshed and the pushes queued.

use std::sync::Arc;

use tonic::Streaming;
use tracing::info;

use super::core::{Core, to_the_end};
use super::error::Error;
use super::store::{DepotRecord, Inventory};
use crate::domain::limits::{MAX_IMPORT_BYTES, MAX_IMPORT_ITEMS};
use crate::domain::{Client, ValidationError};
use crate::proto;
use crate::wire::convert_up_to;

/// Appends `part` to `all`, failing when a section outgrows [`MAX_IMPORT_ITEMS`].
fn join(
    all: &mut proto::ImportInventoryRequest,
    part: proto::ImportInventoryRequest,
) -> Result<(), Error> {
    let too_many = |name: &str, len: usize| {
        if len > MAX_IMPORT_ITEMS {
            Err(Error::from(ValidationError::new(
                name,
                format!("more than {MAX_IMPORT_ITEMS} items in one import"),
            )))
        } else {
            Ok(())
        }
    };
    macro_rules! extend {
        ($($section:ident),*) => {$(
            all.$section.extend(part.$section);
            too_many(stringify!($section), all.$section.len())?;
        )*};
    }
    extend!(
        configs,
        depots,
        products,
        product_on_depots,
        clients,
        config_states,
        product_property_states,
        action_requests
    );
    all.dry_run |= part.dry_run;
    Ok(())
}

/// The joined request, validated; a bad item is named `section[i].field`.
fn validate(r: proto::ImportInventoryRequest) -> Result<Inventory, ValidationError> {
    Ok(Inventory {
        configs: convert_up_to(r.configs, MAX_IMPORT_ITEMS, "configs", TryFrom::try_from)?,
        depots: convert_up_to(r.depots, MAX_IMPORT_ITEMS, "depots", DepotRecord::try_from)?,
        products: convert_up_to(r.products, MAX_IMPORT_ITEMS, "products", TryFrom::try_from)?,
        product_on_depots: convert_up_to(
            r.product_on_depots,
            MAX_IMPORT_ITEMS,
            "product_on_depots",
            TryFrom::try_from,
        )?,
        clients: convert_up_to(r.clients, MAX_IMPORT_ITEMS, "clients", Client::try_from)?,
        config_states: convert_up_to(
            r.config_states,
            MAX_IMPORT_ITEMS,
            "config_states",
            TryFrom::try_from,
        )?,
        property_states: convert_up_to(
            r.product_property_states,
            MAX_IMPORT_ITEMS,
            "product_property_states",
            TryFrom::try_from,
        )?,
        actions: convert_up_to(
            r.action_requests,
            MAX_IMPORT_ITEMS,
            "action_requests",
            TryFrom::try_from,
        )?,
    })
}

/// Reads the stream, writes the inventory in one transaction and answers
/// with the counts.
pub(super) async fn import(
    core: &Arc<Core>,
    mut parts: Streaming<proto::ImportInventoryRequest>,
) -> Result<proto::ImportInventoryResponse, tonic::Status> {
    let mut all = proto::ImportInventoryRequest::default();
    let mut bytes = 0usize;
    while let Some(part) = parts.message().await? {
        bytes = bytes.saturating_add(prost::Message::encoded_len(&part));
        if bytes > MAX_IMPORT_BYTES {
            return Err(Error::from(ValidationError::new(
                "import",
                format!(
                    "more than {} MiB in one import; import in several calls",
                    MAX_IMPORT_BYTES >> 20
                ),
            ))
            .into());
        }
        join(&mut all, part)?;
    }
    let dry_run = all.dry_run;
    let inventory = validate(all).map_err(Error::from)?;
    core.keys
        .refuse_admin_key(&inventory.depots, "depots")
        .map_err(Error::from)?;
    let core = Arc::clone(core);
    let (outcome, pushes_queued) = to_the_end(async move {
        let mut outcome = core.store.import_inventory(&inventory, dry_run).await?;
        let owed = std::mem::take(&mut outcome.write.owed);
        let pushes_queued = owed.len() as u64;
        if !dry_run {
            core.refresh_keys_after_write().await;
            for depot in inventory.depots {
                core.dispatcher.depot_upserted(depot).await;
            }
            core.dispatcher.notify(owed).await;
        }
        Ok((outcome, pushes_queued))
    })
    .await?;
    info!(
        dry_run,
        affected = outcome.write.affected,
        pushes = pushes_queued,
        waiting = outcome.write.waiting,
        "inventory imported"
    );
    Ok(proto::ImportInventoryResponse {
        sections: outcome
            .sections
            .into_iter()
            .map(|(section, items, affected)| proto::ImportedSection {
                section: section.to_owned(),
                items,
                affected,
            })
            .collect(),
        affected: outcome.write.affected,
        pushes_queued,
        dry_run,
        waiting: outcome.write.waiting,
    })
}
