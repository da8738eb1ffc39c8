//! Existence checks inside a write: a request naming something that does
//! not exist fails whole, with NOT_FOUND naming the first missing id.

use std::collections::BTreeSet;

use sqlx::AssertSqlSafe;

use super::db::{Tx, on};
use super::error::{Result, StoreError};
use super::sql::json_list;

/// What must exist, as an SQL test on `j.value`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Exists {
    /// A client.
    Client,
    /// A depot.
    Depot,
    /// A product (in any version).
    Product,
    /// A config.
    Config,
    /// A client or a depot.
    Object,
}

impl Exists {
    fn sql(self) -> &'static str {
        match self {
            Exists::Client => "EXISTS (SELECT 1 FROM clients t WHERE t.id = j.value)",
            Exists::Depot => "EXISTS (SELECT 1 FROM depots t WHERE t.id = j.value)",
            Exists::Product => "EXISTS (SELECT 1 FROM products t WHERE t.id = j.value)",
            Exists::Config => "EXISTS (SELECT 1 FROM configs t WHERE t.id = j.value)",
            Exists::Object => {
                "(EXISTS (SELECT 1 FROM clients t WHERE t.id = j.value)
                  OR EXISTS (SELECT 1 FROM depots t WHERE t.id = j.value))"
            }
        }
    }

    /// How NOT_FOUND names the kind.
    fn what(self) -> &'static str {
        match self {
            Exists::Client => "client",
            Exists::Depot => "depot",
            Exists::Product => "product",
            Exists::Config => "config",
            Exists::Object => "client or depot",
        }
    }
}

/// Fails with NOT_FOUND naming the first (in sort order) of `ids` that is
/// not an existing `kind`.
pub(super) async fn require_all<'a>(
    tx: &mut Tx,
    kind: Exists,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let unique: BTreeSet<&str> = ids.into_iter().collect();
    let sql = format!(
        "SELECT j.value FROM json_each($1) j WHERE NOT {} ORDER BY j.value LIMIT 1",
        kind.sql()
    );
    let list = json_list(&unique);
    let missing: Option<String> = on!(tx.conn(), |c| sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(&list)
        .fetch_optional(c)
        .await?);
    match missing {
        Some(id) => Err(StoreError::NotFound {
            what: kind.what(),
            id,
        }),
        None => Ok(()),
    }
}
