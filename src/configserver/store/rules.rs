//! opsi's rules as SQL, one place for every query that needs them: which of
//! a client's netboot actions its PXE config is for, its depot, and its
//! effective config values.

use crate::domain::opsi::DEPOT_ID;

/// The order of a client's product-on-clients: the most recently set action
/// first (`modified` is the action sequence). The bundle assembly
/// (`triggers::desired`), the legacy look-up (`GetNetbootProductOnClients`, whose
/// first answer a legacy depot boots) and the status all use it, so both
/// paths push the same product: the one rule for which of a client's
/// netboot actions its PXE config is for.
pub(super) const NEWEST_ACTION_FIRST: &str = "ORDER BY modified DESC, product_id";

/// SQL for the product a client's PXE config is for: of its netboot
/// products with an action, the most recently set; `{client}` is the
/// client id column.
pub(super) fn active_product_sql(client: &str) -> String {
    format!(
        "(SELECT p.product_id FROM product_on_clients p
          WHERE p.client_id = {client} AND p.action_request <> 'none'
          {NEWEST_ACTION_FIRST} LIMIT 1)"
    )
}

/// SQL for a client's effective depot id; `{client}` is the client column.
pub(super) fn effective_depot_sql(client: &str) -> String {
    format!(
        "(coalesce(
            (SELECT s.\"values\" FROM config_states s WHERE s.object_id = {client} AND s.config_id = '{DEPOT_ID}'),
            (SELECT default_values FROM configs WHERE id = '{DEPOT_ID}')) ->> 0)"
    )
}

/// SQL for a client's effective values (a JSON list) of a config, as opsi
/// 4.3 resolves them (`configState_getValues`, opsiconfd
/// `backend/rpc/obj_config_state.py` @ 4.3.24.1 l.40–84): the client's own
/// config state, else the state set on the client's depot, else the
/// config's default. The depot id itself has no depot layer.
pub(super) fn effective_values_sql(client: &str, config: &str) -> String {
    format!(
        "coalesce(
            (SELECT s.\"values\" FROM config_states s WHERE s.object_id = {client} AND s.config_id = {config}),
            CASE WHEN {config} <> '{DEPOT_ID}' THEN
              (SELECT s.\"values\" FROM config_states s WHERE s.object_id = {depot} AND s.config_id = {config}) END,
            (SELECT default_values FROM configs WHERE id = {config}))",
        depot = effective_depot_sql(client)
    )
}
