//! A low-confidence draft in the inbox (AGT-5). The agent was not sure enough to answer, so
//! the conversation went to the members with the agent's draft as a suggestion. Whoever
//! answers the conversation may send the draft, as written or edited, as their own reply, or
//! discard it. Either way a person decided what the customer reads, so the item is closed as
//! handled by that member (`resolved`, with what they did in `result`): nothing is
//! "approved", and no reviewer's permission is needed, only the permission to reply.

use axum::extract::State;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::decide::{changed, resolve, still_pending};
use super::routes::{fetch, ReviewView};
use super::{ReviewKind, ReviewStatus};
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::conversations::routes::{send_reply, ReplyBody};
use crate::conversations::MessageView;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::http::{Json, Path};
use utoipa::ToSchema;

/// The draft that waits for the person answering a conversation.
pub struct PendingDraft {
    pub review_id: Uuid,
    pub draft: String,
    pub confidence: Option<f32>,
    pub execution_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

/// The newest draft of the conversation still waiting (pending, not past its time), if any.
pub async fn pending_draft(
    conn: &mut PgConnection,
    conversation_id: Uuid,
) -> Result<Option<PendingDraft>> {
    let row = sqlx::query!(
        r#"SELECT id, coalesce(approved_proposal, proposal) ->> 'draft' AS draft, confidence,
                  execution_id, created_at
           FROM review_item
           WHERE conversation_id = $1 AND tenant_id = current_tenant_id() AND kind = 'low_confidence'
             AND status = 'pending' AND (expires_at IS NULL OR expires_at > now())
           ORDER BY created_at DESC LIMIT 1"#,
        conversation_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| {
        let draft = r.draft.filter(|d| !d.trim().is_empty())?;
        Some(PendingDraft {
            review_id: r.id,
            draft,
            confidence: r.confidence,
            execution_id: r.execution_id,
            created_at: r.created_at,
        })
    }))
}

/// The item, locked, if it is a draft that still waits. A page that showed the draft of one
/// conversation names it in `shown_in`: a draft handled meanwhile, or not of that
/// conversation, is then `draft_gone`, checked under the same lock as the send.
async fn waiting_draft(tx: &mut Tx, id: Uuid, shown_in: Option<Uuid>) -> Result<ReviewView> {
    let gone = || Error::conflict("draft_gone", "the AI's draft was handled meanwhile");
    let item = match fetch(tx, id, true).await {
        Err(Error::NotFound) if shown_in.is_some() => return Err(gone()),
        found => found?,
    };
    if let Some(conversation_id) = shown_in {
        if item.conversation_id != Some(conversation_id) || still_pending(&item).is_err() {
            return Err(gone());
        }
    }
    if item.kind != ReviewKind::LowConfidence || item.conversation_id.is_none() {
        return Err(Error::conflict(
            "not_a_draft",
            "only a low-confidence draft of a conversation is sent or discarded by the person answering",
        ));
    }
    still_pending(&item)?;
    Ok(item)
}

/// What the member sends: the draft as it was, or as they edited it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DraftReply)]
pub struct DraftReply {
    /// The reply; trimmed.
    #[schema(min_length = 1, max_length = 4096, pattern = r"\S")]
    pub text: String,
}

/// Sends `text` (the draft, edited or not) as the member's own reply through the
/// conversation's channel and closes the draft as handled by them, in one transaction.
/// `shown_in`: see [`waiting_draft`].
pub async fn send(
    db: &Db,
    ctx: &Ctx,
    id: Uuid,
    shown_in: Option<Uuid>,
    text: &str,
) -> Result<(ReviewView, MessageView)> {
    let mut tx = ctx.begin(db).await?;
    let before = waiting_draft(&mut tx, id, shown_in).await?;
    let conversation_id = before.conversation_id.unwrap_or_default();
    let conversation = crate::conversations::fetch(&mut tx, conversation_id).await?;
    let reply = ReplyBody {
        body: Some(text.to_string()),
        ..ReplyBody::default()
    };
    let message = send_reply(
        &mut tx,
        ctx,
        &conversation,
        &reply,
        crate::channels::free_form_open,
    )
    .await?;
    let proposed = before.proposal["draft"].as_str().unwrap_or_default().trim();
    let edited = proposed != message.body.trim();
    resolve(
        &mut tx,
        ctx,
        id,
        json!({ "handled_by_member": true, "sent": true, "edited": edited, "message_id": message.id }),
    )
    .await?;
    let after = fetch(&mut tx, id, false).await?;
    let mut event = AuditEvent::new("review.draft_sent", "review_item", id)
        .before(json!({ "status": before.status }))
        .after(
            json!({ "status": ReviewStatus::Resolved, "edited": edited, "message_id": message.id }),
        );
    event.execution_id = before.execution_id;
    changed(tx, ctx, event, &after).await?;
    Ok((after, message))
}

/// Closes the draft unsent: the member answers the customer their own way (or not at all).
/// `shown_in`: see [`waiting_draft`].
pub async fn discard(db: &Db, ctx: &Ctx, id: Uuid, shown_in: Option<Uuid>) -> Result<ReviewView> {
    let mut tx = ctx.begin(db).await?;
    let before = waiting_draft(&mut tx, id, shown_in).await?;
    resolve(
        &mut tx,
        ctx,
        id,
        json!({ "handled_by_member": true, "sent": false }),
    )
    .await?;
    let after = fetch(&mut tx, id, false).await?;
    let mut event = AuditEvent::new("review.draft_discarded", "review_item", id)
        .before(json!({ "status": before.status }))
        .after(json!({ "status": ReviewStatus::Resolved }));
    event.execution_id = before.execution_id;
    changed(tx, ctx, event, &after).await?;
    Ok(after)
}

pub(super) async fn send_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<DraftReply>,
) -> Result<Json<ReviewView>> {
    send(&db, &ctx, id, None, &body.text)
        .await
        .map(|(item, _)| Json(item))
}

pub(super) async fn discard_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ReviewView>> {
    discard(&db, &ctx, id, None).await.map(Json)
}
