//! The retention policy, a preview and an on-demand run of the purge, and legal holds.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Bounds, Class, ClassReport, Policy};
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{explicit_null, Access, Api, Contract, Json, Path};
use crate::rbac::Permission;
use utoipa::ToSchema;

/// `others` are the exports of domains above retention that its purge expires too
/// ([`super::OtherExports`]).
pub fn routes<S>(api: Api<S>, others: &'static [super::OtherExports]) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::RetentionManage;
    api.endpoint(
        Method::GET,
        "/api/v1/retention/policy",
        Requires(RetentionManage),
        (
            "retention",
            "The tenant's retention periods, with their bounds",
        ),
        Contract::new().ok::<PolicyView>(),
        show_policy,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/retention/policy",
        Requires(RetentionManage),
        ("retention", "Change retention periods within their bounds"),
        Contract::new()
            .body::<PolicyChange>()
            .ok::<PolicyView>()
            .error(StatusCode::BAD_REQUEST, "retention_too_short")
            .error(StatusCode::BAD_REQUEST, "retention_too_long"),
        update_policy,
    )
    .endpoint(
        Method::GET,
        "/api/v1/retention/preview",
        Requires(RetentionManage),
        (
            "retention",
            "What a purge would delete now, and what legal holds keep",
        ),
        Contract::new().ok::<Reports>(),
        move |State(db): State<Db>, ctx: Ctx| preview(db, ctx, others),
    )
    .endpoint(
        Method::POST,
        "/api/v1/retention/run",
        Requires(RetentionManage),
        ("retention", "Run the retention purge now"),
        Contract::new().ok::<Reports>(),
        move |State(db): State<Db>, ctx: Ctx| run_now(db, ctx, others),
    )
    .endpoint(
        Method::POST,
        "/api/v1/legal-holds",
        Requires(RetentionManage),
        (
            "retention",
            "Place a legal hold on a contact or conversation",
        ),
        Contract::new()
            .body::<NewHold>()
            .created::<HoldView>()
            .error(StatusCode::BAD_REQUEST, "invalid_reason")
            .error(StatusCode::BAD_REQUEST, "invalid_entity_type")
            // The contact or conversation is not the caller's tenant's.
            .error(StatusCode::NOT_FOUND, "not_found"),
        create_hold,
    )
    .endpoint(
        Method::GET,
        "/api/v1/legal-holds",
        Requires(RetentionManage),
        ("retention", "Legal holds, active and released"),
        Contract::new().ok_list::<HoldView>(),
        list_holds,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/legal-holds/{hold_id}",
        Requires(RetentionManage),
        ("retention", "Release a legal hold (kept as history)"),
        Contract::new()
            .ok::<HoldView>()
            .error(StatusCode::CONFLICT, "hold_already_released"),
        release_hold,
    )
}

/// The tenant's retention periods, and the bounds each may be set within.
#[derive(Serialize, ToSchema)]
#[schema(as = RetentionPolicy)]
struct PolicyView {
    #[serde(flatten)]
    policy: Policy,
    bounds: PolicyBounds,
}

/// Each class's bounds, by class.
#[derive(Serialize, ToSchema)]
#[schema(as = RetentionPolicyBounds)]
struct PolicyBounds {
    agent_executions: Bounds,
    audit_log: Bounds,
    closed_conversations: Bounds,
    exports: Bounds,
    finished_jobs: Bounds,
    request_log: Bounds,
}

fn view(policy: Policy) -> PolicyView {
    PolicyView {
        policy,
        bounds: PolicyBounds {
            agent_executions: Class::AgentExecutions.bounds(),
            audit_log: Class::AuditLog.bounds(),
            closed_conversations: Class::ClosedConversations.bounds(),
            exports: Class::Exports.bounds(),
            finished_jobs: Class::FinishedJobs.bounds(),
            request_log: Class::RequestLog.bounds(),
        },
    }
}

async fn show_policy(State(db): State<Db>, ctx: Ctx) -> Result<Json<PolicyView>> {
    let mut tx = ctx.begin(&db).await?;
    let policy = super::policy(&mut tx, ctx.tenant_id).await?;
    tx.commit().await?;
    Ok(Json(view(policy)))
}

