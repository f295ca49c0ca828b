//! An outbound message's way to the customer, as its states: `queued`, then `sending` (with the
//! time of the attempt) before a request leaves, then `sent` with the provider's id, or
//! `failed` with the reason; every change announced live. The send job that moves a message
//! along these states talks to the channel (`channels::whatsapp::send`); the states and what
//! they mean for the conversation are the conversation's own, kept here.

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, AuditSource};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::{self, Event};

/// The code recorded on a free-form message that was not sent because the customer's 24-hour
/// window had closed by the time it was to go.
pub const OUTSIDE_SERVICE_WINDOW: &str = "outside_service_window";

/// Marks the message `sending` if it is still as we read it; false when it changed meanwhile.
pub async fn start_sending(
    db: &Db,
    tenant_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    seen_status: &str,
    seen_attempt: Option<OffsetDateTime>,
) -> Result<bool> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    let claimed = sqlx::query!(
        "UPDATE message SET delivery_status = 'sending', send_attempted_at = now()
         WHERE id = $1 AND delivery_status = $2 AND send_attempted_at IS NOT DISTINCT FROM $3
           AND provider_message_id IS NULL",
        message_id,
        seen_status,
        seen_attempt
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        announce(&mut tx, tenant_id, message_id, conversation_id, "sending").await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// A request that certainly did not go out: the next attempt need not wait for Meta.
pub async fn back_in_line(db: &Db, tenant_id: Uuid, message_id: Uuid) -> Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE message SET delivery_status = 'queued' WHERE id = $1 AND delivery_status = 'sending'",
        message_id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn mark_sent(
    db: &Db,
    tenant_id: Uuid,
    message_id: Uuid,
    wamid: Option<&str>,
) -> Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    // A status webhook may have been faster than this (it names the message by our id): then
    // the message is already as far as Meta said, and stays there.
    let row = sqlx::query!(
        "UPDATE message SET provider_message_id = COALESCE(provider_message_id, $2),
                delivery_status = CASE WHEN delivery_status IN ('queued', 'sending') THEN 'sent'
                                       ELSE delivery_status END,
                sent_at = COALESCE(sent_at, now())
         WHERE id = $1
         RETURNING conversation_id, delivery_status",
        message_id,
        wamid
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = row {
        let status = row.delivery_status.unwrap_or_default();
        announce(&mut tx, tenant_id, message_id, row.conversation_id, &status).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn mark_failed(db: &Db, tenant_id: Uuid, message_id: Uuid, error: Value) -> Result<()> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    failed(&mut tx, tenant_id, message_id, error).await?;
    tx.commit().await?;
    Ok(())
}

/// Records the failure on a message that is still on its way, and announces it.
async fn failed(
    tx: &mut crate::db::Tx,
    tenant_id: Uuid,
    message_id: Uuid,
    error: Value,
) -> Result<bool> {
    let conversation_id = sqlx::query_scalar!(
        "UPDATE message SET delivery_status = 'failed', delivery_error = $2, failed_at = now()
         WHERE id = $1 AND delivery_status IN ('queued', 'sending')
         RETURNING conversation_id",
        message_id,
        error
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(conversation_id) = conversation_id else {
        return Ok(false);
    };
    announce(tx, tenant_id, message_id, conversation_id, "failed").await?;
    Ok(true)
}

/// A free-form message the 24-hour window no longer lets through (our own check, or Meta's
/// answer): recorded as failed, and the conversation goes to a person with a note saying why,
/// since only a person can choose a template to reach the customer now.
pub async fn outside_window(
    db: &Db,
    tenant_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    meta_error: Option<Value>,
) -> Result<()> {
    let mut error = json!({
        "kind": OUTSIDE_SERVICE_WINDOW,
        "retryable": false,
        "message": "not sent: the customer last wrote more than 24 hours ago, and WhatsApp then \
                    accepts only a template message",
    });
    if let Some(meta) = meta_error {
        error["graph"] = meta;
    }
    let mut tx = db.tenant_tx(tenant_id).await?;
    if !failed(&mut tx, tenant_id, message_id, error).await? {
        tx.commit().await?;
        return Ok(());
    }
    let before = super::fetch(&mut tx, conversation_id).await?;
    sqlx::query!(
        "UPDATE conversation SET handler = 'human', updated_at = now() WHERE id = $1",
        conversation_id
    )
    .execute(&mut *tx)
    .await?;
    let note_id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, content_type,
                              body, private)
         VALUES ($1, $2, $3, $4, 'outbound', 'system', 'note', $5, true)",
        note_id,
        tenant_id,
        conversation_id,
        before.inbox_id,
        "Handed to a human (outside_service_window): a message to the customer was not sent \
         because they last wrote more than 24 hours ago. Only a WhatsApp template can reach \
         them until they write again."
    )
    .execute(&mut *tx)
    .await?;
    let after = super::fetch(&mut tx, conversation_id).await?;
    audit::record(
        &mut tx,
        &AuditSource::system(tenant_id),
        AuditEvent::new("conversation.handed_off", "conversation", conversation_id)
            .before(json!({ "handler": before.handler }))
            .after(json!({
                "handler": after.handler,
                "reason": OUTSIDE_SERVICE_WINDOW,
                "unsent_message_id": message_id,
            })),
    )
    .await?;
    events::publish(
        &mut tx,
        &Event {
            tenant_id,
            kind: "message.created".into(),
            conversation_id: Some(conversation_id),
            message_id: Some(note_id),
            data: json!({ "direction": "outbound", "private": true, "author_kind": "system",
                          "contact_id": before.contact_id, "inbox_id": before.inbox_id }),
        },
    )
    .await?;
    events::publish(
        &mut tx,
        &Event {
            tenant_id,
            kind: "conversation.updated".into(),
            conversation_id: Some(conversation_id),
            message_id: None,
            data: json!({ "action": "conversation.handed_off", "status": after.status,
                          "handler": after.handler, "assignee_id": after.assignee_id,
                          "reason": OUTSIDE_SERVICE_WINDOW }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn announce(
    tx: &mut crate::db::Tx,
    tenant_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    status: &str,
) -> Result<()> {
    events::publish(
        tx,
        &Event {
            tenant_id,
            kind: "message.updated".into(),
            conversation_id: Some(conversation_id),
            message_id: Some(message_id),
            data: json!({ "delivery_status": status }),
        },
    )
    .await?;
    Ok(())
}

/// Puts a dead send's message back in line (`queued`, its failure cleared) and returns its id
/// and the status it had. A message Meta already took (it has a wamid) is not sent again; one
/// left `sending` by an interrupted attempt stays so, and the job first waits for Meta's word
/// on that attempt as any other run would.
pub async fn requeue(
    tx: &mut crate::db::Tx,
    tenant_id: Uuid,
    message_id: Option<Uuid>,
) -> Result<(Uuid, Option<String>)> {
    let message_id = message_id
        .ok_or_else(|| Error::conflict("nothing_to_retry", "this job names no message to send"))?;
    let message = sqlx::query!(
        "SELECT delivery_status, provider_message_id, conversation_id FROM message
         WHERE id = $1 AND tenant_id = current_tenant_id() FOR UPDATE",
        message_id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| Error::conflict("nothing_to_retry", "the job's message no longer exists"))?;
    if message.provider_message_id.is_some() {
        return Err(Error::conflict(
            "already_sent",
            "WhatsApp already took this message; sending it again would deliver it twice",
        ));
    }
    if !matches!(
        message.delivery_status.as_deref(),
        Some("queued" | "sending" | "failed")
    ) {
        return Err(Error::conflict(
            "nothing_to_retry",
            "the job's message is not waiting to be sent",
        ));
    }
    if message.delivery_status.as_deref() == Some("sending") {
        return Ok((message_id, message.delivery_status));
    }
    sqlx::query!(
        "UPDATE message SET delivery_status = 'queued', delivery_error = NULL, failed_at = NULL
         WHERE id = $1",
        message_id
    )
    .execute(&mut **tx)
    .await?;
    events::publish(
        tx,
        &Event {
            tenant_id,
            kind: "message.updated".into(),
            conversation_id: Some(message.conversation_id),
            message_id: Some(message_id),
            data: json!({ "delivery_status": "queued" }),
        },
    )
    .await?;
    Ok((message_id, message.delivery_status))
}
