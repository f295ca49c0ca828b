//! Sending an outbound message over WhatsApp: the `message.send` job. The message row is the source of
//! truth: a job for a message that is no longer waiting to be sent does nothing, so a job run
//! twice (at-least-once) does not send twice once the first run recorded its result.
//!
//! A send goes through three committed steps: the message becomes `sending` (with the time of
//! the attempt) before the request leaves; the request names the message in WhatsApp's
//! `biz_opaque_callback_data`; Meta's answer is recorded (`sent` with the wamid, or the
//! failure). If the process dies between the first step and the last, or the request goes
//! unanswered, the message stays `sending`: Meta may have it. The next attempt then does not
//! send blindly: it waits [`SEND_GRACE`] from the interrupted attempt for a status webhook,
//! which carries our message id and so settles the message even without the lost wamid, and
//! sends again only if none came. Residual risk, stated plainly: if Meta took the message but
//! no status webhook of it reaches us within the grace (Meta's retries to a server that was
//! down can take longer), the customer gets it twice; if we waited for ever instead, a message
//! Meta never took would never be sent. Requests that certainly did not reach Meta (no
//! connection) or that Meta answered with an error go straight back to `queued`.
//!
//! Retryable failures (429, 5xx, no answer) go back to the queue with backoff, honouring
//! Retry-After; permanent ones are recorded on the message and the job is dead-lettered. A
//! free-form message is checked against WhatsApp's 24-hour window when it is about to go, so
//! what the AI, the platform or a reviewer writes late is not sent (and a person takes over).

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{window, Outbound, SendError};
use crate::channels::{ChannelEndpoint, ChannelsState, WhatsAppSecrets};
use crate::conversations::delivery::{
    back_in_line, mark_failed, mark_sent, outside_window, start_sending, DeliveryStatus,
};
use crate::error::Result;
use crate::queue::{Job, Outcome};

/// How long a send that may have reached Meta waits for Meta's status webhook before it is
/// sent again. Meta reports `sent` within seconds of taking a message; the rest of the margin
/// is for its webhook retries to reach a server that was down.
pub const SEND_GRACE: time::Duration = time::Duration::minutes(5);

