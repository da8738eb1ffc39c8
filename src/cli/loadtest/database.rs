//! Self-contained runs on PostgreSQL: `--database postgres://…` names a
//! server (and a database to connect to there); each run creates a database
//! of its own on it, so that runs never see each other's depots and clients,
//! and drops it afterwards.

use sqlx::Connection;
use url::Url;

use crate::cli::error::CliError;

/// A database this run created.
#[derive(Debug)]
pub struct RunDatabase {
    /// Where to connect to create and drop it (the URL given).
    server: String,
    /// Its name.
    name: String,
    /// The URL of the database itself, for the configserver.
    pub url: String,
}

impl RunDatabase {
    /// Creates `pxeconf_loadtest_<run>` on the server of `server` (a
    /// `postgres://` URL; its user needs CREATEDB).
    pub async fn create(server: &str, run_id: &str) -> Result<Self, CliError> {
        let name = format!("pxeconf_loadtest_{run_id}");
        let mut url = Url::parse(server).map_err(|e| format!("--database {server:?}: {e}"))?;
        url.set_path(&format!("/{name}"));
        let mut conn = connect(server).await?;
        // The name is ours (hex digits), never the caller's text.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("creating the run's database {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(Self {
            server: server.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// Its name, for notes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops it (after the configserver stopped).
    pub async fn drop_database(self) -> Result<(), CliError> {
        let mut conn = connect(&self.server).await?;
        let failed = |e: sqlx::Error| format!("dropping the run's database {}: {e}", self.name);
        // A connection the configserver left (killed, or still closing)
        // would make the drop fail; `DROP … WITH (FORCE)` ends them too but
        // needs PostgreSQL 13, and the store runs on 12.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .execute(&mut conn)
        .await
        .map_err(failed)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {}",
            self.name
        )))
        .execute(&mut conn)
        .await
        .map_err(failed)?;
        let _ = conn.close().await;
        Ok(())
    }
}

async fn connect(server: &str) -> Result<sqlx::PgConnection, CliError> {
    Ok(sqlx::PgConnection::connect(server)
        .await
        .map_err(|e| format!("connecting to {}: {e}", shown(server)))?)
}

/// `url` without its password, for messages.
fn shown(url: &str) -> String {
    crate::configserver::store::Location::parse(url).to_string()
}