/// The periods to change, in days, each within its class's bounds. Absent fields stay as they
/// are.
// The minimums and maximums below are `Class::bounds`, which a test holds them to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RetentionPolicyChange)]
struct PolicyChange {
    /// May only be raised above 180 (AGT-9).
    #[schema(minimum = 180, maximum = 3650)]
    agent_executions_days: Option<i32>,
    /// At least a year (RET-1).
    #[schema(minimum = 365, maximum = 3650)]
    audit_log_days: Option<i32>,
    /// `null` keeps the content of closed conversations.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 3650)]
    closed_conversations_days: Option<Option<i32>>,
    /// A week at most (DSR-7).
    #[schema(minimum = 1, maximum = 7)]
    exports_days: Option<i32>,
    #[schema(minimum = 1, maximum = 30)]
    finished_jobs_days: Option<i32>,
    /// 30 days at most (RET-1).
    #[schema(minimum = 1, maximum = 30)]
    request_log_days: Option<i32>,
}

/// Refuses a period outside its class's bounds, naming the promise it would break.
fn check(class: Class, days: i32) -> Result<()> {
    let b = class.bounds();
    let name = class.as_str();
    if days < b.min {
        let message = match class {
            Class::AgentExecutions => format!(
                "agent executions are kept at least {} days (AGT-9); the period can only be raised",
                b.min
            ),
            Class::AuditLog => format!(
                "the audit log, security events included, is kept at least {} days (RET-1)",
                b.min
            ),
            _ => format!("{name} must be kept at least {} day(s)", b.min),
        };
        return Err(Error::bad_request("retention_too_short", message));
    }
    if days > b.max {
        let message = match class {
            Class::Exports => format!(
                "exports are kept at most {} days (DSR-7); the period can only be lowered",
                b.max
            ),
            Class::FinishedJobs => format!(
                "finished jobs (with their payloads and errors) are kept at most {} days",
                b.max
            ),
            Class::RequestLog => format!(
                "the request log is kept at most {} days (RET-1); the period can only be lowered",
                b.max
            ),
            _ => format!("{name} can be kept at most {} days", b.max),
        };
        return Err(Error::bad_request("retention_too_long", message));
    }
    Ok(())
}

async fn update_policy(
    State(db): State<Db>,
    ctx: Ctx,
    Json(change): Json<PolicyChange>,
) -> Result<Json<PolicyView>> {
    let mut tx = ctx.begin(&db).await?;
    let before = super::policy(&mut tx, ctx.tenant_id).await?;
    let after = Policy {
        agent_executions_days: change
            .agent_executions_days
            .unwrap_or(before.agent_executions_days),
        audit_log_days: change.audit_log_days.unwrap_or(before.audit_log_days),
        closed_conversations_days: change
            .closed_conversations_days
            .unwrap_or(before.closed_conversations_days),
        exports_days: change.exports_days.unwrap_or(before.exports_days),
        finished_jobs_days: change
            .finished_jobs_days
            .unwrap_or(before.finished_jobs_days),
        request_log_days: change.request_log_days.unwrap_or(before.request_log_days),
    };
    for class in Class::ALL {
        if let Some(days) = after.days(class) {
            check(class, days)?;
        }
    }
    if after != before {
        sqlx::query!(
            "INSERT INTO retention_policy (tenant_id, agent_executions_days, audit_log_days,
                                           closed_conversations_days, exports_days, finished_jobs_days,
                                           request_log_days)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant_id) DO UPDATE SET
                 agent_executions_days = EXCLUDED.agent_executions_days,
                 audit_log_days = EXCLUDED.audit_log_days,
                 closed_conversations_days = EXCLUDED.closed_conversations_days,
                 exports_days = EXCLUDED.exports_days,
                 finished_jobs_days = EXCLUDED.finished_jobs_days,
                 request_log_days = EXCLUDED.request_log_days,
                 updated_at = now()",
            ctx.tenant_id,
            after.agent_executions_days,
            after.audit_log_days,
            after.closed_conversations_days,
            after.exports_days,
            after.finished_jobs_days,
            after.request_log_days
        )
        .execute(&mut *tx)
        .await?;
        ctx.audit(
            &mut tx,
            AuditEvent::new(
                "retention.policy_changed",
                "retention_policy",
                ctx.tenant_id,
            )
            .before(before)
            .after(after),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(view(after)))
}

/// A purge, class by class (run), or what it would be now (preview).
#[derive(Serialize, ToSchema)]
#[schema(as = RetentionReport)]
struct Reports {
    classes: Vec<ClassReport>,
}

async fn preview(db: Db, ctx: Ctx, others: &[super::OtherExports]) -> Result<Json<Reports>> {
    let mut tx = ctx.begin(&db).await?;
    let classes = super::preview(&mut tx, ctx.tenant_id, others).await?;
    tx.commit().await?;
    Ok(Json(Reports { classes }))
}