fn job_message_id(job: &Job) -> Option<Uuid> {
    job.payload
        .get("message_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

pub async fn run(state: &ChannelsState, job: &Job) -> Outcome {
    match attempt(state, job).await {
        Ok(outcome) => outcome,
        // Our own trouble (database unreachable, unreadable channel secrets...): try again
        // later, and when that was the last try, say so on the message rather than leave it
        // waiting for ever. (If the database itself is gone, this fails too; the dead job's
        // retry puts the message back in line.)
        Err(e) => {
            if job.attempts >= job.max_attempts {
                if let Some(message_id) = job_message_id(job) {
                    let error = json!({
                        "kind": "platform",
                        "retryable": true,
                        "message": format!("the platform could not send this message: {e}"),
                    });
                    if let Err(e) = mark_failed(&state.db, job.tenant_id, message_id, error).await {
                        tracing::warn!(%message_id, error = %e, "recording a send's failure failed");
                    }
                }
            }
            Outcome::Retry {
                error: e.to_string(),
                after: None,
            }
        }
    }
}

async fn attempt(state: &ChannelsState, job: &Job) -> Result<Outcome> {
    let Some(message_id) = job_message_id(job) else {
        return Ok(Outcome::Fail {
            error: "the job names no message".into(),
        });
    };
    let mut tx = state.db.tenant_tx(job.tenant_id).await?;
    let row = sqlx::query!(
        r#"SELECT m.delivery_status AS "delivery_status: DeliveryStatus", m.send_attempted_at, m.provider_message_id, m.body, m.content_type,
                m.attachments, m.inbox_id, m.conversation_id, c.last_inbound_at,
                i.channel, i.settings, i.secrets, p.whatsapp_id, p.phone
         FROM message m
         JOIN conversation c ON c.id = m.conversation_id
         JOIN contact p ON p.id = c.contact_id
         JOIN inbox i ON i.id = m.inbox_id
         WHERE m.id = $1 AND m.tenant_id = current_tenant_id()"#,
        message_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    // Deleted meanwhile, or already settled by an earlier run: nothing left to do.
    let Some(row) = row else {
        return Ok(Outcome::Done);
    };
    let now = OffsetDateTime::now_utc();
    let seen = match row.delivery_status {
        Some(DeliveryStatus::Queued) => DeliveryStatus::Queued,
        // Meta's status webhook already named the message: it was sent.
        Some(DeliveryStatus::Sending) if row.provider_message_id.is_some() => {
            return Ok(Outcome::Done)
        }
        Some(DeliveryStatus::Sending) => {
            let since = row.send_attempted_at.map_or(SEND_GRACE, |at| now - at);
            if since < SEND_GRACE {
                tracing::info!(%message_id, "an earlier attempt may have reached Meta; waiting for its status webhook");
                return Ok(Outcome::Later {
                    after: (SEND_GRACE - since).try_into().unwrap_or_default(),
                    note: "an earlier attempt may have reached Meta: waiting for its status \
                           webhook before sending again"
                        .into(),
                });
            }
            tracing::warn!(%message_id, "no word from Meta on an interrupted send within the grace period; sending again");
            DeliveryStatus::Sending
        }
        _ => return Ok(Outcome::Done),
    };
    if row.channel != "whatsapp" {
        mark_sent(&state.db, job.tenant_id, message_id, None).await?;
        return Ok(Outcome::Done);
    }
    let is_template = row.content_type == "template";
    if !is_template && !window::is_open(row.last_inbound_at, now) {
        outside_window(
            &state.db,
            job.tenant_id,
            message_id,
            row.conversation_id,
            None,
        )
        .await?;
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
    let outbound = if is_template {
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
    } else {
        Outbound::Text {
            to,
            body: row.body,
            preview_url: false,
        }
    };

    // Committed before the request leaves: from here on, a crash leaves a trace that says
    // Meta may have the message.
    if !start_sending(
        &state.db,
        job.tenant_id,
        message_id,
        row.conversation_id,
        seen,
        row.send_attempted_at,
    )
    .await?
    {
        // Settled or taken up by someone else since we read it: look again.
        return Ok(Outcome::Later {
            after: std::time::Duration::ZERO,
            note: "the message changed while its send was being prepared".into(),
        });
    }

    let callback = message_id.to_string();
    match state
        .graph
        .send_tagged(
            &phone_number_id,
            &secrets.access_token,
            &outbound,
            Some(&callback),
        )
        .await
    {
        Ok(sent) => {
            mark_sent(&state.db, job.tenant_id, message_id, Some(&sent.wamid)).await?;
            Ok(Outcome::Done)
        }
        Err(e) if e.is_retryable() && job.attempts < job.max_attempts => {
            tracing::info!(%message_id, error = %e, "send failed; will retry");
            if !e.may_have_been_sent() {
                // Meta answered with an error, or was never reached: nothing went out.
                back_in_line(&state.db, job.tenant_id, message_id).await?;
            }
            Ok(Outcome::Retry {
                error: e.to_string(),
                after: e.retry_after(),
            })
        }
        Err(SendError::OutsideWindow { code, message }) => {
            let error = SendError::OutsideWindow { code, message }.as_json();
            outside_window(
                &state.db,
                job.tenant_id,
                message_id,
                row.conversation_id,
                Some(error),
            )
            .await?;
            // The conversation's state, not a fault: recorded on the message, nothing to retry.
            Ok(Outcome::Done)
        }
        Err(e) => {
            mark_failed(&state.db, job.tenant_id, message_id, e.as_json()).await?;
            Ok(Outcome::Fail {
                error: e.to_string(),
            })
        }
    }
}
