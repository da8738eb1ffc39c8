//! What a change owes the depots. After any write, [`reconcile`] compares
//! what each affected client should have — a config for its newest netboot
//! action on its depot, or nothing — with the push rows, and bumps the
//! revision of every row that must go out again: set on the client's depot,
//! remove on any other depot that may hold one. A config that cannot be
//! built from the inventory (its product is not installed on the client's
//! depot, or the client has no service address) is a terminal failure: the
//! row says why (`blocked`), is owed only a removal of what the depot may
//! still hold, and waits for a write of what is missing (a product-on-depot,
//! a config state or default). It runs inside the write's transaction, so the
//! outbox never disagrees with the inventory (`touched` names the clients a
//! change touches, `rules` has opsi's rules as SQL).

use std::collections::{HashMap, HashSet};

use tracing::info;

use super::db::{Store, Tx, WriteTx, on};
use super::error::Result;
use super::leases::announce;
use super::records::{Owed, PushOp, WriteOutcome};
use super::rules::{active_product_sql, effective_depot_sql, effective_values_sql};
use super::script::{Ran, Script, Value};
use super::sequence;
use super::sql::{json_list, json_rows, now_ms, traceparent};
use crate::domain::opsi::{SERVICE_URL, names_service, no_service};

/// The tail of every admin write: the pushes the change owes, in the same
/// transaction, then the commit.
pub(super) async fn finish(
    tx: WriteTx,
    affected: usize,
    clients: &[String],
) -> Result<WriteOutcome> {
    settle(tx, affected, clients, true).await
}

/// [`finish`], or with `commit` false the same outcome and a rollback: a
/// dry run reports what a write would change and owe, and changes nothing.
pub(super) async fn settle(
    mut tx: WriteTx,
    affected: usize,
    clients: &[String],
    commit: bool,
) -> Result<WriteOutcome> {
    let (owed, waiting) = reconcile_counted(&mut tx, clients).await?;
    close(tx, affected, owed, waiting, commit).await
}

/// [`finish`] for a write whose own script ended with [`reads`] (one
/// hand-off less): `state` is what they read.
pub(super) async fn finish_read(
    mut tx: WriteTx,
    affected: usize,
    state: State,
) -> Result<WriteOutcome> {
    let waiting = state.waiting;
    let owed = apply(&mut tx, state).await?;
    close(tx, affected, owed, waiting, true).await
}

