//! An outbound message's way to the customer, as its states ([`DeliveryStatus`]): `queued`,
//! then `sending` (with the time of the attempt) before a request leaves, then `sent` with the
//! provider's id, `delivered` and `read` as the provider reports them, or `failed` with the
//! reason; every change announced live. The send job that moves a message along these states
//! talks to the channel (`channels::whatsapp::send`), and the channel's webhook reports the
//! provider's statuses ([`apply_status`]); the states, their order and what they mean for the
//! conversation are the conversation's own, kept here.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, AuditSource};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::{self, Event};

/// Where an outbound message is on its way to the customer: `message.delivery_status`, the
/// `delivery_status` of the `message.updated` events, and what a provider's status report
/// becomes once the channel has read it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    /// The order a message moves in, written once here. A status only ever replaces one before
    /// it, whatever order the provider's notifications arrive in: a late `sent` does not undo
    /// `read`, and `read` may come without `delivered` (WhatsApp skips it when a message is
    /// read at once). `failed` is last, so no stale receipt hides it.
    pub const ORDER: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed,
    ];

    /// [`ORDER`](Self::ORDER) by name, for the SQL that compares a stored status with a new one.
    const ORDER_NAMES: [&'static str; 6] = {
        let mut names = [""; 6];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ORDER[i].as_str();
            i += 1;
        }
        names
    };

    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status's place in [`ORDER`](Self::ORDER): a message only moves to a higher rank.
    pub fn rank(self) -> i32 {
        Self::ORDER
            .iter()
            .position(|s| *s == self)
            .map_or(-1, |i| i as i32)
    }
}

/// The code recorded on a free-form message that was not sent because the customer's 24-hour
/// window had closed by the time it was to go.
pub const OUTSIDE_SERVICE_WINDOW: &str = "outside_service_window";

/// Marks the message `sending` if it is still as we read it; false when it changed meanwhile.
pub async fn start_sending(
    db: &Db,
    tenant_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    seen_status: DeliveryStatus,
    seen_attempt: Option<OffsetDateTime>,
) -> Result<bool> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    let claimed = sqlx::query!(
        "UPDATE message SET delivery_status = 'sending', send_attempted_at = now()
         WHERE id = $1 AND delivery_status = $2 AND send_attempted_at IS NOT DISTINCT FROM $3
           AND provider_message_id IS NULL",
        message_id,
        seen_status.as_str(),
        seen_attempt
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        announce(
            &mut tx,
            tenant_id,
            message_id,
            conversation_id,
            DeliveryStatus::Sending,
        )
        .await?;
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
        r#"UPDATE message SET provider_message_id = COALESCE(provider_message_id, $2),
                delivery_status = CASE WHEN delivery_status IN ('queued', 'sending') THEN 'sent'
                                       ELSE delivery_status END,
                sent_at = COALESCE(sent_at, now())
         WHERE id = $1
         RETURNING conversation_id, delivery_status AS "delivery_status: DeliveryStatus""#,
        message_id,
        wamid
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((conversation_id, Some(status))) =
        row.map(|r| (r.conversation_id, r.delivery_status))
    {
        announce(&mut tx, tenant_id, message_id, conversation_id, status).await?;
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
    announce(
        tx,
        tenant_id,
        message_id,
        conversation_id,
        DeliveryStatus::Failed,
    )
    .await?;
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
    status: DeliveryStatus,
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
) -> Result<(Uuid, Option<DeliveryStatus>)> {
    let message_id = message_id
        .ok_or_else(|| Error::conflict("nothing_to_retry", "this job names no message to send"))?;
    let message = sqlx::query!(
        r#"SELECT delivery_status AS "delivery_status: DeliveryStatus", provider_message_id,
                  conversation_id FROM message
         WHERE id = $1 AND tenant_id = current_tenant_id() FOR UPDATE"#,
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
        message.delivery_status,
        Some(DeliveryStatus::Queued | DeliveryStatus::Sending | DeliveryStatus::Failed)
    ) {
        return Err(Error::conflict(
            "nothing_to_retry",
            "the job's message is not waiting to be sent",
        ));
    }
    if message.delivery_status == Some(DeliveryStatus::Sending) {
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
            data: json!({ "delivery_status": DeliveryStatus::Queued }),
        },
    )
    .await?;
    Ok((message_id, message.delivery_status))
}

