//! The push outbox as the dispatcher and the depots see it: push results,
//! read reports, and what is owed or held per depot.

use std::collections::HashMap;

use super::db::{SMALL_WRITE, Store, on};
use super::error::{Result, StoreError};
use super::records::{
    Ack, DepotCounts, Owed, PushOp, PushPath, PushRecord, ReadOutcome, ReadReport, UsedTemplate,
};
use super::rows;
use super::script::{Ran, Script, Value};
use super::sql::{now_ms, now_us, to_ms, traceparent};
use super::triggers::{finish_native, finish_read, reads, state};
use crate::domain::ActionRequest;

/// A page of a depot's blocked configs: through `pushes_blocked_by_client`
/// (migration 0008), so a page reads the depot's blocked rows only.
const BLOCKED_OF_DEPOT: &str =
    "SELECT * FROM pushes WHERE depot_id = $1 AND client_id > $2 AND blocked <> ''
     ORDER BY client_id LIMIT $3";

/// The statements recording a batch of push results: each failure (rare)
/// on its own, then every delivery in one statement. Per client and depot
/// only the highest delivered revision counts (what one after the other
/// would leave too), and a failure followed by the delivery of the same
/// revision (a retry that worked) ends delivered either way.
fn acks_script(acks: &[Ack], now: i64) -> Script {
    type Delivery<'a> = (u64, &'a PushPath, Option<&'a UsedTemplate>);
    let mut script = Script::default();
    let mut delivered: HashMap<(&str, &str), Delivery> = HashMap::new();
    for ack in acks {
        match ack {
            Ack::Delivered {
                client_id,
                depot_id,
                revision,
                path,
                template,
            } => {
                let this = (*revision, path, template.as_ref());
                let slot = delivered.entry((client_id, depot_id)).or_insert(this);
                if *revision >= slot.0 {
                    *slot = this;
                }
            }
            Ack::Failed {
                client_id,
                depot_id,
                revision,
                error,
                next_attempt_at,
            } => {
                script = script.then(
                    "UPDATE pushes SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2
                     WHERE client_id = $3 AND depot_id = $4 AND revision = $5 AND delivered_revision < $5",
                    vec![
                        Value::Text(error.clone()),
                        Value::Int(to_ms(*next_attempt_at)),
                        Value::Text(client_id.clone()),
                        Value::Text(depot_id.clone()),
                        Value::Int(*revision as i64),
                    ],
                );
            }
        }
    }
    if delivered.is_empty() {
        return script;
    }
    let rows = delivered
        .iter()
        .map(|((client, depot), (revision, path, template))| {
            serde_json::json!([
                client,
                depot,
                revision,
                path.as_str(),
                template.map(|t| &t.name),
                template.map(|t| &t.reason),
            ])
        });
    let rows = serde_json::Value::Array(rows.collect()).to_string();
    // The template a depot used belongs to the revision it names; the
    // delivered revision only grows.
    script
        .then(
            "UPDATE pushes SET
               template = CASE WHEN revision = a.rev AND a.used IS NOT NULL THEN a.used ELSE template END,
               template_reason = CASE WHEN revision = a.rev AND a.used IS NOT NULL THEN a.why ELSE template_reason END,
               delivered_revision = CASE WHEN delivered_revision > a.rev THEN delivered_revision ELSE a.rev END,
               delivered_at = CASE WHEN a.rev >= delivered_revision THEN $2 ELSE delivered_at END,
               path = CASE WHEN a.rev >= delivered_revision THEN a.via ELSE path END,
               attempts = CASE WHEN revision = a.rev THEN 0 ELSE attempts END,
               last_error = CASE WHEN revision = a.rev THEN '' ELSE last_error END,
               next_attempt_at = CASE WHEN revision = a.rev THEN NULL ELSE next_attempt_at END
             FROM (SELECT value ->> 0 AS client, value ->> 1 AS depot,
                          CAST(value ->> 2 AS BIGINT) AS rev, value ->> 3 AS via,
                          value ->> 4 AS used, value ->> 5 AS why
                   FROM json_each($1)) AS a
             WHERE pushes.client_id = a.client AND pushes.depot_id = a.depot",
            vec![Value::Text(rows.clone()), Value::Int(now)],
        )
        // A deleted client's row is done once its removal is delivered:
        // nothing is owed or held any more, and a row kept would stay for good.
        // `NOT EXISTS`, not `NOT IN`: PostgreSQL cannot make `NOT IN` an
        // anti-join (NULL semantics) and hashed or rescanned every client.
        .then(
            "DELETE FROM pushes WHERE op = 'remove' AND delivered_revision >= revision
               AND (client_id, depot_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))
               AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = pushes.client_id)",
            vec![Value::Text(rows)],
        )
}

