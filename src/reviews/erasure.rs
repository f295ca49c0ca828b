//! A data subject's erasure (DSR-3), the review queue's part: items about the person's
//! conversations or the agent's executions about them carry their words (a human-review
//! request, an unmasked draft, an action's arguments and its endpoint's answer), and approvers'
//! notes may quote them. Called by the privacy domain on its transaction (owner pool).

use sqlx::PgConnection;
use uuid::Uuid;

pub async fn items_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    conversations: &[Uuid],
    executions: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM review_item
         WHERE tenant_id = $1 AND (conversation_id = ANY ($2) OR execution_id = ANY ($3)) ORDER BY id",
        tenant_id,
        conversations,
        executions
    )
    .fetch_all(&mut *conn)
    .await
}

/// What an erasure did to the review queue: items erased, and of those, undecided ones it
/// withdrew.
pub struct Erased {
    pub items: i64,
    pub withdrawn: i64,
}

/// Erases these items. `keep_rows`: anonymise as retention blanks content (kind, status, the
/// decision, who and when stay; `content_purged_at` says the content went), approvers' notes
/// included; otherwise the items and their approvals are deleted.
///
/// Anonymising first withdraws the items still waiting for a decision or for their execution
/// (rejected, with the reason): their drafts and parameters are about to go, and approving an
/// emptied proposal would send the customer nothing or call the action with nothing.
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
    keep_rows: bool,
) -> sqlx::Result<Erased> {
    if keep_rows {
        let withdrawn = sqlx::query!(
            "UPDATE review_item
             SET status = 'rejected', decided_at = now(), updated_at = now(),
                 decision_reason = 'withdrawn: the person it concerns was anonymised before it was carried out'
             WHERE tenant_id = $1 AND id = ANY ($2) AND status IN ('pending', 'approved')",
            tenant_id,
            ids
        )
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
        sqlx::query!(
            "UPDATE review_approval SET note = NULL WHERE tenant_id = $1 AND review_item_id = ANY ($2)",
            tenant_id,
            ids
        )
        .execute(&mut *conn)
        .await?;
        let n = sqlx::query!(
            "UPDATE review_item r
             SET content_purged_at = coalesce(r.content_purged_at, now()), updated_at = now(),
                 request_note = NULL, approved_proposal = NULL, findings = '[]', result = NULL,
                 proposal = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(r.proposal) AS e(k, v)
                             WHERE k IN ('action', 'amount', 'outcome'))
             WHERE r.tenant_id = $1 AND r.id = ANY ($2)",
            tenant_id,
            ids
        )
        .execute(&mut *conn)
        .await?;
        Ok(Erased {
            items: n.rows_affected() as i64,
            withdrawn,
        })
    } else {
        let n = sqlx::query!(
            "DELETE FROM review_item WHERE tenant_id = $1 AND id = ANY ($2)",
            tenant_id,
            ids
        )
        .execute(&mut *conn)
        .await?;
        Ok(Erased {
            items: n.rows_affected() as i64,
            withdrawn: 0,
        })
    }
}
