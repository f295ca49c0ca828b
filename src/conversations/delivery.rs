//! Delivering an outbound message: the `message.send` job. The message row is the source of
//! truth: a job for a message that is no longer `queued` does nothing, so a job run twice
//! (at-least-once) does not send twice once the first run recorded its result. Retryable
//! failures (429, 5xx, no answer) go back to the queue with backoff, honouring Retry-After;
//! permanent ones are recorded on the message and the job is dead-lettered.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::AppState;
use crate::channels::whatsapp::{Outbound, SendError};
use crate::channels::{ChannelEndpoint, WhatsAppSecrets};
use crate::error::Result;
use crate::events::{self, Event};
use crate::queue::{Job, Outcome};

pub async fn run(state: &AppState, job: &Job) -> Outcome {
    match attempt(state, job).await {
        Ok(outcome) => outcome,
        // Our own trouble (database unreachable...): try again later.
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
    }
}

async fn attempt(state: &AppState, job: &Job) -> Result<Outcome> {
    let Some(message_id) = job
        .payload
        .get("message_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Ok(Outcome::Fail {
            error: "the job names no message".into(),
        });
    };
    let mut tx = state.db.tenant_tx(job.tenant_id).await?;
    let row = sqlx::query!(
        "SELECT m.delivery_status, m.body, m.content_type, m.attachments, m.inbox_id, m.conversation_id,
                i.channel, i.settings, i.secrets, p.whatsapp_id, p.phone
         FROM message m
         JOIN conversation c ON c.id = m.conversation_id
         JOIN contact p ON p.id = c.contact_id
         JOIN inbox i ON i.id = m.inbox_id
         WHERE m.id = $1 AND m.tenant_id = current_tenant_id()",
        message_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    // Deleted meanwhile, or already settled by an earlier run: nothing left to do.
    let Some(row) = row else {
        return Ok(Outcome::Done);
    };
    if row.delivery_status.as_deref() != Some("queued") {
        return Ok(Outcome::Done);
    }
    if row.channel != "whatsapp" {
        mark_sent(state, job.tenant_id, message_id, row.conversation_id, None).await?;
        return Ok(Outcome::Done);
    }

    let endpoint = ChannelEndpoint {
        inbox_id: row.inbox_id,
        tenant_id: job.tenant_id,
        channel: row.channel,
        settings: row.settings,
        secrets: row.secrets,
    };
    let secrets: WhatsAppSecrets = endpoint.open(&state.sealer)?;
    let phone_number_id = endpoint
        .setting("phone_number_id")
        .unwrap_or_default()
        .to_string();
    let to = row
        .whatsapp_id
        .or_else(|| row.phone.map(|p| p.trim_start_matches('+').to_string()))
        .unwrap_or_default();
    let outbound = match row.content_type.as_str() {
        "template" => {
            let template = &row.attachments[0]["template"];
            Outbound::Template {
                to,
                name: template["name"].as_str().unwrap_or_default().to_string(),
                language: template["language"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                components: template["components"].clone(),
            }
        }
        _ => Outbound::Text {
            to,
            body: row.body,
            preview_url: false,
        },
    };

    match state
        .graph
        .send(&phone_number_id, &secrets.access_token, &outbound)
        .await
    {
        Ok(sent) => {
            mark_sent(
                state,
                job.tenant_id,
                message_id,
                row.conversation_id,
                Some(&sent.wamid),
            )
            .await?;
            Ok(Outcome::Done)
        }
        Err(e) if e.is_retryable() && job.attempts < job.max_attempts => {
            tracing::info!(%message_id, error = %e, "send failed; will retry");
            Ok(Outcome::Retry {
                error: e.to_string(),
                after: e.retry_after(),
            })
        }
        Err(e) => {
            mark_failed(
                state,
                job.tenant_id,
                message_id,
                row.conversation_id,
                e.as_json(),
            )
            .await?;
            match e {
                // The conversation's state, not a fault: recorded on the message, nothing to retry.
                SendError::OutsideWindow { .. } => Ok(Outcome::Done),
                other => Ok(Outcome::Fail {
                    error: other.to_string(),
                }),
            }
        }
    }
}

async fn mark_sent(
    state: &AppState,
    tenant_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    wamid: Option<&str>,
) -> Result<()> {
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE message SET provider_message_id = COALESCE($2, provider_message_id),
                delivery_status = CASE WHEN delivery_status = 'queued' THEN 'sent' ELSE delivery_status END,
                sent_at = COALESCE(sent_at, now())
         WHERE id = $1",
        message_id,
        wamid
    )
    .execute(&mut *tx)
    .await?;
    announce(&mut tx, tenant_id, message_id, conversation_id, "sent").await?;
    tx.commit().await?;
    Ok(())
}

async fn mark_failed(
    state: &AppState,
    tenant_id: Uuid,
    message_id: Uuid,
    conversation_id: Uuid,
    error: Value,
) -> Result<()> {
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    sqlx::query!(
        "UPDATE message SET delivery_status = 'failed', delivery_error = $2, failed_at = now()
         WHERE id = $1 AND delivery_status = 'queued'",
        message_id,
        error
    )
    .execute(&mut *tx)
    .await?;
    announce(&mut tx, tenant_id, message_id, conversation_id, "failed").await?;
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
