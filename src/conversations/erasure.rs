//! A data subject's erasure (DSR-3), the conversations' part: what the person wrote and was
//! written, their attachments' references, and their conversations' PII vaults. The privacy
//! domain, above, decides when and calls these on its one transaction; each takes the tenant
//! explicitly because that transaction runs on the owner pool (see `privacy::erasure`).

use sqlx::PgConnection;
use uuid::Uuid;

/// A contact's conversations and their messages.
#[derive(Debug, Default)]
pub struct Held {
    pub conversations: Vec<Uuid>,
    pub messages: Vec<Uuid>,
}

pub async fn of_contact(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
) -> sqlx::Result<Held> {
    let conversations = sqlx::query_scalar!(
        "SELECT id FROM conversation WHERE tenant_id = $1 AND contact_id = $2 ORDER BY id",
        tenant_id,
        contact_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let messages = sqlx::query_scalar!(
        "SELECT id FROM message WHERE tenant_id = $1 AND conversation_id = ANY ($2) ORDER BY id",
        tenant_id,
        &conversations
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Held {
        conversations,
        messages,
    })
}

/// What went, per data class.
#[derive(Debug, Default)]
pub struct Erased {
    pub conversations: i64,
    pub messages: i64,
    pub attachments: i64,
    pub vault_entries: i64,
    pub read_marks: i64,
}

/// Erases the content of these conversations. `keep_rows`: anonymise (messages stay, blank,
/// with their direction, author kind, timings and delivery states, so counts and response
/// times still add up); otherwise the messages and conversations are deleted.
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    conversations: &[Uuid],
    keep_rows: bool,
) -> sqlx::Result<Erased> {
    let mut out = Erased::default();
    if conversations.is_empty() {
        return Ok(out);
    }
    // The vault holds the real values behind the placeholders the model saw: it goes either way.
    out.vault_entries = sqlx::query!(
        "DELETE FROM conversation_vault WHERE tenant_id = $1 AND conversation_id = ANY ($2)",
        tenant_id,
        conversations
    )
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;
    out.attachments = sqlx::query_scalar!(
        r#"SELECT coalesce(sum(jsonb_array_length(attachments)), 0)::bigint AS "n!"
           FROM message
           WHERE tenant_id = $1 AND conversation_id = ANY ($2) AND jsonb_typeof(attachments) = 'array'"#,
        tenant_id,
        conversations
    )
    .fetch_one(&mut *conn)
    .await?;
    if keep_rows {
        // The provider's message id goes too: WhatsApp's encodes the sender's number.
        out.messages = sqlx::query!(
            "UPDATE message
             SET body = '', attachments = '[]', delivery_error = NULL, provider_message_id = NULL
             WHERE tenant_id = $1 AND conversation_id = ANY ($2)",
            tenant_id,
            conversations
        )
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
    } else {
        out.messages = sqlx::query!(
            "DELETE FROM message WHERE tenant_id = $1 AND conversation_id = ANY ($2)",
            tenant_id,
            conversations
        )
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
        out.read_marks = sqlx::query!(
            "DELETE FROM conversation_read WHERE tenant_id = $1 AND conversation_id = ANY ($2)",
            tenant_id,
            conversations
        )
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
        out.conversations = sqlx::query!(
            "DELETE FROM conversation WHERE tenant_id = $1 AND id = ANY ($2)",
            tenant_id,
            conversations
        )
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
    }
    Ok(out)
}