/// The push row a read report is about, as far as a read needs it.
struct ReadRow {
    op: PushOp,
    product_id: String,
    revision: u64,
    read_revision: u64,
    files_present: bool,
}

/// The two reads a read report is judged by: the row of `client_id` on the
/// reporting depot (a report is accepted from the depot the config was
/// pushed to, even if the client has moved since: its row there is a
/// removal now, and still names the product), and the client's action of
/// the product with its `modified` revision.
fn read_script(report: &ReadReport) -> Script {
    Script::default()
        .then(
            "SELECT op, product_id, revision, read_revision, read_files_present FROM pushes
             WHERE client_id = $1 AND depot_id = $2",
            vec![
                Value::Text(report.client_id.clone()),
                Value::Text(report.depot_id.clone()),
            ],
        )
        .then(
            "SELECT action_request, modified FROM product_on_clients
             WHERE client_id = $1 AND product_id = $2",
            vec![
                Value::Text(report.client_id.clone()),
                Value::Text(report.product_id.clone()),
            ],
        )
}

/// The client's action request of the reported product, and the revision
/// it was set at (`modified`).
type ActionSet = (String, i64);

/// What [`read_script`] read.
fn read_state(report: &ReadReport, ran: &mut Ran) -> Result<(Option<ReadRow>, Option<ActionSet>)> {
    let row: Option<(String, String, i64, i64, i64)> = ran.next()?.decode()?.into_iter().next();
    let poc: Option<ActionSet> = ran.next()?.decode()?.into_iter().next();
    let row = match row {
        None => None,
        Some((op, product_id, revision, read_revision, files_present)) => Some(ReadRow {
            op: PushOp::parse(&op).ok_or_else(|| {
                StoreError::corrupt("push", &report.client_id, format!("op {op:?}"))
            })?,
            product_id,
            revision: revision.max(0) as u64,
            read_revision: read_revision.max(0) as u64,
            files_present: files_present != 0,
        }),
    };
    Ok((row, poc))
}

/// What a read report means for its row.
#[derive(Debug, PartialEq, Eq)]
enum ReadVerdict {
    /// News: the read of the row's revision, or of an older set of the same
    /// product on this depot; `consumes` whether the action it booted is
    /// still the one requested (not set again since that revision).
    Fresh { consumes: bool },
    /// A repeat of the read already recorded (maybe with news of its files).
    Repeat,
    /// Nothing this store pushed: another depot, product or epoch, or a
    /// revision older than the action it would have booted.
    Stale,
}

/// Judges `report` against its row and the action's `modified` revision.
fn verdict(report: &ReadReport, row: Option<&ReadRow>, modified: Option<u64>) -> ReadVerdict {
    let Some(row) = row else {
        return ReadVerdict::Stale;
    };
    let r = report.revision;
    if r == 0 || r > row.revision {
        return ReadVerdict::Stale;
    }
    if r <= row.read_revision {
        return if r == row.read_revision {
            ReadVerdict::Repeat
        } else {
            ReadVerdict::Stale
        };
    }
    // The action was set at `modified`, before its config got a revision:
    // a read of a revision older than that booted an earlier action.
    let consumes = modified.is_some_and(|m| m < r);
    // At the row's revision the row names what was pushed: a set of its
    // product, or a removal (no config to read). A report of anything else
    // there is no read — it would use up another product's action (a
    // former depot could so cancel an action of a client that moved on).
    if r == row.revision {
        return match row.op == PushOp::Set && row.product_id == report.product_id {
            true => ReadVerdict::Fresh { consumes },
            false => ReadVerdict::Stale,
        };
    }
    // An older revision than the row's: the config changed while the client
    // booted (another action of the product, or another product set since —
    // the row names only the newest), or the client moved and its row here
    // is a removal now. News if it booted the product's action as set now.
    if consumes {
        ReadVerdict::Fresh { consumes }
    } else {
        ReadVerdict::Stale
    }
}