/// Announces what is owed and commits, or rolls back.
async fn close(
    mut tx: WriteTx,
    affected: usize,
    owed: Vec<Owed>,
    waiting: u64,
    commit: bool,
) -> Result<WriteOutcome> {
    if commit {
        announce(&mut tx, &owed).await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(WriteOutcome {
        affected: affected as u64,
        owed,
        waiting,
    })
}

/// Where a client's config should be: `product`'s on `depot`, unless
/// something in the inventory blocks it.
struct Want {
    depot: String,
    product: String,
    /// Why the config cannot be built (e.g. the product is not on the depot).
    blocked: Option<String>,
}

/// A client's push row as it stands.
struct Current {
    op: String,
    product: String,
    revision: i64,
    delivered_revision: i64,
    read_revision: i64,
    blocked: String,
}

impl Current {
    /// Whether the depot is owed this row's push (not yet delivered).
    fn owed(&self) -> bool {
        self.revision > self.delivered_revision
    }

    /// Whether the depot may hold a config of this row (a set, not read).
    fn may_hold(&self) -> bool {
        self.op == PushOp::Set.as_str()
            && self.read_revision < self.revision
            && self.blocked.is_empty()
    }
}

/// (client, depot) → its push row.
type Rows = HashMap<(String, String), Current>;

/// One push row to (re)write.
struct Change {
    client: String,
    depot: String,
    op: PushOp,
    /// Empty for a plain remove (the row keeps the product it had).
    product: String,
    /// Why the set is blocked; empty if it is not.
    blocked: String,
    /// Whether the depot is owed a push for it.
    owed: bool,
}

/// What the clients of a write should have, and the push rows they have.
pub(super) struct State {
    desired: HashMap<String, Option<Want>>,
    current: Rows,
    /// Of them, those with a netboot action no depot can be sent a config
    /// for (no registered depot, or blocked).
    waiting: u64,
}

/// Brings the push rows of `clients` in line with the inventory; returns
/// the pushes now owed.
pub(super) async fn reconcile(conn: &mut Tx, clients: &[String]) -> Result<Vec<Owed>> {
    Ok(reconcile_counted(conn, clients).await?.0)
}

/// [`reconcile`], and how many of `clients` wait ([`State::waiting`]).
async fn reconcile_counted(conn: &mut Tx, clients: &[String]) -> Result<(Vec<Owed>, u64)> {
    let clients = distinct(clients.iter().map(String::as_str));
    if clients.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut ran = reads(Script::default(), &clients).run(conn).await?;
    let state = state(&mut ran)?;
    let waiting = state.waiting;
    Ok((apply(conn, state).await?, waiting))
}

/// The version of the rules by which a config is blocked ([`wanted`],
/// [`desired_sql`]). Raise it with every change to what blocks one: the
/// next start brings the rows written under the older rules in line once
/// ([`Store::recheck_blocks`]). 1: a client without a service address.
const BLOCK_RULES: i64 = 1;

impl Store {
    /// Brings the push rows written under older blocking rules in line,
    /// once after an upgrade that changed them: a config the rules now
    /// block (e.g. a client without a service address, which an older
    /// version kept pushing and the depot kept refusing, its old config left
    /// in place) becomes the failure it is, and one they no longer block is
    /// owed again. Only rows whose blocked state differs change: the others
    /// are not pushed again. Returns how many changed. A replica of an older
    /// version still writing to the same PostgreSQL database after the pass
    /// writes under its rules (README: stop old replicas first).
    pub(super) async fn recheck_blocks(&self) -> Result<usize> {
        const DONE: &str = "SELECT value FROM meta WHERE key = 'block_rules'";
        // Read first without the write lock: a start that has nothing to do
        // must not wait for another replica's long write (an import).
        let done: Option<i64> = on!(self.reader(), |c| sqlx::query_scalar(DONE)
            .fetch_optional(c)
            .await?);
        if done.is_some_and(|v| v >= BLOCK_RULES) {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        // Again under the lock: another replica may have just done it.
        let done: Option<i64> = on!(tx.conn(), |c| sqlx::query_scalar(DONE)
            .fetch_optional(c)
            .await?);
        if done.is_some_and(|v| v >= BLOCK_RULES) {
            tx.rollback().await?;
            return Ok(0);
        }
        let clients: Vec<String> = on!(tx.conn(), |c| sqlx::query_scalar(
            "SELECT DISTINCT client_id FROM pushes
             WHERE blocked <> '' OR (op = 'set' AND read_revision < revision)"
        )
        .fetch_all(c)
        .await?);
        let (changed, owed) = reblock(&mut tx, &clients).await?;
        on!(tx.conn(), |c| sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('block_rules', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        .bind(BLOCK_RULES)
        .execute(c)
        .await?
        .rows_affected());
        announce(&mut tx, &owed).await?;
        tx.commit().await?;
        if changed > 0 {
            info!(
                changed,
                owed = owed.len(),
                rules = BLOCK_RULES,
                "configs brought in line with this version's rules of what blocks one"
            );
        }
        Ok(changed)
    }
}

/// [`reconcile`] for `clients`, keeping only the changes to a row's blocked
/// state (blocked, for another reason, no longer; a row still blocked on a
/// depot the client has left, which an older version kept, becomes the
/// removal it stands for): the other rows keep their revisions, so nothing
/// is pushed again. Returns how many rows changed and the pushes now owed.
async fn reblock(conn: &mut Tx, clients: &[String]) -> Result<(usize, Vec<Owed>)> {
    let clients = distinct(clients.iter().map(String::as_str));
    if clients.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut ran = reads(Script::default(), &clients).run(conn).await?;
    let state = state(&mut ran)?;
    let before: HashMap<(String, String), String> = state
        .current
        .iter()
        .map(|(key, row)| (key.clone(), row.blocked.clone()))
        .collect();
    let changes: Vec<Change> = plan(state)
        .into_iter()
        .filter(|c| {
            let was = before.get(&(c.client.clone(), c.depot.clone()));
            was.map_or("", String::as_str) != c.blocked
        })
        .collect();
    if changes.is_empty() {
        return Ok((0, Vec::new()));
    }
    changes_script(&changes, traceparent()).run(conn).await?;
    Ok((changes.len(), owed(changes)))
}

/// Each client once, in first-seen order.
pub(super) fn distinct<'a>(clients: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    clients.into_iter().filter(|c| seen.insert(*c)).collect()
}

/// `script` and then the reconciliation's two reads for `clients`; their
/// rows go to [`state`].
pub(super) fn reads(script: Script, clients: &[&str]) -> Script {
    let list = json_list(clients);
    script
        .then(desired_sql(), vec![Value::Text(list.clone())])
        .then(CURRENT_SQL, vec![Value::Text(list)])
}

/// What [`reads`] read.
pub(super) fn state(ran: &mut Ran) -> Result<State> {
    let (desired, waiting) = wanted(ran.next()?.decode()?);
    let current = found(ran.next()?.decode()?);
    Ok(State {
        desired,
        current,
        waiting,
    })
}

/// Writes the push rows `state` calls for; returns the pushes now owed.
async fn apply(conn: &mut Tx, state: State) -> Result<Vec<Owed>> {
    let changes = plan(state);
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    changes_script(&changes, traceparent()).run(conn).await?;
    Ok(owed(changes))
}

/// [`finish_read`] in a transaction of the store's own SQLite writer
/// (`native`): the push rows `state` calls for, written with `traceparent`
/// (the caller's: this runs on the writer's thread, outside its span).
/// SQLite has no one to announce owed pushes to; the caller commits.
pub(super) fn finish_native(
    tx: &rusqlite::Transaction<'_>,
    affected: usize,
    state: State,
    traceparent: Option<String>,
) -> Result<WriteOutcome> {
    let waiting = state.waiting;
    let changes = plan(state);
    if !changes.is_empty() {
        changes_script(&changes, traceparent).run_native(tx)?;
    }
    Ok(WriteOutcome {
        affected: affected as u64,
        owed: owed(changes),
        waiting,
    })
}

/// The push rows `state` calls for.
fn plan(state: State) -> Vec<Change> {
    let State {
        desired, current, ..
    } = state;
    let mut changes = removals(&current, &desired);
    changes.extend(desired.into_iter().filter_map(|(client, want)| {
        let want = want?;
        let row = current.get(&(client.clone(), want.depot.clone()));
        match want.blocked {
            None => Some(Change {
                client,
                depot: want.depot,
                op: PushOp::Set,
                product: want.product,
                blocked: String::new(),
                owed: true,
            }),
            // Already failed for the same reason: nothing new to say or do.
            Some(why) if row.is_some_and(|r| r.blocked == why && r.product == want.product) => None,
            // Terminal: the depot is owed only the removal of what it may
            // hold — or of what it may still hold under a removal owed
            // already (blocked for another reason, or moved away and back).
            Some(why) => Some(Change {
                owed: row.is_some_and(|r| r.may_hold() || r.owed()),
                client,
                depot: want.depot,
                op: PushOp::Remove,
                product: want.product,
                blocked: why,
            }),
        }
    }));
    changes
}

/// The pushes owed after `changes`.
fn owed(changes: Vec<Change>) -> Vec<Owed> {
    changes
        .into_iter()
        .filter(|c| c.owed)
        .map(|c| Owed {
            depot_id: c.depot,
            client_id: c.client,
        })
        .collect()
}

/// A client of the list: it exists, its newest netboot product, its
/// depot, what in the products blocks the config, whether the depot is
/// registered, its service address.
type Wanted = (
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
);

/// What each client of `$1` (a JSON list) should have: a config for its
/// newest netboot action on its (registered) depot, or nothing; what in
/// the products blocks it; and its service address (see [`wanted`]).
fn desired_sql() -> String {
    // The version on the depot must be registered too, or no bundle can be built.
    format!(
        "WITH w AS (SELECT j.value AS client_id,
           EXISTS (SELECT 1 FROM clients c WHERE c.id = j.value) AS client_exists,
           {product} AS product_id,
           {depot} AS depot_id
         FROM json_each($1) j)
         SELECT w.*, (SELECT CASE
             WHEN d.depot_id IS NULL THEN 'product ' || w.product_id || ' is not installed on depot ' || w.depot_id
             WHEN p.id IS NULL THEN 'product ' || w.product_id || ' ' || d.product_version || '-' || d.package_version
               || ' (the version on depot ' || w.depot_id || ') is not registered'
             END
           FROM (SELECT 1) AS one LEFT JOIN product_on_depots d ON d.depot_id = w.depot_id AND d.product_id = w.product_id
           LEFT JOIN products p ON p.id = d.product_id AND p.product_version = d.product_version
             AND p.package_version = d.package_version) AS blocked,
           EXISTS (SELECT 1 FROM depots k WHERE k.id = w.depot_id) AS depot_known,
           ({service}) ->> 0 AS service_address
         FROM w",
        product = active_product_sql("j.value"),
        depot = effective_depot_sql("j.value"),
        service = effective_values_sql("w.client_id", &format!("'{SERVICE_URL}'")),
    )
}

/// [`desired_sql`]'s rows by client, and how many of them wait: a netboot
/// action without a registered depot, or blocked. A client without a
/// service address is blocked here, by the depot's own rule: the depot
/// would refuse its config (its boot image could reach nothing), and a
/// refusal retried on a backoff left an earlier config of the client in
/// place.
fn wanted(rows: Vec<Wanted>) -> (HashMap<String, Option<Want>>, u64) {
    let mut waiting = 0;
    let desired = rows
        .into_iter()
        .map(
            |(client, exists, product, depot, blocked, depot_known, service)| {
                let want = match (exists, product, depot) {
                    (true, Some(product), Some(depot)) if depot_known => Some(Want {
                        blocked: blocked.or_else(|| {
                            (!names_service(service.as_deref().unwrap_or_default()))
                                .then(|| no_service(&client))
                        }),
                        depot,
                        product,
                    }),
                    (true, Some(_), _) => {
                        waiting += 1;
                        None
                    }
                    _ => None,
                };
                if want.as_ref().is_some_and(|w| w.blocked.is_some()) {
                    waiting += 1;
                }
                (client, want)
            },
        )
        .collect();
    (desired, waiting)
}

/// The push rows of the clients of `$1` (a JSON list).
const CURRENT_SQL: &str =
    "SELECT client_id, depot_id, op, product_id, revision, delivered_revision, read_revision, blocked FROM pushes
         WHERE client_id IN (SELECT value FROM json_each($1))";

/// A push row as [`CURRENT_SQL`] reads it.
type Found = (String, String, String, String, i64, i64, i64, String);

/// [`CURRENT_SQL`]'s rows by client and depot.
fn found(rows: Vec<Found>) -> Rows {
    rows.into_iter()
        .map(
            |(client, depot, op, product, revision, delivered_revision, read_revision, blocked)| {
                let current = Current {
                    op,
                    product,
                    revision,
                    delivered_revision,
                    read_revision,
                    blocked,
                };
                ((client, depot), current)
            },
        )
        .collect()
}

/// Removes owed to depots that may hold a config of a client (a set it has
/// not read) although the client's config belongs elsewhere or nowhere now.
fn removals(current: &Rows, desired: &HashMap<String, Option<Want>>) -> Vec<Change> {
    current
        .iter()
        // A blocked row there says why a config could not be built: once
        // the client is no longer to boot from that depot, the reason is
        // moot (it showed "failed" for good) — the row becomes the removal
        // it stands for, owed only if one is still owed.
        .filter(|(_, row)| row.may_hold() || !row.blocked.is_empty())
        .filter(|((client, depot), _)| {
            desired
                .get(client)
                .and_then(Option::as_ref)
                .is_none_or(|want| &want.depot != depot)
        })
        .map(|((client, depot), row)| Change {
            client: client.clone(),
            depot: depot.clone(),
            op: PushOp::Remove,
            product: String::new(),
            blocked: String::new(),
            owed: row.may_hold() || row.owed(),
        })
        .collect()
}

/// The statements writing `changes` with fresh revisions (taken in the
/// same hand-off, and read back by the insert); those owed are owed again,
/// a blocked one not owed counts as delivered at once. Every row takes
/// `traceparent`, the current call's (one value, bound once).
fn changes_script(changes: &[Change], traceparent: Option<String>) -> Script {
    let n = i64::try_from(changes.len()).unwrap_or(i64::MAX);
    let rows = json_rows(changes.iter().map(|c| {
        [
            c.client.as_str(),
            c.depot.as_str(),
            c.op.as_str(),
            c.product.as_str(),
            c.blocked.as_str(),
            if c.owed { "owed" } else { "" },
        ]
    }));
    // The n-th row gets revision first + n (`key` is its index), the first
    // of those just taken being the sequence's value less n − 1;
    // `delivered_revision` 0 marks it owed.
    let insert = "WITH taken AS (SELECT value - $2 + 1 AS first FROM meta WHERE key = 'revision')
         INSERT INTO pushes (client_id, depot_id, op, product_id, blocked, revision, delivered_revision, updated_at, traceparent)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, first + key,
           CASE WHEN value ->> 5 = 'owed' THEN 0 ELSE first + key END, $3, $4
         FROM json_each($1) CROSS JOIN taken WHERE true
         ON CONFLICT (client_id, depot_id) DO UPDATE SET op = excluded.op,
           product_id = CASE WHEN excluded.product_id <> '' THEN excluded.product_id ELSE pushes.product_id END,
           blocked = excluded.blocked, revision = excluded.revision,
           delivered_revision = CASE WHEN excluded.delivered_revision = 0 THEN pushes.delivered_revision
             ELSE excluded.delivered_revision END,
           attempts = 0, last_error = '', next_attempt_at = NULL, updated_at = excluded.updated_at,
           traceparent = excluded.traceparent";
    sequence::take(Script::default(), n).then(
        insert,
        vec![
            Value::Text(rows),
            Value::Int(n),
            Value::Int(now_ms()),
            Value::MaybeText(traceparent),
        ],
    )
}