async fn run_now(db: Db, ctx: Ctx, others: &[super::OtherExports]) -> Result<Json<Reports>> {
    let classes = super::run(&db, ctx.tenant_id, others).await?;
    // Who asked for it; each class's purge is recorded by the run itself.
    let mut tx = ctx.begin(&db).await?;
    let counts: serde_json::Map<String, Value> = classes
        .iter()
        .map(|r| (r.class.as_str().to_string(), json!(r.count)))
        .collect();
    ctx.audit(
        &mut tx,
        AuditEvent::new("retention.run_requested", "tenant", ctx.tenant_id).after(counts),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Reports { classes }))
}

/// What a legal hold keeps out of every purge: a contact (with all their conversations) or one
/// conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = LegalHoldEntity)]
enum HoldEntity {
    Contact,
    Conversation,
}

impl HoldEntity {
    fn parse(value: &str) -> Result<Self> {
        match value {
            "contact" => Ok(Self::Contact),
            "conversation" => Ok(Self::Conversation),
            _ => Err(Error::bad_request(
                "invalid_entity_type",
                "entity_type must be contact or conversation",
            )),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewLegalHold)]
struct NewHold {
    #[schema(value_type = HoldEntity)]
    entity_type: String,
    /// A contact or conversation of the caller's tenant.
    entity_id: Uuid,
    /// Why the data must be kept; trimmed.
    #[schema(min_length = 1, max_length = 2000, pattern = "$not_blank")]
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LegalHold)]
struct HoldView {
    id: Uuid,
    #[schema(value_type = HoldEntity)]
    entity_type: String,
    entity_id: Uuid,
    reason: String,
    /// The member who placed it.
    created_by: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// `null` while the hold is active.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    released_at: Option<OffsetDateTime>,
    /// The member who released it; `null` while the hold is active.
    #[schema(required = true)]
    released_by: Option<Uuid>,
}

async fn create_hold(
    State(db): State<Db>,
    ctx: Ctx,
    Json(hold): Json<NewHold>,
) -> Result<(StatusCode, Json<HoldView>)> {
    let reason = hold.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(Error::bad_request(
            "invalid_reason",
            "reason must be 1 to 2000 characters",
        ));
    }
    let entity = HoldEntity::parse(&hold.entity_type)?;
    let mut tx = ctx.begin(&db).await?;
    // The entity must be the caller's: another tenant's id is simply not found.
    match entity {
        HoldEntity::Contact => {
            crate::crm::contacts::fetch(&mut tx, hold.entity_id).await?;
        }
        HoldEntity::Conversation => {
            crate::conversations::fetch(&mut tx, hold.entity_id).await?;
        }
    }
    let view = sqlx::query_as!(
        HoldView,
        "INSERT INTO legal_hold (id, tenant_id, entity_type, entity_id, reason, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, entity_type, entity_id, reason, created_by, created_at, released_at, released_by",
        Uuid::now_v7(),
        ctx.tenant_id,
        hold.entity_type,
        hold.entity_id,
        reason,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("legal_hold.placed", "legal_hold", view.id).after(json!({
            "entity_type": view.entity_type, "entity_id": view.entity_id, "reason": view.reason,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list_holds(State(db): State<Db>, ctx: Ctx) -> Result<Json<Vec<HoldView>>> {
    let mut tx = ctx.begin(&db).await?;
    let holds = sqlx::query_as!(
        HoldView,
        "SELECT id, entity_type, entity_id, reason, created_by, created_at, released_at, released_by
         FROM legal_hold WHERE tenant_id = $1
         ORDER BY released_at IS NOT NULL, created_at DESC",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(holds))
}

async fn release_hold(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<HoldView>> {
    let mut tx = ctx.begin(&db).await?;
    let current = sqlx::query_scalar!(
        "SELECT released_at FROM legal_hold WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        id,
        ctx.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    if current.is_some() {
        return Err(Error::conflict(
            "hold_already_released",
            "this legal hold was already released",
        ));
    }
    let view = sqlx::query_as!(
        HoldView,
        "UPDATE legal_hold SET released_at = now(), released_by = $3
         WHERE id = $1 AND tenant_id = $2
         RETURNING id, entity_type, entity_id, reason, created_by, created_at, released_at, released_by",
        id,
        ctx.tenant_id,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("legal_hold.released", "legal_hold", id)
            .before(json!({ "released_at": null }))
            .after(json!({
                "entity_type": view.entity_type, "entity_id": view.entity_id,
                "released_at": view.released_at.map(super::rfc3339),
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(view))
}
