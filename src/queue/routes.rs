//! The dead-letter view: jobs that ran out of attempts or failed for good, and a retry.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::JobView;
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Json, Path, Query};
use crate::rbac::Permission;

pub fn routes(api: Api) -> Api {
    use Access::*;
    api.route(
        Method::GET,
        "/api/v1/jobs",
        Requires(Permission::ChannelsManage),
        ("jobs", "List background jobs, e.g. the dead letters"),
        list,
    )
    .route(
        Method::POST,
        "/api/v1/jobs/{job_id}/retry",
        Requires(Permission::ChannelsManage),
        ("jobs", "Retry a dead job"),
        retry,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<JobView>>> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 500);
    if let Some(status) = &filter.status {
        if !matches!(status.as_str(), "queued" | "running" | "done" | "dead") {
            return Err(Error::bad_request(
                "invalid_status",
                "status must be queued, running, done or dead",
            ));
        }
    }
    let mut tx = ctx.begin(&state).await?;
    let jobs = sqlx::query_as!(
        JobView,
        "SELECT id, kind, status, attempts, max_attempts, last_error, payload, run_at, created_at, finished_at
         FROM job WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC LIMIT $3",
        ctx.tenant_id,
        filter.status,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(jobs))
}

async fn retry(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(job_id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let kind = sqlx::query_scalar!(
        "UPDATE job SET status = 'queued', attempts = 0, run_at = now(), finished_at = NULL, updated_at = now()
         WHERE id = $1 AND tenant_id = $2 AND status = 'dead' RETURNING kind",
        job_id,
        ctx.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    sqlx::query_scalar!("SELECT pg_notify('custodian_jobs', '')")
        .fetch_one(&mut *tx)
        .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("job.retried", "job", job_id).after(json!({ "kind": kind })),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}
