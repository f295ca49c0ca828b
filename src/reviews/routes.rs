//! The review queue API's route table, and the endpoints that read and open items: list and
//! count items, see one with its context, open one (a member asking for human review or
//! proposing an action). Also the item's view, which every review endpoint answers with, and
//! what the deciding endpoints share with these. Deciding an item is in `decide.rs`; reading
//! and changing the approval policy in `policy_routes.rs`.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::policy::RequiredRole;
use super::{
    decide, policy_routes, tenant_actions, NewItem, RequestedBy, Requester, ReviewKind,
    ReviewStatus,
};
use crate::auth::Ctx;
use crate::conversations;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::guardrails::schema;
use crate::http::{Access, Api, Json, Page, Path, Query};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    api.route(
        Method::GET,
        "/api/v1/reviews",
        Requires(Permission::ReviewsRead),
        ("reviews", "List review items, oldest waiting first"),
        list,
    )
    .route(
        Method::POST,
        "/api/v1/reviews",
        Requires(Permission::ReviewsRequest),
        (
            "reviews",
            "Ask for human review of an agent decision, or propose an action for approval",
        ),
        create,
    )
    .route(
        Method::GET,
        "/api/v1/reviews/counts",
        Requires(Permission::ReviewsRead),
        ("reviews", "Count review items by status, and SLA breaches"),
        counts,
    )
    .route(
        Method::GET,
        "/api/v1/reviews/policy",
        Requires(Permission::ReviewsRead),
        ("reviews", "The tenant's approval policy"),
        policy_routes::show_policy,
    )
    .route(
        Method::PUT,
        "/api/v1/reviews/policy",
        Requires(Permission::GuardrailsManage),
        (
            "reviews",
            "Change the approval policy; applies to items opened from now on",
        ),
        policy_routes::update_policy,
    )
    .route(
        Method::GET,
        "/api/v1/reviews/{review_id}",
        Requires(Permission::ReviewsRead),
        (
            "reviews",
            "One review item with its conversation context and execution",
        ),
        show,
    )
    .route(
        Method::POST,
        "/api/v1/reviews/{review_id}/approve",
        Requires(Permission::ReviewsDecide),
        (
            "reviews",
            "Approve an item (optionally edited), or resolve a human review with an outcome; the last needed approval carries it out",
        ),
        decide::approve,
    )
    .route(
        Method::POST,
        "/api/v1/reviews/{review_id}/reject",
        Requires(Permission::ReviewsDecide),
        (
            "reviews",
            "Reject an item with a reason; final, and the customer is told",
        ),
        decide::reject,
    )
    .route(
        Method::POST,
        "/api/v1/reviews/{review_id}/assign",
        Requires(Permission::ReviewsDecide),
        ("reviews", "Give an item to a reviewer, or unassign it"),
        decide::assign,
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub id: Uuid,
    pub kind: ReviewKind,
    pub status: ReviewStatus,
    pub expired: bool,
    pub conversation_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
    pub proposal: Value,
    pub approved_proposal: Option<Value>,
    pub confidence: Option<f32>,
    pub findings: Value,
    pub requested_by: RequestedBy,
    pub requested_by_member: Option<Uuid>,
    pub request_note: Option<String>,
    pub assignee_id: Option<Uuid>,
    pub required_role: RequiredRole,
    pub approvals_required: i32,
    pub approvals: i64,
    pub policy: Value,
    pub decided_by: Option<Uuid>,
    pub decision_reason: Option<String>,
    pub result: Option<Value>,
    pub sla_breached: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub due_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub executed_at: Option<OffsetDateTime>,
    /// When retention blanked the item's content; what was decided stays.
    #[serde(with = "time::serde::rfc3339::option")]
    pub content_purged_at: Option<OffsetDateTime>,
}

