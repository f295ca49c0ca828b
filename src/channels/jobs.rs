//! The dead-letter view: jobs that ran out of attempts or failed for good, and a retry.
//!
//! The queue engine keeps the job rows; this view of them lives with the channels because
//! managing channels is what lets a member see and retry jobs (`channels.manage`), and because
//! the one retry that needs more than the queue is a send's, whose message must go back in line
//! first. Auditing the retry needs the audit engine, which the queue, an engine beside it, may
//! not name.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::conversations::delivery::{self, DeliveryStatus};
use crate::conversations::SEND_MESSAGE;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Path, Query};
use crate::queue::{self, JobStatus, JobView};
use crate::rbac::Permission;
use utoipa::{IntoParams, ToSchema};

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/jobs",
        Requires(Permission::ChannelsManage),
        (
            "jobs",
            "List background jobs, newest first, e.g. the dead letters",
        ),
        Contract::new()
            .query::<Filter>()
            .ok_list::<JobView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit"),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/jobs/{job_id}/retry",
        Requires(Permission::ChannelsManage),
        ("jobs", "Put a dead job back in line with all its attempts"),
        Contract::new()
            .returns::<Retried>(StatusCode::ACCEPTED)
            .error(StatusCode::CONFLICT, "nothing_to_retry")
            .error(StatusCode::CONFLICT, "already_sent"),
        retry,
    )
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct Filter {
    /// Only the jobs with this status.
    status: Option<JobStatus>,
    /// 100 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

async fn list(
    State(state): State<Db>,
    ctx: Ctx,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<JobView>>> {
    let limit = filter.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_limit",
            "limit must be 1 to 500",
        ));
    }
    let mut tx = ctx.begin(&state).await?;
    let jobs = queue::list(&mut tx, ctx.tenant_id, filter.status, limit).await?;
    tx.commit().await?;
    Ok(Json(jobs))
}

/// A dead job back in line.
#[derive(Serialize, ToSchema)]
#[schema(as = RetriedJob)]
struct Retried {
    id: Uuid,
    kind: String,
    /// `queued`.
    status: JobStatus,
    /// For a send: its message, back in line to be sent.
    #[schema(required = true)]
    message_id: Option<Uuid>,
}

async fn retry(
    State(state): State<Db>,
    ctx: Ctx,
    Path(job_id): Path<Uuid>,
) -> Result<(StatusCode, Json<Retried>)> {
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
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            id: job_id,
            kind: before.kind,
            status: JobStatus::Queued,
            message_id: message.map(|(id, _)| id),
        }),
    ))
}
