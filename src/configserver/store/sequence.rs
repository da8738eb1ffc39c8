//! The store's identity and its revision sequence.
//!
//! Revisions come from a hybrid clock: the next one is
//! `max(last + 1, unix time in microseconds)`. They never go backwards,
//! not even after the database is restored from an older backup: the clock
//! has moved on since the backup was taken, so actions set after a restore
//! get revisions no depot has seen. Clock skew is the remaining hole; every
//! revision a depot reports (at reconciliation, in an ABORTED) moves the
//! sequence past it ([`bump_past`]), so one number is never given to two
//! actions in one epoch.
//!
//! The epoch is a random 128-bit id made with the database (migration
//! 0002): bundles and removals carry it, and a depot that sees another
//! epoch starts a fresh sequence.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AssertSqlSafe;

use super::db::{Tx, on};
use super::error::Result;
use super::script::{Script, Value};

/// Microseconds since the Unix epoch, the clock half of the hybrid clock.
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Takes `$2` fresh revisions (consecutive) at the clock's time `$1`: the
/// sequence's value is the last of them afterwards.
const TAKE_SQL: &str =
    "UPDATE meta SET value = CASE WHEN value + 1 > $1 THEN value + 1 ELSE $1 END + $2 - 1
         WHERE key = 'revision'";

/// Takes `n` fresh revisions (consecutive); returns the first.
pub(super) async fn allocate(tx: &mut Tx, n: u64) -> Result<u64> {
    let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    let last: i64 = on!(tx.conn(), |c| sqlx::query_scalar(AssertSqlSafe(format!(
        "{TAKE_SQL} RETURNING value"
    )))
    .bind(now_micros())
    .bind(n)
    .fetch_one(c)
    .await?);
    Ok((last - n + 1) as u64)
}

/// `script` and then the statement that takes `n` fresh revisions
/// ([`allocate`] where a later statement of the script reads them: the
/// sequence's value is the last of them afterwards).
pub(super) fn take(script: Script, n: i64) -> Script {
    script.then(
        TAKE_SQL,
        vec![Value::Int(now_micros()), Value::Int(n.max(1))],
    )
}

/// The furthest ahead of this clock a revision a depot reports may be
/// (another replica's clock, a restored database's): a year.
const MAX_AHEAD_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;

/// Moves the sequence past `revision` (a revision a depot has seen); true
/// if it was behind. A revision further ahead than [`MAX_AHEAD_MICROS`] is
/// no revision of this store (a depot's corrupt journal): moving past it
/// would leave no room for the sequence, so it is ignored and logged.
pub(super) async fn bump_past(tx: &mut Tx, revision: u64) -> Result<bool> {
    let ceiling = now_micros().saturating_add(MAX_AHEAD_MICROS);
    let revision = match i64::try_from(revision) {
        Ok(revision) if revision <= ceiling => revision,
        _ => {
            tracing::warn!(
                revision,
                "a depot reported a revision far ahead of this store's clock; ignored"
            );
            return Ok(false);
        }
    };
    let moved = on!(tx.conn(), |c| sqlx::query(
        "UPDATE meta SET value = $1 WHERE key = 'revision' AND value < $1"
    )
    .bind(revision)
    .execute(c)
    .await?
    .rows_affected());
    Ok(moved > 0)
}