/// Records the read of `report.revision` on its row, and as the action's
/// progress when it `consumes` the action: the request becomes `none`
/// unless it is `always`.
fn apply_script(report: &ReadReport, consumes: bool) -> Script {
    let at = report.read_at.map_or_else(now_ms, to_ms);
    let script = Script::default().then(
        "UPDATE pushes SET read_revision = $1, read_at = $2, read_files_present = $3,
               read_recorded_us = $6,
               delivered_revision = CASE WHEN op = 'set' AND $1 > delivered_revision THEN $1 ELSE delivered_revision END,
               delivered_at = coalesce(delivered_at, $2)
             WHERE client_id = $4 AND depot_id = $5",
        vec![
            Value::Int(report.revision as i64),
            Value::Int(at),
            Value::Int(i64::from(report.files_present)),
            Value::Text(report.client_id.clone()),
            Value::Text(report.depot_id.clone()),
            Value::Int(now_us()),
        ],
    );
    if !consumes {
        return script;
    }
    script.then(
        "UPDATE product_on_clients SET action_progress = 'pxe boot configuration read',
               action_request = CASE WHEN action_request = 'always' THEN 'always' ELSE 'none' END
             WHERE client_id = $1 AND product_id = $2",
        vec![
            Value::Text(report.client_id.clone()),
            Value::Text(report.product_id.clone()),
        ],
    )
}

/// A repeated read's news of its files (gone now, or still there).
fn files_script(report: &ReadReport) -> Script {
    Script::default().then(
        "UPDATE pushes SET read_files_present = $1 WHERE client_id = $2 AND depot_id = $3",
        vec![
            Value::Int(i64::from(report.files_present)),
            Value::Text(report.client_id.clone()),
            Value::Text(report.depot_id.clone()),
        ],
    )
}

/// [`apply_script`] and then the reconciliation's reads for the client,
/// with the number of apply statements (their results come first when
/// run; the reads' rows after them, for [`state`]).
fn apply_then_reads(report: &ReadReport, consumes: bool) -> (Script, usize) {
    let apply = apply_script(report, consumes);
    let writes = apply.len();
    (reads(apply, &[report.client_id.as_str()]), writes)
}

/// What a read report does to the store, judged from what
/// [`read_script`] read.
enum ReadStep {
    /// Nothing: stale, or a repeat with nothing new.
    Nothing,
    /// A repeat that says whether the files are still there.
    Files,
    /// News: [`apply_script`], then the client's pushes reconciled.
    Apply { consumes: bool },
}

/// Judges `report`: the step it takes and the action request it found.
fn judge(
    report: &ReadReport,
    row: Option<&ReadRow>,
    poc: Option<&ActionSet>,
    epoch_ok: bool,
) -> (ReadStep, String) {
    let action = poc.map_or_else(|| ActionRequest::None.as_str().to_owned(), |p| p.0.clone());
    let verdict = match epoch_ok {
        true => verdict(report, row, poc.map(|p| p.1.max(0) as u64)),
        false => ReadVerdict::Stale,
    };
    let step = match verdict {
        ReadVerdict::Stale => ReadStep::Nothing,
        ReadVerdict::Repeat if row.is_some_and(|r| r.files_present != report.files_present) => {
            ReadStep::Files
        }
        ReadVerdict::Repeat => ReadStep::Nothing,
        ReadVerdict::Fresh { consumes } => ReadStep::Apply { consumes },
    };
    (step, action)
}

/// The outcome of a report that changed nothing but maybe its files' news.
fn unchanged(action: String) -> ReadOutcome {
    ReadOutcome {
        action_request: action,
        ..Default::default()
    }
}

/// The outcome of a fresh read that found `action`, now `owed` these.
fn applied(action: String, consumes: bool, owed: Vec<Owed>) -> ReadOutcome {
    let always = action == ActionRequest::Always.as_str();
    let action_request = match (consumes, always) {
        (true, false) => ActionRequest::None.as_str().to_owned(),
        _ => action,
    };
    ReadOutcome {
        action_request,
        // `always`, or the client's next netboot action, is pushed now.
        repushed: consumes && !owed.is_empty(),
        applied: true,
        owed,
    }
}

