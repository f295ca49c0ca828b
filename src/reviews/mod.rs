//! The review queue: what the agent may not do alone waits here for a person (AGT-6), and so do
//! low-confidence drafts, guardrail flags and requests for human review (AGT-7). Items are
//! opened with the demands of the tenant's approval policy (role, number of approvals, expiry,
//! SLA); approval is four-eyes; an approved action is executed by a job exactly once (its
//! status moves `approved → executing → executed` under a row lock, and the endpoint gets the
//! item's idempotency key); an item that waits too long is rejected as expired and the
//! customer is told (fail closed).

mod actions;
mod decide;
pub mod draft;
pub mod erasure;
mod item;
pub mod policy;
mod policy_routes;
pub mod routes;
pub mod worklist;

use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, AuditSource};
use crate::conversations::{self, Author};
use crate::db::Db;
use crate::error::Result;
use crate::events::{self, Event};
use crate::queue::Job;
pub use actions::{
    create_action, delete_action, tenant_actions, ActionKind, NewAction, TenantAction,
    MATERIAL_KINDS,
};
pub use decide::{
    approval_refusal, approve_item, assign_item, reject_item, ApproveBody, Edit, Outcome,
};
pub use item::{RequestedBy, ReviewKind, ReviewStatus};
pub use policy::{RequiredRole, ReviewPolicy, Subject};

/// Runs an approved action. Enqueued here with the item's id when the last approval is given;
/// handled by the agent, which calls the tenant's actions, through [`claim_approved`] and
/// [`settle_approved`]: the review queue never calls up into the agent.
pub const EXECUTE_JOB: &str = "review.execute";

/// Who asked for the review.
#[derive(Debug, Clone, Copy)]
pub enum Requester {
    Agent,
    Member(Uuid),
    Customer,
}

impl Requester {
    fn requested_by(self) -> RequestedBy {
        match self {
            Requester::Agent => RequestedBy::Agent,
            Requester::Member(_) => RequestedBy::Member,
            Requester::Customer => RequestedBy::Customer,
        }
    }

    fn member(self) -> Option<Uuid> {
        match self {
            Requester::Member(id) => Some(id),
            _ => None,
        }
    }
}

/// A new item for the queue.
pub struct NewItem<'a> {
    pub kind: ReviewKind,
    pub conversation_id: Option<Uuid>,
    pub execution_id: Option<Uuid>,
    pub action: Option<&'a TenantAction>,
    pub proposal: Value,
    pub amount: Option<f64>,
    pub confidence: Option<f32>,
    pub findings: Value,
    pub requester: Requester,
    pub note: Option<String>,
    /// Opening the same key twice opens one item.
    pub idempotency_key: String,
}

