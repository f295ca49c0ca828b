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

use super::policy::{RequiredRole, ReviewPolicy};
use super::{
    decide, policy_routes, tenant_actions, NewItem, RequestedBy, Requester, ReviewKind,
    ReviewStatus,
};
use crate::auth::Ctx;
use crate::conversations;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::guardrails::schema;
use crate::http::{Access, Api, Contract, Json, Page, Path, Query};
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
        "/api/v1/reviews",
        Requires(Permission::ReviewsRead),
        ("reviews", "List review items, oldest waiting first"),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<ReviewView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit")
            .error(StatusCode::BAD_REQUEST, "invalid_status")
            .error(StatusCode::BAD_REQUEST, "invalid_kind"),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/reviews",
        Requires(Permission::ReviewsRequest),
        (
            "reviews",
            "Ask for human review of an agent decision, or propose an action for approval",
        ),
        Contract::new()
            .body::<CreateBody>()
            .closed_variants()
            .created::<ReviewView>()
            .error(StatusCode::BAD_REQUEST, "invalid_note")
            .error(StatusCode::BAD_REQUEST, "note_required")
            .error(StatusCode::BAD_REQUEST, "action_required")
            .error(StatusCode::BAD_REQUEST, "invalid_arguments")
            .error(StatusCode::NOT_FOUND, "not_found"),
        create,
    )
    .endpoint(
        Method::GET,
        "/api/v1/reviews/counts",
        Requires(Permission::ReviewsRead),
        ("reviews", "Count review items by status, and SLA breaches"),
        Contract::new().ok::<Counts>(),
        counts,
    )
    .endpoint(
        Method::GET,
        "/api/v1/reviews/policy",
        Requires(Permission::ReviewsRead),
        ("reviews", "The tenant's approval policy"),
        Contract::new().ok::<ReviewPolicy>(),
        policy_routes::show_policy,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/reviews/policy",
        Requires(Permission::GuardrailsManage),
        (
            "reviews",
            "Change the approval policy; applies to items opened from now on",
        ),
        // The handler reads the policy itself, so that every refusal of one, unknown fields
        // included, answers `invalid_policy`.
        Contract::new()
            .body::<ReviewPolicy>()
            .ok::<ReviewPolicy>()
            .error(StatusCode::BAD_REQUEST, "invalid_policy"),
        policy_routes::update_policy,
    )
    .endpoint(
        Method::GET,
        "/api/v1/reviews/{review_id}",
        Requires(Permission::ReviewsRead),
        (
            "reviews",
            "One review item with its conversation context and execution",
        ),
        Contract::new().ok::<Detail>(),
        show,
    )
    .endpoint(
        Method::POST,
        "/api/v1/reviews/{review_id}/approve",
        Requires(Permission::ReviewsDecide),
        (
            "reviews",
            "Approve an item (optionally edited), or resolve a human review with an outcome; the last needed approval carries it out",
        ),
        decide::decided(Contract::new().body::<decide::ApproveBody>())
            .error(StatusCode::BAD_REQUEST, "invalid_note")
            .error(StatusCode::CONFLICT, "outcome_required")
            .error(StatusCode::CONFLICT, "invalid_approval")
            .error(StatusCode::BAD_REQUEST, "invalid_message")
            .error(StatusCode::BAD_REQUEST, "invalid_edit")
            .error(StatusCode::CONFLICT, "invalid_edit")
            .error(StatusCode::CONFLICT, "draft_required")
            .error(StatusCode::BAD_REQUEST, "invalid_arguments")
            .error(StatusCode::CONFLICT, "review_expired")
            .error(StatusCode::CONFLICT, "already_approved")
            .error(StatusCode::CONFLICT, "action_gone"),
        decide::approve,
    )
    .endpoint(
        Method::POST,
        "/api/v1/reviews/{review_id}/reject",
        Requires(Permission::ReviewsDecide),
        (
            "reviews",
            "Reject an item with a reason; final, and the customer is told",
        ),
        decide::decided(Contract::new().body::<decide::RejectBody>())
            .error(StatusCode::BAD_REQUEST, "reason_required")
            .error(StatusCode::CONFLICT, "review_expired"),
        decide::reject,
    )
    .endpoint(
        Method::POST,
        "/api/v1/reviews/{review_id}/assign",
        Requires(Permission::ReviewsDecide),
        ("reviews", "Give an item to a reviewer, or unassign it"),
        decide::decided(Contract::new().body::<decide::AssignBody>())
            .error(StatusCode::BAD_REQUEST, "assignee_required")
            .error(StatusCode::CONFLICT, "invalid_assignee")
            .error(StatusCode::CONFLICT, "assignee_cannot_decide"),
        decide::assign,
    )
    .endpoint(
        Method::POST,
        "/api/v1/reviews/{review_id}/send-draft",
        // The person answering the conversation decides what the customer reads: replying is
        // the permission it takes, not a reviewer's.
        Requires(Permission::ConversationsReply),
        (
            "reviews",
            "Send a low-confidence draft, as written or edited, as your own reply; the draft is closed as handled by you",
        ),
        decide::decided(Contract::new().body::<super::draft::DraftReply>())
            .error(StatusCode::CONFLICT, "not_a_draft")
            .error(StatusCode::CONFLICT, "review_expired")
            .error(StatusCode::BAD_REQUEST, "invalid_message")
            .error(StatusCode::CONFLICT, "outside_service_window"),
        super::draft::send_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/reviews/{review_id}/discard-draft",
        Requires(Permission::ConversationsReply),
        (
            "reviews",
            "Discard a low-confidence draft unsent; it is closed as handled by you",
        ),
        decide::decided(Contract::new())
            .error(StatusCode::CONFLICT, "not_a_draft")
            .error(StatusCode::CONFLICT, "review_expired"),
        super::draft::discard_route,
    )
}

