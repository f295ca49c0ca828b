//! The review queue API: list and count items, see one with its context, open one (a member
//! asking for human review or proposing an action), approve (optionally after editing),
//! reject with a reason, reassign; read and change the approval policy.
//!
//! What approving means depends on the item:
//! - an action is executed once by a job (`executed` or `failed`);
//! - a draft (low confidence) is sent to the customer, as proposed or edited (`executed`);
//! - a human-review request is resolved with an outcome, `upheld` or `changed`, and the
//!   customer receives the reviewer's message or the tenant's wording for that outcome in
//!   their language (`resolved`);
//! - a guardrail flag is acknowledged and closed; the customer hears nothing (`resolved`).
//!
//! Rejecting (a reason is required) is final for every kind. Approving, rejecting and being
//! assigned all need the role the item requires.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::policy::{RequiredRole, ReviewPolicy, Subject};
use super::{
    announce, customer_waits, load_policy, tenant_actions, NewItem, Requester, TenantAction,
    EXECUTE_JOB, KINDS,
};
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::conversations::{self, Author};
use crate::db::Db;
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::guardrails::schema;
use crate::http::{Access, Api, Json, Page, Path, Query};
use crate::queue::{self, NewJob};
use crate::rbac::{Permission, Role};

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
        show_policy,
    )
    .route(
        Method::PUT,
        "/api/v1/reviews/policy",
        Requires(Permission::GuardrailsManage),
        (
            "reviews",
            "Change the approval policy; applies to items opened from now on",
        ),
        update_policy,
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
        approve,
    )
    .route(
        Method::POST,
        "/api/v1/reviews/{review_id}/reject",
        Requires(Permission::ReviewsDecide),
        (
            "reviews",
            "Reject an item with a reason; final, and the customer is told",
        ),
        reject,
    )
    .route(
        Method::POST,
        "/api/v1/reviews/{review_id}/assign",
        Requires(Permission::ReviewsDecide),
        ("reviews", "Give an item to a reviewer, or unassign it"),
        assign,
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct ReviewView {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    pub expired: bool,
    pub conversation_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    pub action_id: Option<Uuid>,
    pub proposal: Value,
    pub approved_proposal: Option<Value>,
    pub confidence: Option<f32>,
    pub findings: Value,
    pub requested_by: String,
    pub requested_by_member: Option<Uuid>,
    pub request_note: Option<String>,
    pub assignee_id: Option<Uuid>,
    pub required_role: String,
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

async fn fetch(conn: &mut sqlx::PgConnection, id: Uuid, lock: bool) -> Result<ReviewView> {
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
        r#"SELECT r.id, r.kind, r.status, r.expired, r.conversation_id, r.execution_id, r.action_id, r.proposal,
                  r.approved_proposal, r.confidence, r.findings, r.requested_by, r.requested_by_member,
                  r.request_note, r.assignee_id, r.required_role, r.approvals_required,
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

const STATUSES: &[&str] = &[
    "pending",
    "approved",
    "executing",
    "executed",
    "failed",
    "rejected",
    "resolved",
];

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
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::bad_request(
                "invalid_status",
                format!("status must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    if let Some(k) = &q.kind {
        if !KINDS.contains(&k.as_str()) {
            return Err(Error::bad_request(
                "invalid_kind",
                format!("kind must be one of {}", KINDS.join(", ")),
            ));
        }
    }
    let mut tx = ctx.begin(&db).await?;
    let items = sqlx::query_as!(
        ReviewView,
        r#"SELECT r.id, r.kind, r.status, r.expired, r.conversation_id, r.execution_id, r.action_id, r.proposal,
                  r.approved_proposal, r.confidence, r.findings, r.requested_by, r.requested_by_member,
                  r.request_note, r.assignee_id, r.required_role, r.approvals_required,
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
        q.status,
        q.kind,
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
        r#"SELECT status, kind, count(*) AS "n!", count(*) FILTER (WHERE status = 'pending' AND due_at < now()) AS "breached!"
           FROM review_item WHERE tenant_id = current_tenant_id() GROUP BY status, kind"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut by_status: serde_json::Map<String, Value> =
        STATUSES.iter().map(|s| (s.to_string(), json!(0))).collect();
    let mut pending_by_kind: serde_json::Map<String, Value> =
        KINDS.iter().map(|k| (k.to_string(), json!(0))).collect();
    let mut sla_breached = 0;
    for row in rows {
        let slot = by_status.entry(row.status.clone()).or_insert(json!(0));
        *slot = json!(slot.as_i64().unwrap_or(0) + row.n);
        if row.status == "pending" {
            pending_by_kind.insert(row.kind, json!(row.n));
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
    let opened = match body.kind.as_str() {
        "human_review" => {
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
                    kind: "human_review",
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
        "action" => {
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
                    kind: "action",
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Edit {
    arguments: Option<Value>,
    draft: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    note: Option<String>,
    edit: Option<Edit>,
    /// For a human-review request: what the review found.
    outcome: Option<Outcome>,
    /// For a human-review request: what the customer is told (else the tenant's wording).
    message: Option<String>,
}

/// How a contested decision was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// The decision stands.
    Upheld,
    /// The reviewer changed it.
    Changed,
}

/// Checks what an approval says against the item's kind, before anything is written.
fn check_approval(item: &ReviewView, body: &ApproveBody) -> Result<()> {
    let resolves = item.kind == "human_review";
    if resolves && body.outcome.is_none() {
        return Err(Error::bad_request(
            "outcome_required",
            "a human review is resolved with an outcome: upheld or changed",
        ));
    }
    if !resolves && (body.outcome.is_some() || body.message.is_some()) {
        return Err(Error::bad_request(
            "invalid_approval",
            "only a human review takes an outcome and a message",
        ));
    }
    if let Some(message) = &body.message {
        let n = message.trim().chars().count();
        if n == 0 || n > 4096 {
            return Err(Error::bad_request(
                "invalid_message",
                "message must be 1 to 4096 characters",
            ));
        }
    }
    if body.edit.is_some() && matches!(item.kind.as_str(), "human_review" | "guardrail_flag") {
        return Err(Error::bad_request(
            "invalid_edit",
            "only an action or a draft can be edited",
        ));
    }
    if item.kind == "low_confidence" && body.edit.is_none() {
        let proposal = item.approved_proposal.as_ref().unwrap_or(&item.proposal);
        if proposal["draft"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            return Err(Error::bad_request(
                "draft_required",
                "this item has no draft to send: approve it with edit.draft",
            ));
        }
    }
    Ok(())
}

/// Every decision ends alike: audited and announced in the transaction that made it, then
/// committed.
async fn changed(mut tx: Tx, ctx: &Ctx, event: AuditEvent, after: &ReviewView) -> Result<()> {
    ctx.audit(&mut tx, event).await?;
    announce(
        &mut tx,
        ctx.tenant_id,
        after.id,
        after.conversation_id,
        &after.status,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A free-text note: trimmed, empty means none, at most 4000 characters.
fn note(raw: Option<&str>) -> Result<Option<&str>> {
    let note = raw.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 4000) {
        return Err(Error::bad_request(
            "invalid_note",
            "note is limited to 4000 characters",
        ));
    }
    Ok(note)
}

/// Refusals every decision shares: the item must still wait, and not be past its time.
fn still_pending(item: &ReviewView) -> Result<()> {
    if item.status != "pending" {
        return Err(Error::conflict(
            "already_decided",
            format!("this item is already {}", item.status),
        ));
    }
    if item
        .expires_at
        .is_some_and(|at| at <= OffsetDateTime::now_utc())
    {
        return Err(Error::conflict(
            "review_expired",
            "this item's time ran out: it is rejected as expired",
        ));
    }
    Ok(())
}

fn role_refusal(required: RequiredRole) -> Error {
    Error::Forbidden(match required {
        RequiredRole::Owner => "this item needs an owner's approval",
        RequiredRole::Admin => "this item needs an admin's approval",
        RequiredRole::Reviewer => "this item needs a reviewer's approval",
    })
}

async fn approve(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    // A JSON body, `{}` at least: an approval runs an action, so it is never read from a
    // request that merely reached the route (an empty `text/plain` POST once approved).
    Json(body): Json<ApproveBody>,
) -> Result<Json<ReviewView>> {
    let note = note(body.note.as_deref())?;
    let mut tx = ctx.begin(&db).await?;
    let before = fetch(&mut tx, id, true).await?;
    still_pending(&before)?;
    check_approval(&before, &body)?;
    if before.requested_by_member == Some(ctx.member_id) {
        return Err(Error::Forbidden(
            "four eyes: whoever asked for a review cannot approve it",
        ));
    }
    let mut required = RequiredRole::parse(&before.required_role).unwrap_or(RequiredRole::Owner);
    if !required.allows(ctx.role) {
        return Err(role_refusal(required));
    }
    let mine = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM review_approval WHERE review_item_id = $1 AND member_id = $2)",
        id,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?
    .unwrap_or(false);
    if mine {
        return Err(Error::conflict(
            "already_approved",
            "you approved this item already; it needs another person's approval",
        ));
    }

    let mut approvals_required = before.approvals_required;
    if let Some(edit) = &body.edit {
        if before.approvals > 0 {
            return Err(Error::conflict(
                "edit_after_approval",
                "someone approved this item as it is; reject it or approve it unchanged",
            ));
        }
        let edited = edited_proposal(&mut tx, &before, edit).await?;
        // An edit may raise the amount past a policy threshold: the item's demands only grow.
        if let Some((action, Some(amount))) = &edited.action {
            let policy = load_policy(&mut tx).await?;
            let after = policy.requirement(Subject {
                kind: action.kind.as_deref(),
                action: Some(action.name.as_str()),
                amount: Some(*amount),
            });
            required = required.max(after.role);
            approvals_required = approvals_required.max(after.approvals);
            if !required.allows(ctx.role) {
                return Err(role_refusal(required));
            }
        }
        sqlx::query!(
            "UPDATE review_item SET approved_proposal = $2, required_role = $3, approvals_required = $4,
                    updated_at = now()
             WHERE id = $1",
            id,
            edited.proposal,
            required.as_str(),
            approvals_required
        )
        .execute(&mut *tx)
        .await?;
    }

    sqlx::query!(
        "INSERT INTO review_approval (review_item_id, tenant_id, member_id, role, note) VALUES ($1, $2, $3, $4, $5)",
        id,
        ctx.tenant_id,
        ctx.member_id,
        ctx.role.as_str(),
        note
    )
    .execute(&mut *tx)
    .await?;
    let approvals = before.approvals + 1;
    let complete = approvals >= i64::from(approvals_required);
    let mut told = None;
    if complete {
        let current = fetch(&mut tx, id, false).await?;
        told = carry_out(&mut tx, &ctx, &current, &body).await?;
    }
    let after = fetch(&mut tx, id, false).await?;
    let mut event = AuditEvent::new(
        if complete {
            "review.approved"
        } else {
            "review.approval_recorded"
        },
        "review_item",
        id,
    )
    .before(json!({ "status": before.status, "approvals": before.approvals }))
    .after(json!({ "status": after.status, "approvals": approvals, "approvals_required": approvals_required,
                   "edited": body.edit.is_some(), "note": note, "outcome": body.outcome,
                   "customer_message_id": told }));
    event.execution_id = before.execution_id;
    changed(tx, &ctx, event, &after).await?;
    Ok(Json(after))
}

/// An edit, checked against the item's kind.
struct Edited {
    proposal: Value,
    /// For an action: the action and the edited amount, which may change what the item needs.
    action: Option<(TenantAction, Option<f64>)>,
}

/// Checks an edit against the item's kind.
async fn edited_proposal(tx: &mut Tx, item: &ReviewView, edit: &Edit) -> Result<Edited> {
    if item.kind == "action" {
        if edit.draft.is_some() {
            return Err(Error::bad_request(
                "invalid_edit",
                "an action is edited through its arguments",
            ));
        }
        let arguments = edit.arguments.clone().ok_or_else(|| {
            Error::bad_request("invalid_edit", "edit.arguments is required for an action")
        })?;
        let actions = tenant_actions(tx).await?;
        let action = actions
            .iter()
            .find(|a| Some(a.id) == item.action_id)
            .ok_or_else(|| Error::conflict("action_gone", "the action no longer exists"))?;
        schema::validate(&action.parameters, &arguments)
            .map_err(|e| Error::bad_request("invalid_arguments", e))?;
        let amount = action.amount(&arguments);
        let mut proposal = item.proposal.clone();
        proposal["arguments"] = arguments;
        proposal["amount"] = json!(amount);
        return Ok(Edited {
            proposal,
            action: Some((action.clone(), amount)),
        });
    }
    if edit.arguments.is_some() {
        return Err(Error::bad_request(
            "invalid_edit",
            "only an action takes arguments; edit the draft instead",
        ));
    }
    let draft = edit.draft.as_deref().map(str::trim).unwrap_or_default();
    if draft.is_empty() || draft.chars().count() > 4096 {
        return Err(Error::bad_request(
            "invalid_edit",
            "edit.draft must be 1 to 4096 characters",
        ));
    }
    let mut proposal = item.proposal.clone();
    proposal["draft"] = json!(draft);
    Ok(Edited {
        proposal,
        action: None,
    })
}

/// The last needed approval: an action goes to the execution job (once, by idempotency key);
/// a draft goes to the customer in the approver's name; a human review is resolved and the
/// customer told its outcome; a flag is closed. Returns the message the customer received.
async fn carry_out(
    tx: &mut Tx,
    ctx: &Ctx,
    item: &ReviewView,
    body: &ApproveBody,
) -> Result<Option<Uuid>> {
    match item.kind.as_str() {
        "human_review" => {
            let outcome = body.outcome.unwrap_or(Outcome::Upheld);
            let mut message_id = None;
            if let Some(conversation_id) = item.conversation_id {
                let text = match body.message.as_deref().map(str::trim) {
                    Some(text) => text.to_string(),
                    None => {
                        let policy = load_policy(tx).await?;
                        let lang = conversations::language(tx, conversation_id).await?;
                        match outcome {
                            Outcome::Upheld => policy.upheld_message(lang),
                            Outcome::Changed => policy.changed_message(lang),
                        }
                        .to_string()
                    }
                };
                message_id = Some(
                    conversations::post_outbound(
                        tx,
                        ctx.tenant_id,
                        conversation_id,
                        Author::Member(ctx.member_id),
                        &text,
                    )
                    .await?,
                );
            }
            let result = json!({ "outcome": outcome, "message_id": message_id,
                                 "wording": if body.message.is_some() { "reviewer" } else { "template" } });
            resolve(tx, ctx, item.id, result).await?;
            return Ok(message_id);
        }
        "guardrail_flag" => {
            resolve(tx, ctx, item.id, json!({ "acknowledged": true })).await?;
            return Ok(None);
        }
        _ => {}
    }
    sqlx::query!(
        "UPDATE review_item SET status = 'approved', decided_by = $2, decided_at = now(), updated_at = now()
         WHERE id = $1",
        item.id,
        ctx.member_id
    )
    .execute(&mut **tx)
    .await?;
    if item.kind == "action" {
        queue::enqueue(
            tx,
            ctx.tenant_id,
            NewJob::new(
                EXECUTE_JOB,
                format!("review:{}", item.id),
                json!({ "review_id": item.id }),
            ),
        )
        .await?;
        return Ok(None);
    }
    let proposal = item.approved_proposal.as_ref().unwrap_or(&item.proposal);
    let draft = proposal["draft"]
        .as_str()
        .map(str::trim)
        .unwrap_or_default();
    if let (false, Some(conversation_id)) = (draft.is_empty(), item.conversation_id) {
        let message_id = conversations::post_outbound(
            tx,
            ctx.tenant_id,
            conversation_id,
            Author::Member(ctx.member_id),
            draft,
        )
        .await?;
        sqlx::query!(
            "UPDATE review_item SET status = 'executed', executed_at = now(), result = $2 WHERE id = $1",
            item.id,
            json!({ "message_id": message_id })
        )
        .execute(&mut **tx)
        .await?;
        return Ok(Some(message_id));
    }
    Ok(None)
}

/// Decided, with nothing to execute: final.
async fn resolve(tx: &mut Tx, ctx: &Ctx, id: Uuid, result: Value) -> Result<()> {
    sqlx::query!(
        "UPDATE review_item SET status = 'resolved', decided_by = $2, decided_at = now(), result = $3,
                updated_at = now()
         WHERE id = $1",
        id,
        ctx.member_id,
        result
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

async fn reject(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<RejectBody>,
) -> Result<Json<ReviewView>> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(Error::bad_request(
            "reason_required",
            "a rejection needs a reason of 1 to 2000 characters",
        ));
    }
    let mut tx = ctx.begin(&db).await?;
    let before = fetch(&mut tx, id, true).await?;
    still_pending(&before)?;
    // A rejection is as final as an approval: it needs the same role.
    let required = RequiredRole::parse(&before.required_role).unwrap_or(RequiredRole::Owner);
    if !required.allows(ctx.role) {
        return Err(role_refusal(required));
    }
    sqlx::query!(
        "UPDATE review_item SET status = 'rejected', decided_by = $2, decision_reason = $3, decided_at = now(),
                updated_at = now()
         WHERE id = $1",
        id,
        ctx.member_id,
        reason
    )
    .execute(&mut *tx)
    .await?;
    let mut told = None;
    if let (true, Some(conversation_id)) = (customer_waits(&before.kind), before.conversation_id) {
        let policy = load_policy(&mut tx).await?;
        let lang = conversations::language(&mut tx, conversation_id).await?;
        told = Some(
            conversations::post_outbound(
                &mut tx,
                ctx.tenant_id,
                conversation_id,
                Author::Member(ctx.member_id),
                policy.rejection_message(lang),
            )
            .await?,
        );
    }
    let after = fetch(&mut tx, id, false).await?;
    let mut event = AuditEvent::new("review.rejected", "review_item", id)
        .before(json!({ "status": before.status }))
        .after(json!({ "status": "rejected", "reason": reason, "customer_message_id": told }));
    event.execution_id = before.execution_id;
    changed(tx, &ctx, event, &after).await?;
    Ok(Json(after))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    assignee_id: Option<Option<Uuid>>,
}

async fn assign(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<AssignBody>,
) -> Result<Json<ReviewView>> {
    let Some(member_id) = body.assignee_id else {
        return Err(Error::bad_request(
            "assignee_required",
            "assignee_id is required (null unassigns)",
        ));
    };
    let mut tx = ctx.begin(&db).await?;
    let before = fetch(&mut tx, id, true).await?;
    if before.status != "pending" {
        return Err(Error::conflict(
            "already_decided",
            format!("this item is already {}", before.status),
        ));
    }
    if let Some(member_id) = member_id {
        // Another tenant's member answers 404, like any foreign id (SEC-3).
        let member = sqlx::query!(
            "SELECT role, status FROM member WHERE id = $1 AND tenant_id = current_tenant_id()",
            member_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound)?;
        let role = Some(member.role.as_str())
            .filter(|_| member.status == "active")
            .and_then(Role::parse);
        if !role.is_some_and(|r| r.can(Permission::ReviewsDecide)) {
            return Err(Error::bad_request(
                "invalid_assignee",
                "the assignee must be an active member who may decide reviews",
            ));
        }
        // Giving an item to someone who could not decide it would only park it.
        let required = RequiredRole::parse(&before.required_role).unwrap_or(RequiredRole::Owner);
        if !role.is_some_and(|r| required.allows(r)) {
            return Err(Error::bad_request(
                "assignee_cannot_decide",
                format!(
                    "this item needs {} to decide it; the assignee's role is not enough",
                    match required {
                        RequiredRole::Owner => "an owner",
                        RequiredRole::Admin => "an admin or owner",
                        RequiredRole::Reviewer => "a reviewer, admin or owner",
                    }
                ),
            ));
        }
    }
    sqlx::query!(
        "UPDATE review_item SET assignee_id = $2, updated_at = now() WHERE id = $1",
        id,
        member_id
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, id, false).await?;
    let event = AuditEvent::new("review.assigned", "review_item", id)
        .before(json!({ "assignee_id": before.assignee_id }))
        .after(json!({ "assignee_id": after.assignee_id }));
    changed(tx, &ctx, event, &after).await?;
    Ok(Json(after))
}

async fn show_policy(State(db): State<Db>, ctx: Ctx) -> Result<Json<ReviewPolicy>> {
    let mut tx = ctx.begin(&db).await?;
    let policy = load_policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(policy))
}

async fn update_policy(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> Result<Json<ReviewPolicy>> {
    let policy: ReviewPolicy = serde_json::from_value(body)
        .map_err(|e| Error::bad_request("invalid_policy", e.to_string()))?;
    policy
        .validate()
        .map_err(|e| Error::bad_request("invalid_policy", e))?;
    let policy = policy.normalized();
    let mut tx = ctx.begin(&db).await?;
    let before = load_policy(&mut tx).await?;
    let stored = serde_json::to_value(&policy).map_err(anyhow::Error::from)?;
    sqlx::query!(
        "INSERT INTO agent_settings (tenant_id, review_policy) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET review_policy = EXCLUDED.review_policy, updated_at = now()",
        ctx.tenant_id,
        stored
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("review_policy.updated", "agent_settings", ctx.tenant_id)
            .before(&before)
            .after(&policy),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(policy))
}