/// Applies a provider's status notification to the outbound message with that provider id, or,
/// when the send's own answer was lost (a crash after Meta took the message), to the message
/// its callback data names (our message id, echoed by Meta), which then learns its wamid. The
/// message only moves forward in [`DeliveryStatus::ORDER`]. Returns false when no such message
/// exists (the caller logs it and answers normally).
#[allow(clippy::too_many_arguments)]
pub async fn apply_status(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    inbox_id: Uuid,
    provider_message_id: &str,
    callback_message_id: Option<Uuid>,
    status: DeliveryStatus,
    at: OffsetDateTime,
    error: Option<Value>,
) -> Result<bool> {
    // Each branch is a lookup by a unique key (the wamid first: once known it wins), so the
    // statement stays one index probe or two whatever plan the table's statistics suggest.
    let updated = sqlx::query!(
        r#"UPDATE message SET
             provider_message_id = COALESCE(provider_message_id, $2),
             delivery_status = CASE WHEN $4 > COALESCE(array_position($9::text[], delivery_status) - 1, -1)
                 THEN $3 ELSE delivery_status END,
             sent_at = CASE WHEN $3 IN ('sent', 'delivered', 'read') THEN COALESCE(sent_at, $5) ELSE sent_at END,
             delivered_at = CASE WHEN $3 IN ('delivered', 'read') THEN COALESCE(delivered_at, $5) ELSE delivered_at END,
             read_at = CASE WHEN $3 = 'read' THEN COALESCE(read_at, $5) ELSE read_at END,
             failed_at = CASE WHEN $3 = 'failed' THEN COALESCE(failed_at, $5) ELSE failed_at END,
             delivery_error = CASE WHEN $3 = 'failed' THEN $6 ELSE delivery_error END
         WHERE tenant_id = $7 AND id = (
             SELECT id FROM message
             WHERE tenant_id = $7 AND inbox_id = $1 AND provider_message_id = $2 AND direction = 'outbound'
             UNION ALL
             SELECT id FROM message
             WHERE tenant_id = $7 AND id = $8 AND inbox_id = $1 AND provider_message_id IS NULL
               AND direction = 'outbound'
             LIMIT 1)
         RETURNING id, conversation_id, delivery_status AS "delivery_status: DeliveryStatus""#,
        inbox_id,
        provider_message_id,
        status.as_str(),
        status.rank(),
        at,
        error,
        tenant_id,
        callback_message_id,
        &DeliveryStatus::ORDER_NAMES[..] as &[&str]
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = updated else { return Ok(false) };
    events::publish(
        conn,
        &Event {
            tenant_id,
            kind: "message.updated".into(),
            conversation_id: Some(row.conversation_id),
            message_id: Some(row.id),
            data: json!({ "delivery_status": row.delivery_status }),
        },
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::DeliveryStatus::{self, *};

    #[test]
    fn a_message_moves_forward_through_its_statuses_and_failed_is_last() {
        assert!(Queued.rank() < Sending.rank());
        assert!(Sending.rank() < Sent.rank());
        assert!(Sent.rank() < Delivered.rank());
        assert!(Delivered.rank() < Read.rank());
        assert!(Read.rank() < Failed.rank());
        for (rank, status) in DeliveryStatus::ORDER.into_iter().enumerate() {
            assert_eq!(status.rank(), rank as i32);
            assert_eq!(DeliveryStatus::ORDER_NAMES[rank], status.as_str());
        }
    }

    #[test]
    fn a_status_is_stored_and_announced_by_its_lowercase_name() {
        assert_eq!(serde_json::json!(Delivered), serde_json::json!("delivered"));
        for status in DeliveryStatus::ORDER {
            let name = serde_json::to_value(status).unwrap();
            assert_eq!(name, status.as_str());
        }
    }
}
