//! Statements of one transaction that need nothing from each other's rows
//! in Rust, sent together: on SQLite as one command to its connection's
//! thread, on PostgreSQL one after another.
//!
//! sqlx runs each SQLite statement on a thread of the connection's own and
//! hands it over twice (the command, then the rows): on an idle configserver
//! each hand-off is a wake-up of a sleeping thread, while a one-client
//! write's statements run in 7–54 µs each (medians in sqlx's statement log
//! of a trickle). A script is one hand-off however many statements it
//! holds: a one-client action write went from ten hand-offs to four, and
//! its statements from first to commit from a median of 295–374 µs to
//! 217–223 µs (syscall tracepoints of a trickle, docs/BENCHMARKS.md, sixth
//! pass). sqlx's SQLite driver runs every statement of a query text,
//! binding `$n` across them all; sqlx calls that behaviour deprecated
//! (launchbadge/sqlx#3108): the test below pins it, so the first sqlx that
//! drops it fails there.

use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Either, Executor, FromRow};

use rusqlite::types::Value as SqlValue;

use super::db::{Engine, Tx};
use super::error::{Result, StoreError};

/// A value bound to a statement of a script.
#[derive(Debug, Clone)]
pub(super) enum Value {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// Text or NULL.
    MaybeText(Option<String>),
}

/// One statement, numbering its values `$1`, `$2`, … in its own text.
struct Statement {
    sql: String,
    values: Vec<Value>,
    /// Rows from it fail the write: later statements need not run.
    guard: bool,
}

/// Statements run in order in one transaction; each one's rows come back.
#[derive(Default)]
pub(super) struct Script {
    statements: Vec<Statement>,
}

/// The rows of one statement of a script.
pub(super) enum Rows {
    /// From SQLite through sqlx.
    Sqlite(Vec<SqliteRow>),
    /// From PostgreSQL.
    Postgres(Vec<PgRow>),
    /// From SQLite on the store's own connection (`native`).
    Native(Vec<Vec<SqlValue>>),
}

impl Rows {
    /// The rows as `T`s (tuples decode by position).
    pub(super) fn decode<T>(self) -> Result<Vec<T>>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + FromNative,
    {
        Ok(match self {
            Rows::Sqlite(rows) => rows.iter().map(T::from_row).collect::<Result<_, _>>()?,
            Rows::Postgres(rows) => rows.iter().map(T::from_row).collect::<Result<_, _>>()?,
            Rows::Native(rows) => rows
                .into_iter()
                .map(T::from_native)
                .collect::<Result<_>>()?,
        })
    }

    /// Whether the statement returned no rows.
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Rows::Sqlite(rows) => rows.is_empty(),
            Rows::Postgres(rows) => rows.is_empty(),
            Rows::Native(rows) => rows.is_empty(),
        }
    }
}

/// A row of the store's own SQLite connection as a record (tuples, by
/// position), with the conversions sqlx's SQLite rows allow.
pub(super) trait FromNative: Sized {
    /// The record of `row`.
    fn from_native(row: Vec<SqlValue>) -> Result<Self>;
}

/// One column of such a row.
pub(super) trait NativeValue: Sized {
    /// The column's value as `Self`, or why it is not one.
    fn from_value(value: SqlValue) -> Result<Self, String>;
}

impl NativeValue for String {
    fn from_value(value: SqlValue) -> Result<Self, String> {
        match value {
            SqlValue::Text(text) => Ok(text),
            other => Err(format!("text expected, found {:?}", other.data_type())),
        }
    }
}

impl NativeValue for i64 {
    fn from_value(value: SqlValue) -> Result<Self, String> {
        match value {
            SqlValue::Integer(n) => Ok(n),
            other => Err(format!(
                "an integer expected, found {:?}",
                other.data_type()
            )),
        }
    }
}

impl NativeValue for i32 {
    fn from_value(value: SqlValue) -> Result<Self, String> {
        let n = i64::from_value(value)?;
        i32::try_from(n).map_err(|_| format!("{n} out of range for a 32-bit integer"))
    }
}

