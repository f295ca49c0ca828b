//! A tenant's closure, on the tenant row (RET-2): the state itself and the final purge. The
//! routes, the export and what closing means for the rest of the platform live above, in
//! `privacy::closure`; the guard reads the state with each credential (`auth::guard`).
//!
//! The purge runs `tenant_purge`, a `SECURITY DEFINER` function owned by the schema owner: it
//! finds the tenant's tables in the catalog, deletes every row of the tenant in each (the audit
//! log and the PII vault among them), then the tenant row, and records the deletion with row
//! counts per table in `tenant_deletion`, all in one transaction (AUD-3).

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::Db;
use crate::error::{Error, Result};

/// How long a closed tenant's data is kept before the purge, for the owner to export or reopen.
pub const GRACE: Duration = Duration::days(60);

/// The tenant's closure state.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TenantClosure)]
pub struct ClosureView {
    /// `active`, or `closing` during the grace period.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub closed_at: Option<OffsetDateTime>,
    /// The member who closed it.
    #[schema(required = true)]
    pub closed_by: Option<Uuid>,
    /// After this the tenant and all its data are deleted.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub purge_after: Option<OffsetDateTime>,
}

struct Row {
    slug: String,
    status: String,
    closed_at: Option<OffsetDateTime>,
    closed_by: Option<Uuid>,
    purge_after: Option<OffsetDateTime>,
}

/// The closure state of the tenant the transaction is pinned to, with its slug; `lock` holds
/// the row until the transaction ends, so a closing and a reopening cannot interleave.
pub async fn fetch(conn: &mut PgConnection, lock: bool) -> Result<(ClosureView, String)> {
    let row = if lock {
        sqlx::query_as!(
            Row,
            "SELECT slug, status, closed_at, closed_by, purge_after FROM tenant
             WHERE id = current_tenant_id() FOR UPDATE"
        )
        .fetch_one(conn)
        .await?
    } else {
        sqlx::query_as!(
            Row,
            "SELECT slug, status, closed_at, closed_by, purge_after FROM tenant
             WHERE id = current_tenant_id()"
        )
        .fetch_one(conn)
        .await?
    };
    Ok((
        ClosureView {
            status: row.status,
            closed_at: row.closed_at,
            closed_by: row.closed_by,
            purge_after: row.purge_after,
        },
        row.slug,
    ))
}

/// Marks the pinned tenant closing from now, by `member_id`, to be purged after [`GRACE`].
pub async fn close(conn: &mut PgConnection, member_id: Uuid) -> Result<ClosureView> {
    let grace_days = GRACE.whole_days() as i32;
    let row = sqlx::query_as!(
        ClosureView,
        "UPDATE tenant SET status = 'closing', closed_at = now(), closed_by = $1,
                purge_after = now() + make_interval(days => $2), updated_at = now()
         WHERE id = current_tenant_id() AND status = 'active'
         RETURNING status, closed_at, closed_by, purge_after",
        member_id,
        grace_days
    )
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| Error::conflict("tenant_closed", "the tenant is already closed"))
}

/// Makes the pinned closing tenant active again.
pub async fn reopen(conn: &mut PgConnection) -> Result<ClosureView> {
    let row = sqlx::query_as!(
        ClosureView,
        "UPDATE tenant SET status = 'active', closed_at = NULL, closed_by = NULL,
                purge_after = NULL, updated_at = now()
         WHERE id = current_tenant_id() AND status = 'closing'
         RETURNING status, closed_at, closed_by, purge_after"
    )
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| Error::conflict("tenant_not_closing", "the tenant is not closed"))
}

/// One tenant's purge: its id and the rows deleted per table.
#[derive(Debug, Clone)]
pub struct Purged {
    pub tenant_id: Uuid,
    pub row_counts: Value,
}

/// Purges every closing tenant whose grace period ended by `now` (the scheduler passes the
/// clock; tests pass a later day). Each tenant is one transaction on the owner pool; a tenant
/// that cannot be purged (a legal hold, a failure) is logged and left for the next run, and does
/// not stop the others.
pub async fn purge_due(db: &Db, now: OffsetDateTime) -> anyhow::Result<Vec<Purged>> {
    let due = sqlx::query_scalar!(
        "SELECT id FROM tenant WHERE status = 'closing' AND purge_after <= $1 ORDER BY purge_after",
        now
    )
    .fetch_all(&db.system)
    .await?;
    let mut purged = Vec::new();
    for tenant_id in due {
        match purge(db, tenant_id, now).await {
            Ok(row_counts) => {
                tracing::info!(%tenant_id, "closed tenant purged");
                purged.push(Purged {
                    tenant_id,
                    row_counts,
                });
            }
            Err(e) => tracing::warn!(%tenant_id, error = %e, "purging a closed tenant failed"),
        }
    }
    Ok(purged)
}

async fn purge(db: &Db, tenant_id: Uuid, now: OffsetDateTime) -> sqlx::Result<Value> {
    let mut tx = db.system.begin().await?;
    let counts = sqlx::query_scalar!(
        r#"SELECT tenant_purge($1, $2) AS "counts!""#,
        tenant_id,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counts)
}
