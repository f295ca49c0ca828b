//! The review queue: what the agent may not do alone waits here for a person (AGT-6), and so do
//! low-confidence drafts, guardrail flags and requests for human review (AGT-7). Items are
//! opened with the demands of the tenant's approval policy (role, number of approvals, expiry,
//! SLA); approval is four-eyes; an approved action is executed by a job exactly once (its
//! status moves `approved → executing → executed` under a row lock, and the endpoint gets the
//! item's idempotency key); an item that waits too long is rejected as expired and the
//! customer is told (fail closed).

mod actions;
pub mod policy;
pub mod routes;

use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::agent::tools;
use crate::app::AppState;
use crate::audit::{self, AuditEvent, AuditSource};
use crate::conversations::{self, Author};
use crate::error::Result;
use crate::events::{self, Event};
use crate::queue::{Job, Outcome};
pub use actions::{tenant_actions, TenantAction, MATERIAL_KINDS};
pub use policy::{RequiredRole, ReviewPolicy, Subject};

/// Runs an approved action.
pub const EXECUTE_JOB: &str = "review.execute";

pub const KINDS: &[&str] = &["action", "low_confidence", "guardrail_flag", "human_review"];

/// Who asked for the review.
#[derive(Debug, Clone, Copy)]
pub enum Requester {
    Agent,
    Member(Uuid),
    Customer,
}

impl Requester {
    fn label(self) -> &'static str {
        match self {
            Requester::Agent => "agent",
            Requester::Member(_) => "member",
            Requester::Customer => "customer",
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
    pub kind: &'static str,
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
#[tracing::instrument(skip_all, fields(tenant_id = %source.tenant_id, kind = item.kind))]
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
        item.kind,
        item.conversation_id,
        item.execution_id,
        item.action.map(|a| a.id),
        item.proposal,
        item.confidence,
        item.findings,
        item.requester.label(),
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
        "kind": item.kind, "conversation_id": item.conversation_id, "requested_by": item.requester.label(),
        "required_role": requirement.role.as_str(), "approvals_required": requirement.approvals,
    }));
    event.execution_id = item.execution_id;
    audit::record(conn, source, event).await?;
    announce(conn, source.tenant_id, id, item.conversation_id, "pending").await?;
    Ok(Some(id))
}

/// Tells live streams that an item changed.
pub(crate) async fn announce(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    item_id: Uuid,
    conversation_id: Option<Uuid>,
    status: &str,
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

/// Kinds where the customer asked or was promised something, so hears the outcome of a
/// rejection or an expiry: an action (they were told it waits for approval) and a human-review
/// request (they asked for it).
///
/// Not a low-confidence draft: when it was opened the conversation went to a person, and the
/// customer was neither shown the draft nor promised anything about it; the draft is only a
/// suggestion to whoever answers in the inbox. Rejecting it (or letting it expire) means the
/// draft is not sent; the conversation itself stays with the people, who answer the customer
/// themselves. Telling the customer "your request was not approved" about a request they never
/// made would be wrong. Nor a guardrail flag: the run went on and the customer already has
/// its answer; the flag only asks a person to look.
pub(crate) fn customer_waits(kind: &str) -> bool {
    matches!(kind, "action" | "human_review")
}

/// Rejects every pending item whose time ran out, in every tenant (fail closed): the item is
/// rejected with reason `expired`, the customer is told with the tenant's wording, and the
/// fact is audited. Returns how many expired.
pub async fn expire_due(state: &AppState) -> Result<usize> {
    let due = sqlx::query!(
        "SELECT id, tenant_id FROM review_item WHERE status = 'pending' AND expires_at <= now()
         ORDER BY expires_at LIMIT 500"
    )
    .fetch_all(&state.db.system)
    .await?;
    let mut expired = 0;
    for row in due {
        let mut tx = state.db.tenant_tx(row.tenant_id).await?;
        let item = sqlx::query!(
            "SELECT kind, conversation_id, status, expires_at FROM review_item WHERE id = $1 FOR UPDATE",
            row.id
        )
        .fetch_one(&mut *tx)
        .await?;
        let still_due = item.status == "pending"
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
        if let (true, Some(conversation_id)) = (customer_waits(&item.kind), item.conversation_id) {
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
            "rejected",
        )
        .await?;
        tx.commit().await?;
        expired += 1;
    }
    Ok(expired)
}

/// The job that carries out an approved action, exactly once.
pub async fn run_execute_job(state: &AppState, job: &Job) -> Outcome {
    let Some(item_id) = job
        .payload
        .get("review_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Outcome::Fail {
            error: "the job names no review item".into(),
        };
    };
    match execute(state, job, item_id).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
    }
}

