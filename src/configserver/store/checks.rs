//! Existence checks inside a write: a request naming something that does
//! not exist fails whole, with NOT_FOUND naming the first missing id.

use std::collections::BTreeSet;

use super::db::Tx;
use super::error::{Result, StoreError};
use super::script::{Rows, Script, Value};
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
    require_each(tx, [(kind, ids.into_iter().collect())]).await
}

/// [`require_all`] for several kinds in one statement (one round trip):
/// the first kind with a missing id fails, naming its first missing id.
pub(super) async fn require_each<const N: usize>(
    tx: &mut Tx,
    checks: [(Exists, BTreeSet<&str>); N],
) -> Result<()> {
    let mut ran = require(Script::default(), &checks).run(tx).await?;
    missing(&checks, ran.next()?)
}

/// `script` and then [`require_each`]'s statement, as its guard; the
/// statement's rows go to [`missing`].
pub(super) fn require(script: Script, checks: &[(Exists, BTreeSet<&str>)]) -> Script {
    let sql = checks
        .iter()
        .enumerate()
        .map(|(i, (kind, _))| {
            format!(
                "SELECT {i} AS n, j.value FROM json_each(${}) j WHERE NOT {}",
                i + 1,
                kind.sql()
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + " ORDER BY 1, 2 LIMIT 1";
    let values = checks
        .iter()
        .map(|(_, ids)| Value::Text(json_list(ids)))
        .collect();
    script.guard(sql, values)
}

/// NOT_FOUND if [`require`]'s statement found a missing id.
pub(super) fn missing(checks: &[(Exists, BTreeSet<&str>)], rows: Rows) -> Result<()> {
    let missing: Vec<(i32, String)> = rows.decode()?;
    match missing.into_iter().next() {
        // `n` is the check's position in `checks`, as the statement numbers it.
        Some((n, id)) => Err(StoreError::NotFound {
            what: usize::try_from(n)
                .ok()
                .and_then(|i| checks.get(i))
                .map_or("id", |(kind, _)| kind.what()),
            id,
        }),
        None => Ok(()),
    }
}