impl NativeValue for bool {
    fn from_value(value: SqlValue) -> Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl<T: NativeValue> NativeValue for Option<T> {
    fn from_value(value: SqlValue) -> Result<Self, String> {
        match value {
            SqlValue::Null => Ok(None),
            value => T::from_value(value).map(Some),
        }
    }
}

macro_rules! from_native_tuple {
    ($($t:ident),+) => {
        impl<$($t: NativeValue),+> FromNative for ($($t,)+) {
            fn from_native(row: Vec<SqlValue>) -> Result<Self> {
                let columns = row.len();
                let mut values = row.into_iter().enumerate();
                let out = ($(
                    {
                        let (i, value) = values.next().ok_or_else(|| {
                            StoreError::Native(format!("a row of {columns} columns is too short"))
                        })?;
                        $t::from_value(value)
                            .map_err(|why| StoreError::Native(format!("column {i}: {why}")))?
                    },
                )+);
                Ok(out)
            }
        }
    };
}
from_native_tuple!(A);
from_native_tuple!(A, B);
from_native_tuple!(A, B, C);
from_native_tuple!(A, B, C, D);
from_native_tuple!(A, B, C, D, E);
from_native_tuple!(A, B, C, D, E, F);
from_native_tuple!(A, B, C, D, E, F, G);
from_native_tuple!(A, B, C, D, E, F, G, H);

/// The rows of a script's statements, in order.
pub(super) struct Ran(std::vec::IntoIter<Rows>);

impl Ran {
    /// The next statement's rows; an error if it did not run (a guard
    /// before it returned rows on PostgreSQL — check guards first).
    pub(super) fn next(&mut self) -> Result<Rows> {
        self.0.next().ok_or_else(|| {
            sqlx::Error::Protocol("a statement of the script did not run".into()).into()
        })
    }

    /// Passes over the next `n` statements' rows (writes' empty results).
    pub(super) fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }
}

impl Script {
    /// Adds a statement.
    pub(super) fn then(self, sql: impl Into<String>, values: Vec<Value>) -> Self {
        self.push(sql.into(), values, false)
    }

    /// Adds a statement whose rows fail the write (an existence check): on
    /// PostgreSQL the statements after it do not run when it returns rows
    /// (they could break a constraint there); on SQLite they run in the
    /// same hand-off and the caller's error rolls the transaction back.
    pub(super) fn guard(self, sql: impl Into<String>, values: Vec<Value>) -> Self {
        self.push(sql.into(), values, true)
    }

    /// How many statements it holds (each gives one [`Rows`] when run).
    pub(super) fn len(&self) -> usize {
        self.statements.len()
    }

    fn push(mut self, sql: String, values: Vec<Value>, guard: bool) -> Self {
        debug_assert_eq!(highest(&sql), values.len(), "parameters of {sql}");
        self.statements.push(Statement { sql, values, guard });
        self
    }

    /// Runs the statements in `tx`: one [`Rows`] per statement run, in
    /// order — all of them, or on PostgreSQL up to a guard that returned rows.
    pub(super) async fn run(self, tx: &mut Tx) -> Result<Ran> {
        let ran = self.run_all(tx).await?;
        Ok(Ran(ran.into_iter()))
    }