async fn execute(state: &AppState, job: &Job, item_id: Uuid) -> Result<Outcome> {
    let tenant_id = job.tenant_id;
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let item = sqlx::query!(
        "SELECT status, action_id, conversation_id, execution_id, proposal, approved_proposal, idempotency_key,
                decided_by
         FROM review_item WHERE id = $1 FOR UPDATE",
        item_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(item) = item else {
        return Ok(Outcome::Done);
    };
    match item.status.as_str() {
        // Claim it: from here on a retry knows the endpoint may have been called already.
        "approved" => {
            sqlx::query!(
                "UPDATE review_item SET status = 'executing', updated_at = now() WHERE id = $1",
                item_id
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        "executing" => tx.commit().await?,
        // Executed, failed or never approved: nothing to do, whatever the queue says.
        _ => return Ok(Outcome::Done),
    }

    let action = match item.action_id {
        Some(id) => tenant_actions(&mut *state.db.tenant_tx(tenant_id).await?)
            .await?
            .into_iter()
            .find(|a| a.id == id),
        None => None,
    };
    let proposal = item.approved_proposal.unwrap_or(item.proposal);
    let (status, body) = match (&action, item.conversation_id) {
        (Some(action), Some(conversation_id)) => {
            tools::invoke(
                state,
                action,
                &proposal["arguments"],
                conversation_id,
                &item.idempotency_key,
            )
            .await
        }
        _ => (0, "the action no longer exists".to_string()),
    };
    let success = (200..300).contains(&status);
    let permanent =
        action.is_none() || ((400..500).contains(&status) && status != 408 && status != 429);
    if !success && !permanent && job.attempts < job.max_attempts {
        return Ok(Outcome::Retry {
            error: format!("the action endpoint answered {status}: {body}"),
            after: None,
        });
    }

    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let final_status = if success { "executed" } else { "failed" };
    let result = json!({ "status": status, "body": body });
    sqlx::query!(
        "UPDATE review_item SET status = $2, result = $3, executed_at = now(), updated_at = now()
         WHERE id = $1 AND status = 'executing'",
        item_id,
        final_status,
        result
    )
    .execute(&mut *tx)
    .await?;
    if let Some(conversation_id) = item.conversation_id {
        if success {
            let policy = load_policy(&mut tx).await?;
            let lang = conversations::language(&mut tx, conversation_id).await?;
            let author = item.decided_by.map_or(Author::System, Author::Member);
            conversations::post_outbound(
                &mut tx,
                tenant_id,
                conversation_id,
                author,
                policy.approval_message(lang),
            )
            .await?;
        } else {
            crate::agent::runtime::hand_to_humans(
                &mut tx,
                tenant_id,
                conversation_id,
                "approved_action_failed",
                None,
            )
            .await?;
        }
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
    .after(json!({ "status": final_status, "http_status": status, "action_id": item.action_id }));
    event.execution_id = item.execution_id;
    audit::record(&mut tx, &AuditSource::system(tenant_id), event).await?;
    announce(
        &mut tx,
        tenant_id,
        item_id,
        item.conversation_id,
        final_status,
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Done)
}
