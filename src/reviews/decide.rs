//! Deciding a review item: approve (optionally after editing), reject with a reason, reassign.
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

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::policy::{RequiredRole, Subject};
use super::routes::{fetch, note, ReviewView};
use super::{
    announce, load_policy, tenant_actions, ReviewKind, ReviewStatus, TenantAction, EXECUTE_JOB,
};
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::conversations::{self, Author};
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::guardrails::schema;
use crate::http::{Contract, Json, Path};
use crate::queue::{self, NewJob};
use crate::rbac::{Permission, Role};
use utoipa::ToSchema;

/// A change to what is approved: an action's arguments, or a draft's text.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReviewEdit)]
pub struct Edit {
    /// For an action: its arguments as approved, valid against its `parameters` schema.
    #[schema(value_type = Option<super::routes::ActionArguments>)]
    pub arguments: Option<Value>,
    /// For a draft: the text to send instead; trimmed.
    #[schema(min_length = 1, max_length = 4096, pattern = r"\S")]
    pub draft: Option<String>,
}

/// An approval: `{}` at least. A human-review request is resolved with an `outcome` (and
/// optionally the `message` the customer receives); an action or a draft may be edited, which
/// withdraws the approvals given to it before the edit.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReviewApprovalRequest)]
pub struct ApproveBody {
    /// Trimmed; empty means none.
    #[schema(max_length = 4000)]
    pub note: Option<String>,
    /// What this approver changed before approving. Approvals already given are withdrawn:
    /// each approver approves exactly what will execute.
    pub edit: Option<Edit>,
    /// For a human-review request (required there): what the review found.
    pub outcome: Option<Outcome>,
    /// For a human-review request: what the customer is told (else the tenant's wording);
    /// trimmed.
    #[schema(min_length = 1, max_length = 4096, pattern = r"\S")]
    pub message: Option<String>,
}

/// How a contested decision was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ReviewOutcome)]
pub enum Outcome {
    /// The decision stands.
    Upheld,
    /// The reviewer changed it.
    Changed,
}

/// What every decision answers: the item as it now is, or that it is no longer pending.
pub(super) fn decided(contract: Contract) -> Contract {
    contract
        .ok::<ReviewView>()
        .error(StatusCode::CONFLICT, "already_decided")
}

