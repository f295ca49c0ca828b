//! Database access: two pools and the tenant-scoped transaction.
//!
//! * `system` connects as the schema owner. It runs migrations and the few lookups that must
//!   find which tenant a credential, a sign-up slug or an inbound webhook belongs to.
//! * `app` connects as `custodian_app`, a role without BYPASSRLS. All tenant work runs there,
//!   inside [`Db::tenant_tx`], which pins the transaction to one tenant so row-level security
//!   backs up every query's own tenant filter (SEC-3).

pub mod embedded;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::config::{Config, DatabaseConfig};
use embedded::{EmbeddedPostgres, StopOnDrop};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The role every request runs as; created by the first migration.
pub const APP_ROLE: &str = "custodian_app";
/// Database the embedded cluster serves.
pub const EMBEDDED_DATABASE: &str = "custodian";

pub type Tx = Transaction<'static, Postgres>;

#[derive(Clone, Debug)]
pub struct Db {
    pub app: PgPool,
    pub system: PgPool,
}

/// A running database: the pools plus the embedded cluster when it is the embedded default.
/// Dropping it stops a cluster this process owns, so no way out of start-up leaves one behind.
pub struct Database {
    pub db: Db,
    pub embedded: Option<StopOnDrop>,
}

impl Db {
    /// Begins a transaction bound to one tenant: the row-level-security policies see only that
    /// tenant's rows for the rest of the transaction.
    pub async fn tenant_tx(&self, tenant_id: Uuid) -> sqlx::Result<Tx> {
        // One round trip: the tenant is pinned by the statement that opens the transaction.
        // A `Uuid` prints as hex digits and dashes only, so formatting it into SQL is safe.
        self.app
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('app.tenant_id', '{tenant_id}', true)"
            )))
            .await
    }

    /// [`Db::tenant_tx`] with more transaction-local settings, pinned in the same round trip.
    /// The names and values are the caller's constants, never user input.
    pub async fn tenant_tx_with(
        &self,
        tenant_id: Uuid,
        settings: &[(&'static str, &'static str)],
    ) -> sqlx::Result<Tx> {
        let mut sql = format!("BEGIN; SELECT set_config('app.tenant_id', '{tenant_id}', true)");
        for (name, value) in settings {
            debug_assert!(!name.contains('\'') && !value.contains('\''));
            sql.push_str(&format!(", set_config('{name}', '{value}', true)"));
        }
        self.app.begin_with(sqlx::AssertSqlSafe(sql)).await
    }

    /// Connects both pools from owner options, deriving the app role's options from them.
    pub async fn connect(admin: PgConnectOptions, app: PgConnectOptions) -> anyhow::Result<Db> {
        // Every inbound webhook looks up its channel here and notifies through it after its
        // commit, so this pool sees as much traffic as the app pool's writers.
        let system = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            // A ping before every checkout doubles the round trips of short statements; a dead
            // connection shows up as an error on first use instead and is dropped.
            .test_before_acquire(false)
            .connect_with(admin)
            .await
            .context("cannot connect to the database as its owner")?;
        MIGRATOR
            .run(&system)
            .await
            .context("database migrations failed")?;
        let app = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_with(app)
            .await
            .with_context(|| {
                format!(
                    "cannot connect as the application role {APP_ROLE}; with password \
                     authentication set APP_DATABASE_URL to a role granted {APP_ROLE}"
                )
            })?;
        Ok(Db { app, system })
    }
}

/// Begins a read-only transaction pinned to one tenant that reads a single snapshot: every
/// statement sees the database as of its first one (REPEATABLE READ), so a read spread over
/// many statements is consistent while others keep writing. On the app pool row-level
/// security applies as in [`Db::tenant_tx`]; on the owner pool the pin only serves queries
/// that read the setting.
pub async fn snapshot_tx(pool: &PgPool, tenant_id: Uuid) -> sqlx::Result<Tx> {
    // The isolation level must be set before the first query, so it opens the transaction.
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
         SELECT set_config('app.tenant_id', '{tenant_id}', true)"
    )))
    .await
}

/// Pins the current transaction to a tenant (transaction-local, so it dies with the transaction
/// and never leaks to the next user of the pooled connection).
pub async fn set_tenant(conn: &mut sqlx::PgConnection, tenant_id: Uuid) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        "SELECT set_config('app.tenant_id', $1, true)",
        tenant_id.to_string()
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Opens the configured database: an external server, or the embedded cluster.
pub async fn open(config: &Config) -> anyhow::Result<Database> {
    match &config.database {
        DatabaseConfig::External { admin_url, app_url } => {
            let admin = PgConnectOptions::from_str(admin_url.expose_secret())
                .context("DATABASE_URL is not a valid PostgreSQL URL")?;
            let app = match app_url {
                Some(url) => PgConnectOptions::from_str(url.expose_secret())
                    .context("APP_DATABASE_URL is not a valid PostgreSQL URL")?,
                None => admin.clone().username(APP_ROLE),
            };
            Ok(Database {
                db: Db::connect(admin, app).await?,
                embedded: None,
            })
        }
        DatabaseConfig::Embedded => {
            let pg = EmbeddedPostgres::start_with(
                &config.data_dir.join("pg"),
                config.pg_bin_dir.as_deref(),
            )
            .await?;
            // From here on, a failure (a migration, say) stops the server on its way out.
            let pg = StopOnDrop::new(pg);
            ensure_database(&pg.connect_options("postgres"), EMBEDDED_DATABASE).await?;
            let admin = pg.connect_options(EMBEDDED_DATABASE);
            let app = admin.clone().username(APP_ROLE);
            let db = Db::connect(admin, app).await?;
            Ok(Database {
                db,
                embedded: Some(pg),
            })
        }
    }
}

/// Creates a database when it does not exist yet.
pub async fn ensure_database(maintenance: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(maintenance).await?;
    let exists: bool = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        name
    )
    .fetch_one(&mut conn)
    .await?
    .unwrap_or(false);
    if !exists {
        // Identifiers cannot be bound; the name is ours, but quote it all the same.
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}
