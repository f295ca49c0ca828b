//! Tenant closure (RET-2). The owner closes the tenant: from then on every other member is
//! refused with `tenant_closed` (the guard reads the state with each credential), the tenant's
//! channels answer as unknown ones and store nothing, and the owner reaches only the closure's
//! status, the tenant export and reopening ([`crate::auth::guard::WHILE_CLOSING`]). After the
//! grace period (60 days) the purge deletes everything (`tenants::closure::purge_due`).
//!
//! A tenant export is every table of the tenant, found in the catalog as the purge finds them,
//! as `export.json` and one CSV per table in one zip, written by a job with progress and kept
//! for the export period (seven days at most, DSR-7) like a contact's export, whose zip writer it
//! uses. What the export leaves out is what proves identity rather than describes the business:
//! binary columns (credential hashes, sealed secrets, the audit chain's hashes, earlier exports'
//! files) and password hashes.

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Path};
use crate::queue::{Job, NewJob, Outcome};
use crate::rbac::Permission;
use crate::tenants::closure::{self as state, ClosureView};

/// The job kind that writes a tenant export.
pub const JOB: &str = "privacy.tenant_export";
/// The zip is stored in chunks of this size.
const CHUNK: usize = 1 << 20;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::TenantOwn;
    api.endpoint(
        Method::GET,
        "/api/v1/tenant/closure",
        Requires(TenantOwn),
        ("tenant", "Whether the tenant is closed, and when its data goes (RET-2)"),
        Contract::new().ok::<ClosureView>(),
        show_closure,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tenant/closure",
        Requires(TenantOwn),
        (
            "tenant",
            "Close the tenant: other members lose access at once, its data is deleted after 60 days (RET-2)",
        ),
        Contract::new()
            .body::<CloseTenant>()
            .ok::<ClosureView>()
            .error(StatusCode::CONFLICT, "confirmation_mismatch")
            .error(StatusCode::CONFLICT, "legal_hold"),
        close,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tenant/closure/reopen",
        Requires(TenantOwn),
        ("tenant", "Reopen a closed tenant during its grace period"),
        Contract::new()
            .ok::<ClosureView>()
            .error(StatusCode::CONFLICT, "tenant_not_closing"),
        reopen,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tenant/exports",
        Requires(TenantOwn),
        (
            "tenant",
            "Export every table of the tenant as JSON and CSV in a zip, written by a job",
        ),
        Contract::new().returns::<TenantExportView>(StatusCode::ACCEPTED),
        create_export,
    )
    .endpoint(
        Method::GET,
        "/api/v1/tenant/exports",
        Requires(TenantOwn),
        ("tenant", "The tenant's exports not yet expired, newest first"),
        Contract::new().ok_list::<TenantExportView>(),
        list_exports,
    )
    .endpoint(
        Method::GET,
        "/api/v1/tenant/exports/{export_id}",
        Requires(TenantOwn),
        ("tenant", "A tenant export: its progress, and until when it can be downloaded"),
        Contract::new().ok::<TenantExportView>(),
        show_export,
    )
    .endpoint(
        Method::GET,
        "/api/v1/tenant/exports/{export_id}/download",
        Requires(TenantOwn),
        ("tenant", "Download a finished tenant export (a zip)"),
        Contract::new()
            .returns_media(
                StatusCode::OK,
                "application/zip",
                "export.json and one CSV file per table",
            )
            .error(StatusCode::GONE, "gone")
            .error(StatusCode::CONFLICT, "export_failed")
            .error(StatusCode::CONFLICT, "export_not_ready"),
        download,
    )
}

/// The closing owner names the tenant, so a stray request cannot close it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CloseTenant)]
pub struct CloseTenant {
    /// The tenant's slug, typed again.
    #[schema(min_length = 1, max_length = 63)]
    pub confirm_slug: String,
}

async fn show_closure(State(db): State<Db>, ctx: Ctx) -> Result<Json<ClosureView>> {
    status(&db, &ctx).await.map(|(view, _)| Json(view))
}