/// Checks what an approval says against the item's kind, before anything is written.
fn check_approval(item: &ReviewView, body: &ApproveBody) -> Result<()> {
    let resolves = item.kind == ReviewKind::HumanReview;
    if resolves && body.outcome.is_none() {
        return Err(Error::conflict(
            "outcome_required",
            "a human review is resolved with an outcome: upheld or changed",
        ));
    }
    if !resolves && (body.outcome.is_some() || body.message.is_some()) {
        return Err(Error::conflict(
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
    if body.edit.is_some()
        && matches!(
            item.kind,
            ReviewKind::HumanReview | ReviewKind::GuardrailFlag
        )
    {
        return Err(Error::conflict(
            "invalid_edit",
            "only an action or a draft can be edited",
        ));
    }
    if item.kind == ReviewKind::LowConfidence && body.edit.is_none() {
        let proposal = item.approved_proposal.as_ref().unwrap_or(&item.proposal);
        if proposal["draft"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            return Err(Error::conflict(
                "draft_required",
                "this item has no draft to send: approve it with edit.draft",
            ));
        }
    }
    Ok(())
}

/// Every decision ends alike: audited and announced in the transaction that made it, then
/// committed.
pub(super) async fn changed(
    mut tx: Tx,
    ctx: &Ctx,
    event: AuditEvent,
    after: &ReviewView,
) -> Result<()> {
    ctx.audit(&mut tx, event).await?;
    announce(
        &mut tx,
        ctx.tenant_id,
        after.id,
        after.conversation_id,
        after.status,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Refusals every decision shares: the item must still wait, and not be past its time.
pub(super) fn still_pending(item: &ReviewView) -> Result<()> {
    if item.status != ReviewStatus::Pending {
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

pub(super) async fn approve(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    // A JSON body, `{}` at least: an approval runs an action, so it is never read from a
    // request that merely reached the route (an empty `text/plain` POST once approved).
    Json(body): Json<ApproveBody>,
) -> Result<Json<ReviewView>> {
    approve_item(&db, &ctx, id, &body).await.map(Json)
}

/// Why this member may not approve the item as it stands, if they may not: four eyes, the
/// role the item needs, or an approval of theirs already counted. The approval itself checks
/// the same; the web app shows the reason instead of a button that would be refused.
pub fn approval_refusal(item: &ReviewView, ctx: &Ctx, approved_already: bool) -> Option<Error> {
    if item.requested_by_member == Some(ctx.member_id) {
        return Some(Error::Forbidden(
            "four eyes: whoever asked for a review cannot approve it",
        ));
    }
    if !item.required_role.allows(ctx.role) {
        return Some(role_refusal(item.required_role));
    }
    if approved_already {
        return Some(already_approved());
    }
    None
}

fn already_approved() -> Error {
    Error::conflict(
        "already_approved",
        "you approved this item already; it needs another person's approval",
    )
}

/// Approves an item, as `POST /api/v1/reviews/{id}/approve` does; with an edit, the approvals
/// given to the item as it was are withdrawn first (recorded in the audit entry, with the
/// proposal before and after the edit), so the item executes only what its approvers saw.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, review_id = %id))]
pub async fn approve_item(db: &Db, ctx: &Ctx, id: Uuid, body: &ApproveBody) -> Result<ReviewView> {
    let note = note(body.note.as_deref())?;
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, id, true).await?;
    still_pending(&before)?;
    check_approval(&before, body)?;
    let mine = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM review_approval WHERE review_item_id = $1 AND member_id = $2)",
        id,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?
    .unwrap_or(false);
    // An edit withdraws every approval, this member's own included, so it may approve again
    // what it changed.
    if let Some(refusal) = approval_refusal(&before, ctx, mine && body.edit.is_none()) {
        return Err(refusal);
    }
    let mut required = before.required_role;

    let mut approvals_before = before.approvals;
    let mut approvals_required = before.approvals_required;
    let mut edit_record = Value::Null;
    if let Some(edit) = &body.edit {
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
        // Each approver approves exactly what will execute: an approval of the item before
        // this edit is not an approval of the edit.
        let withdrawn = sqlx::query_scalar!(
            "DELETE FROM review_approval WHERE review_item_id = $1 RETURNING member_id",
            id
        )
        .fetch_all(&mut *tx)
        .await?;
        approvals_before = 0;
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
        edit_record = json!({
            "before": before.approved_proposal.as_ref().unwrap_or(&before.proposal),
            "after": edited.proposal,
            "approvals_withdrawn": withdrawn,
        });
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
    let approvals = approvals_before + 1;
    let complete = approvals >= i64::from(approvals_required);
    let mut told = None;
    if complete {
        let current = fetch(&mut tx, id, false).await?;
        told = carry_out(&mut tx, ctx, &current, body).await?;
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
                   "edited": body.edit.is_some(), "edit": edit_record, "note": note,
                   "outcome": body.outcome, "customer_message_id": told }));
    event.execution_id = before.execution_id;
    changed(tx, ctx, event, &after).await?;
    Ok(after)
}

/// An edit, checked against the item's kind.
struct Edited {
    proposal: Value,
    /// For an action: the action and the edited amount, which may change what the item needs.
    action: Option<(TenantAction, Option<f64>)>,
}

/// Checks an edit against the item's kind.
async fn edited_proposal(tx: &mut Tx, item: &ReviewView, edit: &Edit) -> Result<Edited> {
    if item.kind == ReviewKind::Action {
        if edit.draft.is_some() {
            return Err(Error::conflict(
                "invalid_edit",
                "an action is edited through its arguments",
            ));
        }
        let arguments = edit.arguments.clone().ok_or_else(|| {
            Error::conflict("invalid_edit", "edit.arguments is required for an action")
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
        return Err(Error::conflict(
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
    match item.kind {
        ReviewKind::HumanReview => {
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
        ReviewKind::GuardrailFlag => {
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
    if item.kind == ReviewKind::Action {
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
pub(super) async fn resolve(tx: &mut Tx, ctx: &Ctx, id: Uuid, result: Value) -> Result<()> {
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReviewRejection)]
pub(super) struct RejectBody {
    /// Why; trimmed.
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    reason: String,
}

pub(super) async fn reject(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<RejectBody>,
) -> Result<Json<ReviewView>> {
    reject_item(&db, &ctx, id, &body.reason).await.map(Json)
}

/// Rejects an item with a reason, as `POST /api/v1/reviews/{id}/reject` does: final, and the
/// customer who waits is told in their language.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, review_id = %id))]
pub async fn reject_item(db: &Db, ctx: &Ctx, id: Uuid, reason: &str) -> Result<ReviewView> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(Error::bad_request(
            "reason_required",
            "a rejection needs a reason of 1 to 2000 characters",
        ));
    }
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, id, true).await?;
    still_pending(&before)?;
    // A rejection is as final as an approval: it needs the same role.
    let required = before.required_role;
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
    if let (true, Some(conversation_id)) = (before.kind.customer_waits(), before.conversation_id) {
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
    changed(tx, ctx, event, &after).await?;
    Ok(after)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReviewAssignment)]
pub(super) struct AssignBody {
    /// An active member who may decide the item; `null` unassigns it.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>, required = true)]
    assignee_id: Option<Option<Uuid>>,
}

pub(super) async fn assign(
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
    assign_item(&db, &ctx, id, member_id).await.map(Json)
}

/// Gives a pending item to a member who may decide it, or unassigns it (`None`), as
/// `POST /api/v1/reviews/{id}/assign` does.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, review_id = %id))]
pub async fn assign_item(
    db: &Db,
    ctx: &Ctx,
    id: Uuid,
    member_id: Option<Uuid>,
) -> Result<ReviewView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, id, true).await?;
    if before.status != ReviewStatus::Pending {
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
            return Err(Error::conflict(
                "invalid_assignee",
                "the assignee must be an active member who may decide reviews",
            ));
        }
        // Giving an item to someone who could not decide it would only park it.
        let required = before.required_role;
        if !role.is_some_and(|r| required.allows(r)) {
            return Err(Error::conflict(
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
    changed(tx, ctx, event, &after).await?;
    Ok(after)
}
