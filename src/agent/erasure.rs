//! A data subject's erasure (DSR-3), the agent's part: the execution records that hold what was
//! sent to the model about the person and what it answered, and the tickets the agent opened
//! for them. Called by the privacy domain on its transaction (owner pool, tenant explicit).

use sqlx::PgConnection;
use uuid::Uuid;

/// The executions about a contact: by the contact, or in one of their conversations.
pub async fn executions_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
    conversations: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM agent_execution
         WHERE tenant_id = $1 AND (contact_id = $2 OR conversation_id = ANY ($3)) ORDER BY id",
        tenant_id,
        contact_id,
        conversations
    )
    .fetch_all(&mut *conn)
    .await
}

/// Erases these execution records. `keep_rows`: anonymise (outcome, confidence, timings,
/// provider and model stay for the statistics; the record goes); otherwise deleted.
pub async fn erase_executions(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
    keep_rows: bool,
) -> sqlx::Result<i64> {
    let n = if keep_rows {
        sqlx::query!(
            "UPDATE agent_execution SET record = '{}', content_erased_at = now()
             WHERE tenant_id = $1 AND id = ANY ($2) AND content_erased_at IS NULL",
            tenant_id,
            ids
        )
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query!(
            "DELETE FROM agent_execution WHERE tenant_id = $1 AND id = ANY ($2)",
            tenant_id,
            ids
        )
        .execute(&mut *conn)
        .await?
    };
    Ok(n.rows_affected() as i64)
}
