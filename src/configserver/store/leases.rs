//! Several configservers on one PostgreSQL database: which replica drives
//! each depot's pushes (a lease per depot, renewed by its holder, expiring
//! on the database's clock), and how a write wakes the holder at once
//! (`NOTIFY pxeconf_owed` in the write's transaction, delivered at commit).
//! SQLite has one configserver per database: it holds every depot, and
//! nothing is announced.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};

use super::db::{Engine, Store, Tx};
use super::error::Result;
use super::records::Owed;

/// The channel new outbox rows are announced on.
pub const OWED_CHANNEL: &str = "pxeconf_owed";
/// A payload stays below PostgreSQL's 8000-byte limit; past this a depot's
/// announcement names no clients (the holder reloads what it is owed).
const PAYLOAD_LIMIT: usize = 7000;

/// One announcement: a depot, and the clients now owed to it (none: the
/// holder reloads everything it owes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The depot.
    pub depot_id: String,
    /// Its clients now owed; empty: all of its owed rows.
    pub clients: Vec<String>,
}

impl Announcement {
    /// Reads a payload: the depot id, then client ids, tab-separated.
    pub fn parse(payload: &str) -> Self {
        let mut parts = payload.split('\t').filter(|p| !p.is_empty());
        Self {
            depot_id: parts.next().unwrap_or_default().to_owned(),
            clients: parts.map(str::to_owned).collect(),
        }
    }

    /// A notification as an announcement.
    pub fn from_notification(n: &PgNotification) -> Self {
        Self::parse(n.payload())
    }
}

/// The payloads announcing `owed`: one per depot, naming its clients while
/// they fit.
fn payloads(owed: &[Owed]) -> Vec<String> {
    let mut by_depot: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in owed {
        by_depot.entry(&o.depot_id).or_default().push(&o.client_id);
    }
    by_depot
        .into_iter()
        .map(|(depot, clients)| {
            let payload = std::iter::once(depot)
                .chain(clients)
                .collect::<Vec<_>>()
                .join("\t");
            // Too many to name: the depot alone says "reload".
            if payload.len() <= PAYLOAD_LIMIT {
                payload
            } else {
                depot.to_owned()
            }
        })
        .collect()
}

/// Announces `owed` to the replicas holding their depots, when `tx`
/// commits (PostgreSQL; SQLite has no other replica).
pub(super) async fn announce(tx: &mut Tx, owed: &[Owed]) -> Result<()> {
    let Engine::Postgres(c) = tx.conn() else {
        return Ok(());
    };
    for payload in payloads(owed) {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(OWED_CHANNEL)
            .bind(payload)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Takes or renews, for `holder`, the lease of every depot not held by
    /// another replica, for `ttl`; returns the depots `holder` now holds.
    /// Runs outside the write lock, so a long write never delays a renewal.
    /// SQLite: every depot (one configserver per database).
    pub async fn claim_leases(&self, holder: &str, ttl: Duration) -> Result<Vec<String>> {
        let Some(pool) = self.postgres() else {
            return Ok(self
                .depots()
                .await?
                .into_iter()
                .map(|d| d.id.to_string())
                .collect());
        };
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut held: Vec<String> = sqlx::query_scalar(
            "INSERT INTO depot_leases (depot_id, holder, expires_at)
             SELECT id, $1, clock_timestamp() + $2 * interval '1 millisecond' FROM depots
             ON CONFLICT (depot_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE depot_leases.holder = excluded.holder OR depot_leases.expires_at < clock_timestamp()
             RETURNING depot_id",
        )
        .bind(holder)
        .bind(ttl_ms)
        .fetch_all(pool)
        .await?;
        held.sort();
        Ok(held)
    }

    /// Gives up `holder`'s leases (a replica stopping), so that another
    /// takes its depots at once.
    pub async fn release_leases(&self, holder: &str) -> Result<()> {
        if let Some(pool) = self.postgres() {
            sqlx::query("DELETE FROM depot_leases WHERE holder = $1")
                .bind(holder)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Which replica holds each depot's lease now (PostgreSQL; empty on SQLite).
    pub async fn lease_holders(&self) -> Result<Vec<(String, String)>> {
        let Some(pool) = self.postgres() else {
            return Ok(Vec::new());
        };
        Ok(sqlx::query_as(
            "SELECT depot_id, holder FROM depot_leases WHERE expires_at >= clock_timestamp()
             ORDER BY depot_id",
        )
        .fetch_all(pool)
        .await?)
    }

    /// A listener on the announcements of owed pushes (PostgreSQL only).
    pub async fn listen_owed(&self) -> Result<Option<PgListener>> {
        let Some(pool) = self.postgres() else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(OWED_CHANNEL).await?;
        Ok(Some(listener))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owed(depot: &str, client: &str) -> Owed {
        Owed {
            depot_id: depot.into(),
            client_id: client.into(),
        }
    }

    #[test]
    fn payloads_name_clients_while_they_fit() {
        let list = [owed("d1", "a"), owed("d2", "b"), owed("d1", "c")];
        let p = payloads(&list);
        assert_eq!(p, vec!["d1\ta\tc".to_owned(), "d2\tb".to_owned()]);
        assert_eq!(
            Announcement::parse(&p[0]),
            Announcement {
                depot_id: "d1".into(),
                clients: vec!["a".into(), "c".into()]
            }
        );
        let many: Vec<Owed> = (0..2000)
            .map(|i| owed("d1", &format!("client{i}.example.org")))
            .collect();
        let p = payloads(&many);
        assert_eq!(p, vec!["d1".to_owned()]);
        assert!(Announcement::parse(&p[0]).clients.is_empty());
    }
}