    async fn run_all(self, tx: &mut Tx) -> Result<Vec<Rows>> {
        match tx.conn() {
            Engine::Sqlite(c) => {
                let statements = self.statements.len();
                let (sql, values) = self.joined();
                let query = values
                    .into_iter()
                    .fold(sqlx::query(AssertSqlSafe(sql)), bind);
                let mut steps = c.fetch_many(query);
                let mut out = Vec::new();
                let mut rows = Vec::new();
                while let Some(step) = steps.try_next().await? {
                    match step {
                        Either::Right(row) => rows.push(row),
                        // Each statement ends with its result, rows or not.
                        Either::Left(_) => out.push(Rows::Sqlite(std::mem::take(&mut rows))),
                    }
                }
                // A text that is not one statement would shift every later
                // statement's rows: refused rather than misread.
                if out.len() != statements {
                    return Err(sqlx::Error::Protocol(format!(
                        "a script of {statements} statements gave {} results",
                        out.len()
                    ))
                    .into());
                }
                Ok(out)
            }
            Engine::Postgres(c) => {
                let mut out = Vec::new();
                for statement in self.statements {
                    let query = statement
                        .values
                        .into_iter()
                        .fold(sqlx::query(AssertSqlSafe(statement.sql)), bind);
                    let rows = Rows::Postgres(query.fetch_all(&mut *c).await?);
                    let stop = statement.guard && !rows.is_empty();
                    out.push(rows);
                    if stop {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }

    /// Runs the statements in a transaction of the store's own SQLite
    /// connection (`native`), each prepared once per connection; as on
    /// PostgreSQL, none after a guard that returned rows.
    pub(super) fn run_native(self, tx: &rusqlite::Transaction<'_>) -> Result<Ran> {
        let mut out = Vec::with_capacity(self.statements.len());
        for statement in self.statements {
            let mut prepared = tx.prepare_cached(&statement.sql)?;
            for (i, value) in statement.values.into_iter().enumerate() {
                let Some(at) = prepared.parameter_index(&format!("${}", i + 1))? else {
                    continue;
                };
                match value {
                    Value::Text(text) => prepared.raw_bind_parameter(at, text)?,
                    Value::Int(n) => prepared.raw_bind_parameter(at, n)?,
                    Value::MaybeText(text) => prepared.raw_bind_parameter(at, text)?,
                }
            }
            let columns = prepared.column_count();
            let mut rows = Vec::new();
            let mut stepped = prepared.raw_query();
            while let Some(row) = stepped.next()? {
                rows.push(
                    (0..columns)
                        .map(|i| row.get::<_, SqlValue>(i))
                        .collect::<Result<_, _>>()?,
                );
            }
            let rows = Rows::Native(rows);
            let stop = statement.guard && !rows.is_empty();
            out.push(rows);
            if stop {
                break;
            }
        }
        Ok(Ran(out.into_iter()))
    }

    /// One text of all statements, each one's `$n` moved past the values of
    /// those before it, and all the values in order.
    fn joined(self) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        for statement in self.statements {
            if !sql.is_empty() {
                // On a line of its own: a statement may end in a comment.
                sql.push_str("\n;\n");
            }
            sql.push_str(&renumber(&statement.sql, values.len()));
            values.extend(statement.values);
        }
        (sql, values)
    }
}

/// Binds `value` next.
fn bind<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    value: Value,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    match value {
        Value::Text(text) => query.bind(text),
        Value::Int(n) => query.bind(n),
        Value::MaybeText(text) => query.bind(text),
    }
}

/// `sql` with every parameter `$n` made `$(n + offset)`.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    scan(sql, |n| n + offset).0
}

/// The highest parameter `$n` of `sql` (0 if none).
fn highest(sql: &str) -> usize {
    scan(sql, |n| n).1
}

/// `sql` with every parameter `$n` made `$f(n)`, and the highest `n`. A
/// parameter is a `$` and digits outside quotes (`'…'`, `"…"`, `[…]`,
/// `` `…` ``) and comments (`--…`, `/*…*/`), not part of an identifier
/// (`col$1`).
fn scan(sql: &str, f: impl Fn(usize) -> usize) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut highest = 0;
    let mut chars = sql.chars().peekable();
    // Where the text is: the character ending a quote or comment.
    let mut inside: Option<&str> = None;
    let mut previous = ' ';
    while let Some(ch) = chars.next() {
        out.push(ch);
        match inside {
            Some("*/") => {
                if ch == '*' && chars.next_if_eq(&'/').is_some() {
                    out.push('/');
                    inside = None;
                }
            }
            Some(end) => {
                if end.starts_with(ch) {
                    inside = None;
                }
            }
            None => match ch {
                '\'' => inside = Some("'"),
                '"' => inside = Some("\""),
                '`' => inside = Some("`"),
                '[' => inside = Some("]"),
                '-' if chars.next_if_eq(&'-').is_some() => {
                    out.push('-');
                    inside = Some("\n");
                }
                '/' if chars.next_if_eq(&'*').is_some() => {
                    out.push('*');
                    inside = Some("*/");
                }
                '$' if !(previous.is_alphanumeric() || previous == '_')
                    && chars.peek().is_some_and(char::is_ascii_digit) =>
                {
                    let mut digits = String::new();
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        digits.push(d);
                    }
                    match digits.parse::<usize>() {
                        Ok(n) => {
                            highest = highest.max(n);
                            out.push_str(&f(n).to_string());
                        }
                        // Too many digits for a parameter: not one.
                        Err(_) => out.push_str(&digits),
                    }
                    previous = '0';
                    continue;
                }
                _ => {}
            },
        }
        previous = ch;
    }
    (out, highest)
}