/// A review item. Always every field; those without a value are `null`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Review)]
pub struct ReviewView {
    pub id: Uuid,
    pub kind: ReviewKind,
    pub status: ReviewStatus,
    /// Rejected because nobody decided in time.
    pub expired: bool,
    #[schema(required = true)]
    pub conversation_id: Option<Uuid>,
    /// The agent execution the item is about.
    #[schema(required = true)]
    pub execution_id: Option<Uuid>,
    /// For an action: the tenant action proposed.
    #[schema(required = true)]
    pub action_id: Option<Uuid>,
    /// What is proposed, by kind: an action's `action`, `arguments` and `amount`; a draft's
    /// `draft`; a flag's `outcome` and `rules`; a human review's `decision` (and the customer's
    /// `request`). After retention only `action`, `amount`, `rules` and `outcome` remain.
    #[schema(value_type = Object)]
    pub proposal: Value,
    /// The proposal as a reviewer edited it.
    #[schema(value_type = Option<Object>, required = true)]
    pub approved_proposal: Option<Value>,
    #[schema(required = true, minimum = 0.0, maximum = 1.0)]
    pub confidence: Option<f32>,
    /// The guardrail verdicts that found something, one object per stage.
    #[schema(value_type = Vec<Object>)]
    pub findings: Value,
    pub requested_by: RequestedBy,
    #[schema(required = true)]
    pub requested_by_member: Option<Uuid>,
    #[schema(required = true)]
    pub request_note: Option<String>,
    #[schema(required = true)]
    pub assignee_id: Option<Uuid>,
    /// The least role that may decide it.
    pub required_role: RequiredRole,
    #[schema(minimum = 1, maximum = 5)]
    pub approvals_required: i32,
    /// Approvals given so far.
    pub approvals: i64,
    /// What the approval policy demanded when the item was opened: `matched_rules`, `amount`,
    /// `action_kind`.
    #[schema(value_type = Object)]
    pub policy: Value,
    #[schema(required = true)]
    pub decided_by: Option<Uuid>,
    /// Why it was rejected (`expired` when its time ran out).
    #[schema(required = true)]
    pub decision_reason: Option<String>,
    /// What carrying it out came to: the action endpoint's `status` and `body`, the message
    /// sent, or a human review's `outcome`.
    #[schema(value_type = Option<Object>, required = true)]
    pub result: Option<Value>,
    /// Pending past its SLA.
    pub sla_breached: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When a pending item breaches its SLA.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub due_at: Option<OffsetDateTime>,
    /// When a pending item is rejected as expired.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub executed_at: Option<OffsetDateTime>,
    /// When retention blanked the item's content; what was decided stays.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[param(value_type = Option<ReviewStatus>)]
    status: Option<String>,
    #[param(value_type = Option<ReviewKind>)]
    kind: Option<String>,
    assignee_id: Option<Uuid>,
    conversation_id: Option<Uuid>,
    /// Only the items pending past their SLA (`true`), or only the others (`false`).
    sla_breached: Option<bool>,
    /// Items created after this id (the `next_cursor` of the previous page).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
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

#[derive(Serialize, ToSchema)]
#[schema(as = ReviewCounts)]
pub struct Counts {
    pub by_status: ByStatus,
    /// The pending items of each kind.
    pub pending_by_kind: ByKind,
    /// Pending items past their SLA.
    pub sla_breached: i64,
}

/// How many items have each status (zero when none has it).
#[derive(Default, Serialize, ToSchema)]
#[schema(as = ReviewCountsByStatus)]
pub struct ByStatus {
    pub pending: i64,
    pub approved: i64,
    pub executing: i64,
    pub executed: i64,
    pub failed: i64,
    pub rejected: i64,
    pub resolved: i64,
}

impl ByStatus {
    fn of(&mut self, status: ReviewStatus) -> &mut i64 {
        match status {
            ReviewStatus::Pending => &mut self.pending,
            ReviewStatus::Approved => &mut self.approved,
            ReviewStatus::Executing => &mut self.executing,
            ReviewStatus::Executed => &mut self.executed,
            ReviewStatus::Failed => &mut self.failed,
            ReviewStatus::Rejected => &mut self.rejected,
            ReviewStatus::Resolved => &mut self.resolved,
        }
    }
}

/// How many items are of each kind (zero when none is).
#[derive(Default, Serialize, ToSchema)]
#[schema(as = ReviewCountsByKind)]
pub struct ByKind {
    pub action: i64,
    pub low_confidence: i64,
    pub guardrail_flag: i64,
    pub human_review: i64,
}

impl ByKind {
    fn of(&mut self, kind: ReviewKind) -> &mut i64 {
        match kind {
            ReviewKind::Action => &mut self.action,
            ReviewKind::LowConfidence => &mut self.low_confidence,
            ReviewKind::GuardrailFlag => &mut self.guardrail_flag,
            ReviewKind::HumanReview => &mut self.human_review,
        }
    }
}

async fn counts(State(db): State<Db>, ctx: Ctx) -> Result<Json<Counts>> {
    let mut tx = ctx.begin(&db).await?;
    let counts = count(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(counts))
}

/// The tenant's items by status, the pending ones by kind, and the SLA breaches.
pub async fn count(conn: &mut sqlx::PgConnection) -> Result<Counts> {
    let rows = sqlx::query!(
        r#"SELECT status AS "status: ReviewStatus", kind AS "kind: ReviewKind", count(*) AS "n!", count(*) FILTER (WHERE status = 'pending' AND due_at < now()) AS "breached!"
           FROM review_item WHERE tenant_id = current_tenant_id() GROUP BY status, kind"#
    )
    .fetch_all(conn)
    .await?;
    let mut counts = Counts {
        by_status: ByStatus::default(),
        pending_by_kind: ByKind::default(),
        sla_breached: 0,
    };
    for row in rows {
        *counts.by_status.of(row.status) += row.n;
        if row.status == ReviewStatus::Pending {
            *counts.pending_by_kind.of(row.kind) += row.n;
        }
        counts.sla_breached += row.breached;
    }
    Ok(counts)
}

/// A review item with what a reviewer needs to decide it.
#[derive(Serialize, ToSchema)]
#[schema(as = ReviewDetail)]
pub struct Detail {
    #[serde(flatten)]
    pub item: ReviewView,
    /// Oldest first.
    pub approvals_given: Vec<ApprovalGiven>,
    /// The conversation's latest messages (up to 20), oldest first.
    pub context: Vec<ContextMessage>,
    /// The agent execution the item is about, in brief.
    #[schema(required = true)]
    pub execution: Option<ExecutionBrief>,
}

/// One approval an item received.
#[derive(Deserialize, Serialize, ToSchema)]
#[schema(as = ReviewApproval)]
pub struct ApprovalGiven {
    pub member_id: Uuid,
    /// The approver's role when they approved.
    #[schema(value_type = crate::rbac::Role)]
    pub role: String,
    #[schema(required = true)]
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A message of the item's conversation.
#[derive(Deserialize, Serialize, ToSchema)]
#[schema(as = ReviewContextMessage)]
pub struct ContextMessage {
    pub id: Uuid,
    /// `inbound` (from the customer) or `outbound`.
    pub direction: String,
    /// `customer`, `member`, `ai` or `system`.
    pub author_kind: String,
    pub body: String,
    /// A note for the members, never sent to the customer.
    pub private: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An agent execution as a reviewer sees it; the whole record is at
/// `GET /api/v1/executions/{execution_id}`.
#[derive(Deserialize, Serialize, ToSchema)]
#[schema(as = ReviewExecution)]
pub struct ExecutionBrief {
    pub id: Uuid,
    /// How the run ended: `running`, `replied`, `blocked`, `handed_off`, `pending_review`,
    /// `failed` or `abandoned`.
    pub outcome: String,
    #[schema(required = true)]
    pub confidence: Option<f32>,
    pub provider: String,
    pub model: String,
    pub offline: bool,
    /// Why the run ended as it did, e.g. `low_confidence`; `null` while it runs.
    #[schema(required = true)]
    pub reason: Option<String>,
    /// The model's decision as recorded; `null` while the run has none.
    #[schema(value_type = Option<Object>, required = true)]
    pub decision: Option<Value>,
    /// The run's guardrail verdicts, one object per stage.
    #[schema(value_type = Option<Vec<Object>>, required = true)]
    pub guardrails: Option<Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// Reads what a query below built as JSON into the type the API answers with.
fn typed<T: serde::de::DeserializeOwned>(built: Value) -> Result<T> {
    serde_json::from_value(built)
        .map_err(|e| Error::Internal(anyhow::anyhow!("a review detail does not read: {e}")))
}

async fn show(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Json<Detail>> {
    let mut tx = ctx.begin(&db).await?;
    let shown = detail(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(shown))
}

/// One item of the caller's tenant with what a reviewer needs to decide it; another tenant's
/// id is not found.
pub async fn detail(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<Detail> {
    let item = fetch(&mut *tx, id, false).await?;
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
    Ok(Detail {
        item,
        approvals_given: approvals_given
            .into_iter()
            .map(typed)
            .collect::<Result<_>>()?,
        context: context.into_iter().map(typed).collect::<Result<_>>()?,
        execution: execution.map(typed).transpose()?,
    })
}

/// A member asking for human review of an agent decision (AGT-7), or proposing one of the
/// tenant's actions for approval (AGT-6).
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schema(as = NewReview)]
enum CreateBody {
    /// A person should look at a decision of the agent in the conversation.
    HumanReview {
        conversation_id: Uuid,
        /// The execution whose decision is contested; the conversation's latest finished one
        /// when absent.
        execution_id: Option<Uuid>,
        /// What should be reviewed, and why; trimmed.
        #[schema(
            value_type = String,
            required = true,
            min_length = 1,
            max_length = 4000,
            pattern = r"\S"
        )]
        note: Option<String>,
    },
    /// One of the tenant's actions, to be carried out once approved.
    Action {
        conversation_id: Uuid,
        #[schema(value_type = Uuid, required = true)]
        action_id: Option<Uuid>,
        /// The action's arguments, valid against its `parameters` schema; `{}` when absent.
        #[schema(value_type = Option<ActionArguments>)]
        arguments: Option<Value>,
        /// Trimmed; empty means none.
        #[schema(max_length = 4000)]
        note: Option<String>,
    },
}

/// An action's arguments: a JSON object, checked against the action's own `parameters`. A
/// named schema, so that a client generator makes one type of it (inline in a variant of a
/// tagged body, openapi-python-client makes it twice and gives up).
pub(super) struct ActionArguments;

impl utoipa::PartialSchema for ActionArguments {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::http::contract::schema(serde_json::json!({
            "type": "object",
            "description": "Free-form: an action's arguments, valid against its `parameters` schema."
        }))
    }
}

impl utoipa::ToSchema for ActionArguments {}

async fn create(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<ReviewView>)> {
    let (CreateBody::HumanReview {
        conversation_id,
        note: raw_note,
        ..
    }
    | CreateBody::Action {
        conversation_id,
        note: raw_note,
        ..
    }) = &body;
    let conversation_id = *conversation_id;
    let note = note(raw_note.as_deref())?.map(str::to_string);
    let mut tx = ctx.begin(&db).await?;
    conversations::fetch(&mut tx, conversation_id).await?;
    let source = ctx.audit_source();
    let key = format!("member:{}", Uuid::now_v7());
    let opened = match body {
        CreateBody::HumanReview { execution_id, .. } => {
            if note.is_none() {
                return Err(Error::bad_request(
                    "note_required",
                    "say what should be reviewed, and why, in note",
                ));
            }
            let execution = sqlx::query!(
                "SELECT id, outcome, record->'reason' AS reason FROM agent_execution
                 WHERE conversation_id = $1 AND ($2::uuid IS NULL OR id = $2)
                   AND outcome NOT IN ('running', 'abandoned')
                 ORDER BY started_at DESC LIMIT 1",
                conversation_id,
                execution_id
            )
            .fetch_optional(&mut *tx)
            .await?;
            if execution_id.is_some() && execution.is_none() {
                return Err(Error::NotFound);
            }
            let proposal = json!({ "decision": execution.as_ref().map(|e| json!({
                "execution_id": e.id, "outcome": e.outcome, "reason": e.reason })) });
            super::open(
                &mut tx,
                &source,
                NewItem {
                    kind: ReviewKind::HumanReview,
                    conversation_id: Some(conversation_id),
                    execution_id: execution.map(|e| e.id),
                    action: None,
                    proposal,
                    amount: None,
                    confidence: None,
                    findings: json!([]),
                    requester: Requester::Member(ctx.member_id),
                    note,
                    idempotency_key: key,
                },
            )
            .await?
        }
        CreateBody::Action {
            action_id,
            arguments,
            ..
        } => {
            let action_id = action_id.ok_or_else(|| {
                Error::bad_request("action_required", "an action review needs action_id")
            })?;
            let actions = tenant_actions(&mut tx).await?;
            let action = actions
                .iter()
                .find(|a| a.id == action_id)
                .ok_or(Error::NotFound)?;
            let arguments = arguments.unwrap_or_else(|| json!({}));
            schema::validate(&action.parameters, &arguments)
                .map_err(|e| Error::bad_request("invalid_arguments", e))?;
            let amount = action.amount(&arguments);
            super::open(
                &mut tx,
                &source,
                NewItem {
                    kind: ReviewKind::Action,
                    conversation_id: Some(conversation_id),
                    execution_id: None,
                    action: Some(action),
                    proposal: json!({ "action": action.name, "arguments": arguments, "amount": amount }),
                    amount,
                    confidence: None,
                    findings: json!([]),
                    requester: Requester::Member(ctx.member_id),
                    note,
                    idempotency_key: key,
                },
            )
            .await?
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