/// [`Store::record_read`] in a transaction of the store's own SQLite writer
/// (`native`): reads, judgement, writes and the reconciliation in one
/// hand-off. `traceparent` is the caller's (this may run on the writer's
/// thread, outside its span). A report that changes nothing commits an
/// empty transaction (`write_native` commits what returns `Ok`).
fn record_read_native(
    tx: &rusqlite::Transaction<'_>,
    report: &ReadReport,
    epoch_ok: bool,
    traceparent: Option<String>,
) -> Result<ReadOutcome> {
    let mut ran = read_script(report).run_native(tx)?;
    let (row, poc) = read_state(report, &mut ran)?;
    let (step, action) = judge(report, row.as_ref(), poc.as_ref(), epoch_ok);
    let consumes = match step {
        ReadStep::Nothing => return Ok(unchanged(action)),
        ReadStep::Files => {
            files_script(report).run_native(tx)?;
            return Ok(unchanged(action));
        }
        ReadStep::Apply { consumes } => consumes,
    };
    let (script, writes) = apply_then_reads(report, consumes);
    let mut ran = script.run_native(tx)?;
    ran.skip(writes)?;
    let owed = finish_native(tx, 0, state(&mut ran)?, traceparent)?.owed;
    Ok(applied(action, consumes, owed))
}

