//! What erasing a person (DSR-3, `privacy::erasure`) does to the team's work objects: the
//! tickets about them (theirs as requester, or opened in or linked to their conversations) with
//! their comments, and the tasks about them or those tickets.

use sqlx::PgConnection;
use uuid::Uuid;

/// The tickets about a contact: theirs, opened in one of their conversations, or linked to one.
pub async fn tickets_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
    conversations: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM ticket t
         WHERE tenant_id = $1
           AND (contact_id = $2 OR conversation_id = ANY ($3)
                OR EXISTS (SELECT 1 FROM ticket_conversation tc
                           WHERE tc.tenant_id = t.tenant_id AND tc.ticket_id = t.id
                             AND tc.conversation_id = ANY ($3)))
         ORDER BY id",
        tenant_id,
        contact_id,
        conversations
    )
    .fetch_all(&mut *conn)
    .await
}

/// Erases these tickets and the tasks about the person or these tickets. `keep_rows`
/// (anonymise): the person's words go (subject, description, comments, task titles and notes),
/// status, priority and times stay; otherwise the tickets (their comments and links with them)
/// and the tasks are deleted. Says how many tickets and tasks.
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
    tickets: &[Uuid],
    keep_rows: bool,
) -> sqlx::Result<(i64, i64)> {
    let (tickets_n, tasks_n) = if keep_rows {
        sqlx::query!(
            "UPDATE ticket_comment SET body = 'Erased'
             WHERE tenant_id = $1 AND ticket_id = ANY ($2)",
            tenant_id,
            tickets
        )
        .execute(&mut *conn)
        .await?;
        let t = sqlx::query!(
            "UPDATE ticket SET subject = 'Erased', description = '', tags = '{}', updated_at = now()
             WHERE tenant_id = $1 AND id = ANY ($2)",
            tenant_id,
            tickets
        )
        .execute(&mut *conn)
        .await?;
        let k = sqlx::query!(
            "UPDATE task SET title = 'Erased', notes = '', updated_at = now()
             WHERE tenant_id = $1 AND (contact_id = $2 OR ticket_id = ANY ($3))",
            tenant_id,
            contact_id,
            tickets
        )
        .execute(&mut *conn)
        .await?;
        (t.rows_affected(), k.rows_affected())
    } else {
        let k = sqlx::query!(
            "DELETE FROM task WHERE tenant_id = $1 AND (contact_id = $2 OR ticket_id = ANY ($3))",
            tenant_id,
            contact_id,
            tickets
        )
        .execute(&mut *conn)
        .await?;
        let t = sqlx::query!(
            "DELETE FROM ticket WHERE tenant_id = $1 AND id = ANY ($2)",
            tenant_id,
            tickets
        )
        .execute(&mut *conn)
        .await?;
        (t.rows_affected(), k.rows_affected())
    };
    Ok((tickets_n as i64, tasks_n as i64))
}