/// The tenant's approval policy (defaults when none is stored).
pub async fn load_policy(conn: &mut PgConnection) -> Result<ReviewPolicy> {
    let stored = sqlx::query_scalar!(
        "SELECT review_policy FROM agent_settings WHERE tenant_id = current_tenant_id()"
    )
    .fetch_optional(conn)
    .await?;
    Ok(stored
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

/// Opens an item on the caller's tenant transaction, with the demands of the tenant's policy.
/// Returns `None` when an item with the same idempotency key exists already.
#[tracing::instrument(skip_all, fields(tenant_id = %source.tenant_id, kind = item.kind.as_str()))]
pub async fn open(
    conn: &mut PgConnection,
    source: &AuditSource,
    item: NewItem<'_>,
) -> Result<Option<Uuid>> {
    let policy = load_policy(&mut *conn).await?;
    let requirement = policy.requirement(Subject {
        kind: item.action.and_then(|a| a.kind.as_deref()),
        action: item.action.map(|a| a.name.as_str()),
        amount: item.amount,
    });
    let id = Uuid::now_v7();
    let opened = sqlx::query_scalar!(
        "INSERT INTO review_item (id, tenant_id, kind, conversation_id, execution_id, action_id, proposal, confidence,
                                  findings, requested_by, requested_by_member, request_note, required_role,
                                  approvals_required, policy, due_at, expires_at, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                 now() + make_interval(secs => $16), now() + make_interval(secs => $17), $18)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id",
        id,
        source.tenant_id,
        item.kind.as_str(),
        item.conversation_id,
        item.execution_id,
        item.action.map(|a| a.id),
        item.proposal,
        item.confidence,
        item.findings,
        item.requester.requested_by().as_str(),
        item.requester.member(),
        item.note,
        requirement.role.as_str(),
        requirement.approvals,
        json!({ "matched_rules": requirement.matched_rules, "amount": item.amount,
                "action_kind": item.action.and_then(|a| a.kind.clone()) }),
        requirement.sla.as_secs_f64(),
        requirement.expires_in.as_secs_f64(),
        item.idempotency_key
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = opened else { return Ok(None) };
    let mut event = AuditEvent::new("review.opened", "review_item", id).after(json!({
        "kind": item.kind, "conversation_id": item.conversation_id, "requested_by": item.requester.requested_by(),
        "required_role": requirement.role.as_str(), "approvals_required": requirement.approvals,
    }));
    event.execution_id = item.execution_id;
    audit::record(conn, source, event).await?;
    announce(
        conn,
        source.tenant_id,
        id,
        item.conversation_id,
        ReviewStatus::Pending,
    )
    .await?;
    Ok(Some(id))
}

/// Tells live streams that an item changed.
pub(crate) async fn announce(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    item_id: Uuid,
    conversation_id: Option<Uuid>,
    status: ReviewStatus,
) -> Result<()> {
    events::publish(
        conn,
        &Event {
            tenant_id,
            kind: "review.updated".into(),
            conversation_id,
            message_id: None,
            data: json!({ "review_id": item_id, "status": status }),
        },
    )
    .await?;
    Ok(())
}

/// Rejects every pending item whose time ran out, in every tenant (fail closed): the item is
/// rejected with reason `expired`, the customer is told with the tenant's wording, and the
/// fact is audited. Returns how many expired.
pub async fn expire_due(db: &Db) -> Result<usize> {
    let due = sqlx::query!(
        "SELECT id, tenant_id FROM review_item WHERE status = 'pending' AND expires_at <= now()
         ORDER BY expires_at LIMIT 500"
    )
    .fetch_all(&db.system)
    .await?;
    let mut expired = 0;
    for row in due {
        let mut tx = db.tenant_tx(row.tenant_id).await?;
        let item = sqlx::query!(
            r#"SELECT kind AS "kind: ReviewKind", conversation_id, status AS "status: ReviewStatus", expires_at
               FROM review_item WHERE id = $1 FOR UPDATE"#,
            row.id
        )
        .fetch_one(&mut *tx)
        .await?;
        let still_due = item.status == ReviewStatus::Pending
            && item
                .expires_at
                .is_some_and(|at| at <= OffsetDateTime::now_utc());
        if !still_due {
            continue;
        }
        sqlx::query!(
            "UPDATE review_item SET status = 'rejected', expired = true, decision_reason = 'expired',
                    decided_at = now(), updated_at = now()
             WHERE id = $1",
            row.id
        )
        .execute(&mut *tx)
        .await?;
        let mut told = None;
        if let (true, Some(conversation_id)) = (item.kind.customer_waits(), item.conversation_id) {
            let policy = load_policy(&mut tx).await?;
            let lang = conversations::language(&mut tx, conversation_id).await?;
            told = Some(
                conversations::post_outbound(
                    &mut tx,
                    row.tenant_id,
                    conversation_id,
                    Author::System,
                    policy.expiry_message(lang),
                )
                .await?,
            );
        }
        audit::record(
            &mut tx,
            &AuditSource::system(row.tenant_id),
            AuditEvent::new("review.expired", "review_item", row.id)
                .before(json!({ "status": "pending" }))
                .after(
                    json!({ "status": "rejected", "expired": true, "customer_message_id": told }),
                ),
        )
        .await?;
        announce(
            &mut tx,
            row.tenant_id,
            row.id,
            item.conversation_id,
            ReviewStatus::Rejected,
        )
        .await?;
        tx.commit().await?;
        expired += 1;
    }
    Ok(expired)
}

/// The review item an [`EXECUTE_JOB`] names.
pub fn approved_item(job: &Job) -> Option<Uuid> {
    job.payload
        .get("review_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// An approved action, claimed for execution: what the endpoint is called with, and what
/// [`settle_approved`] needs to record the outcome.
pub struct Approved {
    pub item_id: Uuid,
    pub action_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    /// As approved: the reviewer's edit, else the proposal.
    pub arguments: Value,
    /// The item's own key, sent to the endpoint, so that a retry after a crash acts once.
    pub idempotency_key: String,
    execution_id: Option<Uuid>,
    decided_by: Option<Uuid>,
}

/// Claims an approved item for execution: `approved → executing` under the row lock,
/// committed before the endpoint is called, so from then on a retry knows the endpoint may have
/// been called already (and sends the same idempotency key). An item found `executing` is such
/// a retry. `None`: nothing to do (executed, failed, never approved, or gone), whatever the
/// queue says.
pub async fn claim_approved(db: &Db, tenant_id: Uuid, item_id: Uuid) -> Result<Option<Approved>> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    let item = sqlx::query!(
        r#"SELECT status AS "status: ReviewStatus", action_id, conversation_id, execution_id, proposal,
                  approved_proposal, idempotency_key, decided_by
           FROM review_item WHERE id = $1 FOR UPDATE"#,
        item_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(item) = item else {
        return Ok(None);
    };
    match item.status {
        ReviewStatus::Approved => {
            sqlx::query!(
                "UPDATE review_item SET status = 'executing', updated_at = now() WHERE id = $1",
                item_id
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        ReviewStatus::Executing => tx.commit().await?,
        _ => return Ok(None),
    }
    let proposal = item.approved_proposal.unwrap_or(item.proposal);
    Ok(Some(Approved {
        item_id,
        action_id: item.action_id,
        conversation_id: item.conversation_id,
        arguments: proposal["arguments"].clone(),
        idempotency_key: item.idempotency_key,
        execution_id: item.execution_id,
        decided_by: item.decided_by,
    }))
}

/// Records how a claimed action ended, on the caller's tenant transaction: `executed` or
/// `failed` with the endpoint's answer; on success the customer hears the tenant's approval
/// wording in the approver's name. Audited and announced. (On failure the caller hands the
/// conversation to the people, in the same transaction.)
pub async fn settle_approved(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    approved: &Approved,
    success: bool,
    status: u16,
    body: &str,
) -> Result<()> {
    let item_id = approved.item_id;
    let final_status = if success {
        ReviewStatus::Executed
    } else {
        ReviewStatus::Failed
    };
    let result = json!({ "status": status, "body": body });
    sqlx::query!(
        "UPDATE review_item SET status = $2, result = $3, executed_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'executing'",
        item_id,
        final_status.as_str(),
        result
    )
    .execute(&mut *conn)
    .await?;
    if let (true, Some(conversation_id)) = (success, approved.conversation_id) {
        let policy = load_policy(&mut *conn).await?;
        let lang = conversations::language(&mut *conn, conversation_id).await?;
        let author = approved.decided_by.map_or(Author::System, Author::Member);
        conversations::post_outbound(
            &mut *conn,
            tenant_id,
            conversation_id,
            author,
            policy.approval_message(lang),
        )
        .await?;
    }
    let mut event = AuditEvent::new(
        if success {
            "review.executed"
        } else {
            "review.execution_failed"
        },
        "review_item",
        item_id,
    )
    .after(
        json!({ "status": final_status, "http_status": status, "action_id": approved.action_id }),
    );
    event.execution_id = approved.execution_id;
    audit::record(&mut *conn, &AuditSource::system(tenant_id), event).await?;
    announce(
        conn,
        tenant_id,
        item_id,
        approved.conversation_id,
        final_status,
    )
    .await?;
    Ok(())
}

/// The review items of these conversations, every column as stored, oldest first: for the
/// export of the contact they belong to (DSR-1).
pub async fn export_items(
    conn: &mut PgConnection,
    conversation_ids: &[Uuid],
) -> Result<Vec<Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(r) AS "row!" FROM review_item r
           WHERE conversation_id = ANY($1) AND tenant_id = current_tenant_id()
           ORDER BY created_at, id"#,
        conversation_ids
    )
    .fetch_all(conn)
    .await?)
}