pub(super) async fn fetch(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<ReviewView> {
    if lock {
        // Decisions on one item are serialised here: two reviewers approving at the same moment
        // see each other's approval, and only one of them carries the item out.
        sqlx::query_scalar!(
            "SELECT id FROM review_item WHERE id = $1 AND tenant_id = current_tenant_id() FOR UPDATE",
            id
        )
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound)?;
    }
    sqlx::query_as!(
        ReviewView,
        r#"SELECT r.id, r.kind AS "kind: ReviewKind", r.status AS "status: ReviewStatus", r.expired,
                  r.conversation_id, r.execution_id, r.action_id, r.proposal, r.approved_proposal,
                  r.confidence, r.findings, r.requested_by AS "requested_by: RequestedBy",
                  r.requested_by_member, r.request_note, r.assignee_id,
                  r.required_role AS "required_role: RequiredRole", r.approvals_required,
                  (SELECT count(*) FROM review_approval a WHERE a.review_item_id = r.id) AS "approvals!",
                  r.policy, r.decided_by, r.decision_reason, r.result,
                  (r.status = 'pending' AND r.due_at < now()) AS "sla_breached!",
                  r.created_at, r.updated_at, r.due_at, r.expires_at, r.decided_at, r.executed_at,
                  r.content_purged_at
           FROM review_item r WHERE r.id = $1 AND r.tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    assignee_id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    sla_breached: Option<bool>,
    /// Items created after this id (the `next_cursor` of the previous page).
    after: Option<Uuid>,
    limit: Option<i64>,
}

async fn list(
    State(db): State<Db>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<ReviewView>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_limit",
            "limit must be 1 to 200",
        ));
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(raw) => Some(ReviewStatus::parse(raw).ok_or_else(|| {
            Error::bad_request(
                "invalid_status",
                format!(
                    "status must be one of {}",
                    ReviewStatus::ALL.map(ReviewStatus::as_str).join(", ")
                ),
            )
        })?),
    };
    let kind = match q.kind.as_deref() {
        None => None,
        Some(raw) => Some(ReviewKind::parse(raw).ok_or_else(|| {
            Error::bad_request(
                "invalid_kind",
                format!(
                    "kind must be one of {}",
                    ReviewKind::ALL.map(ReviewKind::as_str).join(", ")
                ),
            )
        })?),
    };
    let mut tx = ctx.begin(&db).await?;
    let items = sqlx::query_as!(
        ReviewView,
        r#"SELECT r.id, r.kind AS "kind: ReviewKind", r.status AS "status: ReviewStatus", r.expired,
                  r.conversation_id, r.execution_id, r.action_id, r.proposal, r.approved_proposal,
                  r.confidence, r.findings, r.requested_by AS "requested_by: RequestedBy",
                  r.requested_by_member, r.request_note, r.assignee_id,
                  r.required_role AS "required_role: RequiredRole", r.approvals_required,
                  (SELECT count(*) FROM review_approval a WHERE a.review_item_id = r.id) AS "approvals!",
                  r.policy, r.decided_by, r.decision_reason, r.result,
                  (r.status = 'pending' AND r.due_at < now()) AS "sla_breached!",
                  r.created_at, r.updated_at, r.due_at, r.expires_at, r.decided_at, r.executed_at,
                  r.content_purged_at
           FROM review_item r
           WHERE r.tenant_id = current_tenant_id()
             AND ($1::text IS NULL OR r.status = $1)
             AND ($2::text IS NULL OR r.kind = $2)
             AND ($3::uuid IS NULL OR r.assignee_id = $3)
             AND ($4::uuid IS NULL OR r.conversation_id = $4)
             AND ($5::boolean IS NULL OR (r.status = 'pending' AND r.due_at < now()) = $5)
             AND ($6::uuid IS NULL OR r.id > $6)
           ORDER BY r.id
           LIMIT $7"#,
        status.map(ReviewStatus::as_str),
        kind.map(ReviewKind::as_str),
        q.assignee_id,
        q.conversation_id,
        q.sla_breached,
        q.after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(Page::new(items, limit, |i| i.id)))
}

#[derive(Serialize)]
struct Counts {
    by_status: serde_json::Map<String, Value>,
    pending_by_kind: serde_json::Map<String, Value>,
    sla_breached: i64,
}

async fn counts(State(db): State<Db>, ctx: Ctx) -> Result<Json<Counts>> {
    let mut tx = ctx.begin(&db).await?;
    let rows = sqlx::query!(
        r#"SELECT status AS "status: ReviewStatus", kind AS "kind: ReviewKind", count(*) AS "n!", count(*) FILTER (WHERE status = 'pending' AND due_at < now()) AS "breached!"
           FROM review_item WHERE tenant_id = current_tenant_id() GROUP BY status, kind"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut by_status: serde_json::Map<String, Value> = ReviewStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(0)))
        .collect();
    let mut pending_by_kind: serde_json::Map<String, Value> = ReviewKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), json!(0)))
        .collect();
    let mut sla_breached = 0;
    for row in rows {
        let slot = by_status
            .entry(row.status.as_str().to_string())
            .or_insert(json!(0));
        *slot = json!(slot.as_i64().unwrap_or(0) + row.n);
        if row.status == ReviewStatus::Pending {
            pending_by_kind.insert(row.kind.as_str().to_string(), json!(row.n));
        }
        sla_breached += row.breached;
    }
    Ok(Json(Counts {
        by_status,
        pending_by_kind,
        sla_breached,
    }))
}

#[derive(Serialize)]
struct Detail {
    #[serde(flatten)]
    item: ReviewView,
    approvals_given: Vec<Value>,
    /// The conversation's latest messages, oldest first.
    context: Vec<Value>,
    execution: Option<Value>,
}

