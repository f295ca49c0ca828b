//! The dead-letter view: jobs that ran out of attempts or failed for good, and a retry.
//!
//! The queue engine keeps the job rows; this view of them lives with the channels because
//! managing channels is what lets a member see and retry jobs (`channels.manage`), and because
//! the one retry that needs more than the queue is a send's, whose message must go back in line
//! first. Auditing the retry needs the audit engine, which the queue, an engine beside it, may
//! not name.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::conversations::delivery::{self, DeliveryStatus};
use crate::conversations::SEND_MESSAGE;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Json, Path, Query};
use crate::queue::{self, JobView};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
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
    State(state): State<Db>,
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
    let jobs = queue::list(&mut tx, ctx.tenant_id, filter.status.as_deref(), limit).await?;
    tx.commit().await?;
    Ok(Json(jobs))
}

async fn retry(State(state): State<Db>, ctx: Ctx, Path(job_id): Path<Uuid>) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let before = queue::lock_dead(&mut tx, ctx.tenant_id, job_id)
        .await?
        .ok_or(Error::NotFound)?;
    // A send is only worth retrying if its message goes back in line: the job does nothing
    // for a message that is no longer waiting to be sent.
    let message = if before.kind == SEND_MESSAGE {
        let message_id = before
            .payload
            .get("message_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        Some(delivery::requeue(&mut tx, ctx.tenant_id, message_id).await?)
    } else {
        None
    };
    queue::revive(&mut tx, job_id).await?;
    let mut after = json!({ "kind": before.kind, "status": "queued", "attempts": 0 });
    let mut prior = json!({
        "kind": before.kind, "status": "dead", "attempts": before.attempts, "last_error": before.last_error,
    });
    if let Some((message_id, previous)) = message {
        let now = match previous {
            Some(DeliveryStatus::Sending) => DeliveryStatus::Sending,
            _ => DeliveryStatus::Queued,
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
