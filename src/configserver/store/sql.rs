//! How values cross into and out of SQLite: id lists and rows as JSON for
//! `json_each(?)`, values as JSON arrays of strings, times as milliseconds
//! since the epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::warn;

/// Texts as a JSON array, for `json_each(?)` or a stored value list. Built
/// as a `serde_json::Value`, whose encoding cannot fail (string keys only,
/// written to a `String`), so no error needs a fallback.
pub(super) fn json_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    Value::Array(items.into_iter().map(|s| Value::from(s.as_ref())).collect()).to_string()
}

/// Rows of texts as a JSON array of arrays, for `json_each(?)` with
/// `value ->> i`; infallible like [`json_list`].
pub(super) fn json_rows<'a, const N: usize>(
    rows: impl IntoIterator<Item = [&'a str; N]>,
) -> String {
    Value::Array(
        rows.into_iter()
            .map(|row| Value::Array(row.into_iter().map(Value::from).collect()))
            .collect(),
    )
    .to_string()
}

/// [`json_rows`] for an upsert: one row per key (its first `key` columns),
/// the last given winning — what a write that names one thing twice means,
/// on both engines: PostgreSQL refuses an upsert that touches a row twice
/// (SQLite applied both, in order).
pub(super) fn json_upsert_rows<'a, const N: usize>(
    rows: impl IntoIterator<Item = [&'a str; N]>,
    key: usize,
) -> String {
    let rows: Vec<[&str; N]> = rows.into_iter().collect();
    let mut last = std::collections::HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        last.insert(&row[..key], i);
    }
    json_rows(
        (rows.iter().enumerate())
            .filter(|(i, row)| last[&row[..key]] == *i)
            .map(|(_, row)| *row),
    )
}

/// A stored JSON array of strings. Only this module writes them; one edited
/// by hand into something else reads as no values, and says so in the log.
pub(super) fn from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|error| {
        warn!(%error, stored = text, "stored values are not a JSON array of strings; read as none");
        Vec::new()
    })
}

/// The W3C `traceparent` of the current call, stored with the outbox rows
/// it owes so that their pushes continue its trace; `None` (NULL) when
/// traces are not exported, so that tracing off costs nothing.
pub(super) fn traceparent() -> Option<String> {
    crate::telemetry::exporting()
        .then(crate::telemetry::current_traceparent)
        .flatten()
}

/// Milliseconds since the epoch.
pub(super) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// A time as milliseconds since the epoch.
pub(super) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds since the epoch: a time a latency is measured against.
pub(super) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds since the epoch as a time.
pub(super) fn from_us(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// Milliseconds since the epoch as a time.
pub(super) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_rows_are_json_that_reads_back() {
        let list = json_list(["a\"b", "c\\d", "é\n"]);
        assert_eq!(from_json(&list), vec!["a\"b", "c\\d", "é\n"]);
        assert_eq!(json_list(Vec::<String>::new()), "[]");
        assert_eq!(
            json_rows([["x", "1"], ["y", "2"]]),
            r#"[["x","1"],["y","2"]]"#
        );
        assert!(from_json("not json").is_empty());
    }

    #[test]
    fn times_survive_milliseconds() {
        let t = from_ms(1_700_000_000_123);
        assert_eq!(to_ms(t), 1_700_000_000_123);
        assert_eq!(from_ms(-5), UNIX_EPOCH);
    }
}