async fn show(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Json<Detail>> {
    let mut tx = ctx.begin(&db).await?;
    let item = fetch(&mut tx, id, false).await?;
    let approvals_given = sqlx::query_scalar!(
        r#"SELECT jsonb_build_object('member_id', member_id, 'role', role, 'note', note, 'at', created_at) AS "a!"
           FROM review_approval WHERE review_item_id = $1 ORDER BY created_at"#,
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    let context = match item.conversation_id {
        Some(conversation_id) => sqlx::query_scalar!(
            r#"SELECT jsonb_build_object('id', id, 'direction', direction, 'author_kind', author_kind,
                      'body', body, 'private', private, 'created_at', created_at) AS "m!"
               FROM (SELECT * FROM message WHERE conversation_id = $1 ORDER BY id DESC LIMIT 20) latest
               ORDER BY id"#,
            conversation_id
        )
        .fetch_all(&mut *tx)
        .await?,
        None => Vec::new(),
    };
    let execution =
        match item.execution_id {
            Some(execution_id) => sqlx::query_scalar!(
                r#"SELECT jsonb_build_object('id', id, 'outcome', outcome, 'confidence', confidence,
                      'provider', provider, 'model', model, 'offline', offline,
                      'reason', record->'reason', 'decision', record->'decision',
                      'guardrails', record->'guardrails', 'started_at', started_at) AS "e!"
               FROM agent_execution WHERE id = $1"#,
                execution_id
            )
            .fetch_optional(&mut *tx)
            .await?,
            None => None,
        };
    tx.commit().await?;
    Ok(Json(Detail {
        item,
        approvals_given,
        context,
        execution,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    kind: String,
    conversation_id: Uuid,
    execution_id: Option<Uuid>,
    action_id: Option<Uuid>,
    arguments: Option<Value>,
    note: Option<String>,
}

async fn create(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<ReviewView>)> {
    let note = note(body.note.as_deref())?;
    let mut tx = ctx.begin(&db).await?;
    conversations::fetch(&mut tx, body.conversation_id).await?;
    let source = ctx.audit_source();
    let key = format!("member:{}", Uuid::now_v7());
    let opened = match ReviewKind::parse(&body.kind) {
        Some(ReviewKind::HumanReview) => {
            if note.is_none() {
                return Err(Error::bad_request(
                    "note_required",
                    "say what should be reviewed, and why, in note",
                ));
            }
            if body.action_id.is_some() || body.arguments.is_some() {
                return Err(Error::bad_request(
                    "invalid_review",
                    "a human review takes no action_id or arguments",
                ));
            }
            let execution = sqlx::query!(
                "SELECT id, outcome, record->'reason' AS reason FROM agent_execution
                 WHERE conversation_id = $1 AND ($2::uuid IS NULL OR id = $2)
                   AND outcome NOT IN ('running', 'abandoned')
                 ORDER BY started_at DESC LIMIT 1",
                body.conversation_id,
                body.execution_id
            )
            .fetch_optional(&mut *tx)
            .await?;
            if body.execution_id.is_some() && execution.is_none() {
                return Err(Error::NotFound);
            }
            let proposal = json!({ "decision": execution.as_ref().map(|e| json!({
                "execution_id": e.id, "outcome": e.outcome, "reason": e.reason })) });
            super::open(
                &mut tx,
                &source,
                NewItem {
                    kind: ReviewKind::HumanReview,
                    conversation_id: Some(body.conversation_id),
                    execution_id: execution.map(|e| e.id),
                    action: None,
                    proposal,
                    amount: None,
                    confidence: None,
                    findings: json!([]),
                    requester: Requester::Member(ctx.member_id),
                    note: note.map(str::to_string),
                    idempotency_key: key,
                },
            )
            .await?
        }
        Some(ReviewKind::Action) => {
            let action_id = body.action_id.ok_or_else(|| {
                Error::bad_request("action_required", "an action review needs action_id")
            })?;
            let actions = tenant_actions(&mut tx).await?;
            let action = actions
                .iter()
                .find(|a| a.id == action_id)
                .ok_or(Error::NotFound)?;
            let arguments = body.arguments.unwrap_or_else(|| json!({}));
            schema::validate(&action.parameters, &arguments)
                .map_err(|e| Error::bad_request("invalid_arguments", e))?;
            let amount = action.amount(&arguments);
            super::open(
                &mut tx,
                &source,
                NewItem {
                    kind: ReviewKind::Action,
                    conversation_id: Some(body.conversation_id),
                    execution_id: None,
                    action: Some(action),
                    proposal: json!({ "action": action.name, "arguments": arguments, "amount": amount }),
                    amount,
                    confidence: None,
                    findings: json!([]),
                    requester: Requester::Member(ctx.member_id),
                    note: note.map(str::to_string),
                    idempotency_key: key,
                },
            )
            .await?
        }
        _ => {
            return Err(Error::bad_request(
                "invalid_kind",
                "kind must be human_review or action",
            ))
        }
    };
    let id = opened.ok_or_else(|| anyhow::anyhow!("a fresh idempotency key collided"))?;
    let item = fetch(&mut tx, id, false).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(item)))
}

/// A free-text note: trimmed, empty means none, at most 4000 characters.
pub(super) fn note(raw: Option<&str>) -> Result<Option<&str>> {
    let note = raw.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 4000) {
        return Err(Error::bad_request(
            "invalid_note",
            "note is limited to 4000 characters",
        ));
    }
    Ok(note)
}