/// The caller's tenant's closure state, and its slug (which closing asks to be typed).
pub async fn status(db: &Db, ctx: &Ctx) -> Result<(ClosureView, String)> {
    let mut tx = ctx.begin(db).await?;
    let found = state::fetch(&mut tx, false).await?;
    tx.commit().await?;
    Ok(found)
}

async fn close(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<CloseTenant>,
) -> Result<Json<ClosureView>> {
    close_tenant(&db, &ctx, &body.confirm_slug).await.map(Json)
}

/// Closes the caller's tenant, audited on the same transaction. The API and the web app both
/// close through here.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn close_tenant(db: &Db, ctx: &Ctx, confirm_slug: &str) -> Result<ClosureView> {
    let mut tx = ctx.begin(db).await?;
    let (before, slug) = state::fetch(&mut tx, true).await?;
    if confirm_slug.trim() != slug {
        return Err(Error::conflict(
            "confirmation_mismatch",
            "confirm_slug is not this tenant's slug",
        ));
    }
    // The purge would refuse the tenant: better to say so now than after 60 days.
    if crate::retention::any_active_hold(&mut tx, ctx.tenant_id).await? {
        return Err(Error::conflict(
            "legal_hold",
            "data of this tenant is under a legal hold: release the holds before closing it",
        ));
    }
    let after = state::close(&mut tx, ctx.member_id).await?;
    crate::channels::announce_tenant_inboxes(&mut tx, ctx.tenant_id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("tenant.closed", "tenant", ctx.tenant_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

async fn reopen(State(db): State<Db>, ctx: Ctx) -> Result<Json<ClosureView>> {
    reopen_tenant(&db, &ctx).await.map(Json)
}

/// Reopens the caller's closed tenant, audited on the same transaction.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn reopen_tenant(db: &Db, ctx: &Ctx) -> Result<ClosureView> {
    let mut tx = ctx.begin(db).await?;
    let (before, _) = state::fetch(&mut tx, true).await?;
    let after = state::reopen(&mut tx).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("tenant.reopened", "tenant", ctx.tenant_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TenantExport)]
pub struct TenantExportView {
    pub id: Uuid,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// Tables read, and the zip written, out of `steps_total`.
    pub steps_done: i32,
    pub steps_total: i32,
    /// Percent done.
    pub progress: i32,
    /// Rows per table, once done.
    #[schema(value_type = Object)]
    pub counts: Value,
    /// The zip's size.
    pub bytes: i64,
    #[schema(required = true)]
    pub error: Option<String>,
    pub requested_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub finished_at: Option<OffsetDateTime>,
    /// After this the download answers 410, and retention deletes the export (DSR-7).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<TenantExportView> {
    sqlx::query_as!(
        TenantExportView,
        r#"SELECT id, status, steps_done, steps_total,
                  (steps_done * 100 / steps_total) AS "progress!", counts, bytes, error,
                  requested_by, created_at, finished_at, expires_at
           FROM tenant_export WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// Asks for a tenant export: the record, its job and the audit event commit together.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn request_export(db: &Db, ctx: &Ctx) -> Result<TenantExportView> {
    let mut tx = ctx.begin(db).await?;
    let days = crate::retention::policy(&mut tx, ctx.tenant_id)
        .await?
        .exports_days;
    let id = Uuid::now_v7();
    let source = ctx.audit_source();
    let requested_by = format!(
        "{}:{}",
        source.actor_type,
        source.actor_id.as_deref().unwrap_or_default()
    );
    sqlx::query!(
        "INSERT INTO tenant_export (id, tenant_id, requested_by, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(days => $4))",
        id,
        ctx.tenant_id,
        requested_by,
        days
    )
    .execute(&mut *tx)
    .await?;
    crate::queue::enqueue(
        &mut tx,
        ctx.tenant_id,
        NewJob::new(
            JOB,
            format!("tenant-export:{id}"),
            json!({ "export_id": id }),
        ),
    )
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("tenant.export_requested", "tenant", ctx.tenant_id)
            .after(json!({ "export_id": id })),
    )
    .await?;
    let view = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

async fn create_export(
    State(db): State<Db>,
    ctx: Ctx,
) -> Result<(StatusCode, Json<TenantExportView>)> {
    let view = request_export(&db, &ctx).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

async fn list_exports(State(db): State<Db>, ctx: Ctx) -> Result<Json<Vec<TenantExportView>>> {
    exports(&db, &ctx).await.map(Json)
}

/// The tenant's exports not yet expired, newest first.
pub async fn exports(db: &Db, ctx: &Ctx) -> Result<Vec<TenantExportView>> {
    let mut tx = ctx.begin(db).await?;
    let list = sqlx::query_as!(
        TenantExportView,
        r#"SELECT id, status, steps_done, steps_total,
                  (steps_done * 100 / steps_total) AS "progress!", counts, bytes, error,
                  requested_by, created_at, finished_at, expires_at
           FROM tenant_export WHERE tenant_id = current_tenant_id() AND expires_at > now()
           ORDER BY created_at DESC"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(list)
}

async fn show_export(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<TenantExportView>> {
    let mut tx = ctx.begin(&db).await?;
    let view = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(view))
}

async fn download(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Response> {
    let mut tx = ctx.begin(&db).await?;
    let export = fetch(&mut tx, id).await?;
    crate::audit::export::downloadable(
        &export.status,
        export.expires_at <= OffsetDateTime::now_utc(),
    )?;
    let chunks = sqlx::query_scalar!(
        "SELECT data FROM tenant_export_chunk
         WHERE export_id = $1 AND tenant_id = current_tenant_id() ORDER BY ordinal",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("tenant.export_downloaded", "tenant", ctx.tenant_id)
            .after(json!({ "export_id": id, "bytes": export.bytes })),
    )
    .await?;
    tx.commit().await?;
    let disposition = format!("attachment; filename=\"tenant-export-{id}.zip\"");
    let mut response = chunks.concat().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(anyhow::Error::from)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// How retention's purge reaches tenant exports, as it reaches contact exports (DSR-7).
pub const RETENTION: crate::retention::OtherExports = crate::retention::OtherExports {
    count: count_expired_boxed,
    expire: expire_boxed,
};

fn count_expired_boxed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
) -> BoxFuture<'_, sqlx::Result<i64>> {
    Box::pin(async move {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM tenant_export
               WHERE tenant_id = $1 AND (created_at < $2 OR expires_at <= now())"#,
            tenant_id,
            cutoff
        )
        .fetch_one(conn)
        .await
    })
}

fn expire_boxed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
    limit: i64,
) -> BoxFuture<'_, sqlx::Result<u64>> {
    Box::pin(async move {
        // The chunks go with their export (ON DELETE CASCADE).
        let deleted = sqlx::query!(
            "DELETE FROM tenant_export WHERE id IN (
                 SELECT id FROM tenant_export
                 WHERE tenant_id = $1 AND (created_at < $2 OR expires_at <= now())
                 ORDER BY created_at LIMIT $3)",
            tenant_id,
            cutoff,
            limit
        )
        .execute(conn)
        .await?
        .rows_affected();
        Ok(deleted)
    })
}

