//! The dead-letter view: jobs that ran out of attempts or failed for good, and a retry.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::JobView;
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::error::{Error, Result};
use crate::events;
use crate::http::{Access, Api, Json, Path, Query};
use crate::rbac::Permission;

pub fn routes(api: Api<AppState>) -> Api<AppState> {
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
    let before = sqlx::query!(
        "SELECT kind, payload, attempts, last_error FROM job
         WHERE id = $1 AND tenant_id = $2 AND status = 'dead' FOR UPDATE",
        job_id,
        ctx.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    // A send is only worth retrying if its message goes back in line: the job does nothing
    // for a message that is no longer waiting to be sent.
    let message = if before.kind == crate::conversations::SEND_MESSAGE {
        let message_id = before
            .payload
            .get("message_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        Some(requeue_message(&mut tx, ctx.tenant_id, message_id).await?)
    } else {
        None
    };
    sqlx::query!(
        "UPDATE job SET status = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
                last_error = NULL, updated_at = now()
         WHERE id = $1",
        job_id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar!("SELECT pg_notify('custodian_jobs', '')")
        .fetch_one(&mut *tx)
        .await?;
    let mut after = json!({ "kind": before.kind, "status": "queued", "attempts": 0 });
    let mut prior = json!({
        "kind": before.kind, "status": "dead", "attempts": before.attempts, "last_error": before.last_error,
    });
    if let Some((message_id, previous)) = message {
        let now = match previous.as_deref() {
            Some("sending") => "sending",
            _ => "queued",
        };
        prior["message"] = json!({ "id": message_id, "delivery_status": previous });
        after["message"] = json!({ "id": message_id, "delivery_status": now });
    }
    ctx.audit(
        &mut tx,
        AuditEvent::new("job.retried", "job", job_id)
            .before(prior)
            .after(after),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

/// Puts a dead send's message back in line (`queued`, its failure cleared) and returns its id
/// and the status it had. A message Meta already took (it has a wamid) is not sent again; one
/// left `sending` by an interrupted attempt stays so, and the job first waits for Meta's word
/// on that attempt as any other run would.
async fn requeue_message(
    tx: &mut crate::db::Tx,
    tenant_id: Uuid,
    message_id: Option<Uuid>,
) -> Result<(Uuid, Option<String>)> {
    let message_id = message_id
        .ok_or_else(|| Error::conflict("nothing_to_retry", "this job names no message to send"))?;
    let message = sqlx::query!(
        "SELECT delivery_status, provider_message_id, conversation_id FROM message
         WHERE id = $1 AND tenant_id = current_tenant_id() FOR UPDATE",
        message_id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| Error::conflict("nothing_to_retry", "the job's message no longer exists"))?;
    if message.provider_message_id.is_some() {
        return Err(Error::conflict(
            "already_sent",
            "WhatsApp already took this message; sending it again would deliver it twice",
        ));
    }
    if !matches!(
        message.delivery_status.as_deref(),
        Some("queued" | "sending" | "failed")
    ) {
        return Err(Error::conflict(
            "nothing_to_retry",
            "the job's message is not waiting to be sent",
        ));
    }
    if message.delivery_status.as_deref() == Some("sending") {
        return Ok((message_id, message.delivery_status));
    }
    sqlx::query!(
        "UPDATE message SET delivery_status = 'queued', delivery_error = NULL, failed_at = NULL
         WHERE id = $1",
        message_id
    )
    .execute(&mut **tx)
    .await?;
    events::publish(
        tx,
        &events::Event {
            tenant_id,
            kind: "message.updated".into(),
            conversation_id: Some(message.conversation_id),
            message_id: Some(message_id),
            data: json!({ "delivery_status": "queued" }),
        },
    )
    .await?;
    Ok((message_id, message.delivery_status))
}