#[cfg(test)]
mod tests {
    use super::super::db::Store;
    use super::*;

    /// The behaviour sqlx calls deprecated, pinned: one command runs every
    /// statement, binds each one's values, and returns each one's rows —
    /// the statements after a guard with rows too (SQLite).
    #[tokio::test]
    async fn a_script_runs_every_statement_and_returns_each_ones_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("script.db")).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let mut ran = Script::default()
            .guard(
                "SELECT $1 WHERE $2 = 'missing'",
                vec![Value::Text("ghost".into()), Value::Text("missing".into())],
            )
            .then(
                "UPDATE meta SET value = $1 WHERE key = 'action_sequence'",
                vec![Value::Int(41)],
            )
            .then(
                "SELECT value + $1, $2 FROM meta WHERE key = 'action_sequence'",
                vec![Value::Int(1), Value::MaybeText(None)],
            )
            .run(&mut tx)
            .await
            .unwrap();
        let guard: Vec<(String,)> = ran.next().unwrap().decode().unwrap();
        assert_eq!(guard, vec![("ghost".to_owned(),)]);
        assert!(ran.next().unwrap().is_empty(), "an UPDATE returns no rows");
        let read: Vec<(i64, Option<String>)> = ran.next().unwrap().decode().unwrap();
        assert_eq!(read, vec![(42, None)], "the read saw the update before it");
        assert!(ran.next().is_err(), "three statements, three results");
        tx.rollback().await.unwrap();
    }

    #[test]
    fn parameters_move_past_the_earlier_statements_values() {
        assert_eq!(
            renumber("SELECT $1, '$1', \"$2\" || $12 FROM t WHERE a = $2", 3),
            "SELECT $4, '$1', \"$2\" || $15 FROM t WHERE a = $5"
        );
        assert_eq!(renumber("SELECT $1", 0), "SELECT $1");
        // Comments, bracketed and back-quoted names, and `$` inside a name
        // hold no parameter.
        assert_eq!(
            renumber(
                "SELECT col$1, [x$1], `y$1` -- don't $1\n /* it's $2 */ FROM t WHERE a = $2",
                3
            ),
            "SELECT col$1, [x$1], `y$1` -- don't $1\n /* it's $2 */ FROM t WHERE a = $5"
        );
        assert_eq!(highest("SELECT $2, $10 -- $11\n"), 10);
        assert_eq!(highest("SELECT 1"), 0);
        let (sql, values) = Script::default()
            .then("SELECT $1", vec![Value::Int(1)])
            .guard("SELECT $1, $2", vec![Value::Int(2), Value::Int(3)])
            .then("UPDATE t SET a = $1", vec![Value::Int(4)])
            .joined();
        assert_eq!(sql, "SELECT $1\n;\nSELECT $2, $3\n;\nUPDATE t SET a = $4");
        assert_eq!(values.len(), 4);
    }
}