/// The job kinds of tenant closure.
pub fn register<S>(jobs: &mut crate::queue::Handlers<S>)
where
    S: Send + Sync + 'static,
    Db: FromRef<S>,
{
    jobs.register(JOB, |state, job| {
        let db = Db::from_ref(state);
        Box::pin(async move { run_job(&db, job).await })
    });
}

async fn run_job(db: &Db, job: &Job) -> Outcome {
    let Some(export_id) = job
        .payload
        .get("export_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Outcome::Fail {
            error: "the job names no export".into(),
        };
    };
    match write(db, job.tenant_id, export_id).await {
        Ok(()) => Outcome::Done,
        Err(e) => {
            let error = format!("{e:#}");
            if job.attempts >= job.max_attempts {
                if let Err(e) = fail(db, job.tenant_id, export_id, &error).await {
                    tracing::warn!(error = %e, "could not mark the tenant export failed");
                }
            }
            Outcome::Retry { error, after: None }
        }
    }
}

async fn fail(db: &Db, tenant_id: Uuid, id: Uuid, error: &str) -> sqlx::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE tenant_export SET status = 'failed', error = $2, finished_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id() AND status IN ('queued', 'running')",
        id,
        error
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn progress(db: &Db, tenant_id: Uuid, id: Uuid, done: i32, total: i32) -> sqlx::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE tenant_export SET steps_done = $2, steps_total = $3
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        done,
        total
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Reads every table of the tenant in one snapshot, moving the progress on after each, then
/// writes the zip. A retried job starts over, deleting the file of a try that died half-way.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id, export_id = %id))]
async fn write(db: &Db, tenant_id: Uuid, id: Uuid) -> anyhow::Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    let Some(status) = sqlx::query_scalar!(
        "SELECT status FROM tenant_export WHERE id = $1 AND tenant_id = current_tenant_id() FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    if !matches!(status.as_str(), "queued" | "running") {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM tenant_export_chunk WHERE export_id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE tenant_export SET status = 'running', steps_done = 0 WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    // The owner pool reads every table (the application role may not read all of them) in one
    // snapshot; each query names the tenant itself.
    let mut read = crate::db::snapshot_tx(&db.system, tenant_id).await?;
    let tables = sqlx::query_scalar!(r#"SELECT t AS "t!" FROM tenant_tables() t"#)
        .fetch_all(&mut *read)
        .await?;
    let total = i32::try_from(tables.len()).unwrap_or(i32::MAX - 2) + 2;
    let mut data = Map::new();
    let tenant = sqlx::query_scalar!(
        r#"SELECT to_jsonb(t) AS "row!" FROM tenant t WHERE id = $1"#,
        tenant_id
    )
    .fetch_one(&mut *read)
    .await?;
    data.insert("tenant".into(), tenant);
    progress(db, tenant_id, id, 1, total).await?;
    for (step, table) in tables.iter().enumerate() {
        data.insert(table.clone(), rows_of(&mut read, tenant_id, table).await?);
        progress(db, tenant_id, id, step as i32 + 2, total).await?;
    }
    read.commit().await?;

    let mut classes: Vec<&str> = vec!["tenant"];
    classes.extend(tables.iter().map(String::as_str));
    let zip = super::export::zip(&data, &classes)?;
    let counts: Map<String, Value> = data
        .iter()
        .map(|(table, rows)| {
            let n = match rows {
                Value::Array(items) => items.len(),
                _ => 1,
            };
            (table.clone(), json!(n))
        })
        .collect();
    let mut tx = db.tenant_tx(tenant_id).await?;
    for (ordinal, chunk) in zip.chunks(CHUNK).enumerate() {
        sqlx::query!(
            "INSERT INTO tenant_export_chunk (tenant_id, export_id, ordinal, data) VALUES ($1, $2, $3, $4)",
            tenant_id,
            id,
            ordinal as i32,
            chunk
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "UPDATE tenant_export SET status = 'done', steps_done = steps_total, counts = $2,
                bytes = $3, finished_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        Value::Object(counts),
        zip.len() as i64
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One table's rows of the tenant as JSON objects, without binary columns and password hashes.
async fn rows_of(conn: &mut PgConnection, tenant_id: Uuid, table: &str) -> anyhow::Result<Value> {
    let withheld = sqlx::query_scalar!(
        r#"SELECT a.attname::text AS "name!" FROM pg_attribute a
           WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped
             AND (a.atttypid = 'bytea'::regtype OR a.attname = 'password_hash')"#,
        table
    )
    .fetch_all(&mut *conn)
    .await?;
    // The table's name comes from the catalog, quoted as an identifier.
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let sql = format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(t) - $2::text[]), '[]') FROM {quoted} t WHERE tenant_id = $1"
    );
    let rows: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(&withheld)
        .fetch_one(conn)
        .await?;
    Ok(rows)
}