impl Store {
    /// Records push results, all in one transaction.
    pub async fn record_acks(&self, acks: &[Ack]) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        let script = acks_script(acks, now_ms());
        let small = acks.len() <= SMALL_WRITE;
        if self.native_writer().is_some() {
            // One hand-off for the whole transaction (`native`).
            return self
                .write_native(small, move |tx| script.run_native(tx).map(drop))
                .await;
        }
        let mut tx = self.begin().await?;
        script.run(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The depot saw the TFTP read of `revision` (a report made by hand:
    /// any epoch, read now, files gone).
    pub async fn report_read(
        &self,
        depot_id: &str,
        client_id: &str,
        product_id: &str,
        revision: u64,
    ) -> Result<ReadOutcome> {
        self.record_read(&ReadReport {
            depot_id: depot_id.to_owned(),
            client_id: client_id.to_owned(),
            product_id: product_id.to_owned(),
            revision,
            ..Default::default()
        })
        .await
    }

    /// A depot saw a TFTP read: progress is recorded and the action request
    /// becomes `none` unless it is `always` (then the config is pushed
    /// again); whatever else the client's configs now owe follows in the
    /// same transaction (a client that moved has its new depot's config
    /// removed). Stale or repeated reports change nothing, except that a
    /// repeat may say the read's files are gone now. Its span
    /// (`record_read`) says the action request it left.
    #[tracing::instrument(name = "record_read", skip_all, fields(fqdn = %report.client_id, revision = report.revision, action = tracing::field::Empty))]
    pub async fn record_read(&self, report: &ReadReport) -> Result<ReadOutcome> {
        let epoch_ok = report.epoch.is_empty() || report.epoch == self.epoch();
        let outcome = if self.native_writer().is_some() {
            // One hand-off for the whole transaction (`native`): a stream of
            // reads (a site booting) holds the write gate for one at a time.
            let (report, traceparent) = (report.clone(), traceparent());
            self.write_native(true, move |tx| {
                record_read_native(tx, &report, epoch_ok, traceparent)
            })
            .await?
        } else {
            self.record_read_in_steps(report, epoch_ok).await?
        };
        tracing::Span::current().record("action", outcome.action_request.as_str());
        Ok(outcome)
    }

    /// [`Store::record_read`] statement by statement (PostgreSQL).
    async fn record_read_in_steps(
        &self,
        report: &ReadReport,
        epoch_ok: bool,
    ) -> Result<ReadOutcome> {
        let mut tx = self.begin().await?;
        let mut ran = read_script(report).run(&mut tx).await?;
        let (row, poc) = read_state(report, &mut ran)?;
        let (step, action) = judge(report, row.as_ref(), poc.as_ref(), epoch_ok);
        let consumes = match step {
            // Dropped, the transaction rolls back: nothing was written.
            ReadStep::Nothing => return Ok(unchanged(action)),
            ReadStep::Files => {
                files_script(report).run(&mut tx).await?;
                tx.commit().await?;
                return Ok(unchanged(action));
            }
            ReadStep::Apply { consumes } => consumes,
        };
        let (script, writes) = apply_then_reads(report, consumes);
        let mut ran = script.run(&mut tx).await?;
        ran.skip(writes)?;
        let owed = finish_read(tx, 0, state(&mut ran)?).await?.owed;
        Ok(applied(action, consumes, owed))
    }

    /// The clients owed a push by `depot`, in client order.
    pub async fn owed_clients(&self, depot_id: &str) -> Result<Vec<String>> {
        Ok(on!(self.reader(), |c| {
            sqlx::query_scalar(
            "SELECT client_id FROM pushes WHERE depot_id = $1 AND revision > delivered_revision ORDER BY client_id",
        )
        .bind(depot_id)
        .fetch_all(c)
        .await?
        }))
    }

    /// The clients whose config `depot` should hold now (set, not read).
    pub async fn held_clients(&self, depot_id: &str) -> Result<Vec<String>> {
        Ok(on!(self.reader(), |c| {
            sqlx::query_scalar(
            "SELECT client_id FROM pushes WHERE depot_id = $1 AND op = 'set' AND read_revision < revision
             ORDER BY client_id",
        )
        .bind(depot_id)
        .fetch_all(c)
        .await?
        }))
    }

    /// Push rows of one client.
    pub async fn pushes_of_client(&self, client_id: &str) -> Result<Vec<PushRecord>> {
        on!(self.reader(), |c| sqlx::query(
            "SELECT * FROM pushes WHERE client_id = $1 ORDER BY updated_at DESC, depot_id"
        )
        .bind(client_id)
        .fetch_all(c)
        .await?
        .iter()
        .map(rows::push)
        .collect())
    }

    /// A page of the push rows of `depot` after client `after`: those owed
    /// or delivered and unread, or with `blocked` those blocked (the reason
    /// in each row's `blocked`).
    pub async fn pending_of_depot(
        &self,
        depot_id: &str,
        after: &str,
        limit: u32,
        blocked: bool,
    ) -> Result<Vec<PushRecord>> {
        let sql = if blocked {
            BLOCKED_OF_DEPOT
        } else {
            "SELECT * FROM pushes WHERE depot_id = $1 AND client_id > $2
               AND (revision > delivered_revision OR (op = 'set' AND read_revision < revision))
             ORDER BY client_id LIMIT $3"
        };
        on!(self.reader(), |c| sqlx::query(sql)
            .bind(depot_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?
            .iter()
            .map(rows::push)
            .collect())
    }

    /// Per depot: pushes owed, configs delivered and not read, and configs
    /// blocked. Each count reads only its partial index (`pushes_owed`,
    /// `pushes_held`, `pushes_blocked`): the cost follows what is owed, held
    /// and blocked, not every push row, so a poll of `ListDepots` stays
    /// cheap on a large site.
    pub async fn depot_counts(&self) -> Result<HashMap<String, DepotCounts>> {
        // The kinds are cast: PostgreSQL types a bare literal INT4.
        let counted: Vec<(String, i64, i64)> = on!(self.reader(), |c| {
            sqlx::query_as(
            "SELECT depot_id, CAST(0 AS BIGINT), count(*) FROM pushes
               WHERE revision > delivered_revision GROUP BY depot_id
             UNION ALL
             SELECT depot_id, CAST(1 AS BIGINT), count(*) FROM pushes
               WHERE op = 'set' AND delivered_revision >= revision AND read_revision < revision
               GROUP BY depot_id
             UNION ALL
             SELECT depot_id, CAST(2 AS BIGINT), count(*) FROM pushes WHERE blocked <> '' GROUP BY depot_id",
        )
        .fetch_all(c)
        .await?
        });
        let mut counts: HashMap<String, DepotCounts> = HashMap::new();
        for (depot, kind, n) in counted {
            let entry = counts.entry(depot).or_default();
            let n = n.max(0) as u64;
            match kind {
                0 => entry.owed = n,
                1 => entry.held = n,
                _ => entry.blocked = n,
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::configserver::store::db::Engine;

    /// A depot of tens of thousands of clients with a few blocked: a page
    /// of them must not read every row of the depot.
    #[tokio::test]
    async fn a_page_of_blocked_configs_reads_the_blocked_rows_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("pxeconf.db")).await.unwrap();
        let Engine::Sqlite(pool) = store.reader() else {
            panic!("an SQLite store");
        };
        let explain = format!("EXPLAIN QUERY PLAN {BLOCKED_OF_DEPOT}");
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(explain))
            .bind("depot.example.org")
            .bind("")
            .bind(100_i64)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        assert_eq!(
            plan,
            ["SEARCH pushes USING INDEX pushes_blocked_by_client (depot_id=? AND client_id>?)"],
            "one search of the partial index, in client order (no sort step)"
        );
    }
}
